r"""The integer recurrent language model every method in this repo trains.

This is the "EGG" model (Evolved Generative GRU) of Sarkar, Fellows, Duque et al., "Evolution
Strategies at the Hyperscale" (EGGROLL, arXiv 2511.16652, App. G-H): a byte-level minGRU-style
RNN with int8 weights, int32 accumulation and *no activation functions* -- all nonlinearity
comes from saturating int8 arithmetic. Nothing in the forward pass is a float.

Number format:
    int8 values live in [-127, 127]; -128 is never produced. Every narrowing cast saturates.
    Activations are "q4" fixed point: value = int / 16 (4 fraction bits).
    A product of two q4 numbers is q8 (value = int / 256) and is accumulated in int32.

The model, per byte x_t, with state s^l for each layer l (all ops saturate to int8):
    y      = emb[x_t]                                              # (B, D) q4
    for l:  y = I8(y + GRU(norm(y; ln1), s^l))                     # App. G.7-G.8
            y = I8(y + (norm(y; ln2) @ mlp1) @ mlp2)               # D -> 4D -> D, no activation
    (4 is ModelConfig.mlp_mult; mlp_mult 0, not in the paper, drops this line and ln2, mlp1, mlp2)
    logits = norm(y; ln_out) @ head                                # (B, 256), 1/16-bit units
    u @ M  := I8(floor(u M^T / (16 isqrt(n))))                     # scaled matmul, App. G.4
    norm(u; w) := I8(floor(u * w / max(1, I8(sum|u| / D))))        # L1 "layernorm", App. G.5
    GRU:  f  = I8(u@W_f + s@U_f + b_f);  g = f + 127 in [0, 254]  (a gate g/256 in [0, 1))
          f' = I8((g * s) >> 8);          h' = I8(u@W_h + f'@U_h + b_h)
          h  = I8(s + ((g * (h' - s)) >> 8))                      # new state and block output
          (the I8 on f' and h never bind: f' lies between 0 and s, h between s and h')
    p(byte) is proportional to 2^(logit / 16).

Perturbation hooks (for the black-box methods): every matmul, embedding row and vector
parameter of member i (row i of the batch) can be perturbed by an integer noise tensor E_i:
    matmul:     I8((u W^T + (u E_i^T >> shift)) / (16 isqrt(n)))
    embedding:  I8(emb[t] + (E_i[t] >> shift));   vector: I8(w + (E_i >> shift))
`LowRank` gives E_i = A_i B_i^T without ever building it: u E_i^T = (u B_i) A_i^T (EGGROLL,
paper §4.2); `Full` holds E_i materialised (naive ES). Both give bit-identical results.

Departures from the paper's reference code (nano-egg run.py), each marked at its line:
  * the norm's divisor is guarded to be >= 1 (the reference code can divide by zero);
  * no 1 GiB lookup tables: the log-softmax uses a 255-entry EXP2 table and a 4096-entry LOG2
    mantissa table after normalising the sum; the noise uses a counter hash and a 64 Ki-entry
    inverse-normal table instead of a 2^30-entry table of pre-drawn normals;
  * noise values are rounded, not truncated, to int8.

Reading order: number format, parameters, the two integer matmuls, the layers, the forward,
the log-likelihood, the perturbation hooks, the noise, evaluation and sampling. The end of the
file holds what only speed needs (the CPU's pieces, threads and time loop) and the model table.

Run `python int_rnn_lm.py` to print the model table and a sample from an untrained model.
"""
import concurrent.futures
import math
import statistics
from dataclasses import dataclass, asdict

import numpy as np

# -----------------------------------------------------------------------------
# one code path for NumPy (CPU) and CuPy (GPU): `xp` is whichever module owns the arrays


def backend_of(a):
    """The array module (numpy or cupy) that owns array `a`; cupy is imported only for its
    arrays, so it never needs to be installed on a CPU machine."""
    if isinstance(a, (np.ndarray, np.generic)):
        return np
    import cupy
    return cupy


def to_numpy(a):
    """Copy to host. Only at I/O boundaries (logging, plots, checkpoints)."""
    return a.get() if hasattr(a, "get") else np.asarray(a)

# -----------------------------------------------------------------------------
# number format and parameters

VOCAB = 256          # bytes
Q_BITS = 4           # q4 fixed point: value = int / 2^Q_BITS
Q_ONE = 1 << Q_BITS  # 1.0 in q4


@dataclass
class ModelConfig:
    d_model: int = 64   # D: width of the embedding, state and residual stream (multiple of 16)
    n_layers: int = 1   # L: number of GRU+MLP blocks
    mlp_mult: int = 4   # each block's MLP is D -> mlp_mult D -> D (App. G.8: 4); 0: no MLP


def param_shapes(cfg):
    """Name -> shape, in a fixed order (the order also gives each parameter its noise id)."""
    D = cfg.d_model
    shapes = {"emb": (VOCAB, D)}
    for i in range(cfg.n_layers):
        p = f"l{i}."
        shapes.update({p + "ln1": (D,), p + "w_f": (D, D), p + "u_f": (D, D), p + "b_f": (D,),
                       p + "w_h": (D, D), p + "u_h": (D, D), p + "b_h": (D,)})
        if cfg.mlp_mult:
            k = cfg.mlp_mult
            shapes.update({p + "ln2": (D,), p + "mlp1": (k * D, D), p + "mlp2": (D, k * D)})
    shapes.update({"ln_out": (D,), "head": (VOCAB, D)})
    return shapes


def check_model_config(cfg):
    if cfg.d_model < 16 or cfg.d_model % 16:
        raise ValueError(f"d_model must be a positive multiple of 16, got {cfg.d_model}")
    if cfg.n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {cfg.n_layers}")
    if cfg.mlp_mult < 0:
        raise ValueError(f"mlp_mult must be >= 0 (0: no MLP), got {cfg.mlp_mult}")


