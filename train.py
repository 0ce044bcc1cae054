r"""Train the integer RNN LM with any method in this repo: one entry point, one interface.

    $ python train.py --method eggroll                 # CPU default: about 2 minutes on 2 cores
    $ python train.py --method eggroll --budget_s 600  # as far as 10 minutes go
    $ python train.py --method mezo --help             # every flag, the method's with comments
    $ python train.py --resume out/eggroll/ckpt_last.npz --steps 800   # continue a run
    $ python train.py --sample out/eggroll/ckpt_best.npz --prompt "ROMEO:"
    $ mpiexec -n 2 python train.py --method eggroll    # one run over 2 processes

A method is a module with:
    Config                      dataclass; each field becomes a --flag, its comment the help
    DEFAULTS  [optional]        {"cpu": {...}, "cuda": {...}}: the run settings and Config
                                fields the method overrides on each device
    check_config(cfg)           raises ValueError on invalid values
    check_model(mcfg)  [optional]   raises ValueError if the method cannot train this model
    num_sequences(cfg) -> S     data rows it reads per step
    init(params, cfg, mcfg, seed, world) -> state                   a dict of arrays
    step(params, state, (tokens, reset), t, cfg, mcfg, seed, world) -> (params, state, stats)
    predict(params, state, mcfg) -> fn(tokens, hidden) -> (log2 p, hidden)   [optional]
    val_scores(params, state, mcfg, windows) -> {"val_...": value}     [optional: further
                                scores on the validation windows at every evaluation, logged
                                as log.csv columns and put into summary.json]
    check_split(cfg, K), PER_MEMBER_STATE   [optional: the method runs under mpirun]
LOSS                        the name of the training loss step() reports, by what it is
                                (population_bpb, readout_bpb, eq8_nats, ...): its log column
stats holds at least stats[LOSS] and "member_tokens" (bytes scored this step, summed over
members);
its values may stay on the device until a log step reads them. Everything random derives from
--seed and the step, so `--resume CKPT` continues bit-identically.

Outputs in OUT/<method>/: log.csv, sample.txt, summary.json, ckpt_last.npz, ckpt_best.npz and
loss.png. A fresh run never writes into a directory that holds another run's outputs.

The file, in order: the run, top-down (train, run_command, set_up, train_loop, finish, and
what they call); then the machinery: the command line; devices; data; processes (mpirun,
--hosts); checkpoints; outputs; the command that does not train (--sample).
"""
import os

# one BLAS thread per process: the model's GEMMs are small and many, and so are the processes
# that share the cores (results/notebook.md section 5). An explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import csv
import dataclasses
import datetime
import fcntl
import hashlib
import importlib
import inspect
import json
import math
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing
import zipfile

import numpy as np

import int_rnn_lm as lm

METHODS = ("eggroll", "es_naive", "mezo", "forward_forward", "noprop", "backprop")

# the run's own settings on each device; a method's DEFAULTS may override them
RUN_DEFAULTS = {
    "cpu": dict(steps=120, d_model=64, n_layers=1, mlp_mult=4, seq_len=100, eval_every=20,
                log_every=5, val_windows=64, val_len=256),
    "cuda": dict(steps=1000, d_model=256, n_layers=2, mlp_mult=4, seq_len=100, eval_every=25,
                 log_every=5, val_windows=256, val_len=512),
}
RUN_HELP = {
    "steps": "training steps",
    "d_model": "model width D (multiple of 16)",
    "n_layers": "number of GRU+MLP blocks L",
    "mlp_mult": "each block's MLP is D -> mlp_mult D -> D (0: no MLP, the GRU only)",
    "seq_len": "bytes per training window; the hidden state carries across windows",
    "eval_every": "evaluate val bits/byte every this many steps",
    "log_every": "print a progress line every this many steps",
    "val_windows": "number of fixed validation windows",
    "val_len": "bytes per validation window (zero initial state)",
}
# what a resumed run may change: when it stops, how often it reports, how it computes
RESUME_MAY_CHANGE = {"steps", "budget_s", "eval_every", "log_every", "threads", "device",
                     "out", "sample_bytes", "overwrite"}
OUTPUT_FILES = ("log.csv", "loss.png", "sample.txt", "summary.json", "ckpt_last.npz",
                "ckpt_best.npz")
EXAMPLES = """examples:
  python train.py --method eggroll                        # the CPU default run, ~2 minutes
  python train.py --method eggroll --budget_s 600 --out out/10min
  python train.py --method es_naive --seed 1 --out out/seed1
  python train.py --resume out/eggroll/ckpt_last.npz --steps 800
  python train.py --sample out/eggroll/ckpt_best.npz --prompt "ROMEO:"
  mpiexec -n 2 python train.py --method eggroll           # pip install mpi4py mpich"""

# -----------------------------------------------------------------------------
# the run, top-down: train -> run_command -> set_up, train_loop, finish; then what they
# call. The machinery (command line, devices, data, processes, checkpoints, outputs)
# follows in sections of its own.


def train(argv):
    """The command line's run; Ctrl-C stops it after the current step (ask_to_stop)."""
    STOP["asked"] = ""
    handlers = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_command(argv)
    finally:
        release_out_dir()
        for s, handler in handlers.items():
            signal.signal(s, handler)


def run_command(argv):
    args, r = set_up(argv)
    if args.hosts:
        return launch_on_hosts(args)
    if r is None:
        return sample_checkpoint(args)
    r.t0 = time.time()
    if r.start == 0:
        v0, scores = evaluate(r), val_scores(r)
        r.rows.append({"step": 0, r.method.LOSS: "", "val_bpb": f"{v0:.5f}",
                       "member_tokens_per_s": "", "elapsed_s": "0.0", **scores})
        r.say(f"step {0:5d}/{r.run['steps'] or '?'} | val {v0:.4f} (untrained)"
              + "".join(f" | {k} {v}" for k, v in scores.items()))
    try:
        t = train_loop(r)
    except KeyboardInterrupt:
        if r.world.size > 1:   # the processes stop at different points: no collective save
            r.say(f"\ninterrupted: nothing more saved under mpirun; resume from "
                  f"{os.path.join(r.out_dir, 'ckpt_last.npz')} (the last evaluation)")
            r.world.abort(130)
        save_progress(r, r.step)
        print(f"\ninterrupted: saved {os.path.join(r.out_dir, 'ckpt_last.npz')} at step {r.step}")
        return 0
    finish(r, t)
    return 0


