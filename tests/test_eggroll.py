"""EGGROLL: the float estimator against an analytic gradient, the integer update, the schedule."""
import math

import numpy as np
import pytest

import eggroll as eg
import int_rnn_lm as lm

# -----------------------------------------------------------------------------
# float EGGROLL estimator vs the analytic gradient of a quadratic


def quadratic_fitness(target):
    """f(W) = -1/2 ||W - W*||^2 per member, evaluated at W + sigma A_i B_i^T / sqrt(r)."""
    def fitness(params, factors, sigma):
        A, B = factors["w"]
        E = np.einsum("bmr,bnr->bmn", A, B) / math.sqrt(A.shape[-1])       # test only
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


def test_float_demo_reduces_loss():
    fcfg = eg.FloatConfig(steps=120)
    X, Y = eg.regression_problem()
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((16, 32)) * 0.1, "w2": rng.standard_normal((8, 16)) * 0.1}
    before = eg.regression_loss(params, X, Y)
    moments = {}
    for t in range(fcfg.steps):
        g, _ = eg.float_es_gradient(eg.regression_fitness(X, Y), params, 0, t, fcfg)
        params = eg.adam_ascent(params, g, moments, t, fcfg.lr * (1 - t / fcfg.steps))
    after = eg.regression_loss(params, X, Y)
    assert after < before / 20, f"mse {before:.4f} -> {after:.4f}, expected a 20x drop"

# -----------------------------------------------------------------------------
# integer EGGROLL: noise, antithetic pairs, Z, threshold, update


def test_members_of_a_pair_get_opposite_noise():
    cfg = eg.Config(population=8, rank=2)
    noise = {"w": eg.pair_noise(0, 3, cfg, 5, (6, 4), np), "v": eg.pair_noise(0, 3, cfg, 6, (4,), np)}
    pert = eg.member_perturbation(noise, cfg)
    A, B = pert["w"].A, pert["w"].B
    np.testing.assert_array_equal(A[0::2], -A[1::2].astype(np.int32))
    np.testing.assert_array_equal(B[0::2], B[1::2])
    np.testing.assert_array_equal(A[0::2], noise["w"][0])
    np.testing.assert_array_equal(pert["v"].E[0::2], -pert["v"].E[1::2])
    assert pert["w"].shift == 4 + cfg.sigma_shift
    assert (A[0] != A[2]).any(), "different pairs must get different noise"


def test_noise_depends_on_epoch_via_noise_reuse():
    a = eg.pair_noise(0, 0, eg.Config(population=4, noise_reuse=2), 0, (8, 8), np)[0]
    b = eg.pair_noise(0, 1, eg.Config(population=4, noise_reuse=2), 0, (8, 8), np)[0]
    c = eg.pair_noise(0, 2, eg.Config(population=4, noise_reuse=2), 0, (8, 8), np)[0]
    d = eg.pair_noise(0, 9, eg.Config(population=4, noise_reuse=0), 0, (8, 8), np)[0]
    e = eg.pair_noise(0, 0, eg.Config(population=4, noise_reuse=0), 0, (8, 8), np)[0]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    np.testing.assert_array_equal(d, e)


@pytest.mark.parametrize("rank", [1, 3])
def test_z_equals_sum_of_materialised_outer_products(xp, rank):
    """Z = (diag(F) A)^T B through the exact int GEMM == sum_k F_k A_k B_k^T, bit for bit."""
    cfg = eg.Config(population=2 * 300, rank=rank)
    A, B = eg.pair_noise(7, 0, cfg, 3, (20, 12), xp)
    F = xp.asarray(np.random.default_rng(0).integers(-1, 2, 300).astype(np.int8))
    Z = lm.to_numpy(eg.accumulate_z(F, (A, B)))
    A_, B_, F_ = (lm.to_numpy(v).astype(np.int64) for v in (A, B, F))
    ref = sum(F_[k] * A_[k] @ B_[k].T for k in range(300))                 # (20, 12)
    np.testing.assert_array_equal(Z, ref)
    v = eg.pair_noise(7, 0, cfg, 4, (9,), xp)
    np.testing.assert_array_equal(lm.to_numpy(eg.accumulate_z(F, v)),
                                  (F_[:, None] * lm.to_numpy(v)).sum(0))


