"""Tests for noprop.py: the noise schedule (time direction, endpoints, posterior identities),
hand gradients vs finite differences, locality of the block updates, the toy demo's
accuracy, determinism and cupy == numpy (on the stand-in tests/strict_cupy.py where no GPU is
usable).

$ python -m pytest tests/test_noprop.py -q
"""
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import noprop  # noqa: E402
from conftest import ONE, fd_max_rel_error  # noqa: E402

FD_TOL = 1e-6  # float64 central differences with h = 1e-6 land near 1e-9; 1e-6 flags any bug

# the schedule's values for T = 10 (4 significant digits), written down with its specification,
# independently of noise_schedule
ABAR_TABLE = [0.0010, 0.0241, 0.0940, 0.2031, 0.3408, 0.4938, 0.6475, 0.7869, 0.8987, 0.9721,
              0.9900]


def test_schedule_endpoints_and_time_direction():
    s = noprop.noise_schedule(10)
    abar, snr = s["abar"], s["snr"]
    assert abar[0] == 1e-3 and abar[10] == 0.99, f"endpoints {abar[0]}, {abar[10]}"
    assert np.all(np.diff(abar) > 0), "abar_t must increase with t (t = 0 noise, T label)"
    assert np.all(np.diff(snr) > 0), "SNR(t) - SNR(t-1) must be > 0 for every t"
    assert s["alpha"][10] == abar[10] and np.all((s["alpha"] > 0) & (s["alpha"] < 1))
    np.testing.assert_allclose(abar, ABAR_TABLE, atol=6e-5, err_msg="reference values")
    np.testing.assert_allclose(snr[10] - snr[9], 64.17, atol=6e-3)
    assert np.isnan(s["a"][0]) and not np.any(np.isnan(s["a"][1:]))


@pytest.mark.parametrize("T,abar_max", [(1, 0.99), (2, 0.99), (4, 0.99), (17, 0.99),
                                         (25, 0.999)])
def test_schedule_endpoints_and_direction_for_any_T(T, abar_max):
    """The LM runs take --blocks, --abar_min, --abar_max: every setting check_config accepts must
    keep the endpoints and the direction (t = 0 noise, t = T label, SNR increasing)."""
    cfg = replace(noprop.Config(), blocks=T, abar_max=abar_max)
    noprop.check_config(cfg)
    s = noprop.noise_schedule(T, cfg.cos_s, cfg.abar_min, cfg.abar_max)
    assert s["abar"][0] == cfg.abar_min and s["abar"][T] == cfg.abar_max, s["abar"]
    assert np.all(np.diff(s["abar"]) > 0) and np.all(np.diff(s["snr"]) > 0), s["abar"]
    assert np.all((s["c"][1:] > 0) & (s["a"][1:] > 0) & (s["b"][1:] > 0))


def test_check_config_rejects_a_flat_schedule():
    """With abar_max = 0.99 the clipped cosine is flat at the top for T >= 18."""
    with pytest.raises(ValueError, match="flat at an end"):
        noprop.check_config(replace(noprop.Config(), blocks=18))


def test_schedule_posterior_identities():
    """Chaining the Eq. 3 step with the true u_y reproduces q(z_t|y) (Eq. 6) exactly, and
    a_t^2 / c_t = SNR(t) - SNR(t-1) (the KL collapse of Eq. 56)."""
    s = noprop.noise_schedule(10)
    abar, a, b, c = s["abar"], s["a"][1:], s["b"][1:], s["c"][1:]
    np.testing.assert_allclose(a + b * np.sqrt(abar[:-1]), np.sqrt(abar[1:]), rtol=1e-12)
    np.testing.assert_allclose(b ** 2 * (1 - abar[:-1]) + c, 1 - abar[1:], rtol=1e-12)
    np.testing.assert_allclose(a ** 2 / c, np.diff(s["snr"]), rtol=1e-12)