def set_up(argv):
    """Command line, device, data, model and method state (or a checkpoint's): a Run."""
    world = join_world()
    args, method, ckpt = parse_args(argv)
    if args.sample or args.hosts:
        return args, None
    splits = hasattr(method, "check_split")           # the method can run under mpirun
    try:
        if world.size > 1 and not splits:
            raise ValueError(f"{args.method} runs in one process only (README \"Scaling out\"); "
                             f"start it without mpirun")
        xp = get_backend(args.device)
        device = "cpu" if xp is np else "cuda"
        run, mcfg, cfg, seed, data_path = resolve(args, method, device, ckpt)
        if hasattr(method, "check_model"):            # a method that needs a part of the model
            method.check_model(mcfg)
        if splits:
            method.check_split(cfg, world.size)
        if ckpt and not os.path.isfile(data_path):
            trained = ckpt["meta"]["data"]
            raise ValueError(f"data file not found: {data_path}" + (
                f" (the run trained on {trained['bytes']} bytes with sha256 "
                f"{trained['sha256'][:16]}...: give --data that file)" if "sha256" in trained
                else " (give --data the file the run trained on)"))
        data = load_bytes(data_path)
        record = data_record(data_path, data)
        if ckpt:
            check_same_data(ckpt["meta"]["data"], record, data_path)
        check_data_agrees(record, world)
        check_data_size(data, data_path, method.num_sequences(cfg), run["seq_len"],
                        run["val_len"])
    except ValueError as e:
        fail(str(e))
    out_dir = output_dir(args)
    error = None
    if world.rank == 0:                                  # rank 0 alone writes files
        try:
            hold_out_dir(out_dir)
            check_out_dir(out_dir, args.resume, args.overwrite)
        except ValueError as e:
            error = str(e)
    if world.bcast(error):                               # every process stops together
        fail(error)
    train_bytes, val_bytes = split_train_val(data)
    params = lm.init_params(mcfg, seed, xp)
    r = Run(args=args, method=method, world=world, xp=xp, device=device, run=run, mcfg=mcfg,
            cfg=cfg, seed=seed, data=data_path, data_record=record,
            out_dir=out_dir,
            stream=TrainStream(train_bytes, method.num_sequences(cfg), run["seq_len"], xp),
            windows=val_windows(val_bytes, run["val_windows"], run["val_len"], xp),
            baselines=ngram_baselines(train_bytes, val_bytes), params=params,
            state=method.init(params, cfg, mcfg, seed, world))
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // world.local_size)
    lm.set_threads(threads if device == "cpu" else 1)
    r.say(f"backend: {xp.__name__} ({device}) | processes {world.size}"
          f"{f' | threads {threads}' if device == 'cpu' else ''} | method {args.method} | "
          f"model {model_name(mcfg)} ({lm.count_params(mcfg):,} int8 params) | int matmul: "
          f"{lm.matmul_path(xp)}")
    r.say(f"config: {json.dumps(dataclasses.asdict(cfg))}")
    r.say(f"run: {json.dumps(run)}")
    r.say("baselines (val bits/byte): " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                   r.baselines.items()))
    if ckpt:
        ckpt = load_checkpoint(args.resume, xp)
        r.params, r.state = ckpt["params"], shard(ckpt["state"], method, world)
        meta = ckpt["meta"]
        r.start, r.best, r.elapsed_before = meta["step"], meta["best_val"], meta["elapsed_s"]
        r.step = r.start
        if r.lead:
            r.rows = [row for row in read_log(os.path.join(out_dir, "log.csv"))
                      if int(row["step"]) <= r.start]
        r.say(f"resumed from {args.resume} at step {r.start}")
    r.threads = threads
    r.provenance = provenance() if r.lead else {}       # rank 0 alone writes the summary
    return args, r


def train_loop(r):
    """step -> evaluate and checkpoint the best -> log, until the steps or the budget end.
    Returns the last step done."""
    steps, budget, t = r.run["steps"], r.run["budget_s"], r.start
    tokens, window_start, eval_s = 0, time.time(), 0.0   # member-tokens/s: training time only
    while steps is None or t < steps:
        r.params, r.state, stats = r.method.step(r.params, r.state, r.stream.batch(t), t, r.cfg,
                                                 r.mcfg, r.seed, r.world)
        t, tokens = t + 1, tokens + stats["member_tokens"]
        r.step = t
        # rank 0's clock (and Ctrl-C) decides, so that every process stops after the same step
        stop = r.world.bcast(f"budget of {budget:g}s reached" if budget is not None and
                             r.elapsed() >= budget else f"stopped ({STOP['asked']})"
                             if STOP["asked"] else "")
        val, scores = None, {}
        if t % r.run["eval_every"] == 0 or t == steps or stop:
            eval_start = time.time()
            check_ranks_agree(r.params, r.world, t)
            val, scores = evaluate(r), val_scores(r)
            if val < r.best:
                r.best = val
                checkpoint(r, "ckpt_best.npz", t)
            eval_s += time.time() - eval_start
        if t % r.run["log_every"] == 0 or val is not None or t == steps:
            stats = {k: float(v) for k, v in stats.items()}    # note: a CPU-GPU sync point
            rate = tokens / max(time.time() - window_start - eval_s, 1e-9)
            pace = (r.elapsed() - r.elapsed_before) / (t - r.start)
            left = pace * (steps - t) if steps else budget - r.elapsed()
            total = steps or f"~{t + max(0, int(left / pace))}"
            r.say(progress_line(t, total, r.method.LOSS, stats, val, rate, r.elapsed(), left)
                  + "".join(f" | {k} {v}" for k, v in scores.items()), flush=True)
            r.rows.append({"step": t, r.method.LOSS: f"{stats[r.method.LOSS]:.5f}",
                           "val_bpb": "" if val is None else f"{val:.5f}", **scores,
                           "member_tokens_per_s": f"{rate:.1f}", "elapsed_s": f"{r.elapsed():.1f}",
                           **{k: f"{v:.6g}" for k, v in stats.items() if k != r.method.LOSS}})
            tokens, window_start, eval_s = 0, time.time(), 0.0
        if val is not None:
            save_progress(r, t)
        if stop:
            r.say(f"{stop} at step {t}")
            break
    return t


