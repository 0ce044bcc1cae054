"""Tests for backprop.py: the hand-written BPTT gradient against finite differences (saturated
clips and a carried state included), the float twin against the integer model, the int8
deployment score, the tape's byte count, the carried state, learning, config checks and cupy ==
numpy (on the stand-in tests/strict_cupy.py where no GPU is usable).

$ python -m pytest tests/test_backprop.py -q
"""
import re
import time
from dataclasses import replace

import numpy as np
import pytest

import backprop as bp
import int_rnn_lm as lm
import train
from conftest import ONE

TINY = lm.ModelConfig(d_model=16, n_layers=2)
SHAPES = [TINY, replace(TINY, mlp_mult=2), replace(TINY, mlp_mult=0)]   # the MLP 4D, 2D, none


def twin_loss(w, mcfg, tokens, hidden):
    """The loss from the forward alone (no backward code): mean -log2 p of the next bytes."""
    logits, _, _ = bp.twin_forward(w, mcfg, tokens[:, :-1], hidden)
    log2p = bp.log2_softmax(logits)                                      # (T, S, 256)
    y = tokens[:, 1:].T.astype(np.int64)
    return -float(np.take_along_axis(log2p, y[..., None], axis=-1).mean())


def saturating_model(seed=0, rows=3, seq_len=8, mcfg=TINY):
    """A tiny float64 model whose clips saturate: the init's matrices and norm gains x 3, off
    the integer grid, biases U(-60, 60), a carried state U(-127, 127), and one byte's embedding
    row near 0 (so that the norm's divisor clip r >= 1 binds there)."""
    rng = np.random.default_rng(seed)
    w = {}
    for k, v in lm.init_params(mcfg, seed).items():
        v = v.astype(np.float64) + rng.uniform(-0.5, 0.5, v.shape)
        if v.ndim == 2:
            v = np.clip(3 * v, -127, 127)
        elif k.split(".")[-1].startswith("ln"):
            v = 3 * v
        else:
            v = rng.uniform(-60, 60, v.shape)
        w[k] = v
    tokens = rng.integers(0, 256, (rows, seq_len + 1)).astype(np.uint8)
    w["emb"][tokens[0, 0]] *= 0.005
    hidden = rng.uniform(-127, 127, (mcfg.n_layers, rows, mcfg.d_model))
    return w, tokens, hidden


@pytest.mark.parametrize("mcfg", SHAPES, ids=["mlp4", "mlp2", "no_mlp"])
def test_gradients_match_finite_differences_with_saturation_and_carried_state(mcfg):
    """Every parameter's hand gradient vs float64 central differences (h = 1e-5) on 12 random
    entries of each (emb: rows of bytes in the window), D = 16, L = 2, 3 x 8 bytes from a
    nonzero carried state; every clip that can saturate does somewhere (h and f' cannot: both
    are convex combinations of values in [-127, 127]), and the norm's divisor clip binds. The
    MLP D -> 4D -> D, D -> 2D -> D and none (--mlp_mult 4, 2, 0). Max relative error |fd -
    grad| / max|fd| per parameter measured 3.6e-6, 2.2e-7, 6.3e-8 (4D: the head, the loss's
    float64 rounding / h; h = 1e-4 gives 5.4e-7 there but 2.2e-5 for the 2D model's emb, the
    difference's h^2 curvature term, and h = 1e-3 crosses a clip's kink); bound 1e-5."""
    w, tokens, hidden = saturating_model(mcfg=mcfg)
    _, _, tape = bp.twin_forward(w, mcfg, tokens[:, :-1], hidden)
    assert len(tape["blocks"]) == mcfg.n_layers, f"{len(tape['blocks'])} blocks on the tape"
    for l, block in enumerate(tape["blocks"]):
        for k in ("A_f", "B_f", "f", "A_h", "B_h", "hh", "y_mid") + ("z", "o") * (mcfg.mlp_mult > 0):
            assert (~bp.inside(block[k])).any(), f"block {l}: no saturated {k}"
    assert (~bp.inside(tape["logits"])).any() and (tape["blocks"][0]["n_r"] == 1).any()
    _, grads, _ = bp.loss_and_grads(w, mcfg, tokens, hidden)
    assert set(grads) == set(w)
    rng, h, errors = np.random.default_rng(1), 1e-5, {}
    for name, v in w.items():
        idx = [tuple(int(rng.integers(0, n)) for n in v.shape) for _ in range(12)]
        if name == "emb":
            idx = [(int(b), int(rng.integers(0, v.shape[1]))) for b in tokens[:, :-1].ravel()[:12]]
        fd = []
        for i in idx:
            old = v[i]
            v[i] = old + h
            up = twin_loss(w, mcfg, tokens, hidden)
            v[i] = old - h
            down = twin_loss(w, mcfg, tokens, hidden)
            v[i] = old
            fd.append((up - down) / (2 * h))
        fd, g = np.array(fd), np.array([grads[name][i] for i in idx])
        assert np.isfinite(fd).all() and np.isfinite(g).all(), f"{name}: NaN/inf: {fd}, {g}"
        assert np.abs(fd).max() > 0, f"{name}: the sampled entries have no gradient"
        errors[name] = np.abs(fd - g).max() / np.abs(fd).max()
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, f"worst {worst}: {errors[worst]:.1e}; all {errors}"


