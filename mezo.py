r"""MeZO: train with two forward passes per step and never store the noise.

Paper: S. Malladi, T. Gao, E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora,
"Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023, arXiv 2305.17333.

MeZO is zeroth-order SGD. It estimates the gradient from the loss difference along one random
direction z and never keeps z: z is regenerated from a seed each time it is needed. Memory is
that of inference plus one buffer the size of the largest tensor; the per-step state is a seed
and one scalar per direction, so a trained model is its initial weights, the seed and the list
of scalars.

Equations (numbered here; the paper's name for each in brackets):
  (1) SPSA estimate on a batch B, z ~ N(0, I_d)                           [Definition 1]
          pg    = (L(θ + εz; B) − L(θ − εz; B)) / (2ε)     a scalar, = zᵀ∇L + O(ε²)
          g_hat = pg · z                                   E[g_hat] = ∇L + O(ε²)
  (2) n-SPSA: the average of n independent estimates                     [Algorithm 2]
          g_hat = (1/n) Σ_j pg_j · z_j
  (3) ZO-SGD step                                                        [Definition 2]
          θ ← θ − η · g_hat
  (4) variance for Gaussian z (exact when L is quadratic)                [cf. Lemma 2]
          E‖g_hat − ∇L‖² = (d + 1)/n · ‖∇L‖²,  so the stable step is η ≈ n/d · η_SGD
Integer scheme (what `train.py --method mezo` runs on the int8 LM):
  (5) δ = round(v / 2^k), v ~ 16 N(0, 1) int8 from int_rnn_lm.noise_int8, k = eps_shift:
      an integer direction; for k <= 4 about εz of Eq. 1 with ε = 2^(4 − k) weight units.
      The default k = 6 rounds all but the tails to 0: δ is ±1 on the ~4.9 % of weights with
      |v| >= 32 (|z| >~ 1.97) and 0 elsewhere, a sparse direction with E[δ δᵀ] = 0.049 I
  (6) ℓ± = −Σ log2 p over the S x T bytes at I8(θ ± δ), in 1/256-bit units (int64, exact)
  (7) pg = (ℓ+ − ℓ−) / (2 · 256 · S T): Eq. 1 times ε, in bits/byte per δ
  (8) θ ← I8(θ + ⌊c δ + u⌋),  c = −η pg / n,  u ~ U[0, 1) per weight (stochastic rounding):
      E⌊c δ + u⌋ = c δ, so in expectation this is Eq. 3 with g_hat = pg δ / ε² and η
      absorbing the 1/ε². In fixed point: (round(c 2^16) δ + u16) >> 16, u16 in [0, 2^16).

Algorithm 1 (MeZO), paraphrased; the "Alg. 1 line k" comments below refer to this listing:
  1  for each step: take a batch B and a seed s
  2    perturb(θ, s, +ε);   ℓ+ = L(θ; B)                           now θ + εz
  3    perturb(θ, s, −2ε);  ℓ− = L(θ; B)                           now θ − εz
  4    perturb(θ, s, +ε)                                            back to θ (up to rounding)
  5    pg = (ℓ+ − ℓ−) / (2ε)                                        the "projected gradient"
  6    for each tensor θ_k: regenerate z_k from s;  θ_k ← θ_k − η · pg · z_k
  perturb(θ, s, c):  for each tensor θ_k: regenerate z_k from s;  θ_k ← θ_k + c · z_k

Integer choices (each also explained at its line):
  * exact restore (line 4): int8 saturates at ±127, so I8(I8(θ + δ) − 2δ) + δ ≠ θ where θ ± δ
    leaves [−127, 127]. Only those "rail" elements, |θ| + |δ| > 127, are ambiguous: line 2
    keeps their indices and original values in a small sparse buffer, lines 3 and 4 set them
    from it; every other element is exact in integers. After line 4, θ is bit for bit what it
    was (tested). The buffer lives for one direction and is usually empty.
  * the update (line 6) is stochastic rounding of the float step, not a sign rule: |c δ| is
    mostly below one unit, so plain rounding would rarely move a weight, and a sign rule would
    throw away |pg|, the only thing MeZO measures.
  * the hidden state carries across steps: both sides of every direction start from the
    carried state, and the next step carries the mean of the 2n sides' final states (the
    unperturbed model's state up to O(δ²) where the dynamics are smooth; a third, plain
    forward would give it exactly at 1.5x the cost).

Departures from the paper and its code (each also marked at its line):
  * z_k has its own generator keyed by (seed, step, direction, tensor) instead of one global
    torch seed walked through the tensors in order, so z_k does not depend on the other
    tensors' shapes;
  * n > 1 follows Algorithm 2 (n seeds, n scalars, n updates of step η/n), but all n
    directions use the same batch (Algorithm 2 draws a new batch per direction);
  * no weight decay and a constant learning rate (the paper's full-parameter runs);
  * the default direction is sparse (k = 6 in Eq. 5), not Gaussian: each step estimates the
    gradient on a random ~5 % of the weights and moves only those, so the SPSA noise (Eq. 4)
    and the rounding noise (Eq. 8) stay on those; ZO-Bench (Zhang et al. 2024) reports that
    sparse perturbations improve ZO-SGD too (results/notebook.md section 3.2 has our runs);
  * the logged loss is (ℓ+ + ℓ−)/2 = L(θ) + O(ε²); the paper's code logs ℓ+.
  * float part: z is drawn on the host with NumPy, so CPU and GPU runs see bit-identical noise.
    Perturb/restore (lines 2-4) is not bit-exact in floating point: θ drifts by about an ulp
    per step in float32, far below the update (tests/test_mezo.py measures it).

Memory on the integer LM: inference (the S-row forward) plus a few int32 buffers the size of
the largest tensor (δ, the rounding noise, θ in int32 lanes) and the rail buffer. The method
state is only the carried hidden state (L, S, D): no moments, no stored z (tested).

Run: $ python mezo.py                    (the float algorithm on least squares, seconds)
     $ python train.py --method mezo     (the integer LM, about 2 minutes on 2 cores)
"""
import time
from dataclasses import dataclass

