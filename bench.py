r"""Throughput benchmarks: every number a ratio measured in one run on the current device.

    $ python bench.py                  # CPU: small sizes, a few minutes on 2 cores
    $ python bench.py --device cuda    # GPU: the paper's sizes (D = 256, 1024; N up to 2^18)
    $ python bench.py --device cuda --quick   # GPU acceptance (.ci/gpu): a reduced set

Tables (DESIGN §8):
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
GPU timings use CUDA events after a warm-up; CPU timings use perf_counter.
"""
import os

# The model's GEMMs are small and many: one BLAS thread per process was 2.5-4x faster than
# OpenBLAS's default on our 2-core machine whenever anything else ran (61k vs 23k member-tok/s
# for EGGROLL). Set before numpy loads; an explicit OPENBLAS_NUM_THREADS in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import shutil
import subprocess
import sys
import time

import numpy as np

import eggroll
import es_naive
import int_rnn_lm as lm
import mezo
import train


def timer(xp, fn, repeat):
    """Median seconds of fn() over `repeat` runs after one warm-up run."""
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


def noise_bytes_per_member(mcfg, rank):
    """Noise a member must hold (or regenerate): EGGROLL r (m + n) per matrix, naive ES m n."""
    shapes = lm.param_shapes(mcfg).values()
    vec = sum(2 * s[0] for s in shapes if len(s) == 1)
    low = sum(rank * (s[0] + s[1]) for s in shapes if len(s) == 2) + vec
    full = sum(s[0] * s[1] for s in shapes if len(s) == 2) + vec
    return low, full


def bench_population(xp, d_models, populations, T, repeat, naive_max):
    rows, rows_naive = [], []
    for D in d_models:
        mcfg = lm.ModelConfig(D, 1)
        for N in populations:
            params, tokens = population_inputs(mcfg, N, T, xp)
            chunk = min(N, 4096)
            cfg = eggroll.Config(population=N, group_size=2, time_chunk=min(T, 25),
                                 member_chunk=chunk)
            state = eggroll.init(params, cfg, mcfg, 0)
            seqs = tokens[: eggroll.num_sequences(cfg)]
            hidden = lm.zero_hidden(mcfg, N, xp)

            def inference():
                for i in range(0, N, chunk):
                    lm.sequence_logprob(params, mcfg, tokens[i: i + chunk], hidden[:, i: i + chunk],
                                        None, cfg.time_chunk)

            def egg():
                eggroll.step(params, state, (seqs, False), 5, cfg, mcfg, 0)
            t_inf = timer(xp, inference, repeat)
            t_egg = timer(xp, egg, repeat)
            mtok = N * T
            rows.append([D, N, f"{mtok / t_inf / 1e6:.3f}", f"{mtok / t_egg / 1e6:.3f}",
                         f"{100 * t_inf / t_egg:.1f} %",
                         f"{eggroll.step_peak_bytes(mcfg, cfg, T) / 2**30:.2f} GiB"])
            if N <= naive_max:
                ncfg = es_naive.Config(population=N, group_size=2)
                nstate = es_naive.init(params, ncfg, mcfg, 0)

                def naive():
                    es_naive.step(params, nstate, (seqs, False), 5, ncfg, mcfg, 0)
                t_naive = timer(xp, naive, max(1, repeat // 2))
                low, full = noise_bytes_per_member(mcfg, cfg.rank)
                rows_naive.append([D, N, f"{mtok / t_egg / 1e6:.3f}", f"{mtok / t_naive / 1e6:.4f}",
                                   f"{t_naive / t_egg:.1f}x", f"{low:,}", f"{full:,}"])
    table(f"2. EGGROLL step vs plain inference (L = 1, {T} tokens per member): "
          "M member-tokens/s",
          ["D", "population", "inference", "EGGROLL", "EGGROLL % of inference",
           "EGGROLL memory bound"], rows)
    table("3. naive ES vs EGGROLL (same population and tokens): M member-tokens/s and noise "
          "bytes per member", ["D", "population", "EGGROLL", "naive ES", "naive ES slower by",
                               "EGGROLL B/member", "naive ES B/member"], rows_naive)


# -----------------------------------------------------------------------------
# 4. scaling out: what travels between processes, and the step time at K = 1, 2

SPLIT_METHODS = {"eggroll": eggroll, "es_naive": es_naive, "mezo": mezo}


def bytes_received_per_step(name, cfg, mcfg):
    """What one mpirun step sends to each rank (int_rnn_lm.OneProcess.allgather/allreduce_sum):
    ES: N int64 fitness values; MeZO: n rows (pg, loss, rails) float64 plus the carried state's
    int32 sum (L, S, D)."""
    if name == "mezo":
        return 3 * 8 * cfg.n_dirs + 4 * mcfg.n_layers * cfg.batch * mcfg.d_model
    return 8 * cfg.population


def median_step(method, cfg, steps, warmup, world=lm.ONE_PROCESS):
    """Median seconds of one step of `method` at the CPU default run (model, windows) with
    config cfg, after `warmup` steps, and the member-tokens a step scores. Under mpirun every
    rank calls it; the ranks start each step together."""
    run = train.run_defaults(method, "cpu")
    mcfg = lm.ModelConfig(run["d_model"], run["n_layers"])
    params = lm.init_params(mcfg, 0, np)
    state = method.init(params, cfg, mcfg, 0, world)
    stream = lm.TrainStream(lm.split_train_val(lm.load_bytes(lm.DEFAULT_DATA))[0],
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
    gpu_mcfg = lm.ModelConfig(train.RUN_DEFAULTS["cuda"]["d_model"],
                              train.RUN_DEFAULTS["cuda"]["n_layers"])
    n_params = lm.count_params(gpu_mcfg)
    rows = []
    for name, method in SPLIT_METHODS.items():
        gcfg = method.Config(**getattr(method, "GPU_DEFAULTS", {}))
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--repeat", type=int, default=3, help="timed runs per entry (median)")
    p.add_argument("--only", choices=("matmul", "population", "scaling", "threads"), default=None,
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
    xp = lm.get_backend(args.device)
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
