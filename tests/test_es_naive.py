"""Tests for es_naive.py. Integer part (the LM method): bit-exact equivalence with EGGROLL when
handed EGGROLL's materialised noise, the full-rank noise, the threshold, chunking, determinism
and a short run that learns. Float part: the estimator on a quadratic (exact per estimate,
unbiased and 1/P-efficient over estimates), rank shaping, the ES = SPSA identity, memory.

On a quadratic L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*) an antithetic pair's difference is exact:
L(θ + σε) − L(θ − σε) = 2σ εᵀ∇L, so raw-fitness ES with P pairs gives ĝ = (1/P) Σ_k (ε_kᵀ g) ε_k
(minus sign: ES ascends f = −L), whose mean is g and whose E‖ĝ − g‖² is (d + 1)/P · ‖g‖².
"""
import dataclasses
import tracemalloc

import numpy as np
import pytest

import eggroll
import es_naive
import int_rnn_lm as lm
import mezo
import train
from conftest import D, ONE, cosine, flat, make_quadratic  # noqa: E402

# -----------------------------------------------------------------------------
# float part: the estimator on the quadratic


def member_fitness(loss_fn):
    """fitness_fn for float_es_gradient from a per-member loss: member 2k evaluates
    θ + σ ε_k, member 2k + 1 θ − σ ε_k, each on its own (Salimans et al.'s workers); f = −L."""
    def fitness(params, noise, sigma):
        P = len(next(iter(noise.values())))
        return np.array([-loss_fn({n: p + s * sigma * noise[n][k] for n, p in params.items()})
                         for k in range(P) for s in (1.0, -1.0)])
    return fitness


def es_samples(pairs, k_samples, shaping, sigma=0.05):
    """k_samples independent estimates of ∇L (rows, flattened), the noise of each, and ∇L."""
    params, loss_fn, grad_fn = make_quadratic()
    fcfg = es_naive.FloatConfig(population=2 * pairs, sigma=sigma, shaping=shaping)
    rows = [flat({k: -v for k, v in es_naive.float_es_gradient(
        member_fitness(loss_fn), params, 8, t, fcfg)[0].items()}) for t in range(k_samples)]
    return np.stack(rows), grad_fn(params)  # (K, D), (D,)


