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

Block t: X = [x | z_{t-1}], A = X W1 + b1, S = relu(A) W2 + b2, P = softmax(S),
u_hat_t = P E (a convex combination of class embeddings). Block t's parameters get gradient only
from its own denoising term (hand-derived backprop through this one block, no autograd); the
head only from the cross-entropy; E (when learned) from all three terms.

What this file simplifies or departs from:
- blocks are one-hidden-layer MLPs, not the paper's CNN (no conv, batch norm or dropout);
- toy task generated in code (10-class "noisy prototype digits"), not MNIST/CIFAR;
- every minibatch visits t = 1..T in turn (Alg. 1's per-t update of block t, head and E, with
  fresh noise), instead of looping over t outside the minibatch loop;
- the cosine schedule is ours (the paper gives no formula): Nichol-Dhariwal cosine flipped to
  the NoProp time direction, abar clipped to [1e-3, 0.99] so that SNR(T) stays finite;
- embeddings: fixed one-hot E by default (blocks fully independent; the KL is then a
  constant); embed_dim > 0 learns E from random unit-norm rows instead of orthogonal ones;
- the "deterministic chain" (eps = 0 and z_0 = 0) is an extra readout, not in the paper.

Shapes: B = batch, D = input features, d = label-embedding dim, m = classes, H = block width.

$ python noprop.py
"""
import math
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
    T: int = 10                        # number of blocks / diffusion steps (paper: 10)
    eta: float = 0.1                   # weight of the denoising term in Eq. 8 (paper: 0.1)
    hidden: int = 256                  # hidden width H of each block's MLP
    embed_dim: int = 0                 # 0: fixed one-hot E (d = m); > 0: learned E, d = this
    cos_s: float = 0.008               # offset s of the cosine schedule
    abar_min: float = 1e-3             # clip of abar_0 (t = 0 is almost pure noise)
    abar_max: float = 0.99             # clip of abar_T (< 1 keeps SNR(T) finite)
    lr: float = 1e-3                   # AdamW learning rate (paper: 1e-3)
    weight_decay: float = 1e-3         # AdamW decoupled weight decay (paper: 1e-3)
    adam_betas: tuple = (0.9, 0.999)   # Adam moment decay rates
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


# --- core: local objective and hand-derived gradients ---

def get_xp(x):
    """numpy or cupy, whichever module owns array x."""
    return cupy.get_array_module(x) if cupy is not None else np


def make_rng(seed, *keys):
    """A host generator that is a pure function of (seed, *keys); no global RNG state.
    First key = purpose: 0 init, 1 task, 2 shuffling, 4 block noise, 5 head noise, 6 eval."""
    return np.random.default_rng([seed, *keys])


def normal(xp, shape, dtype, seed, *keys):
    """Gaussian noise drawn on the host (identical on both backends), moved to xp."""
    return xp.asarray(make_rng(seed, *keys).standard_normal(shape), dtype=dtype)


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
    xp = get_xp(y)
    return (y[:, None] == xp.arange(m)[None, :]).astype(dtype)   # (B, m)


def softmax(s):
    xp = get_xp(s)
    e = xp.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def block_probs(block, x, z):
    """Forward pass of one block: softmax over classes given input x and noisy label z."""
    xp = get_xp(x)
    X = xp.concatenate([x, z], axis=1)                            # (B, D + d)
    A = X @ block["W1"] + block["b1"]                             # (B, H)
    return softmax(xp.maximum(A, 0.0) @ block["W2"] + block["b2"])  # (B, m)


def noprop_block_loss_and_grads(block, E, x, y, eps, w, abar_prev):
    """Denoising loss of block t (Eq. 8 term, weight w = w_t) and its hand-derived gradients.

    x: (B, D) input, y: (B,) labels, eps: (B, d) noise for z_{t-1}, abar_prev = abar_{t-1}.
    Returns (loss, grads) with grads for W1, b1, W2, b2 and E (use E's only if E is learned)."""
    xp = get_xp(x)
    B, D = x.shape
    Y = one_hot(y, E.shape[0], x.dtype)                           # (B, m)
    U = Y @ E                                                     # (B, d) targets u_y
    Z = math.sqrt(abar_prev) * U + math.sqrt(1 - abar_prev) * eps  # (B, d) z_{t-1}, Eqs. 5-6
    X = xp.concatenate([x, Z], axis=1)                            # (B, D + d)
    A = X @ block["W1"] + block["b1"]                             # (B, H)
    Hh = xp.maximum(A, 0.0)                                       # (B, H)
    P = softmax(Hh @ block["W2"] + block["b2"])                   # (B, m)
    U_hat = P @ E                                                 # (B, d) u_hat_t = P E
    loss = w / B * xp.sum((U_hat - U) ** 2)                       # Eq. 8 denoising term
    G_U = 2 * w / B * (U_hat - U)                                 # (B, d) dL/dU_hat
    G_P = G_U @ E.T                                               # (B, m)
    G_S = P * (G_P - xp.sum(P * G_P, axis=1, keepdims=True))     # (B, m) softmax Jacobian
    G_A = (G_S @ block["W2"].T) * (A > 0)                         # (B, H) ReLU mask
    G_Z = G_A @ block["W1"][D:].T                                 # (B, d) rows of W1 that see z
    grads = {"W1": X.T @ G_A, "b1": G_A.sum(axis=0),              # (D + d, H), (H,)
             "W2": Hh.T @ G_S, "b2": G_S.sum(axis=0),             # (H, m), (m,)
             # E: through u_hat = P E, through the target U = Y E, through the input Z
             "E": P.T @ G_U - Y.T @ G_U + math.sqrt(abar_prev) * (Y.T @ G_Z)}  # (m, d)
    return loss, grads


def noprop_head_loss_and_grads(head, E, y, eps, abar_T, abar_0):
    """Cross-entropy of the head on z_T ~ q(z_T|y) (Eq. 8, Eq. 14) plus the prior KL term.

    eps: (B, d) noise for z_T. Returns (ce, kl, grads) with grads for W_o, b_o and E."""
    xp = get_xp(E)
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
    grads = {"Wo": Z_T.T @ G_O, "bo": G_O.sum(axis=0),            # (d, m), (m,)
             # E: CE path through z_T, plus the KL path
             "E": math.sqrt(abar_T) * (Y.T @ (G_O @ head["Wo"].T)) + abar_0 / B * (Y.T @ U)}
    return ce, kl, grads


def init_adam(params):
    xp = get_xp(params[next(iter(params))])
    return {"m": {k: xp.zeros_like(v) for k, v in params.items()},
            "v": {k: xp.zeros_like(v) for k, v in params.items()}}


def adamw_step(params, grads, state, step, cfg):
    """In-place AdamW update of every key of params (grads may hold extra keys, e.g. E).
    Decoupled decay on every parameter, biases included, as torch's default group."""
    xp = get_xp(params[next(iter(params))])
    b1, b2 = cfg.adam_betas
    for k in params:
        g, m, v = grads[k], state["m"][k], state["v"][k]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** step)
        v_hat = v / (1 - b2 ** step)
        params[k] -= cfg.lr * (m_hat / (xp.sqrt(v_hat) + cfg.adam_eps)
                               + cfg.weight_decay * params[k])


