r"""
Forward-Forward: train every layer with its own local objective, no backward pass across layers.

Paper: G. Hinton, "The Forward-Forward Algorithm: Some Preliminary Investigations",
arXiv 2212.13345 (2022).

Each layer sees positive data (an input with its true label written into it) and negative
data (the same input with a wrong label). It is trained to make its "goodness", the sum of
squared activities, high for positives and low for negatives. Between layers the activity
vector is length-normalised, so only its direction is passed up: the next layer cannot read
off the previous layer's goodness and has to find new features. The labels [FF-1]..[FF-5] are
ours (the paper's own numbering was not re-checked); [FF-1] is the paper's p(positive):

    [FF-1]  p(positive | h) = sigma(g - theta),  g = sum_j h_j^2,  h = relu(x_hat W + b)
    [FF-2]  L = softplus(theta - g) on positives  +  softplus(g - theta) on negatives
    [FF-3]  x_hat = x / ||x||   (length normalisation; no mean subtraction)
    [FF-4]  predict(x) = argmax_k  sum_{layers l >= 2} g_l(x with label k)     (goodness scan)
    [FF-5]  predict(x) = argmax softmax(F R + r),  F = [x_hat_2 | x_hat_3 | ...] of a
            neutral-label input                                               (softmax readout)

Hand-derived gradient of [FF-2] for one layer (s = +1 positive, -1 negative, N rows):
    dL/dg = -s * sigma(-s (g - theta)) / N,   dL/da = dL/dg * 2h,   dW = x_hat^T dL/da
(ReLU mask implied: h = 0 where a <= 0). Nothing flows to the layer below: its output is a
constant input here. So dW is Hebbian on positives and anti-Hebbian on negatives, each gated by
how wrong the layer currently is.

What this file simplifies or departs from:
- toy task generated in code (10-class "noisy prototype digits", 64 features), not MNIST;
- all layers take their local step on every minibatch (greedy only in that nothing flows
  down); some re-implementations train one layer to convergence before the next;
- [FF-3] rescales to RMS 1 (length sqrt(D)) instead of length 1, as loeweX's code does, so
  that init scales do not depend on width; threshold theta = theta_per_unit * H (loeweX: H);
- negatives use uniformly random wrong labels (no hard negatives, no hybrid images);
- the loss is averaged over the 2B rows (half of Hinton's per-pair sum); Adam is scale-free;
- no peer normalisation, no weight decay, no jittered data.

Shapes: B = batch, D = input features, H = layer width, C = classes, L = number of layers.

$ python forward_forward.py
"""
import time
from dataclasses import dataclass

import numpy as np

try:  # optional GPU backend; every array function below is written against `xp`
    import cupy
except ImportError:
    cupy = None


@dataclass
class Config:
    seed: int = 0                      # the one seed every generator is derived from
    hidden: tuple = (256, 256, 256)    # widths of the FF layers
    theta_per_unit: float = 1.0        # threshold theta = theta_per_unit * H  [FF-1]
    lr: float = 3e-3                   # Adam learning rate of the FF layers
    readout_lr: float = 3e-3           # Adam learning rate of the softmax readout [FF-5]
    adam_betas: tuple = (0.9, 0.999)   # Adam moment decay rates
    adam_eps: float = 1e-8             # Adam denominator epsilon
    norm_eps: float = 1e-8             # epsilon inside the normalisation [FF-3]
    label_value: float = 1.0           # value written into the label slot of the input
    batch_size: int = 100              # positives per minibatch (plus as many negatives)
    epochs: int = 10                   # passes over the toy training set
    # toy task ("noisy prototype digits")
    n_classes: int = 10                # C; the first C features are a blank "border"
    n_features: int = 64               # D = C border features + D - C binary "pixels"
    n_modes: int = 3                   # prototypes ("writing styles") per class
    flip_prob: float = 0.15            # probability that a pixel of the prototype is flipped
    pixel_noise: float = 0.3           # std of the Gaussian noise added to every pixel
    n_train: int = 5000                # training examples
    n_test: int = 2000                 # test examples


