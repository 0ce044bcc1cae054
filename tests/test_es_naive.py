"""Tests for the float part of es_naive.py: estimator statistics (raw and rank-shaped), the
ES = SPSA identity, memory honesty, determinism and the demo. Formulas from the brief (§C.2).

On a quadratic f(θ) = ½ (θ − θ*)ᵀ H (θ − θ*) the smoothed gradient ∇J_σ equals ∇f, and an
antithetic pair gives exactly (εᵀg) ε, so raw-fitness ES with P pairs has E[g_hat] = g and
E‖g_hat − g‖² = (d + 1)/P · ‖g‖² for any σ.
"""
import tracemalloc

import numpy as np
import pytest

import es_naive
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
    xp = es_naive.get_xp(params["a"])
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


def es_samples(pairs, k_samples, shaping, sigma=0.05):
    """k_samples independent ES estimates (rows, flattened) and the true gradient."""
    params, loss_fn, grad_fn = make_quadratic()
    cfg = es_naive.Config(pairs=pairs, sigma=sigma, shaping=shaping, seed=8)
    rows = [flat(es_naive.estimate_grad(loss_fn, params, cfg, step)[0])
            for step in range(k_samples)]
    return np.stack(rows), grad_fn(params)  # (K, D), (D,)


def test_raw_es_mean_is_unbiased():
    """Eq. 3 with raw fitness: the mean of K = 2000 one-pair estimates matches ∇f.
    Tolerance: cosine ≥ 0.95, relative error ≤ 3 · sqrt((d + 1)/K) (3 standard errors)."""
    k = 2000
    g_hat, g = es_samples(pairs=1, k_samples=k, shaping="raw")
    mean = g_hat.mean(axis=0)
    cos = cosine(mean, g)
    rel = float(np.linalg.norm(mean - g) / np.linalg.norm(g))
    bound = 3 * np.sqrt((D + 1) / k)
    assert cos >= 0.95 and rel <= bound, f"cos {cos:.4f} (need ≥ 0.95), rel err {rel:.4f} " \
                                         f"(need ≤ {bound:.4f})"


def test_rank_shaped_es_is_positively_aligned():
    """Eq. 4 (centred ranks) is biased: it is not an estimate of ∇f's size. It should still
    point the right way. K = 1000 estimates with P = 8 pairs. Tolerances: the mean has
    cosine ≥ 0.9 with ∇f, and ≥ 90% of single estimates have ĝᵀg > 0."""
    g_hat, g = es_samples(pairs=8, k_samples=1000, shaping="centered_rank")
    cos = cosine(g_hat.mean(axis=0), g)
    positive = float(np.mean(g_hat @ g > 0))
    assert cos >= 0.9 and positive >= 0.9, \
        f"cos(mean, g) {cos:.4f} (need ≥ 0.9), {100 * positive:.1f}% positive (need ≥ 90%)"


def test_rank_shaping_ignores_loss_scale_hence_biased():
    """Centred ranks give the same g for L and for any increasing transform of L (here
    exp(3L) + 7), bit for bit, whereas ∇(10 f) = 10 ∇f: so ranks cannot be unbiased.
    Raw fitness scales with the loss (tolerance rtol 1e-12)."""
    params, loss_fn, _ = make_quadratic()
    cfg = es_naive.Config(pairs=8, seed=3)
    noise = es_naive.sample_noise(params, cfg, step=0)
    losses = es_naive.population_losses(loss_fn, params, noise, cfg)  # (P, 2)
    ranked = es_naive.es_grad(losses, noise, cfg)
    ranked_t = es_naive.es_grad(np.exp(3 * losses) + 7, noise, cfg)
    raw_cfg = es_naive.Config(pairs=8, seed=3, shaping="raw")
    raw = es_naive.es_grad(losses, noise, raw_cfg)
    raw_10 = es_naive.es_grad(10 * losses, noise, raw_cfg)
    for name in params:
        assert np.array_equal(ranked[name], ranked_t[name]), f"{name}: ranks changed"
        assert np.allclose(raw_10[name], 10 * raw[name], rtol=1e-12), f"{name}: raw not linear"