import numpy as np

import int_rnn_lm as lm

# -----------------------------------------------------------------------------
# the paper's algorithm in float (Alg. 1, Eq. 1-4): SPSA along a direction regenerated from
# its seed, ZO-SGD. The integer scheme below is the same algorithm on the int8 LM.


@dataclass
class FloatConfig:
    eps: float = 1e-3  # ε of Eq. 1, the finite-difference step (paper: 1e-3 for full-parameter)
    lr: float = 1e-2   # η of Eq. 3, constant (paper: 1e-6..1e-7 for LLMs; tiny models need more)
    n_dirs: int = 1    # n of Eq. 2, directions per step, 2n forward passes (paper default: 1)
    seed: int = 0      # run seed: every z derives from (seed, step, direction, tensor)


# --- noise ---
# Key layout [seed, stream, step, direction, tensor_id]. The stream tag sits right after the
# seed because NumPy pads short keys with zeros: default_rng([s]) and default_rng([s, 0, 0, 0])
# are the same generator, so an untagged noise key (s, 0, 0, 0) would equal default_rng(s).
DATA_STREAM = 0   # the demo's data
NOISE_STREAM = 1  # perturbation directions z


def tensor_noise(p, seed, step, direction, tensor_id):
    """z_k ~ N(0, I) with the shape, dtype and device of tensor p; a pure function of its key."""
    rng = np.random.default_rng([seed, NOISE_STREAM, step, direction, tensor_id])
    z = rng.standard_normal(p.shape, dtype=p.dtype)  # on the host: CPU and GPU agree bit for bit
    return lm.backend_of(p).asarray(z)  # on a GPU: one host-to-device copy of this tensor


def perturb_(params, scale, seed, step, direction):
    """θ_k ← θ_k + scale · z_k for every tensor, in place (Alg. 1 `perturb`).

    Only one z_k is alive at a time: the extra memory is one buffer the size of the largest
    tensor, never a full copy of θ.
    """
    for tensor_id, name in enumerate(sorted(params)):  # fixed order; tensor_id keys the noise
        z = tensor_noise(params[name], seed, step, direction, tensor_id)  # shape of θ_k
        z *= scale  # in place, so no second buffer
        params[name] += z
        del z  # free it before the next tensor's z is drawn


# --- estimator ---

