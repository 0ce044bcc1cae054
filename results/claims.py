r"""The EGGROLL paper's claims (Sarkar et al., arXiv 2511.16652), each one command that prints
the paper's number beside ours and draws results/claim_NAME.png:

    $ python results/claims.py billion           # a 1 B-parameter int8 LM takes an EGGROLL step
    $ python results/claims.py rank_convergence  # E[rank-r update] -> Gaussian update at O(1/r)
    $ python results/claims.py full_rank         # rank-r members, an update of full rank
    $ python results/claims.py inference         # a step as a % of plain inference (bench.py's
                                                 # tables 2-3, with the step's time split)
    $ python results/claims.py billion --device cuda   # the 1 B step on the GPU (.ci/gpu part 3)

Each runs on the CPU; billion puts each model size in its own process, capped at --cap_gb
(default: half this machine's memory).

Why apart from bench.py: bench.py measures this code's speed and memory, as ratios taken in one
run on the current device; the claims reproduce statements of the paper, some by arithmetic or
Monte Carlo rather than timing, and their figures go to results/. This file imports bench.py for
the throughput helpers (timer, population_timings, timed_calls, ...); bench.py does not import it.
"""
import os

# one BLAS thread per process, as in train.py and bench.py (set before numpy loads; an explicit
# setting wins)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import json
import math
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import eggroll  # noqa: E402
import es_naive  # noqa: E402
import int_rnn_lm as lm  # noqa: E402
import train  # noqa: E402
from bench import ONE, population_timings, step_phases, table, timed_calls, timer  # noqa: E402

# -----------------------------------------------------------------------------
# the figures: results/claim_NAME.png

RESULTS = HERE


