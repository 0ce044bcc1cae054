"""bench.py's memory arithmetic: the bounds that size a run before it starts must bound what
NumPy really allocates (tracemalloc), without being vacuous."""
import tracemalloc

import numpy as np
import pytest

import bench
import eggroll
import int_rnn_lm as lm
import train
from conftest import ONE
from test_int_rnn_lm import lowrank_perturbation


def traced_peak(fn):
    """Bytes NumPy allocates at the peak of fn() beyond what was allocated before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("D,rows,T", [(16, 64, 25), (64, 128, 10), (256, 64, 10), (512, 16, 5)])
def test_forward_peak_bytes_bounds_what_the_forward_allocates(D, rows, T):
    """The population forward's peak stays under forward_peak_bytes, and the bound is within
    2.5x of the measured peak."""
    cfg = lm.ModelConfig(D, 2)
    params = lm.init_params(cfg, seed=0)
    pert = lowrank_perturbation(cfg, np, rows, rank=1, shift=8, seed=0)
    tokens = np.random.default_rng(0).integers(0, 256, (rows, T + 1)).astype(np.uint8)
    hidden = lm.zero_hidden(cfg, rows)
    peak = traced_peak(lambda: lm.sequence_logprob(params, cfg, tokens, hidden, pert, T))
    bound = bench.forward_peak_bytes(cfg, rows * T)
    assert peak <= bound <= 2.5 * peak, f"peak {peak:,} B, bound {bound:,} B"


def test_step_peak_bytes_bounds_a_step_and_sizes_the_gpu_runs():
    """An EGGROLL step's allocations stay under step_peak_bytes, and by that arithmetic the GPU
    default and bench.py's largest GPU size fit in 64 GiB (an 80 GB H100 with room to spare)."""
    mcfg = lm.ModelConfig(64, 2)
    cfg = eggroll.Config(population=256, group_size=4, member_chunk=64, time_chunk=10)
    params = lm.init_params(mcfg, 0)
    state = eggroll.init(params, cfg, mcfg, 0, ONE)
    train_bytes = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))[0][:100_000]
    stream = train.TrainStream(train_bytes, eggroll.num_sequences(cfg), 20)
    eggroll.step(params, state, stream.batch(0), 0, cfg, mcfg, 0, ONE)   # warm the tables
    peak = traced_peak(lambda: eggroll.step(params, state, stream.batch(1), 1, cfg, mcfg, 0, ONE))
    bound = bench.step_peak_bytes(mcfg, cfg, 20)
    assert peak <= bound, (peak, bound)
    gpu = train.default_config(eggroll, "cuda")
    assert bench.step_peak_bytes(lm.ModelConfig(256, 2), gpu, 100) < 64 * 2**30
    biggest = eggroll.Config(population=2**18, group_size=2, member_chunk=4096, time_chunk=25)
    assert bench.step_peak_bytes(lm.ModelConfig(1024, 1), biggest, 100) < 64 * 2**30


def test_memory_per_member():
    """The O(d) vs O(r (m + n)) numbers: D = 64, L = 1 gives d = 82,240 bytes of int8 noise per
    naive-ES member (exactly what its lm.Full tensors hold per member) against 2,432 for
    rank-1 EGGROLL (its lm.LowRank factors hold the matrix part, 1,792, per member)."""
    import es_naive
    mcfg = lm.ModelConfig(64, 1)
    mem = bench.memory_per_member_bytes(mcfg)
    assert (mem["es_naive"], mem["eggroll"]) == (82_240, 2_432), mem
    for method, cfg in ((es_naive, es_naive.Config(population=4)),
                        (eggroll, eggroll.Config(population=4))):
        noise = method.noise_source(0, 0, cfg, mcfg, np)
        pert = method.member_perturbation({n: noise(n, slice(0, 2)) for n in
                                           lm.param_shapes(mcfg)}, cfg)
        if method is es_naive:
            held = sum(p.E.nbytes for p in pert.values()) // 4
            assert held == mem["es_naive"], f"Full noise holds {held} bytes per member"
        else:
            held = sum(p.A.nbytes + p.B.nbytes for p in pert.values()
                       if isinstance(p, lm.LowRank)) // 4
            assert held == 1_792 == mem["eggroll"] - 2 * 5 * 64, f"EGGROLL factors {held}"