def test_raw_estimate_is_exactly_the_antithetic_projection():
    """On the quadratic, each raw estimate equals (1/P) Σ_k (ε_kᵀ g) ε_k with the draws' own ε_k
    (rtol 1e-9: only float rounding separates them), for P = 1 and P = 5."""
    params, loss_fn, grad_fn = make_quadratic()
    g = grad_fn(params)
    for pairs in (1, 5):
        fcfg = es_naive.FloatConfig(population=2 * pairs, sigma=0.05, shaping="raw")
        est, _ = es_naive.float_es_gradient(member_fitness(loss_fn), params, 3, 7, fcfg)
        eps = np.stack([flat({n: es_naive.float_pair_noise(3, 7, pid, params[n].shape, [k],
                                                           fcfg, np)[0]
                              for pid, n in enumerate(params)}) for k in range(pairs)])
        want = (eps @ g) @ eps / pairs                                         # (D,)
        np.testing.assert_allclose(-flat(est), want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def test_raw_es_mean_is_unbiased():
    """Raw fitness: the mean of K = 2000 one-pair estimates matches ∇L. Tolerance: relative
    error ≤ 3 · sqrt((d + 1)/K) (3 standard errors) and cosine ≥ 0.95."""
    k = 2000
    g_hat, g = es_samples(pairs=1, k_samples=k, shaping="raw")
    mean = g_hat.mean(axis=0)
    cos = cosine(mean, g)
    rel = float(np.linalg.norm(mean - g) / np.linalg.norm(g))
    bound = 3 * np.sqrt((D + 1) / k)
    assert cos >= 0.95 and rel <= bound, f"cos {cos:.4f} (need ≥ 0.95), rel err {rel:.4f} " \
                                         f"(need ≤ {bound:.4f})"


def test_rank_shaped_es_is_positively_aligned():
    """Centred ranks are biased (not an estimate of ∇L's size) but point the right way: K = 1000
    estimates with P = 8 pairs; the mean has cosine ≥ 0.9 with ∇L and ≥ 90 % of single
    estimates have ĝᵀg > 0."""
    g_hat, g = es_samples(pairs=8, k_samples=1000, shaping="centered_rank")
    cos = cosine(g_hat.mean(axis=0), g)
    positive = float(np.mean(g_hat @ g > 0))
    assert cos >= 0.9 and positive >= 0.9, \
        f"cos(mean, g) {cos:.4f} (need ≥ 0.9), {100 * positive:.1f}% positive (need ≥ 90%)"


def test_rank_shaping_ignores_loss_scale_hence_biased():
    """Centred ranks give the same g for f and for any increasing transform of f (f³ + 7),
    bit for bit, whereas the raw estimate scales with f (rtol 1e-12)."""
    params, loss_fn, _ = make_quadratic()
    f = member_fitness(loss_fn)
    out = {}
    for shaping in ("centered_rank", "raw"):
        fcfg = es_naive.FloatConfig(population=16, shaping=shaping)
        for name, fn in (("f", f), ("exp", lambda *a: f(*a) ** 3 + 7),
                         ("10f", lambda *a: 10 * f(*a))):
            out[shaping, name] = es_naive.float_es_gradient(fn, params, 3, 0, fcfg)[0]
    for k in params:
        assert np.array_equal(out["centered_rank", "f"][k], out["centered_rank", "exp"][k]), k
        np.testing.assert_allclose(out["raw", "10f"][k], 10 * out["raw", "f"][k], rtol=1e-12)


def test_raw_es_mse_falls_as_one_over_pairs():
    """E‖ĝ − g‖² = (d + 1)/P · ‖g‖², K = 1000 estimates each for P = 1 and P = 8. Tolerance:
    each MSE within [0.8, 1.25] × formula (≈ 4 standard errors at P = 1) and the ratio
    MSE(P=1)/MSE(P=8) in [5, 12] (formula: 8)."""
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
    """Raw antithetic ES with P pairs and σ = ε is MeZO's n-SPSA with n = P: the same keys give
    the same directions. Tolerance rtol 1e-6 (MeZO perturbs in place, ES builds each member
    afresh, so they round θ ± εz differently)."""
    params, loss_fn, _ = make_quadratic()
    es_cfg = es_naive.FloatConfig(population=8, sigma=1e-3, shaping="raw")
    mezo_cfg = mezo.FloatConfig(eps=1e-3, n_dirs=4, seed=11)
    g_es, _ = es_naive.float_es_gradient(member_fitness(loss_fn), params, 11, 5, es_cfg)
    g_mezo, _ = mezo.estimate_grad(loss_fn, params, mezo_cfg, step=5)
    for name in params:
        np.testing.assert_allclose(-g_es[name], g_mezo[name], rtol=1e-6, atol=0, err_msg=name)


def test_centered_ranks_map_to_half_interval():
    """Ranks [2, 0, 1, 3] of 4 members -> rank/3 − 0.5."""
    got = es_naive.shape_fitness(np.array([3.0, 1.0, 2.0, 10.0]), "centered_rank")
    np.testing.assert_allclose(got, [1 / 6, -0.5, -1 / 6, 0.5], atol=1e-15)


def test_float_noise_is_parameter_sized_per_pair():
    """The naive part: one step's noise is P·d floats, a full copy of θ per pair (tracemalloc
    peak in [1, 2] × P·d·8 bytes: the pairs' draws and their stacked copy), where EGGROLL's is
    r (m + n) per matrix."""
    params = {"a": np.zeros((100, 100)), "b": np.zeros(1000)}  # d = 11,000
    fcfg = es_naive.FloatConfig(population=32)
    tracemalloc.start()
    noise = {n: es_naive.float_pair_noise(0, 0, pid, p.shape, range(16), fcfg, np)
             for pid, (n, p) in enumerate(params.items())}
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(v.size for v in noise.values()) == 16 * 11_000
    ratio = peak / (16 * 11_000 * 8)
    assert 1 <= ratio <= 2, f"noise peak memory = {ratio:.2f} × P·d float64 (need 1..2)"
    A, B = eggroll.float_pair_noise(0, 0, 0, (100, 100), range(16), eggroll.FloatConfig(), np)
    assert A.size + B.size == 16 * 200


def test_demo_converges():
    """The __main__ demo (the same regression as eggroll.py's): in 150 steps the mean squared
    error falls by >= 10x."""
    first, last = es_naive.demo(es_naive.FloatConfig(steps=150), log_every=10**6)
    assert last <= first / 10, f"mse {first:.4f} -> {last:.4f}"

# -----------------------------------------------------------------------------
# integer part: naive ES on the LM


TRAIN, VAL = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))


