"""EGGROLL: the float estimator against an analytic gradient, the integer update, the schedule."""
import dataclasses
import math

import numpy as np
import pytest

import eggroll as eg
import int_rnn_lm as lm
import train
from conftest import ONE

PAIRS = dict(sampling="antithetic", group_size=2)   # the paper's antithetic pairs (App. H)

# -----------------------------------------------------------------------------
# float EGGROLL estimator vs the analytic gradient of a quadratic


def quadratic_fitness(target):
    """f(W) = -1/2 ||W - W*||^2 per member, evaluated at W + sigma A_i B_i^T / sqrt(r)."""
    def fitness(params, noise, sigma):
        A, B = noise["w"]
        E = eg.antithetic(np.einsum("bmr,bnr->bmn", A, B)) / math.sqrt(A.shape[-1])  # test only
        return -0.5 * ((params["w"][None] + sigma * E - target[None]) ** 2).sum(axis=(1, 2))
    return fitness


def cosine(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("rank", [1, 2])
def test_float_estimator_matches_quadratic_gradient(rank):
    """cos(g_hat, -(W - W*)) >= 0.9 at N = 16384 and grows with N (d = 12 x 10 = 120)."""
    rng = np.random.default_rng(0)
    W, target = rng.standard_normal((12, 10)), rng.standard_normal((12, 10))
    true_grad = -(W - target)                                  # d f / d W, fitness ascent
    cos = {}
    for n in (64, 1024, 16384):
        fcfg = eg.FloatConfig(population=n, sigma=0.01, rank=rank)
        g, _ = eg.float_es_gradient(quadratic_fitness(target), {"w": W}, seed=1, t=0, fcfg=fcfg)
        cos[n] = cosine(g["w"], true_grad)
    assert cos[16384] >= 0.9, f"rank {rank}: cosine {cos} at N=16384 below 0.9"
    assert cos[64] < cos[1024] < cos[16384], f"rank {rank}: cosine does not grow with N: {cos}"


@pytest.mark.parametrize("rank", [1, 2])
def test_float_estimator_has_the_quadratic_gradients_size(rank):
    """The size the cosine test cannot see: with raw fitness (zscore divides by std(f)) the
    estimate's projection rho = <g_hat, g> / ||g||^2 on the true gradient g is 1 within 4
    standard errors, at N = 16384 (P = 8192 pairs).

    Why 1: a pair's difference is exact on the quadratic, f(W + sigma E) - f(W - sigma E) =
    2 sigma <g, E>, so g_hat = (1/P) sum_k <g, E_k> E_k and rho = (1/P) sum_k s_k^2 with
    s = <g, E> / ||g||. E = A B^T / sqrt(r) has identity covariance, so E[s^2] = 1, E[rho] = 1.
    The tolerance: Var(rho) = Var(s^2) / P. For rank 1, s = a^T G b / ||G|| is normal given b,
    so E[s^4] = 3 E[(b^T M b)^2] / tr(M)^2 = kappa = 3 (1 + 2 tr(M^2) / tr(M)^2), M = G^T G;
    rank r sums r such terms over sqrt(r): E[s^4] = kappa / r + 3 (r - 1) / r. Here the
    standard error is 0.020 (rank 1) and 0.018 (rank 2), so 4 of them is 0.078 and 0.071: a
    missing 1/sqrt(r) or a sigma too many or too few fails."""
    rng = np.random.default_rng(0)
    W, target = rng.standard_normal((12, 10)), rng.standard_normal((12, 10))
    g = -(W - target)                                          # d f / d W, fitness ascent
    fcfg = eg.FloatConfig(population=16384, sigma=0.01, rank=rank, shaping="raw")
    g_hat, _ = eg.float_es_gradient(quadratic_fitness(target), {"w": W}, seed=1, t=0, fcfg=fcfg)
    rho = float((g_hat["w"] * g).sum() / (g * g).sum())
    M = g.T @ g
    kappa = 3 * (1 + 2 * np.trace(M @ M) / np.trace(M) ** 2)
    se = math.sqrt(((kappa + 3 * (rank - 1)) / rank - 1) / (fcfg.population // 2))
    assert abs(rho - 1) < 4 * se, f"rank {rank}: projection {rho:.4f}, want 1 ± {4 * se:.4f}"


def test_float_demo_reduces_loss():
    before, after = eg.demo(eg.FloatConfig(steps=120), log_every=10**6)
    assert after < before / 20, f"mse {before:.4f} -> {after:.4f}, expected a 20x drop"


def test_member_matmul_is_the_materialised_perturbation():
    """The low-rank member forward x W^T + (sigma/sqrt r)(x B) A^T equals x (W + sigma E_i)^T
    with E_i = s_i A_k B_k^T / sqrt(r) built explicitly (float64, rtol 1e-12)."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 5, 7)), rng.standard_normal((3, 7))
    A, B = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 7, 2))
    E = eg.antithetic(np.einsum("pmr,pnr->pmn", A, B)) / math.sqrt(2)          # (8, 3, 7)
    want = np.einsum("ben,bmn->bem", np.broadcast_to(x, (8, 5, 7)), w[None] + 0.3 * E)
    np.testing.assert_allclose(eg.member_matmul(x, w, (A, B), 0.3), want, rtol=1e-12)

# -----------------------------------------------------------------------------
# integer EGGROLL: noise, antithetic pairs, Z, threshold, update


def test_members_of_a_pair_get_opposite_noise():
    cfg = eg.Config(population=8, rank=2, **PAIRS)
    pairs = np.arange(4)
    noise = {"w": eg.direction_noise(0, 3, cfg, 5, (6, 4), pairs, np),
             "v": eg.direction_noise(0, 3, cfg, 6, (4,), pairs, np)}
    pert = eg.member_perturbation(noise, cfg)
    A, B = pert["w"].A, pert["w"].B
    np.testing.assert_array_equal(A[0::2], -A[1::2].astype(np.int32))
    np.testing.assert_array_equal(B[0::2], B[1::2])
    np.testing.assert_array_equal(A[0::2], noise["w"][0])
    np.testing.assert_array_equal(pert["v"].E[0::2], -pert["v"].E[1::2])
    assert pert["w"].shift == 4 + cfg.sigma_shift
    assert pert["v"].shift == 4 + cfg.sigma_shift_vectors == 5 + cfg.sigma_shift  # half the sigma
    assert (A[0] != A[2]).any(), "different pairs must get different noise"


def test_independent_members_get_their_own_noise():
    """--sampling independent: member i's perturbation is direction i's noise as drawn, no sign
    and no copy; the directions are the antithetic run's pair ids continued (the first N/2
    are the same draws)."""
    cfg = eg.Config(population=8, rank=2, sampling="independent")
    ks = np.arange(eg.n_directions(cfg))
    assert len(ks) == 8 and eg.n_directions(eg.Config(population=8, **PAIRS)) == 4
    noise = {"w": eg.direction_noise(0, 3, cfg, 5, (6, 4), ks, np),
             "v": eg.direction_noise(0, 3, cfg, 6, (4,), ks, np)}
    pert = eg.member_perturbation(noise, cfg)
    np.testing.assert_array_equal(pert["w"].A, noise["w"][0])
    np.testing.assert_array_equal(pert["w"].B, noise["w"][1])
    np.testing.assert_array_equal(pert["v"].E, noise["v"])
    assert len(np.unique(pert["w"].A.reshape(8, -1), axis=0)) == 8, "a member's noise repeats"
    antithetic = eg.direction_noise(0, 3, eg.Config(population=8, rank=2, **PAIRS), 5,
                                    (6, 4), np.arange(4), np)
    np.testing.assert_array_equal(antithetic[0], noise["w"][0][:4])


def test_noise_depends_on_epoch_via_noise_reuse():
    def draw(t, reuse):
        cfg = eg.Config(population=4, noise_reuse=reuse, **PAIRS)
        return eg.direction_noise(0, t, cfg, 0, (8, 8), np.arange(2), np)[0]
    a, b, c, d, e = draw(0, 2), draw(1, 2), draw(2, 2), draw(9, 0), draw(0, 0)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    np.testing.assert_array_equal(d, e)


@pytest.mark.parametrize("rank", [1, 3])
def test_z_equals_sum_of_materialised_outer_products(xp, rank):
    """Z = (diag(F) A)^T B through the exact int GEMM == sum_k F_k A_k B_k^T, bit for bit."""
    cfg = eg.Config(population=2 * 300, rank=rank, **PAIRS)
    A, B = eg.direction_noise(7, 0, cfg, 3, (20, 12), xp.arange(300), xp)
    v = eg.direction_noise(7, 0, cfg, 4, (9,), xp.arange(300), xp)
    noise = {"w": (A, B), "v": v}
    source = lambda name, pairs: (tuple(f[pairs] for f in noise[name]) if name == "w"  # noqa
                                  else noise[name][pairs])
    F = xp.asarray(np.random.default_rng(0).integers(-1, 2, 300).astype(np.int8))
    Z = lm.to_numpy(eg.accumulate_z(F, source, "w", cfg))
    A_, B_, F_ = (lm.to_numpy(u).astype(np.int64) for u in (A, B, F))
    ref = sum(F_[k] * A_[k] @ B_[k].T for k in range(300))                 # (20, 12)
    np.testing.assert_array_equal(Z, ref)
    np.testing.assert_array_equal(lm.to_numpy(eg.accumulate_z(F, source, "v", cfg)),
                                  (F_[:, None] * lm.to_numpy(v)).sum(0))


@pytest.mark.parametrize("population,seq_len", [(512, 25), (2048, 100), (8192, 100), (16, 7)])
def test_alpha_counts_member_tokens(population, seq_len):
    """alpha starts at 1, never rises, and depends on the member-tokens seen, not on how they
    were cut into steps: at the reference step (2048 x 100) it is the paper's 1 / (1 + 0.015 t)."""
    cfg = eg.Config(population=population, group_size=2)
    alphas = [eg.alpha_schedule(t, cfg, seq_len) for t in range(0, 5000, 7)]
    assert alphas[0] == 1.0 and all(a > b for a, b in zip(alphas, alphas[1:]))
    member_tokens = 3_000_000 * population * seq_len
    per_ref = member_tokens / eg.REFERENCE_STEP
    assert eg.alpha_schedule(3_000_000, cfg, seq_len) == pytest.approx(1 / (1 + 0.015 * per_ref))
    ref = eg.Config(population=2048, group_size=2, sampling="antithetic")
    assert eg.alpha_schedule(100, ref, 100) == pytest.approx(1 / (1 + 0.015 * 100))


def test_alpha_schedule_and_threshold_values():
    cfg = eg.Config(population=2048, group_size=2, sampling="antithetic", signal="sign")
    assert eg.alpha_schedule(0, cfg, 100) == 1.0
    assert eg.alpha_schedule(100, cfg, 100) == pytest.approx(1 / 2.5)
    assert eg.alpha_schedule(1000, cfg, 100) == pytest.approx(1 / 16)
    std = eg.z_std((64, 64), cfg)
    assert std == 256 * 32 and eg.z_threshold(1.0, std) == 0
    # 256 * Phi^-1(0.975) * sqrt(1024) = 256 * 1.9599640 * 32 = 16056.03
    assert eg.z_threshold(0.05, std) == 16056
    rank2 = eg.Config(population=1024, rank=2, signal="sign", **PAIRS)  # sqrt(P r), P r = 1024
    assert eg.z_threshold(0.05, eg.z_std((64, 64), rank2)) == 16056
    assert eg.z_std((64,), rank2) == 256 * math.sqrt(512)      # a vector's noise is rank 1
    assert eg.z_std((64, 64), eg.Config(population=2048, **PAIRS)) == 16 * 256 * 32  # F rms 16


def test_threshold_moves_about_alpha_of_the_weights():
    """Under random signs F, the fraction with |Z| >= threshold is ~alpha (App. H.3)."""
    mcfg = lm.ModelConfig(64, 1)
    fitness = np.random.default_rng(1).integers(-3000, 3000, 2 * 2048)       # random members
    for signal in ("sign", "zscore"):
        cfg = eg.Config(population=2 * 2048, signal=signal, **PAIRS)
        F = eg.direction_signal(fitness, cfg)
        Z = eg.accumulate_z(F, eg.noise_source(1, 0, cfg, mcfg, np), "l0.u_f", cfg)
        for alpha in (0.5, 0.1, 0.01):
            frac = float((np.abs(Z) >= eg.z_threshold(alpha, eg.z_std(Z.shape, cfg))).mean())
            assert abs(frac - alpha) < 0.25 * alpha + 0.003, (signal, alpha, frac)


def test_threshold_step_is_plus_minus_one_and_saturates():
    w = np.array([[127, -127, 0, 5]], np.int8)
    Z = np.array([[50, -50, 0, -1]], np.int64)
    np.testing.assert_array_equal(eg.threshold_step(w, Z, 2), [[127, -127, 0, 5]])  # rails, Z 0
    np.testing.assert_array_equal(eg.threshold_step(w, -Z, 2), [[126, -126, 0, 5]])
    np.testing.assert_array_equal(eg.threshold_step(w, -Z, 0), [[126, -126, 0, 6]])  # |Z| >= 0


def sgd_update_by_hand(w, fraction, z, eta, std):
    """The sgd update of one weight in Python integers: W_q16 = 2^16 W + fraction."""
    scale = round(eta * 2 ** 36 / std)
    acc = fraction + (z * scale >> 20)
    steps = (acc + 2 ** 15) >> 16
    return max(-127, min(127, w + steps)), acc - (steps << 16)


def test_sgd_update_equals_fixed_point_arithmetic_by_hand():
    """Every weight: the new int8 weight and 16-bit fraction are the integers of W_q16 + 2^16
    eta Z / std(Z) rounded half up, with saturation at +-127 (matrix rank 2, and a vector)."""
    rng = np.random.default_rng(3)
    P, m, n, r = 6, 5, 4, 2
    A = rng.integers(-127, 128, (P, m, r)).astype(np.int8)
    B = rng.integers(-127, 128, (P, n, r)).astype(np.int8)
    v = rng.integers(-2**14, 2**14, (P, 3)).astype(np.int32)
    F = rng.choice([-1, 0, 1], P).astype(np.int8)
    params = {"w": rng.integers(-127, 128, (m, n)).astype(np.int8),
              "b": np.array([127, -127, 3], np.int8)}
    params["w"][0, :2] = [127, -127]                                 # saturating rows
    fractions = {"w": rng.integers(-2**15, 2**15, (m, n)).astype(np.int32),
                 "b": rng.integers(-2**15, 2**15, 3).astype(np.int32)}
    noise = {"w": (A, B), "b": v}
    source = lambda name, pairs: noise[name]                      # noqa: E731 -- all pairs
    cfg = eg.Config(population=2 * P, rank=r, signal="sign", **PAIRS)
    for eta in (0.9, 3.7, 0.01):
        new, new_state, _ = eg.update(params, {"fraction." + k: f for k, f in fractions.items()},
                                      F, source, eta, dataclasses.replace(cfg, lr=1.0))
        new_fractions = {k: new_state["fraction." + k] for k in fractions}
        Zw = eg.accumulate_z(F, source, "w", cfg)
        Zb = eg.accumulate_z(F, source, "b", cfg)
        for name, Z, std in (("w", Zw, 256 * math.sqrt(P * r)), ("b", Zb, 256 * math.sqrt(P))):
            for idx in np.ndindex(Z.shape):
                w, f = sgd_update_by_hand(int(params[name][idx]), int(fractions[name][idx]),
                                          int(Z[idx]), eta, std)
                assert (int(new[name][idx]), int(new_fractions[name][idx])) == (w, f), (name, idx)
        assert all(-2**15 <= int(f.min()) and int(f.max()) < 2**15 for f in new_fractions.values())
        assert new["w"].dtype == np.int8 and new_fractions["w"].dtype == np.int32


@pytest.mark.parametrize("update", ["sgd", "threshold"])
def test_update_is_independent_of_threads(update):
    """The update's parameters taken by 1, 2 or 3 CPU threads (lm.thread_map): the same new
    weights, fractions and moved fraction, for EGGROLL's and naive ES's update."""
    import es_naive
    mcfg = lm.ModelConfig(32, 1)
    params = lm.init_params(mcfg, 0)
    for method in (eg, es_naive):
        cfg = method.Config(population=64, update=update)
        F = np.random.default_rng(2).integers(-127, 128, method.n_directions(cfg)).astype(np.int16)
        state = method.init(params, cfg, mcfg, 0, train.OneProcess())
        noise = method.noise_source(5, 3, cfg, mcfg, np)
        results = []
        try:
            for k in (1, 2, 3):
                lm.set_threads(k)
                results.append(method.update(params, state, F, noise, 0.7, cfg))
        finally:
            lm.set_threads(1)
        for new, new_state, moved in results[1:]:
            assert moved == results[0][2] and 0 < moved
            for name in params:
                np.testing.assert_array_equal(new[name], results[0][0][name], err_msg=name)
            fractions = [name for name in new_state if name.startswith("fraction.")]
            assert len(fractions) == (len(params) if update == "sgd" else 0), fractions
            for name in fractions:
                np.testing.assert_array_equal(new_state[name], results[0][1][name])


def test_sgd_update_moves_weights_by_eta_standard_deviations_under_random_signs():
    """Under random F, Z / std(Z) ~ N(0, 1): after one step from zero fractions, the weights'
    exact change in q16 (steps 2^16 + fraction) has standard deviation eta (within 5 %)."""
    P = 2048
    cfg = eg.Config(population=2 * P, signal="sign", **PAIRS)
    F = np.random.default_rng(1).choice([-1, 1], P).astype(np.int8)
    Z = eg.accumulate_z(F, eg.noise_source(1, 0, cfg, lm.ModelConfig(64, 1), np), "l0.u_f", cfg)
    for eta in (1.0, 0.2):
        w, frac = eg.sgd_step(np.zeros((64, 64), np.int8), np.zeros((64, 64), np.int32), Z, eta,
                              eg.z_std(Z.shape, cfg))
        change = (w.astype(np.int64) * 2**16 + frac) / 2**16
        assert abs(change.std() / eta - 1) < 0.05, (eta, change.std())


def test_z_beyond_one_int32_gemm_chunk_equals_the_int64_sum():
    """P r beyond one exact int32 GEMM (rank 3 and 200,000 pairs: 600,000 > 133,143 products
    per dot product) is cut into chunks and summed in int64: equal to sum_k F_k A_k B_k^T in
    int64, with every F_k = 1 and all noise at one sign so that the sums grow as large as they
    can; and such a config is accepted by check_config."""
    cfg = eg.Config(population=2 * 200_000, rank=3, **PAIRS)
    eg.check_config(cfg)
    P, m, n, r = 200_000, 2, 3, 3
    A = np.full((P, m, r), 69, np.int8)
    B = np.random.default_rng(0).integers(60, 70, (P, n, r)).astype(np.int8)
    F = np.ones(P, np.int8)
    Z = eg.accumulate_z(F, lambda name, pairs: (A[pairs], B[pairs]), "w", cfg)
    want = np.einsum("pmr,pnr->mn", A.astype(np.int64), B.astype(np.int64))
    np.testing.assert_array_equal(Z, want)
    assert want.max() > 2**31, "the sums must exceed int32 for the test to mean anything"


def test_sgd_step_at_max_lr_with_the_largest_z_does_not_overflow():
    """eta = MAX_LR and |Z| at its bound P r 69^2 (P r just under 2^30 would take too long to
    build; the multiplier is what grows): the q16 step equals the Python-int computation, and
    the weight saturates at +-127 without wrapping."""
    P, r = 1024, 1
    std = 256 * math.sqrt(P * r)
    Z = np.array([[P * r * 69 * 69, -P * r * 69 * 69, 0]], np.int64)
    w = np.array([[100, -100, 5]], np.int8)
    fraction = np.array([[2**15 - 1, -2**15, 7]], np.int32)
    new_w, new_f = eg.sgd_step(w, fraction, Z, eg.MAX_LR, std)
    for j in range(3):
        ww, ff = sgd_update_by_hand(int(w[0, j]), int(fraction[0, j]), int(Z[0, j]), eg.MAX_LR,
                                    std)
        assert (int(new_w[0, j]), int(new_f[0, j])) == (ww, ff), j
    np.testing.assert_array_equal(new_w, [[127, -127, 5]])


def test_direction_signal_is_the_sign_or_the_z_scored_difference():
    """sign: [1, 0, -1]. zscore by hand: d = [2, 0, -7, 30], sum d^2 = 953, integer rms
    isqrt(953 // 4) = isqrt(238) = 15, F = round half up of 16 d / 15 = [2.13, 0, -7.47, 32]
    -> [2, 0, -7, 32]; a difference beyond 127/16 rms clips at 127."""
    f = np.array([5, 3, -2, -2, 0, 7], np.int64)
    np.testing.assert_array_equal(eg.direction_signal(f, eg.Config(signal="sign", **PAIRS)),
                                  [1, 0, -1])
    f = np.array([2, 0, 0, 0, 0, 7, 30, 0], np.int64)
    np.testing.assert_array_equal(eg.direction_signal(f, eg.Config(**PAIRS)), [2, 0, -7, 32])
    spread = np.array([1000, 0] + [50, 0] * 99, np.int64)   # rms isqrt(12475) = 111: 144, 7.2
    F = eg.direction_signal(spread, eg.Config(**PAIRS))
    assert F[0] == 127 and F.dtype == np.int16 and set(F[1:].tolist()) == {7}


def independent_signal_by_hand(f, G, signal):
    """The group-baseline signal in Python integers: d_i = G f_i - sum of i's group, then
    sign(d) or round half up of 16 d / isqrt(mean d^2), clipped to +-127."""
    f = [int(v) for v in f]
    d = [G * f[i] - sum(f[i - i % G: i - i % G + G]) for i in range(len(f))]
    if signal == "sign":
        return [(v > 0) - (v < 0) for v in d]
    rms = max(1, math.isqrt(sum(v * v for v in d) // len(d)))
    return [max(-127, min(127, (32 * v + rms) // (2 * rms))) for v in d]


@pytest.mark.parametrize("signal", ["sign", "zscore"])
@pytest.mark.parametrize("G", [2, 4, 16])
def test_independent_signal_is_each_members_lead_over_its_group(G, signal):
    """--sampling independent: F from d_i = G f_i - sum_{j in i's group} f_j equals the Python
    integer reference, for fitnesses of the LM's size (about -2^17 per window) with ties and
    one outlier that clips (its lead is over 8 rms: it needs N (G - 1) / G > 63 members). A
    group of equal fitnesses gives F = 0 for all its members."""
    rng = np.random.default_rng(G)
    f = -rng.integers(115_000, 125_000, 256).astype(np.int64)
    f[:G] = -120_000                                                   # one group all tied
    f[-1] = -1_000                                                     # one far ahead: clips
    cfg = eg.Config(population=256, group_size=G, sampling="independent", signal=signal)
    F = eg.direction_signal(f, cfg)
    assert F.shape == (256,) and F.dtype == (np.int8 if signal == "sign" else np.int16)
    np.testing.assert_array_equal(F, independent_signal_by_hand(f, G, signal))
    assert (F[:G] == 0).all()
    if signal == "zscore":
        assert F[-1] == 127 and (F != 0).sum() > 128


def test_config_validation():
    for bad in (dict(population=7), dict(population=0), dict(population=8, group_size=3),
                dict(population=8, group_size=6), dict(rank=0), dict(sigma_shift=-1),
                dict(member_chunk=3), dict(update="adam"), dict(lr=0), dict(lr=eg.MAX_LR * 2),
                dict(population=2**20, rank=2**11), dict(sampling="mirrored"),
                dict(population=2**20, rank=2**7, sampling="independent")):
        with pytest.raises(ValueError):
            eg.check_config(eg.Config(**bad))
    eg.check_config(eg.Config(population=2**20, rank=2**7, **PAIRS))  # antithetic: 2^26


@pytest.mark.parametrize("sampling", ["independent", "antithetic"])
def test_eggroll_step_is_deterministic_and_numpy_equals_cupy(xp, sampling):
    """Two runs of 3 steps from one seed are bit-identical; on CuPy they equal NumPy's."""
    mcfg = lm.ModelConfig(16, 1)
    cfg = eg.Config(population=16, group_size=4, time_chunk=7, sampling=sampling)
    data = np.frombuffer(train.load_bytes(train.DEFAULT_DATA)[:20000].tobytes(), np.uint8)

    def run(xp_):
        params = lm.init_params(mcfg, 3, xp_)
        state = eg.init(params, cfg, mcfg, 3, ONE)
        stream = train.TrainStream(data, eg.num_sequences(cfg), 16, xp_)
        for t in range(3):
            params, state, _ = eg.step(params, state, stream.batch(t), t, cfg, mcfg, 3, ONE)
        return {k: lm.to_numpy(v) for k, v in params.items()}, lm.to_numpy(state["hidden"])

    a, ha = run(np)
    b, hb = run(xp)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(ha, hb)
    assert any((a[k] != lm.to_numpy(lm.init_params(mcfg, 3)[k])).any() for k in a)