def small_problem(seed, m=4, d=3, D=5, H=6, B=7):
    rng = np.random.default_rng(seed)
    block = {"W1": rng.standard_normal((D + d, H)), "b1": 0.1 * rng.standard_normal(H),
             "W2": rng.standard_normal((H, m)), "b2": 0.1 * rng.standard_normal(m)}
    head = {"Wo": rng.standard_normal((d, m)), "bo": 0.1 * rng.standard_normal(m)}
    E = {"E": rng.standard_normal((m, d))}                        # learned: every path non-zero
    x, y = rng.standard_normal((B, D)), np.arange(B) % m
    return block, head, E, x, y, rng.standard_normal((B, d))


def test_block_gradients_match_finite_differences():
    block, _, E, x, y, eps = small_problem(0)
    w, abar_prev = 0.37, 0.2

    def loss():
        return float(noprop.noprop_block_loss_and_grads(block, E["E"], x, y, eps, w,
                                                        abar_prev)[0])

    _, grads = noprop.noprop_block_loss_and_grads(block, E["E"], x, y, eps, w, abar_prev)
    err = max(fd_max_rel_error(loss, block, grads), fd_max_rel_error(loss, E, grads))
    assert err < FD_TOL, f"block grads (W1, b1, W2, b2, E): max rel error {err:.2e}"


def test_head_gradients_match_finite_differences():
    _, head, E, _, y, eps = small_problem(1)
    abar_T, abar_0 = 0.9, 0.3  # large abar_0 so that the KL path of E is clearly tested

    def loss():
        ce, kl, _ = noprop.noprop_head_loss_and_grads(head, E["E"], y, eps, abar_T, abar_0)
        return float(ce + kl)

    _, _, grads = noprop.noprop_head_loss_and_grads(head, E["E"], y, eps, abar_T, abar_0)
    err = max(fd_max_rel_error(loss, head, grads), fd_max_rel_error(loss, E, grads))
    assert err < FD_TOL, f"head grads (Wo, bo, E via CE + KL): max rel error {err:.2e}"


def test_one_hot_block_loss_is_brier_score():
    block, _, _, x, y, eps = small_problem(2, d=4)
    E = np.eye(4)
    loss, _ = noprop.noprop_block_loss_and_grads(block, E, x, y, eps, 0.5, 0.3)
    z = np.sqrt(0.3) * E[y] + np.sqrt(0.7) * eps
    P = noprop.block_probs(block, x, z)
    brier = 0.5 / len(y) * np.sum((P - E[y]) ** 2)
    assert abs(loss - brier) < 1e-12, f"{loss} vs Brier {brier}"


def toy_setup(cfg):
    params = noprop.init_params(cfg, cfg.n_features, np)
    x, y = noprop.make_toy_task(cfg, 0)
    sched = noprop.noise_schedule(cfg.blocks, cfg.cos_s, cfg.abar_min, cfg.abar_max)
    return params, noprop.init_opt(params), x[:32], y[:32], sched


def copy_blocks(params):
    return [{k: v.copy() for k, v in b.items()} for b in params["blocks"]]


def test_block_step_touches_only_its_block():
    cfg = replace(noprop.ToyConfig(), blocks=4, hidden=32)
    params, opt, x, y, sched = toy_setup(cfg)
    before, E = copy_blocks(params), params["E"]["E"].copy()
    head = {k: v.copy() for k, v in params["head"].items()}
    noprop.noprop_block_step(params, opt, 3, x, y, sched, 1, cfg, cfg.seed, False)
    assert len(params["blocks"]) == len(before) == cfg.blocks, f"{len(before)} blocks, T = 4"
    assert head, "the head has no tensors"
    for t, (blk, old) in enumerate(zip(params["blocks"], before), start=1):
        same = all(np.array_equal(blk[k], old[k]) for k in blk)
        assert same == (t != 3), f"block {t}: changed={not same}, only block 3 may change"
    assert all(np.array_equal(params["head"][k], head[k]) for k in head), "head changed"
    assert np.array_equal(params["E"]["E"], E), "E changed"