# --- core: local objective and hand-derived gradients ---

def get_xp(x):
    """numpy or cupy, whichever module owns array x."""
    return cupy.get_array_module(x) if cupy is not None else np


def make_rng(seed, *keys):
    """A host generator that is a pure function of (seed, *keys); no global RNG state."""
    return np.random.default_rng([seed, *keys])


def rms_normalise(h, eps):
    """[FF-3] keep the direction of each row, drop its length (scaled to RMS 1)."""
    xp = get_xp(h)
    return h / xp.sqrt(xp.mean(h * h, axis=1, keepdims=True) + eps)  # (B, H)


def sigmoid(z):
    xp = get_xp(z)
    return 0.5 * (1.0 + xp.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def init_layers(cfg, d_in, xp):
    """He-initialised ReLU layers; drawn on the host so both backends start identical."""
    rng = make_rng(cfg.seed, 0)
    layers, fan_in = [], d_in
    for width in cfg.hidden:
        W = rng.standard_normal((fan_in, width)) * np.sqrt(2.0 / fan_in)
        layers.append({"W": xp.asarray(W, dtype=xp.float32),  # (D_in, H)
                       "b": xp.zeros(width, dtype=xp.float32)})  # (H,)
        fan_in = width
    return layers


def init_adam(params):
    xp = get_xp(params[next(iter(params))])
    return {"m": {k: xp.zeros_like(v) for k, v in params.items()},
            "v": {k: xp.zeros_like(v) for k, v in params.items()}}


def adam_step(params, grads, state, step, lr, cfg):
    """In-place Adam update of one parameter dict (step counts from 1)."""
    xp = get_xp(params[next(iter(params))])
    b1, b2 = cfg.adam_betas
    for k, g in grads.items():
        m, v = state["m"][k], state["v"][k]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** step)
        v_hat = v / (1 - b2 ** step)
        params[k] -= lr * m_hat / (xp.sqrt(v_hat) + cfg.adam_eps)


def ff_layer_forward(layer, x, eps):
    """Normalise the (constant) input, then one ReLU layer. Returns x_hat and h."""
    xp = get_xp(x)
    x_hat = rms_normalise(x, eps)                                 # (B, D_in)  [FF-3]
    h = xp.maximum(x_hat @ layer["W"] + layer["b"], 0.0)          # (B, H)
    return x_hat, h


def ff_layer_loss_and_grads(layer, x, sign, theta, eps):
    """Local FF loss of one layer and its gradients w.r.t. that layer only.

    x: (N, D_in) raw output of the layer below (or the input), a constant here.
    sign: (N,) +1 for positive rows, -1 for negative rows. Returns (loss, grads, h)."""
    xp = get_xp(x)
    x_hat, h = ff_layer_forward(layer, x, eps)                    # (N, D_in), (N, H)
    g = xp.sum(h * h, axis=1)                                     # (N,) goodness [FF-1]
    margin = -sign * (g - theta)                                  # (N,)
    loss = xp.mean(xp.logaddexp(0.0, margin))                     # [FF-2] softplus
    dg = -sign * sigmoid(margin) / x.shape[0]                     # (N,) dL/dg
    da = dg[:, None] * 2.0 * h                                    # (N, H) ReLU mask via h = 0
    grads = {"W": x_hat.T @ da,                                   # (D_in, H)
             "b": xp.sum(da, axis=0)}                             # (H,)
    return loss, grads, h


def ff_layer_step(layer, opt, x, sign, step, cfg):
    """One local Adam step of one layer. Returns its loss and its (pre-update) output h."""
    theta = cfg.theta_per_unit * layer["W"].shape[1]
    loss, grads, h = ff_layer_loss_and_grads(layer, x, sign, theta, cfg.norm_eps)
    adam_step(layer, grads, opt, step, cfg.lr, cfg)
    return loss, h