def pyplot():
    """matplotlib.pyplot, drawing to files only."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, name):
    path = os.path.join(RESULTS, f"claim_{name}.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    print(f"figure: {path}")
    return path


# -----------------------------------------------------------------------------
# claim billion: a billion-parameter integer LM takes one EGGROLL step on a 2-core CPU


BILLION = (4096, 5)                   # D, L: 1,008,816,128 int8 parameters
BILLION_SIZES = [(64, 1), (256, 1), (1024, 1), (2048, 1), (4096, 1), BILLION]
BILLION_POPULATION, BILLION_BYTES = 32, 4   # members (16 antithetic pairs), bytes per member
STEP_METHODS = {"eggroll": eggroll, "es_naive": es_naive}


def noise_numbers_per_step(name, mcfg, population, rank=1):
    """Random numbers a step draws: EGGROLL r (m + n) per matrix and 2 per vector entry for
    each pair, once; naive ES every weight's own number per pair, drawn for the forward and
    again for the update (es_naive.noise_source keeps nothing)."""
    shapes = lm.param_shapes(mcfg).values()
    pairs = population // 2
    if name == "eggroll":
        return pairs * sum(rank * (s[0] + s[1]) if len(s) == 2 else 2 * s[0] for s in shapes)
    return 2 * pairs * lm.count_params(mcfg)


# the model of a memory claim: init_params for a model too large for its float64 draws


def init_params_in_rows(cfg, seed, xp=np, max_draw=1 << 22):
    """lm.init_params bit for bit, in bounded memory: each matrix's normals are drawn a block of
    rows at a time (at most max_draw float64 numbers, 32 MiB), rounded into the int8 matrix.

    init_params holds float64 copies of a whole matrix (2.7 GB each for the 36864 x 9216 MLP
    of a D = 9216 model); here the peak is the int8 parameters plus one block. The generator
    draws the same numbers in the same order whether asked for them at once or in pieces."""
    lm.check_model_config(cfg)
    params = {}
    for pid, (name, shape) in enumerate(lm.param_shapes(cfg).items()):
        if len(shape) != 2:
            params[name] = lm.init_params_vector(name, shape, xp)
            continue
        rng = np.random.default_rng([seed, lm.INIT_STREAM, pid])
        w = np.empty(shape, dtype=np.int8)
        rows = max(1, max_draw // shape[1])
        for r0 in range(0, shape[0], rows):
            block = np.rint(lm.Q_ONE * rng.standard_normal((min(rows, shape[0] - r0), shape[1])))
            w[r0: r0 + rows] = np.clip(block, -127, 127)                 # q4, N(0, 1) * 16
        params[name] = xp.asarray(w)
    return params


def profile_step(name, D, L, population, seq_len, repeat, member_chunk=None):
    """One step of `name` (eggroll or es_naive, the paper's threshold update; member_chunk
    members evaluated at a time, None: the method's default run's) at model (D, L) on real
    windows, against plain inference of the same rows x bytes through the same
    population_logprob: median seconds of each over `repeat` runs (after one warm-up when
    repeat > 1), the step's phases, the bytes it allocates at its peak (tracemalloc, beyond
    what was held before it) and the process's peak RSS. The model is init_params' own, drawn
    by init_params_in_rows. Returns a dict; a step that runs out of memory returns its error."""
    import resource
    import tracemalloc
    method = STEP_METHODS[name]
    mcfg = lm.ModelConfig(D, L)
    out = {"method": name, "D": D, "L": L, "params": lm.count_params(mcfg),
           "population": population, "seq_len": seq_len,
           "noise_numbers": noise_numbers_per_step(name, mcfg, population)}
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB
    try:
        params = init_params_in_rows(mcfg, 0)
        cfg = method.Config(population=population, group_size=2, time_chunk=seq_len,
                            update="threshold", sampling="antithetic")
        if member_chunk is None:   # the method's default run's (its DEFAULTS, CPU)
            member_chunk = train.default_config(method, "cpu").member_chunk
        cfg = dataclasses.replace(cfg, member_chunk=member_chunk)
        out["member_chunk"] = cfg.member_chunk
        state = method.init(params, cfg, mcfg, 0, ONE)
        data = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))[0]
        batch = train.TrainStream(data, method.num_sequences(cfg), seq_len).batch(0)
        rows = batch[0][np.arange(population) // cfg.group_size]          # (N, T + 1): the step's
        hidden = lm.zero_hidden(mcfg, population)
        out["inference_s"] = timer(np, lambda: lm.population_logprob(
            params, mcfg, rows, hidden, None, seq_len), repeat, warmup=repeat > 1)
        if repeat > 1:
            method.step(params, state, batch, 0, cfg, mcfg, 0, ONE)           # warm-up
        runs = []
        for _ in range(repeat):
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            _, seconds, phases = timed_calls(
                lambda: method.step(params, state, batch, 0, cfg, mcfg, 0, ONE),
                step_phases(method))
            peak = tracemalloc.get_traced_memory()[1] - before
            tracemalloc.stop()
            runs.append((seconds, phases, peak))
        seconds, phases, peak = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        out.update(step_s=seconds, phases=phases, step_peak_bytes=peak, rss_bytes=rss())
    except MemoryError as e:
        out.update(error=f"MemoryError: {e}"[:160], rss_bytes=rss())
    return out


def profile_step_capped(cap_bytes, *job):
    """profile_step in a fresh process whose address space is capped at cap_bytes: a size
    that does not fit ends there in a MemoryError instead of the OOM killer ending everything
    here, and each size's peak RSS is its own."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--claim_worker",
                           json.dumps(job)], capture_output=True, text=True, preexec_fn=cap)
    if proc.returncode != 0:
        name, D, L = job[:3]
        return {"method": name, "D": D, "L": L, "params": lm.count_params(lm.ModelConfig(D, L)),
                "error": f"exit {proc.returncode}: {proc.stderr.strip()[-160:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def physical_memory_bytes():
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


LEAST_MEMORY_NAIVE = (1024, 1, 2)   # D, L, member_chunk: naive ES two members at a time


def billion_step_on_device(xp, D=4096, L=5, population=1024, seq_len=16, repeat=3):
    """One EGGROLL step of the ~1 B-parameter LM (D = 4096, L = 5) on the device of xp (the GPU
    acceptance runs it on CuPy), against plain inference of the same rows x bytes: median
    seconds of each (CUDA events on a GPU), and the CuPy pool's high-water mark. The paper's
    threshold update, rank 1. Returns a dict."""
    mcfg = lm.ModelConfig(D, L)
    params = {k: xp.asarray(v) for k, v in init_params_in_rows(mcfg, 0).items()}
    cfg = eggroll.Config(population=population, group_size=2, time_chunk=seq_len,
                         update="threshold", sampling="antithetic")
    state = eggroll.init(params, cfg, mcfg, 0, ONE)
    data = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))[0]
    batch = train.TrainStream(data, eggroll.num_sequences(cfg), seq_len, xp).batch(1)
    rows = batch[0][xp.arange(population) // cfg.group_size]
    hidden = lm.zero_hidden(mcfg, population, xp)
    inference_s = timer(xp, lambda: lm.population_logprob(params, mcfg, rows, hidden, None,
                                                          seq_len), repeat)
    step_s = timer(xp, lambda: eggroll.step(params, state, batch, 1, cfg, mcfg, 0, ONE), repeat)
    out = {"params": lm.count_params(mcfg), "population": population, "seq_len": seq_len,
           "step_s": step_s, "inference_s": inference_s,
           "member_tokens_per_s": population * seq_len / step_s}
    if xp is not np:
        out["pool_peak_gib"] = xp.get_default_memory_pool().total_bytes() / 2**30
    print(f"EGGROLL step of a {out['params']:,}-parameter int8 LM (D = {D}, L = {L}) on "
          f"{'cuda' if xp is not np else 'cpu'}: {step_s:.3f} s per step of {population} members "
          f"x {seq_len} bytes ({out['member_tokens_per_s']:,.0f} member-tokens/s); plain "
          f"inference of the same batch {inference_s:.3f} s ({100 * inference_s / step_s:.1f} %"
          f" of the step)" + (f"; memory pool {out['pool_peak_gib']:.1f} GiB"
                              if "pool_peak_gib" in out else ""))
    return out


def claim_billion(sizes=BILLION_SIZES, population=BILLION_POPULATION, seq_len=BILLION_BYTES,
                  cap_bytes=None, least_memory_naive=LEAST_MEMORY_NAIVE, figure=True):
    """Time one EGGROLL step and one naive-ES step (until a size does not fit under the cap) at
    each model size, and naive ES evaluated two members at a time at one size, each in its own
    capped process; the table, the 1 B summary and claim_billion.png. Returns the rows."""
    cap_bytes = cap_bytes or physical_memory_bytes() // 2
    print(f"claim billion: a billion-parameter integer LM takes one EGGROLL step on this CPU "
          f"({os.cpu_count()} cores, one thread, each size in its own process capped at "
          f"{cap_bytes / 2**30:.1f} GiB); population {population} ({population // 2} antithetic "
          f"pairs) x {seq_len} bytes, rank 1, the paper's threshold update (no optimiser state)")
    jobs, rows, naive_fits = [], [], True
    for D, L in sizes:
        repeat = 3 if lm.count_params(lm.ModelConfig(D, L)) < 10**7 else 1   # > 10^7: slow
        jobs += [("eggroll", D, L, population, seq_len, repeat, None),
                 ("es_naive", D, L, population, seq_len, repeat, None)]
    if least_memory_naive:
        jobs.append(("es_naive",) + least_memory_naive[:2] + (population, seq_len, 1,
                                                              least_memory_naive[2]))
    for job in jobs:
        if job[0] == "es_naive" and job[-1] is None and not naive_fits:
            continue                                # a larger model cannot fit where this did not
        row = profile_step_capped(cap_bytes, *job)
        rows.append(row)
        naive_fits = naive_fits and not (job[0] == "es_naive" and "error" in row)
        print(f"  ... {job[0]}{' (2 at a time)' if job[-1] == 2 else ''} D = {job[1]}, "
              f"L = {job[2]}: " + (
            row["error"] if "error" in row else f"{row['step_s']:.2f} s/step"), flush=True)
    table_rows = []
    for r in rows:
        label = r["method"] + (f" ({r['member_chunk']} at a time)"
                               if r["method"] == "es_naive" and r.get("member_chunk") == 2 else "")
        head = [label, r["D"], r["L"], f"{r['params']:,}"]
        if "error" in r:
            table_rows.append(head + ["did not fit (" + r["error"].split(":")[0] + ")"] + [""] * 8)
            continue
        ph = r["phases"]
        member = sum(v for k, v in ph.items() if k.startswith("member"))
        table_rows.append(head + [
            f"{r['step_s']:.2f}", f"{r['inference_s']:.2f}",
            f"{100 * r['inference_s'] / r['step_s']:.1f} %",
            f"{ph['noise']:.2f} / {ph['forward']:.2f} / {ph['update']:.2f}",
            f"{100 * ph['gemm'] / r['step_s']:.0f} %", f"{100 * member / r['step_s']:.0f} %",
            f"{r['step_peak_bytes'] / 2**30:.2f}", f"{r['rss_bytes'] / 2**30:.2f}",
            f"{r['noise_numbers']:.2e}"])
    table("claim billion: one step vs plain inference of the same rows x bytes, by model size",
          ["method", "D", "L", "params", "step s", "inference s", "inference / step",
           "noise / forward / update s", "shared GEMMs", "member terms", "step peak GiB",
           "process peak GiB", "noise numbers/step"], table_rows)
    billion_summary(rows, population, cap_bytes)
    if figure:
        plot_billion([r for r in rows if r.get("member_chunk") != 2], cap_bytes)
    return rows


def billion_summary(rows, population, cap_bytes):
    """The 1 B step in words, and where naive ES stops with the arithmetic beyond it."""
    ok = [r for r in rows if "error" not in r]
    eggs = [r for r in ok if r["method"] == "eggroll"]
    if not eggs:
        return
    egg = max(eggs, key=lambda r: r["params"])
    print(f"\nEGGROLL at {egg['params']:,} parameters (D = {egg['D']}, L = {egg['L']}): "
          f"{egg['step_s']:.1f} s per step of {population} members x {egg['seq_len']} bytes, "
          f"{egg['step_peak_bytes'] / 2**30:.2f} GiB allocated by the step at its peak, "
          f"{egg['rss_bytes'] / 2**30:.2f} GiB process peak; plain inference of the same "
          f"batch {egg['inference_s']:.1f} s ({100 * egg['inference_s'] / egg['step_s']:.0f} % "
          f"of the step). Of the step, the population forward took {egg['phases']['forward']:.1f}"
          f" s (it grows with N x T) and the update {egg['phases']['update']:.1f} s (passes over "
          f"every weight, whatever N: at the paper's populations it is a small part).")
    naive = [r for r in ok if r["method"] == "es_naive" and r["member_chunk"] != 2]
    if not naive:
        return
    big = max(naive, key=lambda r: r["params"])
    twin = next(r for r in eggs if r["params"] == big["params"])
    failed = [r for r in rows if r["method"] == "es_naive" and "error" in r]
    print(f"naive ES, same population and bytes, all members at once: largest size run "
          f"{big['params']:,} parameters (D = {big['D']}, L = {big['L']}), {big['step_s']:.1f} s "
          f"per step ({big['step_s'] / twin['step_s']:.1f}x EGGROLL's {twin['step_s']:.2f} s; "
          f"paper: 'a hundredfold increase in training speed for billion-parameter models'), "
          f"{big['step_peak_bytes'] / 2**30:.2f} GiB step peak"
          + (f"; D = {failed[0]['D']}, L = {failed[0]['L']} did not fit in "
             f"{cap_bytes / 2**30:.1f} GiB" if failed else "") + ".")
    scale = egg["params"] / big["params"]
    if scale <= 1:
        return
    print(f"beyond, by arithmetic (its step draws 2 x {population // 2} pairs x d numbers and its "
          f"members hold {population} int8 copies of d: time and memory grow with d): at "
          f"{egg['params']:,} parameters about {big['step_s'] * scale / 60:.0f} min per step and "
          f"{big['step_peak_bytes'] * scale / 2**30:.0f} GiB (the members' int8 noise alone "
          f"{population * egg['params'] / 2**30:.0f} GiB), against EGGROLL's "
          f"{egg['step_s']:.0f} s and {egg['step_peak_bytes'] / 2**30:.1f} GiB.")
    low = [r for r in ok if r["method"] == "es_naive" and r["member_chunk"] == 2]
    if low:
        low = low[0]
        largest = lambda r: max(math.prod(s) for s in lm.param_shapes(
            lm.ModelConfig(r["D"], r["L"])).values())
        per_mn = (low["step_peak_bytes"] - 3 * low["params"]) / largest(low)
        at_1b = 3 * egg["params"] + per_mn * largest(egg)
        print(f"two members at a time (es_naive member_chunk = 2, measured at D = {low['D']}, "
              f"L = {low['L']}: {low['step_s']:.1f} s, {low['step_peak_bytes'] / 2**30:.2f} GiB "
              f"= 3 d + {per_mn:.0f} max(m n) bytes) it would fit at {egg['params']:,} "
              f"parameters (about {at_1b / 2**30:.1f} GiB) but take about "
              f"{low['step_s'] * egg['params'] / low['params'] / 60:.0f} min per step: every "
              f"member still draws and multiplies its own d numbers.")


def plot_billion(rows, cap_bytes):
    plt = pyplot()
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, color in (("eggroll", "C0"), ("es_naive", "C3")):
        ok = [r for r in rows if r["method"] == name and "error" not in r]
        if not ok:
            continue
        x = [r["params"] for r in ok]
        label = "EGGROLL (rank 1)" if name == "eggroll" else "naive ES (full rank)"
        ax_t.loglog(x, [r["step_s"] for r in ok], "o-", color=color, label=label + " step")
        ax_m.loglog(x, [r["step_peak_bytes"] / 2**30 for r in ok], "o-", color=color,
                    label=label + " step peak")
        if name == "eggroll":
            ax_t.loglog(x, [r["inference_s"] for r in ok], "s:", color="gray",
                        label="plain inference, same batch")
        else:                                  # beyond its largest size: growth with d
            big = max(ok, key=lambda r: r["params"])
            top = max(r["params"] for r in rows)
            if top > big["params"]:
                xs = [big["params"], top]
                ax_t.loglog(xs, [big["step_s"], big["step_s"] * top / big["params"]], "--",
                            color=color, label="naive ES, by arithmetic (grows with d)")
                ax_m.loglog(xs, [big["step_peak_bytes"] / 2**30,
                                 big["step_peak_bytes"] / 2**30 * top / big["params"]], "--",
                            color=color, label="naive ES, by arithmetic")
    failed = [r["params"] for r in rows if r["method"] == "es_naive" and "error" in r]
    if failed:
        ax_m.loglog(failed, [cap_bytes / 2**30] * len(failed), "x", color="C3", ms=10, mew=2,
                    label="naive ES: MemoryError under the cap")
    xs = sorted({r["params"] for r in rows})
    ax_m.loglog(xs, [x / 2**30 for x in xs], ":", color="k", label="the int8 model itself")
    ax_m.axhline(cap_bytes / 2**30, color="k", lw=0.8, label="memory cap of each run")
    ax_t.set_ylabel("seconds per step")
    ax_m.set_ylabel("GiB allocated by the step at its peak")
    for ax in (ax_t, ax_m):
        ax.set_xlabel("parameters (int8)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"One ES step on a {os.cpu_count()}-core CPU, population "
                 f"{rows[0].get('population', '')}, by model size")
    return save_figure(fig, "billion")

# -----------------------------------------------------------------------------
# claim rank_convergence: the rank-r update's expectation tends to the Gaussian one at O(1/r)
#
# The problem, where both expectations are known in closed form: f(W) = phi(<G, W>) at W = 0,
# with E = A B^T / sqrt(r) (A (m, r), B (n, r) i.i.d. N(0, 1)) or E Gaussian, s = <G, E>:
#   the ES update  g = E[E f(sigma E)] / sigma
#   cubic phi(x) = (x + 1)^3:  E[E s] = G for both; E[E s^2] = 0; E[E s^3] = 3 |G|^2 G for the
#       Gaussian and 3 |G|^2 G + (6 / r) G G^T G for rank r (the 4th-moment term), so
#       g_r = 3 (1 + sigma^2 |G|^2) G + (6 sigma^2 / r) G G^T G: the error is exactly 1/r
#   exp phi(x) = e^x:  with H = G^T G and X = I - (sigma^2 / r) H, the moment generating function
#       of a^T G b and its derivative in G give
#       g_r = G X^-1 det(X)^(-r/2),  g_Gauss = G exp(sigma^2 |G|^2 / 2): every order of 1/r
#       (needs sigma^2 |G|_2^2 < r)
# Relative error |g_r - g_Gauss|_F / |g_Gauss|_F.

RANK_PROBLEM = dict(m=12, n=8, sigma=0.3, seed=0)
FITNESS = {"cubic": lambda x: (x + 1.0) ** 3, "exp": np.exp}   # phi
SLOPE_AT_0 = {"cubic": 3.0, "exp": 1.0}                       # phi'(0)


def rank_problem(m, n, sigma, seed):
    """G (m, n) ~ N(0, 1) scaled to spectral norm 1, and sigma."""
    G = np.random.default_rng([seed, 22]).standard_normal((m, n))
    return G / np.linalg.norm(G, 2), sigma


def expected_update(kind, G, sigma, r=None):
    """The exact ES update E[E f(sigma E)] / sigma: Gaussian E (r None) or rank r (above)."""
    if kind == "cubic":
        g = 3 * (1 + sigma**2 * (G**2).sum()) * G
        return g if r is None else g + (6 * sigma**2 / r) * G @ G.T @ G
    if r is None:
        return G * math.exp(sigma**2 * (G**2).sum() / 2)
    lam, V = np.linalg.eigh(G.T @ G)                       # H = V diag(lam) V^T
    x = -(sigma**2 / r) * lam                             # X = V diag(1 + x) V^T
    log_det_power = -(r / 2) * np.log1p(x).sum()          # log det(X)^(-r/2), accurately
    return (G @ (V / (1 + x)) @ V.T) * math.exp(log_det_power)


def relative_error(g, ref):
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def monte_carlo_update(G, sigma, r, samples, seed, directions, chunk=50_000):
    """Antithetic Monte Carlo of g = E[E f(sigma E)] / sigma for both fitnesses from the same
    samples, r None: Gaussian E. Returns {kind: {"mean": (m, n), "se": the standard error of
    the mean as a Frobenius norm, "along", "along_se": <mean, u> and its standard error}} for
    the unit direction u = directions[kind] (the exact bias's: one number, ~sqrt(m n) times
    better resolved than the whole matrix). The control variate phi'(0) (s E - G), of mean 0
    for either noise (E[s E] = G: both have identity covariance), is subtracted per sample: it
    carries much of the variance and none of the difference between the two."""
    rng = np.random.default_rng([seed, 22, r or 0])
    m, n = G.shape
    sums = {k: {"x": np.zeros((m, n)), "xx": 0.0, "p": 0.0, "pp": 0.0} for k in FITNESS}
    for i in range(0, samples, chunk):
        k = min(chunk, samples - i)
        if r is None:
            E = rng.standard_normal((k, m, n))
        else:
            E = np.einsum("kmr,knr->kmn", rng.standard_normal((k, m, r)),
                          rng.standard_normal((k, n, r))) / math.sqrt(r)
        s = np.einsum("kmn,mn->k", E, G)                                   # <G, E>
        for kind, phi in FITNESS.items():
            w = (phi(sigma * s) - phi(-sigma * s)) / (2 * sigma)           # antithetic pair
            w -= SLOPE_AT_0[kind] * s                                     # control variate
            p = w * np.einsum("kmn,mn->k", E, directions[kind])          # <w E, u> per sample
            acc = sums[kind]
            acc["x"] += np.einsum("k,kmn->mn", w, E)
            acc["xx"] += float((w**2 * (E**2).sum(axis=(1, 2))).sum())
            acc["p"] += float(p.sum())
            acc["pp"] += float((p**2).sum())
    out = {}
    for kind, acc in sums.items():
        mean = acc["x"] / samples
        cv = SLOPE_AT_0[kind] * G                                          # the variate's mean back
        u = directions[kind]
        out[kind] = {"mean": mean + cv,
                     "se": math.sqrt(max(acc["xx"] / samples - (mean**2).sum(), 0) / samples),
                     "along": acc["p"] / samples + float((cv * u).sum()),
                     "along_se": math.sqrt(max(acc["pp"] / samples - (acc["p"] / samples)**2,
                                               0) / samples)}
    return out


def linear_functional_fitness(G, phi):
    """eggroll.float_es_gradient's fitness_fn for f(W) = phi(<G, W>): member 2k evaluates
    W + sigma E_k, member 2k + 1 W - sigma E_k, E_k = A_k B_k^T / sqrt(r)."""
    def fitness(params, noise, sigma):
        A, B = noise["w"]
        s = np.einsum("mn,pmr,pnr->p", G, A, B) / math.sqrt(A.shape[-1])  # (P,) <G, E_k>
        x0 = float((G * params["w"]).sum())
        f = np.empty(2 * len(s))
        f[0::2], f[1::2] = phi(x0 + sigma * s), phi(x0 - sigma * s)
        return f
    return fitness


def finite_population_error(kind, G, sigma, r, population, draws):
    """RMS over `draws` steps' noise of the relative error of eggroll.float_es_gradient (raw
    fitness, the unbiased estimate) at `population` against the Gaussian update."""
    fcfg = eggroll.FloatConfig(population=population, sigma=sigma, rank=r, shaping="raw")
    params = {"w": np.zeros(G.shape)}
    ref = expected_update(kind, G, sigma)
    errors = [relative_error(eggroll.float_es_gradient(linear_functional_fitness(
        G, FITNESS[kind]), params, 0, t, fcfg)[0]["w"], ref) for t in range(draws)]
    return math.sqrt(np.mean(np.square(errors)))


def fitted_slope(ranks, errors):
    """Slope of log error against log r (least squares)."""
    return float(np.polyfit(np.log(ranks), np.log(errors), 1)[0])


def claim_rank_convergence(ranks=tuple(2**k for k in range(11)), mc_ranks=(1, 2, 4, 8),
                           samples=400_000, population=2048, finite_ranks=(1, 4, 16, 64),
                           draws=16, fit_from=16, problem=RANK_PROBLEM, figure=True):
    """The error of E[rank-r update] against the Gaussian one for r in ranks (closed forms),
    its fitted slope from r = fit_from on, Monte Carlo checks of the closed forms at mc_ranks
    (and for the Gaussian, r None), and the finite-population error at `population`; the table
    and claim_rank_convergence.png. Returns a dict of them."""
    G, sigma = rank_problem(**problem)
    gauss = {k: expected_update(k, G, sigma) for k in FITNESS}
    norm = {k: np.linalg.norm(g) for k, g in gauss.items()}
    bias = {(k, r): expected_update(k, G, sigma, r) - gauss[k] for k in FITNESS for r in ranks}
    exact = {k: [np.linalg.norm(bias[k, r]) / norm[k] for r in ranks] for k in FITNESS}
    fit = [i for i, r in enumerate(ranks) if r >= fit_from]
    slope = {k: fitted_slope([ranks[i] for i in fit], [exact[k][i] for i in fit]) for k in FITNESS}
    unit = {(k, r): bias[k, r or 1] / np.linalg.norm(bias[k, r or 1])    # Gaussian: r = 1's
            for k in FITNESS for r in (None,) + tuple(mc_ranks)}
    mc = {}   # (kind, r) -> (bias along u, its SE, |MC - exact| in SEs), relative to |g_Gauss|
    for r in (None,) + tuple(mc_ranks):
        got = monte_carlo_update(G, sigma, r, samples, 0, {k: unit[k, r] for k in FITNESS})
        for k, g in got.items():
            want = gauss[k] + (bias[k, r] if r else 0)
            mc[k, r] = ((g["along"] - float((gauss[k] * unit[k, r]).sum())) / norm[k],
                        g["along_se"] / norm[k], np.linalg.norm(g["mean"] - want) / g["se"])
    finite = {(k, r): finite_population_error(k, G, sigma, r, population, draws)
              for k in FITNESS for r in finite_ranks}
    print(f"claim rank_convergence: the rank-r ES update's expectation tends to the full-rank "
          f"Gaussian one at O(1/r) (paper Thm. 4: Edgeworth expansion, odd cumulants vanish, the "
          f"4th-cumulant term leads)\nproblem: f(W) = (<G, W> + 1)^3 and exp(<G, W>) at W = 0, "
          f"G {G.shape[0]} x {G.shape[1]} with |G|_2 = 1, sigma = {sigma}, E = A B^T / sqrt(r): "
          f"E[E f(sigma E)] / sigma in closed form (results/claims.py), checked by Monte Carlo")
    rows = []
    for i, r in enumerate(ranks):
        row = [r] + [f"{exact[k][i]:.3e} ({r * exact[k][i]:.4f})" for k in FITNESS]
        row += [f"{mc[k, r][0]:.3e} +- {mc[k, r][1]:.1e} ({mc[k, r][2]:.1f})"
                if (k, r) in mc else "" for k in FITNESS]
        row += [f"{finite[k, r]:.3f}" if (k, r) in finite else "" for k in FITNESS]
        rows.append(row)
    mc_head = f"MC {samples:,}: along u +- SE (off by, SEs)"
    table("rank convergence: relative error |E[g_r] - g_Gauss| / |g_Gauss|, exact (x r); the "
          "Monte Carlo (MC) of the same along the bias's direction u, and how many standard "
          "errors the whole MC matrix lies off the exact one (about 1: agreement); the actual "
          f"estimate's RMS relative error at N = {population}",
          ["r", "cubic: exact (x r)", "exp: exact (x r)", f"cubic: {mc_head}", f"exp: {mc_head}",
           f"cubic: N = {population} ({draws} steps)", f"exp: N = {population}"], rows)
    for k in FITNESS:
        along, se, off = mc[k, None]
        print(f"Gaussian E, {k}: MC off the closed form by {off:.1f} SEs; along r = 1's bias "
              f"direction {along:.1e} +- {se:.1e}")
    worst = max(exact[k][ranks.index(r)]**2 / finite[k, r]**2 for k, r in finite)
    print(f"paper: O(1/r). ours: fitted slope of log error against log r for r >= {fit_from}: "
          f"cubic {slope['cubic']:.4f} (exactly (6 sigma^2 / r) G G^T G), exp {slope['exp']:.4f}."
          f"\nat N = {population} members (eggroll.float_es_gradient, raw fitness) the sampling "
          f"error ({min(finite.values()):.2f}-{max(finite.values()):.2f} of |g_Gauss|) swamps "
          f"the bias (at most {100 * worst:.0f} % of the mean squared error): what changes with "
          f"r there is the variance (a low-rank E has heavier 4th moments), not the O(1/r) bias.")
    result = {"exact": exact, "slope": slope, "mc": mc, "finite": finite}
    if figure:
        plot_rank_convergence(ranks, result, population, samples)
    return result


def plot_rank_convergence(ranks, res, population, samples):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for kind, color in (("cubic", "C0"), ("exp", "C1")):
        ax.loglog(ranks, res["exact"][kind], "-", color=color,
                  label=f"{kind}: exact, slope {res['slope'][kind]:.3f}")
        mc_r = sorted(r for k, r in res["mc"] if k == kind and r is not None)
        ax.errorbar(mc_r, [res["mc"][kind, r][0] for r in mc_r],
                    yerr=[2 * res["mc"][kind, r][1] for r in mc_r], fmt="o", color=color,
                    ms=4, capsize=3, label=f"{kind}: Monte Carlo, {samples:,} samples (2 SE)")
        fr = sorted(r for k, r in res["finite"] if k == kind)
        ax.loglog(fr, [res["finite"][kind, r] for r in fr], "s--", color=color, alpha=0.6,
                  label=f"{kind}: the estimate at N = {population} (RMS)")
    ref = 2 * res["exact"]["cubic"][0]                       # offset, to be seen beside them
    ax.loglog(ranks, [ref / r for r in ranks], ":", color="k", label="reference: 1 / r")
    ax.set_xlabel("rank r")
    ax.set_ylabel("|E[g_r] - g_Gauss| / |g_Gauss|")
    ax.set_title("Low-rank ES update vs the full-rank Gaussian ES update")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, "rank_convergence")

