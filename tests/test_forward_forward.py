"""Tests for forward_forward.py: hand gradients vs finite differences, locality of the layer
updates, normalisation, the toy demo's accuracy, determinism and cupy == numpy (on
the stand-in tests/strict_cupy.py where no GPU is usable).

$ python -m pytest tests/test_forward_forward.py -q
"""
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import forward_forward as ff  # noqa: E402
from conftest import ONE, fd_max_rel_error  # noqa: E402

FD_TOL = 1e-6  # float64 central differences with h = 1e-6 land near 1e-9; 1e-6 flags any bug


def small_layer(rng, d_in=6, width=5):
    return {"W": 0.5 * rng.standard_normal((d_in, width)), "b": 0.1 * rng.standard_normal(width)}


def test_layer_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    layer = small_layer(rng)
    x = rng.standard_normal((8, 6))                               # float64 on purpose
    sign = np.array([1.0, -1.0] * 4)
    _, h = ff.ff_layer_forward(layer, x, 1e-8)
    theta = float(np.median((h * h).sum(axis=1)))  # sigmoids unsaturated: all rows matter
    _, grads, _ = ff.ff_layer_loss_and_grads(layer, x, sign, theta, 1e-8)
    err = fd_max_rel_error(
        lambda: float(ff.ff_layer_loss_and_grads(layer, x, sign, theta, 1e-8)[0]), layer, grads)
    assert err < FD_TOL, f"FF layer grads: max relative error {err:.2e} >= {FD_TOL:.0e}"


def test_readout_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    readout = {"R": rng.standard_normal((7, 4)), "r": rng.standard_normal(4)}
    feats, y = rng.standard_normal((9, 7)), rng.integers(0, 4, 9)
    _, grads = ff.readout_loss_and_grads(readout, feats, y)
    err = fd_max_rel_error(
        lambda: float(ff.readout_loss_and_grads(readout, feats, y)[0]), readout, grads)
    assert err < FD_TOL, f"readout grads: max relative error {err:.2e} >= {FD_TOL:.0e}"


def test_normalisation_keeps_only_direction():
    rng = np.random.default_rng(2)
    h = np.abs(rng.standard_normal((5, 16)))
    out = ff.rms_normalise(h, 0.0)
    np.testing.assert_allclose(ff.rms_normalise(7.5 * h, 0.0), out, rtol=1e-12)
    np.testing.assert_allclose(np.mean(out ** 2, axis=1), 1.0, rtol=1e-12)


def toy_setup(cfg):
    layers = ff.init_layers(cfg, cfg.n_features, np)
    opts = [lm.adam_moments(layer) for layer in layers]
    x, y = ff.make_toy_task(cfg, 0)
    x, y = x[:32], y[:32]
    x_neg = ff.embed_label(x, (y + 1) % cfg.n_classes, cfg)
    return layers, opts, ff.embed_label(x, y, cfg), x_neg


def snapshot(layers):
    return [{k: v.copy() for k, v in layer.items()} for layer in layers]


def test_layer_step_touches_only_its_layer():
    cfg = replace(ff.ToyConfig(), hidden=(32, 32, 32))
    layers, opts, x_pos, x_neg = toy_setup(cfg)
    before = snapshot(layers)
    x = np.concatenate([x_pos, x_neg])
    sign = np.concatenate([np.ones(len(x_pos)), -np.ones(len(x_neg))]).astype(x.dtype)
    h0 = ff.ff_forward(layers, x, cfg.norm_eps)[0]                # input of layer 2
    ff.ff_layer_step(layers[1], opts[1], h0, sign, 1, cfg)
    assert len(layers) == len(before) == 3, f"{len(layers)} layers, hidden=(32, 32, 32)"
    for i, (layer, old) in enumerate(zip(layers, before)):
        same = all(np.array_equal(layer[k], old[k]) for k in layer)
        assert same == (i != 1), f"layer {i}: changed={not same}, only layer 1 may change"