def projected_grads(loss_fn, params, cfg, step):
    """Alg. 1 lines 2-5 for each of the n directions: returns ([pg_j], [loss_j]).

    loss_fn(params) -> float is the loss on this step's batch (the same batch for every call).
    params are perturbed in place and restored, up to float rounding.
    """
    pgs, losses = [], []
    for j in range(cfg.n_dirs):
        perturb_(params, +cfg.eps, cfg.seed, step, j)  # Alg. 1 line 2: θ + εz
        loss_plus = float(loss_fn(params))  # note: a CPU-GPU sync point
        perturb_(params, -2 * cfg.eps, cfg.seed, step, j)  # line 3: θ − εz
        loss_minus = float(loss_fn(params))
        perturb_(params, +cfg.eps, cfg.seed, step, j)  # line 4: back to θ
        pgs.append((loss_plus - loss_minus) / (2 * cfg.eps))  # line 5, Eq. 1
        losses.append(0.5 * (loss_plus + loss_minus))  # L(θ) + O(ε²); the paper logs ℓ+
    return pgs, losses


def estimate_grad(loss_fn, params, cfg, step):
    """The n-SPSA estimate of Eq. 2 as explicit arrays: ({name: g_hat_k}, [loss_j]), O(d) memory.

    For tests and for reading the math only: MeZO's own step never builds g_hat.
    """
    pgs, losses = projected_grads(loss_fn, params, cfg, step)
    grads = {name: lm.backend_of(p).zeros_like(p) for name, p in params.items()}
    for j, pg in enumerate(pgs):
        for tensor_id, name in enumerate(sorted(params)):
            z = tensor_noise(params[name], cfg.seed, step, j, tensor_id)  # same z as perturb_
            grads[name] += (pg / cfg.n_dirs) * z  # Eq. 2
    return grads, losses


# --- update ---

def init_state(params, cfg):
    """MeZO's whole optimiser state: a step counter. No per-parameter arrays (no moments, no z)."""
    return {"step": 0}


def zo_sgd_update_(params, pgs, cfg, step):
    """Alg. 1 line 6 (Algorithm 2 for n > 1): θ ← θ − (η/n) Σ_j pg_j · z_j, in place.

    This is perturb_ with scale −η·pg_j/n: each z_j is regenerated from its seed, one tensor
    at a time, so the update needs no more memory than the forward passes.
    """
    for j, pg in enumerate(pgs):
        perturb_(params, -cfg.lr * pg / cfg.n_dirs, cfg.seed, step, j)  # Eq. 2 and 3


def train_step(loss_fn, params, state, cfg):
    """One MeZO step on one batch: 2n forward passes, then the update; params change in place.

    Returns (params, state, stats); stats["pg"] holds the n scalars that, with the seed, are
    all it takes to replay this step.
    """
    step = state["step"]
    pgs, losses = projected_grads(loss_fn, params, cfg, step)
    zo_sgd_update_(params, pgs, cfg, step)
    stats = {"loss": sum(losses) / len(losses), "pg": pgs}
    return params, {"step": step + 1}, stats


# -----------------------------------------------------------------------------
# noise: the direction delta and the rounding noise, regenerated from (seed, step, dir, tensor)

SR_BITS = 16   # fixed-point fraction bits of the update scale c (Eq. 8)
NOISE_TAG, ROUND_TAG = 1, 2   # stream_key tags: directions delta, stochastic-rounding noise u


def direction(seed, t, j, pid, shape, cfg, xp):
    """Eq. 5: delta for tensor pid of direction j: round(v / 2^k) as int32, shape of the tensor.

    Rounded half away from zero on |v|, so delta is exactly as symmetric as v (a plain >> would
    floor, giving delta a mean of -1/2: a bias along the all-ones direction)."""
    v = lm.wide(lm.noise_int8(lm.stream_key(seed, NOISE_TAG, t, pid), xp.arange(j, j + 1),
                              int(np.prod(shape)), xp)[0])              # (m n,) ~ 16 N(0, 1)
    half = (1 << cfg.eps_shift) >> 1
    return (xp.sign(v) * ((xp.abs(v) + half) >> cfg.eps_shift)).reshape(shape)  # |delta| <= 69