def test_block_update_ignores_other_blocks():
    """Locality: with fixed one-hot E, block t's trajectory over several full training steps
    is bit-identical whatever the other blocks' parameters are (no activation or gradient
    crosses blocks: z_{t-1} is sampled from q, not produced by block t-1)."""
    cfg = replace(noprop.ToyConfig(), blocks=4, hidden=32)
    params_a, opt_a, x, y, sched = toy_setup(cfg)
    params_b, opt_b, _, _, _ = toy_setup(cfg)
    for t in (1, 2, 4):                                           # all blocks but block 3
        params_b["blocks"][t - 1]["W1"] *= -2.0
    for step in (1, 2, 3):
        noprop.noprop_train_step(params_a, opt_a, x, y, sched, step, cfg, 0, False)
        noprop.noprop_train_step(params_b, opt_b, x, y, sched, step, cfg, 0, False)
    for k in params_a["blocks"][2]:
        assert np.array_equal(params_a["blocks"][2][k], params_b["blocks"][2][k]), k
    assert not np.array_equal(params_a["blocks"][1]["W1"], params_b["blocks"][1]["W1"])


def test_toy_demo_beats_chance():
    cfg = noprop.ToyConfig()
    t0 = time.time()
    res = noprop.evaluate(noprop.train_toy(cfg), cfg)
    msg = (f"{res}, chance 0.100, {time.time() - t0:.1f} s"
           f" (measured stochastic 0.876, deterministic 0.918, block 1 0.909)")
    assert res["stochastic"] > 0.75 and res["deterministic"] > 0.8 and res["block1"] > 0.8, msg


def test_learned_embeddings_train():
    cfg = replace(noprop.ToyConfig(), embed_dim=20, blocks=4, epochs=4, hidden=128)
    E0 = noprop.init_params(cfg, cfg.n_features, np)["E"]["E"]
    params = noprop.train_toy(cfg)
    res = noprop.evaluate(params, cfg)
    assert not np.array_equal(params["E"]["E"], E0), "learned E did not move"
    assert res["deterministic"] > 0.75, f"{res}, chance 0.100 (measured deterministic 0.879)"


def small_config(seed):
    return replace(noprop.ToyConfig(), seed=seed, blocks=3, hidden=32, epochs=1, n_train=320,
                   n_test=100, embed_dim=8)


def test_determinism():
    runs = [noprop.train_toy(small_config(seed)) for seed in (3, 3, 4)]

    def flat(p):
        return [v for d in p["blocks"] + [p["head"], p["E"]] for v in d.values()]

    assert len(flat(runs[0])) == len(flat(runs[1])) > 0, "different or no tensors"
    assert all(np.array_equal(a, b) for a, b in zip(flat(runs[0]), flat(runs[1]))), \
        "same seed, different parameters"
    assert not np.array_equal(flat(runs[0])[0], flat(runs[2])[0]), "seed had no effect"
    cfg = small_config(3)
    assert noprop.evaluate(runs[0], cfg) == noprop.evaluate(runs[1], cfg)


def test_cupy_step_matches_numpy(cupy_or_skip):
    cupy = cupy_or_skip
    cfg = replace(noprop.ToyConfig(), blocks=3, hidden=32, embed_dim=8)
    params, opt, x, y, sched = toy_setup(cfg)
    params_g = noprop.init_params(cfg, cfg.n_features, cupy)
    opt_g = noprop.init_opt(params_g)
    for step in (1, 2):
        noprop.noprop_train_step(params, opt, x, y, sched, step, cfg, 0, True)
        noprop.noprop_train_step(params_g, opt_g, cupy.asarray(x), cupy.asarray(y), sched,
                                 step, cfg, 0, True)
    for a, b in zip(params["blocks"] + [params["head"], params["E"]],
                    params_g["blocks"] + [params_g["head"], params_g["E"]]):
        for k in a:  # float32, different BLAS: agree to rounding, not bit for bit
            np.testing.assert_allclose(cupy.asnumpy(b[k]), a[k], rtol=1e-4, atol=1e-5)

