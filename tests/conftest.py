"""Shared fixtures: `xp` runs a backend test on NumPy and on CuPy: the real one where a GPU is
usable, else tests/strict_cupy.py, a strict stand-in that runs the CuPy branches on the CPU."""
import os
import sys
import time

# many small matmuls: one BLAS thread avoids oversubscribing a busy 2-core machine (set before
# numpy loads; an explicit setting in the environment wins)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import int_rnn_lm as lm  # noqa: E402
import strict_cupy  # noqa: E402
import train  # noqa: E402

GPU = train.gpu_usable()
ONE = train.ONE_PROCESS   # the one-process world the methods take


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    if request.param == "numpy":
        return np
    return request.getfixturevalue("cupy_or_skip")


@pytest.fixture
def cupy_or_skip(monkeypatch):
    """CuPy on a usable GPU; elsewhere the stand-in, installed as `cupy` for this test. (The
    name stays from when CPU-only machines skipped these tests.)"""
    if GPU:
        import cupy
        return cupy
    return strict_cupy.install(monkeypatch)


def fd_max_rel_error(loss_fn, params, grads, h=1e-6):
    """Hand gradient vs float64 central differences: max over tensors of
    ||grad_fd - grad||_inf / ||grad_fd||_inf, every entry perturbed in place and restored.
    A NaN or inf in either gradient, or an all-zero finite difference (a 0/0 ratio), fails
    here, naming the tensor: max(worst, nan) would keep worst and let the check pass."""
    assert params, "no tensors to check"
    worst = 0.0
    for k, p in params.items():
        fd = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + h
            up = loss_fn()
            p[i] = old - h
            down = loss_fn()
            p[i] = old
            fd[i] = (up - down) / (2 * h)
        g = np.asarray(grads[k])
        assert np.isfinite(fd).all(), f"{k}: the finite difference has NaN/inf"
        assert np.isfinite(g).all(), f"{k}: the hand gradient has NaN/inf"
        assert np.abs(fd).max() > 0, f"{k}: the finite difference is 0 everywhere"
        worst = max(worst, np.abs(fd - g).max() / np.abs(fd).max())
    return worst


def wait_for_evaluation(log, step, process, timeout=120):
    """Poll a running train.py's log.csv until it has the evaluation at `step`."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        rows = train.read_log(str(log)) if os.path.exists(log) else []
        if any(int(r["step"]) >= step and r["val_bpb"] for r in rows):
            return
        time.sleep(0.01)
    raise AssertionError(f"no evaluation at step {step} in {log} (exit {process.poll()})")


# a quadratic with a known gradient, for the SPSA and ES estimator tests
SHAPES = {"a": (4, 5), "b": (10,)}  # two tensors, so the per-tensor noise keys matter
D = 30  # total parameter count


def flat(params):
    """All tensors as one vector, in the sorted-key order the noise uses."""
    xp = lm.backend_of(params["a"])
    return xp.concatenate([params[k].ravel() for k in sorted(params)])


def make_quadratic(xp=np, seed=0):
    """(params, loss_fn, grad_fn) for f = ½ (v − v*)ᵀ H (v − v*), H SPD, eigenvalues in [0.5, 2]."""
    rng = np.random.default_rng([seed, 123])
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    h = xp.asarray((q * rng.uniform(0.5, 2.0, D)) @ q.T)  # (D, D)
    v_star = xp.asarray(rng.standard_normal(D))  # (D,)
    params = {k: xp.asarray(rng.standard_normal(s)) for k, s in SHAPES.items()}

    def loss_fn(p):
        r = flat(p) - v_star
        return 0.5 * float(r @ (h @ r))

    def grad_fn(p):
        return h @ (flat(p) - v_star)  # (D,)

    return params, loss_fn, grad_fn


def cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