def uniform16(seed, t, j, pid, size, xp):
    """u16 of Eq. 8: uniform integers in [0, 2^16), a pure function of (seed, t, j, pid, i)."""
    key = xp.uint32(lm.stream_key(seed, ROUND_TAG, t, j, pid))
    h = lm.hash32(xp.arange(size, dtype=xp.uint32) * xp.uint32(0x9E3779B9) ^ key)  # (size,)
    return (h >> xp.uint32(16)).astype(xp.int32)                          # top 16 bits

# -----------------------------------------------------------------------------
# Alg. 1 lines 2-4 on int8 weights: perturb in place, restore exactly


def perturb_int_(params, side, seed, t, j, cfg, mcfg, rails):
    """Move the int8 weights in place to θ0 + side·δ (Alg. 1 `perturb`): side +1 from θ0
    (line 2), -1 from θ0 + δ (line 3), 0 from θ0 - δ (line 4), one tensor at a time.

    rails[name] = (flat indices, θ0 there) of the elements with |θ0| + |δ| > 127, where a
    saturated step cannot be undone: recorded at side +1, used to set those elements exactly
    at every side. Everywhere else θ0 ± δ lies in [-127, 127], so the int32 arithmetic below
    is exact and saturation never bites. Only one tensor's δ is alive at a time."""
    c = {1: 1, -1: -2, 0: 1}[side]                    # the step from where θ stands now
    for pid, name in enumerate(lm.param_shapes(mcfg)):
        w = params[name]
        xp = lm.backend_of(w)
        delta = direction(seed, t, j, pid, w.shape, cfg, xp)              # int32, shape of w
        theta = lm.wide(w)                                                # int32 lanes, q4
        if side == 1:                                                     # θ = θ0 here
            idx = xp.flatnonzero(xp.abs(theta) + xp.abs(delta) > 127)
            rails[name] = (idx, w.ravel()[idx].copy())                    # sparse: (k,), (k,)
        theta += c * delta                                                # |.| <= 127 + 138
        idx, theta0 = rails[name]
        theta.ravel()[idx] = lm.wide(theta0) + side * delta.ravel()[idx]  # exact on the rails
        w[...] = lm.sat8(theta)                                           # in place, saturated
    return rails

# -----------------------------------------------------------------------------
# estimator: ℓ+ and ℓ- for each direction, on the same rows from the same carried state


def projected_grads_int(params, mcfg, tokens, hidden, seed, t, cfg, directions):
    """Alg. 1 lines 2-5 for each direction j in `directions` on the S rows `tokens` (S, T + 1).

    Returns one row per direction, [pg (Eq. 7, bits/byte per δ), loss (bits/byte), rail count]
    as a host float64 (len(directions), 3) array, and the sum of the directions' 2 final states
    each ((L, S, D) int32; the next carried state is the mean over all 2n of them)."""
    xp = lm.backend_of(tokens)
    n_bytes = tokens.shape[0] * (tokens.shape[1] - 1)                      # S T
    sums, rail_counts = [], []                                             # on the device
    state_sum = xp.zeros(hidden.shape, dtype=xp.int32)                     # (L, S, D)
    for j in directions:
        rails = perturb_int_(params, +1, seed, t, j, cfg, mcfg, {})       # line 2: θ + δ
        lp_plus, h_plus = lm.sequence_logprob(params, mcfg, tokens, hidden, None, cfg.time_chunk)
        perturb_int_(params, -1, seed, t, j, cfg, mcfg, rails)            # line 3: θ - δ
        lp_minus, h_minus = lm.sequence_logprob(params, mcfg, tokens, hidden, None,
                                                cfg.time_chunk)
        perturb_int_(params, 0, seed, t, j, cfg, mcfg, rails)             # line 4: exactly θ
        sums.append(xp.stack([-lp_plus.sum(), -lp_minus.sum()]))          # ℓ+, ℓ- (int64)
        rail_counts.append(sum(len(idx) for idx, _ in rails.values()))
        state_sum += lm.wide(h_plus) + lm.wide(h_minus)
    # Eq. 6 in 1/256 bit, exact Python ints: one copy to the host for all the directions (on
    # a GPU the step's one sync point: pg is a host scalar)
    rows = [((plus - minus) / (2 * lm.LOGP_UNIT * n_bytes),               # line 5, Eq. 7
             (plus + minus) / (2 * lm.LOGP_UNIT * n_bytes), rails)
            for (plus, minus), rails in zip(lm.to_numpy(xp.stack(sums)).tolist(), rail_counts)] \
        if sums else []
    return np.array(rows, dtype=np.float64).reshape(-1, 3), state_sum