def test_raw_es_mse_falls_as_one_over_pairs():
    """§C.2: E‖ĝ − g‖² = (d + 1)/P · ‖g‖². K = 1000 estimates each for P = 1 and P = 8.
    Tolerance: each MSE within [0.8, 1.25] × formula (≈ 4 standard errors at P = 1) and
    the ratio MSE(P=1)/MSE(P=8) in [5, 12] (formula: 8)."""
    mse = {}
    for pairs in (1, 8):
        g_hat, g = es_samples(pairs=pairs, k_samples=1000, shaping="raw")
        mse[pairs] = float(((g_hat - g) ** 2).sum(axis=1).mean())
        formula = (D + 1) / pairs * float(g @ g)
        ratio = mse[pairs] / formula
        assert 0.8 <= ratio <= 1.25, \
            f"P = {pairs}: MSE {mse[pairs]:.3f} vs formula {formula:.3f} (ratio {ratio:.3f})"
    ratio = mse[1] / mse[8]
    assert 5 <= ratio <= 12, f"MSE ratio P=1/P=8 = {ratio:.2f}, expected ≈ 8 (5..12)"


def test_antithetic_raw_es_equals_p_direction_spsa():
    """Brief §1 and §C.2(4): raw antithetic ES with P pairs and σ = ε is MeZO's n-SPSA with
    n = P (same keys, so same directions). Tolerance: rtol 1e-6 (the two round θ ± εz
    differently: MeZO perturbs in place, ES builds each member afresh)."""
    params, loss_fn, _ = make_quadratic()
    es_cfg = es_naive.Config(pairs=4, sigma=1e-3, shaping="raw", seed=11)
    mezo_cfg = mezo.Config(eps=1e-3, n_dirs=4, seed=11)
    g_es, _ = es_naive.estimate_grad(loss_fn, params, es_cfg, step=5)
    g_mezo, _ = mezo.estimate_grad(loss_fn, params, mezo_cfg, step=5)
    for name in params:
        err = float(np.abs(g_es[name] - g_mezo[name]).max())
        ok = np.allclose(g_es[name], g_mezo[name], rtol=1e-6, atol=0)
        assert ok, f"{name}: max |g_es − g_mezo| = {err:.2e}"


def test_centered_ranks_map_to_half_interval():
    """Eq. 4 on a known input: ranks [2, 0, 1, 3] of 4 members -> rank/3 − 0.5."""
    got = es_naive.centered_ranks(np.array([[3.0, 1.0], [2.0, 10.0]]))
    want = np.array([[1 / 6, -0.5], [-1 / 6, 0.5]])
    assert np.allclose(got, want, atol=1e-15), f"got {got}"


def test_noise_and_adam_state_are_parameter_sized():
    """The docstring's memory claim for naive ES: the noise of one step is P·d floats (one full
    copy of θ per pair; tracemalloc peak in [1, 1.25] × P·d·8 bytes) and Adam keeps 2d floats."""
    params = {"a": np.zeros((100, 100)), "b": np.zeros(1000)}  # d = 11,000
    d = 11_000
    cfg = es_naive.Config(pairs=16)
    tracemalloc.start()
    noise = es_naive.sample_noise(params, cfg, step=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_noise = sum(v.size for v in noise.values())
    state = es_naive.init_state(params, cfg)
    n_adam = sum(v.size for k in ("m", "v") for v in state[k].values())
    assert n_noise == cfg.pairs * d and n_adam == 2 * d, f"noise {n_noise}, Adam {n_adam}"
    ratio = peak / (cfg.pairs * d * 8)
    assert 1 <= ratio <= 1.25, f"noise peak memory = {ratio:.2f} × P·d float64 (need 1..1.25)"


def run_steps(xp, seed, n_steps=5):
    params, loss_fn, _ = make_quadratic(xp)
    cfg = es_naive.Config(pairs=4, seed=seed)
    state = es_naive.init_state(params, cfg)
    for _ in range(n_steps):
        params, state, _ = es_naive.train_step(loss_fn, params, state, cfg)
    return flat(params)


def test_same_seed_is_bit_identical(xp):
    """Same seed → bit-identical weights after 5 steps; another seed → different weights."""
    a, b, c = run_steps(xp, seed=0), run_steps(xp, seed=0), run_steps(xp, seed=1)
    assert xp.array_equal(a, b), "two runs with seed 0 differ"
    assert not xp.array_equal(a, c), "seeds 0 and 1 gave the same weights"


def test_demo_converges():
    """The __main__ demo (XOR, 2-8-1 MLP, d = 33): in 200 steps the cross-entropy falls by
    ≥ 100× and below 0.01 nats (chance level is ln 2 = 0.693)."""
    first, last = es_naive.demo(es_naive.Config(), steps=200, log_every=10_000)
    assert last <= first / 100 and last < 0.01, \
        f"loss {first:.4f} -> {last:.3e} (factor {first / last:.1e})"
