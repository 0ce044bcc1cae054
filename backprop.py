r"""Backpropagation through time: the yardstick every method here is measured against.

Not a method of a paper but the thing the others do without: the exact gradient of the loss,
by the chain rule written out by hand (no autograd library), through a float twin of the
integer LM, with Adam (Kingma & Ba 2015, arXiv 1412.6980) on float32 weights. Truncated BPTT
(Williams & Peng 1990; Elman 1990): the window's hidden state starts where the previous window
of its data row ended, exactly as the ES methods carry their state, and the gradient stops at
the window start.

The float twin (`twin_forward`): int_rnn_lm's model with the same shapes, parameter names,
layers and carried state, in the same units: activations and weights are "int8 units" (the
integer value, not value / 16), so rounding the float weights to int8 gives the integer
model's parameters. I(a) = clip(a, -127, 127) is the saturation I8, c_n = 16 isqrt(n):
    y      = emb[x_t]                                                    (T, S, D)
    for l:  n = norm(y; ln1),  (h, s) = GRU(n, s^l),  y = I(y + h)
            m = norm(y; ln2),  y = I(y + I(I(m mlp1^T / c_D) mlp2^T / c_kD))   (k = mlp_mult;
                                                                 k = 0: no such line)
    logits = I(norm(y; ln_out) head^T / c_D)                             (T, S, 256)
    norm(u; w) = I(u w / r),  r = clip(mean_j |u_j|, 1, 127)             (per position)
    GRU step:  f = I(I(n W_f^T / c) + b_f + I(s U_f^T / c)),  gate = f + 127 in [0, 254]
               f' = I(gate s / 256),  h' = I(I(n W_h^T / c) + b_h + I(f' U_h^T / c))
               h = I(s + gate (h' - s) / 256)                            (new state = output)
    log2 p(byte) = logit / 16 - log2 sum_j 2^(logit_j / 16)
Departures from the integer model (each also marked at its line):
  * every floor is dropped (`dropped_floor` marks each): the matmuls' floor(. / c), the
    GRU's two >> 8 and the norm's two floors, so the twin is piecewise quadratic and has a
    gradient almost everywhere; with the floors put back it is the integer model, bit for bit;
  * the norm's divisor r is mean|u| without its floor, clipped to [1, 127] as in the integer
    model: the integer divisor floor(mean|u|) is up to 1 smaller, so the integer norm's outputs
    are up to a factor r / (r - 1) larger; the gradient flows through r where the clip does
    not bind (1 < mean|u| < 127) and not where it does;
  * the loss is the float log-softmax of the logits (lm.bits_per_byte scores the integer model
    so too), not the integer fitness through the EXP2/LOG2 tables;
  * the float weights are kept in [-127, 127] after every step (a projection), so the twin
    never uses a weight the int8 model cannot hold; the int8 model is I8(round(w)).
Saturation stays part of the model: every I8 is a clip, the head's too.

Loss: mean cross-entropy of the next byte over the window, in bits/byte:
    L = -(1 / (S T)) sum_{s, t} log2 p(x_{t+1} | x_<=t)
Backward (`twin_backward`), the chain rule at each forward line; M(c) = 1 where the clip that
produced c did not saturate (-127 < c < 127), 0 where it did; X^T Y sums over all positions:
    dL/dlogit = (p - onehot(x_{t+1})) / (16 S T)                 p = 2^(log2 p)
    a = I(q):      dq = da M(a)                                   every clip
    a = I(x W^T/c): dx = (da M(a)) W / c,  dW = (da M(a))^T x / c
    o = I(u w / r): dq = do M(o);  dw = sum dq u / r;  du = dq w / r + dr sign(u) / D,
                   dr = -sum_j dq_j u_j w_j / r^2 where 1 < mean|u| < 127, else 0
    GRU, backwards in t, with ds the gradient reaching s_t from step t + 1 (0 after the last
    byte of the window; the ds reaching s_0 is dropped: truncated BPTT):
        dk = (dh_t + ds) M(h)                 k = s + gate (h' - s) / 256, before its clip
        dk' = dk gate / 256 M(h')             k' = A_h + b_h + B_h, before its clip
        dB_h = dk' M(B_h),  df' = dB_h U_h / c M(f'),  dgate = (dk (h' - s) + df' s) / 256
        dk_f = dgate M(f)                     k_f = A_f + b_f + B_f (gate = f + 127)
        dB_f = dk_f M(B_f),  ds <- dk (1 - gate/256) + df' gate / 256 + dB_f U_f / c
        dW_f = (dk_f M(A_f))^T n / c,  dU_f = dB_f^T s / c,  db_f = sum dk_f   (h alike)
    demb[b] = sum of dy_0 over the positions whose byte is b

Scoring, two ways on the same validation windows: the float twin (`predict`: train.py's
val_bpb) and its weights rounded to int8 run by the integer forward of int_rnn_lm.py
(`val_scores`: val_bpb_int8, what an integer deployment of this model gets).

Memory: BPTT keeps every layer's activations of the whole window for the backward pass
(`activation_bytes`, about 4 (17 L + 2) D + 1 KiB bytes per byte of the window in float32);
the ES methods need only the forward's working memory of one time chunk (bench.py
`--only memory` measures both).

Shapes: S = windows per step (rows), T = bytes per window, D = d_model, L = n_layers;
activations are time-major (T, S, D), tokens (S, T + 1) as train.py gives them.

$ python backprop.py                    (a finite-difference check of the gradient, seconds)
$ python train.py --method backprop     (the integer LM's float twin, CPU default)
"""
import math
import time
from dataclasses import dataclass

