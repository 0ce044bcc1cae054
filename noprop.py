r"""
NoProp-DT: T blocks, each trained alone to denoise a noisy label embedding; chained only at
test time. No forward or backward pass crosses a block during training.

Paper: Q. Li, Y. W. Teh, R. Pascanu, "NoProp: Training Neural Networks without
Back-propagation or Forward-propagation", arXiv 2503.24322 (v2 retitled "... without Full
Back-propagation or Full Forward-propagation", CoLLAs 2025).

Time runs from noise (t = 0) to label (t = T): abar_t = prod_{s=t}^{T} alpha_s INCREASES with t
(the reverse of DDPM's index). u_y = row y of the embedding matrix E (m x d).

    Eqs. 5-6  q(z_t | y) = N(sqrt(abar_t) u_y, (1 - abar_t) I),  SNR(t) = abar_t / (1 - abar_t)
    Eq. 6     q(z_t | z_{t-1}, y) = N(a_t u_y + b_t z_{t-1}, c_t I)   (posterior of the noising)
              a_t = sqrt(abar_t)(1 - alpha_{t-1}) / (1 - abar_{t-1})
              b_t = sqrt(alpha_{t-1})(1 - abar_t) / (1 - abar_{t-1})
              c_t = (1 - abar_t)(1 - alpha_{t-1}) / (1 - abar_{t-1})
    Eq. 3     z_t = a_t u_hat_t(z_{t-1}, x) + b_t z_{t-1} + sqrt(c_t) eps,   z_0 ~ N(0, I) (Eq. 1)
              (the learned transition: Eq. 6 with u_y replaced by the block's guess)
    Eq. 14    p_hat(y | z_T) = softmax(z_T W_o + b_o)
    Eq. 8     L = E_{q(z_T|y)}[-log p_hat(y | z_T)] + KL(q(z_0|y) || N(0, I))
                + (T/2) eta E_{t ~ U{1..T}, z_{t-1} ~ q(z_{t-1}|y)}
                          [(SNR(t) - SNR(t-1)) ||u_hat_t(z_{t-1}, x) - u_y||^2]
    Eqs. 51-56  each per-step KL collapses to (1/2)(SNR(t) - SNR(t-1)) ||u_hat_t - u_y||^2,
              because a_t^2 / c_t = SNR(t) - SNR(t-1)

Block t: X = [x | z_{t-1}], A = X W1 + b1, O = relu(A) W2 + b2 (logits), p = softmax(O),
u_hat_t = p E (a convex combination of class embeddings). Block t's parameters get gradient only
from its own denoising term (hand-derived backprop through this one block, no autograd); the
head only from the cross-entropy; E (when learned) from all three terms.

What this file simplifies or departs from:
- blocks are one-hidden-layer MLPs, not the paper's CNN (no conv, batch norm or dropout);
- toy task generated in code (10-class "noisy prototype digits"), not MNIST/CIFAR;
- every minibatch visits t = 1..T in turn (Alg. 1's per-t update of block t, head and E, with
  fresh noise), instead of looping over t outside the minibatch loop;
- the cosine schedule is ours (the paper gives no formula): Nichol-Dhariwal cosine flipped to
  the NoProp time direction, abar clipped to [1e-3, 0.99] so that SNR(T) stays finite; for
  T >= 18 that clip flattens the top end (block T would get weight 0), so the LM's
  check_config refuses such T unless abar_max is raised;
- embeddings: fixed one-hot E by default (blocks fully independent; the KL is then a
  constant); embed_dim > 0 learns E from random unit-norm rows instead of orthogonal ones;
- the "deterministic chain" (eps = 0 and z_0 = 0) is an extra readout, not in the paper;
- LM: x is a fixed integer reservoir's features, not the raw input (the choice below).

--- On the integer LM: `python train.py --method noprop` ---

y_i = byte i + 1 (m = 256, fixed one-hot E, d = 256), and x_i = the byte context as the integer
RNN sees it after byte i, the normalised activities of its embedding and of every block:
    [LM-1]  x_i = [rms(emb_i) | rms(y_1,i) | ... | rms(y_L,i)],  rms(a) = a / sqrt(mean a^2)
The LM is a context encoder fixed at its initialisation, under the T blocks (why: at the LM
section below), so the int8 LM never changes under this method and what learns is float: the
blocks and the head, by Alg. 1 / Eq. 8 exactly as in the toy (the same functions; fixed
one-hot E, so nothing couples the blocks and Eq. 8's KL is a constant).
Predictive for bits/byte and sampling: the block-1 posterior. Block 1 sees z_0, nearly pure
noise (SNR(0) = 0.001), and with one-hot E its loss is a Brier score, a proper scoring rule:
its optimum is p(y | x, z_0), which is p(y | x) up to that SNR. Averaged over K fixed draws:
    [LM-2]  p(y | x) = (1/K) sum_k softmax(O_1(x, z^(k)))_y,  z^(k) ~ N(0, I) drawn once at init
(O_1: block 1's logits). The chain (Eq. 3) and the head are trained as in the paper and give
an argmax prediction, but no likelihood: the head sees near-clean z_T and is over-confident.
Train loss reported: Eq. 8 (nats), not bits/byte. LM departures: lr 3e-3
(paper 1e-3) for the short CPU run; a minibatch is every position of S windows (2,000 rows).

The baseline for its bits/byte is the reservoir of forward_forward.py (`--reservoir true`): a
linear softmax on the same features [LM-1] and windows (results/notebook.md section 4).

Shapes: B = batch, D = input features, d = label-embedding dim, m = classes, H = block width;
T = the number of blocks (the paper's letter; `blocks` in Config and on the command line) and
t = 1..T a block's index, in the paper's equations and in its algorithm below;
LM: S = windows per step, T = bytes per window as in the rest of the project (the number of
blocks is only ever `cfg.blocks` there), N = S T, F = (L + 1) d_model, K = z0_draws.

$ python noprop.py                             (toy demo, seconds)
$ python train.py --method noprop              (the integer LM, CPU default)
$ python train.py --method noprop --blocks 4   (4 blocks: cheaper steps; block 1 still sees
                                               z_0 with SNR 0.001)
"""
import math
import time
from dataclasses import dataclass