# --- the integer LM (train.py --method noprop) ---

import int_rnn_lm as lm  # noqa: E402
import train  # noqa: E402


def lm_setup(D=16, L=2, rows=4, seq=12, seed=0, **cfg_kw):
    """A tiny LM (the fixed encoder), the NoProp state and the first windows of the text."""
    cfg = replace(noprop.Config(), rows=rows, **{"blocks": 4, "hidden": 32, **cfg_kw})
    mcfg = lm.ModelConfig(d_model=D, n_layers=L)
    params = lm.init_params(mcfg, seed)
    train_bytes, val_bytes = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))
    stream = train.TrainStream(train_bytes, rows, seq)
    return cfg, mcfg, params, noprop.init(params, cfg, mcfg, seed, ONE), stream, val_bytes


def test_one_hot_gradients_without_embedding_paths_match_finite_differences():
    """The LM's setting: fixed one-hot E, embed_grad=False (the E paths are skipped)."""
    block, head, _, x, y, eps = small_problem(3, m=6, d=6)
    E = np.eye(6)

    def block_loss():
        return float(noprop.noprop_block_loss_and_grads(block, E, x, y, eps, 0.37, 0.2,
                                                        embed_grad=False)[0])

    def head_loss():
        ce, kl, _ = noprop.noprop_head_loss_and_grads(head, E, y, eps, 0.9, 0.3,
                                                      embed_grad=False)
        return float(ce + kl)

    _, g_block = noprop.noprop_block_loss_and_grads(block, E, x, y, eps, 0.37, 0.2,
                                                    embed_grad=False)
    _, _, g_head = noprop.noprop_head_loss_and_grads(head, E, y, eps, 0.9, 0.3, embed_grad=False)
    assert "E" not in g_block and "E" not in g_head
    err = max(fd_max_rel_error(block_loss, block, g_block),
              fd_max_rel_error(head_loss, head, g_head))
    assert err < FD_TOL, f"one-hot block + head grads: max rel error {err:.2e} (measured 3.8e-09)"


def flat(params, state):
    return {**{"param/" + k: v.copy() for k, v in params.items()},
            **{"state/" + k: v.copy() for k, v in state.items()}}


def test_lm_step_keeps_the_encoder_and_each_block_to_itself():
    """The int8 LM (the fixed encoder) is returned bit-identical, the caller's state is not
    modified, and block t's trajectory over several steps does not depend on the other
    blocks' weights (no activation or gradient crosses blocks)."""
    runs = []
    for perturb in (False, True):
        cfg, mcfg, params, state, stream, _ = lm_setup()
        if perturb:
            for t in (1, 2, 4):                                   # all blocks but block 3
                state[f"block{t}.W1"] = -2.0 * state[f"block{t}.W1"]
        p0, s0 = flat(params, {}), flat({}, state)
        for t in range(3):
            params, new_state, _ = noprop.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
            if t == 0:
                assert all(np.array_equal(s0[k], v) for k, v in flat({}, state).items()), \
                    "step modified the caller's state"
            state = new_state
        after = flat(params, state)
        assert all(np.array_equal(p0[k], after[k]) for k in p0), "the int8 LM changed"
        runs.append(after)
    a, b = runs
    block3 = [k for k in a
              if k.startswith(("state/block3.", "state/adam_m.block3.", "state/adam_v.block3."))]
    assert len(block3) == 3 * len(noprop.BLOCK_KEYS), f"block 3's tensors: {block3}"
    for k in block3:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["state/block2.W2"], b["state/block2.W2"])  # the test can fail