# -----------------------------------------------------------------------------
# update: Alg. 1 line 6 with stochastic rounding to integer steps (Eq. 8)


def zo_sgd_update_int_(params, pgs, seed, t, cfg, mcfg):
    """θ ← I8(θ + ⌊c_j δ_j + u⌋) for each direction j, c_j = -η pg_j / n (Alg. 2), in place;
    η constant, as in the paper's full-parameter runs.

    Each δ_j is regenerated from its key, one tensor at a time. Returns the fraction of
    weights that moved (a 0-d device array)."""
    moved, total = 0, 0
    for j, pg in enumerate(pgs):
        c_q = int(round(-cfg.lr * pg / cfg.n_dirs * (1 << SR_BITS)))  # c, q16
        # |c| >= 127 saturates every nonzero δ anyway, so clipping c changes no step; it keeps
        # |c_q δ| <= 127 * 2^16 * 69 < 2^30, so the int32 lanes below cannot wrap
        c_q = max(-127 << SR_BITS, min(127 << SR_BITS, c_q))
        for pid, name in enumerate(lm.param_shapes(mcfg)):
            w = params[name]
            xp = lm.backend_of(w)
            delta = direction(seed, t, j, pid, w.shape, cfg, xp)              # int32
            u16 = uniform16(seed, t, j, pid, w.size, xp).reshape(w.shape)     # int32
            step = (c_q * delta + u16) >> SR_BITS                         # ⌊c δ + u⌋, q16 -> int
            new = lm.sat8(lm.wide(w) + lm.clip8(step))                    # |step| <= 127 first
            moved = moved + (new != w).sum()
            total += w.size
            w[...] = new
    return moved / total

# -----------------------------------------------------------------------------
# the method interface train.py calls (README "The method interface")


@dataclass
class Config:
    rows: int = 32           # S: data rows per step; both sides of a direction score the same rows
    eps_shift: int = 6       # k of Eq. 5: delta = round(16 N(0,1) / 2^k); 6: +-1 on 4.9% of weights
    lr: float = 256.0        # eta of Eq. 8: weight units per (bits/byte per unit delta)
    n_dirs: int = 1          # n of Eq. 2: SPSA directions per step, 2n forward passes
    time_chunk: int = 25     # bytes per forward chunk (memory bound; results do not depend on it)


# the training loss step() reports, named by what it is (log.csv column, progress line)
LOSS = "perturbed_bpb"   # mean of l+ and l- over the directions, bits/byte

# train.py's run on each device. CPU: a step is 2 forwards of S rows, so 25-byte windows (the
# state carries across them) give many steps; 7000 take about 2 minutes on 2 cores. GPU: a
# step of more rows fills the device (not measured yet: no GPU has run this code).
DEFAULTS = {"cpu": dict(steps=7000, seq_len=25, eval_every=500, log_every=100),
            "cuda": dict(steps=5000, seq_len=100, eval_every=250, log_every=50, rows=256)}


def check_config(cfg):
    if cfg.rows < 1:
        raise ValueError(f"rows must be >= 1, got {cfg.rows}")
    if not 0 <= cfg.eps_shift <= 7:
        raise ValueError(f"eps_shift must be in 0..7 (delta would be all zeros beyond 7), "
                         f"got {cfg.eps_shift}")
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    if cfg.n_dirs < 1 or cfg.time_chunk < 1:
        raise ValueError(f"n_dirs and time_chunk must be >= 1, got {cfg.n_dirs}, "
                         f"{cfg.time_chunk}")


def check_split(cfg, n_processes):
    """Under mpirun every process scores the same number of SPSA directions."""
    if cfg.n_dirs % n_processes:
        raise ValueError(f"n_dirs {cfg.n_dirs} does not split over {n_processes} processes: "
                         f"use a multiple of {n_processes}")


def num_sequences(cfg):
    """Data rows per step: the batch every forward pass scores."""
    return cfg.rows


# the carried state is the same in every process (no per-member rows to split across processes)
PER_MEMBER_STATE = {}


def init(params, cfg, mcfg, seed, world):
    """Method state: the carried hidden state of the S rows, and nothing else (no moments)."""
    check_config(cfg)
    return {"hidden": lm.zero_hidden(mcfg, cfg.rows, lm.backend_of(params["emb"]))}