def test_lower_layers_ignore_everything_above():
    """Locality: a full training step gives layers <= l exactly the same update whatever the
    layers above them are (no gradient and no signal flows down)."""
    cfg = replace(ff.ToyConfig(), hidden=(32, 32, 32))
    layers_a, opts_a, x_pos, x_neg = toy_setup(cfg)
    layers_b, opts_b, _, _ = toy_setup(cfg)
    layers_b[2]["W"] *= -3.0                                      # a very different top layer
    layers_b[2]["b"] += 1.0
    for step in (1, 2, 3):
        ff.ff_train_step(layers_a, opts_a, x_pos, x_neg, step, cfg)
        ff.ff_train_step(layers_b, opts_b, x_pos, x_neg, step, cfg)
    for i in (0, 1):
        for k in layers_a[i]:
            assert np.array_equal(layers_a[i][k], layers_b[i][k]), f"layer {i} {k} differs"
    assert not np.array_equal(layers_a[2]["W"], layers_b[2]["W"])  # sanity: the test can fail


def test_toy_demo_beats_chance():
    cfg = ff.ToyConfig()
    t0 = time.time()
    layers, readout = ff.train_toy(cfg)
    acc_scan, acc_readout = ff.evaluate(layers, readout, cfg)
    msg = (f"goodness scan {acc_scan:.3f}, softmax readout {acc_readout:.3f}, chance 0.100,"
           f" {time.time() - t0:.1f} s (measured 0.914 / 0.915)")
    assert acc_scan > 0.8 and acc_readout > 0.8, msg


def small_config(seed):
    return replace(ff.ToyConfig(), seed=seed, hidden=(32, 32), epochs=1, n_train=400, n_test=200)


def test_determinism():
    runs = [ff.train_toy(small_config(seed)) for seed in (3, 3, 4)]
    (la, ra), (lb, rb), (lc, _) = runs
    assert len(la) == len(lb) == 2, f"{len(la)}, {len(lb)} layers, hidden=(32, 32)"
    for a, b in zip(la + [ra], lb + [rb]):
        for k in a:
            assert np.array_equal(a[k], b[k]), f"same seed, {k} differs"
    assert not np.array_equal(la[0]["W"], lc[0]["W"]), "different seeds gave identical layers"
    cfg = small_config(3)
    assert ff.evaluate(la, ra, cfg) == ff.evaluate(lb, rb, cfg)


def test_cupy_step_matches_numpy(cupy_or_skip):
    cupy = cupy_or_skip
    cfg = replace(ff.ToyConfig(), hidden=(32, 32))
    layers, opts, x_pos, x_neg = toy_setup(cfg)
    layers_g = [{k: cupy.asarray(v) for k, v in layer.items()} for layer in layers]
    opts_g = [lm.adam_moments(layer) for layer in layers_g]
    for step in (1, 2):
        ff.ff_train_step(layers, opts, x_pos, x_neg, step, cfg)
        ff.ff_train_step(layers_g, opts_g, cupy.asarray(x_pos), cupy.asarray(x_neg), step, cfg)
    for a, b in zip(layers, layers_g):
        for k in a:  # float32, different BLAS: agree to rounding, not bit for bit
            np.testing.assert_allclose(cupy.asnumpy(b[k]), a[k], rtol=1e-4, atol=1e-5)

# --- the integer LM (train.py --method forward_forward) ---

import int_rnn_lm as lm  # noqa: E402
import train  # noqa: E402

# weights in int8 units are O(10-100), so a step of 1e-4 is what 1e-6 is for O(1) weights: with
# 1e-6 float64 rounding of the O(1) loss dominates (error ~ 1/h, measured 2.6e-7)
FD_H_INT8 = 1e-4


def lm_setup(D=16, L=2, rows=4, seq=12, seed=0, **cfg_kw):
    """A tiny LM, its FF state and the first few windows of the shipped text."""
    cfg = replace(ff.Config(), rows=rows, **cfg_kw)
    mcfg = lm.ModelConfig(d_model=D, n_layers=L)
    params = lm.init_params(mcfg, seed)
    train_bytes, val_bytes = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))
    stream = train.TrainStream(train_bytes, rows, seq)
    return cfg, mcfg, params, ff.init(params, cfg, mcfg, seed, ONE), stream, val_bytes