# -----------------------------------------------------------------------------
# claim full_rank: rank-r members, a full-rank update


def step_update(mcfg, population, rank, seq_len, t=0, seed=0):
    """One real EGGROLL step's update matrices at model mcfg on the training data: the
    members' fitness on step t's windows, the pairs' signs F (eggroll.direction_signal) and
    Z = sum_k F_k A_k B_k^T (eggroll.accumulate_z) per matrix, exactly what eggroll.step
    computes (tests/test_claims.py checks its update against the step's). Returns (F, {name: Z})."""
    cfg = eggroll.Config(population=population, rank=rank, time_chunk=seq_len, group_size=2,
                         sampling="antithetic")                        # the paper's pairs
    params = lm.init_params(mcfg, seed)
    data = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))[0]
    tokens, _ = train.TrainStream(data, eggroll.num_sequences(cfg), seq_len).batch(t)
    members = tokens[np.arange(population) // cfg.group_size]               # (N, T + 1)
    noise = eggroll.noise_source(seed, t, cfg, mcfg, np)
    fitness, _ = eggroll.population_fitness(params, mcfg, members,
                                            lm.zero_hidden(mcfg, population), noise, cfg, 0)
    F = eggroll.direction_signal(fitness, cfg)
    return F, {name: eggroll.accumulate_z(F, noise, name, cfg)
               for name, shape in lm.param_shapes(mcfg).items() if len(shape) == 2}


def numerical_rank(Z):
    """The rank of an integer matrix from its singular values (numpy's tolerance: largest
    singular value x max(m, n) x float64 epsilon; Z's entries are exact in float64)."""
    return int(np.linalg.matrix_rank(Z.astype(np.float64)))


FULL_RANK_RUNS = [(N, 1) for N in (2, 8, 32, 64, 128, 512, 2048)] + \
                 [(16, r) for r in (1, 2, 4, 8)] + [(2048, 4)]
FULL_RANK_SHOWN = "l0.mlp1"


def claim_full_rank(runs=FULL_RANK_RUNS, mcfg=None, seq_len=None, figure=True):
    """Singular values of a real step's update of every matrix, for each (population, rank):
    the numerical rank against min(P' r, m, n), P' the pairs with F_k != 0 (of N / 2);
    the table and claim_full_rank.png. Returns the rows as dicts."""
    run = train.run_defaults(eggroll, "cpu")
    mcfg = mcfg or train.model_config(run)
    seq_len = seq_len or run["seq_len"]
    print(f"claim full_rank: each member's perturbation has rank r, the update sum_k F_k A_k "
          f"B_k^T has rank min(N r, m, n) (paper §4; with antithetic pairs N r / 2 distinct "
          f"rank-r terms, fewer where a pair ties)\nreal steps at the CPU default model "
          f"(D = {mcfg.d_model}, L = {mcfg.n_layers}) on tinyshakespeare windows of "
          f"{seq_len} bytes, step 0")
    out, rows = [], []
    for N, r in runs:
        F, Z = step_update(mcfg, N, r, seq_len)
        live = int((F != 0).sum())
        ranks = {name: numerical_rank(z) for name, z in Z.items()}
        want = {name: min(live * r, *z.shape) for name, z in Z.items()}
        s = np.linalg.svd(Z[FULL_RANK_SHOWN].astype(np.float64), compute_uv=False)
        out.append({"N": N, "r": r, "live_pairs": live, "ranks": ranks, "want": want,
                    "singular_values": s})
        shown = Z[FULL_RANK_SHOWN].shape
        rows.append([N, r, f"{live} / {N // 2}", f"{want[FULL_RANK_SHOWN]}",
                     f"{ranks[FULL_RANK_SHOWN]}", f"{s[want[FULL_RANK_SHOWN] - 1] / s[0]:.3f}",
                     f"{sum(ranks[k] == want[k] for k in Z)} / {len(Z)}"])
    m, n = shown
    table(f"full rank: numerical rank of the update Z of {FULL_RANK_SHOWN} ({m} x {n}) and of "
          f"all matrices", ["N", "r", "pairs with F != 0", "min(P' r, m, n)", "rank of Z",
                            "s_min / s_max", "matrices at min(P' r, m, n)"], rows)
    print(f"paper: rank min(N r, m, n), full rank in practice. ours: every matrix of every "
          f"step has rank exactly min(P' r, m, n): "
          f"{all(o['ranks'] == o['want'] for o in out)}")
    if figure:
        plot_full_rank(out, shown)
    return out


def plot_full_rank(out, shape):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, pick, title in ((axes[0], lambda o: o["r"] == 1, "rank 1, by population N"),
                            (axes[1], lambda o: o["N"] == 16, "N = 16, by rank r")):
        for o in sorted(filter(pick, out), key=lambda o: (o["N"], o["r"])):
            s = o["singular_values"]
            ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s / s[0], 1e-17), ".-",
                        label=f"N = {o['N']}, r = {o['r']}: rank {o['ranks'][FULL_RANK_SHOWN]}")
        ax.set_xlabel("index i")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("s_i / s_1")
    fig.suptitle(f"Singular values of one EGGROLL step's update of {FULL_RANK_SHOWN} "
                 f"({shape[0]} x {shape[1]}), CPU default model, real data")
    return save_figure(fig, "full_rank")