def init_params(cfg, D, xp):
    """T blocks, the head and the embedding matrix E (host-drawn: both backends identical)."""
    rng = make_rng(cfg.seed, 0)
    m, H = cfg.n_classes, cfg.hidden
    if cfg.embed_dim == 0:
        E = np.eye(m)                                             # fixed one-hot embeddings
    else:  # learned: random unit-norm rows (v2: comparable to orthogonal / prototype init)
        E = rng.standard_normal((m, cfg.embed_dim))
        E /= np.linalg.norm(E, axis=1, keepdims=True)
    d = E.shape[1]
    f32 = lambda a: xp.asarray(a, dtype=xp.float32)  # noqa: E731
    blocks = [{"W1": f32(rng.standard_normal((D + d, H)) * np.sqrt(2 / (D + d))),  # (D+d, H)
               "b1": f32(np.zeros(H)),                                           # (H,)
               "W2": f32(rng.standard_normal((H, m)) * np.sqrt(1 / H)),          # (H, m)
               "b2": f32(np.zeros(m))}                                           # (m,)
              for _ in range(cfg.T)]
    head = {"Wo": f32(rng.standard_normal((d, m)) * np.sqrt(1 / d)), "bo": f32(np.zeros(m))}
    return {"blocks": blocks, "head": head, "E": {"E": f32(E)}}   # E: (m, d)


def init_opt(params):
    return {"blocks": [init_adam(b) for b in params["blocks"]],
            "head": init_adam(params["head"]), "E": init_adam(params["E"])}


def noprop_block_step(params, opt, t, x, y, sched, step, cfg):
    """Train block t alone for one minibatch. Returns its loss and its gradient for E."""
    xp = get_xp(x)
    E = params["E"]["E"]
    eps = normal(xp, (len(y), E.shape[1]), x.dtype, cfg.seed, 4, step, t)  # (B, d)
    loss, grads = noprop_block_loss_and_grads(
        params["blocks"][t - 1], E, x, y, eps, block_weight(sched, t, cfg.T, cfg.eta),
        float(sched["abar"][t - 1]))
    adamw_step(params["blocks"][t - 1], grads, opt["blocks"][t - 1], step, cfg)
    return loss, grads["E"]