def test_the_state_carries_across_windows_and_the_gradient_stops_at_the_window_start():
    """Two windows in a row, the second from the first's final state, give the logits of one
    window of both (the state carries exactly). The second window's gradient is the truncated
    one: the finite difference with the carried state held fixed, not the one where the
    state is recomputed through the first window with the perturbed weights."""
    w, tokens, hidden = saturating_model(seq_len=10)
    x = tokens[:, :-1]
    whole, h_whole, _ = bp.twin_forward(w, TINY, x, hidden)
    first, h_mid, _ = bp.twin_forward(w, TINY, x[:, :4], hidden)
    second, h_end, _ = bp.twin_forward(w, TINY, x[:, 4:], h_mid)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    np.testing.assert_array_equal(h_end, h_whole)
    _, grads, _ = bp.loss_and_grads(w, TINY, tokens[:, 4:], h_mid)
    i, h, u_f = (3, 5), 1e-5, w["l1.u_f"]
    fixed, through = [], []
    for sign in (1, -1):
        u_f[i] += sign * h
        fixed.append(twin_loss(w, TINY, tokens[:, 4:], h_mid))
        state = bp.twin_forward(w, TINY, x[:, :4], hidden)[1]           # the full BPTT path
        through.append(twin_loss(w, TINY, tokens[:, 4:], state))
        u_f[i] -= sign * h
    g, g_fixed, g_through = grads["l1.u_f"][i], *(np.diff(v[::-1])[0] / (2 * h)
                                                    for v in (fixed, through))
    assert abs(g - g_fixed) < 1e-6 * abs(g_fixed) + 1e-12, (g, g_fixed)
    assert abs(g_through - g_fixed) > 0.01 * abs(g_fixed), (g_through, g_fixed)


@pytest.mark.parametrize("mcfg", SHAPES, ids=["mlp4", "mlp2", "no_mlp"])
def test_twin_with_its_floors_put_back_is_the_integer_model(monkeypatch, mcfg):
    """The twin departs from the integer layers only by the floors it drops: with np.floor put
    back at each `dropped_floor` it gives lm.forward's logits and final state bit for bit (every
    value is then an integer, exact in float64), at the init and on saturating int8 weights,
    each from a random int8 carried state."""
    monkeypatch.setattr(bp, "dropped_floor", np.floor)
    w_sat, tokens, hidden = saturating_model(mcfg=mcfg)
    rng = np.random.default_rng(2)
    for params in (lm.init_params(mcfg, 0), {k: bp.quantise(v) for k, v in w_sat.items()}):
        h0 = rng.integers(-127, 128, hidden.shape).astype(np.int8)
        logits_int, h_int = lm.forward(params, mcfg, tokens, h0)
        w = {k: v.astype(np.float64) for k, v in params.items()}
        logits, h, tape = bp.twin_forward(w, mcfg, tokens, h0.astype(np.float64))
        np.testing.assert_array_equal(logits.transpose(1, 0, 2), logits_int)
        np.testing.assert_array_equal(h, h_int)
    assert (~bp.inside(tape["blocks"][1]["y_mid"])).any(), "the residual never saturated"