@pytest.mark.parametrize("population,seq_len", [(512, 25), (2048, 100), (8192, 100), (16, 7)])
def test_alpha_counts_member_tokens(population, seq_len):
    """alpha starts at 1, never rises, and depends on the member-tokens seen, not on how they
    were cut into steps: at the reference step (2048 x 100) it is the paper's 1 / (1 + 0.015 t)."""
    cfg = eg.Config(population=population, group_size=2, cooldown=0.0)
    alphas = [eg.alpha_schedule(t, cfg, seq_len) for t in range(0, 5000, 7)]
    assert alphas[0] == 1.0 and all(a > b for a, b in zip(alphas, alphas[1:]))
    member_tokens = 3_000_000 * population * seq_len
    per_ref = member_tokens / eg.REFERENCE_STEP
    assert eg.alpha_schedule(3_000_000, cfg, seq_len) == pytest.approx(1 / (1 + 0.015 * per_ref))
    ref = eg.Config(population=2048, group_size=2, cooldown=0.0)
    assert eg.alpha_schedule(100, ref, 100) == pytest.approx(1 / (1 + 0.015 * 100))


@pytest.mark.parametrize("horizon,cooldown", [(320, 0.25), (1572, 0.25), (7, 0.5), (100, 1.0),
                                              (5, 0.0)])
def test_alpha_cooldown_endpoints_and_monotonicity(horizon, cooldown):
    """Any horizon: alpha starts at 1, never rises, equals the member-token schedule before the
    cooldown, falls linearly inside it, is > 0 at the last step and 0 at the horizon."""
    cfg = eg.Config(population=512, group_size=2, cooldown=cooldown, horizon=horizon)
    plain = eg.Config(population=512, group_size=2, cooldown=0.0, horizon=horizon)
    alphas = [eg.alpha_schedule(t, cfg, 25) for t in range(horizon + 1)]
    assert alphas[0] == 1.0 and all(a >= b for a, b in zip(alphas, alphas[1:]))
    assert alphas[horizon - 1] > 0 and alphas[horizon] == 0.0 or cooldown == 0.0
    start = (1 - cooldown) * horizon
    for t in range(horizon + 1):
        expected = eg.alpha_schedule(t, plain, 25)
        if t > start:
            expected *= (horizon - t) / (horizon - start)
        assert alphas[t] == pytest.approx(expected, abs=1e-15)
    assert eg.z_threshold(0.0, 1024, 1) > 1024 * 127 ** 2             # alpha 0: nothing moves


def test_alpha_schedule_and_threshold_values():
    cfg = eg.Config(population=2048, group_size=2, cooldown=0.0)
    assert eg.alpha_schedule(0, cfg, 100) == 1.0
    assert eg.alpha_schedule(100, cfg, 100) == pytest.approx(1 / 2.5)
    assert eg.alpha_schedule(1000, cfg, 100) == pytest.approx(1 / 16)
    assert eg.z_threshold(1.0, 1024, 1) == 0
    # 256 * Phi^-1(0.975) * sqrt(1024) = 256 * 1.9599640 * 32 = 16056.03
    assert eg.z_threshold(0.05, 1024, 1) == 16056
    assert eg.z_threshold(0.05, 512, 2) == 16056       # sqrt(P r) with P r = 1024


def test_threshold_moves_about_alpha_of_the_weights():
    """Under random signs F, the fraction with |Z| >= threshold is ~alpha (App. H.3)."""
    cfg = eg.Config(population=2 * 2048)
    A, B = eg.pair_noise(1, 0, cfg, 0, (64, 64), np)
    F = np.random.default_rng(1).choice([-1, 1], 2048).astype(np.int8)
    Z = eg.accumulate_z(F, (A, B))
    for alpha in (0.5, 0.1, 0.01):
        frac = float((np.abs(Z) >= eg.z_threshold(alpha, 2048, 1)).mean())
        assert abs(frac - alpha) < 0.25 * alpha + 0.003, f"alpha {alpha}: moved {frac:.4f}"


def test_update_is_plus_minus_one_and_saturates():
    params = {"w": np.array([[127, -127, 0, 5]], np.int8), "b": np.array([0, 0], np.int8)}
    F = np.array([1], np.int8)
    A = np.array([[[1]]], np.int8)                  # (P, m, r)
    B = np.array([[[50], [-50], [0], [-1]]], np.int8)  # (P, n, r): Z = [50, -50, 0, -1]
    new, frac = eg.integer_update(params, F, {"w": (A, B), "b": np.array([[3, -3]])}, 2)
    np.testing.assert_array_equal(new["w"], [[127, -127, 0, 5]])   # saturated / Z=0 / |Z| < 2
    new, _ = eg.integer_update(params, -F, {"w": (A, B), "b": np.array([[3, -3]])}, 2)
    np.testing.assert_array_equal(new["w"], [[126, -126, 0, 5]])
    np.testing.assert_array_equal(new["b"], [-1, 1])


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
    for eta in (0.9, 3.7, 0.01):
        new, new_fractions, _ = eg.sgd_update(params, fractions, F, noise, eta, P, r)
        Zw = eg.accumulate_z(F, (A, B))
        Zb = eg.accumulate_z(F, v)
        for name, Z, std in (("w", Zw, 256 * math.sqrt(P * r)), ("b", Zb, 256 * math.sqrt(P))):
            for idx in np.ndindex(Z.shape):
                w, f = sgd_update_by_hand(int(params[name][idx]), int(fractions[name][idx]),
                                          int(Z[idx]), eta, std)
                assert (int(new[name][idx]), int(new_fractions[name][idx])) == (w, f), (name, idx)
        assert all(-2**15 <= int(f.min()) and int(f.max()) < 2**15 for f in new_fractions.values())
        assert new["w"].dtype == np.int8 and new_fractions["w"].dtype == np.int32