def init_params(cfg, seed, xp=np):
    """Paper App. G.3: matrices round(16 N(0,1)) -> int8, norm weights 16 (= 1.0 in q4), biases 0.

    Drawn on the host from a generator keyed by (seed, parameter id), so both backends get
    identical parameters."""
    check_model_config(cfg)
    params = {}
    for pid, (name, shape) in enumerate(param_shapes(cfg).items()):
        if len(shape) == 2:
            rng = np.random.default_rng([seed, INIT_STREAM, pid])
            w = np.rint(Q_ONE * rng.standard_normal(shape))            # q4, N(0, 1) * 16
            params[name] = xp.asarray(np.clip(w, -127, 127).astype(np.int8))
        else:
            params[name] = init_params_vector(name, shape, xp)
    return params


def init_params_vector(name, shape, xp):
    """A vector parameter's init: norm weights 16 (q4 1.0), biases 0."""
    if name.split(".")[-1].startswith("ln"):
        return xp.full(shape, Q_ONE, dtype=xp.int8)                      # q4: 1.0
    return xp.zeros(shape, dtype=xp.int8)                                # biases start at 0


INIT_STREAM = 0x1417   # the generator key's purpose tag for init_params


def count_params(cfg):
    # = 513 D + L (3 D + 4 D^2 + [k > 0] (D + 2 k D^2)) with k = mlp_mult: 513 D + L (4 D + 12 D^2)
    return sum(math.prod(s) for s in param_shapes(cfg).values())


def zero_hidden(cfg, batch, xp=np):
    return xp.zeros((cfg.n_layers, batch, cfg.d_model), dtype=xp.int8)  # (L, B, D) q4

# -----------------------------------------------------------------------------
# saturating integer helpers. While computing, int8 values travel in int32 "lanes" (so sums
# never wrap); at rest (weights, state, logits) they are stored as int8.


def clip8(x):
    """I8(x): saturate to [-127, 127], keeping the (wide) dtype. -128 is never produced."""
    return backend_of(x).clip(x, -127, 127)


def sat8(x):
    """I8(x) stored as int8: saturate, then narrow (never wrap-around)."""
    return clip8(x).astype(backend_of(x).int8)


def wide(x):
    """Widen to int32 lanes before any arithmetic (int8 arithmetic wraps silently)."""
    return x.astype(backend_of(x).int32)


def div_floor(x, d, out=None):
    """floor(x / d) for integer arrays; a right shift when d is a power of two."""
    xp = backend_of(x)
    if d & (d - 1) == 0:
        return xp.right_shift(x, d.bit_length() - 1, out=out)
    return xp.floor_divide(x, d, out=out)


def matmul_divisor(n):
    """16 * isqrt(n): keeps a q4 x q4 dot product of length n at q4 scale (App. G.4)."""
    return Q_ONE * math.isqrt(n)

# -----------------------------------------------------------------------------
# the integer matmul, twice: loops to read, and an exact fast path to run


def int_matmul_reference(x, w):
    """x @ w.T for int8 x (B, n) and w (m, n), as int32 (B, m). The loops written out.

    Python ints do not overflow, so this is the ground truth (for tiny shapes only)."""
    xs, ws = to_numpy(x), to_numpy(w)
    B, n = xs.shape
    m = ws.shape[0]
    out = np.zeros((B, m), dtype=np.int32)
    for b in range(B):
        for j in range(m):
            acc = 0
            for k in range(n):
                acc += int(xs[b, k]) * int(ws[j, k])  # int8 * int8 -> exact integer
            out[b, j] = acc                           # |acc| <= n * 127^2 < 2^31 (n <= 133143)
    return backend_of(x).asarray(out)


# float32 holds every integer below 2^24 exactly, float64 every integer below 2^53. A dot product
# of n int8 pairs has every partial sum bounded by n * 127^2, so it is exact in float32 while
# n * 127^2 < 2^24 (n <= 1040) and in float64 while n * 127^2 < 2^53; the result then fits int32
# while n * 127^2 < 2^31 (n <= 133143). Summation order does not matter when nothing rounds.
EXACT_F32_MAX_N = (2**24 - 1) // 127**2
EXACT_I32_MAX_N = (2**31 - 1) // 127**2


def int_matmul(x, w):
    """Exact x @ w.T for int8-valued x (..., n) and int8 w (m, n) -> int32 (..., m).

    CPU: BLAS in float32, one GEMM (n <= 1040) or int_matmul_split's chunks, exact by the
    bound above.
    GPU: cuBLAS int8 x int8 -> int32 GemmEx in TN layout when n and m are multiples of 4,
    else the same exact float path on the GPU. Never `matmul(..., dtype=int32)` on int8 inputs:
    CuPy computes in int8 and wraps."""
    n = w.shape[1]
    if x.shape[-1] != n:
        raise ValueError(f"int_matmul: x has {x.shape[-1]} columns, w has {n}")
    if n > EXACT_I32_MAX_N:
        raise ValueError(f"int_matmul: n = {n} could overflow int32 (max {EXACT_I32_MAX_N})")
    xp = backend_of(x)
    if xp is not np and n % 4 == 0 and w.shape[0] % 4 == 0:
        x8 = x.reshape(-1, n).astype(xp.int8)          # exact: x holds int8 values
        return _cublas_int8_tn(x8, w).reshape(*x.shape[:-1], w.shape[0])
    x2 = x.reshape(-1, n)                  # 2-D, so BLAS sees one big GEMM, not a stack of small
    if xp is np and n > EXACT_F32_MAX_N:
        out = int_matmul_split(x2, w)
    else:
        ft = xp.float32 if n <= EXACT_F32_MAX_N else xp.float64
        out = (x2.astype(ft) @ w.astype(ft).T).astype(xp.int32)
    return out.reshape(*x.shape[:-1], w.shape[0])


def matmul_path(xp):
    """The exact integer matmul int_matmul takes on backend xp for this model's shapes (every
    dimension is a multiple of 16, so on a GPU always the int8 GEMM): train.py prints it."""
    if xp is not np:
        return "cuBLAS int8 GEMM, int32 accumulate"
    return f"float32 BLAS GEMM, exact (n <= {EXACT_F32_MAX_N} a GEMM)"