import numpy as np

import int_rnn_lm as lm

GRADCHECK_STREAM = 0xB9   # the demo's generator key purpose tag (training draws nothing random)

# -----------------------------------------------------------------------------
# the float twin's pieces: saturation, the scaled matmul, the norm, each with its derivative


def dropped_floor(a):
    """Where the integer model floors, the twin does not: its one departure in the layers,
    marked at each line by this identity. (tests/test_backprop.py puts np.floor here and gets
    the integer model bit for bit.)"""
    return a


def clip(a):
    """I(a): the float twin's I8, saturate to [-127, 127]."""
    return lm.backend_of(a).clip(a, -127.0, 127.0)


def inside(c):
    """M(c): the derivative of the clip that produced c, 1 where -127 < c < 127 (the clip's
    input was strictly inside), 0 where it saturated. Read off the output, so no mask is kept."""
    return (c > -127.0) & (c < 127.0)


def matmul(x, w):
    """x (..., n) @ w (m, n)^T -> (..., m), as one 2-D GEMM."""
    return (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0])


def outer(d, x):
    """sum over all positions of d^T x: d (..., m), x (..., n) -> (m, n), a weight's gradient."""
    return d.reshape(-1, d.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def linear(x, w):
    """I(x W^T / (16 isqrt n)): lm.linear without its floor. (..., n) -> (..., m)."""
    return clip(dropped_floor(matmul(x, w) / lm.matmul_divisor(w.shape[1])))


def norm(u, w):
    """lm.int_norm's float counterpart: I(u w / r), r = clip(mean_j |u_j|, 1, 127).
    u (..., D), w (D,) -> (out (..., D), r (..., 1))."""
    xp = lm.backend_of(u)
    # mean |u| without the integer model's floor; its clip to [1, 127] is kept
    r = xp.clip(dropped_floor(xp.abs(u).mean(axis=-1, keepdims=True)), 1.0, 127.0)
    return clip(dropped_floor(u * w / r)), r


def norm_backward(d_out, u, w, out, r):
    """dL/du (..., D) and dL/dw (D,) of out = norm(u; w) from dL/dout."""
    xp = lm.backend_of(u)
    dq = d_out * inside(out)                                     # (..., D) before the clip
    dw = (dq * u / r).reshape(-1, u.shape[-1]).sum(axis=0)     # (D,) over all positions
    du = dq * w / r
    # through r = mean|u|, only where its clip to [1, 127] does not bind
    dr = -(dq * u * w).sum(axis=-1, keepdims=True) / (r * r) * ((r > 1.0) & (r < 127.0))
    return du + dr * xp.sign(u) / u.shape[-1], dw

# -----------------------------------------------------------------------------
# the forward: each layer over the whole window, keeping what the backward reads (the tape)


def gru_forward(w, p, n, s0):
    """The GRU of block p over a window. n (T, S, D) its normalised input, s0 (S, D) the
    carried state -> tape: the input projections A_f, A_h (T, S, D), the states s (T + 1, S, D)
    (s[0] = s0, s[t + 1] = h_t, the block's output at t) and per step B_f, f, f', B_h, h'."""
    xp = lm.backend_of(n)
    A_f = linear(n, w[p + "w_f"])                        # (T, S, D) I(n W_f^T / c), all t at once
    A_h = linear(n, w[p + "w_h"])                        # (T, S, D) I(n W_h^T / c)
    s = xp.empty((n.shape[0] + 1,) + n.shape[1:], n.dtype)   # (T + 1, S, D)
    s[0] = s0
    B_f, f, fh, B_h, hh = (xp.empty_like(n) for _ in range(5))
    for t in range(n.shape[0]):
        B_f[t] = linear(s[t], w[p + "u_f"])              # (S, D) I(s U_f^T / c)
        f[t] = clip(A_f[t] + w[p + "b_f"] + B_f[t])
        gate = f[t] + 127.0                              # [0, 254]: a gate of gate/256 in [0, 1)
        fh[t] = clip(dropped_floor(gate * s[t] / 256.0))   # f' (the integer >> 8)
        B_h[t] = linear(fh[t], w[p + "u_h"])             # I(f' U_h^T / c)
        hh[t] = clip(A_h[t] + w[p + "b_h"] + B_h[t])     # h'
        s[t + 1] = clip(s[t] + dropped_floor(gate * (hh[t] - s[t]) / 256.0))   # h
    return {"A_f": A_f, "A_h": A_h, "s": s, "B_f": B_f, "f": f, "fh": fh, "B_h": B_h, "hh": hh}


def block_forward(w, mcfg, p, y, s0):
    """lm.block's float twin. y (T, S, D), s0 (S, D) -> (y_out (T, S, D), final state (S, D),
    the block's tape)."""
    n, n_r = norm(y, w[p + "ln1"])                       # (T, S, D), (T, S, 1)
    tape = gru_forward(w, p, n, s0)
    y_mid = clip(y + tape["s"][1:])                      # residual: I(y + h)
    tape.update(y=y, n=n, n_r=n_r, y_mid=y_mid)
    if not mcfg.mlp_mult:
        return y_mid, tape["s"][-1], tape
    m, m_r = norm(y_mid, w[p + "ln2"])
    z = linear(m, w[p + "mlp1"])                         # (T, S, kD)
    o = linear(z, w[p + "mlp2"])                         # (T, S, D)
    tape.update(m=m, m_r=m_r, z=z, o=o)
    return clip(y_mid + o), tape["s"][-1], tape


def twin_forward(w, mcfg, tokens, hidden):
    """tokens (S, T) bytes, hidden (L, S, D) float -> logits (T, S, 256) in 1/16-bit units
    (time-major), new hidden (L, S, D), tape {"x", "blocks": [block tapes], "y", "yn", ...}."""
    xp = lm.backend_of(tokens)
    x = tokens.T.astype(xp.int64)                        # (T, S)
    y = w["emb"][x]                                      # (T, S, D)
    blocks, new_hidden = [], []
    for l in range(mcfg.n_layers):
        y, s, tape = block_forward(w, mcfg, f"l{l}.", y, hidden[l])
        blocks.append(tape)
        new_hidden.append(s)
    yn, yn_r = norm(y, w["ln_out"])
    logits = linear(yn, w["head"])                       # (T, S, 256), saturated like lm's head
    tape = {"x": x, "blocks": blocks, "y": y, "yn": yn, "yn_r": yn_r, "logits": logits}
    return logits, xp.stack(new_hidden), tape


def log2_softmax(logits):
    """log2 p (..., 256) from float logits in 1/16-bit units: p proportional to 2^(logit/16)."""
    xp = lm.backend_of(logits)
    z = logits / 16.0
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log2(xp.exp2(z).sum(axis=-1, keepdims=True))

# -----------------------------------------------------------------------------
# the backward: the same layers in reverse, the gradient equations at their lines


def gru_backward(w, p, tape, dh, grads):
    """dL/dh (T, S, D) reaching the GRU's outputs from the residual stream -> dL/dn
    (T, S, D); the GRU's six weight gradients go into `grads`."""
    xp = lm.backend_of(dh)
    c = lm.matmul_divisor(dh.shape[-1])
    s, f, fh, hh, B_f, B_h = (tape[k] for k in ("s", "f", "fh", "hh", "B_f", "B_h"))
    U_f, U_h = w[p + "u_f"], w[p + "u_h"]
    dk_f, dk_h, dB_f, dB_h = (xp.empty_like(dh) for _ in range(4))
    ds = xp.zeros_like(dh[0])                            # (S, D): nothing after the window
    for t in reversed(range(dh.shape[0])):
        gate = f[t] + 127.0
        dk = (dh[t] + ds) * inside(s[t + 1])             # h = I(s + gate (h' - s) / 256)
        dk_h[t] = dk * gate / 256.0 * inside(hh[t])      # h' = I(A_h + b_h + B_h)
        dB_h[t] = dk_h[t] * inside(B_h[t])               # B_h = I(f' U_h^T / c)
        d_fh = dB_h[t] @ U_h / c * inside(fh[t])         # f' = I(gate s / 256)
        d_gate = (dk * (hh[t] - s[t]) + d_fh * s[t]) / 256.0
        dk_f[t] = d_gate * inside(f[t])                  # f = I(A_f + b_f + B_f), gate = f + 127
        dB_f[t] = dk_f[t] * inside(B_f[t])               # B_f = I(s U_f^T / c)
        ds = dk * (1.0 - gate / 256.0) + d_fh * gate / 256.0 + dB_f[t] @ U_f / c
    # ds is now dL/ds_0, the carried state's: dropped, the gradient stops at the window start
    dA_f = dk_f * inside(tape["A_f"])                    # A_f = I(n W_f^T / c)
    dA_h = dk_h * inside(tape["A_h"])
    n = tape["n"]
    grads[p + "w_f"], grads[p + "w_h"] = outer(dA_f, n) / c, outer(dA_h, n) / c
    grads[p + "u_f"], grads[p + "u_h"] = outer(dB_f, s[:-1]) / c, outer(dB_h, fh) / c
    grads[p + "b_f"], grads[p + "b_h"] = dk_f.sum(axis=(0, 1)), dk_h.sum(axis=(0, 1))
    return (dA_f @ w[p + "w_f"] + dA_h @ w[p + "w_h"]) / c


def block_backward(w, mcfg, p, tape, y_out, dy_out, grads):
    """dL/dy_out (T, S, D) of the block's output y_out -> dL/dy of its input; its weight
    gradients go into `grads`."""
    D = dy_out.shape[-1]
    if mcfg.mlp_mult:
        c, ck = lm.matmul_divisor(D), lm.matmul_divisor(mcfg.mlp_mult * D)
        d_res = dy_out * inside(y_out)                   # y_out = I(y_mid + o)
        d_o = d_res * inside(tape["o"])                  # o = I(z mlp2^T / ck)
        grads[p + "mlp2"] = outer(d_o, tape["z"]) / ck
        d_z = d_o @ w[p + "mlp2"] / ck * inside(tape["z"])   # z = I(m mlp1^T / c)
        grads[p + "mlp1"] = outer(d_z, tape["m"]) / c
        d_mid, grads[p + "ln2"] = norm_backward(d_z @ w[p + "mlp1"] / c, tape["y_mid"],
                                                w[p + "ln2"], tape["m"], tape["m_r"])
        d_mid = d_res + d_mid
    else:
        d_mid = dy_out                                   # y_out = y_mid
    d_mid = d_mid * inside(tape["y_mid"])                # y_mid = I(y + h)
    d_n = gru_backward(w, p, tape, d_mid, grads)
    dy, grads[p + "ln1"] = norm_backward(d_n, tape["y"], w[p + "ln1"], tape["n"], tape["n_r"])
    return d_mid + dy                                    # y reaches y_mid directly and via n


def twin_backward(w, mcfg, tape, targets):
    """Loss (bits/byte, mean over the window) and its gradient for every parameter.
    targets (S, T) the next bytes -> (loss (0-d array), grads {name: (shape of w[name])})."""
    xp = lm.backend_of(targets)
    logits = tape["logits"]                              # (T, S, 256)
    y_next = targets.T.astype(xp.int64).reshape(-1)      # (T S,)
    N, D, c = y_next.size, mcfg.d_model, lm.matmul_divisor(mcfg.d_model)
    log2p = log2_softmax(logits).reshape(N, lm.VOCAB)
    rows = xp.arange(N)
    loss = -log2p[rows, y_next].mean()
    d_logits = xp.exp2(log2p)                            # p, then p - onehot(next byte)
    d_logits[rows, y_next] -= 1.0
    d_logits = (d_logits / (16.0 * N)).reshape(logits.shape)   # dL/dlogit
    grads = {}
    d_pre = d_logits * inside(logits)                    # logits = I(yn head^T / c)
    grads["head"] = outer(d_pre, tape["yn"]) / c
    dy, grads["ln_out"] = norm_backward(d_pre @ w["head"] / c, tape["y"], w["ln_out"],
                                        tape["yn"], tape["yn_r"])
    blocks = tape["blocks"]
    for l in reversed(range(mcfg.n_layers)):
        y_out = blocks[l + 1]["y"] if l + 1 < mcfg.n_layers else tape["y"]
        dy = block_backward(w, mcfg, f"l{l}.", blocks[l], y_out, dy, grads)
    onehot = (tape["x"].reshape(-1)[:, None] == xp.arange(lm.VOCAB)).astype(dy.dtype)
    grads["emb"] = onehot.T @ dy.reshape(-1, D)          # (256, D) rows of the bytes seen
    return loss, grads


def loss_and_grads(w, mcfg, tokens, hidden):
    """One window: tokens (S, T + 1), hidden (L, S, D) float -> (loss bits/byte, grads,
    the final hidden state (L, S, D) to carry to the next window)."""
    _, new_hidden, tape = twin_forward(w, mcfg, tokens[:, :-1], hidden)
    loss, grads = twin_backward(w, mcfg, tape, tokens[:, 1:])
    return loss, grads, new_hidden


def activation_bytes(mcfg, rows, seq_len, itemsize=4):
    """Bytes of the tape BPTT keeps for one window of rows x seq_len bytes (the arrays of
    twin_forward's tape, float32 by default; the byte indices not counted). Per block and
    position: y, n, A_f, A_h, B_f, f, f', B_h, h' (9 D), the state (D, one more for s_0), n's
    divisor, and with an MLP y_mid, m, o (3 D), z (k D, k = mlp_mult) and m's divisor (without
    one, y_mid is the next block's y); at the top y, yn (2 D), its divisor and the logits (256)."""
    D, L, N, k = mcfg.d_model, mcfg.n_layers, rows * seq_len, mcfg.mlp_mult
    mlp = N * ((3 + k) * D + 1) if k else 0
    per_block = N * (9 * D + 1) + mlp + (N + rows) * D
    return itemsize * (L * per_block + N * (2 * D + 1 + lm.VOCAB))

# -----------------------------------------------------------------------------
# the method interface train.py calls (README "The method interface")


@dataclass
class Config:
    rows: int = 64            # S: windows per step (data rows; the state carries across steps)
    lr: float = 0.3           # Adam step of the float weights, in int8 units (lr / 16 in q4 units)
    adam_b1: float = 0.9      # Adam first-moment decay rate
    adam_b2: float = 0.999    # Adam second-moment decay rate
    adam_eps: float = 1e-8    # Adam denominator epsilon (int8 units)


# the training loss step() reports, named by what it is (log.csv column, progress line)
LOSS = "train_bpb"   # the float twin's bits/byte on the step's windows

# train.py's run on each device: its own settings (steps, seq_len, ...) and Config overrides.
# CPU: rows, seq_len and lr from a sweep at equal bytes confirmed by 2-minute runs (the lab
# notebook); 5500 steps take about 2 minutes on 2 cores. GPU: more windows per step (unmeasured).
DEFAULTS = {"cpu": dict(steps=5500, seq_len=25, eval_every=250, log_every=50),
            "cuda": dict(rows=256)}


def check_config(cfg):
    if cfg.rows < 1:
        raise ValueError(f"rows must be >= 1, got {cfg.rows}")
    if not cfg.lr > 0 or math.isinf(cfg.lr):
        raise ValueError(f"lr must be a positive number, got {cfg.lr}")
    if not (0 <= cfg.adam_b1 < 1 and 0 <= cfg.adam_b2 < 1):
        raise ValueError(f"adam_b1 and adam_b2 must be in [0, 1), got {cfg.adam_b1}, "
                         f"{cfg.adam_b2}")
    if not cfg.adam_eps > 0:
        raise ValueError(f"adam_eps must be > 0, got {cfg.adam_eps}")


def num_sequences(cfg):
    return cfg.rows


def masters(state):
    """The float32 weights (int8 units) held in the state, by parameter name."""
    return {k[7:]: v for k, v in state.items() if k.startswith("master.")}


def quantise(w):
    """The integer model's parameter: I8(round(w)), round half to even, saturate."""
    return lm.sat8(lm.backend_of(w).rint(w))


def init(params, cfg, mcfg, seed, world):
    """State: the carried hidden state (float), a float32 copy of every parameter (exact: int8
    values) and its Adam moments. Nothing random. world is unused: backprop runs in one
    process (no check_split, so train.py refuses mpirun)."""
    check_config(cfg)
    xp = lm.backend_of(params["emb"])
    state = {"hidden": xp.zeros((mcfg.n_layers, cfg.rows, mcfg.d_model), xp.float32)}
    for name, p in params.items():
        state["master." + name] = p.astype(xp.float32)
        state["adam_m." + name] = xp.zeros(p.shape, xp.float32)
        state["adam_v." + name] = xp.zeros(p.shape, xp.float32)
    return state


def step(params, state, batch, t, cfg, mcfg, seed, world):
    """One step on windows batch = (tokens (S, T + 1), reset): forward and backward through
    the window from the carried state, one Adam step of the float weights, which then stay in
    [-127, 127]; params returned are the float weights rounded to int8. Inputs untouched."""
    tokens, reset = batch
    xp = lm.backend_of(tokens)
    S, T = tokens.shape[0], tokens.shape[1] - 1
    state = {k: v.copy() for k, v in state.items()}
    hidden = xp.zeros_like(state["hidden"]) if reset else state["hidden"]
    w = masters(state)
    loss, grads, state["hidden"] = loss_and_grads(w, mcfg, tokens, hidden)
    moments = {"m": {k: state["adam_m." + k] for k in w}, "v": {k: state["adam_v." + k] for k in w}}
    lm.adam_step(w, grads, moments, t + 1, cfg.lr, (cfg.adam_b1, cfg.adam_b2), cfg.adam_eps)
    for v in w.values():
        xp.clip(v, -127.0, 127.0, out=v)                 # departure: kept in the int8 range
    grad_norm = xp.sqrt(sum((g * g).sum() for g in grads.values()))
    stats = {LOSS: loss, "member_tokens": S * T, "grad_norm": grad_norm}   # device scalars
    return {k: quantise(v) for k, v in w.items()}, state, stats


PREDICT_CHUNK = 64   # bytes per twin_forward call in predict (bounds the tape's memory)


def predict(params, state, mcfg):
    """The float twin as train.py's predictor: fn(tokens (N, T), hidden) -> (log2 p (N, T, 256)
    float64, hidden (L, N, D) float32). hidden may come in as lm.zero_hidden's int8 zeros."""
    w = masters(state)

    def fn(tokens, hidden):
        xp = lm.backend_of(tokens)
        hidden, out = hidden.astype(w["emb"].dtype), []
        for t0 in range(0, tokens.shape[1], PREDICT_CHUNK):
            logits, hidden, _ = twin_forward(w, mcfg, tokens[:, t0: t0 + PREDICT_CHUNK], hidden)
            out.append(log2_softmax(logits.astype(xp.float64)).transpose(1, 0, 2))
        return xp.concatenate(out, axis=1), hidden
    return fn


def val_scores(params, state, mcfg, windows):
    """The second score on train.py's validation windows: the int8-rounded weights (params)
    run by the integer forward, what an integer deployment of this model gets."""
    return {"val_bpb_int8": lm.evaluate(params, mcfg, windows)}

# -----------------------------------------------------------------------------
# `python backprop.py`: the hand-written gradient against central finite differences


def finite_difference_check(mcfg, rows=2, seq_len=6, entries=6, h=1e-4, seed=0):
    """Max over parameters of |fd - grad| / max|fd| on `entries` random entries of each (and the
    emb rows of the bytes seen), in float64, from a random nonzero carried state. Returns
    {name: relative error}."""
    rng = np.random.default_rng([seed, GRADCHECK_STREAM])
    w = {k: v.astype(np.float64) + rng.uniform(-0.5, 0.5, v.shape)    # off the integer grid
         for k, v in lm.init_params(mcfg, seed).items()}
    tokens = rng.integers(0, lm.VOCAB, (rows, seq_len + 1)).astype(np.uint8)
    hidden = rng.uniform(-100, 100, (mcfg.n_layers, rows, mcfg.d_model))
    _, grads, _ = loss_and_grads(w, mcfg, tokens, hidden)
    errors = {}
    for name, v in w.items():
        idx = [tuple(rng.integers(0, n) for n in v.shape) for _ in range(entries)]
        if name == "emb":
            idx = [(int(b), int(rng.integers(0, v.shape[1]))) for b in tokens[0, :entries]]
        fd = []
        for i in idx:
            old = v[i]
            v[i] = old + h
            up = float(loss_and_grads(w, mcfg, tokens, hidden)[0])
            v[i] = old - h
            down = float(loss_and_grads(w, mcfg, tokens, hidden)[0])
            v[i] = old
            fd.append((up - down) / (2 * h))
        fd, g = np.array(fd), np.array([grads[name][i] for i in idx])
        errors[name] = float(np.abs(fd - g).max() / max(np.abs(fd).max(), 1e-30))
    return errors


if __name__ == "__main__":
    mcfg = lm.ModelConfig(d_model=16, n_layers=2)
    t0 = time.time()
    errors = finite_difference_check(mcfg)
    for name, err in errors.items():
        print(f"{name:>10}: relative error {err:.1e}")
    print(f"hand-written BPTT vs central differences (float64, D=16, L=2, carried state): "
          f"worst {max(errors.values()):.1e} over {len(errors)} parameters, "
          f"{time.time() - t0:.1f} s")
    rows, seq_len = Config().rows, DEFAULTS["cpu"]["seq_len"]
    print(f"saved activations per step at the CPU default (D=64, L=1, {rows} x {seq_len} bytes): "
          f"{activation_bytes(lm.ModelConfig(), rows, seq_len) / 2**20:.1f} MiB")
