r"""Train the integer RNN LM with any method in this repo: one entry point, one interface.

    $ python train.py --method eggroll                 # CPU default: about 2 minutes on 2 cores
    $ python train.py --method eggroll --device cuda   # GPU default (D = 256): about 10 minutes
    $ python train.py --method mezo --help             # every flag, the method's with comments
    $ python train.py --method eggroll --budget_s 600  # the best model in 10 minutes
    $ python train.py --sample out/eggroll/ckpt_best.npz --prompt "ROMEO:"
    $ mpirun -n 2 python train.py --method eggroll     # one run over 2 processes (README "Scaling out")

A method is a module with (README "The method interface"):
    Config                         dataclass; each field becomes a --flag (its comment the help)
    GPU_DEFAULTS                   Config overrides for the GPU default run
    RUN_DEFAULTS  [optional]       {"cpu": {...}, "cuda": {...}} overrides of train.py's run
                                   defaults (steps, seq_len, eval_every, ...) for this method
    check_config(cfg)              raises ValueError on invalid values
    num_sequences(cfg) -> S        data rows it wants per step
    init(params, cfg, mcfg, seed) -> state                  dict of arrays (checkpointed)
    step(params, state, (tokens, reset), t, cfg, mcfg, seed) -> (params, state, stats)
    predict(params, state, mcfg) -> fn(tokens, hidden) -> (log2 p, hidden)   [optional]
    check_split(cfg, K), PER_MEMBER_STATE   [optional: the method runs under mpirun; then init
                                   and step take world=, an int_rnn_lm.OneProcess or MPIWorld]
    follows_horizon(cfg) -> bool   [optional: a step depends on cfg.horizon, which train.py sets
                                   to the run's steps; a resume under another plan is refused]
stats holds at least "loss" (train bits/byte or the method's loss) and "member_tokens" (bytes
scored this step, summed over members); values may stay on the device (0-d arrays) until a log
step converts them, so a step needs no host sync. Everything random derives from --seed and the step, so
`--resume out/<method>/ckpt_last.npz` continues bit-identically.

Outputs in --out/<method>/: log.csv, loss.png, sample.txt, ckpt_last.npz, ckpt_best.npz.
"""
import os

# The model's GEMMs are small and many: one BLAS thread per process was 2.5-4x faster than
# OpenBLAS's default on our 2-core machine whenever anything else ran (61k vs 23k member-tok/s
# for EGGROLL). Set before numpy loads; an explicit OPENBLAS_NUM_THREADS in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import csv
import dataclasses
import hashlib
import importlib
import inspect
import json
import math
import re
import sys
import time
import zipfile

import numpy as np

import int_rnn_lm as lm

METHODS = ("eggroll", "es_naive", "mezo", "forward_forward", "noprop")

# the run's own settings, per device; a method may override them (its RUN_DEFAULTS) and its
# Config has the rest (and GPU_DEFAULTS)
RUN_DEFAULTS = {
    "cpu": dict(steps=120, d_model=64, n_layers=1, seq_len=100, eval_every=20, log_every=5,
                val_windows=64, val_len=256),
    "cuda": dict(steps=1000, d_model=256, n_layers=2, seq_len=100, eval_every=25, log_every=5,
                 val_windows=256, val_len=512),
}
RUN_HELP = {
    "steps": "training steps (overrides the device default)",
    "d_model": "model width D (multiple of 16)",
    "n_layers": "number of GRU+MLP blocks L",
    "seq_len": "bytes per training window; the hidden state carries across windows",
    "eval_every": "evaluate val bits/byte every this many steps",
    "log_every": "print a progress line every this many steps",
    "val_windows": "number of fixed validation windows",
    "val_len": "bytes per validation window (zero initial state)",
}

# -----------------------------------------------------------------------------
# command line: built from the method's Config; any bad input is one line and exit code 2


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        fail(message)