import numpy as np

import int_rnn_lm as lm

# randomness keyed by (seed, purpose, ...): the purposes (host generators, and normal's hash)
INIT, TASK, SHUFFLE, BLOCK_NOISE, HEAD_NOISE, EVAL, Z0_DRAWS = 0, 1, 2, 4, 5, 6, 7
BLOCK_KEYS, HEAD_KEYS = ("W1", "b1", "W2", "b2"), ("Wo", "bo")


def make_rng(seed, *keys):
    """A host generator that is a pure function of (seed, purpose, ...); no global RNG state."""
    return np.random.default_rng([seed, *keys])


# -----------------------------------------------------------------------------
# the algorithm: the noise schedule, each block's local denoising loss, the head, Alg. 1


NORMAL_QUANTILES = lm.NORMAL_QUANTILES.astype(np.float32)   # a 16-bit uniform to a normal


def normal(xp, shape, dtype, seed, *keys):
    """Gaussian noise (rows, d), a pure function of (seed, purpose, ..., row, index), drawn
    where the array lives: the integer methods' counter hash (int_rnn_lm.noise_uniform16)
    gives a 16-bit uniform per entry and NORMAL_QUANTILES the normal, so NumPy and CuPy draw
    the same bits with no host draw and no copy to the device. A departure: the tails stop at
    |z| = 4.17 (the 2^-16 quantile)."""
    rows, d = shape
    u = lm.noise_uniform16(lm.stream_key(seed, *keys), xp.arange(rows), d, xp)  # (rows, d)
    return lm.device_table(xp, NORMAL_QUANTILES)[u].astype(dtype, copy=False)


def noise_schedule(T, s=0.008, abar_min=1e-3, abar_max=0.99):
    """Flipped cosine schedule in NoProp's time direction; float64 host arrays of length T+1.

    a, b, c at index 0 are nan: the chain's first step is t = 1."""
    tau = (T - np.arange(T + 1)) / T                              # DDPM time of NoProp step t
    f = np.cos((tau + s) / (1 + s) * np.pi / 2) ** 2
    abar = np.clip(f / f[T], abar_min, abar_max)                  # (T+1,) increasing in t
    alpha = np.append(abar[:-1] / abar[1:], abar[T])              # abar_t = alpha_t abar_{t+1}
    snr = abar / (1 - abar)                                       # signal-to-noise ratio
    a, b, c = (np.full(T + 1, np.nan) for _ in range(3))
    prev = slice(0, T)                                            # index t-1 for t = 1..T
    a[1:] = np.sqrt(abar[1:]) * (1 - alpha[prev]) / (1 - abar[prev])        # Eq. 6
    b[1:] = np.sqrt(alpha[prev]) * (1 - abar[1:]) / (1 - abar[prev])        # Eq. 6
    c[1:] = (1 - abar[1:]) * (1 - alpha[prev]) / (1 - abar[prev])           # Eq. 6
    return {"abar": abar, "alpha": alpha, "snr": snr, "a": a, "b": b, "c": c}


