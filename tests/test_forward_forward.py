"""Tests for forward_forward.py: hand gradients vs finite differences, locality of the layer
updates, normalisation, the toy demo's accuracy, determinism and (with a GPU) cupy == numpy.

$ python -m pytest tests/test_forward_forward.py -q
"""
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import forward_forward as ff  # noqa: E402

FD_TOL = 1e-6  # float64 central differences with h = 1e-6 land near 1e-9; 1e-6 flags any bug


def fd_max_rel_error(loss_fn, params, grads, h=1e-6):
    """max over tensors of ||grad_fd - grad||_inf / ||grad_fd||_inf, every entry perturbed."""
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
        worst = max(worst, np.abs(fd - grads[k]).max() / np.abs(fd).max())
    return worst


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
    opts = [ff.init_adam(layer) for layer in layers]
    x, y = ff.make_toy_task(cfg, 0)
    x, y = x[:32], y[:32]
    x_neg = ff.embed_label(x, (y + 1) % cfg.n_classes, cfg)
    return layers, opts, ff.embed_label(x, y, cfg), x_neg


def snapshot(layers):
    return [{k: v.copy() for k, v in layer.items()} for layer in layers]


def test_layer_step_touches_only_its_layer():
    cfg = replace(ff.Config(), hidden=(32, 32, 32))
    layers, opts, x_pos, x_neg = toy_setup(cfg)
    before = snapshot(layers)
    x = np.concatenate([x_pos, x_neg])
    sign = np.concatenate([np.ones(len(x_pos)), -np.ones(len(x_neg))]).astype(x.dtype)
    h0 = ff.ff_forward(layers, x, cfg.norm_eps)[0]                # input of layer 2
    ff.ff_layer_step(layers[1], opts[1], h0, sign, 1, cfg)
    for i, (layer, old) in enumerate(zip(layers, before)):
        same = all(np.array_equal(layer[k], old[k]) for k in layer)
        assert same == (i != 1), f"layer {i}: changed={not same}, only layer 1 may change"


def test_lower_layers_ignore_everything_above():
    """Locality: a full training step gives layers <= l exactly the same update whatever the
    layers above them are (no gradient and no signal flows down)."""
    cfg = replace(ff.Config(), hidden=(32, 32, 32))
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
    cfg = ff.Config()
    t0 = time.time()
    layers, readout = ff.train_toy(cfg)
    acc_scan, acc_readout = ff.evaluate(layers, readout, cfg)
    msg = (f"goodness scan {acc_scan:.3f}, softmax readout {acc_readout:.3f}, chance 0.100,"
           f" {time.time() - t0:.1f} s (measured 0.914 / 0.915)")
    assert acc_scan > 0.8 and acc_readout > 0.8, msg


def small_config(seed):
    return replace(ff.Config(), seed=seed, hidden=(32, 32), epochs=1, n_train=400, n_test=200)


def test_determinism():
    runs = [ff.train_toy(small_config(seed)) for seed in (3, 3, 4)]
    (la, ra), (lb, rb), (lc, _) = runs
    for a, b in zip(la + [ra], lb + [rb]):
        for k in a:
            assert np.array_equal(a[k], b[k]), f"same seed, {k} differs"
    assert not np.array_equal(la[0]["W"], lc[0]["W"]), "different seeds gave identical layers"
    cfg = small_config(3)
    assert ff.evaluate(la, ra, cfg) == ff.evaluate(lb, rb, cfg)


def test_cupy_step_matches_numpy():
    cupy = pytest.importorskip("cupy")
    if not cupy.cuda.is_available():
        pytest.skip("cupy installed but no usable GPU")
    cfg = replace(ff.Config(), hidden=(32, 32))
    layers, opts, x_pos, x_neg = toy_setup(cfg)
    layers_g = [{k: cupy.asarray(v) for k, v in layer.items()} for layer in layers]
    opts_g = [ff.init_adam(layer) for layer in layers_g]
    for step in (1, 2):
        ff.ff_train_step(layers, opts, x_pos, x_neg, step, cfg)
        ff.ff_train_step(layers_g, opts_g, cupy.asarray(x_pos), cupy.asarray(x_neg), step, cfg)
    for a, b in zip(layers, layers_g):
        for k in a:  # float32, different BLAS: agree to rounding, not bit for bit
            np.testing.assert_allclose(cupy.asnumpy(b[k]), a[k], rtol=1e-4, atol=1e-5)