def finish(r, t):
    """The outputs the evaluations did not write, in order of value: the sample, the summary,
    then the optional plot. The last step always evaluates, so save_progress has already
    written its log and ckpt_last.npz."""
    if not r.lead:
        return
    predict = (r.method.predict(r.params, r.state, r.mcfg) if hasattr(r.method, "predict")
               else lm.lm_predict(r.params, r.mcfg))
    prompt = bytes(split_train_val(load_bytes(r.data))[1][:64])
    text = lm.sample(predict, lm.zero_hidden(r.mcfg, 1, r.xp), prompt, r.run["sample_bytes"],
                     r.seed)
    with open(os.path.join(r.out_dir, "sample.txt"), "wb") as f:
        f.write(prompt + text)
    final = [row for row in r.rows if row["val_bpb"] != ""][-1]
    rates = [float(row["member_tokens_per_s"]) for row in r.rows if row["member_tokens_per_s"]]
    summary = {"method": r.args.method, "file": f"{r.args.method}.py", "device": r.device,
               "world_size": r.world.size, "threads": r.threads if r.device == "cpu" else None,
               "seed": r.seed, "val_bpb": float(final["val_bpb"]), "best_val_bpb": r.best,
               **{k: float(v) for k, v in final.items() if k.startswith("val_") and v},  # + val_scores
               "steps": t, "wall_s": round(r.elapsed(), 1),
               "member_tokens_per_s": float(np.median(rates)) if rates else 0.0,
               "peak_memory_mb": peak_memory_mb(r.xp), "baselines": r.baselines,
               "command": "python train.py " + " ".join(r.args.argv), **r.provenance}
    with open(os.path.join(r.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot_curve(os.path.join(r.out_dir, "loss.png"), r.rows, r.baselines,
               f"{r.args.method}, {model_name(r.mcfg)}, {r.device}")
    print(f"done: step {t}, val bits/byte {final['val_bpb']} (best {r.best:.5f}), "
          f"{fmt_time(r.elapsed())}; outputs in {r.out_dir}/"
          + ("" if r.run["steps"] else f"; rerun with --steps {t} to repeat this run"))
    print("sample: " + (prompt + text)[-200:].decode("utf-8", errors="replace")
          .replace("\n", " | "))


@dataclasses.dataclass
class Run:
    """Everything a training run holds between its set-up and its finish."""
    args: object
    method: object
    world: object
    xp: object
    device: str
    run: dict                 # the run settings: steps (None: until budget_s), seq_len, ...
    mcfg: object
    cfg: object
    seed: int
    data: str                 # the data file's path
    data_record: dict         # ... and its content, as checkpoints record it
    out_dir: str
    stream: object
    windows: object
    baselines: dict
    params: dict
    state: dict
    start: int = 0            # the step this run starts from (a resumed run's checkpoint)
    step: int = 0             # the steps done so far
    threads: int = 1          # CPU threads evaluating a batch's rows
    best: float = math.inf
    elapsed_before: float = 0.0
    rows: list = dataclasses.field(default_factory=list)
    t0: float = 0.0
    # commit, date and machine as the run starts: the code it runs, even if the checkout
    # moves on while it trains (a notebook commit during a ten-minute run)
    provenance: dict = dataclasses.field(default_factory=dict)

    @property
    def lead(self):
        return self.world.rank == 0               # rank 0 alone prints and writes files

    def say(self, *a, **k):
        if self.lead:
            print(*a, **k)

    def elapsed(self):
        return self.elapsed_before + time.time() - self.t0

    def meta(self, step):
        return {"format": CHECKPOINT_FORMAT, "commit": self.provenance.get("commit"),
                "method": self.args.method, "seed": self.seed, "data": self.data_record,
                "model": dataclasses.asdict(self.mcfg), "method_config":
                dataclasses.asdict(self.cfg), "run": self.run,
                "step": step, "best_val": self.best, "elapsed_s": self.elapsed()}


def evaluate(r):
    """val bits/byte, computed on rank 0 and known to every process."""
    predict = r.method.predict(r.params, r.state, r.mcfg) if hasattr(r.method, "predict") \
        else None
    return r.world.bcast(lm.evaluate(r.params, r.mcfg, r.windows, predict) if r.lead else None)


def val_scores(r):
    """The method's further scores on the same windows ({} without val_scores), formatted."""
    if not hasattr(r.method, "val_scores"):
        return {}
    scores = r.world.bcast(r.method.val_scores(r.params, r.state, r.mcfg, r.windows)
                           if r.lead else None)
    return {k: f"{v:.5f}" for k, v in scores.items()}


def save_progress(r, t):
    """At every evaluation, the log so far, then the latest checkpoint (each replaced
    atomically): a run killed at any moment (SIGKILL, the OOM killer, a lost machine) resumes
    from ckpt_last.npz and loses only the steps since. The log goes first, so it never lacks
    a step the checkpoint has; a resume drops the log's rows past its checkpoint."""
    if r.lead:
        write_log(os.path.join(r.out_dir, "log.csv"), r.rows, r.method.LOSS)
    checkpoint(r, "ckpt_last.npz", t)


def checkpoint(r, name, step):
    """Collective under mpirun: the processes' per-member state is joined on rank 0."""
    full_state = unshard(r.state, r.method, r.world)
    if r.lead:
        save_checkpoint(os.path.join(r.out_dir, name), r.params, full_state, r.meta(step))


STOP = {"asked": ""}   # Ctrl-C or SIGTERM once: stop after this step, every output written


def ask_to_stop(signum, frame):
    if STOP["asked"]:
        raise KeyboardInterrupt                               # twice: stop now
    STOP["asked"] = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"\n{STOP['asked']}: stopping after this step and saving everything (again: now)",
          file=sys.stderr, flush=True)

# -----------------------------------------------------------------------------
# command line: built from the method's Config; any bad input is one line and exit code 2


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        fail(message)


def fail(message):
    """Every process reaches the same check, so under mpirun all exit together; one prints."""
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


def non_negative_int(text):
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {v}")
    return v


def seed_int(text):
    """A seed the noise key can tell apart from every other: stream_key folds each word to 32
    bits, so seeds 2^32 apart would share their noise."""
    v = non_negative_int(text)
    if v >= 2**32:
        raise argparse.ArgumentTypeError(f"must be below 2^32 = {2**32} (the noise key's "
                                         f"range), got {v}")
    return v


def positive_float(text):
    v = float(text)
    if not v > 0 or math.isinf(v):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return v


def build_parser(method=None):
    p = ArgumentParser(description="Train the integer RNN LM without backpropagation (or with "
                       "it: backprop, the yardstick).",
                       allow_abbrev=False, add_help=False, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    p.add_argument("--method", default=None, choices=METHODS,
                   help="the training method (default eggroll; --resume: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: the GPU (CuPy) when usable, else the CPU (NumPy)")
    p.add_argument("--seed", type=seed_int, default=None,
                   help="the one seed all randomness derives from (default 0)")
    p.add_argument("--data", default=None, help="any file, read as bytes (default: the "
                   "shipped data/tinyshakespeare.txt)")
    p.add_argument("--out", default=None, help="outputs go to OUT/<method>/ (default out; "
                   "--resume: the checkpoint's directory)")
    p.add_argument("--overwrite", action="store_true", help="let a fresh run replace the "
                   "outputs of another run in its directory")
    p.add_argument("--resume", default="", metavar="CKPT", help="continue the run of a "
                   "ckpt_*.npz, with its method and configuration (--data: the same bytes "
                   "elsewhere)")
    p.add_argument("--hosts", default="", metavar="H1,H2[:N]",
                   help="run this command as one MPI job over these hosts, N processes on a "
                        "host (default 1): mpiexec -hosts ... (README \"Scaling out\")")
    p.add_argument("--budget_s", type=positive_float, default=None,
                   help="stop after this many seconds of training; without --steps the run "
                        "goes on until then")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads evaluating a batch's rows (default: the cores this process "
                        "may use, shared among the MPI processes on its node); results do not "
                        "depend on it")
    p.add_argument("--sample_bytes", type=non_negative_int, default=None,
                   help="length of sample.txt (default 400)")
    p.add_argument("--sample", default="", metavar="CKPT",
                   help="no training: print --sample_bytes bytes generated by a checkpoint")
    p.add_argument("--prompt", default=None, help="with --sample: the text to continue "
                   "(default a newline)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="with --sample: softmax temperature (default 1: the model's "
                        "distribution)")
    g = p.add_argument_group("the run (the method's defaults per device in brackets)")
    for name, text in RUN_HELP.items():
        cpu, cuda = (run_defaults(method, d)[name] for d in ("cpu", "cuda"))
        kind = non_negative_int if name == "mlp_mult" else positive_int
        g.add_argument(f"--{name}", type=kind, default=None,
                       help=f"{text} (cpu {cpu}, cuda {cuda})" if method else text)
    if method is not None:
        g = p.add_argument_group(f"{method.__name__}.Config")
        comments = field_comments(method.Config)
        gpu = getattr(method, "DEFAULTS", {}).get("cuda", {})
        for f in dataclasses.fields(method.Config):
            extra = f"; cuda {gpu[f.name]}" if f.name in gpu else ""
            choices = typing.get_args(f.type) if typing.get_origin(f.type) is typing.Literal \
                else None
            kind = parse_bool if f.type in (bool, "bool") else type(f.default)
            g.add_argument(f"--{f.name}", type=kind, default=None, choices=choices,
                           help=f"{comments.get(f.name, '')} (default {f.default}{extra})")
    return p


def overview():
    """`python train.py --help` without --method: the methods and how to get their flags."""
    lines = [build_parser().format_usage(), "Train the integer RNN LM without "
             "backpropagation (backprop is the yardstick). Methods (python train.py --method "
             "M --help lists M's flags):"]
    for name in METHODS:
        doc = (importlib.import_module(name).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:16s} {doc}")
    return "\n".join(lines) + "\n\n" + build_parser().format_help().split("\n\n", 1)[1]


def parse_args(argv):
    """-> (args, method module, checkpoint or None). The method comes from --method, or from
    the checkpoint of --resume; flags left out are None."""
    first, _ = build_parser().parse_known_args(argv)
    if first.help and first.method is None and not first.resume:
        print(overview())
        sys.exit(0)
    ckpt = None
    name = first.method or "eggroll"
    if first.resume:
        ckpt = load_checkpoint(first.resume, np, arrays=False)
        name = ckpt["meta"].get("method")
        if name not in METHODS:
            fail(f"{first.resume} is not a train.py checkpoint")
        if first.method and first.method != name:
            fail(f"checkpoint {first.resume} is a {name} run, not {first.method}: "
                 f"leave out --method to resume it")
    method = importlib.import_module(name)
    parser = build_parser(method)
    args = parser.parse_args(argv)
    if args.help:
        parser.print_help()
        sys.exit(0)
    check_mode(args, parser)
    args.method, args.argv = name, argv
    return args, method, ckpt


# the flags the command that does not train (--sample) reads; any other flag does nothing there
SAMPLE_FLAGS = {"sample", "device", "seed", "sample_bytes", "prompt", "temperature"}
ONLY_WITH = {"prompt": "sample", "temperature": "sample"}


def check_mode(args, parser):
    """A flag that does nothing in the chosen command is an error, not silently ignored."""
    given = [a.dest for a in parser._actions
             if a.dest != "help" and getattr(args, a.dest) != a.default]
    reads = SAMPLE_FLAGS if args.sample else None
    for name in given:
        if reads is None and name in ONLY_WITH:
            fail(f"--{name} works only with --{ONLY_WITH[name]}")
        if reads is not None and name not in reads:
            fail(f"--{name} does nothing with --sample (it reads only "
                 f"{', '.join('--' + f for f in sorted(reads))})")


def run_defaults(method, device):
    """train.py's run settings for the device, overridden by the method's own."""
    own = getattr(method, "DEFAULTS", {}).get(device, {}) if method else {}
    return {**RUN_DEFAULTS[device], **{k: v for k, v in own.items() if k in RUN_HELP}}


def default_config(method, device):
    """The method's Config with its DEFAULTS for the device."""
    own = getattr(method, "DEFAULTS", {}).get(device, {})
    fields = {f.name for f in dataclasses.fields(method.Config)}
    return method.Config(**{k: v for k, v in own.items() if k in fields})


def resolve(args, method, device, ckpt):
    """Device defaults (or the checkpoint's settings), then the user's flags -> the run
    settings, the model config and the method config."""
    if ckpt:
        meta = ckpt["meta"]
        check_fields(meta, method, args.resume)
        run, values = dict(meta["run"]), dict(meta["method_config"])
        given = given_flags(args, method)
        kept = {**run, **values, "seed": meta["seed"]}
        changed = [k for k, v in given.items()
                   if k not in RESUME_MAY_CHANGE | {"data"} and kept.get(k) != v]
        if changed:
            k = changed[0]
            fail(f"--{k} {given[k]}: a resumed run keeps its checkpoint's {k} ({kept.get(k)}); "
                 f"only {', '.join('--' + f for f in sorted(RESUME_MAY_CHANGE))} may change")
        run.update({k: v for k, v in given.items() if k in run})
        if run["steps"] is not None and run["steps"] <= meta["step"] or run["steps"] is None \
                and run["budget_s"] is not None and run["budget_s"] <= meta["elapsed_s"]:
            until = (f"--steps {run['steps']}" if run["steps"] is not None
                     else f"--budget_s {run['budget_s']:g}")
            fail(f"{args.resume} is at step {meta['step']} ({meta['elapsed_s']:.0f} s): "
                 f"{until} leaves nothing to train; give a larger --steps")
        seed = meta["seed"]
        data = given.get("data") or os.path.join(ROOT, meta["data"]["path"])
    else:
        run = run_defaults(method, device)
        values = dataclasses.asdict(default_config(method, device))
        given = given_flags(args, method)
        run.update({k: v for k, v in given.items() if k in run})
        values.update({k: v for k, v in given.items() if k in values})
        run["budget_s"] = args.budget_s
        run["sample_bytes"] = 400 if args.sample_bytes is None else args.sample_bytes
        if args.budget_s and args.steps is None:
            run["steps"] = None                        # the budget alone ends the run
        seed = 0 if args.seed is None else args.seed
        data = os.path.abspath(args.data or DEFAULT_DATA)
    cfg = method.Config(**values)
    mcfg = model_config(run)
    lm.check_model_config(mcfg)
    method.check_config(cfg)
    return run, mcfg, cfg, seed, data


def model_config(run):
    """The run settings' model."""
    return lm.ModelConfig(d_model=run["d_model"], n_layers=run["n_layers"],
                          mlp_mult=run["mlp_mult"])


def model_name(mcfg):
    """D=64 L=1 MLP 4D, or D=64 L=1 no MLP."""
    mlp = f"MLP {mcfg.mlp_mult}D" if mcfg.mlp_mult else "no MLP"
    return f"D={mcfg.d_model} L={mcfg.n_layers} {mlp}"


def given_flags(args, method):
    """The run, model and method flags the command line set (None: left out)."""
    names = list(RUN_HELP) + [f.name for f in dataclasses.fields(method.Config)]
    names += ["seed", "data", "budget_s", "sample_bytes"]
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if "data" in given:
        given["data"] = os.path.abspath(given["data"])
    return given

# -----------------------------------------------------------------------------
# devices: NumPy on the CPU, CuPy on a GPU, one code path


def gpu_usable():
    """True when cupy imports, sees a GPU and can run a tiny kernel there."""
    try:
        import cupy
        return bool(cupy.cuda.is_available()) and int(cupy.arange(3).sum()) == 3
    except Exception:  # no cupy, no driver, no device: all mean "CPU only"
        return False


def get_backend(device="auto"):
    """The array module for --device auto|cpu|cuda."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu" or (device == "auto" and not gpu_usable()):
        return np
    if not gpu_usable():
        raise ValueError("--device cuda: no usable GPU (is cupy-cuda12x/13x installed?)")
    import cupy
    return cupy

# -----------------------------------------------------------------------------
# data: bytes of a text file, a fixed 90/10 split, windows with carried state


ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(ROOT, "data", "tinyshakespeare.txt")


def load_bytes(path):
    """The bytes of any file, as uint8. Errors name the file."""
    if not os.path.isfile(path):
        raise ValueError(f"data file not found: {path}")
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if len(data) == 0:
        raise ValueError(f"data file is empty: {path}")
    return data


def data_record(path, data):
    """The data as a checkpoint records it: by content, and by a path that survives a moved
    checkout (relative to the repository when inside it)."""
    shown = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
    return {"path": shown, "bytes": int(len(data)),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest()}


def check_same_data(trained, record, path):
    """A resumed run must read the bytes it trained on (format-1 checkpoints did not record
    them)."""
    if "sha256" in trained and (trained["bytes"], trained["sha256"]) != (record["bytes"],
                                                                         record["sha256"]):
        raise ValueError(f"{path} is not the data this run trained on ({trained['bytes']} "
                         f"bytes, sha256 {trained['sha256'][:16]}...): give --data the file it "
                         f"trained on")


def check_data_agrees(record, world):
    """Under mpirun each host reads its own copy of the data file: every process must hold the
    same bytes (a wrong copy would otherwise show only as diverged parameters later)."""
    every = world.allgather_object((socket.gethostname(), record["sha256"]))
    for host, digest in every:
        if digest != every[0][1]:
            raise ValueError(f"the data file {record['path']} on host {host} differs from rank "
                             f"0's on {every[0][0]} (sha256 {digest[:12]}... vs "
                             f"{every[0][1][:12]}...): copy the same file to every host")


def split_train_val(data):
    """The last 10 % of the bytes is validation."""
    n_val = len(data) // 10
    return data[: len(data) - n_val], data[len(data) - n_val:]


def min_data_bytes(n_rows, seq_len, val_len):
    """Smallest file for which every training row holds one window and val holds one window."""
    need_train = n_rows * (seq_len + 1)
    return max(need_train + need_train // 9 + 1, 10 * (val_len + 1))


def check_data_size(data, path, n_rows, seq_len, val_len):
    need = min_data_bytes(n_rows, seq_len, val_len)
    if len(data) < need:
        raise ValueError(f"data file {path} has {len(data)} bytes; need at least {need} "
                         f"({n_rows} rows x {seq_len + 1}-byte windows for training after a "
                         f"90/10 split, and one {val_len + 1}-byte validation window)")


class TrainStream:
    """Training windows with carried state.

    The train split is cut into n_rows (S) contiguous rows; at step t row r yields bytes
    [j T, j T + T + 1) of its row, j = t mod windows_per_row, so consecutive steps continue each
    row and the hidden state carries across them. `reset` is True when the rows start over
    (j == 0).
    The data position is a pure function of t, so a resumed run reads the same bytes."""

    def __init__(self, train, n_rows, seq_len, xp=np):
        self.row_len = len(train) // n_rows
        self.windows_per_row = (self.row_len - 1) // seq_len
        if self.windows_per_row < 1:
            raise ValueError(f"train split of {len(train)} bytes is too short for {n_rows} rows "
                             f"of {seq_len + 1}-byte windows")
        self.rows = train[: n_rows * self.row_len].reshape(n_rows, self.row_len)
        self.seq_len, self.xp = seq_len, xp

    def batch(self, t):
        """(tokens (n_rows, T + 1) uint8 on xp, reset: bool)."""
        k = t % self.windows_per_row
        window = self.rows[:, k * self.seq_len: k * self.seq_len + self.seq_len + 1]
        return self.xp.asarray(np.ascontiguousarray(window)), k == 0


def val_windows(val, n_windows, length, xp=np):
    """A fixed set of n evenly spaced windows of length + 1 bytes from the val split."""
    if len(val) < length + 1:
        raise ValueError(f"validation split has {len(val)} bytes, need {length + 1}")
    starts = np.linspace(0, len(val) - length - 1, n_windows).astype(np.int64)
    return xp.asarray(np.stack([val[s: s + length + 1] for s in starts]))   # (n, length + 1)


def ngram_baselines(train, val, smoothing=0.01):
    """Bits/byte on val of add-`smoothing` unigram and bigram models fit on train."""
    uni = np.bincount(train, minlength=lm.VOCAB) + smoothing
    uni_bpb = -np.mean(np.log2(uni / uni.sum())[val])
    bi = np.zeros((lm.VOCAB, lm.VOCAB))
    np.add.at(bi, (train[:-1], train[1:]), 1)
    bi += smoothing
    bi_lp = np.log2(bi / bi.sum(axis=1, keepdims=True))
    bi_bpb = -np.mean(bi_lp[val[:-1], val[1:]])
    return {"uniform": 8.0, "unigram": float(uni_bpb), "bigram": float(bi_bpb)}

# -----------------------------------------------------------------------------
# processes: `mpiexec -n K python train.py ...` is one run over K processes. Process r
# evaluates its share of the population (or of MeZO's directions), one Allgather per step joins
# the fitness, and every process applies the same update from the same counter-hash noise: the
# parameters are never sent, yet stay bit-identical everywhere (checked by hash at every eval).


class OneProcess:
    """The population's workers when there is one. Process r of K evaluates share(n) of the n
    members (or directions) and allgather joins every process's piece in rank order: the only
    exchange an evolution strategy needs (Salimans et al. 2017, Alg. 2)."""
    rank, size = 0, 1
    local_rank, local_size = 0, 1          # this process's place among those on its node

    def share(self, n):
        """This process's contiguous slice of n items; n is a multiple of size (checked)."""
        k = n // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def allgather(self, x):
        """(k, ...) in every process -> (K k, ...), rank 0's rows first."""
        return x

    def allreduce_sum(self, x):
        """The elementwise sum over processes (exact for integer arrays)."""
        return x

    def bcast(self, value):
        """Rank 0's value in every process."""
        return value

    def allgather_object(self, value):
        """[every process's value], in rank order (small Python objects: names, digests)."""
        return [value]

    def gather_rows(self, x, axis):
        """Rank 0 gets the processes' pieces joined along `axis` (the others: None)."""
        return x


ONE_PROCESS = OneProcess()
MPI_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")   # set by MPICH/Slurm, Open MPI, PMIx


class MPIWorld(OneProcess):
    """OneProcess's interface over mpi4py's COMM_WORLD. Arrays travel through host memory: a
    CuPy array is copied to the host and back (mpi4py wheels are not CUDA-aware)."""

    def __init__(self, MPI):
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)                  # those on this node
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

    def allgather_object(self, value):
        return self.comm.allgather(value)

    def gather_rows(self, x, axis):
        pieces = self.comm.gather(lm.to_numpy(x), root=0)
        return None if pieces is None else np.concatenate(pieces, axis=axis)

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)          # let mpiexec forward this process's last words before the kill
        self.comm.Abort(code)