def block_weight(sched, t, T, eta):
    """w_t = (T/2) eta (SNR(t) - SNR(t-1)), the Eq. 8 weight of block t (a python float)."""
    return float(T / 2 * eta * (sched["snr"][t] - sched["snr"][t - 1]))


def one_hot(y, m, dtype):
    xp = lm.backend_of(y)
    return (y[:, None] == xp.arange(m)[None, :]).astype(dtype)   # (B, m)


def softmax(s):
    xp = lm.backend_of(s)
    e = xp.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def block_logits(block, x, z):
    """Forward pass of one block up to its logits O (B, m), given input x and noisy label z."""
    xp = lm.backend_of(x)
    X = xp.concatenate([x, z], axis=1)                            # (B, D + d)
    A = X @ block["W1"] + block["b1"]                             # (B, H)
    return xp.maximum(A, 0.0) @ block["W2"] + block["b2"]         # (B, m)


def block_probs(block, x, z):
    """Softmax over classes of one block, given input x and noisy label z. (B, m)"""
    return softmax(block_logits(block, x, z))


def noprop_block_loss_and_grads(block, E, x, y, eps, w, abar_prev, embed_grad=True):
    """Denoising loss of block t (Eq. 8 term, weight w = w_t) and its hand-derived gradients.

    x: (B, D) input, y: (B,) labels, eps: (B, d) noise for z_{t-1}, abar_prev = abar_{t-1}.
    Returns (loss, grads) with grads for W1, b1, W2, b2 and, if embed_grad, E."""
    xp = lm.backend_of(x)
    B, D = x.shape
    Y = one_hot(y, E.shape[0], x.dtype)                           # (B, m)
    U = Y @ E                                                     # (B, d) targets u_y
    Z = math.sqrt(abar_prev) * U + math.sqrt(1 - abar_prev) * eps  # (B, d) z_{t-1}, Eqs. 5-6
    X = xp.concatenate([x, Z], axis=1)                            # (B, D + d)
    A = X @ block["W1"] + block["b1"]                             # (B, H)
    Hh = xp.maximum(A, 0.0)                                       # (B, H)
    p = softmax(Hh @ block["W2"] + block["b2"])                   # (B, m)
    U_hat = p @ E                                                 # (B, d) u_hat_t = p E
    loss = w / B * xp.sum((U_hat - U) ** 2)                       # Eq. 8 denoising term
    G_U = 2 * w / B * (U_hat - U)                                 # (B, d) dL/dU_hat
    G_p = G_U @ E.T                                               # (B, m)
    G_O = p * (G_p - xp.sum(p * G_p, axis=1, keepdims=True))     # (B, m) softmax Jacobian
    G_A = (G_O @ block["W2"].T) * (A > 0)                         # (B, H) ReLU mask
    grads = {"W1": X.T @ G_A, "b1": G_A.sum(axis=0),              # (D + d, H), (H,)
             "W2": Hh.T @ G_O, "b2": G_O.sum(axis=0)}             # (H, m), (m,)
    if embed_grad:  # E: through u_hat = p E, through the target U = Y E, through the input Z
        G_Z = G_A @ block["W1"][D:].T                             # (B, d) rows of W1 that see z
        grads["E"] = p.T @ G_U - Y.T @ G_U + math.sqrt(abar_prev) * (Y.T @ G_Z)  # (m, d)
    return loss, grads