def noprop_train_step(params, opt, x, y, sched, step, cfg):
    """One minibatch of Alg. 1: for t = 1..T, block t takes a local step on its denoising
    term, then the head (and E, if learned) a step on CE + KL (+ block t's E-gradient).

    Every block samples its own z_{t-1} from q, so no block reads another block's output."""
    xp = get_xp(x)
    E = params["E"]["E"]
    abar_0, abar_T = float(sched["abar"][0]), float(sched["abar"][cfg.T])
    losses, ces = [], []
    for t in range(1, cfg.T + 1):
        loss, g_E = noprop_block_step(params, opt, t, x, y, sched, step, cfg)
        eps = normal(xp, (len(y), E.shape[1]), x.dtype, cfg.seed, 5, step, t)   # (B, d)
        ce, kl, grads = noprop_head_loss_and_grads(params["head"], E, y, eps, abar_T, abar_0)
        sub = (step - 1) * cfg.T + t  # Adam step count: head and E are updated T times a batch
        adamw_step(params["head"], grads, opt["head"], sub, cfg)
        if cfg.embed_dim > 0:  # in place: the next block already sees the updated E
            adamw_step(params["E"], {"E": g_E + grads["E"]}, opt["E"], sub, cfg)
        losses.append(float(loss))  # note: a CPU-GPU sync point on cupy
        ces.append(float(ce))
    return {"block": losses, "ce": float(np.mean(ces)), "kl": float(kl)}


def noprop_chain(params, x, sched, rng=None):
    """Eq. 3 inference chain from z_0 to z_T. rng=None runs it deterministically (z_0 = 0,
    eps = 0; our extra readout). Returns the head's logits on z_T and block 1's softmax."""
    xp = get_xp(x)
    E = params["E"]["E"]
    shape = (len(x), E.shape[1])                                  # (B, d)
    draw = lambda: xp.asarray(rng.standard_normal(shape), dtype=x.dtype)  # noqa: E731
    z = draw() if rng is not None else xp.zeros(shape, dtype=x.dtype)  # z_0 ~ N(0, I), Eq. 1
    for t, block in enumerate(params["blocks"], start=1):
        P = block_probs(block, x, z)                              # (B, m)
        if t == 1:
            P_1 = P                                               # block 1 ~ p(y | x)
        a, b, c = (float(sched[k][t]) for k in "abc")
        z = a * (P @ E) + b * z                                   # Eq. 3 mean
        if rng is not None:
            z = z + math.sqrt(c) * draw()                         # Eq. 3 noise
    head = params["head"]
    return z @ head["Wo"] + head["bo"], P_1                       # Eq. 14 logits, (B, m)


# --- toy classification task ---

def make_toy_task(cfg, split):
    """"Noisy prototype digits": each class has n_modes random binary pixel patterns; an
    example is one of them with flipped pixels and Gaussian noise. The first m features are
    a blank border (kept identical to forward_forward.py's task). split: 0 train, 1 test."""
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


def train_toy(cfg, xp=np):
    """Train all blocks, the head (and E) on the toy task; return the parameters."""
    x_tr, y_tr = (xp.asarray(a) for a in make_toy_task(cfg, 0))
    sched = noise_schedule(cfg.T, cfg.cos_s, cfg.abar_min, cfg.abar_max)
    params = init_params(cfg, cfg.n_features, xp)
    opt = init_opt(params)
    step = 0
    for epoch in range(cfg.epochs):
        perm = make_rng(cfg.seed, 2, epoch).permutation(cfg.n_train)
        history = []
        for i in range(0, cfg.n_train - cfg.batch_size + 1, cfg.batch_size):
            step += 1
            idx = xp.asarray(perm[i:i + cfg.batch_size])
            stats = noprop_train_step(params, opt, x_tr[idx], y_tr[idx], sched, step, cfg)
            history.append([stats["ce"], stats["kl"]] + stats["block"])
        ce, kl, *blocks = np.mean(history, axis=0)                # epoch means
        print(f"epoch {epoch + 1:2d}/{cfg.epochs} | ce {ce:.4f} | kl {kl:.4f} | block losses "
              + " ".join(f"{v:.3f}" for v in blocks))
    return params


def evaluate(params, cfg, xp=np):
    """Test accuracy of the stochastic chain (mean over eval_runs), the deterministic chain
    and block 1 alone (its softmax given z_0 ~ N(0, I))."""
    x_te, y_te = (xp.asarray(a) for a in make_toy_task(cfg, 1))
    sched = noise_schedule(cfg.T, cfg.cos_s, cfg.abar_min, cfg.abar_max)
    acc = lambda scores: float((scores.argmax(axis=1) == y_te).mean())  # noqa: E731
    stoch, block1 = [], []
    for run in range(cfg.eval_runs):
        logits, P_1 = noprop_chain(params, x_te, sched, make_rng(cfg.seed, 6, run))
        stoch.append(acc(logits))
        block1.append(acc(P_1))
    det_logits, _ = noprop_chain(params, x_te, sched, None)
    return {"stochastic": float(np.mean(stoch)), "deterministic": acc(det_logits),
            "block1": float(np.mean(block1))}


# --- demo ---

if __name__ == "__main__":
    cfg = Config()
    print(cfg)
    t0 = time.time()
    params = train_toy(cfg)
    res = evaluate(params, cfg)
    print(f"test accuracy | stochastic chain {res['stochastic']:.3f} (mean of {cfg.eval_runs})"
          f" | deterministic chain {res['deterministic']:.3f} | block 1 {res['block1']:.3f}"
          f" | chance {1 / cfg.n_classes:.3f} | {time.time() - t0:.1f} s")
