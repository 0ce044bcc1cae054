"""mpirun: one training run over K processes gives the 1-process run's checkpoints and log bit for
bit, resumes at any K (and after the whole job is killed), refuses an uneven split, and never
hangs when a rank dies.

These launch real `mpiexec -n K python train.py` jobs (tiny model, 3-4 steps). They need mpi4py
and an MPI (.ci/run installs both); outside CI they skip without them, in CI they fail."""
import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

import train
from conftest import wait_for_evaluation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpirun")
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False
pytestmark = pytest.mark.skipif(not HAVE_MPI and not os.environ.get("CI"),
                                reason="needs mpi4py and mpiexec (pip install mpi4py mpich)")

TINY = ["--device", "cpu", "--d_model", "16", "--n_layers", "1", "--seq_len", "16",
        "--val_windows", "4", "--val_len", "32", "--log_every", "1", "--eval_every", "2",
        "--sample_bytes", "8"]
# each method's flags for a split over 2 (and 4) ranks; es_naive's member_chunk 2 makes every
# rank draw its noise in chunks that start mid-population
SPLIT = {
    "eggroll": ["--population", "16", "--group_size", "4"],
    "es_naive": ["--population", "8", "--group_size", "2", "--member_chunk", "2"],
    "mezo": ["--rows", "4", "--n_dirs", "4"],
}
# columns that differ between two runs of the same training: the wall clock
NOT_STATE = ("member_tokens_per_s", "elapsed_s")