def ff_train_step(layers, opts, x_pos, x_neg, step, cfg):
    """Every layer takes one local step; layer l+1 sees layer l's output as plain data.

    All outputs are computed before their layer is updated, so the step of layer l
    depends only on layers <= l and never on anything above it."""
    xp = get_xp(x_pos)
    x = xp.concatenate([x_pos, x_neg])                            # (2B, D)
    sign = xp.concatenate([xp.ones(len(x_pos)), -xp.ones(len(x_neg))]).astype(x.dtype)
    losses = []
    for layer, opt in zip(layers, opts):
        loss, x = ff_layer_step(layer, opt, x, sign, step, cfg)   # x <- h: no gradient path
        losses.append(float(loss))  # note: a CPU-GPU sync point on cupy
    return losses


def ff_forward(layers, x, eps):
    """Activities h_l of every layer for input x (no learning)."""
    hs = []
    for layer in layers:
        _, x = ff_layer_forward(layer, x, eps)                    # (B, H_l)
        hs.append(x)
    return hs


def ff_goodness(layers, x, eps, skip_first=True):
    """[FF-4] goodness summed over layers (skipping layer 1, which sees the label raw)."""
    hs = ff_forward(layers, x, eps)
    hs = hs[1:] if skip_first else hs
    return sum((h * h).sum(axis=1) for h in hs)                  # (B,)


def ff_features(layers, x, eps):
    """[FF-5] features for the softmax readout: normalised activities of layers >= 2."""
    xp = get_xp(x)
    hs = ff_forward(layers, x, eps)[1:]
    return xp.concatenate([rms_normalise(h, eps) for h in hs], axis=1)  # (B, sum H_l)