def random_rows(rng, R):
    """Alternating positive / negative rows with random weights summing to 1."""
    sign = np.array((1.0, -1.0) * (R // 2))
    weight = rng.random(R)
    return sign, weight / weight.sum()


def test_gru_cell_gradients_match_finite_differences():
    """[GRU learner] hand gradients of the GRU cell's local FF loss, with some of every clip saturated
    (so the masks are exercised) and theta at the median goodness (all rows matter)."""
    rng = np.random.default_rng(5)
    D, R = 16, 12
    w = {k: 60.0 * rng.standard_normal((D, D)) for k in ("w_f", "u_f", "w_h", "u_h")}
    w.update({k: 20.0 * rng.standard_normal(D) for k in ("b_f", "b_h")})
    n, s = 30.0 * rng.standard_normal((R, D)), 50.0 * rng.standard_normal((R, D))
    sign, weight = random_rows(rng, R)
    h = ff.gru_ff_loss_and_grads(w, n, s, sign, weight, 1.0)[2]
    theta = float(np.median((h * h).sum(axis=1) / (256 * D)))
    sat = np.mean(np.abs(np.clip(n @ w["w_f"].T / lm.matmul_divisor(D), -200, 200)) >= 127)
    assert 0.02 < sat < 0.9, f"saturated fraction {sat:.2f}: the clip masks would go untested"
    _, grads, _ = ff.gru_ff_loss_and_grads(w, n, s, sign, weight, theta)
    err = fd_max_rel_error(
        lambda: float(ff.gru_ff_loss_and_grads(w, n, s, sign, weight, theta)[0]), w, grads,
        h=FD_H_INT8)
    assert err < FD_TOL, (f"GRU cell grads: max relative error {err:.2e} >= {FD_TOL:.0e} "
                          "(measured 2.6e-09)")


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(6)
    D, R = 16, 12
    w = {"mlp1": 60.0 * rng.standard_normal((4 * D, D)),
         "mlp2": 20.0 * rng.standard_normal((D, 4 * D))}
    m = 30.0 * rng.standard_normal((R, D))
    sign, weight = random_rows(rng, R)
    o = ff.mlp_ff_loss_and_grads(w, m, sign, weight, 1.0)[2]
    sat = np.mean(np.abs(o) >= 127)
    assert 0.02 < sat < 0.9, f"saturated fraction {sat:.2f}: the clip masks would go untested"
    theta = float(np.median((o * o).sum(axis=1) / (256 * D)))
    _, grads, _ = ff.mlp_ff_loss_and_grads(w, m, sign, weight, theta)
    err = fd_max_rel_error(
        lambda: float(ff.mlp_ff_loss_and_grads(w, m, sign, weight, theta)[0]), w, grads,
        h=FD_H_INT8)
    assert err < FD_TOL, (f"MLP grads: max relative error {err:.2e} >= {FD_TOL:.0e} "
                          "(measured 1.3e-09)")


def test_surrogate_tracks_the_integer_cell():
    """[GRU learner] at int8 weights and integer inputs the float surrogate is the integer GRU step
    without the floors: within a few int8 units of it."""
    cfg, mcfg, params, _, stream, _ = lm_setup(L=1)
    tokens, _ = stream.batch(0)
    n, s_prev, _, _, _, _ = ff.block_states(params, "l0.", lm.embed(params, tokens[:, :-1], None),
                                            lm.zero_hidden(mcfg, cfg.rows)[0])
    h_int, _ = lm.gru_scan(params, "l0.", n, lm.zero_hidden(mcfg, cfg.rows)[0], None)
    w = {k: params["l0." + k].astype(np.float64) for k in ff.GRU_NAMES}
    D = mcfg.d_model
    R = n.size // D
    h = ff.gru_ff_loss_and_grads(w, n.reshape(R, D).astype(float), s_prev.reshape(R, D)
                                 .astype(float), np.ones(R), np.full(R, 1 / R), 1.0)[2]
    diff = np.abs(h - h_int.reshape(R, D)).max()
    assert diff <= 4, f"surrogate vs integer state: max difference {diff} int8 units (2.7)"


def test_block_states_and_teacher_forced_step_match_the_model():
    """block_states is lm.block bit for bit, and one teacher-forced step from the real previous
    states on the real bytes reproduces the scan exactly: a negative differs from its positive
    only by its byte [negatives]."""
    cfg, mcfg, params, _, stream, _ = lm_setup()
    tokens, _ = stream.batch(0)
    x = tokens[:, :-1]
    S, T, D = x.shape[0], x.shape[1], mcfg.d_model
    hidden = lm.zero_hidden(mcfg, S)
    _, final, acts = lm.forward(params, mcfg, x, hidden, return_activations=True)
    y, y_step = acts[0], acts[0].reshape(S * T, 1, D)
    for i in range(mcfg.n_layers):
        n, s_prev, h, m, _, y = ff.block_states(params, f"l{i}.", y, hidden[i])
        np.testing.assert_array_equal(y, acts[i + 1], err_msg=f"layer {i} output")
        np.testing.assert_array_equal(h[:, -1], final[i], err_msg=f"layer {i} state")
        *_, y_step = ff.block_states(params, f"l{i}.", y_step, s_prev.reshape(S * T, D))
        np.testing.assert_array_equal(y_step.reshape(S, T, D), y, err_msg=f"layer {i} step")


def test_unigram_negatives_come_from_the_batch():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 4, (8, 50)).astype(np.uint8)              # few symbols: many collisions
    uni, w_uni = ff.draw_negatives(x, 3, seed=0)
    assert set(np.unique(uni)) <= set(np.unique(x)), "unigram negatives come from the batch"
    np.testing.assert_array_equal(w_uni, (uni != x).astype(np.float32))
    assert 0.5 < w_uni.mean() < 0.95, f"kept fraction {w_uni.mean():.2f} for 4 symbols"


def flat_state(params, state):
    return {**{"param/" + k: v.copy() for k, v in params.items()},
            **{"state/" + k: v.copy() for k, v in state.items()}}


def test_lm_layer_step_touches_only_its_block():
    """Locality: block 0's local step changes block 0's int8 weights, masters and moments and
    nothing else: not block 1, not the embedding, the norms, the head or the readout."""
    cfg, mcfg, params, state, stream, _ = lm_setup()
    _, state, _ = ff.step(params, state, stream.batch(0), 0, cfg, mcfg, 0, ONE)
    before = flat_state(params, state)
    rng = np.random.default_rng(8)
    R, D = 20, mcfg.d_model
    rows = tuple(np.rint(30 * rng.standard_normal((R, D))).astype(np.float32) for _ in range(3))
    sign, weight = random_rows(rng, R)
    ff.layer_step(params, state, 0, rows, sign.astype(np.float32), weight.astype(np.float32),
                  1, cfg)
    after = flat_state(params, state)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    own = {f"{kind}{pre}l0.{k}" for k in ff.GRU_NAMES + ff.MLP_NAMES
           for kind, pre in (("param/", ""), ("state/", "master."), ("state/", "adam_m."),
                             ("state/", "adam_v."))}
    assert changed <= own, f"outside block 0: {sorted(changed - own)}"
    assert {f"state/master.l0.{k}" for k in ff.GRU_NAMES + ff.MLP_NAMES} <= changed


def test_lower_layers_ignore_layers_above():
    """With unigram negatives only (t < hard_after), block 0's whole trajectory over several
    steps is the same whatever block 1's weights are (no gradient or signal flows down; the
    goodness predictor's negatives [goodness predictor] sum every layer's goodness, a top-down signal)."""
    runs = []
    for flip in (False, True):
        cfg, mcfg, params, state, stream, _ = lm_setup(hard_after=10)
        if flip:
            for k in ff.GRU_NAMES + ff.MLP_NAMES:
                params["l1." + k] = lm.sat8(-3 * lm.wide(params["l1." + k]))
                state["master.l1." + k] = params["l1." + k].astype(np.float32)
        for t in range(3):
            params, state, _ = ff.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
        runs.append(flat_state(params, state))
    a, b = runs
    block0 = [k for k in a if ".l0." in k or k.startswith("param/l0.")]
    assert len(block0) >= 4 * len(ff.GRU_NAMES + ff.MLP_NAMES), f"block 0's tensors: {block0}"
    for k in block0:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["param/l1.w_f"], b["param/l1.w_f"])  # the test can fail