def noprop_head_loss_and_grads(head, E, y, eps, abar_T, abar_0, embed_grad=True):
    """Cross-entropy of the head on z_T ~ q(z_T|y) (Eq. 8, Eq. 14) plus the prior KL term.

    eps: (B, d) noise for z_T. Returns (ce, kl, grads) with grads for W_o, b_o and, if
    embed_grad, E."""
    xp = lm.backend_of(E)
    B, d = eps.shape
    Y = one_hot(y, E.shape[0], E.dtype)                           # (B, m)
    U = Y @ E                                                     # (B, d)
    Z_T = math.sqrt(abar_T) * U + math.sqrt(1 - abar_T) * eps      # (B, d) z_T, Eqs. 5-6
    O = Z_T @ head["Wo"] + head["bo"]                             # (B, m) Eq. 14 logits
    O_max = O.max(axis=1, keepdims=True)
    lse = O_max[:, 0] + xp.log(xp.exp(O - O_max).sum(axis=1))     # (B,)
    ce = xp.mean(lse - (O * Y).sum(axis=1))
    # KL(N(sqrt(abar_0) u, (1 - abar_0) I) || N(0, I)), mean over the batch
    kl = 0.5 * (abar_0 * xp.sum(U * U) / B - d * abar_0 - d * math.log(1 - abar_0))
    G_O = (softmax(O) - Y) / B                                    # (B, m)
    grads = {"Wo": Z_T.T @ G_O, "bo": G_O.sum(axis=0)}            # (d, m), (m,)
    if embed_grad:  # E: CE path through z_T, plus the KL path
        grads["E"] = math.sqrt(abar_T) * (Y.T @ (G_O @ head["Wo"].T)) + abar_0 / B * (Y.T @ U)
    return ce, kl, grads


def adamw(params, grads, moments, step, cfg):
    """The paper's optimiser: AdamW on every key of params (grads may hold extra keys, e.g. E),
    decoupled decay on every parameter, biases included, as torch's default group."""
    lm.adam_step(params, grads, moments, step, cfg.lr, (cfg.adam_b1, cfg.adam_b2), cfg.adam_eps,
                 cfg.weight_decay)


def init_blocks_and_head(rng, T, D, d, m, H, xp):
    """T blocks [x (D) | z (d)] -> H -> m (He init) and the head d -> m, drawn from the host
    generator rng in a fixed order (both backends identical)."""
    f32 = lambda a: xp.asarray(a, dtype=xp.float32)  # noqa: E731
    blocks = [{"W1": f32(rng.standard_normal((D + d, H)) * np.sqrt(2 / (D + d))),  # (D+d, H)
               "b1": f32(np.zeros(H)),                                           # (H,)
               "W2": f32(rng.standard_normal((H, m)) * np.sqrt(1 / H)),          # (H, m)
               "b2": f32(np.zeros(m))}                                           # (m,)
              for _ in range(T)]
    head = {"Wo": f32(rng.standard_normal((d, m)) * np.sqrt(1 / d)), "bo": f32(np.zeros(m))}
    return blocks, head


def noprop_block_step(params, opt, t, x, y, sched, step, cfg, seed, learn_embed):
    """Train block t alone for one minibatch. Returns its loss and its gradient for E (None
    when E is fixed)."""
    xp = lm.backend_of(x)
    E = params["E"]["E"]
    eps = normal(xp, (len(y), E.shape[1]), x.dtype, seed, BLOCK_NOISE, step, t)  # (B, d)
    loss, grads = noprop_block_loss_and_grads(
        params["blocks"][t - 1], E, x, y, eps, block_weight(sched, t, cfg.blocks, cfg.eta),
        float(sched["abar"][t - 1]), embed_grad=learn_embed)
    adamw(params["blocks"][t - 1], grads, opt["blocks"][t - 1], step, cfg)
    return loss, grads.get("E")