def test_sgd_update_moves_weights_by_eta_standard_deviations_under_random_signs():
    """Under random F, Z / std(Z) ~ N(0, 1): after one step from zero fractions, the weights'
    exact change in q16 (steps 2^16 + fraction) has standard deviation eta (within 5 %)."""
    P = 2048
    cfg = eg.Config(population=2 * P)
    A, B = eg.pair_noise(1, 0, cfg, 0, (64, 64), np)
    F = np.random.default_rng(1).choice([-1, 1], P).astype(np.int8)
    params = {"w": np.zeros((64, 64), np.int8)}
    for eta in (1.0, 0.2):
        new, frac, moved = eg.sgd_update(params, {"w": np.zeros((64, 64), np.int32)}, F,
                                         {"w": (A, B)}, eta, P, 1)
        change = (new["w"].astype(np.int64) * 2**16 + frac["w"]) / 2**16
        assert abs(change.std() / eta - 1) < 0.05, (eta, change.std())


def test_antithetic_sign():
    f = np.array([5, 3, -2, -2, 0, 7], np.int64)
    np.testing.assert_array_equal(eg.antithetic_sign(f), [1, 0, -1])


def test_config_validation():
    for bad in (dict(population=7), dict(population=0), dict(population=8, group_size=3),
                dict(population=8, group_size=6), dict(rank=0), dict(sigma_shift=-1),
                dict(cooldown=1.5), dict(horizon=0), dict(update="adam"), dict(lr=0),
                dict(lr=eg.MAX_LR * 2)):
        with pytest.raises(ValueError):
            eg.check_config(eg.Config(**bad))


def test_eggroll_step_is_deterministic_and_numpy_equals_cupy(xp):
    """Two runs of 3 steps from one seed are bit-identical; on CuPy they equal NumPy's."""
    mcfg, cfg = lm.ModelConfig(16, 1), eg.Config(population=16, group_size=4, time_chunk=7)
    train = np.frombuffer(lm.load_bytes(lm.DEFAULT_DATA)[:20000].tobytes(), np.uint8)

    def run(xp_):
        params = lm.init_params(mcfg, 3, xp_)
        state = eg.init(params, cfg, mcfg, 3)
        stream = lm.TrainStream(train, eg.num_sequences(cfg), 16, xp_)
        for t in range(3):
            params, state, _ = eg.step(params, state, stream.batch(t), t, cfg, mcfg, 3)
        return {k: lm.to_numpy(v) for k, v in params.items()}, lm.to_numpy(state["hidden"])

    a, ha = run(np)
    b, hb = run(xp)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(ha, hb)
    assert any((a[k] != lm.to_numpy(lm.init_params(mcfg, 3)[k])).any() for k in a)


def test_step_peak_bytes_bounds_a_step_and_sizes_the_gpu_runs():
    """A step's NumPy allocations stay under step_peak_bytes (tracemalloc), and by that
    arithmetic the GPU default and bench.py's largest GPU size fit in 64 GiB (an 80 GB H100
    with room to spare; an H200 has 141 GB)."""
    import tracemalloc
    mcfg = lm.ModelConfig(64, 2)
    cfg = eg.Config(population=256, group_size=4, member_chunk=64, time_chunk=10)
    params = lm.init_params(mcfg, 0)
    state = eg.init(params, cfg, mcfg, 0)
    train_bytes = lm.split_train_val(lm.load_bytes(lm.DEFAULT_DATA))[0][:100_000]
    stream = lm.TrainStream(train_bytes, eg.num_sequences(cfg), 20)
    eg.step(params, state, stream.batch(0), 0, cfg, mcfg, 0)   # warm the lookup tables
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        eg.step(params, state, stream.batch(1), 1, cfg, mcfg, 0)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak <= eg.step_peak_bytes(mcfg, cfg, 20), (peak, eg.step_peak_bytes(mcfg, cfg, 20))
    gpu = eg.Config(**eg.GPU_DEFAULTS)
    assert eg.step_peak_bytes(lm.ModelConfig(256, 2), gpu, 100) < 64 * 2**30
    biggest = eg.Config(population=2**18, group_size=2, member_chunk=4096, time_chunk=25)
    assert eg.step_peak_bytes(lm.ModelConfig(1024, 1), biggest, 100) < 64 * 2**30