def fail(message):
    """Every rank reaches the same check, so under mpirun all ranks exit together; one prints."""
    if WORLD.rank == 0:
        print(f"train.py: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def field_comments(cls):
    """The comment after each field of a Config dataclass: the --help text."""
    src = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+)\s*:[^=\n]*=[^#\n]*#\s*(.*)$", src, flags=re.M))


def parse_bool(text):
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive_int(text):
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {v}")
    return v


def build_parser(method=None):
    p = ArgumentParser(description="Train the integer RNN LM without backpropagation.",
                       allow_abbrev=False, add_help=method is not None)
    p.add_argument("--method", default="eggroll", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: the GPU (CuPy) when usable, else the CPU (NumPy)")
    p.add_argument("--seed", type=int, default=0, help="the one seed all randomness derives from")
    p.add_argument("--data", default=lm.DEFAULT_DATA, help="any file, read as bytes")
    p.add_argument("--out", default="out", help="outputs go to OUT/<method>/")
    p.add_argument("--resume", default="", help="a ckpt_*.npz to continue from")
    p.add_argument("--budget_s", type=float, default=0.0,
                   help="stop after this many seconds of training (0: no limit); without "
                        "--steps the run plans its steps (the schedules' horizon) to fit")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads evaluating a batch's rows (default: the cores this process "
                        "may use, shared among the MPI ranks on its node); results do not "
                        "depend on it")
    p.add_argument("--sample_bytes", type=int, default=400, help="length of sample.txt")
    p.add_argument("--compare", default="", metavar="DIR",
                   help="no training: plot DIR/compare.png and print the results table")
    p.add_argument("--reference", default="", metavar="CSV[,CSV]",
                   help="with --compare: also plot other curves: a CSV with wall_s,val_bpb "
                        "columns (e.g. results/nano_egg_cpu.csv) or another run's log.csv")
    p.add_argument("--sample", default="", metavar="CKPT",
                   help="no training: print --sample_bytes bytes generated by a checkpoint")
    p.add_argument("--prompt", default="\n", help="with --sample: the text to continue")
    p.add_argument("--temperature", type=float, default=1.0, help="with --sample: softmax "
                   "temperature (1: the model's distribution)")
    for name, text in RUN_HELP.items():
        cpu, cuda = (run_defaults(method, d)[name] for d in ("cpu", "cuda"))
        p.add_argument(f"--{name}", type=positive_int, default=None,
                       help=f"{text} (cpu {cpu}, cuda {cuda})")
    if method is not None:
        g = p.add_argument_group(f"{method.__name__}.Config")
        comments = field_comments(method.Config)
        gpu = getattr(method, "GPU_DEFAULTS", {})
        for f in dataclasses.fields(method.Config):
            kind = parse_bool if f.type in (bool, "bool") else type(f.default)
            extra = f"; cuda {gpu[f.name]}" if f.name in gpu else ""
            g.add_argument(f"--{f.name}", type=kind, default=None,
                           help=f"{comments.get(f.name, '')} (default {f.default}{extra})")
    return p


def parse_args(argv):
    first, _ = build_parser().parse_known_args(argv)
    if first.method not in METHODS:
        fail(f"unknown method {first.method!r}; choose one of {', '.join(METHODS)}")
    method = importlib.import_module(first.method)
    args = build_parser(method).parse_args(argv)
    return args, method


def run_defaults(method, device):
    """train.py's run settings for the device, overridden by the method's own sizing."""
    return {**RUN_DEFAULTS[device], **getattr(method, "RUN_DEFAULTS", {}).get(device, {})}


def resolve(args, method, device):
    """Device defaults, then the user's flags, for the run, the model and the method."""
    run = run_defaults(method, device)
    run.update({k: getattr(args, k) for k in RUN_HELP if getattr(args, k) is not None})
    values = dataclasses.asdict(method.Config())
    if device == "cuda":
        values.update(getattr(method, "GPU_DEFAULTS", {}))
    values.update({k: getattr(args, k) for k in values if getattr(args, k) is not None})
    cfg = method.Config(**values)
    mcfg = lm.ModelConfig(d_model=run["d_model"], n_layers=run["n_layers"])
    lm.check_model_config(mcfg)
    method.check_config(cfg)
    return run, mcfg, cfg

# -----------------------------------------------------------------------------
# processes: `mpirun -n K python train.py ...` is one run over K processes. Rank r evaluates its
# share of the population (or of MeZO's directions), one Allgather per step joins the fitness,
# and every rank applies the same update from the same counter-hash noise: the parameters are
# never sent, yet stay bit-identical on every rank (checked by hash at every eval step).

MPI_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")   # set by MPICH/Slurm, Open MPI, PMIx


class MPIWorld(lm.OneProcess):
    """int_rnn_lm.OneProcess's interface over mpi4py's COMM_WORLD. Arrays travel through host
    memory: a CuPy array is copied to the host and back (mpi4py wheels are not CUDA-aware)."""

    def __init__(self, MPI):
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)                  # ranks on this node
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()

    def allgather(self, x):
        xp, host = lm.backend_of(x), np.ascontiguousarray(lm.to_numpy(x))
        out = np.empty((self.size,) + host.shape, host.dtype)                # (K, k, ...)
        self.comm.Allgather(host, out)
        return xp.asarray(out.reshape((-1,) + host.shape[1:]))               # (K k, ...)

    def allreduce_sum(self, x):
        xp, host = lm.backend_of(x), np.ascontiguousarray(lm.to_numpy(x))
        out = np.empty_like(host)
        self.comm.Allreduce(host, out, op=self.MPI.SUM)
        return xp.asarray(out)

    def bcast(self, value):
        return self.comm.bcast(value, root=0)

    def gather_rows(self, x, axis):
        pieces = self.comm.gather(lm.to_numpy(x), root=0)
        return None if pieces is None else np.concatenate(pieces, axis=axis)

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