def softmax(o):
    xp = get_xp(o)
    e = xp.exp(o - o.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def readout_loss_and_grads(readout, feats, y):
    """[FF-5] mean cross-entropy of a linear softmax on fixed features (plain logistic
    regression: its gradient never enters the FF layers)."""
    xp = get_xp(feats)
    o = feats @ readout["R"] + readout["r"]                       # (B, C)
    lse = o.max(axis=1) + xp.log(xp.exp(o - o.max(axis=1, keepdims=True)).sum(axis=1))
    loss = xp.mean(lse - o[xp.arange(len(y)), y])
    G = softmax(o)                                                # (B, C)
    G[xp.arange(len(y)), y] -= 1.0
    G /= len(y)                                                   # (B, C) dL/do = (Q - Y)/B
    return loss, {"R": feats.T @ G, "r": G.sum(axis=0)}          # (F, C), (C,)


# --- toy classification task ---

def make_toy_task(cfg, split):
    """"Noisy prototype digits": each class has n_modes random binary pixel patterns; an
    example is one of them with flipped pixels and Gaussian noise. The first C features are
    a blank border (always 0) that FF overwrites with the label. split: 0 train, 1 test."""
    C, P = cfg.n_classes, cfg.n_features - cfg.n_classes
    protos = make_rng(cfg.seed, 1).random((C, cfg.n_modes, P)) < 0.5  # (C, M, P) shared
    rng = make_rng(cfg.seed, 1, split)
    n = cfg.n_train if split == 0 else cfg.n_test
    y = rng.integers(0, C, n)                                     # (n,)
    mode = rng.integers(0, cfg.n_modes, n)                        # (n,)
    pixels = protos[y, mode] ^ (rng.random((n, P)) < cfg.flip_prob)  # (n, P)
    x = np.zeros((n, cfg.n_features), dtype=np.float32)           # (n, D)
    x[:, C:] = pixels + cfg.pixel_noise * rng.standard_normal((n, P))
    return x, y


def embed_label(x, labels, cfg):
    """Hinton's label-in-input: overwrite the first C features with a one-hot label.
    labels=None writes the neutral label 1/C in every slot (for the readout [FF-5])."""
    xp = get_xp(x)
    x = x.copy()                                                  # (B, D)
    C = cfg.n_classes
    if labels is None:
        x[:, :C] = cfg.label_value / C
    else:
        x[:, :C] = 0.0
        x[xp.arange(len(x)), labels] = cfg.label_value
    return x


def predict_scan(layers, x, cfg):
    """[FF-4] try every label, pick the one with the largest goodness (layers >= 2)."""
    xp = get_xp(x)
    C, B = cfg.n_classes, len(x)
    cand = xp.concatenate([embed_label(x, xp.full(B, k), cfg) for k in range(C)])  # (C*B, D)
    g = ff_goodness(layers, cand, cfg.norm_eps).reshape(C, B)    # (C, B)
    return g.argmax(axis=0)                                      # (B,)


def predict_readout(layers, readout, x, cfg):
    """[FF-5] one pass with the neutral label, then the linear softmax."""
    feats = ff_features(layers, embed_label(x, None, cfg), cfg.norm_eps)
    return (feats @ readout["R"] + readout["r"]).argmax(axis=1)  # (B,)


def train_toy(cfg, xp=np):
    """Train the FF layers and the readout on the toy task; return them and test accuracies."""
    x_tr, y_tr = (xp.asarray(a) for a in make_toy_task(cfg, 0))
    layers = init_layers(cfg, cfg.n_features, xp)
    opts = [init_adam(layer) for layer in layers]
    n_feat = sum(cfg.hidden[1:])
    readout = {"R": xp.zeros((n_feat, cfg.n_classes), dtype=xp.float32),  # zero init (loeweX)
               "r": xp.zeros(cfg.n_classes, dtype=xp.float32)}
    readout_opt = init_adam(readout)
    step = 0
    for epoch in range(cfg.epochs):
        perm = make_rng(cfg.seed, 2, epoch).permutation(cfg.n_train)
        history = []
        for i in range(0, cfg.n_train - cfg.batch_size + 1, cfg.batch_size):
            step += 1
            idx = xp.asarray(perm[i:i + cfg.batch_size])
            x, y = x_tr[idx], y_tr[idx]                           # (B, D), (B,)
            shift = make_rng(cfg.seed, 3, step).integers(1, cfg.n_classes, len(y))
            y_neg = (y + xp.asarray(shift)) % cfg.n_classes       # uniformly random wrong label
            losses = ff_train_step(layers, opts, embed_label(x, y, cfg),
                                   embed_label(x, y_neg, cfg), step, cfg)
            feats = ff_features(layers, embed_label(x, None, cfg), cfg.norm_eps)  # (B, F)
            ce, grads = readout_loss_and_grads(readout, feats, y)
            adam_step(readout, grads, readout_opt, step, cfg.readout_lr, cfg)
            history.append(losses + [float(ce)])
        *layer_losses, ce = np.mean(history, axis=0)             # epoch means
        print(f"epoch {epoch + 1:2d}/{cfg.epochs} | layer losses "
              + " ".join(f"{loss:.4f}" for loss in layer_losses) + f" | readout ce {ce:.4f}")
    return layers, readout


def evaluate(layers, readout, cfg, xp=np):
    """Test accuracy of the goodness scan [FF-4] and the softmax readout [FF-5]."""
    x_te, y_te = (xp.asarray(a) for a in make_toy_task(cfg, 1))
    acc_scan = float((predict_scan(layers, x_te, cfg) == y_te).mean())
    acc_readout = float((predict_readout(layers, readout, x_te, cfg) == y_te).mean())
    return acc_scan, acc_readout


# --- demo ---

if __name__ == "__main__":
    cfg = Config()
    print(cfg)
    t0 = time.time()
    layers, readout = train_toy(cfg)
    acc_scan, acc_readout = evaluate(layers, readout, cfg)
    print(f"test accuracy | goodness scan {acc_scan:.3f} | softmax readout {acc_readout:.3f}"
          f" | chance {1 / cfg.n_classes:.3f} | {time.time() - t0:.1f} s")
