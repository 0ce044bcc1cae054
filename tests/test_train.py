"""train.py: CLI errors, outputs, checkpoints, bit-identical resume, Ctrl-C, for every method."""
import builtins
import csv
import dataclasses
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import eggroll
import int_rnn_lm as lm
import train
from conftest import wait_for_evaluation

TINY = ["--device", "cpu", "--d_model", "16", "--n_layers", "1", "--seq_len", "16",
        "--val_windows", "4", "--val_len", "32", "--log_every", "1", "--sample_bytes", "8"]
# the smallest sensible setting of each method (its own Config flags)
SMALL = {
    "eggroll": ["--population", "16", "--group_size", "4"],
    "es_naive": ["--population", "8", "--group_size", "2"],
    "mezo": [],
    "forward_forward": [],
    "noprop": [],
    "backprop": [],
}


def run(argv):
    """train.train in-process; returns the exit code (0 or the SystemExit code)."""
    try:
        return train.train(argv)
    except SystemExit as e:
        return e.code


def load_arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def assert_same_checkpoints(a, b, min_arrays=10):
    """Every array of two ckpt_last.npz (folders a, b) equal, bit for bit."""
    a, b = (load_arrays(os.path.join(d, "ckpt_last.npz")) for d in (a, b))
    assert set(a) == set(b) and len(a) > min_arrays, sorted(set(a) ^ set(b))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} differs")

# -----------------------------------------------------------------------------
# bad input: one line on stderr, exit code 2, nothing written