def use_eggroll_noise(monkeypatch, ecfg):
    """Hand es_naive EGGROLL's noise for the same keys, materialised: E_k = A_k B_k^T (int32) for
    a matrix, a_k * b_k for a vector, with EGGROLL's shift 4 + σ̂ and std(Z) 256 sqrt(P)."""
    def direction_noise(seed, t, cfg, pid, shape, pairs, xp):
        nz = eggroll.direction_noise(seed, t, ecfg, pid, shape, pairs, xp)
        return lm.LowRank(nz[0], nz[1], 0).materialise() if len(shape) == 2 else nz
    monkeypatch.setattr(es_naive, "direction_noise", direction_noise)
    monkeypatch.setattr(es_naive, "perturb_shift", eggroll.perturb_shift)
    monkeypatch.setattr(es_naive, "z_std", lambda shape, cfg: eggroll.z_std(shape, ecfg))


@pytest.mark.parametrize("update,signal,sampling", [("threshold", "sign", "antithetic"),
                                                     ("sgd", "zscore", "antithetic"),
                                                     ("sgd", "zscore", "independent")])
def test_materialised_eggroll_noise_gives_eggroll_bit_for_bit(update, signal, sampling,
                                                              monkeypatch):
    """es_naive handed EGGROLL's noise computes exactly EGGROLL's fitnesses, hidden states,
    weight fractions (sgd) and updated params at steps 0, 1, 2 and 60, with different member
    chunking on the two sides, for antithetic pairs and for independent members (the two
    files implement --sampling the same way). Along the way the thresholds ⌊256 z_{1-α/2} √8⌋
    are 0, 13, 26, 458 (with es_naive's own s = 16 they would be 16x smaller and the updates
    would differ). Tolerance: none (integers)."""
    mcfg = lm.ModelConfig(16, 2)
    schedule = dict(update=update, signal=signal, sampling=sampling,
                    alpha_decay=0.015 * eggroll.REFERENCE_STEP / (16 * 16))
    ecfg = eggroll.Config(population=16, group_size=4, rank=1, time_chunk=7, member_chunk=0,
                          **schedule)
    cfg = es_naive.Config(population=16, group_size=4, time_chunk=7, member_chunk=6, **schedule)
    use_eggroll_noise(monkeypatch, ecfg)
    stream = train.TrainStream(TRAIN[:50_000], es_naive.num_sequences(cfg), 16)
    p_egg = lm.init_params(mcfg, 5)
    p_es = {k: v.copy() for k, v in p_egg.items()}
    s_egg, s_es = eggroll.init(p_egg, ecfg, mcfg, 5, ONE), es_naive.init(p_es, cfg, mcfg, 5, ONE)
    thresholds = []
    for t in (0, 1, 2, 60):
        tokens, reset = stream.batch(t)
        member_tokens = tokens[np.arange(16) // 4]
        hidden = s_es["hidden"] if not reset else lm.zero_hidden(mcfg, 16)
        f_egg, h_egg = eggroll.population_fitness(p_egg, mcfg, member_tokens, hidden,
                                                  eggroll.noise_source(5, t, ecfg, mcfg, np),
                                                  ecfg, 0)
        f_es, h_es = es_naive.population_fitness(p_es, mcfg, member_tokens, hidden,
                                                 es_naive.noise_source(5, t, cfg, mcfg, np), cfg, 0)
        np.testing.assert_array_equal(f_es, f_egg, err_msg=f"step {t}: fitnesses differ")
        np.testing.assert_array_equal(h_es, h_egg, err_msg=f"step {t}: hidden states differ")
        assert len(np.unique(f_egg)) > 8, f"step {t}: degenerate fitnesses {f_egg}"
        p_egg, s_egg, st_egg = eggroll.step(p_egg, s_egg, (tokens, reset), t, ecfg, mcfg, 5, ONE)
        p_es, s_es, st_es = es_naive.step(p_es, s_es, (tokens, reset), t, cfg, mcfg, 5, ONE)
        assert set(p_es) == set(p_egg) == set(lm.param_shapes(mcfg)), sorted(p_egg)
        for k in p_egg:
            np.testing.assert_array_equal(p_es[k], p_egg[k], err_msg=f"step {t}: param {k}")
        assert set(s_es) == set(s_egg) and "hidden" in s_egg, sorted(s_egg)
        for k in s_egg:
            np.testing.assert_array_equal(s_es[k], s_egg[k], err_msg=f"step {t}: state {k}")
        assert st_es == st_egg, f"step {t}: stats {st_es} vs {st_egg}"
        thresholds.append(eggroll.z_threshold(st_egg["alpha"], eggroll.z_std((16, 16), ecfg)))
    if signal == "sign":
        assert thresholds == [0, 13, 26, 458], f"thresholds {thresholds}"
    moved = sum(int((p_es[k] != lm.init_params(mcfg, 5)[k]).sum()) for k in p_es)
    assert moved > 1000, f"only {moved} weights moved in 4 steps: the test would be vacuous"


def test_full_rank_noise_is_antithetic_full_rank_and_16_scale():
    """Every pair's E_k (64 x 48) has full rank 48 (EGGROLL's: 1) and std 16 ± 1 (int8 q4
    normals), member 2k gets +E_k and 2k+1 gets -E_k, and a slice of pairs drawn alone equals
    the same rows of the whole draw."""
    cfg = es_naive.Config(population=8, group_size=2, signal="sign", sampling="antithetic")
    E = es_naive.direction_noise(0, 3, cfg, 5, (64, 48), np.arange(4), np)      # (4, 64, 48) int8
    ranks = [int(np.linalg.matrix_rank(e.astype(np.float64))) for e in E]
    assert ranks == [48] * 4, f"ranks {ranks}"
    assert 15 <= E.std() <= 17 and es_naive.z_std((64, 48), cfg) == 16 * 2, f"std {E.std():.2f}"
    members = es_naive.member_perturbation({"w": E}, cfg)["w"]
    np.testing.assert_array_equal(members.E[0::2], E)
    np.testing.assert_array_equal(members.E[1::2], -E)
    assert members.shift == cfg.sigma_shift
    v = es_naive.direction_noise(0, 3, cfg, 6, (48,), np.arange(4), np)          # (4, 48) int8
    assert es_naive.member_perturbation({"v": v}, cfg)["v"].shift == cfg.sigma_shift_vectors
    assert cfg.sigma_shift_vectors == cfg.sigma_shift + 1                        # half the sigma
    np.testing.assert_array_equal(es_naive.direction_noise(0, 3, cfg, 5, (64, 48), np.arange(2, 4),
                                                      np), E[2:])
    assert (E[0] != E[1]).any(), "different pairs must get different noise"


def test_threshold_moves_about_alpha_of_the_weights_with_int8_noise():
    """Under random signs F (P = 1024 pairs), the fraction of |Z| >= the threshold is alpha
    within 25 % + 0.003, with std(Z) = 16 sqrt(P) (the same z-test EGGROLL runs with 256)."""
    cfg = es_naive.Config(population=2048, group_size=2, member_chunk=512, signal="sign",
                          sampling="antithetic")
    mcfg = lm.ModelConfig(16, 1)
    noise = es_naive.noise_source(1, 0, cfg, mcfg, np)
    F = np.random.default_rng(1).choice([-1, 1], 1024).astype(np.int8)
    z = np.concatenate([es_naive.accumulate_z(F, noise, name, cfg).ravel()
                        for name in lm.param_shapes(mcfg)])
    for alpha in (0.5, 0.1, 0.01):
        frac = float((np.abs(z) >= es_naive.z_threshold(alpha, es_naive.z_std(None, cfg))).mean())
        assert abs(frac - alpha) < 0.25 * alpha + 0.003, f"alpha {alpha}: moved {frac:.4f}"


def run_lm_steps(seed, member_chunk, n_steps=3):
    mcfg = lm.ModelConfig(16, 1)
    cfg = es_naive.Config(population=12, group_size=4, time_chunk=5, member_chunk=member_chunk)
    stream = train.TrainStream(TRAIN[:50_000], es_naive.num_sequences(cfg), 12)
    params = lm.init_params(mcfg, 0)
    state = es_naive.init(params, cfg, mcfg, seed, ONE)
    for t in range(n_steps):
        params, state, _ = es_naive.step(params, state, stream.batch(t), t, cfg, mcfg, seed, ONE)
    return params, state


def test_lm_step_is_deterministic_and_chunking_changes_nothing():
    """Same seed → bit-identical params and hidden state after 3 steps, whatever member_chunk
    (0 = all 12 members at once, 4, 2); another seed → different params."""
    a, sa = run_lm_steps(0, 0)
    for chunk in (4, 2):
        b, sb = run_lm_steps(0, chunk)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"member_chunk {chunk}: {k}")
        np.testing.assert_array_equal(sa["hidden"], sb["hidden"])
    c, _ = run_lm_steps(1, 0)
    assert any((a[k] != c[k]).any() for k in a), "seeds 0 and 1 gave the same params"