def test_step_quantises_masters_and_leaves_untrained_tensors():
    cfg, mcfg, params, state, stream, _ = lm_setup()
    new, new_state = params, state
    for t in range(2):
        new, new_state, _ = ff.step(new, new_state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    trained = {f"l{i}.{k}" for i in range(mcfg.n_layers) for k in ff.GRU_NAMES + ff.MLP_NAMES}
    assert trained <= set(params), sorted(trained - set(params))
    for k in params:
        if k in trained:
            master = new_state["master." + k]
            expect = np.clip(np.rint(master), -127, 127).astype(np.int8)   # [masters]
            np.testing.assert_array_equal(new[k], expect, err_msg=k)
        else:
            np.testing.assert_array_equal(new[k], params[k], err_msg=f"{k} is not trained")
    assert any(not np.array_equal(new[k], params[k]) for k in trained), "nothing moved"


def test_predict_is_normalised():
    cfg, mcfg, params, state, stream, val_bytes = lm_setup()
    for t in range(3):
        params, state, _ = ff.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    windows = train.val_windows(val_bytes, 3, 20)
    log2p, hidden = ff.predict(params, state, mcfg)(windows[:, :-1], lm.zero_hidden(mcfg, 3))
    assert log2p.shape == (3, 20, 256) and log2p.dtype == np.float64
    assert hidden.shape == (mcfg.n_layers, 3, mcfg.d_model) and hidden.dtype == np.int8
    total = np.exp2(log2p).sum(axis=-1)
    assert np.abs(total - 1).max() < 1e-9, f"sum of p - 1: {np.abs(total - 1).max():.1e}"
    assert np.ptp(log2p) > 0.1, "the readout did not move off uniform"


def test_short_lm_run_lowers_val_bpb():
    cfg, mcfg, params, state, stream, val_bytes = lm_setup(D=32, L=1, rows=32, seq=50)
    windows = train.val_windows(val_bytes, 16, 64)
    v0 = lm.evaluate(params, mcfg, windows, ff.predict(params, state, mcfg))
    t0 = time.time()
    for t in range(40):
        params, state, stats = ff.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    v1 = lm.evaluate(params, mcfg, windows, ff.predict(params, state, mcfg))
    msg = (f"val bits/byte {v0:.3f} -> {v1:.3f} in 40 steps ({time.time() - t0:.1f} s); "
           f"FF losses {stats['ff_l0_gru']:.3f} / {stats['ff_l0_mlp']:.3f} "
           "(measured 8.000 -> 3.969, FF losses 0.778 / 0.712; unigram 4.83)")
    assert v0 == 8.0 and v1 < 4.6, msg


def test_lm_step_determinism():
    runs = []
    for seed in (3, 3, 4):
        cfg, mcfg, params, state, stream, _ = lm_setup(hard_after=1)
        for t in range(3):
            params, state, _ = ff.step(params, state, stream.batch(t), t, cfg, mcfg, seed, ONE)
        runs.append(flat_state(params, state))
    a, b, c = runs
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"same seed, {k} differs")
    assert not np.array_equal(a["state/master.l0.w_f"], c["state/master.l0.w_f"]), \
        "the seed had no effect on the negatives"


