r"""Forward-Forward: every layer learns from its own objective; nothing flows back across layers.

Paper: G. Hinton, "The Forward-Forward Algorithm: Some Preliminary Investigations",
arXiv 2212.13345 (2022).

Each layer sees positive data (real) and negative data (fake) and learns to make its goodness,
the sum of its squared activities, high for positives and low for negatives. Between layers the
activity vector is length-normalised, so only its direction is passed up: the next layer cannot
read off the previous layer's goodness and has to find new features. In the paper's terms (the
labels mark the lines that implement them):
    [Eq. 1]    p(positive | h) = sigma(g - theta),  g = sum_j h_j^2,  h = relu(x_hat W + b)
    [loss]     L = softplus(theta - g) on positives + softplus(g - theta) on negatives
    [norm]     x_hat = x / ||x||  (length normalisation, no mean subtraction)
    [label]    supervised FF: the label is written into the input; a negative carries a wrong one
    [scan]     predict(x) = argmax_k  sum_{layers l >= 2} g_l(x with label k)
    [softmax]  predict(x) = argmax softmax(F R + r),  F = the normalised activities of layers
               >= 2 for a neutral label (a linear classifier whose gradient never enters FF)
    [teacher forcing]  sequences: a negative is the real prefix with the next symbol replaced
               by the network's own (wrong) prediction
Hand-derived gradient of [loss] for one layer (s = +1 positive, -1 negative, row weights w_i):
    dL/dg = -s sigma(-s (g - theta)) w,   dL/da = dL/dg 2h,   dW = x_hat^T dL/da
(ReLU mask implied: h = 0 where a <= 0); nothing flows to the layer below. dW is Hebbian on
positives and anti-Hebbian on negatives, each gated by how wrong the layer currently is.

On the integer LM (`python train.py --method forward_forward`; our adaptation): the model is
int_rnn_lm's and its forward is unchanged, so every activity a learner reads is the integer
model's. The local learners:
    [GRU learner]  the GRU cell of block l: activity = its new state h_t; its input (the
                   normalised output of the layer below) and its previous state are constants.
                   Trains w_f, u_f, b_f, w_h, u_h, b_h.
    [MLP learner]  the MLP of block l: activity = its output; its input is a constant.
                   Trains mlp1, mlp2. Goodness of either: mean_j (a_j / 16)^2, then [loss].
    [negatives]    [teacher forcing]: byte x_t of a real window is replaced by a wrong byte and
                   every layer takes ONE integer step from the real states s_{t-1}. The wrong
                   byte is a unigram draw (a byte of the same batch) or, on scan_positions
                   positions per step after hard_after steps, a sample of the goodness
                   predictor with x_t removed.
    [masters]      each trained int8 tensor has a float32 master that Adam updates (one int8
                   step = 1.0); the int8 LM is re-quantised from it after every step.
    [readout]      [softmax] on the LM: a float softmax regression from the normalised
                   activities of the embedding and of every block to the next byte.
    [goodness predictor]  [scan] on the LM: g_t(c) = the goodness summed over every learner
                   when byte c is fed at t from the real states; log p(c) = log softmax(beta g),
                   beta fitted by one Adam step per training step (logged as beta).
`--predictor readout|goodness` picks which one gives val bits/byte and samples. Not trained:
`emb` (a lookup row has no context, so its goodness cannot tell a real byte from a wrong one),
the norm gains ln1, ln2, and ln_out / head (the readout replaces the head).

Departures (each also marked at its line):
- toy task generated in code (10-class "noisy prototype digits", 64 features), not MNIST; toy
  negatives are uniformly random wrong labels;
- all layers take their local step on every minibatch (greedy only in that nothing flows down);
- [norm] rescales to RMS 1 (length sqrt(D)) instead of length 1, so that init scales do not
  depend on width; threshold theta = theta_per_unit * H; the loss is a mean over rows;
- no peer normalisation, no weight decay, no jittered data;
- LM: the layers are the model's saturating integer layers, not ReLU layers; goodness is the
  mean square (the int8 range caps it); the model's own L1 norm plays the part of [norm], and
  the residual stream also passes the input up unnormalised; the gradient is the float
  surrogate's (straight-through for the floors and for [masters]);
- LM: the goodness predictor sums every layer's goodness, a top-down signal for the negatives
  it draws; before hard_after steps a layer's updates depend on nothing above it.

The baseline for every readout-scored number, `--reservoir true`: the same readout trained on
the same data, on the LM frozen at its init (bit for bit the readout of `--lr 0`).

Shapes: B = batch, D = input features (LM: d_model), H = layer width, C = classes; LM: S =
windows per step, T = bytes per window, N = S T positions, F = (L + 1) D, K = scan_positions.

$ python forward_forward.py                                  (toy demo, seconds)
$ python train.py --method forward_forward                   (the integer LM, CPU default)
$ python train.py --method forward_forward --reservoir true  (the baseline: readout only)
"""
import math
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

import int_rnn_lm as lm