WORLD = ONE_PROCESS   # this process's world; an MPIWorld under mpirun


def join_world():
    """An MPIWorld when launched by mpirun/mpiexec, else the one-process world; mpi4py is
    imported only in the first case. Under MPI an uncaught error in any process aborts the
    whole job (no process waits forever for a dead one), and process r picks GPU r mod (GPUs
    on its node)."""
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
    except Exception:   # no CuPy or no GPU: the processes run on the CPU
        pass
    return WORLD


def launch_on_hosts(args):
    """`python train.py --hosts h1,h2 ...`: the same command as one MPI job over those hosts,
    `mpiexec -hosts h1,h2 -n K python train.py ...` (MPICH's hydra reaches the hosts by ssh, or
    by the program HYDRA_LAUNCHER_EXEC names). MPI ends the whole job when a host is lost, and
    its launcher says so in lines of its own; this process, outside the job, says it in one
    line naming the checkpoint to resume from (rank 0 wrote it at the last evaluation)."""
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        fail("--hosts needs MPICH's mpiexec: pip install mpi4py mpich")
    if WORLD.size > 1:
        fail("--hosts starts mpiexec itself: run it without mpiexec")
    try:
        k = sum(int(host.partition(":")[2] or 1) for host in args.hosts.split(","))
    except ValueError:
        fail(f"--hosts {args.hosts}: expected HOST[:N],HOST[:N],...")
    argv = [a for i, a in enumerate(args.argv) if not a.startswith("--hosts")
            and not (i > 0 and args.argv[i - 1] == "--hosts")]
    job = subprocess.Popen([mpiexec, "-hosts", args.hosts, "-n", str(k), sys.executable,
                            os.path.abspath(__file__)] + argv, stderr=subprocess.PIPE,
                           text=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)       # the job has Ctrl-C from the terminal
    signal.signal(signal.SIGTERM, lambda signum, frame: job.terminate())
    launcher = []
    for line in job.stderr:                            # the processes' own lines pass through
        if re.match(r"\[(mpiexec|proxy)[@:]", line):
            launcher.append(line)
        else:
            sys.stderr.write(line)
    code = job.wait()
    if code == 0 or not launcher:                      # done, or train.py's own error line
        return code
    ckpt = os.path.join(output_dir(args), "ckpt_last.npz")
    step = (f"step {load_checkpoint(ckpt, np, arrays=False)['meta']['step']}"
            if os.path.exists(ckpt) else "not written yet")
    print(f"train.py: error: the job lost a host or a process (mpiexec exited {code}); its "
          f"last checkpoint is {ckpt} ({step}): continue on the hosts that are left with "
          f"python train.py --hosts HOSTS --resume {ckpt}", file=sys.stderr, flush=True)
    return 3


