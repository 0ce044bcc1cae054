"""Several hosts: `python train.py --hosts ...` over two or three machines made on this one
(.ci/hosts: each a network namespace with its own address and hostname, MPI over TCP between
them, launched by mpiexec as it would launch over ssh) gives the one-process run bit for bit;
a host killed after an evaluation ends the job with one line naming the checkpoint, and the run
resumed on the host that is left ends where a run that never lost one ends.

Making namespaces needs root and iproute2/util-linux (CI has both: it runs as root and
.ci/run installs them); elsewhere these tests skip, saying why, and in CI they fail."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

import train
from conftest import wait_for_evaluation
from test_mpi import HAVE_MPI, SPLIT, TINY, alone, assert_same_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTS = os.path.join(ROOT, ".ci", "hosts")
WHY_NOT = ("needs root" if os.geteuid() != 0 else
           "needs ip (iproute2) and unshare (util-linux)" if not (shutil.which("ip") and
                                                                   shutil.which("unshare"))
           else "needs mpi4py and mpiexec (pip install mpi4py mpich)" if not HAVE_MPI else "")
pytestmark = pytest.mark.skipif(bool(WHY_NOT) and not os.environ.get("CI"),
                                reason=f"hosts as network namespaces: {WHY_NOT}")


@pytest.fixture(scope="module")
def hosts_env():
    """Three hosts, 10.99.0.1-3, for the module; the environment that launches through them."""
    subprocess.run([HOSTS, "down"], capture_output=True)          # leftovers of a killed run
    subprocess.run([HOSTS, "up", "3"], check=True)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    for line in subprocess.run([HOSTS, "env"], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        env.update(word.split("=", 1) for word in line.split()[1:])
    yield env
    subprocess.run([HOSTS, "down"], check=True)


def on_hosts(hosts, argv, env, **kw):
    return subprocess.run([sys.executable, "train.py", "--hosts", hosts] + argv, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180, **kw)


def test_the_hosts_are_separate_machines_to_mpi(hosts_env):
    """Each process sees its own hostname and is alone on its node (MPI's shared-memory
    communicator has size 1): what they exchange goes over the network."""
    script = ("from mpi4py import MPI; import socket; c = MPI.COMM_WORLD; seen = c.gather("
              "f'{c.rank} {socket.gethostname()} {c.Split_type(MPI.COMM_TYPE_SHARED).size}'); "
              "c.rank or print(*seen, sep='\\n')")
    job = subprocess.run(["mpiexec", "-hosts", "10.99.0.1,10.99.0.2,10.99.0.3", "-n", "3",
                          sys.executable, "-c", script], env=hosts_env, capture_output=True,
                         text=True, timeout=60)
    assert job.returncode == 0, job.stderr
    assert job.stdout.split("\n")[:-1] == ["0 h1 1", "1 h2 1", "2 h3 1"], job.stdout


@pytest.mark.parametrize("method,hosts,extra", [
    ("eggroll", "10.99.0.1,10.99.0.2,10.99.0.3", ["--population", "24"]),
    ("es_naive", "10.99.0.1,10.99.0.2", []),
    ("mezo", "10.99.0.1,10.99.0.2", []),
])
def test_a_run_over_hosts_equals_one_process_bit_for_bit(method, hosts, extra, hosts_env,
                                                         tmp_path):
    """Every array of both checkpoints, the log and the sample, as in test_mpi."""
    argv = TINY + SPLIT[method] + extra + ["--method", method, "--steps", "4"]
    assert alone(argv + ["--out", str(tmp_path / "one")]) == 0
    job = on_hosts(hosts, argv + ["--out", str(tmp_path / "hosts")], hosts_env)
    assert job.returncode == 0, job.stderr
    assert f"processes {len(hosts.split(','))} |" in job.stdout, job.stdout
    assert_same_run(tmp_path / "one" / method, tmp_path / "hosts" / method)


def test_a_lost_host_costs_one_evaluation_interval(hosts_env, tmp_path):
    """Host 2 killed (every process on it, SIGKILL) after an evaluation: the job ends with one
    line naming the checkpoint; `--hosts 10.99.0.1 --resume CKPT` continues on the host that is
    left (K = 1) and ends with the checkpoints, log and sample of a run that never lost one."""
    argv = TINY + SPLIT["eggroll"] + ["--steps", "300", "--eval_every", "10", "--log_every", "5"]
    out = tmp_path / "lost" / "eggroll"
    job = subprocess.Popen([sys.executable, "train.py", "--hosts", "10.99.0.1,10.99.0.2"] +
                           argv + ["--out", str(tmp_path / "lost")], cwd=ROOT, env=hosts_env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_evaluation(out / "log.csv", 20, job)
        subprocess.run([HOSTS, "kill", "10.99.0.2"], check=True)
        err = job.communicate(timeout=60)[1].strip()
    finally:
        if job.poll() is None:
            job.send_signal(signal.SIGKILL)
    step = train.load_checkpoint(str(out / "ckpt_last.npz"), train.np, arrays=False)["meta"]
    assert job.returncode == 3 and len(err.splitlines()) == 1, err
    assert ("the job lost a host or a process (mpiexec exited" in err and
            f"{out / 'ckpt_last.npz'} (step {step['step']})" in err), err
    assert 10 <= step["step"] < 300
    resumed = on_hosts("10.99.0.1", ["--resume", str(out / "ckpt_last.npz")], hosts_env)
    assert resumed.returncode == 0 and "processes 1 |" in resumed.stdout, resumed.stderr
    assert alone(argv + ["--out", str(tmp_path / "straight")]) == 0
    assert_same_run(tmp_path / "straight" / "eggroll", out)