@pytest.mark.parametrize("field,value,message", [
    ("rows", 0, "rows must be >= 1"), ("theta", 0.0, "theta must be > 0"),
    ("readout_lr", 0.0, "readout_lr > 0"),
    ("hard_after", -1, "hard_after must be >= 0"),
    ("scan_positions", 0, "scan_positions must be >= 1"),
    ("predictor", "scan", "predictor must be readout or goodness")])
def test_check_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ff.check_config(replace(ff.Config(), **{field: value}))


def test_check_config_rejects_a_reservoir_goodness_run():
    with pytest.raises(ValueError, match="the reservoir baseline trains only the readout"):
        ff.check_config(replace(ff.Config(), reservoir=True, predictor="goodness"))


# --- the goodness predictor [goodness predictor] and the reservoir baseline ---

def loop_goodness(params, mcfg, prefix):
    """Reference for candidate_goodness: the LM over the prefix (N,) bytes, then each of the
    256 bytes fed alone from its final state, one lm call per byte and layer. (256,) int64."""
    _, hidden = lm.forward(params, mcfg, prefix[None, :], lm.zero_hidden(mcfg, 1))
    G = np.zeros(256, np.int64)
    for c in range(256):
        y = lm.wide(params["emb"][[[c]]])                         # (1, 1, D)
        for i in range(mcfg.n_layers):
            p = f"l{i}."
            h, _ = lm.gru_scan(params, p, lm.int_norm(y, lm.wide(params[p + "ln1"])),
                               hidden[i], None)
            y = lm.clip8(y + h)
            o = lm.mlp(params, p, lm.int_norm(y, lm.wide(params[p + "ln2"])), None)
            y = lm.clip8(y + o)
            G[c] += int((h.astype(np.int64) ** 2).sum() + (o.astype(np.int64) ** 2).sum())
    return G