def shard(state, method, world):
    """A checkpoint's full state -> this process's: its own members' rows of each per-member
    entry."""
    for name, axis in getattr(method, "PER_MEMBER_STATE", {}).items():
        rows = world.share(state[name].shape[axis])
        state[name] = state[name][(slice(None),) * axis + (rows,)]
    return state


def unshard(state, method, world):
    """This process's state -> the full state on rank 0 (None elsewhere): one checkpoint for
    any K."""
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
    """Every process must hold the same parameters; a mismatch stops the run, naming it."""
    digests = lm.to_numpy(world.allgather(params_digest(params)[None]))     # (K, 32)
    for r in range(1, world.size):
        if not (digests[r] == digests[0]).all():
            fail(f"rank {r}'s parameters differ from rank 0's at step {t}: the processes "
                 f"diverged (different code, library or device per process?)")

# -----------------------------------------------------------------------------
# checkpoints: .npz with params, method state and a JSON meta (format, commit, method, seed,
# data, configs, step); written to a temporary file and renamed, so a crash never leaves a
# half-written checkpoint

# 1: written before the format was recorded (up to 2026-12-06); 2: + format, commit, and the
# data by content ({"path", "bytes", "sha256"}); 3: one name per thing (2026-12-07): NoProp's
# number of blocks is `blocks` (was `T`, the letter of a window's bytes), MeZO's rows per step
# `rows` (was `batch`, as every other method calls them)
CHECKPOINT_FORMAT = 3
RENAMED_IN_FORMAT_3 = {"noprop": {"T": "blocks"}, "mezo": {"batch": "rows"}}