def step(params, state, batch, t, cfg, mcfg, seed, world):
    """One MeZO step on windows `batch` = (tokens (S, T + 1), reset): 2n forwards, then the
    update. params change in place (and are returned). Under mpirun this process scores its
    share of the n directions; the n scalars pg travel, and the carried state's sum."""
    tokens, reset = batch
    xp = lm.backend_of(tokens)
    hidden = lm.zero_hidden(mcfg, cfg.rows, xp) if reset else state["hidden"]
    mine = world.share(cfg.n_dirs)                                        # directions [a, b)
    per_dir, state_sum = projected_grads_int(params, mcfg, tokens, hidden, seed, t, cfg,
                                             range(mine.start, mine.stop))
    per_dir = world.allgather(per_dir)                                    # (n, 3): pg, loss, rails
    state_sum = world.allreduce_sum(state_sum)                            # (L, S, D) int32, exact
    hidden = (state_sum // (2 * cfg.n_dirs)).astype(xp.int8)               # mean, in [-127, 127]
    pgs = [float(pg) for pg in per_dir[:, 0]]
    moved = zo_sgd_update_int_(params, pgs, seed, t, cfg, mcfg)
    T = tokens.shape[1] - 1
    stats = {LOSS: float(per_dir[:, 1].mean()), "member_tokens": 2 * cfg.n_dirs * cfg.rows * T,
             "pg": pgs[0], "moved": moved, "rails": int(per_dir[:, 2].sum())}
    return params, {"hidden": hidden}, stats

# -----------------------------------------------------------------------------
# the toy problem: least squares, what `python mezo.py` runs


def make_regression(seed, n_rows=512, d_in=100):
    """Noisy linear data y = x w* + 0.5 + 0.01·noise, float32."""
    rng = np.random.default_rng([seed, DATA_STREAM])
    x = rng.standard_normal((n_rows, d_in), dtype=np.float32)  # (n_rows, d_in)
    w_true = rng.standard_normal(d_in, dtype=np.float32)  # (d_in,)
    noise = rng.standard_normal(n_rows, dtype=np.float32)  # (n_rows,)
    return x, x @ w_true + 0.5 + 0.01 * noise


def regression_loss(params, x, y):
    """½ · mean squared residual of the linear model x @ w + b."""
    r = x @ params["w"] + params["b"] - y  # (n_rows,)
    return 0.5 * float(r @ r) / len(y)


def least_squares_loss(x, y):
    """The smallest reachable loss, from the closed-form least-squares fit (for reference)."""
    x1 = np.concatenate([x, np.ones((len(y), 1), x.dtype)], axis=1).astype(np.float64)
    coef = np.linalg.lstsq(x1, y.astype(np.float64), rcond=None)[0]  # (d_in + 1,)
    r = x1 @ coef - y
    return 0.5 * float(r @ r) / len(y)


def demo(cfg, steps=2000, log_every=250):
    """Fit a linear regression (d = 101) by MeZO on the full batch; returns (first, last) loss."""
    x, y = make_regression(cfg.seed)
    params = {"w": np.zeros(x.shape[1], np.float32), "b": np.zeros(1, np.float32)}
    state = init_state(params, cfg)
    loss_fn = lambda p: regression_loss(p, x, y)  # noqa: E731 -- one batch: the whole data set
    first = loss_fn(params)
    print(f"MeZO on least squares: d = {x.shape[1] + 1}, {cfg}")
    t0 = time.perf_counter()
    for step in range(steps):
        params, state, stats = train_step(loss_fn, params, state, cfg)
        if step % log_every == 0 or step == steps - 1:
            ms = 1e3 * (time.perf_counter() - t0) / (step + 1)
            print(f"step {step:05d}/{steps} | loss {stats['loss']:.4e} "
                  f"| pg {stats['pg'][0]:+.2e} | {ms:.2f} ms/step")
    last = loss_fn(params)
    print(f"loss {first:.4e} -> {last:.4e} in {time.perf_counter() - t0:.1f} s "
          f"(least-squares minimum {least_squares_loss(x, y):.4e})")
    return first, last


if __name__ == "__main__":
    demo(FloatConfig())