def test_predict_is_normalised_block_one_posterior():
    cfg, mcfg, params, state, stream, val_bytes = lm_setup(z0_draws=1)
    for t in range(2):
        params, state, _ = noprop.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    windows = train.val_windows(val_bytes, 3, 20)
    h0 = lm.zero_hidden(mcfg, 3)
    log2p, hidden = noprop.predict(params, state, mcfg)(windows[:, :-1], h0)
    assert log2p.shape == (3, 20, 256) and log2p.dtype == np.float64
    assert hidden.shape == (mcfg.n_layers, 3, mcfg.d_model) and hidden.dtype == np.int8
    total = np.exp2(log2p).sum(axis=-1)
    assert np.abs(total - 1).max() < 1e-9, f"sum of p - 1: {np.abs(total - 1).max():.1e}"
    _, _, acts = lm.forward(params, mcfg, windows[:, :-1], h0, return_activations=True)
    x = noprop.features(acts).astype(np.float64)
    block = {k: state["block1." + k].astype(np.float64) for k in noprop.BLOCK_KEYS}
    P = noprop.block_probs(block, x, np.broadcast_to(state["z0"][0], (len(x), 256)))
    np.testing.assert_allclose(np.exp2(log2p).reshape(-1, 256), P, atol=1e-6)  # [LM-2], K = 1


def test_short_lm_run_lowers_val_bpb():
    cfg, mcfg, params, state, stream, val_bytes = lm_setup(D=32, L=1, rows=16, seq=50, blocks=4,
                                                           hidden=64, lr=3e-3)
    windows = train.val_windows(val_bytes, 16, 64)
    v0 = lm.evaluate(params, mcfg, windows, noprop.predict(params, state, mcfg))
    t0 = time.time()
    for t in range(40):
        params, state, stats = noprop.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    v1 = lm.evaluate(params, mcfg, windows, noprop.predict(params, state, mcfg))
    msg = (f"val bits/byte {v0:.3f} -> {v1:.3f} in 40 steps ({time.time() - t0:.1f} s), "
           f"Eq. 8 loss {stats[noprop.LOSS]:.3f} (measured 8.267 -> 4.872 in 5.6 s; unigram 4.83)")
    assert v1 < v0 - 2.5 and v1 < 5.5, msg


def test_lm_step_determinism():
    runs = []
    for seed in (3, 3, 4):
        cfg, mcfg, params, state, stream, _ = lm_setup(seed=0)
        for t in range(2):
            params, state, _ = noprop.step(params, state, stream.batch(t), t, cfg, mcfg, seed, ONE)
        runs.append(flat(params, state))
    a, b, c = runs
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"same seed, {k} differs")
    assert not np.array_equal(a["state/block1.W1"], c["state/block1.W1"]), "seed had no effect"


@pytest.mark.parametrize("field,value,message", [
    ("rows", 0, "rows must be >= 1"), ("blocks", 0, "blocks must be >= 1"),
    ("z0_draws", 0, "z0_draws must be >= 1"), ("lr", 0.0, "eta and lr must be > 0"),
    ("abar_max", 1.0, "need 0 < abar_min < abar_max < 1"), ("adam_b2", 1.0, "adam_b1 and")])
def test_check_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        noprop.check_config(replace(noprop.Config(), **{field: value}))


def test_features_are_the_reservoir_baselines():
    """[LM-1] is bit for bit forward_forward's [readout] F: the reservoir baseline
    (`train.py --method forward_forward --reservoir true`) reads the same integer-LM features
    with a linear softmax that NoProp's blocks read with their MLPs."""
    import forward_forward
    _, mcfg, params, _, stream, _ = lm_setup()
    tokens, _ = stream.batch(0)
    _, _, acts = lm.forward(params, mcfg, tokens[:, :-1], lm.zero_hidden(mcfg, len(tokens)),
                            return_activations=True)
    np.testing.assert_array_equal(noprop.features(acts), forward_forward.features(acts))


def test_the_toy_task_is_forward_forwards():
    """noprop.py carries its own copy of the toy task (each method file runs alone); it must
    give forward_forward.py's examples, so that the two local methods compare."""
    import forward_forward
    for split in (0, 1):
        x, y = noprop.make_toy_task(noprop.ToyConfig(), split)
        x_ff, y_ff = forward_forward.make_toy_task(forward_forward.ToyConfig(), split)
        np.testing.assert_array_equal(y, y_ff)
        np.testing.assert_array_equal(x, x_ff)