def noprop_train_step(params, opt, x, y, sched, step, cfg, seed, learn_embed):
    """One minibatch of Alg. 1: for t = 1..T, block t takes a local step on its denoising
    term, then the head (and E, if learn_embed) a step on CE + KL (+ block t's E-gradient).

    Every block samples its own z_{t-1} from q, so no block reads another block's output.
    Noise is keyed by (seed, purpose, step, t); step counts from 1."""
    xp = lm.backend_of(x)
    E = params["E"]["E"]
    abar_0, abar_T = float(sched["abar"][0]), float(sched["abar"][cfg.blocks])
    losses, ces = [], []
    for t in range(1, cfg.blocks + 1):
        loss, g_E = noprop_block_step(params, opt, t, x, y, sched, step, cfg, seed, learn_embed)
        eps = normal(xp, (len(y), E.shape[1]), x.dtype, seed, HEAD_NOISE, step, t)   # (B, d)
        ce, kl, grads = noprop_head_loss_and_grads(params["head"], E, y, eps, abar_T, abar_0,
                                                   embed_grad=learn_embed)
        sub = (step - 1) * cfg.blocks + t  # Adam step count: head and E are updated T times a batch
        adamw(params["head"], grads, opt["head"], sub, cfg)
        if learn_embed:  # in place: the next block already sees the updated E
            adamw(params["E"], {"E": g_E + grads["E"]}, opt["E"], sub, cfg)
        losses.append(loss)
        ces.append(ce)
    # the T block losses, T CEs and the last KL in one copy to the host (on a GPU, the step's
    # one sync point for them)
    host = lm.to_numpy(xp.stack(losses + ces + [kl])).tolist()
    T = cfg.blocks                                                # the paper's T
    return {"block": host[:T], "ce": float(np.mean(host[T:2 * T])), "kl": host[-1]}


def noprop_chain(params, x, sched, rng=None):
    """Eq. 3 inference chain from z_0 to z_T. rng=None runs it deterministically (z_0 = 0,
    eps = 0; our extra readout). Returns the head's logits on z_T and block 1's softmax."""
    xp = lm.backend_of(x)
    E = params["E"]["E"]
    shape = (len(x), E.shape[1])                                  # (B, d)
    draw = lambda: xp.asarray(rng.standard_normal(shape), dtype=x.dtype)  # noqa: E731
    z = draw() if rng is not None else xp.zeros(shape, dtype=x.dtype)  # z_0 ~ N(0, I), Eq. 1
    for t, block in enumerate(params["blocks"], start=1):
        p = block_probs(block, x, z)                              # (B, m)
        if t == 1:
            p_1 = p                                               # block 1 ~ p(y | x)
        a, b, c = (float(sched[k][t]) for k in "abc")
        z = a * (p @ E) + b * z                                   # Eq. 3 mean
        if rng is not None:
            z = z + math.sqrt(c) * draw()                         # Eq. 3 noise
    head = params["head"]
    return z @ head["Wo"] + head["bo"], p_1                       # Eq. 14 logits, (B, m)

# -----------------------------------------------------------------------------
# on the integer LM: a fixed integer encoder, NoProp-DT blocks on top [LM-1]
#
# Choice: the LM is a shared context ENCODER, fixed at its initialisation, and NoProp's blocks
# sit on top of it; the LM's own layers are not the blocks. Why:
#   * NoProp block t sees x and z_{t-1} only, never block t-1's output; an LM layer reads the
#     residual stream of the layer below (a forward pass across blocks), has no input for z,
#     and with L = 1 there would be one block, not the paper's 10;
#   * a shared encoder trained by the blocks' losses would take a gradient from every block and
#     back through time: the global backprop NoProp removes. Fixed, the encoder is a random
#     integer recurrent reservoir (an "echo-state" network), and each block's own
#     first layer over x plays the part of each paper block's own image path.


def features(acts):
    """[LM-1] x = [rms(emb) | rms(y_1) | ... | rms(y_L)]: the integer LM's activities, each
    (N, T, D) q4 int32 -> (N T, (L + 1) D) float32."""
    xp = lm.backend_of(acts[0])
    D = acts[0].shape[-1]
    flat = [a.reshape(-1, D).astype(xp.float32) for a in acts]
    return xp.concatenate([a / xp.sqrt(xp.mean(a * a, axis=1, keepdims=True) + 1e-8)
                           for a in flat], axis=1)


def net_view(state, T, prefix=""):
    """The flat state's arrays (the same arrays, not copies) in the toy's nested layout:
    blocks[t - 1][k] = state[prefix + "block{t}.k"], head[k] = state[prefix + "head.k"]."""
    return {"blocks": [{k: state[f"{prefix}block{t}.{k}"] for k in BLOCK_KEYS}
                       for t in range(1, T + 1)],
            "head": {k: state[f"{prefix}head.{k}"] for k in HEAD_KEYS}}

# -----------------------------------------------------------------------------
# the method interface train.py calls (README "The method interface")