def migrate_format_1(meta):
    """A format-1 checkpoint's meta in format 2. The fields added to the code since such a run
    get the values that run used (from the history of the code); any other missing field is
    refused later by check_fields."""
    run, values = meta["run"], meta["method_config"]
    run.setdefault("mlp_mult", 4)          # before --mlp_mult every block had its D -> 4D MLP
    if meta.get("method") in ("eggroll", "es_naive"):
        values.setdefault("sigma_shift_vectors", values.get("sigma_shift"))  # one sigma for all
        values.setdefault("signal", "sign")           # before --signal: App. H.2's sign
        values.setdefault("sampling", "antithetic")   # before --sampling: +-E pairs
    meta["data"] = {"path": meta.get("data")}         # its content was not recorded
    meta["format"], meta["commit"] = 2, "unknown (format 1)"
    return meta


def migrate_format_2(meta):
    """A format-2 checkpoint's meta in format 3: the renamed Config fields take their new names
    (the same values, so the run continues as it ran)."""
    values = meta["method_config"]
    for old, new in RENAMED_IN_FORMAT_3.get(meta.get("method"), {}).items():
        if old in values:
            values[new] = values.pop(old)
    meta["format"] = 3
    return meta


def check_fields(meta, method, path):
    """Every setting the code has must be in the checkpoint, and nothing else: a missing field
    would silently take today's default, an unknown one would be dropped."""
    have = {"run": set(RUN_HELP) | {"budget_s", "sample_bytes"},
            "method_config": {f.name for f in dataclasses.fields(method.Config)}}
    for part, fields in have.items():
        missing = sorted(fields - set(meta[part]))
        unknown = sorted(set(meta[part]) - fields)
        if missing:
            fail(f"{path} has no {part} field {missing[0]!r} (written by older code that did "
                 f"not have it): it cannot continue as it ran")
        if unknown:
            fail(f"{path} has a {part} field {unknown[0]!r} that this code does not know "
                 f"(written by other code, {meta.get('commit')})")