# -----------------------------------------------------------------------------
# claim inference: EGGROLL's step as a % of plain inference of the same batch


INFERENCE_RUNS = [(64, 512), (64, 2048), (64, 8192), (256, 512), (256, 2048)]
INFERENCE_NAIVE = [(64, 512), (64, 2048), (256, 512)]   # where naive ES takes under a minute


def claim_inference(runs=INFERENCE_RUNS, naive_runs=INFERENCE_NAIVE, seq_len=None, repeat=3):
    """Tables 2-3's measurement at the CPU sizes and the CPU default's bytes per member, with
    the step's and inference's time split, beside the paper's numbers. Returns the rows."""
    seq_len = seq_len or train.run_defaults(eggroll, "cpu")["seq_len"]
    print(f"claim inference: an EGGROLL step runs at a large fraction of plain batched "
          f"inference (paper App. E: 91 % on a GH200, linear model d = 8192 in bf16, batch "
          f"1024, noise pre-generated; full-rank OpenES 0.41 %)\nhere: the int8 LM, L = 1, "
          f"{seq_len} bytes per member, the same rows x bytes and forward path "
          f"(population_logprob), {lm._THREAD_COUNT} thread, one BLAS thread")
    out, rows = [], []
    for D, N in runs:
        naive = (D, N) in naive_runs
        t = population_timings(np, lm.ModelConfig(D, 1), N, seq_len, repeat, naive=naive,
                               naive_repeat=1, naive_warmup=False, phases=True)
        out.append(dict(t, D=D, N=N))
        ph, inf_ph = t["eggroll_phases"], t["inference_phases"]
        step = sum(ph[k] for k in ("noise", "forward", "update"))
        rows.append([D, N, f"{N * seq_len / t['inference'] / 1e3:.1f}k",
                     f"{N * seq_len / t['eggroll'] / 1e3:.1f}k",
                     f"{100 * t['inference'] / t['eggroll']:.1f} %",
                     f"{100 * t['inference'] / t['es_naive']:.2f} %" if naive else "",
                     " / ".join(f"{100 * ph[k] / step:.0f}" for k in ("noise", "forward",
                                                                     "update")),
                     f"{100 * inf_ph['gemm'] / t['inference_timed']:.0f} %",
                     f"+{100 * ph['forward'] / t['inference_timed'] - 100:.0f} %",
                     " / ".join(f"{100 * ph['member_' + k] / t['inference_timed']:.0f}"
                                for k in ("matmul", "rows", "vectors"))])
    table(f"inference: member-tokens/s, one step vs plain inference of the same {seq_len}-byte "
          f"windows (paper: EGGROLL 91 %, OpenES 0.41 % of inference)",
          ["D", "N", "inference", "EGGROLL", "EGGROLL % of inference",
           "naive ES % of inference", "EGGROLL step: noise / forward / update %",
           "inference: GEMM share", "EGGROLL forward over inference",
           "of which member terms: matmul / rows / vectors, % of inference"], rows)
    print("why: plain inference spends only the GEMM share above in BLAS; the rest is NumPy's "
          "elementwise integer passes over the activations (norms, saturations, gates, the "
          "log-softmax). A member adds its own terms (the low-rank correction (x B_i) A_i^T, one "
          "more pass over each matmul's output; its embedding rows; its vectors, which make "
          "every bias and norm weight per member) and the per-member broadcasts they cause in "
          "those passes; the step adds the noise draw and the update. On a GPU the GEMM "
          "dominates and the correction is r (m + n) / (m n) of it: the paper's 91 %.")
    return out