WORLD = lm.ONE_PROCESS   # this process's world; replaced by an MPIWorld under mpirun


def join_world():
    """An MPIWorld when launched by mpirun/mpiexec, else the one-process world; mpi4py is
    imported only in the first case. Under MPI an uncaught error on any rank aborts the whole
    job (no rank waits forever for a dead one), and rank r picks GPU r mod (GPUs on its node)."""
    global WORLD
    if not any(v in os.environ for v in MPI_ENV):
        return WORLD
    try:
        from mpi4py import MPI
    except ImportError:
        fail("launched by mpirun but mpi4py is not installed: pip install mpi4py mpich")
    WORLD = MPIWorld(MPI)
    if WORLD.size > 1:
        def abort_job(kind, value, tb):
            print(f"train.py: rank {WORLD.rank} failed ({kind.__name__}: {value}); ending the "
                  f"job", file=sys.stderr, flush=True)
            sys.__excepthook__(kind, value, tb)
            WORLD.abort(1)
        sys.excepthook = abort_job
    try:
        import cupy
        n_gpus = cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(WORLD.local_rank % n_gpus).use()   # before the first CuPy array
    except Exception:   # no CuPy or no GPU: the ranks run on the CPU
        pass
    return WORLD


def shard(state, method, world):
    """A checkpoint's full state -> this rank's: its own members' rows of each per-member entry."""
    for name, axis in getattr(method, "PER_MEMBER_STATE", {}).items():
        rows = world.share(state[name].shape[axis])
        state[name] = state[name][(slice(None),) * axis + (rows,)]
    return state


def unshard(state, method, world):
    """This rank's state -> the full state on rank 0 (None elsewhere): one checkpoint for any K."""
    per_member = getattr(method, "PER_MEMBER_STATE", {})
    full = {k: world.gather_rows(v, per_member[k]) if k in per_member else v
            for k, v in state.items()}
    return full if world.rank == 0 else None


def params_digest(params):
    h = hashlib.sha256()
    for name in sorted(params):
        h.update(np.ascontiguousarray(lm.to_numpy(params[name])).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)                         # (32,)


def check_ranks_agree(params, world, t):
    """Every rank must hold the same parameters; a mismatch stops the run, naming the rank."""
    digests = lm.to_numpy(world.allgather(params_digest(params)[None]))     # (K, 32)
    for r in range(1, world.size):
        if not (digests[r] == digests[0]).all():
            fail(f"rank {r}'s parameters differ from rank 0's at step {t}: the ranks diverged "
                 f"(different code, library or device per rank?)")

# -----------------------------------------------------------------------------
# checkpoints: .npz with params, method state, step and configs; written atomically


def save_checkpoint(path, params, state, meta):
    arrays = {f"param/{k}": lm.to_numpy(v) for k, v in params.items()}
    arrays.update({f"state/{k}": lm.to_numpy(v) for k, v in state.items()})
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)   # a crash never leaves a half-written file under the real name


def load_checkpoint(path, xp):
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            params = {k[6:]: xp.asarray(z[k]) for k in z.files if k.startswith("param/")}
            state = {k[6:]: xp.asarray(z[k]) for k in z.files if k.startswith("state/")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"cannot read checkpoint {path}: {e}") from None
    return params, state, meta