def save_checkpoint(path, params, state, meta):
    arrays = {f"param/{k}": lm.to_numpy(v) for k, v in params.items()}
    arrays.update({f"state/{k}": lm.to_numpy(v) for k, v in state.items()})
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def load_checkpoint(path, xp, arrays=True):
    """{"meta": dict, "params": {...}, "state": {...}} (arrays=False: meta only)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            ckpt = {"meta": json.loads(str(z["meta"]))}
            if arrays:
                ckpt["params"] = {k[6:]: xp.asarray(z[k]) for k in z.files
                                  if k.startswith("param/")}
                ckpt["state"] = {k[6:]: xp.asarray(z[k]) for k in z.files
                                 if k.startswith("state/")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        fail(f"cannot read checkpoint {path}: {e}")
    meta = ckpt["meta"]
    if not isinstance(meta, dict) or "run" not in meta or "method_config" not in meta:
        fail(f"{path} is not a train.py checkpoint")
    if "format" not in meta:
        migrate_format_1(meta)
    if meta["format"] == 2:
        migrate_format_2(meta)
    if meta["format"] != CHECKPOINT_FORMAT:
        fail(f"{path} has checkpoint format {meta['format']}; this train.py reads format "
             f"{CHECKPOINT_FORMAT} (and 1, 2)")
    return ckpt

# -----------------------------------------------------------------------------
# outputs: progress line, log.csv, loss.png, summary.json


def fmt_time(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def progress_line(t, steps, loss, stats, val_bpb, rate, elapsed, eta):
    """val bits/byte (comparable across methods) first, then the method's own loss by name."""
    val = f"val {val_bpb:.4f}" if val_bpb is not None else "val    -  "
    eta = max(0.0, eta)                    # the last step of a budget run may end past it
    return (f"step {t:5d}/{steps} | {val} | {loss} {stats.get(loss, float('nan')):.4f} | "
            f"{rate / 1e3:8.1f}k member-tok/s | {fmt_time(elapsed)} | ETA {fmt_time(eta)}")