CLAIMS = {"billion": claim_billion, "rank_convergence": claim_rank_convergence,
          "full_rank": claim_full_rank, "inference": claim_inference}


def main():
    p = argparse.ArgumentParser(description="The EGGROLL paper's claims, one command each: the "
                                "paper's number beside ours, and results/claim_NAME.png.")
    p.add_argument("name", nargs="?", choices=tuple(CLAIMS), metavar="NAME",
                   help="the claim to check (CPU): " + ", ".join(CLAIMS) + "; its table and "
                        "results/claim_NAME.png")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="billion with --device cuda: the 1 B step on the GPU, no figure")
    p.add_argument("--cap_gb", type=float, default=None,
                   help="billion: memory cap of each size's process (default: half this "
                        "machine's memory)")
    p.add_argument("--claim_worker", default="", help=argparse.SUPPRESS)  # claim billion's
    args = p.parse_args()
    if args.claim_worker:
        return print(json.dumps(profile_step(*json.loads(args.claim_worker))))
    if args.name is None:
        p.error(f"the claim to check: one of {', '.join(CLAIMS)}")
    if args.name == "billion" and args.device == "cuda":
        return billion_step_on_device(train.get_backend("cuda"))
    if args.name == "billion":
        return claim_billion(cap_bytes=int(args.cap_gb * 2**30) if args.cap_gb else None)
    return CLAIMS[args.name]()


if __name__ == "__main__":
    main()
