"""bench.py's memory arithmetic: the bounds that size a run before it starts must bound what
NumPy really allocates (tracemalloc), without being vacuous."""

import numpy as np
import pytest

import bench
import eggroll
import int_rnn_lm as lm
import train
from conftest import ONE
from test_int_rnn_lm import lowrank_perturbation


@pytest.mark.parametrize("D,rows,T", [(16, 64, 25), (64, 128, 10), (256, 64, 10), (512, 16, 5)])
def test_forward_peak_bytes_bounds_what_the_forward_allocates(D, rows, T, monkeypatch):
    """The population forward's peak stays under forward_peak_bytes, and the bound is within
    2.5x of the peak of the forward the GPU runs (gru_scan, the plain time loop); the CPU's
    gru_scan_cpu allocates less and stays under it too."""
    cfg = lm.ModelConfig(D, 2)
    params = lm.init_params(cfg, seed=0)
    pert = lowrank_perturbation(cfg, np, rows, rank=1, shift=8, seed=0)
    tokens = np.random.default_rng(0).integers(0, 256, (rows, T + 1)).astype(np.uint8)
    hidden = lm.zero_hidden(cfg, rows)
    bound = bench.forward_peak_bytes(cfg, rows * T)
    cpu_peak = bench.traced_peak_bytes(
        lambda: lm.sequence_logprob(params, cfg, tokens, hidden, pert, T))
    monkeypatch.setattr(lm, "gru_scan_cpu", lm.gru_scan)
    peak = bench.traced_peak_bytes(
        lambda: lm.sequence_logprob(params, cfg, tokens, hidden, pert, T))
    assert cpu_peak <= bound, f"CPU peak {cpu_peak:,} B, bound {bound:,} B"
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
    peak = bench.traced_peak_bytes(
        lambda: eggroll.step(params, state, stream.batch(1), 1, cfg, mcfg, 0, ONE))
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
    for method, cfg in ((es_naive, es_naive.Config(population=4, group_size=2,
                                                   sampling="antithetic")),
                        (eggroll, eggroll.Config(population=4, group_size=2,
                                                 sampling="antithetic"))):
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

# -----------------------------------------------------------------------------
# the exact pieces the billion-parameter step needs (results/claims.py): int_matmul's split
# float32 path above n = 1040


def extreme_rows(n):
    """int8 rows with the largest sums: all +127, all -127, alternating, all 1, and all +127
    but the last entry 126 or 1. Against an all-127 row the last two sum to (n - 1) 127^2 +
    16002 and + 127; for n >= 1042 one of them is odd and past 2^24, which float32 cannot hold
    in any summation order."""
    last = lambda v: np.concatenate([np.full(n - 1, 127), [v]])
    return np.stack([np.full(n, 127), np.full(n, -127), np.tile([127, -127], n)[:n],
                     np.full(n, 1), last(126), last(1)]).astype(np.int8)


@pytest.mark.parametrize("B,n,m", [(3, 1041, 5), (2, 2080, 4), (4, 2081, 3), (2, 5000, 6)])
def test_int_matmul_split_equals_the_loops_bit_for_bit(B, n, m):
    """int_matmul_split (and int_matmul, which takes it above n = 1040 on the CPU) equals the
    Python-int loops and float64 BLAS on random int8 with +-127 extremes, at chunk edges."""
    rng = np.random.default_rng(n)
    x = np.concatenate([extreme_rows(n), rng.integers(-127, 128, (B, n)).astype(np.int8)])
    w = np.concatenate([extreme_rows(n), rng.integers(-127, 128, (m, n)).astype(np.int8)])
    ref = lm.int_matmul_reference(x, w)
    np.testing.assert_array_equal(ref, (x.astype(np.float64) @ w.astype(np.float64).T))
    for got in (lm.int_matmul_split(x, w), lm.int_matmul(x, w)):
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref)
    # a case a single float32 GEMM gets wrong: an odd sum past 2^24
    one_gemm = (x.astype(np.float32) @ w.astype(np.float32).T).astype(np.int64)
    assert n < 1042 or not np.array_equal(one_gemm, ref)


def test_int_matmul_split_is_exact_up_to_the_int32_limit():
    """At n = EXACT_I32_MAX_N (133,143) the all-127 sum 2,147,469,647 is 2^31 - 14,001: every
    chunk exact in float32, the int32 sum exact and unwrapped."""
    n = lm.EXACT_I32_MAX_N
    x, w = extreme_rows(n), extreme_rows(n)
    got = lm.int_matmul(x, w)
    want = (x.astype(np.int64) @ w.astype(np.int64).T)
    assert want.max() == n * 127**2 < 2**31
    np.testing.assert_array_equal(got, want)


def test_int_matmul_takes_the_split_path_above_1040(monkeypatch):
    """On the CPU, n > 1040 goes through int_matmul_split (no float64 copy of the weight)."""
    calls = []
    monkeypatch.setattr(lm, "int_matmul_split", lambda x, w: calls.append(x.shape) or
                        np.zeros((x.shape[0], w.shape[0]), np.int32))
    lm.int_matmul(np.zeros((2, 3, 1040), np.int8), np.zeros((4, 1040), np.int8))
    assert calls == []
    lm.int_matmul(np.zeros((2, 3, 1041), np.int8), np.zeros((4, 1041), np.int8))
    assert calls == [(6, 1041)]