def test_short_lm_run_lowers_val_bits_per_byte():
    """D = 32, N = 32 members, 32-byte windows, 60 steps (~4 s): val bits/byte on 16 fixed
    64-byte windows falls by >= 0.8 from the untrained ~8.6."""
    mcfg = lm.ModelConfig(32, 1)
    cfg = es_naive.Config(population=32, group_size=2, member_chunk=16, alpha_decay=0.06)
    stream = train.TrainStream(TRAIN, es_naive.num_sequences(cfg), 32)
    windows = train.val_windows(VAL, 16, 64)
    params = lm.init_params(mcfg, 0)
    state = es_naive.init(params, cfg, mcfg, 0, ONE)
    before = lm.evaluate(params, mcfg, windows)
    for t in range(60):
        params, state, stats = es_naive.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    after = lm.evaluate(params, mcfg, windows)
    assert after <= before - 0.8 and after < 7.5, \
        f"val bits/byte {before:.3f} -> {after:.3f} (need a 0.8 drop, below uniform 8.0 - 0.5)"
    assert stats["member_tokens"] == 32 * 32, stats


@pytest.mark.parametrize("bad", [dict(population=7), dict(population=8, group_size=3),
                                 dict(member_chunk=3), dict(member_chunk=-2), dict(time_chunk=0),
                                 dict(sigma_shift=-1), dict(alpha_decay=-0.1),
                                 dict(update="adam"), dict(lr=0), dict(sampling="mirrored"),
                                 dict(population=2**27, sampling="independent")])