def check_resume(meta, expected, path, follows_horizon):
    """A checkpoint continues only the run it came from; the plan (horizon) matters only where
    the method's schedule follows it."""
    meta, expected = dict(meta), dict(expected)
    saved = dict(meta.get("method_config") or {})
    here = dict(expected["method_config"])
    horizon = saved.pop("horizon", None)
    if follows_horizon and horizon != here.get("horizon"):
        raise ValueError(f"checkpoint {path} was planned for {horizon} steps and this run for "
                         f"{here.get('horizon')}: resume without --steps, "
                         f"or keep its schedule with --horizon {horizon}")
    here.pop("horizon", None)
    meta["method_config"], expected["method_config"] = saved, here
    for key in ("method", "seed", "model", "method_config", "seq_len", "data"):
        if meta.get(key) != expected[key]:
            raise ValueError(f"checkpoint {path} does not match this run: {key} is "
                             f"{meta.get(key)!r} there, {expected[key]!r} here")


def sample_checkpoint(args):
    """`python train.py --sample CKPT --prompt TEXT`: continue TEXT with a trained model."""
    try:
        xp = lm.get_backend(args.device)
        params, state, meta = load_checkpoint(args.sample, xp)
        if meta.get("method") not in METHODS or "model" not in meta:
            raise ValueError(f"{args.sample} is not a train.py checkpoint")
        method = importlib.import_module(meta["method"])
        mcfg = lm.ModelConfig(**meta["model"])
        predict = (method.predict(params, state, mcfg) if hasattr(method, "predict")
                   else lm.lm_predict(params, mcfg))
        prompt = args.prompt.encode("utf-8")
        text = lm.sample(predict, lm.zero_hidden(mcfg, 1, xp), prompt, args.sample_bytes,
                         args.seed, args.temperature)
    except (ValueError, KeyError, TypeError) as e:
        fail(str(e))
    sys.stdout.buffer.write(prompt + text + b"\n")
    sys.stdout.flush()
    return 0

# -----------------------------------------------------------------------------
# outputs: progress line, log.csv, loss.png, sample.txt