def plot_curve(path, rows, baselines, title):
    """loss.png; optional: without matplotlib a one-line warning, and nothing else is lost."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"warning: matplotlib is not installed, so {path} was not drawn "
              f"(pip install matplotlib)", file=sys.stderr)
        return
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


LOG_COLUMNS = ["step", "val_bpb", "member_tokens_per_s", "elapsed_s"]   # + the method's LOSS


def write_log(path, rows, loss):
    """log.csv: the fixed columns, the method's loss, then its other stats and val scores."""
    first = LOG_COLUMNS[:2] + [loss] + LOG_COLUMNS[2:]
    extra = sorted({k for r in rows for k in r} - set(first))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=first + extra, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def peak_memory_mb(xp):
    """Peak resident memory of this process (CPU) or the CuPy pool's high-water mark (GPU)."""
    if xp is not np:
        return round(xp.get_default_memory_pool().total_bytes() / 2**20, 1)
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # KiB on Linux


def provenance():
    """The commit, date and machine a number comes from (results/notebook.md cites them)."""
    root = ROOT
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                capture_output=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True, timeout=5).stdout
        commit = (commit + ("+changes" if dirty.strip() else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"commit": commit, "date": datetime.date.today().isoformat(),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, "
                       f"{platform.system()}, Python {platform.python_version()}, "
                       f"NumPy {np.__version__}"}


def cpu_model():
    """The CPU's model name (Linux: /proc/cpuinfo), since wall-clock numbers depend on it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


LOCK = {"fd": None}   # this run's hold on its output directory (hold_out_dir)


def hold_out_dir(out_dir):
    """Make OUT/<method>/ and lock it for the run's life (flock on the directory itself): a
    second run on it is refused, even with --overwrite. The kernel drops the lock when the
    process ends, however it ends, so a killed run leaves none behind."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", out_dir)
        fd = os.open(out_dir, os.O_RDONLY)
    except OSError as e:
        raise ValueError(f"cannot write to --out {os.path.dirname(out_dir) or '.'}: "
                         f"{e.strerror} ({e.filename})")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ValueError(f"{out_dir}/ is in use by a run that is still going: wait for it to "
                         f"end, or choose another --out")
    LOCK["fd"] = fd


def release_out_dir():
    if LOCK["fd"] is not None:
        os.close(LOCK["fd"])
        LOCK["fd"] = None


def output_dir(args):
    """OUT/<method>/, or a resumed run's own directory."""
    if args.resume and not args.out:
        return os.path.dirname(os.path.abspath(args.resume))
    return os.path.join(args.out or "out", args.method)


def check_out_dir(out_dir, resume, overwrite):
    """A fresh run never writes over another run's outputs: it is refused (one line, exit 2)
    unless --overwrite; with it, the other run's files are removed first."""
    held = [f for f in OUTPUT_FILES if os.path.exists(os.path.join(out_dir, f))]
    if not held or (resume and os.path.samefile(os.path.dirname(os.path.abspath(resume)),
                                                out_dir)):
        return
    if not overwrite:
        raise ValueError(f"{out_dir}/ holds another run's outputs ({', '.join(held)}): choose "
                         f"another --out, continue it with --resume "
                         f"{os.path.join(out_dir, 'ckpt_last.npz')}, or replace it with "
                         f"--overwrite")
    for f in held:
        os.remove(os.path.join(out_dir, f))

# -----------------------------------------------------------------------------
# the command that does not train: --sample


def sample_checkpoint(args):
    """`python train.py --sample CKPT --prompt TEXT`: continue TEXT with a trained model."""
    try:
        xp = get_backend(args.device)
        ckpt = load_checkpoint(args.sample, xp)
        method = importlib.import_module(ckpt["meta"]["method"])
        mcfg = lm.ModelConfig(**ckpt["meta"]["model"])
        params, state = ckpt["params"], ckpt["state"]
        predict = (method.predict(params, state, mcfg) if hasattr(method, "predict")
                   else lm.lm_predict(params, mcfg))
        prompt = ("\n" if args.prompt is None else args.prompt).encode("utf-8")
        text = lm.sample(predict, lm.zero_hidden(mcfg, 1, xp), prompt,
                         400 if args.sample_bytes is None else args.sample_bytes,
                         0 if args.seed is None else args.seed,
                         1.0 if args.temperature is None else args.temperature)
    except (ValueError, KeyError, TypeError, ImportError) as e:
        fail(f"cannot sample from {args.sample}: {e}")
    sys.stdout.buffer.write(prompt + text + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(train(sys.argv[1:]))