@dataclass
class Config:
    rows: int = 20              # S: windows per step (data rows; the state carries across steps)
    blocks: int = 10            # T in the paper: number of blocks / diffusion steps (paper: 10)
    eta: float = 0.1            # weight of the denoising term in Eq. 8 (paper: 0.1)
    hidden: int = 256           # hidden width H of each block's MLP
    z0_draws: int = 4           # K fixed z_0 draws averaged by the block-1 predictive [LM-2]
    cos_s: float = 0.008        # offset s of the cosine schedule
    abar_min: float = 1e-3      # clip of abar_0 (t = 0 is almost pure noise)
    abar_max: float = 0.99      # clip of abar_T (< 1 keeps SNR(T) finite)
    lr: float = 3e-3            # AdamW learning rate (paper: 1e-3; 3e-3 for the short CPU run)
    weight_decay: float = 1e-3  # AdamW decoupled weight decay (paper: 1e-3)
    adam_b1: float = 0.9        # Adam first-moment decay rate
    adam_b2: float = 0.999      # Adam second-moment decay rate
    adam_eps: float = 1e-8      # Adam denominator epsilon


# the training loss step() reports, named by what it is (log.csv column, progress line)
LOSS = "eq8_nats"   # Eq. 8 (CE + KL + the blocks' denoising terms), nats

# train.py's run on each device: the GPU takes more windows per step and wider blocks
DEFAULTS = {"cpu": dict(steps=170, eval_every=17), "cuda": dict(rows=256, hidden=512)}