def fmt_time(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(t, steps, stats, val_bpb, rate, elapsed, eta):
    val = f"val {val_bpb:.4f}" if val_bpb is not None else "val    -  "
    return (f"step {t:5d}/{steps} | loss {stats.get('loss', float('nan')):.4f} | {val} | "
            f"{rate / 1e3:8.1f}k member-tok/s | {fmt_time(elapsed)} | ETA {fmt_time(eta)}")


def plot_curve(path, rows, baselines, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = [(int(r["step"]), float(r["val_bpb"])) for r in rows if r["val_bpb"] != ""]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if pts:
        ax.plot(*zip(*pts), marker="o", ms=3, label="val bits/byte")
    for name, style in (("unigram", "--"), ("bigram", ":")):
        ax.axhline(baselines[name], color="gray", ls=style,
                   label=f"{name} {baselines[name]:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/byte")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


LOG_COLUMNS = ["step", "loss", "val_bpb", "member_tokens_per_s", "elapsed_s"]


def write_log(path, rows):
    extra = sorted({k for r in rows for k in r} - set(LOG_COLUMNS))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS + extra, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)

def peak_memory_mb(xp):
    """Peak resident memory of this process (CPU) or the CuPy pool's high-water mark (GPU)."""
    if xp is not np:
        return round(xp.get_default_memory_pool().total_bytes() / 2**20, 1)
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # KiB on Linux


def read_reference(path):
    """A curve to compare with: a CSV with `wall_s,val_bpb` columns (# lines are comments), or
    a train.py log.csv (`elapsed_s`, and `val_bpb` where evaluated)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
        clock = "wall_s" if rows and "wall_s" in rows[0] else "elapsed_s"
        return [(float(r[clock]), float(r["val_bpb"])) for r in rows if r["val_bpb"] != ""]
    except (OSError, KeyError, ValueError, TypeError) as e:
        fail(f"cannot read reference curve {path}: {e}")


def compare(out_root, reference=""):
    """`python train.py --compare out`: one figure and one table from every out/<method>/."""
    runs = []
    for method in METHODS:
        path = os.path.join(out_root, method, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                runs.append((json.load(f), read_log(os.path.join(out_root, method, "log.csv"))))
    if not runs:
        fail(f"no {out_root}/<method>/summary.json found: train some methods first")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for summary, rows in runs:
        pts = [(float(r["elapsed_s"]), float(r["val_bpb"])) for r in rows if r["val_bpb"] != ""]
        ax.plot(*zip(*pts), marker="o", ms=3, label=summary["method"])
    for path in filter(None, reference.split(",")):
        name = os.path.basename(path)
        if name == "log.csv":   # another run: name it by its folders, e.g. cpu_reservoir/...
            name = "/".join(os.path.normpath(path).split(os.sep)[-3:-1])
        ax.plot(*zip(*read_reference(path)), ls="--", lw=1.5, label=name)
    base = runs[0][0]["baselines"]
    for name, style in (("uniform", "-."), ("unigram", "--"), ("bigram", ":")):
        ax.axhline(base[name], color="gray", ls=style, label=f"{name} {base[name]:.2f}")
    ax.set_xlabel("wall-clock seconds")
    ax.set_ylabel("val bits/byte")
    ax.set_title(f"same integer LM, same data, same budget ({runs[0][0]['device']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_root, "compare.png"), dpi=110)
    print("| method | file | val bits/byte | member-tokens/s | peak memory | device | wall | "
          "command |\n|---|---|---|---|---|---|---|---|")
    for s, _ in runs:
        print(f"| {s['method']} | `{s['file']}` | {s['val_bpb']:.3f} | "
              f"{s['member_tokens_per_s']:,.0f} | {s['peak_memory_mb']:.0f} MB | {s['device']} | "
              f"{s['wall_s']:.0f} s | `{s['command']}` |")
    return 0


# -----------------------------------------------------------------------------
# the training loop


def follows_horizon(method, cfg):
    """Whether the method's steps depend on the run's planned length (cfg.horizon); a method
    with a horizon but no follows_horizon() is taken to follow it."""
    return hasattr(cfg, "horizon") and getattr(method, "follows_horizon", lambda c: True)(cfg)


def replans(method, cfg, args):
    """A budget run without --steps whose steps do not depend on the plan (no schedule follows
    the horizon) re-plans at every evaluation from its own pace, so it spends the whole budget
    even where the probe steps ran slower than the run; `--steps <done>` repeats it."""
    return args.steps is None and args.budget_s > 0 and not follows_horizon(method, cfg)


def plan_steps(method, params, state, stream, cfg, mcfg, seed, on_world, evaluate, run,
               budget_s, world):
    """The steps that fit in budget_s: the horizon of a run given a budget but no --steps.

    Times 6 steps (the first is a warm-up) on copies of params and state, so the run itself is
    exactly the one `--steps <planned>` makes, and one evaluation; rank 0's clock decides. The
    fastest step sets the plan: on the 2-core CPU the steps right after the warm-up ran up to
    15 % slower than the rest of a 10-minute run, and their mean planned 8 minutes of it."""
    params = {k: v.copy() for k, v in params.items()}
    state = {k: v.copy() for k, v in state.items()}
    times = []
    for t in range(6):
        start = time.time()
        params, state, stats = method.step(params, state, stream.batch(t), t, cfg, mcfg, seed,
                                           **on_world)
        float(stats["loss"])                                   # wait for the device
        times.append(time.time() - start)
    start = time.time()
    evaluate()
    step_s, eval_s = world.bcast((min(times[1:]), time.time() - start))
    per_step = step_s + eval_s / run["eval_every"]
    # 3 % margin; a run the budget stops early ends there with a final evaluation
    return max(1, int(0.97 * (budget_s - eval_s) / per_step)), step_s, eval_s


def train(argv):
    world = join_world()
    args, method = parse_args(argv)
    if args.compare:
        return compare(args.compare, args.reference)
    if args.sample:
        return sample_checkpoint(args)
    splits = hasattr(method, "check_split")           # the method can run under mpirun
    meta = None
    try:
        if world.size > 1 and not splits:
            raise ValueError(f"{args.method} runs in one process only (README \"Scaling out\"); "
                             f"start it without mpirun")
        xp = lm.get_backend(args.device)
        device = "cpu" if xp is np else "cuda"
        run, mcfg, cfg = resolve(args, method, device)
        if splits:
            method.check_split(cfg, world.size)
        data = lm.load_bytes(args.data)
        lm.check_data_size(data, args.data, method.num_sequences(cfg), run["seq_len"],
                           run["val_len"])
        if args.resume:
            ckpt_params, ckpt_state, meta = load_checkpoint(args.resume, xp)
            if args.steps is None:                    # the checkpoint's plan, unless overridden
                run["steps"] = meta.get("planned_steps", run["steps"])
    except ValueError as e:
        fail(str(e))
    lead = world.rank == 0                             # rank 0 alone prints and writes files
    say = print if lead else (lambda *a, **k: None)
    on_world = {"world": world} if world.size > 1 else {}   # alone: the plain interface
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // world.local_size)
    lm.set_threads(threads if device == "cpu" else 1)
    out_dir = os.path.join(args.out, args.method)
    say(f"backend: {xp.__name__} ({device}) | processes {world.size}"
        f"{f' | threads {threads}' if device == 'cpu' else ''} | method {args.method} | "
        f"model D={mcfg.d_model} L={mcfg.n_layers} ({lm.count_params(mcfg):,} int8 params)")

    train_bytes, val_bytes = lm.split_train_val(data)
    stream = lm.TrainStream(train_bytes, method.num_sequences(cfg), run["seq_len"], xp)
    windows = lm.val_windows(val_bytes, run["val_windows"], run["val_len"], xp)
    baselines = lm.ngram_baselines(train_bytes, val_bytes)
    params = lm.init_params(mcfg, args.seed, xp)
    state = method.init(params, cfg, mcfg, args.seed, **on_world)

    def predictor():
        if hasattr(method, "predict"):
            return method.predict(params, state, mcfg)
        return None

    def evaluate():
        """val bits/byte, computed on rank 0 and known to every rank."""
        return world.bcast(lm.evaluate(params, mcfg, windows, predictor()) if lead else None)

    replan = replans(method, cfg, args)
    if args.steps is None and args.budget_s > 0 and not args.resume:
        run["steps"], step_s, eval_s = plan_steps(method, params, state, stream, cfg, mcfg,
                                                  args.seed, on_world, evaluate, run,
                                                  args.budget_s, world)
        say(f"planned {run['steps']} steps for --budget_s {args.budget_s:g} (a step "
            f"{step_s:.3f} s, an eval {eval_s:.2f} s every {run['eval_every']} steps)"
            + ("; the plan follows the run's pace, the done line gives the steps" if replan else
               f"; rerun with --steps {run['steps']} to repeat this run"))
    steps = run["steps"]
    if hasattr(cfg, "horizon") and args.horizon is None:
        cfg = dataclasses.replace(cfg, horizon=steps)  # the schedules span the planned run
    say(f"config: {json.dumps(dataclasses.asdict(cfg))}")
    say(f"run: {json.dumps(run)}")
    say("baselines (val bits/byte): " + ", ".join(f"{k} {v:.3f}" for k, v in baselines.items()))
    expected = {"method": args.method, "seed": args.seed, "model": dataclasses.asdict(mcfg),
                "method_config": dataclasses.asdict(cfg), "seq_len": run["seq_len"],
                "data": os.path.abspath(args.data)}

    start, best, elapsed_before = 0, math.inf, 0.0
    if args.resume:
        try:
            check_resume(meta, expected, args.resume, follows_horizon(method, cfg))
        except ValueError as e:
            fail(str(e))
        params, state = ckpt_params, shard(ckpt_state, method, world)   # same file for any K
        start, best, elapsed_before = meta["step"], meta["best_val"], meta["elapsed_s"]
        say(f"resumed from {args.resume} at step {start}")
    log_path = os.path.join(out_dir, "log.csv")
    rows = []
    if lead:
        os.makedirs(out_dir, exist_ok=True)
        rows = [r for r in read_log(log_path) if int(r["step"]) <= start] if args.resume else []

    def checkpoint(name, t):
        """Collective under mpirun: the ranks' per-member state is joined on rank 0."""
        full_state = unshard(state, method, world)
        if lead:
            meta = dict(expected, step=t, planned_steps=steps, best_val=best,
                        elapsed_s=elapsed_before + time.time() - t0)
            save_checkpoint(os.path.join(out_dir, name), params, full_state, meta)

    t0 = time.time()
    if start == 0:
        v0 = evaluate()
        rows.append({"step": 0, "loss": "", "val_bpb": f"{v0:.5f}", "member_tokens_per_s": "",
                     "elapsed_s": "0.0", "planned_steps": steps})
        say(f"step {0:5d}/{steps} | val {v0:.4f} (untrained)")
    t = start
    # member-tokens/s counts training time only: the wall time of a log window minus its evals
    window_tokens, window_start, window_eval = 0, time.time(), 0.0
    try:
        while t < steps:
            params, state, stats = method.step(params, state, stream.batch(t), t, cfg, mcfg,
                                               args.seed, **on_world)
            done = t + 1
            window_tokens += stats["member_tokens"]
            elapsed = elapsed_before + time.time() - t0
            # rank 0's clock decides, so that every rank stops after the same step
            out_of_budget = world.bcast(args.budget_s > 0 and elapsed >= args.budget_s)
            val_bpb = None
            if done % run["eval_every"] == 0 or done == steps or out_of_budget:
                eval_start = time.time()
                check_ranks_agree(params, world, done)
                val_bpb = evaluate()
                if val_bpb < best:
                    best = val_bpb
                    checkpoint("ckpt_best.npz", done)
                window_eval += time.time() - eval_start
                if replan and not out_of_budget:            # s per step, evals included
                    pace = (elapsed - elapsed_before) / (done - start)
                    steps = world.bcast(max(steps, done + int(0.97 * (args.budget_s - elapsed)
                                                              / pace)))
            if done % run["log_every"] == 0 or val_bpb is not None or done == steps:
                stats = {k: float(v) for k, v in stats.items()}   # note: a CPU-GPU sync point
                rate = window_tokens / max(time.time() - window_start - window_eval, 1e-9)
                eta = (elapsed - elapsed_before) / (done - start) * (steps - done)
                say(progress_line(done, steps, stats, val_bpb, rate, elapsed, eta), flush=True)
                rows.append({"step": done, "loss": f"{stats['loss']:.5f}",
                             "val_bpb": "" if val_bpb is None else f"{val_bpb:.5f}",
                             "member_tokens_per_s": f"{rate:.1f}", "elapsed_s": f"{elapsed:.1f}",
                             **{k: f"{v:.6g}" for k, v in stats.items() if k != "loss"}})
                window_tokens, window_start, window_eval = 0, time.time(), 0.0
            t = done
            if out_of_budget:
                say(f"budget of {args.budget_s:.0f}s reached at step {done}")
                break
    except KeyboardInterrupt:
        if world.size > 1:   # the ranks stop at different points: no collective save is safe
            say(f"\ninterrupted: nothing saved under mpirun; resume from "
                f"{os.path.join(out_dir, 'ckpt_best.npz')}")
            world.abort(130)
        checkpoint("ckpt_last.npz", t)
        write_log(log_path, rows)
        print(f"\ninterrupted: saved {os.path.join(out_dir, 'ckpt_last.npz')} at step {t}")
        return 0
    checkpoint("ckpt_last.npz", t)
    if not lead:
        return 0
    write_log(log_path, rows)
    plot_curve(os.path.join(out_dir, "loss.png"), rows, baselines,
               f"{args.method}, D={mcfg.d_model} L={mcfg.n_layers}, {device}")
    predict = predictor() or lm.lm_predict(params, mcfg)
    prompt = bytes(val_bytes[:64])
    text = lm.sample(predict, lm.zero_hidden(mcfg, 1, xp), prompt, args.sample_bytes, args.seed)
    with open(os.path.join(out_dir, "sample.txt"), "wb") as f:
        f.write(prompt + text)
    final = [r for r in rows if r["val_bpb"] != ""][-1]
    rates = [float(r["member_tokens_per_s"]) for r in rows if r["member_tokens_per_s"] != ""]
    summary = {"method": args.method, "file": f"{args.method}.py", "device": device,
               "world_size": world.size, "threads": threads if device == "cpu" else None,
               "planned_steps": steps,
               "val_bpb": float(final["val_bpb"]), "best_val_bpb": best, "steps": t,
               "wall_s": round(elapsed_before + time.time() - t0, 1),
               "member_tokens_per_s": float(np.median(rates)) if rates else 0.0,
               "peak_memory_mb": peak_memory_mb(xp), "baselines": baselines,
               "command": "python train.py " + " ".join(argv)}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"done: step {t}, val bits/byte {final['val_bpb']} (best {best:.5f}), "
          f"{fmt_time(elapsed_before + time.time() - t0)}; outputs in {out_dir}/"
          + (f"; rerun with --steps {t} to repeat this run" if replan else ""))
    print("sample: " + (prompt + text)[-200:].decode("utf-8", errors="replace").replace("\n", " | "))
    return 0


if __name__ == "__main__":
    sys.exit(train(sys.argv[1:]))