def lm_setup(D=32, L=1, rows=16, seq=32, lr=0.3):
    cfg = bp.Config(rows=rows, lr=lr)
    mcfg = lm.ModelConfig(D, L)
    params = lm.init_params(mcfg, 0)
    train_bytes, val_bytes = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))
    return (cfg, mcfg, params, bp.init(params, cfg, mcfg, 0, ONE),
            train.TrainStream(train_bytes, rows, seq), val_bytes)


def test_twin_on_the_int8_weights_tracks_the_integer_model():
    """After 40 steps, the twin run with the int8 weights (as floats) against lm.forward on the
    same validation windows: logits within 3 units on average (measured 1.96; their spread is
    44), bits/byte within 0.02 (measured 0.0008): what dropping the floors costs. (Rounding the
    twin's values up by 1/2 where it drops a floor instead gives 4.1 units and 0.030 bits.)"""
    cfg, mcfg, params, state, stream, val_bytes = lm_setup()
    for t in range(40):
        params, state, _ = bp.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    windows = train.val_windows(val_bytes, 8, 64)
    w = {k: v.astype(np.float32) for k, v in params.items()}
    logits_int, _ = lm.forward(params, mcfg, windows[:, :-1], lm.zero_hidden(mcfg, 8))
    logits, _, _ = bp.twin_forward(w, mcfg, windows[:, :-1], np.zeros((1, 8, 32), np.float32))
    diff = np.abs(logits.transpose(1, 0, 2) - logits_int)
    twin_state = {**state, **{"master." + k: v for k, v in w.items()}}
    gap = abs(lm.evaluate(params, mcfg, windows)
              - lm.evaluate(params, mcfg, windows, bp.predict(params, twin_state, mcfg)))
    assert diff.mean() < 3 and gap < 0.02, (diff.mean(), logits_int.std(), gap)


def test_params_are_the_rounded_masters_and_val_scores_is_the_integer_forward():
    """The step returns I8(round half to even(master)) of masters kept in [-127, 127], and
    val_bpb_int8 is exactly the bits/byte of a direct integer forward of those weights."""
    np.testing.assert_array_equal(bp.quantise(np.array([0.5, 1.5, -0.5, -2.5, 126.7, 300, -300])),
                                  np.array([0, 2, 0, -2, 127, 127, -127], np.int8))
    cfg, mcfg, params, state, stream, val_bytes = lm_setup(lr=50.0)   # big steps: some rail
    for t in range(3):
        params, state, _ = bp.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    masters = bp.masters(state)
    assert max(np.abs(v).max() for v in masters.values()) == 127.0
    for k, v in masters.items():
        assert params[k].dtype == np.int8
        np.testing.assert_array_equal(params[k], np.rint(v).astype(np.int8), err_msg=k)
    windows = train.val_windows(val_bytes, 4, 40)
    logits, _ = lm.forward(params, mcfg, windows[:, :-1], lm.zero_hidden(mcfg, 4))
    want = lm.bits_per_byte(logits, windows[:, 1:])
    assert bp.val_scores(params, state, mcfg, windows) == {"val_bpb_int8": want}


def test_activation_bytes_counts_the_tape():
    """activation_bytes is the byte count of the arrays the forward keeps for the backward."""
    for D, L, k, rows, T in ((16, 2, 4, 3, 8), (64, 1, 4, 5, 7), (16, 2, 0, 3, 8), (32, 1, 2, 2, 5)):
        mcfg = lm.ModelConfig(D, L, k)
        w = {k: v.astype(np.float32) for k, v in lm.init_params(mcfg, 0).items()}
        tokens = np.random.default_rng(0).integers(0, 256, (rows, T)).astype(np.uint8)
        _, _, tape = bp.twin_forward(w, mcfg, tokens, np.zeros((L, rows, D), np.float32))
        arrays = [v for b in tape["blocks"] for v in b.values()]
        arrays += [v for k, v in tape.items() if k not in ("x", "blocks")]
        kept = {id(a): a.nbytes for a in arrays}      # y of block l + 1 is y_out of block l
        assert sum(kept.values()) == bp.activation_bytes(mcfg, rows, T), (D, L, k)


