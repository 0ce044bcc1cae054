"""Tests for the float part of mezo.py: estimator statistics, restore drift, memory, state,
determinism and the demo. Formulas from the brief (§C.2, §C.4); tolerances stated per test.

On a quadratic f(θ) = ½ (θ − θ*)ᵀ H (θ − θ*) the central difference is exact, so one SPSA
estimate is (zᵀg) z with g = ∇f: E[ĝ] = g and E‖ĝ − g‖² = (d + 1)/n · ‖g‖², with no ε bias.
"""
import tracemalloc

import numpy as np
import pytest

import mezo

SHAPES = {"a": (4, 5), "b": (10,)}  # two tensors, so the per-tensor noise keys matter
D = 30  # total parameter count


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module under test; the cupy case is skipped without a usable GPU."""
    if request.param == "numpy":
        return np
    cupy = pytest.importorskip("cupy")
    if not cupy.cuda.is_available():
        pytest.skip("cupy is installed but no GPU is usable")
    return cupy


def flat(params):
    """All tensors as one vector, in the sorted-key order the noise uses."""
    xp = mezo.get_xp(params["a"])
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


def spsa_samples(n_dirs, k_samples, eps=1e-3):
    """k_samples independent n-SPSA estimates (rows, flattened) and the true gradient."""
    params, loss_fn, grad_fn = make_quadratic()
    cfg = mezo.Config(eps=eps, n_dirs=n_dirs, seed=7)
    rows = [flat(mezo.estimate_grad(loss_fn, params, cfg, step)[0]) for step in range(k_samples)]
    return np.stack(rows), grad_fn(params)  # (K, D), (D,)


def test_spsa_mean_is_unbiased():
    """Eq. 1: the mean of K = 2000 one-direction estimates matches ∇f.
    Tolerance: cosine ≥ 0.95, relative error ≤ 3 · sqrt((d + 1)/K) (3 standard errors)."""
    k = 2000
    g_hat, g = spsa_samples(n_dirs=1, k_samples=k)
    mean = g_hat.mean(axis=0)
    cos = cosine(mean, g)
    rel = float(np.linalg.norm(mean - g) / np.linalg.norm(g))
    bound = 3 * np.sqrt((D + 1) / k)
    assert cos >= 0.95 and rel <= bound, f"cos {cos:.4f} (need ≥ 0.95), rel err {rel:.4f} " \
                                         f"(need ≤ {bound:.4f})"


def test_spsa_is_a_descent_direction():
    """§C.2: ĝᵀg = (zᵀg)² ≥ 0 for every single estimate (tolerance: 1e-9 · ‖g‖² for rounding)."""
    g_hat, g = spsa_samples(n_dirs=1, k_samples=200)
    worst = float((g_hat @ g).min())
    assert worst >= -1e-9 * float(g @ g), f"min ĝᵀg = {worst:.3e} < 0"


def test_spsa_mse_falls_as_one_over_n():
    """§C.2: E‖ĝ − g‖² = (d + 1)/n · ‖g‖². K = 1000 estimates each for n = 1 and n = 8.
    Tolerance: each MSE within [0.8, 1.25] × formula (≈ 4 standard errors at n = 1) and
    the ratio MSE(n=1)/MSE(n=8) in [5, 12] (formula: 8)."""
    mse = {}
    for n in (1, 8):
        g_hat, g = spsa_samples(n_dirs=n, k_samples=1000)
        mse[n] = float(((g_hat - g) ** 2).sum(axis=1).mean())
        formula = (D + 1) / n * float(g @ g)
        assert 0.8 <= mse[n] / formula <= 1.25, \
            f"n = {n}: MSE {mse[n]:.3f} vs formula {formula:.3f} (ratio {mse[n] / formula:.3f})"
    ratio = mse[1] / mse[8]
    assert 5 <= ratio <= 12, f"MSE ratio n=1/n=8 = {ratio:.2f}, expected ≈ 8 (5..12)"


def test_perturb_uses_bit_identical_regenerated_z(xp):
    """The z that perturb_ adds equals the z regenerated from the same key, bit for bit.
    Starting from θ = 0 the perturbed tensor is exactly scale·z (0 + x is exact)."""
    params = {k: xp.zeros(s, dtype=np.float32) for k, s in SHAPES.items()}
    mezo.perturb_(params, 1e-3, seed=3, step=5, direction=2)
    for tensor_id, name in enumerate(sorted(params)):
        z1 = mezo.tensor_noise(params[name], 3, 5, 2, tensor_id)
        z2 = mezo.tensor_noise(params[name], 3, 5, 2, tensor_id)
        assert xp.array_equal(z1, z2), f"{name}: regenerated z differs between two draws"
        expected = np.float32(1e-3) * z1
        assert xp.array_equal(params[name], expected), f"{name}: perturb_ used another z"


def test_noise_keys_give_distinct_directions():
    """Changing any key word (seed, step, direction, tensor) changes z; no key collides with
    default_rng(seed), the zero-padding trap the stream tag avoids."""
    p = np.zeros(64)
    keys = [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    draws = [mezo.tensor_noise(p, *key) for key in keys]
    draws.append(np.random.default_rng(0).standard_normal(64))
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            corr = abs(cosine(draws[i], draws[j]))
            assert corr < 0.5, f"draws {i} and {j} are correlated: |cos| = {corr:.3f}"


def drift_stats(params, theta0):
    """(rms, max, fraction exactly restored) of params − theta0 over all tensors (§C.4)."""
    diff = np.concatenate([(params[k] - theta0[k]).ravel() for k in sorted(params)])
    diff = diff.astype(np.float64)
    return float(np.sqrt(np.mean(diff ** 2))), float(np.abs(diff).max()), float(np.mean(diff == 0))


def test_restore_drift_is_a_few_ulp():
    """§C.4: +εz, −2εz, +εz (Alg. 1 lines 2-4) restores float32 θ up to rounding.
    d = 100,000 weights of scale 0.1, ε = 1e-3, measured as §C.4 does (rms, max, % exact).
    Tolerances: after one cycle |drift| ≤ 2 ulp of |θ| + 2ε|z| elementwise (three rounded
    adds of ½ ulp each); after 100 cycles rms ≤ 20 × the one-cycle rms (a random walk grows
    like sqrt(100) = 10, a systematic drift like 100) and rms ≤ ε/1000."""
    rng = np.random.default_rng(0)
    theta0 = {"w": (0.1 * rng.standard_normal((300, 300))).astype(np.float32),
              "b": (0.1 * rng.standard_normal(10_000)).astype(np.float32)}
    params = {k: v.copy() for k, v in theta0.items()}
    cfg = mezo.Config(eps=1e-3, seed=1)
    mezo.projected_grads(lambda p: 0.0, params, cfg, step=0)
    for tensor_id, name in enumerate(sorted(params)):
        z = mezo.tensor_noise(params[name], cfg.seed, 0, 0, tensor_id)
        drift = np.abs(params[name] - theta0[name])
        bound = 2 * np.spacing(np.abs(theta0[name]) + 2 * cfg.eps * np.abs(z))
        assert (drift <= bound).all(), f"{name}: one-cycle drift {drift.max():.2e} over 2 ulp"
    rms_1, _, _ = drift_stats(params, theta0)
    for step in range(1, 100):
        mezo.projected_grads(lambda p: 0.0, params, cfg, step)
    rms, worst, exact = drift_stats(params, theta0)
    msg = f"100 cycles: rms {rms:.2e} (1 cycle: {rms_1:.2e}), max {worst:.2e}, " \
          f"{100 * exact:.1f}% exactly restored"
    assert rms <= 20 * rms_1 and rms <= cfg.eps / 1000, msg


def test_memory_is_one_largest_tensor():
    """Docstring claim: a MeZO step needs one extra buffer the size of the largest tensor.
    Four float64 tensors of 2 MB each; tracemalloc sees NumPy's allocations. Tolerance: peak
    extra memory ≤ 1.25 × one tensor (storing z for all tensors would be 4×, two live
    buffers 2×)."""
    params = {f"t{i}": np.ones(250_000) for i in range(4)}
    tensor_bytes = params["t0"].nbytes

    def loss_fn(p):  # allocates nothing of parameter size
        return sum(float(v @ v) for v in p.values())

    cfg, state = mezo.Config(n_dirs=2), mezo.init_state(params, mezo.Config())
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    mezo.train_step(loss_fn, params, state, cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    extra = (peak - base) / tensor_bytes
    assert extra <= 1.25, f"peak extra memory = {extra:.2f} tensors (allowed 1.25)"


def test_state_holds_no_parameter_sized_arrays():
    """MeZO keeps no per-parameter state: after three steps the state holds only scalars and
    the params dict holds only the original tensors."""
    params, loss_fn, _ = make_quadratic()
    cfg = mezo.Config(n_dirs=2)
    state = mezo.init_state(params, cfg)
    for _ in range(3):
        params, state, stats = mezo.train_step(loss_fn, params, state, cfg)
    arrays = [k for k, v in state.items() if hasattr(v, "shape") or isinstance(v, (list, dict))]
    assert not arrays, f"state holds containers/arrays: {arrays}"
    assert sorted(params) == sorted(SHAPES), f"params gained keys: {sorted(params)}"
    assert state == {"step": 3} and len(stats["pg"]) == 2, f"state {state}, stats {stats}"


def run_steps(xp, seed, n_steps=5):
    params, loss_fn, _ = make_quadratic(xp)
    cfg = mezo.Config(lr=1e-3, n_dirs=2, seed=seed)
    state = mezo.init_state(params, cfg)
    for _ in range(n_steps):
        params, state, _ = mezo.train_step(loss_fn, params, state, cfg)
    return flat(params)


def test_same_seed_is_bit_identical(xp):
    """Same seed → bit-identical weights after 5 steps; another seed → different weights."""
    a, b, c = run_steps(xp, seed=0), run_steps(xp, seed=0), run_steps(xp, seed=1)
    assert xp.array_equal(a, b), "two runs with seed 0 differ"
    assert not xp.array_equal(a, c), "seeds 0 and 1 gave the same weights"


def test_demo_converges():
    """The __main__ demo (least squares, d = 101, 2000 steps): the loss falls by ≥ 1e4× and
    ends within 1.5× of the closed-form least-squares minimum."""
    cfg = mezo.Config()
    first, last = mezo.demo(cfg, steps=2000, log_every=10_000)
    best = mezo.least_squares_loss(*mezo.make_regression(cfg.seed))
    assert last <= first / 1e4 and last <= 1.5 * best, \
        f"loss {first:.3e} -> {last:.3e} (factor {first / last:.1e}), minimum {best:.3e}"