def test_check_config_rejects(bad):
    with pytest.raises(ValueError):
        es_naive.check_config(es_naive.Config(**bad))


def test_naive_es_and_eggroll_share_their_estimator_defaults():
    """The two ES files differ in the noise, not in the estimator: the same sampling, groups,
    signal, update, σ̂ and lr, and their Config fields the same defaults; population, α decay
    and chunking are each method's tuning, in its DEFAULTS (sized for its cost per member), and
    naive ES's defaults on either device pass its own checks."""
    shared = ("sampling", "group_size", "signal", "update", "sigma_shift", "sigma_shift_vectors",
              "lr", "noise_reuse", "time_chunk")
    assert dataclasses.asdict(es_naive.Config()) == {
        k: v for k, v in dataclasses.asdict(eggroll.Config()).items() if k != "rank"}
    naive, egg = train.default_config(es_naive, "cpu"), train.default_config(eggroll, "cpu")
    assert {k: getattr(naive, k) for k in shared} == {k: getattr(egg, k) for k in shared}
    tuned = ("population", "alpha_decay", "member_chunk")
    assert {k: getattr(naive, k) for k in tuned} == dict(population=128, alpha_decay=0.06,
                                                         member_chunk=64)
    for device in ("cpu", "cuda"):
        es_naive.check_config(train.default_config(es_naive, device))