def mpirun(k, argv, script=None, timeout=120):
    """`mpiexec -n k python train.py argv` (or python -c script argv) from the repo root."""
    cmd = [MPIEXEC, "-n", str(k), sys.executable] + (["-c", script] if script else ["train.py"])
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run(cmd + argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def alone(argv):
    """The same run in this process, without MPI."""
    try:
        return train.train(argv)
    except SystemExit as e:
        return e.code


def assert_same_run(a, b):
    """Two out/<method> folders hold the same run: checkpoint arrays and meta, log.csv and
    sample.txt, bit for bit, but for NOT_STATE and the run settings a resume may change (a
    best checkpoint written before a resume records that part's planned --steps)."""
    for name in ("ckpt_last.npz", "ckpt_best.npz"):
        with np.load(os.path.join(a, name)) as za, np.load(os.path.join(b, name)) as zb:
            assert sorted(za.files) == sorted(zb.files), name
            assert "meta" in za.files and len(za.files) > 1, (name, za.files)
            for k in za.files:
                if k == "meta":
                    ma, mb = json.loads(str(za[k])), json.loads(str(zb[k]))
                    for key in NOT_STATE:
                        ma.pop(key, None), mb.pop(key, None)
                    for key in train.RESUME_MAY_CHANGE:
                        ma["run"].pop(key, None), mb["run"].pop(key, None)
                    assert ma == mb, (name, ma, mb)
                else:
                    np.testing.assert_array_equal(za[k], zb[k], err_msg=f"{name}: {k}")
    logs = []
    for d in (a, b):
        with open(os.path.join(d, "log.csv"), newline="") as f:
            logs.append([{k: v for k, v in r.items() if k not in NOT_STATE} for r in csv.DictReader(f)])
    assert logs[0], f"{a}/log.csv has no rows"
    assert logs[0] == logs[1]
    with open(os.path.join(a, "sample.txt"), "rb") as fa, open(os.path.join(b, "sample.txt"), "rb") as fb:
        assert fa.read() == fb.read()


@pytest.mark.parametrize("method,k,extra", [
    ("eggroll", 2, []), ("eggroll", 4, []), ("eggroll", 4, ["--sampling", "independent"]),
    ("es_naive", 2, []), ("es_naive", 4, []), ("es_naive", 2, ["--sampling", "independent"]),
    ("mezo", 2, []), ("mezo", 4, [])])
def test_k_processes_equal_one_process_bit_for_bit(method, k, extra, tmp_path):
    argv = TINY + SPLIT[method] + extra + ["--method", method, "--steps", "3"]
    assert alone(argv + ["--out", str(tmp_path / "one")]) == 0
    job = mpirun(k, argv + ["--out", str(tmp_path / "many")])
    assert job.returncode == 0, job.stderr
    assert f"processes {k} |" in job.stdout and job.stdout.count("done: step 3") == 1, job.stdout
    assert_same_run(tmp_path / "one" / method, tmp_path / "many" / method)
    with open(tmp_path / "many" / method / "summary.json") as f:
        assert json.load(f)["world_size"] == k


@pytest.mark.parametrize("method", ["eggroll", "es_naive"])
def test_checkpoint_resumes_at_another_k(method, tmp_path):
    """2 steps at K = 2 then 2 more at K = 1, and 2 at K = 1 then 2 at K = 2, both equal 4
    straight steps in one process: the per-member state is joined and split again."""
    argv = TINY + SPLIT[method] + ["--method", method]
    assert alone(argv + ["--steps", "4", "--out", str(tmp_path / "straight")]) == 0
    ab, ba = tmp_path / "two_then_one", tmp_path / "one_then_two"
    job = mpirun(2, argv + ["--steps", "2", "--out", str(ab)])
    assert job.returncode == 0, job.stderr
    assert alone(argv + ["--steps", "4", "--out", str(ab),
                         "--resume", str(ab / method / "ckpt_last.npz")]) == 0
    assert alone(argv + ["--steps", "2", "--out", str(ba)]) == 0
    job = mpirun(2, argv + ["--steps", "4", "--out", str(ba),
                            "--resume", str(ba / method / "ckpt_last.npz")])
    assert job.returncode == 0, job.stderr
    assert_same_run(tmp_path / "straight" / method, ab / method)
    assert_same_run(tmp_path / "straight" / method, ba / method)


@pytest.mark.parametrize("method,flags,message", [
    ("eggroll", ["--population", "12", "--group_size", "4"],
     "population 12 does not split into whole groups of 4 over 2 processes"),
    ("mezo", ["--n_dirs", "3"], "n_dirs 3 does not split over 2 processes"),
    ("forward_forward", [], "forward_forward runs in one process only"),
])
def test_uneven_split_is_one_line_exit_2_before_any_work(method, flags, message, tmp_path):
    job = mpirun(2, TINY + flags + ["--method", method, "--steps", "3", "--out", str(tmp_path)])
    err = job.stderr.strip()
    assert job.returncode == 2, (job.returncode, err)
    assert len(err.splitlines()) == 1 and message in err, err
    assert job.stdout == "" and not os.listdir(tmp_path)


# python -c scripts run under mpiexec: rank 1 misbehaves at step 1, then train.py runs as usual
RANK_1_DIES = """
import sys, train, eggroll
real = eggroll.step
def step(params, state, batch, t, *rest, **kw):
    if t == 1 and train.WORLD.rank == 1:
        raise RuntimeError("rank 1 died")
    return real(params, state, batch, t, *rest, **kw)
eggroll.step = step
sys.exit(train.train(sys.argv[1:]))
"""
RANK_1_DRIFTS = """
import sys, train, eggroll
real = eggroll.step
def step(params, state, batch, t, *rest, **kw):
    params, state, stats = real(params, state, batch, t, *rest, **kw)
    if t == 1 and train.WORLD.rank == 1:
        params["emb"][0, 0] += 1
    return params, state, stats
eggroll.step = step
sys.exit(train.train(sys.argv[1:]))
"""


RANK_1_OTHER_DATA = """
import sys, train
real = train.load_bytes
def load_bytes(path):
    data = real(path).copy()
    if train.WORLD.rank == 1:
        data[100] ^= 1                         # its host's copy of the file differs in one bit
    return data
train.load_bytes = load_bytes
sys.exit(train.train(sys.argv[1:]))
"""


def test_a_host_whose_data_differs_is_refused_naming_it(tmp_path):
    """Each host reads its own copy of the data: one bit off on rank 1 and the run stops before
    training, in one line naming that host."""
    argv = TINY + SPLIT["eggroll"] + ["--steps", "2", "--out", str(tmp_path)]
    job = mpirun(2, argv, script=RANK_1_OTHER_DATA, timeout=60)
    err = job.stderr.strip()
    assert job.returncode == 2 and len(err.splitlines()) == 1, (job.returncode, err)
    assert f"data/tinyshakespeare.txt on host {socket.gethostname()} differs from rank 0's" \
        in err, err
    assert not os.path.exists(tmp_path / "eggroll" / "ckpt_last.npz")


def test_a_rank_that_dies_ends_the_job(tmp_path):
    argv = TINY + SPLIT["eggroll"] + ["--steps", "4", "--out", str(tmp_path)]
    job = mpirun(2, argv, script=RANK_1_DIES, timeout=60)   # a hang would raise TimeoutExpired
    assert job.returncode != 0, job.stderr
    assert "rank 1 failed (RuntimeError: rank 1 died)" in job.stderr, job.stderr


def test_ranks_that_diverge_stop_at_the_next_eval_naming_the_rank(tmp_path):
    argv = TINY + SPLIT["eggroll"] + ["--steps", "4", "--out", str(tmp_path)]
    job = mpirun(2, argv, script=RANK_1_DRIFTS, timeout=60)
    assert job.returncode == 2, job.stderr
    assert "rank 1's parameters differ from rank 0's at step 2" in job.stderr, job.stderr


def test_readme_mpiexec_commands_run(tmp_path):
    """Every CPU `mpiexec -n K python train.py ...` line of the README runs and exits 0 (1 step
    where the line gives no --steps)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    lines = re.findall(r"^mpiexec -n (\d+) python train\.py ([^\n]*)$", text, flags=re.M)
    cpu = [(int(k), rest) for k, rest in lines if "--device cuda" not in rest]
    assert cpu, "README has no mpiexec line for the CPU"
    for i, (k, rest) in enumerate(cpu):
        argv = shlex.split(rest)
        if "--steps" not in argv:
            argv += ["--steps", "1", "--eval_every", "1"]
        argv = [a.replace("out/", f"{tmp_path}/") for a in argv]
        job = mpirun(k, argv + ["--val_windows", "2", "--sample_bytes", "4"] +
                     ([] if "--out" in argv else ["--out", str(tmp_path / str(i))]), timeout=300)
        assert job.returncode == 0, (rest, job.stderr)


def test_a_job_killed_after_an_evaluation_resumes_bit_for_bit(tmp_path):
    """`mpiexec -n 2` SIGKILLed, every process at once (a lost machine): rank 0 had written
    ckpt_last.npz and log.csv at the last evaluation, and a 1-process resume from them ends
    with the checkpoints, log and sample of a 1-process run never killed."""
    argv = TINY + SPLIT["eggroll"] + ["--steps", "300", "--eval_every", "10", "--log_every",
                                      "5"]
    out = tmp_path / "killed" / "eggroll"
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "train.py"] + argv +
                           ["--out", str(tmp_path / "killed")], cwd=ROOT,
                           env=dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        wait_for_evaluation(out / "log.csv", 20, job)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert not (out / "summary.json").exists()
    step = train.load_checkpoint(str(out / "ckpt_last.npz"), np, arrays=False)["meta"]["step"]
    assert 10 <= step < 300, step
    assert alone(["--resume", str(out / "ckpt_last.npz")]) == 0
    assert alone(argv + ["--out", str(tmp_path / "straight")]) == 0
    assert_same_run(tmp_path / "straight" / "eggroll", out)
