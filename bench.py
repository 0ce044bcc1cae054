r"""Throughput benchmarks: every number a ratio measured in one run on the current device.

    $ python bench.py                  # CPU: small sizes, a few minutes on 2 cores
    $ python bench.py --device cuda    # GPU: the paper's sizes (D = 256, 1024; N up to 2^18)
    $ python bench.py --device cuda --quick   # GPU acceptance (.ci/gpu): a reduced set

Tables:
  1. integer matmul paths, TOPS and "exact?" against a float64 reference, on the model's
     shapes and on 4096^3: the loop reference (tiny shape only), float64 and float32 BLAS on
     integer-valued arrays (the CPU fast path), the backend's own integer matmul, and on a GPU
     cuBLAS int8 -> int32 GemmEx in TN layout (int_rnn_lm.int_matmul's GPU path);
  2. one EGGROLL step (population forward + integer fitness + update) vs plain batched inference
     of the same model over the same number of tokens: EGGROLL's % of inference throughput
     (the paper's "91 %", App. E);
  3. naive ES vs EGGROLL per member-token at the same population, and noise bytes per member;
  4. scaling out (README "Scaling out"): bytes each process receives per step under mpirun at
     the GPU default size, against a gradient all-reduce of the same model, and the measured
     step time of each method's CPU default with K = 1 and 2 processes (`mpiexec -n K`);
  5. CPU threads (train.py --threads): each method's CPU default step with 1 and 2 threads
     evaluating the rows (the results are bit-identical; tests/test_train.py).
  memory (`--only memory`): backprop's activations vs ES at inference memory: one backprop
     step's BPTT tape (by arithmetic) and traced peak against a plain integer inference forward
     of the same rows x bytes and EGGROLL steps, at the CPU and GPU default sizes, with NumPy.
GPU timings use CUDA events after a warm-up; CPU timings use perf_counter.

The EGGROLL paper's claims (1 B parameters, O(1/r), full rank, % of inference): results/claims.py.
"""
import os

# one BLAS thread per process, as in train.py (set before numpy loads; an explicit setting wins)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
import tracemalloc

import numpy as np

import backprop
import eggroll
import es_naive
import int_rnn_lm as lm
import mezo
import train

ONE = train.ONE_PROCESS