def int_matmul_split(x, w):
    """Exact x @ w.T for int8-valued x (B, n) and int8 w (m, n), n > 1040 -> int32 (B, m),
    in float32 (llm.c's way: the plain path above, the fitting one beside it).

    The contraction is cut into c = ceil(n / 1040) chunks of at most 1040 columns; each chunk's
    partial sums are below 1040 * 127^2 < 2^24, so its float32 GEMM is exact, and its result
    goes to int32 and is summed there, exact while n * 127^2 < 2^31 (int_matmul's n limit):
        x @ w.T = sum_j  I32(f32(x[:, K_j]) @ f32(w[:, K_j]).T),   K_j the j-th column chunk
    Only one chunk of w is ever copied to float32 (m x 1040 x 4 bytes), where a float64 copy
    of the whole w would take 8 m n bytes."""
    xp = backend_of(x)
    B, n = x.shape
    m = w.shape[0]
    c = -(-n // EXACT_F32_MAX_N)                              # chunks
    edges = [n * j // c for j in range(c + 1)]                # equal chunks of <= 1040 columns
    out = xp.zeros((B, m), dtype=xp.int32)
    for k0, k1 in zip(edges[:-1], edges[1:]):
        part = x[:, k0:k1].astype(xp.float32) @ w[:, k0:k1].astype(xp.float32).T   # (B, m) exact
        out += part.astype(xp.int32)
    return out


def _cublas_int8_tn(x, w):
    """C (B, m) = x (B, n) @ w (m, n)^T with cublasGemmEx, int8 in, int32 out and accumulate.

    cuBLAS is column-major: row-major C (B, m) is column-major C^T (m, B) = w (m, n) @ x^T (n, B).
    Row-major w is column-major w^T with ld n, so op(A) = T; row-major x is column-major x^T
    with ld n, so op(B) = N: the "TN" layout, the fast one for int8 tensor cores."""
    import cupy
    from cupy_backends.cuda.libs import cublas
    x, w = cupy.ascontiguousarray(x), cupy.ascontiguousarray(w)
    B, n = x.shape
    m = w.shape[0]
    c = cupy.empty((B, m), dtype=cupy.int32)
    if B == 0:
        return c
    one, zero = np.array(1, np.int32), np.array(0, np.int32)   # host scalars for COMPUTE_32I
    handle = cupy.cuda.device.get_cublas_handle()
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, GEMM_DEFAULT = 3, 10, 72, -1
    cublas.gemmEx(handle, cublas.CUBLAS_OP_T, cublas.CUBLAS_OP_N, m, B, n,
                  one.ctypes.data, w.data.ptr, CUDA_R_8I, n, x.data.ptr, CUDA_R_8I, n,
                  zero.ctypes.data, c.data.ptr, CUDA_R_32I, m, CUBLAS_COMPUTE_32I, GEMM_DEFAULT)
    return c

# -----------------------------------------------------------------------------
# the layers. Computed layer by layer over the whole window: each layer's input projections,
# MLP and the head are one big matmul over all (N, T) positions; only the recurrence (s @ U_f,
# f' @ U_h and the gating) runs in the time loop. Same integers as byte-by-byte order.
# `perturb` maps a parameter name to member i's noise (a LowRank or Full, below), or is None.


def vector_param(params, name, perturb):
    """A vector parameter in int32 lanes, perturbed per member if asked: (d,) or (N, 1, d)."""
    v = wide(params[name])
    p = perturb.get(name) if perturb else None
    if p is None:
        return v
    return clip8(v + p.vector_delta())[:, None, :]                      # I8(w + E_i >> shift)


def linear(params, name, x, perturb):
    """The scaled matmul I8(x @ W^T / (16 isqrt n)), member-perturbed. x (N, T, n) -> (N, T, m),
    int8 values in int32 lanes, q4."""
    xp = backend_of(x)
    w = params[name]
    acc = int_matmul(x, w)                                      # (N, T, m) int32, q8
    p = perturb.get(name) if perturb else None
    if p is not None:
        delta = p.matmul_delta(x)               # q8 E_i term; int64 only if int32 could wrap
        acc = xp.add(acc, delta, out=acc) if delta.dtype == acc.dtype else acc + delta
    div_floor(acc, matmul_divisor(w.shape[1]), out=acc)         # q8 / (16 isqrt n) -> q4
    xp.clip(acc, -127, 127, out=acc)                            # I8, in place: acc is ours
    return acc.astype(xp.int32, copy=False)


def embed(params, tokens, perturb):
    """Row lookup emb[t] (App. G.6), perturbed: I8(emb[t] + E_i[t] >> shift). (N, T) -> (N, T, D)."""
    xp = backend_of(tokens)
    rows = wide(params["emb"][tokens.astype(xp.int64)])        # (N, T, D) q4
    p = perturb.get("emb") if perturb else None
    if p is None:
        return rows
    return clip8(rows + p.row_delta(tokens)).astype(xp.int32)


def int_norm(u, w):
    """L1 'layernorm' (App. G.5): I8(u * w / max(1, I8(mean |u|))). u (..., D), w broadcast."""
    xp = backend_of(u)
    mean_abs = xp.abs(u).sum(axis=-1, keepdims=True) // u.shape[-1]   # (..., 1) q4, >= 0
    # departure: the reference code divides by 0 when sum|u| < D; the divisor is guarded >= 1
    mean_abs = xp.clip(mean_abs, 1, 127)                              # I8 and >= 1
    # floor(u w / mean_abs) in float32 (faster than integer division) and exact: |u w| <=
    # 127^2 < 2^24 and the divisor d is in [1, 127], so a non-integer quotient lies >= 1/d from
    # an integer while float32 division errs by <= 127 * 2^-24 < 1/127; an integer one is exact
    q = xp.multiply(u, w, dtype=xp.float32)                           # exact: |u w| <= 127^2
    q /= mean_abs.astype(xp.float32)
    xp.floor(q, out=q)
    xp.clip(q, -127, 127, out=q)                                      # I8, in place
    return q.astype(xp.int32)                                         # q4 * q4 / q4 -> q4


def gru_scan(params, p, u, s, perturb):
    """minGRU without activations (App. G.7) over a window. u (N, T, D) q4, s (N, D) int8
    state -> (h (N, T, D) per-step outputs = states, final state (N, D) int8). On the CPU
    block runs gru_scan_cpu (end of file): these integers with fewer NumPy calls per byte."""
    xp = backend_of(u)
    wf_u = linear(params, p + "w_f", u, perturb) + vector_param(params, p + "b_f", perturb)
    wh_u = linear(params, p + "w_h", u, perturb) + vector_param(params, p + "b_h", perturb)
    s = wide(s)[:, None, :]                                               # (N, 1, D) q4
    outs = []
    for t in range(u.shape[1]):
        f = clip8(wf_u[:, t: t + 1] + linear(params, p + "u_f", s, perturb))   # I8(uW_f+sU_f+b_f)
        gate = f + 127                                   # [0, 254]: a gate of gate/256 in [0, 1)
        # the paper's I8 on f' and on the new state never binds: the gate is below 1, so f' lies
        # between 0 and s, and s + delta between s and h' (tested for every s, h' and gate)
        f_hat = (gate * s) >> 8                          # q4: (f + 127) * s / 256
        h_hat = clip8(wh_u[:, t: t + 1] + linear(params, p + "u_h", f_hat, perturb))
        # delta reaches +-253, beyond int8: int32 lanes (the reference code's int8 cast of
        # delta wraps, and its int8 sum with s wraps back to this same state)
        delta = (gate * (h_hat - s)) >> 8
        s = s + delta
        outs.append(s)
    return xp.concatenate(outs, axis=1), s[:, 0].astype(xp.int8)


def mlp(params, p, u, perturb):
    """(u @ mlp1) @ mlp2: D -> mlp_mult D -> D, no bias, no activation (App. G.8)."""
    return linear(params, p + "mlp2", linear(params, p + "mlp1", u, perturb), perturb)


def block(params, cfg, p, y, s, perturb):
    """Pre-norm GRU then pre-norm MLP, each with a saturating residual (App. G.8); with
    mlp_mult 0 the GRU only. y (N, T, D) q4, s (N, D) int8 -> (y (N, T, D), new state (N, D) int8)."""
    scan = gru_scan_cpu if backend_of(y) is np else gru_scan   # the same integers (end of file)
    h, s = scan(params, p, int_norm(y, vector_param(params, p + "ln1", perturb)), s, perturb)
    y = clip8(y + h)
    if cfg.mlp_mult:
        y = clip8(y + mlp(params, p, int_norm(y, vector_param(params, p + "ln2", perturb)),
                          perturb))
    return y, s

# -----------------------------------------------------------------------------
# the forward pass


def forward(params, cfg, tokens, hidden, perturb=None, return_activations=False):
    """tokens (N, T) bytes, hidden (L, N, D) int8 -> logits (N, T, 256) int8 in 1/16-bit units,
    final hidden (L, N, D) int8. Row i uses member i's perturbation (None: plain inference).
    return_activations: also return [embedding, block 1 output, ..., block L output], each
    (N, T, D) q4 in int32 lanes (the local-learning methods read these)."""
    xp = backend_of(tokens)
    y = embed(params, tokens, perturb)                                   # (N, T, D) q4
    acts, new_hidden = [y], []
    for i in range(cfg.n_layers):
        y, s = block(params, cfg, f"l{i}.", y, hidden[i], perturb)
        acts.append(y)
        new_hidden.append(s)
    y = int_norm(y, vector_param(params, "ln_out", perturb))
    logits = linear(params, "head", y, perturb).astype(xp.int8)          # (N, T, 256)
    if return_activations:
        return logits, xp.stack(new_hidden), acts
    return logits, xp.stack(new_hidden)

# -----------------------------------------------------------------------------
# log-likelihood: integer fitness for training, float64 bits/byte for reporting

LOGP_UNIT = 256  # the integer log-likelihood is in 1/256-bit units
EXP2_BITS = 20   # EXP2[d] = 2^(d/16) in q20 fixed point
# EXP2[k] = round(2^((k - 254)/16) * 2^20) for k = logit - max_logit + 254 in [0, 254]
EXP2_TABLE = np.rint(2.0 ** ((np.arange(255) - 254) / 16.0 + EXP2_BITS)).astype(np.int32)
# LOG2_MANT[j] = round(256 log2(1 + j/4096)): log2 of a 13-bit mantissa in [4096, 8191]
LOG2_MANT_TABLE = np.rint(LOGP_UNIT * np.log2(1 + np.arange(4096) / 4096)).astype(np.int32)


def token_logprob(logits, targets):
    """Integer log2 p(target) per position, in 1/256-bit units (<= 0).

    logits (..., 256) int8 in 1/16-bit units, targets (...) bytes -> (...) int32.
    log2 p(t) = (y_t - y_max)/16 - log2(S / 2^20), S = sum_j EXP2[y_j - y_max] in [2^20, 2^28]."""
    xp = backend_of(logits)
    y = logits.astype(xp.int16)                    # int16 lanes: |y - y_max| <= 254, no wrap
    y_max = y.max(axis=-1, keepdims=True)
    # y - y_max + 254 in [0, 254] fits uint8: a quarter of int32's memory traffic for the lookup
    idx = xp.subtract(y, y_max - 254, out=y).astype(xp.uint8)
    s = xp.take(device_table(xp, EXP2_TABLE), idx).sum(axis=-1, dtype=xp.int32)  # q20, <= 2^28
    e = EXP2_BITS + sum((s >= (1 << k)).astype(xp.int32) for k in range(21, 29))  # floor(log2 s)
    mant = s >> (e - 12)                                                # [4096, 8191]
    log2_s = LOGP_UNIT * (e - EXP2_BITS) + xp.take(device_table(xp, LOG2_MANT_TABLE), mant - 4096)
    idx_t = wide(xp.take_along_axis(idx, targets.astype(xp.int64)[..., None], axis=-1)[..., 0])
    return 16 * (idx_t - 254) - log2_s                                  # 16 * q4 = 1/256 bit


_DEVICE_TABLES = {}


def device_table(xp, table):
    """A lookup table on the backend; copied to the GPU once, never per call."""
    if xp is np:
        return table
    key = (id(table), xp.cuda.Device().id)
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = xp.asarray(table)
    return _DEVICE_TABLES[key]


def sequence_logprob(params, cfg, tokens, hidden, perturb=None, time_chunk=32):
    """Integer fitness: sum over the window of log2 p(next byte), in 1/256-bit units.

    tokens (N, T + 1) -> (N,) int64, final hidden. The window is processed in time chunks (the
    state carries between them, so the result is identical) to bound memory.
    population_logprob (end of file) is the same function, faster on the CPU."""
    xp = backend_of(tokens)
    total = xp.zeros(tokens.shape[0], dtype=xp.int64)
    T = tokens.shape[1] - 1
    for t0 in range(0, T, time_chunk):
        t1 = min(T, t0 + time_chunk)
        logits, hidden = forward(params, cfg, tokens[:, t0:t1], hidden, perturb)
        total += token_logprob(logits, tokens[:, t0 + 1: t1 + 1]).sum(axis=1)
    return total, hidden


def log2_probs(logits):
    """Float64 log2 p(byte) from integer logits: p proportional to 2^(logit/16). (..., 256)."""
    xp = backend_of(logits)
    z = logits.astype(xp.float64) / 16.0
    z_max = z.max(axis=-1, keepdims=True)
    return z - z_max - xp.log2(xp.exp2(z - z_max).sum(axis=-1, keepdims=True))


def bits_per_byte(logits, targets):
    """Reported loss: mean -log2 p(target) in float64 from the integer logits."""
    xp = backend_of(logits)
    lp = xp.take_along_axis(log2_probs(logits), targets.astype(xp.int64)[..., None], axis=-1)
    return float(-lp.mean())  # note: a CPU-GPU sync point

# -----------------------------------------------------------------------------
# perturbation hooks: member i (row i of the batch) evaluates its weights plus E_i >> shift


@dataclass
class LowRank:
    """E_i = A_i B_i^T (rank r) for each member i, never materialised (EGGROLL, paper §4.2).

    A: (N, m, r) int8, the member's sign already applied; B: (N, n, r) int8; shift: the right
    shift applied to the exact integer product (4 + sigma_hat in the integer scheme, App. H.1)."""
    A: object
    B: object
    shift: int

    def matmul_delta(self, x):
        """(x E_i^T) >> shift for x (N, T, n) int8 values -> (N, T, m), as (x B_i) A_i^T.

        Cost O(T r (m + n)) per member instead of O(T m n): no E_i is ever built. int32 when
        even all-127 inputs cannot overflow it (n r 127^3 < 2^31: n r <= 1048), else int64."""
        xp = backend_of(x)
        r = self.B.shape[2]
        it = xp.int32 if self.int32_delta() else xp.int64
        x = x.astype(xp.int32, copy=False)                                # int32 lanes already
        out = None
        for q in range(r):                                                # rank-1 terms
            xb = xp.einsum("btn,bn->bt", x, wide(self.B[:, :, q]))        # (N, T): x . b_iq
            term = xb[..., None].astype(it, copy=False) * self.A[:, None, :, q]  # (N, T, m)
            out = term if out is None else xp.add(out, term, out=out)
        return xp.right_shift(out, self.shift, out=out)                  # in place: ours

    def int32_delta(self):
        """Whether matmul_delta's sum and the accumulator it joins fit int32 for any int8 input:
        n r 127^3 < 2^31 and n 127^2 + (n r 127^3 >> shift) < 2^31."""
        n, r = self.B.shape[1], self.B.shape[2]
        return n * r * 127**3 < 2**31 and n * 127**2 + (n * r * 127**3 >> self.shift) < 2**31

    def row_delta(self, tokens):
        """Embedding rows: E_i[t] >> shift = (A_i[t] . B_i) >> shift. tokens (N, T) -> (N, T, n)."""
        xp = backend_of(tokens)
        a_rows = self.A[xp.arange(len(tokens))[:, None], tokens.astype(xp.int64)]  # (N, T, r)
        it = xp.int32 if self.A.shape[-1] * 127**2 < 2**31 else xp.int64   # r terms of <= 127^2
        out = 0
        for q in range(self.A.shape[-1]):
            out = out + a_rows[..., q, None].astype(it) * self.B[:, None, :, q]
        return out >> self.shift

    def materialise(self):
        """E_i = A_i B_i^T as int32 (N, m, n): what naive ES would have to store."""
        xp = backend_of(self.A)
        return xp.einsum("bmr,bnr->bmn", wide(self.A), wide(self.B))


@dataclass
class Full:
    """A materialised integer noise tensor per member (naive ES), or a vector's noise.

    E: (N, m, n) for a matrix, (N, d) for a vector; any integer dtype. shift as in LowRank."""
    E: object
    shift: int

    def matmul_delta(self, x):
        """(x E_i^T) >> shift for x (N, T, n) -> (N, T, m) int64: a batched GEMV per member, the
        bandwidth-bound form of naive ES. float64 is exact here (every partial sum < 2^53)."""
        xp = backend_of(x)
        out = x.astype(xp.float64) @ self.E.astype(xp.float64).transpose(0, 2, 1)  # (N, T, m)
        return out.astype(xp.int64) >> self.shift

    def row_delta(self, tokens):
        xp = backend_of(tokens)
        rows = self.E[xp.arange(len(tokens))[:, None], tokens.astype(xp.int64)]  # (N, T, n)
        return rows.astype(xp.int64) >> self.shift

    def vector_delta(self):
        return self.E.astype(backend_of(self.E).int64) >> self.shift    # (N, d)


def select_members(perturb, rows):
    """The perturbation of a slice of the members (to evaluate a population in pieces)."""
    if not perturb:
        return perturb
    return {name: (LowRank(p.A[rows], p.B[rows], p.shift) if isinstance(p, LowRank)
                   else Full(p.E[rows], p.shift)) for name, p in perturb.items()}


def lowrank_matmul_reference(x, w, a, b, shift):
    """One member's perturbed matmul accumulator, loops written out (before the 16 isqrt(n)).

    x (n,), w (m, n), a (m, r), b (n, r) -> m Python ints: x.W_j + ((x.B) . A_j) >> shift."""
    x, w, a, b = (to_numpy(v).astype(np.int64) for v in (x, w, a, b))
    m, n = w.shape
    r = a.shape[1]
    xb = [sum(int(x[k]) * int(b[k, q]) for k in range(n)) for q in range(r)]   # (r,): x . B
    out = []
    for j in range(m):
        base = sum(int(x[k]) * int(w[j, k]) for k in range(n))                # x . W_j
        low = sum(xb[q] * int(a[j, q]) for q in range(r))                      # (x . B) . A_j
        out.append(base + (low >> shift))
    return out

# -----------------------------------------------------------------------------
# counter-based integer noise: the same integer ops on NumPy and CuPy, so both backends draw
# identical noise and every process can regenerate every member's noise from the seed


# hash32's rounds: x ^= x >> shift, then x *= multiplier (none in the last round)
HASH32_ROUNDS = ((16, 0x7FEB352D), (15, 0x846CA68B), (16, None))


def hash32(x):
    """A 32-bit integer mixer ('lowbias32' constants). uint32 arithmetic wraps mod 2^32 on both
    backends, so numpy and cupy give identical bits."""
    xp = backend_of(x)
    for shift, mult in HASH32_ROUNDS:
        x = x ^ (x >> xp.uint32(shift))
        if mult is not None:
            x = x * xp.uint32(mult)
    return x


def stream_key(*words):
    """Fold a tuple of non-negative ints (seed, step, parameter id, ...) into one uint32 key."""
    h = np.array([0x9E3779B9], dtype=np.uint32)    # 1-d: numpy wraps arrays silently
    for w in words:
        h = hash32(h ^ np.uint32(w & 0xFFFFFFFF))
    return int(h[0])


def _normal_quantiles():
    """NORMAL_QUANTILES[u] = Phi^-1((u + 0.5) / 2^16), float64: a 16-bit uniform to a normal."""
    nd = statistics.NormalDist()
    half = np.array([nd.inv_cdf((u + 0.5) / 65536) for u in range(32768)])
    return np.concatenate([half, -half[::-1]])                   # exactly symmetric, |z| <= 4.17


NORMAL_QUANTILES = _normal_quantiles()
NORMAL_Q4 = np.rint(Q_ONE * NORMAL_QUANTILES).astype(np.int8)   # round(16 z), |v| <= 69


def noise_uniform16(key, rows, size, xp=np):
    """16-bit uniforms (P, size) int32 in [0, 2^16), a pure function of (key, row, index): the
    counter hash behind noise_int8 (and NoProp's float normals)."""
    row_keys, idx = noise_counters(key, rows, size, xp)
    h = hash32(row_keys[:, None] ^ idx[None, :])                                 # (P, size)
    return (h >> xp.uint32(16)).astype(xp.int32)


def noise_int8_plain(key, rows, size, xp=np):
    """Integer noise ~ 16 N(0, 1) as int8, a pure function of (key, row, index).

    key: a stream_key(seed, step, param id); rows: (P,) ids (e.g. the noise directions k).
    Returns (P, size) int8 in [-69, 69]."""
    return device_table(xp, NORMAL_Q4)[noise_uniform16(key, rows, size, xp)]


def noise_counters(key, rows, size, xp):
    """What noise_int8 hashes: a key per row (P,) and a counter per index (size,), uint32."""
    rows = xp.asarray(rows).astype(xp.uint32)
    row_keys = hash32(rows * xp.uint32(0x85EBCA6B) ^ xp.uint32(key))            # (P,)
    return row_keys, xp.arange(size, dtype=xp.uint32) * xp.uint32(0x9E3779B9)  # (size,)


NOISE_BLOCK = 1 << 15   # noise_int8 on the CPU: uint32 hashes per block (128 KiB, cache-sized)


def noise_int8(key, rows, size, xp=np):
    """noise_int8_plain, bit for bit; on the CPU a block of rows at a time with every
    operation in place, about 2.4x faster (the plain version makes a fresh (P, size) uint32
    array per operation and walks memory ten times)."""
    if xp is not np:
        return noise_int8_plain(key, rows, size, xp)
    row_keys, idx = noise_counters(key, rows, size, np)
    out = np.empty((len(row_keys), size), dtype=np.int8)
    block = max(1, NOISE_BLOCK // max(1, size))                                # rows per block
    h = np.empty((min(block, len(row_keys)), size), dtype=np.uint32)
    tmp = np.empty_like(h)
    for i in range(0, len(row_keys), block):
        n = min(block, len(row_keys) - i)
        x, t = h[:n], tmp[:n]
        np.bitwise_xor(row_keys[i: i + n, None], idx[None, :], out=x)        # (n, size)
        for shift, mult in HASH32_ROUNDS:                                     # hash32, in place
            np.right_shift(x, np.uint32(shift), out=t)
            np.bitwise_xor(x, t, out=x)
            if mult is not None:
                np.multiply(x, np.uint32(mult), out=x)                        # wraps mod 2^32
        np.right_shift(x, np.uint32(16), out=x)                               # 16-bit uniform
        np.take(NORMAL_Q4, x, out=out[i: i + n])
    return out

# -----------------------------------------------------------------------------
# evaluation and sampling


def evaluate(params, cfg, windows, predict=None, chunk=256):
    """Validation bits/byte over windows (V, T + 1): zero initial state, unperturbed weights.

    predict(tokens, hidden) -> (log2 p, hidden) for methods with their own predictive; default:
    the LM's integer logits, scored in float64."""
    xp = backend_of(windows)
    total, count = 0.0, 0
    for i in range(0, len(windows), chunk):
        w = windows[i: i + chunk]
        h0 = zero_hidden(cfg, len(w), xp)
        if predict is None:
            logits, _ = forward(params, cfg, w[:, :-1], h0)
            total += bits_per_byte(logits, w[:, 1:]) * w[:, 1:].size
        else:
            log2p, _ = predict(w[:, :-1], h0)
            lp = xp.take_along_axis(log2p, w[:, 1:].astype(xp.int64)[..., None], axis=-1)
            total += -float(lp.sum())   # note: a CPU-GPU sync point
        count += w[:, 1:].size
    return total / count


def lm_predict(params, cfg):
    """The LM as a predictor: (tokens (N, T), hidden) -> (log2 p (N, T, 256) float64, hidden)."""
    def predict(tokens, hidden):
        logits, hidden = forward(params, cfg, tokens, hidden)
        return log2_probs(logits), hidden
    return predict


SAMPLE_STREAM = 0x5A3F   # the sampler's generator key purpose tag


def sample(predict, hidden, prompt, n_bytes, seed, temperature=1.0):
    """Generate n_bytes after `prompt` (bytes) with predict(tokens, hidden) -> (log2p, hidden).

    Sampling happens on the host from its own stream (seed, SAMPLE_STREAM): an I/O boundary."""
    if not prompt:
        raise ValueError("sample: the prompt must hold at least one byte")
    xp = backend_of(hidden)
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    log2p, hidden = predict(xp.asarray(np.frombuffer(prompt, np.uint8)[None, :]), hidden)
    out = bytearray()
    for _ in range(n_bytes):
        lp = to_numpy(log2p[0, -1]) / max(temperature, 1e-6)
        p = np.exp2(lp - lp.max())
        byte = int(rng.choice(VOCAB, p=p / p.sum()))
        out.append(byte)
        log2p, hidden = predict(xp.asarray(np.array([[byte]], np.uint8)), hidden)
    return bytes(out)

# -----------------------------------------------------------------------------
# speed only: on the CPU a population's rows go through the forward in cache-sized pieces, and
# k threads take the pieces (NumPy releases the GIL inside its array loops). Rows never
# interact, so the result is sequence_logprob's for any split (tests/test_int_rnn_lm.py).
# The GRU's time loop has its CPU version here too, gru_scan_cpu, tested equal to gru_scan.

ROW_PIECE = 512             # rows x TIME_PIECE bytes per forward call on the CPU: its big
TIME_PIECE = 9              # arrays (the logits: 512 x 9 x 256 int32) stay near the caches
MIN_ROWS_PER_THREAD = 32    # below this, the Python between NumPy calls (GIL) dominates
_THREAD_COUNT, _THREADS = 1, None   # set_threads(k > 1): k and a ThreadPoolExecutor of k


def set_threads(k):
    """Evaluate population_logprob's rows in k CPU threads. A compute setting like BLAS
    threads: no result depends on it."""
    global _THREAD_COUNT, _THREADS
    _THREAD_COUNT, _THREADS = k, (concurrent.futures.ThreadPoolExecutor(k) if k > 1 else None)


def thread_map(fn, items):
    """[fn(x) for x in items], the items taken by set_threads' threads on the CPU (NumPy
    releases the GIL inside its array loops). Results come back in items' order and fn must
    not depend on the others' results, so no result depends on the thread count."""
    items = list(items)
    if _THREADS is None or len(items) < 2:
        return [fn(x) for x in items]
    return list(_THREADS.map(fn, items))


def population_logprob(params, cfg, tokens, hidden, perturb=None, time_chunk=32):
    """sequence_logprob, bit for bit; on the CPU the N rows run in pieces of at most ROW_PIECE
    rows and TIME_PIECE bytes, taken by the threads of set_threads. tokens (N, T + 1) -> (N,)
    int64, final hidden."""
    xp = backend_of(tokens)
    full_rank = any(isinstance(p, Full) and p.E.ndim == 3 for p in (perturb or {}).values())
    if xp is np and not full_rank:      # naive ES reads each E_i once per chunk: its chunks stay
        time_chunk = min(time_chunk, TIME_PIECE)
    N = tokens.shape[0]
    k = min(_THREAD_COUNT, N // MIN_ROWS_PER_THREAD)
    n_pieces = max(k, -(-N // ROW_PIECE))
    if xp is not np or n_pieces < 2:
        return sequence_logprob(params, cfg, tokens, hidden, perturb, time_chunk)
    edges = np.linspace(0, N, n_pieces + 1).astype(int)
    pieces = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
    args = [(params, cfg, tokens[r], hidden[:, r], select_members(perturb, r), time_chunk)
            for r in pieces]
    done = ([sequence_logprob(*a) for a in args] if k < 2
            else thread_map(lambda a: sequence_logprob(*a), args))
    return xp.concatenate([f for f, _ in done]), xp.concatenate([h for _, h in done], axis=1)


I8_LO, I8_HI = np.int32(-127), np.int32(127)   # clip's bounds as int32 scalars: half its cost


def gru_scan_cpu(params, p, u, s, perturb):
    """gru_scan, bit for bit, with 28 NumPy calls per byte instead of about 45: on the CPU the
    time loop's arrays are small (N x D) and the cost is the calls, not the arithmetic. Once
    per window the recurrent weights go to float32 (transposed) and each member's low-rank
    factors to contiguous int32 columns; the state stays 2-D and every step writes in place.
    Where a shortcut does not apply (naive ES's Full noise, int64 ranks) it is gru_scan."""
    ops = [recurrent_operands(params, p + name, perturb) for name in ("u_f", "u_h")]
    if None in ops:
        return gru_scan(params, p, u, s, perturb)
    N, T, D = u.shape
    wf_u, wh_u = (time_major(linear(params, p + w, u, perturb)
                             + vector_param(params, p + b, perturb))
                  for w, b in (("w_f", "b_f"), ("w_h", "b_h")))          # (T, N, D) int32
    states = np.empty((T, N, D), dtype=np.int32)                          # q4, the outputs
    s = wide(s)                                                           # (N, D) q4
    f, h, scratch = (np.empty((N, D), dtype=np.int32) for _ in range(3))
    for t in range(T):
        recurrent_linear(s, ops[0], f, scratch)                           # s @ U_f
        f += wf_u[t]
        np.clip(f, I8_LO, I8_HI, out=f)                                   # f = I8(uW_f+sU_f+b_f)
        f += 127                                                          # the gate, [0, 254]
        np.multiply(f, s, out=h)
        h >>= 8                                                           # f' = (gate s) >> 8
        recurrent_linear(h, ops[1], h, scratch)                           # f' @ U_h
        h += wh_u[t]
        np.clip(h, I8_LO, I8_HI, out=h)                                   # h' = I8(...)
        h -= s
        h *= f
        h >>= 8                                                           # (gate (h' - s)) >> 8
        np.add(s, h, out=states[t])                                       # the new state
        s = states[t]
    return states.transpose(1, 0, 2), s.astype(np.int8)                   # (N, T, D), (N, D)


def time_major(x):
    """(N, T, D) -> contiguous (T, N, D) int32: each time step's rows in one block."""
    return np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.int32)


def recurrent_operands(params, name, perturb):
    """What recurrent_linear needs of matrix `name`, prepared once per window: (W^T float32,
    [A_q int32 (N, m)], [B_q int32 (N, n)], shift, divisor), or None where the member's noise
    is not a LowRank with an int32 matmul_delta (there gru_scan_cpu is gru_scan)."""
    w = params[name]
    wt = np.ascontiguousarray(w.astype(np.float32).T)                      # (n, m), exact
    pert = perturb.get(name) if perturb else None
    if pert is None:
        return wt, [], [], 0, matmul_divisor(w.shape[1])
    if not isinstance(pert, LowRank) or not pert.int32_delta():           # Full, or int64
        return None
    r = pert.B.shape[2]
    a = [np.ascontiguousarray(pert.A[:, :, q], dtype=np.int32) for q in range(r)]
    b = [np.ascontiguousarray(pert.B[:, :, q], dtype=np.int32) for q in range(r)]
    return wt, a, b, pert.shift, matmul_divisor(w.shape[1])


def recurrent_linear(x, ops, out, scratch):
    """linear(x) for one time step, into `out` (N, m) int32 (it may be x itself): x (N, n) int8
    values in int32 lanes. The same integers as linear: I8(floor((x W^T + delta) / divisor)),
    delta = (sum_q (x . b_q) a_q) >> shift, every term below 2^31 (recurrent_operands)."""
    wt, a, b, shift, divisor = ops
    acc = x.astype(np.float32) @ wt                                       # (N, m) exact, q8
    if a:
        for q, (a_q, b_q) in enumerate(zip(a, b)):
            xb = np.einsum("nk,nk->n", x, b_q)[:, None]                   # (N, 1): x . b_q
            if q == 0:
                np.multiply(xb, a_q, out=scratch)
            else:
                scratch += xb * a_q
        scratch >>= shift                                                 # the q8 delta
    # out is written only now: it may be x, which the delta above had to read first
    np.copyto(out, acc, casting="unsafe")                                 # exact integers
    if a:
        out += scratch
    div_floor(out, divisor, out=out)                                      # q8 -> q4
    np.clip(out, I8_LO, I8_HI, out=out)
    return out

# -----------------------------------------------------------------------------
# Adam: the one optimiser of every float part (FF, NoProp, backprop, the float ES demos)


def adam_moments(params):
    """Adam's state for `params`: zero first and second moments, {"m": {...}, "v": {...}}."""
    return {k: {name: backend_of(p).zeros_like(p) for name, p in params.items()}
            for k in ("m", "v")}


def adam_step(params, grads, moments, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """One Adam step down `grads`, in place (Kingma & Ba 2015, Alg. 1); weight_decay > 0 makes
    it AdamW (Loshchilov & Hutter 2019: the decay is decoupled from the gradient).

    params, grads: {name: float array}; moments: {"m": {name: array}, "v": {name: array}},
    updated in place; step counts from 1."""
    b1, b2 = betas
    for k, p in params.items():
        g, m, v = grads[k], moments["m"][k], moments["v"][k]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** step)
        v_hat = v / (1 - b2 ** step)
        # AdamW's decoupled decay: lr * weight_decay * p, from the weights before the step
        p -= lr * (m_hat / (backend_of(p).sqrt(v_hat) + eps) + weight_decay * p)

# -----------------------------------------------------------------------------
# the model table (README) and a look at an untrained model


def model_table(cfg):
    """Rows for the README's model table."""
    return [("d_model D", cfg.d_model), ("n_layers L", cfg.n_layers),
            ("mlp_mult", cfg.mlp_mult), ("vocab", VOCAB),
            ("parameters (int8)", count_params(cfg)),
            ("matmul MACs / byte", sum(math.prod(s) for s in param_shapes(cfg).values()
                                       if len(s) == 2) - VOCAB * cfg.d_model)]


if __name__ == "__main__":
    cfg = ModelConfig()
    for k, v in model_table(cfg):
        print(f"{k:>20}: {v:,}")
    params = init_params(cfg, seed=0)
    text = sample(lm_predict(params, cfg), zero_hidden(cfg, 1), b"ROMEO:", 80, seed=0)
    print("an untrained model writes:", repr(text.decode("utf-8", errors="replace")))
    print(asdict(cfg))