# host generators keyed by (seed, purpose, ...): the purposes
INIT, TASK, SHUFFLE, TOY_NEGATIVES, LM_NEGATIVES, LM_SCAN = range(6)


def make_rng(seed, *keys):
    """A host generator that is a pure function of (seed, purpose, ...); no global RNG state."""
    return np.random.default_rng([seed, *keys])

# -----------------------------------------------------------------------------
# the algorithm: one layer's local objective and its hand-derived gradient, layer by layer

def rms_normalise(h, eps):
    """[norm] keep the direction of each row, drop its length (scaled to RMS 1)."""
    xp = lm.backend_of(h)
    return h / xp.sqrt(xp.mean(h * h, axis=1, keepdims=True) + eps)  # (B, H)


def sigmoid(z):
    xp = lm.backend_of(z)
    return 0.5 * (1.0 + xp.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def ff_objective(g, sign, weight, theta):
    """[loss] with row weights: L = sum_i w_i softplus(-s_i (g_i - theta)) and dL/dg (N,)."""
    xp = lm.backend_of(g)
    margin = -sign * (g - theta)                                  # (N,)
    loss = xp.sum(weight * xp.logaddexp(0.0, margin))             # softplus
    return loss, -sign * sigmoid(margin) * weight                 # (N,) dL/dg


def ff_layer_forward(layer, x, eps):
    """Normalise the (constant) input, then one ReLU layer. Returns x_hat and h."""
    xp = lm.backend_of(x)
    x_hat = rms_normalise(x, eps)                                 # (B, D_in)  [norm]
    h = xp.maximum(x_hat @ layer["W"] + layer["b"], 0.0)          # (B, H)
    return x_hat, h


def ff_layer_loss_and_grads(layer, x, sign, theta, eps):
    """Local FF loss of one layer and its gradients w.r.t. that layer only.

    x: (N, D_in) raw output of the layer below (or the input), a constant here.
    sign: (N,) +1 for positive rows, -1 for negative rows. Returns (loss, grads, h)."""
    xp = lm.backend_of(x)
    x_hat, h = ff_layer_forward(layer, x, eps)                    # (N, D_in), (N, H)
    g = xp.sum(h * h, axis=1)                                     # (N,) goodness [Eq. 1]
    weight = xp.full(len(x), 1.0 / len(x), dtype=x.dtype)         # (N,) a plain mean
    loss, dg = ff_objective(g, sign, weight, theta)               # [loss]
    da = dg[:, None] * 2.0 * h                                    # (N, H) ReLU mask via h = 0
    grads = {"W": x_hat.T @ da,                                   # (D_in, H)
             "b": xp.sum(da, axis=0)}                             # (H,)
    return loss, grads, h


def ff_layer_step(layer, opt, x, sign, step, cfg):
    """One local Adam step of one layer. Returns its loss and its (pre-update) output h."""
    theta = cfg.theta_per_unit * layer["W"].shape[1]
    loss, grads, h = ff_layer_loss_and_grads(layer, x, sign, theta, cfg.norm_eps)
    lm.adam_step(layer, grads, opt, step, cfg.lr, cfg.adam_betas, cfg.adam_eps)
    return loss, h


def ff_train_step(layers, opts, x_pos, x_neg, step, cfg):
    """Every layer takes one local step; layer l+1 sees layer l's output as plain data.

    All outputs are computed before their layer is updated, so the step of layer l
    depends only on layers <= l and never on anything above it."""
    xp = lm.backend_of(x_pos)
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


def ff_goodness(layers, x, eps):
    """[scan] goodness summed over layers 2.. (layer 1 sees the label raw)."""
    return sum((h * h).sum(axis=1) for h in ff_forward(layers, x, eps)[1:])   # (B,)


def ff_features(layers, x, eps):
    """[softmax] features for the softmax readout: normalised activities of layers >= 2."""
    xp = lm.backend_of(x)
    hs = ff_forward(layers, x, eps)[1:]
    return xp.concatenate([rms_normalise(h, eps) for h in hs], axis=1)  # (B, sum H_l)


def softmax(o):
    xp = lm.backend_of(o)
    e = xp.exp(o - o.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def readout_loss_and_grads(readout, feats, y):
    """[softmax] / [readout] mean cross-entropy (nats) of a linear softmax on fixed features (plain
    logistic regression: its gradient never enters the FF layers)."""
    xp = lm.backend_of(feats)
    o = feats @ readout["R"] + readout["r"]                       # (B, C)
    lse = o.max(axis=1) + xp.log(xp.exp(o - o.max(axis=1, keepdims=True)).sum(axis=1))
    loss = xp.mean(lse - o[xp.arange(len(y)), y])
    d_o = softmax(o)                                              # (B, C)
    d_o[xp.arange(len(y)), y] -= 1.0
    d_o /= len(y)                                                 # (B, C) dL/do = (Q - Y)/B
    return loss, {"R": feats.T @ d_o, "r": d_o.sum(axis=0)}      # (F, C), (C,)

# -----------------------------------------------------------------------------
# on the integer LM: the blocks' local learners, the negatives, the goodness predictor

SCAN_CHUNK = 64  # positions per goodness scan call in predict (64 x 256 rows)
GRU_NAMES = ("w_f", "u_f", "b_f", "w_h", "u_h", "b_h")   # the [GRU learner]'s tensors
MLP_NAMES = ("mlp1", "mlp2")                              # the [MLP learner]'s tensors


def clip_mask(a):
    """I(a) of the float surrogate and its derivative: clip to [-127, 127]; 1 strictly inside."""
    xp = lm.backend_of(a)
    return xp.clip(a, -127.0, 127.0), (a > -127.0) & (a < 127.0)


def gru_ff_loss_and_grads(w, n, s, sign, weight, theta):
    """Local FF loss of one GRU cell [GRU learner, loss] and its gradients w.r.t. that cell only.

    w: float w_f, u_f, b_f, w_h, u_h, b_h in int8 units, (out, in) as stored. n (R, D) its
    normalised input and s (R, D) its previous state: constants. Returns (loss, grads, h).

    The float surrogate of one step of lm.gru_scan (the same equations without the floors), in
    int8 units; I(a) = clip(a, -127, 127), c = 16 isqrt(D):
        f = I(I(n W_f^T / c) + b_f + I(s U_f^T / c)),   gate = f + 127 in [0, 254]
        f' = I(gate s / 256),   h' = I(I(n W_h^T / c) + b_h + I(f' U_h^T / c))
        h = I(s + gate (h' - s) / 256),   goodness g = mean_j (h_j / 16)^2
    Hand-derived gradients (row weight w, s = +-1, dg = dL/dg of [loss], M(.) = 1 where the
    clip of that quantity is not saturated, 0 where it is):
        dh = dg 2 h / (256 D) M(h);  dh' = dh gate / 256 M(h');  dW_h = (dh' M(nW_h))^T n / c
        dU_h = (dh' M(f'U_h))^T f' / c;  df' = (dh' M(f'U_h)) U_h / c M(f');  db_h = sum dh'
        dgate = dh (h' - s) / 256 + df' s / 256;  df = dgate M(f);  db_f = sum df
        dW_f = (df M(nW_f))^T n / c;  dU_f = (df M(sU_f))^T s / c
    evaluated at the int8 weights and the integer activations (straight-through for the
    floors); nothing reaches n or s."""
    xp = lm.backend_of(n)
    D = n.shape[1]
    c = lm.matmul_divisor(D)
    A_f, mA_f = clip_mask(n @ w["w_f"].T / c)                     # (R, D) [GRU learner]
    B_f, mB_f = clip_mask(s @ w["u_f"].T / c)                     # (R, D)
    f, m_f = clip_mask(A_f + w["b_f"] + B_f)                      # (R, D)
    gate = f + 127.0                                              # (R, D) in [0, 254]
    fh, m_fh = clip_mask(gate * s / 256.0)                        # (R, D) f'
    A_h, mA_h = clip_mask(n @ w["w_h"].T / c)                     # (R, D)
    B_h, mB_h = clip_mask(fh @ w["u_h"].T / c)                    # (R, D)
    hh, m_hh = clip_mask(A_h + w["b_h"] + B_h)                    # (R, D) h'
    h, m_h = clip_mask(s + gate * (hh - s) / 256.0)               # (R, D) new state
    g = xp.sum(h * h, axis=1) / (256.0 * D)                       # (R,) mean (h/16)^2 [GRU learner]
    loss, dg = ff_objective(g, sign, weight, theta)               # [loss]
    d_h = dg[:, None] * 2.0 * h / (256.0 * D) * m_h               # (R, D) dL/d(pre-clip h)
    d_hh = d_h * gate / 256.0 * m_hh                              # (R, D) dL/d(pre-clip h')
    d_Bh = d_hh * mB_h                                            # (R, D)
    d_fh = (d_Bh @ w["u_h"]) / c * m_fh                           # (R, D) dL/d(pre-clip f')
    d_f = (d_h * (hh - s) / 256.0 + d_fh * s / 256.0) * m_f       # (R, D) via the gate
    grads = {"w_h": (d_hh * mA_h).T @ n / c, "u_h": d_Bh.T @ fh / c,  # (D, D)
             "b_h": d_hh.sum(axis=0),                                 # (D,)
             "w_f": (d_f * mA_f).T @ n / c, "u_f": (d_f * mB_f).T @ s / c,
             "b_f": d_f.sum(axis=0)}
    return loss, grads, h


def mlp_ff_loss_and_grads(w, m, sign, weight, theta):
    """Local FF loss of one MLP [MLP learner, loss] and its gradients w.r.t. mlp1, mlp2 only.

    w: float mlp1 (kD, D), mlp2 (D, kD) in int8 units (k = mlp_mult); m (R, D) its normalised
    input, a constant. Returns (loss, grads, o).

    Surrogate: z = I(m W_1^T / c), o = I(z W_2^T / c4), c4 = 16 isqrt(k D), g = mean_j (o_j/16)^2;
        do = dg 2 o / (256 D) M(o);  dW_2 = do^T z / c4;  dz = do W_2 / c4 M(z);  dW_1 = dz^T m / c"""
    xp = lm.backend_of(m)
    D = m.shape[1]
    c, c4 = lm.matmul_divisor(D), lm.matmul_divisor(w["mlp2"].shape[1])
    z, m_z = clip_mask(m @ w["mlp1"].T / c)                       # (R, kD) [MLP learner]
    o, m_o = clip_mask(z @ w["mlp2"].T / c4)                      # (R, D)
    g = xp.sum(o * o, axis=1) / (256.0 * D)                       # (R,) mean (o / 16)^2
    loss, dg = ff_objective(g, sign, weight, theta)               # [loss]
    d_o = dg[:, None] * 2.0 * o / (256.0 * D) * m_o               # (R, D)
    d_z = (d_o @ w["mlp2"]) / c4 * m_z                            # (R, kD)
    return loss, {"mlp2": d_o.T @ z / c4, "mlp1": d_z.T @ m / c}, o


def block_states(params, p, y, s0):
    """lm.block, keeping what the local learners read and their activities (same integers as
    lm.block).

    y (N, T, D) q4 int32, s0 (N, D) state -> n (N, T, D) GRU input, s_prev (N, T, D) state
    before each step, h (N, T, D) GRU activity (the state after each step), m (N, T, D) MLP
    input, o (N, T, D) MLP activity, y_out (N, T, D); the last state is h[:, -1]."""
    xp = lm.backend_of(y)
    n = lm.int_norm(y, lm.vector_param(params, p + "ln1", None))
    h, _ = lm.gru_scan(params, p, n, s0, None)                    # (N, T, D) state after each step
    s_prev = xp.concatenate([lm.wide(s0)[:, None], h[:, :-1]], axis=1)
    y_mid = lm.clip8(y + h)
    m = lm.int_norm(y_mid, lm.vector_param(params, p + "ln2", None))
    o = lm.mlp(params, p, m, None)                                # (N, T, D)
    return n, s_prev, h, m, o, lm.clip8(y_mid + o)


def candidate_goodness(params, mcfg, s_prev):
    """[goodness predictor] the goodness scan [scan] on the LM: feed every byte c at each of K positions
    from the real previous states s_prev (L, K, D), one integer step of every block, and sum
    the learners' goodness. Exact integers: g (K, 256) int64 in units of 1 / (256 D) (so that
    g / (256 D) = sum over learners of mean_j (a_j / 16)^2, the GRU and MLP learners' goodness)."""
    xp = lm.backend_of(s_prev)
    L, K, D = s_prev.shape
    cand = xp.tile(xp.arange(lm.VOCAB, dtype=xp.uint8), K)       # (K 256,) c fastest
    y = lm.embed(params, cand[:, None], None)                     # (K 256, 1, D)
    g = xp.zeros(K * lm.VOCAB, xp.int64)
    for l in range(L):
        s = xp.repeat(s_prev[l], lm.VOCAB, axis=0)                # (K 256, D) the real prefix
        _, _, h, _, o, y = block_states(params, f"l{l}.", y, s)
        g += (h * h).sum(axis=(1, 2)) + (o * o).sum(axis=(1, 2))  # GRU + MLP learner
    return g.reshape(K, lm.VOCAB)


def features(acts):
    """[readout] F = [rms(emb) | rms(y_1) | ... | rms(y_L)]: (N, T, D) int activities ->
    (N T, (L + 1) D) float32."""
    xp = lm.backend_of(acts[0])
    D = acts[0].shape[-1]
    return xp.concatenate([rms_normalise(a.reshape(-1, D).astype(xp.float32), 1e-8)
                           for a in acts], axis=1)


def quantise(w):
    """[masters] W_int8 = I8(round(W_master)): round half to even, saturate to [-127, 127]."""
    return lm.sat8(lm.backend_of(w).rint(w))


def sample_wrong(p, real, u):
    """Inverse-CDF draw of a byte from the rows of p (K, 256) with the real byte (K,) removed;
    u (K, 1) uniforms. Returns (K,) uint8."""
    xp = lm.backend_of(p)
    cdf = xp.cumsum(p * (xp.arange(lm.VOCAB) != real[:, None]), axis=-1)  # (K, 256)
    return xp.minimum((cdf < u * cdf[:, -1:]).sum(axis=-1), 255).astype(xp.uint8)


def draw_negatives(x, t, seed):
    """[negatives] unigram negatives for every position of the windows x (S, T): the byte at a random
    position of the same batch. Returns them (S, T) uint8 and weights (S, T): 0 where the draw
    hit the real byte."""
    xp = lm.backend_of(x)
    S, T = x.shape
    pick = make_rng(seed, LM_NEGATIVES, t).integers(0, S * T, (S, T))
    neg = x.reshape(-1)[xp.asarray(pick)]                         # (S, T) the batch's unigram
    return neg, (neg != x).astype(xp.float32)


def goodness_log_softmax(g, beta):
    """[goodness predictor] log p(c) = log softmax_c(beta g_c) in nats: g (K, 256) goodness of each byte."""
    xp = lm.backend_of(g)
    a = beta * g.astype(xp.float64)                               # (K, 256)
    a -= a.max(axis=1, keepdims=True)
    return a - xp.log(xp.exp(a).sum(axis=1, keepdims=True))


def goodness_ce_and_grad(g, real, beta):
    """[goodness predictor] mean cross-entropy (nats) of the goodness predictor on the real bytes (K,), its
    derivative d CE / d beta = mean(E_p[g] - g_real), and p (K, 256)."""
    xp = lm.backend_of(g)
    logp = goodness_log_softmax(g, beta)                          # (K, 256)
    p, rows = xp.exp(logp), xp.arange(len(real))
    return -logp[rows, real].mean(), xp.mean((p * g).sum(axis=1) - g[rows, real]), p


def goodness_scan_step(params, state, s_prev, x, t, cfg, mcfg, seed):
    """[goodness predictor] scan scan_positions random positions of the batch (s_prev (L, N, D) the real
    previous states, x (N,) the real bytes): one Adam step on beta, and a negative for each
    drawn from the goodness predictor itself (Hinton's teacher forcing). Returns the positions
    (K,), their negatives (K,) and the predictor's bits/byte on them (before the step)."""
    xp = lm.backend_of(x)
    rng = make_rng(seed, LM_SCAN, t)
    K = min(cfg.scan_positions, len(x))
    idx = xp.asarray(rng.choice(len(x), K, replace=False))       # (K,)
    g = candidate_goodness(params, mcfg, s_prev[:, idx]) / (256.0 * mcfg.d_model)  # (K, 256)
    real = x[idx].astype(xp.int64)
    beta = state["goodness.beta"]                                 # (1,) float32
    ce, grad, p = goodness_ce_and_grad(g, real, float(beta[0]))   # note: a CPU-GPU sync point
    moments = {"m": {"beta": state["adam_m.goodness.beta"]},
               "v": {"beta": state["adam_v.goodness.beta"]}}
    lm.adam_step({"beta": beta}, {"beta": grad.astype(xp.float32)}, moments, t + 1, cfg.readout_lr)
    neg = sample_wrong(p, real, xp.asarray(rng.random((len(idx), 1))))
    return idx, neg, float(ce) / math.log(2)


def layer_step(params, state, l, rows, sign, weight, t, cfg):
    """One local Adam step of block l's two learners (GRU cell, MLP) [GRU learner, MLP learner, masters].

    rows = (n, s, m): (R, D) float32 constants of positive and negative rows. Updates
    state["master.*"], its Adam moments and params (int8) of block l in place and touches
    nothing else. Returns the two FF losses."""
    n, s, m = rows
    losses = []
    for names, loss_fn, inputs in ((GRU_NAMES, gru_ff_loss_and_grads, (n, s)),
                                   (MLP_NAMES, mlp_ff_loss_and_grads, (m,))):
        keys = {k: f"l{l}.{k}" for k in names}
        w_int = {k: params[name].astype(n.dtype) for k, name in keys.items()}
        loss, grads, _ = loss_fn(w_int, *inputs, sign, weight, cfg.theta)  # at the int8 weights
        master = {k: state["master." + name] for k, name in keys.items()}
        moments = {"m": {k: state["adam_m." + name] for k, name in keys.items()},
                   "v": {k: state["adam_v." + name] for k, name in keys.items()}}
        lm.adam_step(master, grads, moments, t + 1, cfg.lr)          # straight-through update
        for k, name in keys.items():
            params[name] = quantise(master[k])                    # [masters]
        losses.append(float(loss))  # note: a CPU-GPU sync point on cupy
    return losses

# -----------------------------------------------------------------------------
# the method interface train.py calls (README "The method interface")


@dataclass
class Config:
    rows: int = 32            # S: windows per step (data rows; the state carries across steps)
    lr: float = 0.25          # Adam step of the float master weights, in int8 units [masters]
    readout_lr: float = 1e-2  # Adam learning rate of the softmax readout [readout]
    theta: float = 4.0        # goodness threshold: mean squared activity in real units [loss]
    scan_positions: int = 64  # positions a step scans over 256 bytes: fit beta, negatives [goodness predictor]
    hard_after: int = 10      # steps with unigram negatives only (beta starts at 0: uniform)
    predictor: Literal["readout", "goodness"] = "readout"  # what val bits/byte and samples use
    reservoir: bool = False   # baseline: train only the readout; the LM stays at its init


# the training loss step() reports, named by what it is (log.csv column, progress line)
LOSS = "readout_bpb"   # the readout's cross-entropy on the step's windows, bits/byte

# train.py's run on each device. CPU: a step is cheap (one scan, one batched negative step,
# small local updates), so the 2-minute run takes many small steps. GPU: more windows per step.
DEFAULTS = {"cpu": dict(steps=700, eval_every=100, log_every=20), "cuda": dict(rows=256)}


def check_config(cfg):
    if cfg.rows < 1:
        raise ValueError(f"rows must be >= 1, got {cfg.rows}")
    if cfg.lr < 0 or cfg.readout_lr <= 0:
        raise ValueError(f"lr must be >= 0 and readout_lr > 0, got {cfg.lr}, {cfg.readout_lr}")
    if cfg.theta <= 0:
        raise ValueError(f"theta must be > 0, got {cfg.theta}")
    if cfg.hard_after < 0:
        raise ValueError(f"hard_after must be >= 0, got {cfg.hard_after}")
    if cfg.scan_positions < 1:
        raise ValueError(f"scan_positions must be >= 1, got {cfg.scan_positions}")
    if cfg.predictor not in ("readout", "goodness"):
        raise ValueError(f"predictor must be readout or goodness, got {cfg.predictor!r}")
    if cfg.reservoir and cfg.predictor == "goodness":
        raise ValueError("the reservoir baseline trains only the readout: use --predictor "
                         "readout (the frozen LM's goodness predictor is --lr 0)")


def check_model(mcfg):
    """The MLP is one of each block's two learners."""
    if not mcfg.mlp_mult:
        raise ValueError("forward_forward trains each block's GRU and MLP: it needs "
                         "--mlp_mult >= 1")


def num_sequences(cfg):
    return cfg.rows


def init(params, cfg, mcfg, seed, world):
    """State: the carried hidden state, a float32 master and Adam moments per trained int8
    tensor, the readout (zeros: 8 bits/byte) and its moments. Nothing random."""
    check_config(cfg)
    xp = lm.backend_of(params["emb"])
    state = {"hidden": lm.zero_hidden(mcfg, cfg.rows, xp)}        # (L, S, D) int8
    for l in range(mcfg.n_layers):
        for k in GRU_NAMES + MLP_NAMES:
            name = f"l{l}.{k}"
            state["master." + name] = params[name].astype(xp.float32)  # exact: int8 values
            state["adam_m." + name] = xp.zeros(params[name].shape, xp.float32)
            state["adam_v." + name] = xp.zeros(params[name].shape, xp.float32)
    n_feat = (mcfg.n_layers + 1) * mcfg.d_model
    for key, shape in (("R", (n_feat, lm.VOCAB)), ("r", (lm.VOCAB,)), ("beta", (1,))):
        name = ("goodness." if key == "beta" else "readout.") + key
        for prefix in ("", "adam_m.", "adam_v."):
            state[prefix + name] = xp.zeros(shape, xp.float32)
    state["goodness.on"] = xp.asarray(cfg.predictor == "goodness")   # predict gets no cfg
    return state


def readout_view(state, prefix=""):
    return {k: state[prefix + "readout." + k] for k in ("R", "r")}


def step(params, state, batch, t, cfg, mcfg, seed, world):
    """One FF step on windows batch = (tokens (S, T + 1), reset): the positive pass, the
    readout's step, the negatives [negatives], then each block's local step. Inputs untouched."""
    tokens, reset = batch
    xp = lm.backend_of(tokens)
    S, T, D = tokens.shape[0], tokens.shape[1] - 1, mcfg.d_model
    x, y = tokens[:, :-1], tokens[:, 1:]                          # (S, T) inputs, next bytes
    params, state = dict(params), {k: v.copy() for k, v in state.items()}
    hidden = lm.zero_hidden(mcfg, S, xp) if reset else state["hidden"]
    # positive pass: the integer LM over the real windows
    acts, pos, new_hidden = [lm.embed(params, x, None)], [], []
    for l in range(mcfg.n_layers):
        n, s_prev, h, m, _, y_out = block_states(params, f"l{l}.", acts[-1], hidden[l])
        acts.append(y_out)
        pos.append((n, s_prev, m))
        new_hidden.append(h[:, -1].astype(xp.int8))
    state["hidden"] = xp.stack(new_hidden)                        # (L, S, D) int8
    # the readout: softmax regression on the normalised activities [readout]
    ce, grads = readout_loss_and_grads(readout_view(state), features(acts), y.reshape(-1))
    moments = {"m": readout_view(state, "adam_m."), "v": readout_view(state, "adam_v.")}
    lm.adam_step(readout_view(state), grads, moments, t + 1, cfg.readout_lr)
    stats = {LOSS: float(ce) / math.log(2), "member_tokens": S * T}  # readout bits/byte
    if cfg.reservoir:  # the baseline: only the readout learns, the LM stays at its init
        return params, state, stats
    # negatives: unigram draws [negatives], then the goodness predictor's own [goodness predictor]
    neg, neg_weight = draw_negatives(x, t, seed)
    s_prev_all = xp.stack([s_prev.reshape(S * T, D) for _, s_prev, _ in pos])  # (L, N, D)
    idx, neg_g, stats["goodness_bpb"] = goodness_scan_step(params, state, s_prev_all,
                                                           x.reshape(-1), t, cfg, mcfg, seed)
    neg, neg_weight = neg.reshape(-1), neg_weight.reshape(-1)     # (N,)
    if t >= cfg.hard_after:
        neg[idx], neg_weight[idx] = neg_g, 1.0                    # always a wrong byte
    # every block's local step on positive + negative rows
    sign = xp.concatenate([xp.ones(S * T), -xp.ones(S * T)]).astype(xp.float32)  # (2N,)
    weight = xp.concatenate([xp.ones(S * T, xp.float32), neg_weight])
    weight /= weight.sum()                                        # (2N,) rows of a mean
    y_neg = lm.embed(params, neg, None).reshape(S * T, 1, D)      # one step per position
    stats.update(member_tokens=2 * S * T + len(idx) * lm.VOCAB,  # + the scan's one-byte steps
                 neg_kept=float(neg_weight.mean()),
                 beta=float(state["goodness.beta"][0]))
    for l in range(mcfg.n_layers):
        n, s_prev, m = pos[l]
        s_prev = s_prev.reshape(S * T, D)
        n_neg, _, _, m_neg, _, y_neg = block_states(params, f"l{l}.", y_neg, s_prev)
        rows = tuple(xp.concatenate([a.reshape(S * T, D), b.reshape(S * T, D)])
                     .astype(xp.float32) for a, b in ((n, n_neg), (s_prev, s_prev), (m, m_neg)))
        losses = layer_step(params, state, l, rows, sign, weight, t, cfg)
        stats[f"ff_l{l}_gru"], stats[f"ff_l{l}_mlp"] = losses
    return params, state, stats


def predict(params, state, mcfg):
    """What val bits/byte and samples use: log2 p (N, T, 256) float64 of the readout [readout]
    or, if state["goodness.on"], of the goodness predictor [goodness predictor] (predict gets no cfg)."""
    readout, beta = readout_view(state), float(state["goodness.beta"][0])

    def readout_fn(tokens, hidden):
        _, hidden, acts = lm.forward(params, mcfg, tokens, hidden, return_activations=True)
        xp = lm.backend_of(tokens)
        o = (features(acts) @ readout["R"] + readout["r"]).astype(xp.float64)  # (N T, 256)
        o_max = o.max(axis=1, keepdims=True)
        log2p = (o - o_max - xp.log(xp.exp(o - o_max).sum(axis=1, keepdims=True))) / math.log(2)
        return log2p.reshape(*tokens.shape, lm.VOCAB), hidden

    def goodness_fn(tokens, hidden):
        """The next byte after position t: every candidate fed from the states after byte t."""
        xp = lm.backend_of(tokens)
        y, s_now, last = lm.embed(params, tokens, None), [], []
        for l in range(mcfg.n_layers):
            _, _, h, _, _, y = block_states(params, f"l{l}.", y, hidden[l])
            s_now.append(h.reshape(-1, mcfg.d_model))             # (N T, D) state after byte t
            last.append(h[:, -1].astype(xp.int8))
        s_now = xp.stack(s_now)                                   # (L, N T, D)
        g = xp.concatenate([candidate_goodness(params, mcfg, s_now[:, i: i + SCAN_CHUNK])
                            for i in range(0, s_now.shape[1], SCAN_CHUNK)])   # (N T, 256)
        log2p = goodness_log_softmax(g / (256.0 * mcfg.d_model), beta) / math.log(2)
        return log2p.reshape(*tokens.shape, lm.VOCAB), xp.stack(last)

    return goodness_fn if bool(state["goodness.on"]) else readout_fn

# -----------------------------------------------------------------------------
# the toy demo: FF on a small classification task, `python forward_forward.py`


@dataclass
class ToyConfig:
    seed: int = 0                      # the one seed every generator is derived from
    hidden: tuple = (256, 256, 256)    # widths of the FF layers
    theta_per_unit: float = 1.0        # threshold theta = theta_per_unit * H  [Eq. 1]
    lr: float = 3e-3                   # Adam learning rate of the FF layers
    readout_lr: float = 3e-3           # Adam learning rate of the softmax readout [softmax]
    adam_betas: tuple = (0.9, 0.999)   # Adam moment decay rates
    adam_eps: float = 1e-8             # Adam denominator epsilon
    norm_eps: float = 1e-8             # epsilon inside the normalisation [norm]
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


def init_layers(cfg, d_in, xp):
    """He-initialised ReLU layers; drawn on the host so both backends start identical."""
    rng = make_rng(cfg.seed, INIT)
    layers, fan_in = [], d_in
    for width in cfg.hidden:
        W = rng.standard_normal((fan_in, width)) * np.sqrt(2.0 / fan_in)
        layers.append({"W": xp.asarray(W, dtype=xp.float32),  # (D_in, H)
                       "b": xp.zeros(width, dtype=xp.float32)})  # (H,)
        fan_in = width
    return layers


def make_toy_task(cfg, split):
    """"Noisy prototype digits": each class has n_modes random binary pixel patterns; an
    example is one of them with flipped pixels and Gaussian noise. The first C features are
    a blank border (always 0) that FF overwrites with the label. split: 0 train, 1 test."""
    C, n_pixels = cfg.n_classes, cfg.n_features - cfg.n_classes
    protos = make_rng(cfg.seed, TASK).random((C, cfg.n_modes, n_pixels)) < 0.5  # (C, M, pixels)
    rng = make_rng(cfg.seed, TASK, split)
    n = cfg.n_train if split == 0 else cfg.n_test
    y = rng.integers(0, C, n)                                     # (n,)
    mode = rng.integers(0, cfg.n_modes, n)                        # (n,)
    pixels = protos[y, mode] ^ (rng.random((n, n_pixels)) < cfg.flip_prob)  # (n, pixels)
    x = np.zeros((n, cfg.n_features), dtype=np.float32)           # (n, D)
    x[:, C:] = pixels + cfg.pixel_noise * rng.standard_normal((n, n_pixels))
    return x, y


def embed_label(x, labels, cfg):
    """Hinton's label-in-input: overwrite the first C features with a one-hot label.
    labels=None writes the neutral label 1/C in every slot (for the readout [softmax])."""
    xp = lm.backend_of(x)
    x = x.copy()                                                  # (B, D)
    C = cfg.n_classes
    if labels is None:
        x[:, :C] = cfg.label_value / C
    else:
        x[:, :C] = 0.0
        x[xp.arange(len(x)), labels] = cfg.label_value
    return x


def predict_scan(layers, x, cfg):
    """[scan] try every label, pick the one with the largest goodness (layers >= 2)."""
    xp = lm.backend_of(x)
    C, B = cfg.n_classes, len(x)
    cand = xp.concatenate([embed_label(x, xp.full(B, k), cfg) for k in range(C)])  # (C*B, D)
    g = ff_goodness(layers, cand, cfg.norm_eps).reshape(C, B)    # (C, B)
    return g.argmax(axis=0)                                      # (B,)


def predict_readout(layers, readout, x, cfg):
    """[softmax] one pass with the neutral label, then the linear softmax."""
    feats = ff_features(layers, embed_label(x, None, cfg), cfg.norm_eps)
    return (feats @ readout["R"] + readout["r"]).argmax(axis=1)  # (B,)


def train_toy(cfg, xp=np):
    """Train the FF layers and the readout on the toy task; return them and test accuracies."""
    x_tr, y_tr = (xp.asarray(a) for a in make_toy_task(cfg, 0))
    layers = init_layers(cfg, cfg.n_features, xp)
    opts = [lm.adam_moments(layer) for layer in layers]
    n_feat = sum(cfg.hidden[1:])
    readout = {"R": xp.zeros((n_feat, cfg.n_classes), dtype=xp.float32),  # zero init (loeweX)
               "r": xp.zeros(cfg.n_classes, dtype=xp.float32)}
    readout_opt = lm.adam_moments(readout)
    step = 0
    for epoch in range(cfg.epochs):
        perm = make_rng(cfg.seed, SHUFFLE, epoch).permutation(cfg.n_train)
        history = []
        for i in range(0, cfg.n_train - cfg.batch_size + 1, cfg.batch_size):
            step += 1
            idx = xp.asarray(perm[i:i + cfg.batch_size])
            x, y = x_tr[idx], y_tr[idx]                           # (B, D), (B,)
            shift = make_rng(cfg.seed, TOY_NEGATIVES, step).integers(1, cfg.n_classes, len(y))
            y_neg = (y + xp.asarray(shift)) % cfg.n_classes       # uniformly random wrong label
            losses = ff_train_step(layers, opts, embed_label(x, y, cfg),
                                   embed_label(x, y_neg, cfg), step, cfg)
            feats = ff_features(layers, embed_label(x, None, cfg), cfg.norm_eps)  # (B, F)
            ce, grads = readout_loss_and_grads(readout, feats, y)
            lm.adam_step(readout, grads, readout_opt, step, cfg.readout_lr, cfg.adam_betas,
                      cfg.adam_eps)
            history.append(losses + [float(ce)])
        *layer_losses, ce = np.mean(history, axis=0)             # epoch means
        print(f"epoch {epoch + 1:2d}/{cfg.epochs} | layer losses "
              + " ".join(f"{loss:.4f}" for loss in layer_losses) + f" | readout ce {ce:.4f}")
    return layers, readout


def evaluate(layers, readout, cfg, xp=np):
    """Test accuracy of the goodness scan [scan] and the softmax readout [softmax]."""
    x_te, y_te = (xp.asarray(a) for a in make_toy_task(cfg, 1))
    acc_scan = float((predict_scan(layers, x_te, cfg) == y_te).mean())
    acc_readout = float((predict_readout(layers, readout, x_te, cfg) == y_te).mean())
    return acc_scan, acc_readout


if __name__ == "__main__":
    cfg = ToyConfig()
    print(cfg)
    t0 = time.time()
    layers, readout = train_toy(cfg)
    acc_scan, acc_readout = evaluate(layers, readout, cfg)
    print(f"test accuracy | goodness scan {acc_scan:.3f} | softmax readout {acc_readout:.3f}"
          f" | chance {1 / cfg.n_classes:.3f} | {time.time() - t0:.1f} s")