def test_reset_starts_from_zero_and_predict_matches_the_forward_in_chunks():
    """A reset step ignores the carried state; predict is the twin's normalised log2 p over
    windows longer than its time chunk, carrying the state between chunks."""
    cfg, mcfg, params, state, stream, val_bytes = lm_setup(D=16, rows=4, seq=8)
    tokens, _ = stream.batch(0)
    noisy = dict(state, hidden=np.full_like(state["hidden"], 50.0))
    a = bp.step(params, state, (tokens, True), 0, cfg, mcfg, 0, ONE)
    b = bp.step(params, noisy, (tokens, True), 0, cfg, mcfg, 0, ONE)
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
    assert not np.array_equal(noisy["hidden"], a[1]["hidden"])       # inputs untouched
    windows = train.val_windows(val_bytes, 3, bp.PREDICT_CHUNK + 20)
    log2p, hidden = bp.predict(a[0], a[1], mcfg)(windows[:, :-1], lm.zero_hidden(mcfg, 3))
    logits, h, _ = bp.twin_forward(bp.masters(a[1]), mcfg, windows[:, :-1],
                                   np.zeros_like(hidden))
    np.testing.assert_allclose(log2p, bp.log2_softmax(logits.astype(np.float64))
                               .transpose(1, 0, 2), rtol=0, atol=1e-5)
    np.testing.assert_allclose(hidden, h, rtol=0, atol=1e-4)
    assert log2p.dtype == np.float64 and np.abs(np.exp2(log2p).sum(-1) - 1).max() < 1e-9


def test_short_run_lowers_val_bpb_float_and_int8():
    """60 steps at D = 32 (16 x 32 bytes each): val bits/byte 8.55 -> 3.96 float, 3.97 int8
    (measured); both must end below 4.4 (unigram 4.83)."""
    cfg, mcfg, params, state, stream, val_bytes = lm_setup()
    windows = train.val_windows(val_bytes, 16, 64)
    v0 = lm.evaluate(params, mcfg, windows, bp.predict(params, state, mcfg))
    t0 = time.time()
    for t in range(60):
        params, state, stats = bp.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
    v1 = lm.evaluate(params, mcfg, windows, bp.predict(params, state, mcfg))
    v1_int8 = bp.val_scores(params, state, mcfg, windows)["val_bpb_int8"]
    msg = (f"val {v0:.3f} -> {v1:.3f} float, {v1_int8:.3f} int8, train loss "
           f"{float(stats[bp.LOSS]):.3f} in {time.time() - t0:.1f} s")
    assert v0 > 8 and v1 < 4.4 and v1_int8 < 4.4, msg


@pytest.mark.parametrize("field,value,message", [
    ("rows", 0, "rows must be >= 1"), ("lr", 0.0, "lr must be a positive number"),
    ("lr", float("inf"), "lr must be a positive number"),
    ("adam_b1", 1.0, "adam_b1 and adam_b2 must be in [0, 1)"),
    ("adam_b2", -0.1, "adam_b1 and adam_b2 must be in [0, 1)"),
    ("adam_eps", 0.0, "adam_eps must be > 0")])
def test_check_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        bp.check_config(replace(bp.Config(), **{field: value}))
    assert not hasattr(bp, "check_split"), "backprop is one process: train.py refuses mpirun"


def test_numpy_and_cupy_agree(cupy_or_skip):
    """Three steps on both backends (float32, different BLAS): loss and masters agree within
    1e-4 relative to each array's largest value."""
    cp = cupy_or_skip
    runs = []
    for xp in (np, cp):
        cfg, mcfg, params, state, stream, _ = lm_setup(D=16, L=2, rows=4, seq=8)
        params = {k: xp.asarray(v) for k, v in params.items()}
        state = bp.init(params, cfg, mcfg, 0, ONE)
        stream.xp = xp
        for t in range(3):
            params, state, stats = bp.step(params, state, stream.batch(t), t, cfg, mcfg, 0, ONE)
        runs.append((float(stats[bp.LOSS]), {k: lm.to_numpy(v) for k, v in state.items()}))
    (loss_a, a), (loss_b, b) = runs
    assert abs(loss_a - loss_b) < 1e-4 * abs(loss_a)
    assert a.keys() == b.keys() and a, "no state to compare"
    for k in a:
        assert np.isfinite(a[k]).all(), f"{k}: NaN/inf in NumPy's state"
        scale = max(float(np.abs(a[k]).max()), 1e-30)
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-4 * scale, err_msg=k)