def check_config(cfg):
    for name in ("rows", "blocks", "hidden", "z0_draws"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.eta <= 0 or cfg.lr <= 0 or cfg.weight_decay < 0 or cfg.cos_s < 0:
        raise ValueError("eta and lr must be > 0, weight_decay and cos_s >= 0")
    if not 0 < cfg.abar_min < cfg.abar_max < 1:
        raise ValueError(f"need 0 < abar_min < abar_max < 1, got {cfg.abar_min}, "
                         f"{cfg.abar_max}")
    abar = noise_schedule(cfg.blocks, cfg.cos_s, cfg.abar_min, cfg.abar_max)["abar"]
    if not np.all(np.diff(abar) > 0):  # the clips flatten the cosine's ends when T is large
        raise ValueError(f"blocks = {cfg.blocks}: the clipped cosine schedule is flat at an end (abar "
                         f"{abar[1]:.4f} .. {abar[-2]:.4f}); lower blocks or widen abar_min/max")
    if not (0 <= cfg.adam_b1 < 1 and 0 <= cfg.adam_b2 < 1 and cfg.adam_eps > 0):
        raise ValueError("adam_b1 and adam_b2 must be in [0, 1), adam_eps > 0")


def num_sequences(cfg):
    return cfg.rows


def init(params, cfg, mcfg, seed, world):
    """State: the carried hidden state, the blocks and the head (float32) with their AdamW
    moments, and the K fixed z_0 draws of the predictive [LM-2]. The int8 LM is not copied:
    it is the fixed encoder."""
    check_config(cfg)
    xp = lm.backend_of(params["emb"])
    rng = make_rng(seed, INIT)
    F = (mcfg.n_layers + 1) * mcfg.d_model
    blocks, head = init_blocks_and_head(rng, cfg.blocks, F, lm.VOCAB, lm.VOCAB, cfg.hidden, xp)
    state = {"hidden": lm.zero_hidden(mcfg, cfg.rows, xp),             # (L, S, D) int8
             "z0": normal(xp, (cfg.z0_draws, lm.VOCAB), xp.float32, seed, Z0_DRAWS)}  # (K, 256)
    for t, block in enumerate(blocks, start=1):
        state.update({f"block{t}.{k}": v for k, v in block.items()})
    state.update({f"head.{k}": v for k, v in head.items()})
    for k in [k for k in state if k.startswith(("block", "head"))]:
        state["adam_m." + k] = xp.zeros_like(state[k])
        state["adam_v." + k] = xp.zeros_like(state[k])
    return state


def step(params, state, batch, t, cfg, mcfg, seed, world):
    """One NoProp-DT minibatch (Alg. 1) on windows batch = (tokens (S, T + 1), reset): the
    fixed integer LM encodes the windows [LM-1], then every block and the head take their
    local steps. params is returned unchanged; the caller's state is not modified."""
    tokens, reset = batch
    xp = lm.backend_of(tokens)
    state = {k: v.copy() for k, v in state.items()}
    S, T = tokens.shape[0], tokens.shape[1] - 1
    hidden = lm.zero_hidden(mcfg, S, xp) if reset else state["hidden"]
    _, state["hidden"], acts = lm.forward(params, mcfg, tokens[:, :-1], hidden,
                                          return_activations=True)
    x, y = features(acts), tokens[:, 1:].reshape(-1).astype(xp.int64)   # (N, F), (N,)
    net = dict(net_view(state, cfg.blocks), E={"E": xp.eye(lm.VOCAB, dtype=xp.float32)})  # one-hot
    m, v = net_view(state, cfg.blocks, "adam_m."), net_view(state, cfg.blocks, "adam_v.")
    opt = {"blocks": [{"m": a, "v": b} for a, b in zip(m["blocks"], v["blocks"])],
           "head": {"m": m["head"], "v": v["head"]}}
    sched = noise_schedule(cfg.blocks, cfg.cos_s, cfg.abar_min, cfg.abar_max)
    out = noprop_train_step(net, opt, x, y, sched, t + 1, cfg, seed, learn_embed=False)
    stats = {LOSS: out["ce"] + out["kl"] + float(np.mean(out["block"])),  # Eq. 8, nats
             "member_tokens": S * T, "ce_head": out["ce"], "loss_block1": out["block"][0],
             f"loss_block{cfg.blocks}": out["block"][-1]}
    return params, state, stats


def predict(params, state, mcfg):
    """[LM-2] the block-1 posterior on the integer LM's features -> log2 p (N, T, 256) float64,
    averaged over the K fixed z_0 draws (in log space: no underflow)."""
    block = {k: state["block1." + k] for k in BLOCK_KEYS}
    z0 = state["z0"]                                              # (K, 256)

    def fn(tokens, hidden):
        _, hidden, acts = lm.forward(params, mcfg, tokens, hidden, return_activations=True)
        xp = lm.backend_of(tokens)
        x = features(acts)                                        # (N T, F)
        log_mix = None
        for z in z0:
            s = block_logits(block, x, xp.broadcast_to(z, (len(x), len(z)))).astype(xp.float64)
            s_max = s.max(axis=1, keepdims=True)
            log_p = s - s_max - xp.log(xp.exp(s - s_max).sum(axis=1, keepdims=True))  # nats
            log_mix = log_p if log_mix is None else xp.logaddexp(log_mix, log_p)
        log2p = (log_mix - math.log(len(z0))) / math.log(2)      # (N T, 256)
        return log2p.reshape(*tokens.shape, lm.VOCAB), hidden
    return fn

# -----------------------------------------------------------------------------
# the toy demo: NoProp-DT on a small classification task, `python noprop.py`


@dataclass
class ToyConfig:
    seed: int = 0                      # the one seed every generator is derived from
    blocks: int = 10                   # T in the paper: number of blocks / diffusion steps (paper: 10)
    eta: float = 0.1                   # weight of the denoising term in Eq. 8 (paper: 0.1)
    hidden: int = 256                  # hidden width H of each block's MLP
    embed_dim: int = 0                 # 0: fixed one-hot E (d = m); > 0: learned E, d = this
    cos_s: float = 0.008               # offset s of the cosine schedule
    abar_min: float = 1e-3             # clip of abar_0 (t = 0 is almost pure noise)
    abar_max: float = 0.99             # clip of abar_T (< 1 keeps SNR(T) finite)
    lr: float = 1e-3                   # AdamW learning rate (paper: 1e-3)
    weight_decay: float = 1e-3         # AdamW decoupled weight decay (paper: 1e-3)
    adam_b1: float = 0.9               # Adam first-moment decay rate
    adam_b2: float = 0.999             # Adam second-moment decay rate
    adam_eps: float = 1e-8             # Adam denominator epsilon
    batch_size: int = 64               # minibatch size (paper: 128)
    epochs: int = 8                    # passes over the toy training set
    eval_runs: int = 5                 # stochastic-chain runs averaged at test time
    # toy task ("noisy prototype digits")
    n_classes: int = 10                # m
    n_features: int = 64               # D = m blank border features + D - m binary "pixels"
    n_modes: int = 3                   # prototypes ("writing styles") per class
    flip_prob: float = 0.15            # probability that a pixel of the prototype is flipped
    pixel_noise: float = 0.3           # std of the Gaussian noise added to every pixel
    n_train: int = 5000                # training examples
    n_test: int = 2000                 # test examples


def make_toy_task(cfg, split):
    """forward_forward.py's toy task, the same examples (same keys; a test checks), so that the
    two local methods compare and each file runs alone: "noisy prototype digits", each class
    n_modes random binary pixel patterns, an example one of them with flipped pixels and
    Gaussian noise, after a blank border of C features (FF writes its label there; NoProp
    leaves it blank). split: 0 train, 1 test."""
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


def init_params(cfg, D, xp):
    """T blocks, the head and the embedding matrix E (host-drawn: both backends identical)."""
    rng = make_rng(cfg.seed, INIT)
    m = cfg.n_classes
    if cfg.embed_dim == 0:
        E = np.eye(m)                                             # fixed one-hot embeddings
    else:  # learned: random unit-norm rows (v2: comparable to orthogonal / prototype init)
        E = rng.standard_normal((m, cfg.embed_dim))
        E /= np.linalg.norm(E, axis=1, keepdims=True)
    blocks, head = init_blocks_and_head(rng, cfg.blocks, D, E.shape[1], m, cfg.hidden, xp)
    return {"blocks": blocks, "head": head, "E": {"E": xp.asarray(E, dtype=xp.float32)}}


def init_opt(params):
    return {"blocks": [lm.adam_moments(b) for b in params["blocks"]],
            "head": lm.adam_moments(params["head"]), "E": lm.adam_moments(params["E"])}


def train_toy(cfg, xp=np):
    """Train all blocks, the head (and E) on the toy task; return the parameters."""
    x_tr, y_tr = (xp.asarray(a) for a in make_toy_task(cfg, 0))
    sched = noise_schedule(cfg.blocks, cfg.cos_s, cfg.abar_min, cfg.abar_max)
    params = init_params(cfg, cfg.n_features, xp)
    opt = init_opt(params)
    step = 0
    for epoch in range(cfg.epochs):
        perm = make_rng(cfg.seed, SHUFFLE, epoch).permutation(cfg.n_train)
        history = []
        for i in range(0, cfg.n_train - cfg.batch_size + 1, cfg.batch_size):
            step += 1
            idx = xp.asarray(perm[i:i + cfg.batch_size])
            stats = noprop_train_step(params, opt, x_tr[idx], y_tr[idx], sched, step, cfg,
                                      cfg.seed, cfg.embed_dim > 0)
            history.append([stats["ce"], stats["kl"]] + stats["block"])
        ce, kl, *blocks = np.mean(history, axis=0)                # epoch means
        print(f"epoch {epoch + 1:2d}/{cfg.epochs} | ce {ce:.4f} | kl {kl:.4f} | block losses "
              + " ".join(f"{v:.3f}" for v in blocks))
    return params


def evaluate(params, cfg, xp=np):
    """Test accuracy of the stochastic chain (mean over eval_runs), the deterministic chain
    and block 1 alone (its softmax given z_0 ~ N(0, I))."""
    x_te, y_te = (xp.asarray(a) for a in make_toy_task(cfg, 1))
    sched = noise_schedule(cfg.blocks, cfg.cos_s, cfg.abar_min, cfg.abar_max)
    acc = lambda scores: float((scores.argmax(axis=1) == y_te).mean())  # noqa: E731
    stoch, block1 = [], []
    for run in range(cfg.eval_runs):
        logits, P_1 = noprop_chain(params, x_te, sched, make_rng(cfg.seed, EVAL, run))
        stoch.append(acc(logits))
        block1.append(acc(P_1))
    det_logits, _ = noprop_chain(params, x_te, sched, None)
    return {"stochastic": float(np.mean(stoch)), "deterministic": acc(det_logits),
            "block1": float(np.mean(block1))}


if __name__ == "__main__":
    cfg = ToyConfig()
    print(cfg)
    t0 = time.time()
    params = train_toy(cfg)
    res = evaluate(params, cfg)
    print(f"test accuracy | stochastic chain {res['stochastic']:.3f} (mean of {cfg.eval_runs})"
          f" | deterministic chain {res['deterministic']:.3f} | block 1 {res['block1']:.3f}"
          f" | chance {1 / cfg.n_classes:.3f} | {time.time() - t0:.1f} s")