@pytest.mark.parametrize("argv,message", [
    (["--bogus", "1"], "unrecognized arguments: --bogus"),
    (["--method", "bogus"], "argument --method: invalid choice: 'bogus'"),
    (["--update", "adam"], "argument --update: invalid choice: 'adam'"),
    (["--budget_s", "-5"], "argument --budget_s: must be a positive number, got -5"),
    (["--budget_s", "0"], "argument --budget_s: must be a positive number, got 0"),
    (["--budget_s", "nan"], "argument --budget_s: must be a positive number, got nan"),
    (["--seed", "-1"], "argument --seed: must be a non-negative integer, got -1"),
    (["--sample_bytes", "-4"], "argument --sample_bytes: must be a non-negative integer"),
    (["--temperature", "0"], "argument --temperature: must be a positive number, got 0"),
    (["--population", "7"], "population must be even"),
    (["--population", "0"], "population must be even"),
    (["--population", "16", "--group_size", "6"], "group_size must be even and divide"),
    (["--steps", "0"], "must be a positive integer"),
    (["--steps", "-3"], "must be a positive integer"),
    (["--d_model", "20"], "d_model must be a positive multiple of 16"),
    (["--mlp_mult", "-1"], "argument --mlp_mult: must be a non-negative integer, got -1"),
    (["--method", "forward_forward", "--mlp_mult", "0"],
     "forward_forward trains each block's GRU and MLP: it needs --mlp_mult >= 1"),
    (["--data", "/nonexistent/file.txt"], "data file not found: /nonexistent/file.txt"),
    (["--seed", str(2**32)], "argument --seed: must be below 2^32 = 4294967296 (the noise"),
    (["--prompt", "ROMEO:"], "--prompt works only with --sample"),
    (["--temperature", "0.5"], "--temperature works only with --sample"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    code = run(argv + ["--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit code {code} for {argv}"
    assert len(err.splitlines()) == 1 and message in err, f"stderr was: {err!r}"
    assert not os.listdir(tmp_path), "bad input must not write outputs"


@pytest.mark.parametrize("argv,message", [
    (["--sample", "x.npz", "--steps", "3"], "--steps does nothing with --sample (it reads only"),
    (["--sample", "x.npz", "--out", "o"], "--out does nothing with --sample"),
])
def test_a_flag_that_does_nothing_in_its_command_is_an_error(argv, message, capsys):
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_an_unwritable_out_is_one_line_before_training(tmp_path, capsys):
    """--out under a regular file (a directory cannot be made there, even as root)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert run(TINY + ["--out", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot write to --out {blocker}" in err, err
    assert blocker.read_text() == "not a directory"


def test_a_live_run_holds_its_out_even_against_overwrite_and_a_dead_one_does_not(tmp_path,
                                                                                 capsys):
    """Another process holding OUT/eggroll/ (as a running train.py does) makes a second run
    there fail in one line, --overwrite or not, with the holder's files untouched; once that
    process is SIGKILLed the kernel has dropped its lock and the run goes ahead."""
    out = tmp_path / "eggroll"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, train; "
                               f"train.hold_out_dir({str(out)!r}); print('held', flush=True); "
                               "time.sleep(120)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--overwrite"]):
            assert run(TINY + ["--steps", "1", "--out", str(tmp_path)] + extra) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "is in use by a run that is still going" in \
                err, err
        assert os.listdir(out) == []
    finally:
        holder.kill()
        holder.wait()
    assert run(TINY + ["--steps", "1", "--out", str(tmp_path)]) == 0


def test_too_short_data_names_file_and_minimum(capsys, tmp_path):
    short = tmp_path / "tiny.txt"
    short.write_bytes(b"hello world\n" * 10)
    code = run(TINY + SMALL["eggroll"] + ["--data", str(short), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "tiny.txt has 120 bytes; need at least" in err, err


def test_help_lists_every_config_field_with_its_comment_and_choices(capsys):
    with pytest.raises(SystemExit) as e:
        train.train(["--method", "eggroll", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    comments = train.field_comments(eggroll.Config)
    for f in dataclasses.fields(eggroll.Config):
        assert f"--{f.name}" in out, f.name
        assert comments[f.name].split()[0] in out, (f.name, comments[f.name])
    assert "--update {sgd,threshold}" in out and "--device {auto,cpu,cuda}" in out
    assert out.rstrip().endswith("pip install mpi4py mpich") and "examples:" in out


def test_help_without_method_lists_the_methods(capsys):
    """`python train.py --help` names every method with its file's first line and says how to
    get its flags; it does not pretend to be EGGROLL's help."""
    with pytest.raises(SystemExit) as e:
        train.train(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for name in train.METHODS:
        first = __import__(name).__doc__.strip().splitlines()[0]
        assert f"  {name}" in out and first in out, name
    assert "--method M --help" in out and "--population" not in out and "examples:" in out


def test_progress_line_never_shows_a_negative_eta():
    """A budget run's last step can end a second past the budget: its ETA reads 0m00s
    (it read -1m59s, the floor division of -1 s)."""
    line = train.progress_line(2734, "~2734", "population_bpb", {"population_bpb": 3.6}, 3.56,
                               225e3, 601.0, -1.0)
    assert line.endswith("| 10m01s | ETA 0m00s"), line
    assert train.fmt_time(3725) == "1h02m" and train.fmt_time(59.6) == "1m00s"


# -----------------------------------------------------------------------------
# a run: outputs, learning, resume, interruption, bad checkpoints


def test_eggroll_short_run_lowers_val_bpb_and_writes_outputs(tmp_path):
    argv = TINY + ["--d_model", "32", "--seq_len", "32", "--population", "256", "--group_size",
                   "4", "--steps", "12", "--eval_every", "6", "--out", str(tmp_path)]
    assert run(argv) == 0
    out = tmp_path / "eggroll"
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"step", "val_bpb", "elapsed_s"} <= set(rows[0])
    vals = [(int(r["step"]), float(r["val_bpb"])) for r in rows if r["val_bpb"]]
    assert [s for s, _ in vals] == [0, 6, 12]
    assert vals[-1][1] < vals[0][1] - 0.4 and vals[-1][1] < 7.6, \
        f"val bits/byte {vals}: expected a drop >= 0.4 and to below uniform 8.0 - 0.4"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "sample.txt").stat().st_size == 64 + 8            # prompt + sample
    assert set(load_arrays(out / "ckpt_best.npz")) == set(load_arrays(out / "ckpt_last.npz"))


def same_log(a, b, stop=None):
    """log.csv rows of two runs, but the wall-clock columns (and the evaluation a run that
    stopped at step `stop` made there, which the straight run did not)."""
    logs = [[{k: v for k, v in r.items() if k not in ("member_tokens_per_s", "elapsed_s")
              and not (k == "val_bpb" and r["step"] == str(stop))}
             for r in train.read_log(os.path.join(d, "log.csv"))] for d in (a, b)]
    assert logs[0], f"{a}/log.csv has no rows"
    return logs[0] == logs[1]


@pytest.mark.parametrize("method", train.METHODS)
def test_resume_alone_continues_bit_identically(method, tmp_path):
    """4 steps straight == 2 steps, then `--resume CKPT --steps 4` with no other flag (the method
    and its configuration come from the checkpoint): checkpoint arrays, log.csv and sample.txt
    bit-identical; the resumed run writes into the checkpoint's own directory."""
    base = TINY + SMALL[method] + ["--method", method, "--eval_every", "2"]
    assert run(base + ["--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert run(base + ["--steps", "2", "--out", str(tmp_path / "b")]) == 0
    ckpt = str(tmp_path / "b" / method / "ckpt_last.npz")
    assert run(["--resume", ckpt, "--steps", "4"]) == 0
    assert_same_checkpoints(tmp_path / "a" / method, tmp_path / "b" / method, 0)
    assert same_log(tmp_path / "a" / method, tmp_path / "b" / method)
    assert ((tmp_path / "a" / method / "sample.txt").read_bytes()
            == (tmp_path / "b" / method / "sample.txt").read_bytes())


def as_format_1(path, drop=()):
    """Rewrite a checkpoint as the code wrote it before checkpoint formats: no format, no
    commit, the data as an absolute path, and without the settings in `drop`."""
    ckpt = train.load_checkpoint(path, np)
    meta = ckpt["meta"]
    del meta["format"], meta["commit"]
    meta["data"] = os.path.join(train.ROOT, meta["data"]["path"])
    for name in drop:
        meta["run" if name in meta["run"] else "method_config"].pop(name)
    train.save_checkpoint(path, ckpt["params"], ckpt["state"], meta)


@pytest.mark.parametrize("method", ["eggroll", "es_naive"])
def test_a_format_1_checkpoint_resumes_as_it_ran(method, tmp_path):
    """A checkpoint from before checkpoint formats lacks the settings added since: --mlp_mult
    (every block had its 4D MLP), --sigma_shift_vectors (the vectors took sigma_shift),
    --signal (App. H.2's sign) and --sampling (antithetic pairs). Resumed, it continues as that
    run did (the same arrays as 4 straight steps run with those values), not with today's
    defaults."""
    base = TINY + SMALL[method] + ["--method", method, "--eval_every", "2", "--sigma_shift",
                                   "3", "--sigma_shift_vectors", "3", "--signal", "sign",
                                   "--sampling", "antithetic", "--group_size", "2"]
    assert run(base + ["--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert run(base + ["--steps", "2", "--out", str(tmp_path / "b")]) == 0
    path = str(tmp_path / "b" / method / "ckpt_last.npz")
    as_format_1(path, drop=("mlp_mult", "sigma_shift_vectors", "signal", "sampling"))
    assert run(["--resume", path, "--steps", "4"]) == 0
    assert_same_checkpoints(tmp_path / "a" / method, tmp_path / "b" / method)
    meta = train.load_checkpoint(path, np, arrays=False)["meta"]
    assert meta["format"] == train.CHECKPOINT_FORMAT and meta["data"]["sha256"], meta


@pytest.mark.parametrize("method,old,new", [("noprop", "T", "blocks"), ("mezo", "batch", "rows")])
def test_a_format_2_checkpoint_with_a_renamed_field_resumes_as_it_ran(method, old, new, tmp_path):
    """Format 3 renamed NoProp's `T` to `blocks` and MeZO's `batch` to `rows`: a format-2
    checkpoint (the old name, the same value) resumes bit-identical to a run never stopped,
    and its meta is read with the new name."""
    value = ["--" + new, "3"]
    base = TINY + ["--method", method, "--eval_every", "2"] + value
    assert run(base + ["--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert run(base + ["--steps", "2", "--out", str(tmp_path / "b")]) == 0
    path = str(tmp_path / "b" / method / "ckpt_last.npz")
    ckpt = train.load_checkpoint(path, np)
    meta = ckpt["meta"]
    meta["format"] = 2
    meta["method_config"][old] = meta["method_config"].pop(new)
    train.save_checkpoint(path, ckpt["params"], ckpt["state"], meta)
    assert run(["--resume", path, "--steps", "4"]) == 0
    assert_same_checkpoints(tmp_path / "a" / method, tmp_path / "b" / method)
    meta = train.load_checkpoint(path, np, arrays=False)["meta"]
    assert meta["format"] == 3 and meta["method_config"][new] == 3 and old not in meta["method_config"]


@pytest.mark.parametrize("change,message", [
    ("drop lr", "has no method_config field 'lr' (written by older code that did not have it)"),
    ("add bogus", "has a method_config field 'bogus' that this code does not know"),
    ("format 99", "has checkpoint format 99; this train.py reads format 3 (and 1, 2)"),
])
def test_a_checkpoint_with_a_missing_or_unknown_field_is_refused(change, message, tmp_path,
                                                                 capsys):
    base = TINY + SMALL["eggroll"] + ["--eval_every", "2"]
    assert run(base + ["--steps", "2", "--out", str(tmp_path)]) == 0
    path = str(tmp_path / "eggroll" / "ckpt_last.npz")
    if change == "drop lr":
        as_format_1(path, drop=("lr",))
    else:
        ckpt = train.load_checkpoint(path, np)
        if change == "add bogus":
            ckpt["meta"]["method_config"]["bogus"] = 1
        else:
            ckpt["meta"]["format"] = 99
        train.save_checkpoint(path, ckpt["params"], ckpt["state"], ckpt["meta"])
    before = (tmp_path / "eggroll" / "ckpt_last.npz").read_bytes()
    capsys.readouterr()
    assert run(["--resume", path, "--steps", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert (tmp_path / "eggroll" / "ckpt_last.npz").read_bytes() == before


def test_the_data_is_recorded_by_content_and_a_moved_file_resumes(tmp_path, capsys):
    """A checkpoint records its data's size and SHA-256 beside its path: the file moved (the
    recorded path gone), the run resumes from --data at the new place and ends bit-identical;
    without --data the error names the file and its hash; a different file is refused."""
    data = tmp_path / "d.txt"
    data.write_bytes(train.load_bytes(train.DEFAULT_DATA)[:20000].tobytes())
    base = TINY + SMALL["eggroll"] + ["--eval_every", "2", "--data", str(data)]
    assert run(base + ["--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert run(base + ["--steps", "2", "--out", str(tmp_path / "b")]) == 0
    path = str(tmp_path / "b" / "eggroll" / "ckpt_last.npz")
    record = train.load_checkpoint(path, np, arrays=False)["meta"]["data"]
    assert record == {"path": str(data), "bytes": 20000, "sha256": hashlib.sha256(
        data.read_bytes()).hexdigest()}
    moved = tmp_path / "moved.txt"
    os.rename(data, moved)
    capsys.readouterr()
    assert run(["--resume", path, "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert f"data file not found: {data} (the run trained on 20000 bytes" in err, err
    other = tmp_path / "other.txt"
    other.write_bytes(moved.read_bytes()[::-1])
    assert run(["--resume", path, "--steps", "4", "--data", str(other)]) == 2
    assert "is not the data this run trained on (20000 bytes" in capsys.readouterr().err
    assert run(["--resume", path, "--steps", "4", "--data", str(moved)]) == 0
    assert_same_checkpoints(tmp_path / "a" / "eggroll", tmp_path / "b" / "eggroll", 1)
    fresh = train.load_checkpoint(str(tmp_path / "a" / "eggroll" / "ckpt_last.npz"), np,
                                  arrays=False)["meta"]
    default = TINY + SMALL["eggroll"] + ["--steps", "1", "--out", str(tmp_path / "c")]
    assert run(default) == 0                  # the shipped file: recorded inside the repository
    meta = train.load_checkpoint(str(tmp_path / "c" / "eggroll" / "ckpt_last.npz"), np,
                                 arrays=False)["meta"]
    assert meta["data"]["path"] == os.path.join("data", "tinyshakespeare.txt"), meta["data"]
    assert fresh["commit"] and meta["format"] == train.CHECKPOINT_FORMAT


def test_resume_between_evaluations_and_across_a_data_reset(tmp_path):
    """Stopped at step 3 (not an eval step) and at step 5 (the rows start over: 16-byte windows
    of rows of 100 bytes give 6 windows a row, so step 6 reads window 0 again with reset), each
    resumed to 9: the same checkpoint, log (but the evaluation at the stop) and sample as 9
    straight steps."""
    base = TINY + SMALL["eggroll"] + ["--eval_every", "4", "--val_len", "16"]
    data = tmp_path / "d.txt"
    data.write_bytes(train.load_bytes(train.DEFAULT_DATA)[:445].tobytes())   # 401 train bytes
    base += ["--data", str(data)]
    stream = train.TrainStream(train.split_train_val(train.load_bytes(str(data)))[0], 4, 16)
    assert stream.windows_per_row == 6 and stream.batch(6)[1]
    assert run(base + ["--steps", "9", "--out", str(tmp_path / "a")]) == 0
    for stop in (3, 5):
        out = tmp_path / f"stop{stop}"
        assert run(base + ["--steps", str(stop), "--out", str(out)]) == 0
        assert run(["--resume", str(out / "eggroll" / "ckpt_last.npz"), "--steps", "9"]) == 0
        a, b = (load_arrays(d / "eggroll" / "ckpt_last.npz") for d in (tmp_path / "a", out))
        assert set(a) == set(b) and len(a) > 1, sorted(set(a) ^ set(b))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"stop {stop}: {k}")
        assert same_log(tmp_path / "a" / "eggroll", out / "eggroll", stop), stop
        assert ((tmp_path / "a" / "eggroll" / "sample.txt").read_bytes()
                == (out / "eggroll" / "sample.txt").read_bytes())


def test_a_second_run_never_destroys_the_first(tmp_path, capsys):
    """A fresh run into a directory holding another run is refused with a one-line error that
    names the ways out, and the first run's files stay byte-identical; --overwrite replaces it,
    and --resume continues it."""
    base = TINY + SMALL["eggroll"] + ["--steps", "2", "--out", str(tmp_path)]
    assert run(base) == 0
    out = tmp_path / "eggroll"
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    capsys.readouterr()
    assert run(base + ["--seed", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds another run's outputs" in err, err
    assert "--out" in err and "--resume" in err and "--overwrite" in err, err
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    assert run(base + ["--seed", "1", "--overwrite"]) == 0
    assert load_arrays(out / "ckpt_last.npz")["param/emb"].tobytes() != \
        np.load(__import__("io").BytesIO(before["ckpt_last.npz"]))["param/emb"].tobytes()
    with open(out / "summary.json") as f:
        assert json.load(f)["seed"] == 1


def test_resume_refuses_what_may_not_change_and_another_method(tmp_path, capsys):
    """--resume keeps the checkpoint's configuration: a flag that would change it (a method
    flag, the model, the data, the seed) is refused in one line, flags that only say when to
    stop or how often to report are taken, and --method must match the checkpoint's."""
    base = TINY + SMALL["eggroll"] + ["--steps", "2", "--out", str(tmp_path)]
    assert run(base) == 0
    ckpt = str(tmp_path / "eggroll" / "ckpt_last.npz")
    for flags, message in ((["--population", "32"], "--population 32: a resumed run keeps"),
                           (["--d_model", "32"], "--d_model 32: a resumed run keeps"),
                           (["--seed", "5"], "--seed 5: a resumed run keeps"),
                           (["--method", "mezo"], "is a eggroll run, not mezo"),
                           ([], "is at step 2 (0 s): --steps 2 leaves nothing to train"),
                           (["--steps", "1"], "--steps 1 leaves nothing to train")):
        capsys.readouterr()
        assert run(["--resume", ckpt] + flags) == 2, flags
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert run(["--resume", ckpt, "--steps", "3", "--eval_every", "1", "--log_every", "3",
                "--population", "16"]) == 0          # the checkpoint's own value is fine
    with open(tmp_path / "eggroll" / "summary.json") as f:
        assert json.load(f)["steps"] == 3


def test_summary_names_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """summary.json's commit is the one checked out when the run started: a commit made while
    it trains (the checkout moves on, the running code does not) does not relabel it."""
    calls = []

    def moving_checkout():
        calls.append(1)
        return {"commit": f"commit{len(calls)}", "date": "2026-12-06", "machine": "test"}
    monkeypatch.setattr(train, "provenance", moving_checkout)
    real_step = eggroll.step

    def step_then_commit(*a, **k):
        moving_checkout()                                  # the checkout moves on mid-run
        return real_step(*a, **k)
    monkeypatch.setattr(eggroll, "step", step_then_commit)
    assert run(TINY + SMALL["eggroll"] + ["--steps", "2", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "eggroll" / "summary.json") as f:
        assert json.load(f)["commit"] == "commit1"
    assert len(calls) >= 3                                 # it did move


def test_a_run_without_matplotlib_writes_everything_but_the_plot(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert run(TINY + SMALL["eggroll"] + ["--steps", "2", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "matplotlib is not installed" in err, err
    assert sorted(os.listdir(tmp_path / "eggroll")) == sorted(
        f for f in train.OUTPUT_FILES if f != "loss.png")


@pytest.mark.parametrize("signum,name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_ctrl_c_stops_after_the_step_saves_everything_and_resumes(signum, name, tmp_path,
                                                                  monkeypatch, capsys):
    """Ctrl-C (a real SIGINT) or SIGTERM (`timeout`, a scheduler) during step 2: the run
    finishes that step, stops, writes every output (checkpoint at step 3, log, sample,
    summary) and exits 0; resuming it to 4 steps gives the checkpoint of 4 straight steps."""
    base = TINY + SMALL["eggroll"] + ["--eval_every", "2", "--steps", "4"]
    assert run(base + ["--out", str(tmp_path / "a")]) == 0
    real_step = eggroll.step

    def interrupted_step(params, state, batch, t, *rest):
        if t == 2 and train.WORLD.rank == 0:
            os.kill(os.getpid(), signum)
        return real_step(params, state, batch, t, *rest)
    monkeypatch.setattr(eggroll, "step", interrupted_step)
    assert run(base + ["--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert f"stopped ({name}) at step 3" in captured.out and f"{name}: stopping" in captured.err
    monkeypatch.setattr(eggroll, "step", real_step)
    out = tmp_path / "b" / "eggroll"
    assert sorted(os.listdir(out)) == sorted(train.OUTPUT_FILES)
    with np.load(out / "ckpt_last.npz") as z:
        assert '"step": 3' in str(z["meta"])
    assert run(["--resume", str(out / "ckpt_last.npz")]) == 0
    a = load_arrays(tmp_path / "a" / "eggroll" / "ckpt_last.npz")
    b = load_arrays(out / "ckpt_last.npz")
    assert set(a) == set(b) and len(a) > 1, sorted(set(a) ^ set(b))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("method", ["eggroll", "backprop"])
def test_a_killed_run_resumes_from_its_last_evaluation_bit_for_bit(method, tmp_path):
    """A real `python train.py` SIGKILLed (no handler runs: the OOM killer, a lost machine)
    after an evaluation: its ckpt_last.npz and log.csv are on disk from that evaluation;
    `--resume` from the checkpoint alone ends with every array, the log's values and the
    sample of a run never killed."""
    flags = TINY + SMALL[method] + ["--method", method, "--steps", "300", "--eval_every", "10",
                                    "--log_every", "5"]
    killed = subprocess.Popen([sys.executable, "train.py"] + flags + ["--out", str(tmp_path /
                              "b")], cwd=ROOT, stdout=subprocess.DEVNULL)
    out = tmp_path / "b" / method
    try:
        wait_for_evaluation(out / "log.csv", 20, killed)
    finally:
        killed.kill()
        assert killed.wait() == -signal.SIGKILL, "the run ended before it was killed"
    assert not (out / "summary.json").exists()
    meta = train.load_checkpoint(str(out / "ckpt_last.npz"), np, arrays=False)["meta"]
    # the log is written before the checkpoint: killed between the two, the checkpoint is the
    # previous evaluation's and the resume drops the log's rows past it
    assert 10 <= meta["step"] < 300 and meta["step"] % 10 == 0, meta["step"]
    assert run(["--resume", str(out / "ckpt_last.npz")]) == 0
    assert run(flags + ["--out", str(tmp_path / "a")]) == 0
    assert_same_checkpoints(tmp_path / "a" / method, out)
    assert same_log(tmp_path / "a" / method, out)
    assert len(train.read_log(str(out / "log.csv"))) == 300 // 5 + 1
    assert (tmp_path / "a" / method / "sample.txt").read_bytes() == \
        (out / "sample.txt").read_bytes()


def test_corrupt_or_mismatched_checkpoint_is_refused_and_nothing_overwritten(tmp_path, capsys):
    base = TINY + SMALL["eggroll"] + ["--eval_every", "2", "--steps", "2", "--out", str(tmp_path)]
    assert run(base) == 0
    out = tmp_path / "eggroll"
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip file")
    capsys.readouterr()
    assert run(base + ["--resume", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read checkpoint" in err, err
    assert run(["--resume", str(out / "ckpt_last.npz"), "--population", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "a resumed run keeps its checkpoint's population" in err, err
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before

# -----------------------------------------------------------------------------
# the README's commands are the CLI's commands (the docs cannot drift)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"^(?:\$ )?(python [\w.]+\.py[^\n`]*?)\s*$", text, flags=re.M), text


def test_readme_train_commands_run(tmp_path):
    """Every `python train.py ...` line in the README runs (1 step, small eval) and exits 0, on
    the CPU (on a GPU machine `auto` would pick the GPU's larger defaults; .ci/gpu runs the GPU
    lines)."""
    commands, _ = readme_commands()
    train_cmds = [c for c in commands if c.startswith("python train.py --method")]
    assert "python train.py --method eggroll" in train_cmds, train_cmds
    for i, cmd in enumerate(sorted(set(train_cmds))):
        argv = shlex.split(cmd)[2:] + ["--steps", "1", "--eval_every", "1", "--val_windows",
                                       "2", "--sample_bytes", "4", "--out", str(tmp_path / str(i))]
        argv += [] if "--device" in argv else ["--device", "cpu"]
        assert run(argv) == 0, cmd


def test_readme_line_counts_are_true():
    """The README's line count of each file (the methods table's last column, and "`X.py` (N
    lines)" / "`X.py` (N)" in its text) is the file's length today."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    claims = re.findall(r"^\|[^\n]*\| `([\w/]+\.py)` \|[^\n]*\| (\d+) \|$", text, flags=re.M)
    claims += re.findall(r"`([\w/]+\.py)` \((\d+)(?: lines)?\)", text)
    assert len(claims) >= len(train.METHODS) + 3, claims
    for path, n in claims:
        with open(os.path.join(ROOT, path)) as f:
            assert sum(1 for _ in f) == int(n), f"README says {path} has {n} lines"


def marked_blocks(path):
    """The lines of every code block that follows a `<!-- under a minute -->` marker."""
    with open(path) as f:
        text = f.read()
    blocks = re.findall(r"<!-- under a minute[^>]*-->\s*```[^\n]*\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("doc", ["README.md", "results/README.md", "results/notebook.md"])
def test_commands_that_take_under_a_minute_run_as_written(doc, tmp_path):
    """Every command the docs mark as taking under a minute runs exactly as written (its
    out/ folder moved under a temporary one; on the CPU, where the docs time them) and exits
    0."""
    lines = marked_blocks(os.path.join(ROOT, doc))
    if doc == "README.md":
        assert len(lines) >= len(train.METHODS), lines
    for line in lines:
        argv = [a.replace("out/", f"{tmp_path}/") for a in shlex.split(line)]
        assert argv[:2] == ["python", "train.py"], line
        assert run(argv[2:] + ([] if "--device" in argv else ["--device", "cpu"])) == 0, line


NUMBER = r"[-+]?\d[\d,]*\.?\d*(?:e[-+]?\d+)?"


def same_up_to_float_rounding(expected, printed):
    """True when `printed` contains `expected` with each number within what float rounding
    moves: the toys train in float64/float32 through BLAS, whose summation order differs
    between CPUs. Measured under OpenBLAS's SkylakeX, Haswell, Sandybridge and Prescott
    kernels: MeZO's final loss moves in its 4th digit (4.7292e-05 to 4.7295e-05), FF's test
    accuracies by 1 of 1000 examples (0.913 or 0.914), the mse's not at all; so every number
    must agree within 1 % relative. The finite-difference check's worst error is rounding
    itself (4.7e-07 or 2.6e-07): that one (the number before "over") within a factor of 10."""
    pattern = re.escape(expected)
    numbers = re.findall(NUMBER, expected)
    for n in numbers:                                    # each number becomes a capture group
        pattern = pattern.replace(re.escape(n), f"({NUMBER})", 1)
    fd_error = "over" in expected.split()
    for line in printed.splitlines():
        m = re.search(pattern, line)
        if m and all(close(float(want.replace(",", "")), float(got.replace(",", "")),
                           factor=10 if fd_error and i == 0 else None)
                     for i, (want, got) in enumerate(zip(numbers, m.groups()))):
            return True
    return False


def close(want, got, factor=None):
    """Within 1 % relative, or within `factor` either way."""
    if factor:
        return want / factor <= got <= want * factor
    return abs(got - want) <= 0.01 * abs(want)


def test_same_up_to_float_rounding_can_fail():
    assert same_up_to_float_rounding("loss 6.0759e+01 -> 4.7292e-05",
                                     "x\nloss 6.0759e+01 -> 4.7295e-05 in 0.3 s")
    assert not same_up_to_float_rounding("loss 6.0759e+01 -> 4.7292e-05",
                                         "loss 6.0759e+01 -> 4.9e-05 in 0.3 s")
    assert not same_up_to_float_rounding("step  300 | mse 0.00582", "step  300 | mse 0.0061")
    assert not same_up_to_float_rounding("step  300 | mse 0.00582", "step  200 | mse 0.00582")
    assert same_up_to_float_rounding("worst 4.7e-07 over 23 parameters",
                                     "worst 2.6e-07 over 23 parameters")
    assert not same_up_to_float_rounding("worst 4.7e-07 over 23 parameters",
                                         "worst 4.7e-05 over 23 parameters")


def test_readme_toy_demos_print_what_the_readme_says():
    """Each row of the README's toy table: `python FILE.py` prints the line the table quotes,
    its numbers up to float rounding (same_up_to_float_rounding)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        rows = re.findall(r"^\| `python (\w+\.py)` \|[^|]*\| `(.*)` \|$", f.read(), flags=re.M)
    assert len(rows) == 7, rows
    for script, expected in rows:
        out = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env=dict(os.environ, MPLBACKEND="Agg"))
        assert out.returncode == 0 and same_up_to_float_rounding(
            expected.replace("\\|", "|"), out.stdout), (script, expected, out.stdout[-500:])


def test_readme_test_command_is_what_ci_runs():
    commands, text = readme_commands()
    assert "python -m pytest -q" in text
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "\npython -m pytest -q\n" in f.read()
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        reqs = f.read()
    assert all(name in reqs for name in ("numpy", "matplotlib", "pytest"))

# -----------------------------------------------------------------------------
# a budget plans the run; threads never change it; --sample reads checkpoints


def test_a_budget_without_steps_runs_until_the_budget_and_names_its_steps(tmp_path, capsys):
    """--budget_s without --steps trains until the budget is spent, evaluates at the end, and
    the done line names the --steps M that repeats the run; that rerun gives the same
    checkpoint bit for bit (nothing in a step depends on the clock)."""
    base = TINY + SMALL["eggroll"] + ["--eval_every", "10"]
    assert run(base + ["--budget_s", "3", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "a" / "eggroll" / "summary.json") as f:
        summary = json.load(f)
    m = summary["steps"]
    assert m >= 10 and summary["wall_s"] >= 3, summary
    assert f"budget of 3s reached at step {m}" in out
    assert f"rerun with --steps {m} to repeat this run" in out.splitlines()[-2]
    assert run(base + ["--steps", str(m), "--out", str(tmp_path / "b")]) == 0
    a = load_arrays(tmp_path / "a" / "eggroll" / "ckpt_last.npz")
    b = load_arrays(tmp_path / "b" / "eggroll" / "ckpt_last.npz")
    assert set(a) == set(b) and len(a) > 1, sorted(set(a) ^ set(b))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("method", ["eggroll", "es_naive", "mezo"])
def test_threads_do_not_change_the_run(method, tmp_path, monkeypatch):
    """1, 2 and 3 CPU threads split the population's rows differently: same checkpoint."""
    monkeypatch.setattr(lm, "MIN_ROWS_PER_THREAD", 2)            # split even tiny batches
    base = TINY + SMALL[method] + ["--method", method, "--steps", "3"]
    ckpts = []
    for k in (1, 2, 3):
        assert run(base + ["--threads", str(k), "--out", str(tmp_path / str(k))]) == 0
        ckpts.append(load_arrays(tmp_path / str(k) / method / "ckpt_last.npz"))
    for other in ckpts[1:]:
        for k in ckpts[0]:
            np.testing.assert_array_equal(ckpts[0][k], other[k], err_msg=k)


@pytest.mark.parametrize("method", ["eggroll", "backprop"])
def test_a_model_without_mlp_trains_resumes_and_keeps_its_shape(method, tmp_path):
    """--mlp_mult 0: the checkpoint holds no MLP, a resume takes the shape from the checkpoint
    (no flag) and continues bit-identically; a checkpoint written before the option existed
    (format 1, no mlp_mult in its meta) resumes as the MLP 4D model it is."""
    base = TINY + SMALL[method] + ["--method", method, "--eval_every", "2"]
    assert run(base + ["--mlp_mult", "0", "--steps", "4", "--out", str(tmp_path / "a")]) == 0
    assert run(base + ["--mlp_mult", "0", "--steps", "2", "--out", str(tmp_path / "b")]) == 0
    assert run(["--resume", str(tmp_path / "b" / method / "ckpt_last.npz"), "--steps", "4"]) == 0
    a = load_arrays(tmp_path / "a" / method / "ckpt_last.npz")
    b = load_arrays(tmp_path / "b" / method / "ckpt_last.npz")
    assert set(a) == set(b) and len(a) > 1 and not [k for k in a if "mlp" in k or "ln2" in k]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert run(base + ["--steps", "2", "--out", str(tmp_path / "c")]) == 0
    ckpt = tmp_path / "c" / method / "ckpt_last.npz"
    assert train.load_checkpoint(str(ckpt), np, arrays=False)["meta"]["run"]["mlp_mult"] == 4
    as_format_1(str(ckpt), drop=("mlp_mult",))
    assert run(["--resume", str(ckpt), "--steps", "3"]) == 0
    assert "l0.mlp1" in train.load_checkpoint(str(ckpt), np)["params"]


def test_sample_from_a_checkpoint(tmp_path, capsysbinary):
    """The checkpoint's model continues the prompt; the same seed gives the same bytes, and
    they are the bytes lm.sample draws from the checkpoint's params."""
    assert run(TINY + SMALL["eggroll"] + ["--steps", "2", "--out", str(tmp_path)]) == 0
    ckpt = str(tmp_path / "eggroll" / "ckpt_best.npz")
    capsysbinary.readouterr()
    for _ in range(2):
        assert run(["--sample", ckpt, "--prompt", "ROMEO:", "--sample_bytes", "40",
                    "--device", "cpu"]) == 0
    out = capsysbinary.readouterr().out
    first, second = out[: len(out) // 2], out[len(out) // 2:]
    ck = train.load_checkpoint(ckpt, np)
    mcfg = lm.ModelConfig(**ck["meta"]["model"])
    want = lm.sample(lm.lm_predict(ck["params"], mcfg), lm.zero_hidden(mcfg, 1), b"ROMEO:", 40, 0)
    assert first == second == b"ROMEO:" + want + b"\n", out


@pytest.mark.parametrize("content,message", [(None, "cannot read checkpoint"),
                                             (b"PK\x03\x04 not a zip", "cannot read checkpoint"),
                                             ("npz", "is not a train.py checkpoint")])
def test_sample_refuses_missing_or_corrupt_checkpoint(content, message, tmp_path, capsys):
    path = tmp_path / "ckpt.npz"
    if content == "npz":
        np.savez(path, meta=np.array("{}"), x=np.zeros(3))
    elif content is not None:
        path.write_bytes(content)
    assert run(["--sample", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def spelled_out(method, device="cpu"):
    """Every run setting and Config field of the method's defaults on `device`, as flags: a run
    with these flags is the same run on any device (left out, each device takes its own
    DEFAULTS: MeZO's batch, the float methods' rows, NoProp's width, ...)."""
    module = __import__(method)
    settings = {**train.run_defaults(module, device),
                **dataclasses.asdict(train.default_config(module, device))}
    return [a for k, v in settings.items() for a in (f"--{k}", str(v))]


def test_spelled_out_flags_fix_the_configuration_on_both_devices():
    """resolve() with the spelled-out CPU defaults gives the same configuration whichever
    device's DEFAULTS it starts from (what test_numpy_and_cupy_runs_agree relies on)."""
    for method in train.METHODS:
        module = __import__(method)
        args, _, _ = train.parse_args(spelled_out(method) + ["--method", method])
        cpu, cuda = (train.resolve(args, module, d, None) for d in ("cpu", "cuda"))
        assert cpu[:3] == cuda[:3], method


@pytest.mark.parametrize("method", train.METHODS)
def test_numpy_and_cupy_runs_agree(method, tmp_path, cupy_or_skip):
    """One configuration spelled out in full (the CPU defaults at a tiny size) on --device cpu
    and --device cuda, 3 steps: the integer methods give the same checkpoint bit for bit;
    Forward-Forward and NoProp, whose float32 parts sum in cuBLAS's order on the GPU and
    OpenBLAS's on the CPU, give their float-derived arrays within test_golden's relative L2
    tolerance and every other array bit for bit."""
    from test_golden import FLOAT_TOLERANCE, is_float_derived
    base = spelled_out(method) + TINY[2:] + SMALL[method] + ["--method", method, "--steps", "3"]
    for device in ("cpu", "cuda"):
        assert run(base + ["--device", device, "--out", str(tmp_path / device)]) == 0
    a = load_arrays(tmp_path / "cpu" / method / "ckpt_last.npz")
    b = load_arrays(tmp_path / "cuda" / method / "ckpt_last.npz")
    assert set(a) == set(b) and len(a) > 1
    for k in a:
        assert np.isfinite(a[k]).all() and np.isfinite(b[k]).all(), k
        if method in ("eggroll", "es_naive", "mezo") or not is_float_derived(method, k, a):
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{method}: {k}")
        else:
            distance = np.linalg.norm((a[k].astype(np.float64) - b[k]).ravel())
            assert distance <= FLOAT_TOLERANCE * np.linalg.norm(a[k].ravel().astype(np.float64)), k