def timer(xp, fn, repeat, warmup=True):
    """Median seconds of fn() over `repeat` runs, after one warm-up run (unless warmup=False)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        if xp is np:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        else:
            start, end = xp.cuda.Event(), xp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(xp.cuda.get_elapsed_time(start, end) / 1e3)
    return float(np.median(times))


def table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths]] + rows:
        print(" | ".join(str(x).rjust(w) for x, w in zip(row, widths)))

# -----------------------------------------------------------------------------
# 1. integer matmul paths


def matmul_paths(xp):
    """name -> fn(x int8 (B, n), w int8 (m, n)) -> x @ w.T, each to be checked for exactness."""
    paths = {"float64 BLAS": lambda x, w: (x.astype(xp.float64) @ w.astype(xp.float64).T),
             "float32 BLAS": lambda x, w: (x.astype(xp.float32) @ w.astype(xp.float32).T),
             "int32 matmul (backend's own)": lambda x, w: x.astype(xp.int32) @ w.astype(xp.int32).T,
             "int_matmul (the model's path)": lm.int_matmul}
    if xp is not np:
        paths["cuBLAS int8 GemmEx TN"] = lm._cublas_int8_tn
        paths["cupy int8 matmul (wraps)"] = lambda x, w: x @ w.T
    return paths


def bench_matmul(xp, shapes, repeat):
    rows = []
    rng = np.random.default_rng(0)
    for B, n, m in shapes:
        x = rng.integers(-127, 128, (B, n)).astype(np.int8)
        w = rng.integers(-127, 128, (m, n)).astype(np.int8)
        ref = x.astype(np.float64) @ w.astype(np.float64).T
        xd, wd = xp.asarray(x), xp.asarray(w)
        ops = 2 * B * n * m
        if n * m <= 2 ** 18:   # the loops take ~1 us per MAC: time 4 rows, scale to B rows
            exact = np.array_equal(lm.int_matmul_reference(x[:4], w), ref[:4])
            dt = timer(np, lambda: lm.int_matmul_reference(x[:4], w), 1) * B / 4
            rows.append([f"{B}x{n}x{m}", "loop reference (4 rows timed)",
                         f"{ops / dt / 1e12:.2e}", "yes" if exact else "NO"])
        for name, fn in matmul_paths(xp).items():
            if "float32" in name and n > lm.EXACT_F32_MAX_N:
                continue                                   # not exact there: not a candidate
            if "int32" in name and xp is np and B * n * m > 2 ** 30:
                rows.append([f"{B}x{n}x{m}", name, "(skipped: > 1 min)", ""])
                continue
            dt = timer(xp, lambda: fn(xd, wd), repeat)
            exact = np.array_equal(lm.to_numpy(fn(xd, wd)).astype(np.float64), ref)
            rows.append([f"{B}x{n}x{m}", name, f"{ops / dt / 1e12:.4f}", "yes" if exact else "NO"])
    table("1. integer matmul x @ w.T (int8 in): TOPS", ["B x n x m", "path", "TOPS", "exact?"],
          rows)

# -----------------------------------------------------------------------------
# 2 and 3. a population step of EGGROLL and naive ES vs plain inference


def population_inputs(mcfg, n_members, T, xp):
    tokens = xp.asarray(np.random.default_rng(1).integers(0, 256, (n_members, T + 1))
                        .astype(np.uint8))
    return lm.init_params(mcfg, 0, xp), tokens


def population_timings(xp, mcfg, N, T, repeat, naive=False, naive_repeat=None,
                       naive_warmup=True, phases=False):
    """Median seconds of plain inference and of one EGGROLL step over the same N rows x T bytes
    through the same forward path (population_logprob, member chunks of at most 4096, the same
    threads); naive: also one naive-ES step of the same population; phases: also one more
    step's and inference's split by timed_calls ({label: seconds}, and the seconds of those
    timed runs themselves)."""
    params, tokens = population_inputs(mcfg, N, T, xp)
    chunk = min(N, 4096)
    cfg = eggroll.Config(population=N, group_size=2, time_chunk=min(T, 25), member_chunk=chunk,
                         sampling="antithetic")                        # the paper's pairs
    state = eggroll.init(params, cfg, mcfg, 0, ONE)
    seqs = tokens[: eggroll.num_sequences(cfg)]
    hidden = lm.zero_hidden(mcfg, N, xp)

    def inference():   # the same forward path as the step's, without perturbations
        for i in range(0, N, chunk):
            lm.population_logprob(params, mcfg, tokens[i: i + chunk],
                                  hidden[:, i: i + chunk], None, cfg.time_chunk)

    def egg():
        eggroll.step(params, state, (seqs, False), 5, cfg, mcfg, 0, ONE)
    out = {"inference": timer(xp, inference, repeat), "eggroll": timer(xp, egg, repeat),
           "cfg": cfg}
    if naive:
        ncfg = es_naive.Config(population=N, group_size=2, sampling="antithetic",   # pairs
                               member_chunk=64)
        nstate = es_naive.init(params, ncfg, mcfg, 0, ONE)
        out["es_naive"] = timer(xp, lambda: es_naive.step(params, nstate, (seqs, False), 5,
                                                          ncfg, mcfg, 0, ONE),
                                naive_repeat or max(1, repeat // 2), warmup=naive_warmup)
    if phases:
        _, out["eggroll_timed"], out["eggroll_phases"] = timed_calls(egg, step_phases(eggroll))
        _, out["inference_timed"], out["inference_phases"] = timed_calls(
            inference, {"gemm": (lm, "int_matmul")})
    return out


def bench_population(xp, d_models, populations, T, repeat, naive_max):
    rows, rows_naive = [], []
    for D in d_models:
        mcfg = lm.ModelConfig(D, 1)
        for N in populations:
            t = population_timings(xp, mcfg, N, T, repeat, naive=N <= naive_max)
            t_inf, t_egg = t["inference"], t["eggroll"]
            mtok = N * T
            rows.append([D, N, f"{mtok / t_inf / 1e6:.3f}", f"{mtok / t_egg / 1e6:.3f}",
                         f"{100 * t_inf / t_egg:.1f} %",
                         f"{step_peak_bytes(mcfg, t['cfg'], T) / 2**30:.2f} GiB"])
            if N <= naive_max:
                t_naive = t["es_naive"]
                mem = memory_per_member_bytes(mcfg, t["cfg"].rank)
                rows_naive.append([D, N, f"{mtok / t_egg / 1e6:.3f}", f"{mtok / t_naive / 1e6:.4f}",
                                   f"{t_naive / t_egg:.1f}x", f"{mem['eggroll']:,}",
                                   f"{mem['es_naive']:,}"])
    table(f"2. EGGROLL step vs plain inference (L = 1, {T} tokens per member): "
          "M member-tokens/s",
          ["D", "population", "inference", "EGGROLL", "EGGROLL % of inference",
           "EGGROLL memory bound"], rows)
    table("3. naive ES vs EGGROLL (same population and tokens): M member-tokens/s and noise "
          "bytes per member", ["D", "population", "EGGROLL", "naive ES", "naive ES slower by",
                               "EGGROLL B/member", "naive ES B/member"], rows_naive)


# -----------------------------------------------------------------------------
# memory by arithmetic: bounds that size member_chunk and time_chunk before a run (the README's
# GPU sizes), each checked against NumPy's own allocations (tests/test_bench.py)


def forward_peak_bytes(mcfg, n_tokens):
    """An upper bound of the memory lm.sequence_logprob allocates for one time chunk of n_tokens
    (rows x time_chunk) positions, with or without member perturbations.

    Per position, the widest layer dominates: the MLP's kD-wide int32 accumulator (k = mlp_mult,
    counted as at least 4), its low-rank correction (int32, or int64 when kD > 1040) and their
    sums, with the block's input and norm alive beside them: <= 24 k D bytes; the head and the
    integer log-softmax over 256 logits add <= 4 KiB. The CPU's float32/64 GEMM copies of the
    weights add <= 8 (k + 1) D^2 (cuBLAS int8 needs none)."""
    D, k = mcfg.d_model, max(4, mcfg.mlp_mult)
    return n_tokens * (24 * k * D + 4096) + 8 * (k + 1) * D * D


def step_peak_bytes(mcfg, cfg, seq_len):
    """An upper bound of one EGGROLL step's memory: the noise as drawn (P directions) and the
    members' signed copies (all N members, one transient copy more), the carried states (old
    and new), one member chunk's forward (forward_peak_bytes), one parameter's Z (int32 and
    int64) with one GEMM chunk's (diag(F) A, B) operands, and for the sgd update the weight
    fractions (int32, old and new) and its int64 temporaries (Z scale, acc, steps)."""
    shapes = list(lm.param_shapes(mcfg).values())
    factors = sum(cfg.rank * (s[0] + s[1]) for s in shapes if len(s) == 2)   # int8 per direction
    vectors = sum(4 * s[0] for s in shapes if len(s) == 1)                 # int32 per direction
    P, N = eggroll.n_directions(cfg), cfg.population
    noise = 2 * P * (factors + vectors) + 2 * N * (factors + vectors)
    hidden = 2 * mcfg.n_layers * N * mcfg.d_model
    forward = forward_peak_bytes(mcfg, (cfg.member_chunk or N) * min(cfg.time_chunk, seq_len))
    sgd = cfg.update == "sgd"
    gemm_directions = min(P, lm.EXACT_I32_MAX_N // cfg.rank)
    update = max((12 + 28 * sgd) * s[0] * s[1] + 2 * gemm_directions * cfg.rank * (s[0] + s[1])
                 for s in shapes if len(s) == 2)
    fractions = 8 * lm.count_params(mcfg) * sgd
    return noise + hidden + forward + update + fractions


def memory_per_member_bytes(mcfg, rank=1):
    """Perturbation bytes one member holds during the population forward.

    naive ES: its own int8 copy of all d noise numbers, plus the float64 copy of one matrix's
    noise that int_rnn_lm.Full.matmul_delta makes for the BLAS GEMV (transient).
    EGGROLL: int8 factors A (m, r) and B (n, r) per matrix and a, b per vector entry (eggroll.py
    multiplies a b into int32 per pair; the member needs only the two int8 factors).
    D = 64, L = 1: naive ES 82,240 (+ 131,072 transient), EGGROLL 2,432 at rank 1 (34x less)."""
    shapes = lm.param_shapes(mcfg).values()
    matrices = [s for s in shapes if len(s) == 2]
    vector_entries = sum(s[0] for s in shapes if len(s) == 1)
    return {"es_naive": sum(math.prod(s) for s in shapes),                     # int8 noise
            "es_naive_float64_transient": 8 * max(math.prod(s) for s in matrices),
            "eggroll": sum(rank * (m + n) for m, n in matrices) + 2 * vector_entries}



# -----------------------------------------------------------------------------
# 4. scaling out: what travels between processes, and the step time at K = 1, 2

SPLIT_METHODS = {"eggroll": eggroll, "es_naive": es_naive, "mezo": mezo}


def bytes_received_per_step(name, cfg, mcfg):
    """What one mpirun step sends to each process (train.OneProcess.allgather/allreduce_sum):
    ES: N int64 fitness values; MeZO: n rows (pg, loss, rails) float64 plus the carried state's
    int32 sum (L, S, D)."""
    if name == "mezo":
        return 3 * 8 * cfg.n_dirs + 4 * mcfg.n_layers * cfg.rows * mcfg.d_model
    return 8 * cfg.population


def median_step(method, cfg, steps, warmup, world=ONE):
    """Median seconds of one step of `method` at the CPU default run (model, windows) with
    config cfg, after `warmup` steps, and the member-tokens a step scores. Under mpirun every
    rank calls it; the ranks start each step together."""
    run = train.run_defaults(method, "cpu")
    mcfg = train.model_config(run)
    params = lm.init_params(mcfg, 0, np)
    state = method.init(params, cfg, mcfg, 0, world)
    stream = train.TrainStream(train.split_train_val(train.load_bytes(train.DEFAULT_DATA))[0],
                               method.num_sequences(cfg), run["seq_len"], np)
    times = []
    for t in range(steps + warmup):
        world.bcast(None)
        t0 = time.perf_counter()
        params, state, stats = method.step(params, state, stream.batch(t), t, cfg, mcfg, 0, world)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[warmup:])), int(stats["member_tokens"])


def split_step_seconds(name, steps):
    """Run under `mpiexec -n K python bench.py --split_step NAME`: the median step time of NAME's
    CPU default (MeZO with 2 directions, so that 2 ranks share them), printed by rank 0."""
    world = train.join_world()
    method = SPLIT_METHODS[name]
    cfg = method.Config(n_dirs=2) if name == "mezo" else method.Config()
    step_s, _ = median_step(method, cfg, steps, 2, world)
    if world.rank == 0:
        print(json.dumps({"step_s": step_s}))


def bench_scaling(steps):
    gpu_mcfg = train.model_config(train.RUN_DEFAULTS["cuda"])
    n_params = lm.count_params(gpu_mcfg)
    rows = []
    for name, method in SPLIT_METHODS.items():
        gcfg = train.default_config(method, "cuda")
        sent = bytes_received_per_step(name, gcfg, gpu_mcfg)
        timed = []
        for k in (1, 2):
            cmd = [sys.executable, "bench.py", "--split_step", name, "--repeat", str(steps)]
            if k > 1:
                cmd = [shutil.which("mpiexec"), "-n", str(k)] + cmd
            out = subprocess.run(cmd, cwd=os.path.dirname(os.path.abspath(__file__)),
                                 capture_output=True, text=True, check=True).stdout
            timed.append(json.loads(out.strip().splitlines()[-1]))
        rows.append([name, f"{sent:,}", f"{4 * n_params:,}", f"{4 * n_params / sent:,.0f}x",
                     f"{1e3 * timed[0]['step_s']:.1f}", f"{1e3 * timed[1]['step_s']:.1f}",
                     f"{timed[0]['step_s'] / timed[1]['step_s']:.2f}x"])
    table(f"4. mpirun: bytes each process receives per step at the GPU default size (D = "
          f"{gpu_mcfg.d_model}, L = {gpu_mcfg.n_layers}, {n_params:,} params) vs a float32 "
          f"gradient all-reduce, and step time of the CPU default at K = 1, 2 processes",
          ["method", "B/step (mpirun)", "B/step (gradient all-reduce)", "less by",
           "step ms, K = 1", "step ms, K = 2", "speed-up"], rows)


# -----------------------------------------------------------------------------
# 5. CPU threads: the same step with the rows split over k threads


def bench_threads(steps, thread_counts=(1, 2)):
    rows = []
    for name, method in SPLIT_METHODS.items():
        rates = []
        for k in thread_counts:
            lm.set_threads(k)
            step_s, tokens = median_step(method, method.Config(), steps, 1)
            rates.append(tokens / step_s)
        lm.set_threads(1)
        rows.append([name] + [f"{r / 1e3:.1f}k" for r in rates] + [f"{rates[-1] / rates[0]:.2f}x"])
    table("5. CPU threads: member-tokens/s of each method's CPU default step",
          ["method"] + [f"{k} thread{'s' * (k > 1)}" for k in thread_counts] + ["speed-up"], rows)


# -----------------------------------------------------------------------------
# where a call spends its time: population_timings' phases (and results/claims.py's)


def timed_calls(fn, targets):
    """fn() once, with the seconds spent inside each target function during it.

    targets: {label: (owner, attribute name)}, module functions or class methods that fn
    reaches by name, wrapped with a timer for this one call and restored after. A label's time
    includes the targets it calls. Returns (fn's result, its seconds, {label: seconds})."""
    spent = {label: 0.0 for label in targets}
    saved = {label: getattr(owner, attr) for label, (owner, attr) in targets.items()}

    def wrap(label, f):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - t0
        return timed
    for label, (owner, attr) in targets.items():
        setattr(owner, attr, wrap(label, saved[label]))
    try:
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0, spent
    finally:
        for label, (owner, attr) in targets.items():
            setattr(owner, attr, saved[label])


def step_phases(method):
    """What a method's step spends its time on: the noise draw (direction_noise: EGGROLL draws it
    before the forward, naive ES inside the forward and again in the update), the population
    forward (population_fitness) and the update; inside them, the shared integer GEMMs
    (int_matmul) and the members' own terms: matmul, embedding rows, vectors (LowRank's or
    Full's matmul_delta and row_delta, Full's vector_delta)."""
    member = lm.LowRank if method is eggroll else lm.Full
    return {"noise": (method, "direction_noise"), "forward": (method, "population_fitness"),
            "update": (method, "update"), "gemm": (lm, "int_matmul"),
            "member_matmul": (member, "matmul_delta"), "member_rows": (member, "row_delta"),
            "member_vectors": (lm.Full, "vector_delta")}

# -----------------------------------------------------------------------------
# memory: backprop's activations vs ES at inference memory. Backprop keeps the window's
# activations for its backward pass (O(rows x bytes)); an ES step needs what one forward
# time chunk needs (O(rows x time_chunk)) plus its noise. Measured with NumPy on the CPU at
# both default sizes (tracemalloc sees NumPy's arrays).


def traced_peak_bytes(fn):
    """Bytes allocated at the peak of fn() beyond what was allocated before it."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def memory_rows(device):
    """At `device`'s default model and run settings: (what, rows x bytes, arithmetic bytes,
    traced peak bytes) of one backprop step, a plain integer inference forward of the same rows
    x bytes, an EGGROLL step scoring the same member-bytes (population = rows), and an EGGROLL
    step at its own default."""
    run = train.run_defaults(backprop, device)
    mcfg = train.model_config(run)
    params = lm.init_params(mcfg, 0)
    bcfg = train.default_config(backprop, device)
    S, T = bcfg.rows, run["seq_len"]
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 256, (S, T + 1)).astype(np.uint8)
    state = backprop.init(params, bcfg, mcfg, 0, ONE)
    backprop.step(params, state, (tokens, False), 0, bcfg, mcfg, 0, ONE)   # warm-up
    rows = [("backprop step (BPTT tape, arithmetic: backprop.activation_bytes)", f"{S} x {T}",
             backprop.activation_bytes(mcfg, S, T), traced_peak_bytes(
                 lambda: backprop.step(params, state, (tokens, False), 1, bcfg, mcfg, 0, ONE))),
            ("backprop state (float32 weights, Adam moments)", "", 12 * lm.count_params(mcfg),
             None)]
    chunk = min(T, 32)                                   # sequence_logprob's time_chunk
    rows.append(("integer inference forward (bound: forward_peak_bytes)", f"{S} x {T}",
                 forward_peak_bytes(mcfg, S * chunk), traced_peak_bytes(
                     lambda: lm.sequence_logprob(params, mcfg, tokens, lm.zero_hidden(mcfg, S)))))
    own = train.default_config(eggroll, device)
    eT = train.run_defaults(eggroll, device)["seq_len"]
    same = dataclasses.replace(own, population=S + S % 2, group_size=2, member_chunk=0)
    for what, cfg, seq in (("EGGROLL step, the same member-bytes", same, T),
                           ("EGGROLL step at its default", own, eT)):
        seqs = rng.integers(0, 256, (eggroll.num_sequences(cfg), seq + 1)).astype(np.uint8)
        estate = eggroll.init(params, cfg, mcfg, 0, ONE)
        peak = traced_peak_bytes(lambda: eggroll.step(params, estate, (seqs, False), 1, cfg, mcfg,
                                                      0, ONE))
        rows.append((f"{what} (bound: step_peak_bytes)", f"{cfg.population} x {seq}",
                     step_peak_bytes(mcfg, cfg, seq), peak))
    return mcfg, rows


def bench_memory():
    out = []
    for device in ("cpu", "cuda"):
        t0 = time.perf_counter()
        mcfg, rows = memory_rows(device)
        out += [[f"{device} default, D = {mcfg.d_model}, L = {mcfg.n_layers}", what, rb,
                 f"{arith / 2**20:,.1f}", "" if peak is None else f"{peak / 2**20:,.1f}"]
                for what, rb, arith, peak in rows]
        print(f"({device} default size measured in {time.perf_counter() - t0:.0f} s)", flush=True)
    table("memory: backprop's activations vs ES at inference memory (MiB; NumPy, traced peak "
          "of one step beyond its inputs)",
          ["size", "what", "rows x bytes", "arithmetic", "traced peak"], out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--repeat", type=int, default=3, help="timed runs per entry (median)")
    p.add_argument("--only", choices=("matmul", "population", "scaling", "threads",
                                        "memory"), default=None,
                   help="run one table group only")
    p.add_argument("--quick", action="store_true",
                   help="a reduced set of sizes (the GPU acceptance, .ci/gpu)")
    p.add_argument("--split_step", default="", help=argparse.SUPPRESS)   # table 4's worker
    args = p.parse_args()
    if args.split_step:
        return split_step_seconds(args.split_step, args.repeat)
    if args.only == "scaling":
        return bench_scaling(max(args.repeat, 5))
    if args.only == "threads":
        return bench_threads(max(args.repeat, 5))
    if args.only == "memory":
        return bench_memory()
    xp = train.get_backend(args.device)
    gpu = xp is not np
    print(f"device: {'cuda' if gpu else 'cpu'} ({xp.__name__})")
    if gpu and args.quick:
        shapes = [(16384, 256, 1024), (4096, 4096, 4096)]
        d_models, pops, T, naive_max = (256,), [2 ** 12, 2 ** 16], 100, 2 ** 12
    elif gpu:
        shapes = [(4096, 256, 1024), (16384, 256, 1024), (16384, 1024, 256), (4096, 4096, 4096)]
        d_models, pops, T, naive_max = (256, 1024), [2 ** k for k in range(10, 19, 2)], 100, 2 ** 12
    elif args.quick:
        shapes = [(16, 16, 16), (4096, 64, 256)]
        d_models, pops, T, naive_max = (64,), [2 ** 10], 8, 2 ** 10
    else:
        shapes = [(16, 16, 16), (4096, 64, 256), (4096, 256, 1024), (1024, 1024, 1024),
                  (4096, 4096, 4096)]
        d_models, pops, T, naive_max = (64, 256), [2 ** 10, 2 ** 12], 8, 2 ** 10
    if args.only in (None, "matmul"):
        bench_matmul(xp, shapes, args.repeat)
    if args.only in (None, "population"):
        bench_population(xp, d_models, pops, T, args.repeat, naive_max)
    if args.only is None and not args.quick and not gpu:
        bench_threads(max(args.repeat, 5))
    if args.only is None and not args.quick and shutil.which("mpiexec"):
        bench_scaling(max(args.repeat, 5))


if __name__ == "__main__":
    main()