def test_goodness_predictor_is_a_normalised_scan_matching_a_byte_loop():
    """[goodness predictor] predict with --predictor goodness: a distribution over 256 bytes (sums to 1
    within 1e-9) equal to softmax(beta G) of a per-byte loop, for every position."""
    cfg, mcfg, params, state, stream, val_bytes = lm_setup(D=16, L=2, predictor="goodness")
    for t in range(2):
        params, state, _ = ff.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    state["goodness.beta"][:] = 3.0                               # a temperature that matters
    tokens = train.val_windows(val_bytes, 2, 5)[:, :-1]              # (2, 5)
    h0 = lm.zero_hidden(mcfg, 2)
    log2p, hidden = ff.predict(params, state, mcfg)(tokens, h0)
    assert log2p.shape == (2, 5, 256) and log2p.dtype == np.float64
    total = np.exp2(log2p).sum(axis=-1)
    assert np.abs(total - 1).max() < 1e-9, f"sum of p - 1: {np.abs(total - 1).max():.1e}"
    np.testing.assert_array_equal(hidden, lm.forward(params, mcfg, tokens, h0)[1])
    for i, t in np.ndindex(2, 5):
        G = loop_goodness(params, mcfg, tokens[i, :t + 1]) / (256.0 * mcfg.d_model)
        a = 3.0 * G - (3.0 * G).max()
        expect = (a - np.log(np.exp(a).sum())) / np.log(2)
        np.testing.assert_allclose(log2p[i, t], expect, rtol=0, atol=1e-12,
                                   err_msg=f"window {i}, position {t}")
    assert np.ptp(log2p) > 0.1, "beta g is flat: the comparison would test nothing"


def test_goodness_beta_gradient_matches_finite_differences():
    rng = np.random.default_rng(9)
    g = rng.integers(0, 3000, (6, 256)) / 1024.0                  # goodness-sized values
    real = rng.integers(0, 256, 6)
    beta, h = 1.3, 1e-6
    ce = lambda b: float(ff.goodness_ce_and_grad(g, real, b)[0])  # noqa: E731
    fd = (ce(beta + h) - ce(beta - h)) / (2 * h)
    grad = float(ff.goodness_ce_and_grad(g, real, beta)[1])
    assert abs(fd - grad) <= FD_TOL * abs(fd), f"d CE / d beta: {grad} vs finite diff {fd}"


def test_goodness_negatives_are_wrong_bytes_and_beta_takes_a_step():
    """[goodness predictor] the scanned positions get a wrong byte from the goodness predictor, which starts
    uniform (beta = 0), and beta takes one Adam step (size readout_lr)."""
    cfg, mcfg, params, state, stream, _ = lm_setup(D=16, L=2, scan_positions=40)
    tokens, _ = stream.batch(0)
    x = tokens[:, :-1]
    y, s_prev = lm.embed(params, x, None), []
    for i in range(mcfg.n_layers):
        _, s, _, _, _, y = ff.block_states(params, f"l{i}.", y, state["hidden"][i])
        s_prev.append(s.reshape(-1, mcfg.d_model))
    idx, neg, bpb = ff.goodness_scan_step(params, state, np.stack(s_prev), x.reshape(-1), 0,
                                          cfg, mcfg, 0)
    assert len(set(idx.tolist())) == 40 and np.all(neg != x.reshape(-1)[idx])
    assert bpb == 8.0, f"beta = 0 is the uniform predictor, got {bpb} bits/byte"
    step = abs(float(state["goodness.beta"][0]))
    assert abs(step - cfg.readout_lr) < 1e-6, f"beta moved by {step}, Adam's first step: lr"


def test_reservoir_is_the_frozen_lm_with_the_same_readout():
    """The baseline (--reservoir true) leaves every int8 weight bit-identical, and its readout
    is bit for bit the readout of FF with frozen layers (--lr 0): same features, same data."""
    readouts = []
    for kw in (dict(reservoir=True), dict(lr=0.0)):
        cfg, mcfg, params, state, stream, _ = lm_setup(**kw)
        before = {k: v.copy() for k, v in params.items()}
        for t in range(3):
            params, state, _ = ff.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
        for k in before:
            np.testing.assert_array_equal(params[k], before[k], err_msg=f"{kw}: {k} moved")
        readouts.append(ff.readout_view(state))
    for k in ("R", "r"):
        np.testing.assert_array_equal(readouts[0][k], readouts[1][k], err_msg=k)
    assert np.abs(readouts[0]["R"]).max() > 0, "the readout did not train"
