r"""EGGROLL: evolution strategies with low-rank perturbations, on the integer LM.

Paper: B. Sarkar, M. Fellows, J. A. Duque et al., "Evolution Strategies at the Hyperscale",
arXiv 2511.16652 (v2, Feb 2026); code: ESHyperscale/HyperscaleES and nano-egg (the int8 LM).
es_naive.py is the same method with full-rank noise: `diff es_naive.py eggroll.py`.

ES estimates the gradient of the Gaussian-smoothed fitness J from N perturbed copies of the
weights ("members"); member 2k uses +E_k and member 2k+1 uses -E_k (antithetic pairs):
    grad J(M) = (1/sigma) E[E f(M + sigma E)]  ~  1/(N sigma) sum_i f_i E_i            (Eq. 2-3)
    M <- M + (alpha/N) sum_i f_i E_i,  1/sigma folded into alpha                         (Eq. 6)
EGGROLL's E_i of a matrix M (m x n) has rank r (§4.1-4.2):
    E_i = A_i B_i^T / sqrt(r),   A_i ~ N(0,1)^{m x r},  B_i ~ N(0,1)^{n x r}
    u (M + sigma E_i)^T = u M^T + (sigma / sqrt(r)) (u B_i) A_i^T: one GEMM for all members
    sum_i f_i E_i = (diag(f) A)^T B / sqrt(r): one GEMM, and no E_i is ever built
so a member's noise is r (m + n) numbers, small enough to keep for a whole step.
The integer scheme on the int8 LM (App. H), what `train.py --method eggroll` runs:
    H.1  A_k in I8^{m x r}, B_k in I8^{n x r} ~ 16 N(0,1) per pair k (a vector's: a_k * b_k);
         member forward I8((u W^T + ((u B) A^T >> (4 + sigma_hat))) / (16 isqrt n))
    H.2  F_k = sign(f(member 2k) - f(member 2k+1)),  f = integer log-likelihood of the window;
         Z = sum_k F_k E_k in integers
    H.3  W <- I8(W + sign(Z) [|Z| >= z_{1-alpha_t/2} std(Z)]),  alpha_t = 1/(1 + 0.015 t),
         std(Z) = 256 sqrt(P r) the spread of Z under random signs F
The default run departs from App. H in three options, each explained at its Config field:
the update (sgd), the signal (zscore) and the sampling (independent members in groups).

Departures, each also marked at its line:
  * integer rank r > 1 is a sum of r rank-1 terms (the reference code has rank 1 only);
  * the threshold is floor(z std(Z)) and Z = 0 never moves a weight (the reference code floors
    z and sqrt(P) first, and moves a weight by -1 where Z = 0 and the threshold is 0);
  * noise comes from a counter hash (int_rnn_lm.noise_int8), not from a table of normals;
  * alpha_t counts t in the paper's steps of 2048 members x 100 bytes, so that a run cut into
    smaller steps follows the same schedule per member-token: alpha = 1/(1 + alpha_decay M /
    204800) after M member-tokens (the paper's alpha_decay is 0.015);
  * the sgd update, the zscore signal and independent sampling (at their Config fields);
  * the vectors (norm gains, biases) are perturbed with their own sigma_hat, by default one
    more than the matrices' (half their sigma).

Run: $ python eggroll.py                  (the float algorithm on a toy regression, seconds)
     $ python train.py --method eggroll   (the integer LM, about 2 minutes on 2 cores)
"""
import math
import statistics
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

import int_rnn_lm as lm

# -----------------------------------------------------------------------------
# the paper's algorithm in float (§4, Eq. 6): the ES gradient from N members with rank-r
# noise, never building an E_i (§4.2). The integer scheme below (App. H) is the same
# algorithm on the int8 LM.


@dataclass
class FloatConfig:
    population: int = 256     # N members (even)
    sigma: float = 0.05       # perturbation scale
    rank: int = 1             # r
    shaping: str = "zscore"   # fitness shaping: zscore (§2.4), centered_rank, raw (f itself)
    lr: float = 0.02          # Adam step size on the ES gradient estimate, decayed linearly to 0
    steps: int = 300          # demo length


FLOAT_NOISE_STREAM = 1   # the generator key's purpose tag for the float noise


def float_pair_noise(seed, t, pid, shape, pairs, fcfg, xp):
    """Parameter pid's pair noise, N(0, 1), from one generator per (seed, step, pair, param):
    A (p, m, r) and B (p, n, r) for a matrix (§4.1)."""
    m, n = shape
    draws = [np.random.default_rng([seed, FLOAT_NOISE_STREAM, t, k, pid])
             .standard_normal((m + n) * fcfg.rank) for k in pairs]
    v = xp.asarray(np.stack(draws))                                        # (p, (m + n) r)
    return (v[:, n * fcfg.rank:].reshape(-1, m, fcfg.rank),                # A (p, m, r)
            v[:, : n * fcfg.rank].reshape(-1, n, fcfg.rank))               # B (p, n, r)


def shape_fitness(f, shaping):
    """f (N,) -> the weights the estimate uses: z-scored (HyperscaleES), centred ranks in
    [-1/2, 1/2] (Salimans et al.), or f itself (raw: the unbiased textbook estimate)."""
    xp = lm.backend_of(f)
    if shaping == "zscore":
        return (f - f.mean()) / (f.std() + 1e-8)
    if shaping == "centered_rank":
        ranks = xp.empty(len(f))
        ranks[xp.argsort(f)] = xp.arange(len(f))
        return ranks / (len(f) - 1) - 0.5
    if shaping == "raw":
        return f
    raise ValueError(f"unknown shaping {shaping!r}: use zscore, centered_rank or raw")


def float_es_gradient(fitness_fn, params, seed, t, fcfg, xp=np):
    """The ES estimate of grad f (Eq. 6 without the step size): g = 1/(N sigma) sum_i w_i E_i
    with w the shaped fitness, the sum built as (diag(w) A)^T B / sqrt(r), no E_i (§4.2).

    fitness_fn(params, noise, sigma) -> f (N,): member 2k evaluates W + sigma E_k, member
    2k + 1 W - sigma E_k. Returns ({name: g}, f)."""
    pairs = range(fcfg.population // 2)
    noise = {name: float_pair_noise(seed, t, pid, w.shape, pairs, fcfg, xp)
             for pid, (name, w) in enumerate(params.items())}
    f = fitness_fn(params, noise, fcfg.sigma)                              # (N,)
    w = shape_fitness(f, fcfg.shaping)
    wp = w[0::2] - w[1::2]                                                 # (P,) pair weights
    scale = 1.0 / (fcfg.population * fcfg.sigma * math.sqrt(fcfg.rank))
    return {name: scale * xp.einsum("p,pmr,pnr->mn", wp, A, B)            # (diag(wp) A)^T B
            for name, (A, B) in noise.items()}, f


def member_matmul(x, w, nz, sigma):
    """x (W + sigma E_i)^T for every member i at once, EGGROLL's way (§4.2): the shared GEMM
    x W^T plus (sigma / sqrt(r)) (x B_i) A_i^T. x (N or 1, E, n) -> (N, E, m)."""
    A, B = antithetic(nz[0]), np.repeat(nz[1], 2, axis=0)                 # members' +-A_k, B_k
    xb = np.einsum("ben,bnr->ber", np.broadcast_to(x, (len(A),) + x.shape[1:]), B)  # (N, E, r)
    return x @ w.T + (sigma / math.sqrt(A.shape[-1])) * np.einsum("ber,bmr->bem", xb, A)


# -----------------------------------------------------------------------------
# noise (H.1): rank-r int8 factors per matrix and direction k, from (seed, epoch, param, k)


MEMBERS_PER_DIRECTION = {"antithetic": 2, "independent": 1}


def n_directions(cfg):
    """P, the noise draws E_k of a step: one per antithetic pair, or one per member."""
    return cfg.population // MEMBERS_PER_DIRECTION[cfg.sampling]


def noise_epoch(t, cfg):
    """Steps that share one noise draw (noise_reuse of them; 0: the same noise every step)."""
    return t // cfg.noise_reuse if cfg.noise_reuse > 0 else 0


def direction_noise(seed, t, cfg, pid, shape, directions, xp):
    """Parameter pid's noise for the directions `directions` (ids k), a pure function of its key.

    Matrix (m, n): A (p, m, r) and B (p, n, r) int8 ~ 16 N(0,1), B first as in the reference.
    Vector (d,): a * b of two int8 normals, (p, d) int32 with std 256: App. H's form, q8 like
    a matrix's A B^T, so that one shift (4 + sigma_hat) scales both (naive ES: one draw, q4)."""
    key = lm.stream_key(seed, noise_epoch(t, cfg), pid)
    if len(shape) == 2:
        m, n = shape
        v = lm.noise_int8(key, directions, (m + n) * cfg.rank, xp)       # (p, (m + n) r)
        B = v[:, : n * cfg.rank].reshape(-1, n, cfg.rank)                 # (p, n, r)
        A = v[:, n * cfg.rank:].reshape(-1, m, cfg.rank)                  # (p, m, r)
        return A, B
    d = shape[0]
    v = lm.wide(lm.noise_int8(key, directions, 2 * d, xp))                # (p, 2d)
    return v[:, :d] * v[:, d:]                                            # (p, d) int32


def noise_source(seed, t, cfg, mcfg, xp):
    """(name, directions) -> that parameter's noise for a slice of directions. EGGROLL's is
    r (m + n) int8 numbers per direction and matrix: drawn once for all P directions and kept
    for the step's forward and update."""
    all_directions = xp.arange(n_directions(cfg))
    drawn = {name: direction_noise(seed, t, cfg, pid, shape, all_directions, xp)
             for pid, (name, shape) in enumerate(lm.param_shapes(mcfg).items())}
    return lambda name, ks: (tuple(f[ks] for f in drawn[name])
                             if isinstance(drawn[name], tuple) else drawn[name][ks])


def perturb_shift(cfg, matrix=True):
    """The right shift that turns a member's integer noise into a perturbation of relative
    size sigma = 2^-sigma_hat of the 16-scale weights: A B^T ~ 256 N(0,1) is q8, so 4 + sigma_hat.
    The vectors (norm gains, biases; a_k * b_k, also q8) take their own sigma_hat (a departure)."""
    return lm.Q_BITS + (cfg.sigma_shift if matrix else cfg.sigma_shift_vectors)  # H.1


def antithetic(x):
    """Pair rows (p, ...) -> member rows (2p, ...): member 2k gets +x_k, member 2k+1 gets -x_k."""
    xp = lm.backend_of(x)
    sign = (1 - 2 * (xp.arange(2 * len(x)) % 2)).astype(x.dtype)           # (2p,) +1, -1, ...
    return xp.repeat(x, 2, axis=0) * sign.reshape((-1,) + (1,) * (x.ndim - 1))


def to_members(x, cfg, signed=True):
    """Direction rows (p, ...) -> member rows: antithetic, the pair's +x_k, -x_k (signed) or
    x_k twice; independent, member k's own x_k."""
    if cfg.sampling == "independent":
        return x
    return antithetic(x) if signed else x.repeat(2, axis=0)


def member_perturbation(noise, cfg):
    """Direction noise -> each member's perturbation, as the model's hook: LowRank for a matrix
    (the sign on A; E_i is never built), Full for a vector."""
    return {name: lm.LowRank(to_members(nz[0], cfg), to_members(nz[1], cfg, signed=False),
                             perturb_shift(cfg))
            if isinstance(nz, tuple) else lm.Full(to_members(nz, cfg), perturb_shift(cfg, False))
            for name, nz in noise.items()}

# -----------------------------------------------------------------------------
# estimator (H.2): every member's fitness, and each direction's signal


def population_fitness(params, mcfg, tokens, hidden, noise, cfg, first):
    """Integer log-likelihood of each member's window, member_chunk members at a time.
    tokens (n, T + 1), hidden (L, n, D): members first, first + 1, ... (first even)."""
    per = MEMBERS_PER_DIRECTION[cfg.sampling]
    xp = lm.backend_of(tokens)
    n = tokens.shape[0]
    chunk = cfg.member_chunk or n
    fit, new_hidden = [], []
    for i in range(0, n, chunk):
        rows = slice(i, min(n, i + chunk))
        ks = slice((first + rows.start) // per, (first + rows.stop) // per)  # their directions
        pert = member_perturbation({name: noise(name, ks) for name in params}, cfg)
        f, h = lm.population_logprob(params, mcfg, tokens[rows], hidden[:, rows], pert,
                                     cfg.time_chunk)
        fit.append(f)
        new_hidden.append(h)
    return xp.concatenate(fit), xp.concatenate(new_hidden, axis=1)     # (n,), (L, n, D)


SIGNAL_RMS = {"sign": 1, "zscore": 16}   # the rms of F under each signal


def direction_signal(fitness, cfg):
    """F_k, all the update sees, from a fitness difference d_k in integers, so that every
    process and backend agrees. Antithetic: d_k = f(member 2k) - f(member 2k+1) (H.2).
    Independent (a departure): d_k = G f_k - (the sum of f over k's group), G times member
    k's lead over its group's mean, the G members that share k's window. F_k = sign(d_k) in
    {-1, 0, 1} (H.2), or by default (zscore, a departure) d_k scaled to rms 16 and rounded,
    round(16 d_k / rms(d)) in [-127, 127]: the size of the difference, not only its sign."""
    xp = lm.backend_of(fitness)
    if cfg.sampling == "antithetic":
        d = fitness[0::2] - fitness[1::2]                                 # (P,) int64
    else:
        groups = fitness.reshape(-1, cfg.group_size)                      # (N / G, G)
        d = (cfg.group_size * groups - groups.sum(axis=1, keepdims=True)).reshape(-1)  # (P,)
    if cfg.signal == "sign":
        return xp.sign(d).astype(np.int8)
    rms = max(1, math.isqrt(int((d * d).sum()) // len(d)))               # integer rms of d
    return xp.clip((32 * d + rms) // (2 * rms), -127, 127).astype(xp.int16)  # round half up

# -----------------------------------------------------------------------------
# update (H.3): Z = sum_k F_k E_k, then the paper's +-1 step or the sgd step


REFERENCE_STEP = 2048 * 100   # member-tokens in one step of the paper's int8 LM runs (nano-egg)
FRACTION_BITS = 16   # sgd: each weight keeps W_q16 - 2^16 W in [-2^15, 2^15) as int32
# sgd: Z times the multiplier (<= lr 2^36 / std(Z)) stays below 2^63 for lr <= 64 while a
# step has fewer than 2^27 directions (x rank)
MAX_LR = 64


def alpha_schedule(t, cfg, seq_len):
    """alpha_t = 1 / (1 + 0.015 t) (H.3), t counted in the paper's steps of 2048 x 100
    member-tokens (departure): after M = t N T member-tokens, 1 / (1 + alpha_decay M / 204800)."""
    member_tokens = t * cfg.population * seq_len
    return 1.0 / (1.0 + cfg.alpha_decay * member_tokens / REFERENCE_STEP)


def accumulate_z(F, noise, name, cfg):
    """Z = sum_k F_k E_k for one parameter without building any E_k (H.2, §4.2): a matrix's
    (diag(F) A)^T B as one GEMM in float64, exact because every partial sum is an integer
    below P r 127 69^2 < 2^53 -> (m, n) int64; a vector's sum_k F_k a_k b_k -> (d,)."""
    xp = lm.backend_of(F)
    nz = noise(name, slice(0, len(F)))
    if not isinstance(nz, tuple):
        return (F[:, None].astype(xp.int64) * nz).sum(axis=0)             # (d,)
    A, B = nz
    m, n = A.shape[1], B.shape[1]
    FA = F[:, None, None].astype(xp.float64) * A                          # (P, m, r)
    FA_t = FA.transpose(1, 0, 2).reshape(m, -1)                           # (m, P r)
    B_t = B.transpose(1, 0, 2).reshape(n, -1).astype(xp.float64)          # (n, P r)
    return (FA_t @ B_t.T).astype(xp.int64)                                # (m, n): (FA)^T B


def z_std(shape, cfg):
    """Z's spread under random signs F: an entry of a_k b_k (two int8 normals of std 16) has
    std 256, and a rank-r matrix sums r of them, so std(Z) = 256 sqrt(P r) times F's rms."""
    r = cfg.rank if len(shape) == 2 else 1
    return SIGNAL_RMS[cfg.signal] * 256 * math.sqrt(n_directions(cfg) * r)


def z_threshold(alpha, std):
    """Move only where |Z| >= z_{1-alpha/2} std(Z): about a fraction alpha of the weights
    (H.3; the paper prints Phi^-1((1 - alpha)/2), a typo for Phi^-1(1 - alpha/2))."""
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2) if alpha < 1 else 0.0
    return int(math.floor(z * std))


def threshold_step(w, Z, threshold):
    """W <- I8(W + sign(Z) [|Z| >= threshold]): +-1 steps, no optimiser state (H.3)."""
    xp = lm.backend_of(Z)
    step = xp.sign(Z) * (xp.abs(Z) >= threshold)       # Z = 0 never moves (departure)
    return lm.sat8(lm.wide(w) + step.astype(xp.int32))


def sgd_step(w, fraction, Z, eta, std):
    """W_q16 <- W_q16 + 2^16 eta Z / std(Z), W = I8(round(W_q16 / 2^16)) (departure, above).

    fraction: W_q16 - 2^16 W, int32 of w's shape. A weight at +-127 drops the steps beyond it.
    Returns the new int8 weight and its new fraction."""
    xp = lm.backend_of(Z)
    # the multiplier 2^16 eta / std(Z) with 20 more bits, as one integer: every process and
    # backend adds the same integers
    scale = int(round(eta * 2 ** (FRACTION_BITS + 20) / std))
    acc = fraction + ((Z * scale) >> 20)                              # q16 weight change
    steps = (acc + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS       # round half up
    new_fraction = (acc - (steps << FRACTION_BITS)).astype(xp.int32)
    steps = xp.clip(steps, -254, 254).astype(xp.int32)                # no int32 wrap
    return lm.sat8(lm.wide(w) + steps), new_fraction


def update(params, state, F, noise, alpha, cfg):
    """H.3 for every parameter, each on its own (on the CPU the threads of lm.set_threads take
    them in turn, one Z alive per thread). Returns the new params, the new state (the sgd
    update's fractions) and the fraction of the weights that moved."""
    def one(name):                                     # -> (new weight, new fraction or None)
        w, Z = params[name], accumulate_z(F, noise, name, cfg)            # Z int64, w's shape
        if cfg.update == "sgd":
            return sgd_step(w, state["fraction." + name], Z, cfg.lr * alpha, z_std(w.shape, cfg))
        return threshold_step(w, Z, z_threshold(alpha, z_std(w.shape, cfg))), None
    new, new_state = dict(params), dict(state)
    moved, total = 0, 0
    for name, (w, fraction) in zip(params, lm.thread_map(one, params)):
        new[name] = w
        if fraction is not None:
            new_state["fraction." + name] = fraction
        moved = moved + (w != params[name]).sum()
        total += w.size
    return new, new_state, moved / total

# -----------------------------------------------------------------------------
# the method interface train.py calls (README "The method interface")


@dataclass
class Config:
    population: int = 1024    # N members per step, even (with antithetic sampling: pairs 2k, 2k+1)
    group_size: int = 16      # members sharing one data window; even, divides population
    sigma_shift: int = 3      # sigma_hat: perturbation scale sigma = 2^-sigma_hat (H.1)
    sigma_shift_vectors: int = 4  # sigma_hat of the vectors (norm gains, biases): half the matrices' sigma
    alpha_decay: float = 0.015  # alpha = 1 / (1 + alpha_decay M / 204800) after M member-tokens
    # update: threshold runs H.3 as is (about a fraction alpha_t of the weights moves by +-1);
    # sgd (the default, a departure) keeps a 16-bit fraction per weight, the optimiser state
    # App. H.3 leaves to future work, and takes the float algorithm's SGD step on it:
    #     W_q16 <- W_q16 + 2^16 lr alpha_t Z / std(Z),   W = I8(round(W_q16 / 2^16))
    # and the forward reads the int8 W
    update: Literal["sgd", "threshold"] = "sgd"  # sgd: lr alpha Z / std(Z) into 16-bit fractions; threshold: H.3
    lr: float = 1.0           # sgd: int8 weight units per standard deviation of Z, times alpha
    rank: int = 1             # r: rank of each member's perturbation of each matrix
    noise_reuse: int = 1      # steps sharing one noise draw (0: the same noise every step)
    time_chunk: int = 25      # bytes per forward chunk (memory bound; results do not depend on it)
    member_chunk: int = 0     # members per chunk, even, 0 = all (bounds a step's memory)
    # signal: sign is H.2's; zscore (the default, a departure) keeps the size of a direction's
    # fitness difference, F_k = round(16 d_k / rms(d)), d_k = f+ - f-, and std(Z) grows by F's
    # rms, 16
    signal: Literal["zscore", "sign"] = "zscore"  # F_k: the z-scored difference, or sign (H.2)
    # sampling: antithetic is the paper's mirrored pairs (+E_k, -E_k; with --group_size 2);
    # independent (the default, a departure) gives every member its own E_i and scores it
    # against the mean fitness of its group, the G members that share its data window:
    # F_i from d_i = G f_i - sum_{j in group} f_j, N directions a step instead of N/2, with the
    # same forward, update and std(Z) over P = N directions
    sampling: Literal["antithetic", "independent"] = "independent"  # +-E_k pairs, or E_k per member


# the training loss step() reports, named by what it is (log.csv column, progress line)
LOSS = "population_bpb"   # the members' mean bits/byte on the step's windows

# train.py's run on each device: its own settings (steps, seq_len, ...) and this method's
# tuning of Config: population, alpha_decay and member_chunk, sized for its cost per member.
# The CPU run takes about 2 minutes on 2 cores; results/notebook.md has the runs behind both.
DEFAULTS = {"cpu": dict(steps=1100, seq_len=25, eval_every=100, log_every=20,
                        population=1024, alpha_decay=0.015, member_chunk=0),
            "cuda": dict(steps=1000, seq_len=100, eval_every=25, log_every=5,
                         population=8192, alpha_decay=0.015, member_chunk=4096)}


def check_config(cfg):
    if cfg.population < 2 or cfg.population % 2:
        raise ValueError(f"population must be even and >= 2, got {cfg.population}")
    if cfg.group_size < 2 or cfg.group_size % 2 or cfg.population % cfg.group_size:
        raise ValueError(f"group_size must be even and divide population {cfg.population}, "
                         f"got {cfg.group_size}")
    if cfg.time_chunk < 1:
        raise ValueError(f"time_chunk must be >= 1, got {cfg.time_chunk}")
    if cfg.sampling not in MEMBERS_PER_DIRECTION:
        raise ValueError(f"sampling must be antithetic or independent, got {cfg.sampling!r}")
    if n_directions(cfg) * cfg.rank >= 2**27 or cfg.rank < 1:
        raise ValueError(f"rank must be >= 1 and directions x rank below 2^27, got {cfg.rank}")
    if cfg.member_chunk < 0 or cfg.member_chunk % 2:
        raise ValueError(f"member_chunk must be even and >= 0, got {cfg.member_chunk}")
    if min(cfg.sigma_shift, cfg.sigma_shift_vectors, cfg.noise_reuse) < 0:
        raise ValueError("sigma_shift, sigma_shift_vectors and noise_reuse must be >= 0")
    if cfg.alpha_decay < 0:
        raise ValueError(f"alpha_decay must be >= 0, got {cfg.alpha_decay}")
    if cfg.signal not in SIGNAL_RMS:
        raise ValueError(f"signal must be zscore or sign, got {cfg.signal!r}")
    if cfg.update not in ("sgd", "threshold"):
        raise ValueError(f"update must be sgd or threshold, got {cfg.update!r}")
    if not 0 < cfg.lr <= MAX_LR:
        raise ValueError(f"lr must be in (0, {MAX_LR}], got {cfg.lr}")


def check_split(cfg, n_processes):
    """Under mpirun every process evaluates whole groups (so whole antithetic pairs)."""
    if cfg.population % (n_processes * cfg.group_size):
        raise ValueError(f"population {cfg.population} does not split into whole groups of "
                         f"{cfg.group_size} over {n_processes} processes: use a multiple of "
                         f"{n_processes * cfg.group_size}")


def num_sequences(cfg):
    """Data rows per step: one window per group of members."""
    return cfg.population // cfg.group_size


# state entries that hold one row per member, and their member axis: under mpirun each process
# keeps its own members' rows and train.py joins them for a checkpoint
PER_MEMBER_STATE = {"hidden": 1}


def init(params, cfg, mcfg, seed, world):
    """Method state: each of this process's members' carried hidden state (truncated ES), and
    for the sgd update each weight's 16-bit fraction (the same in every process)."""
    check_config(cfg)
    xp = lm.backend_of(params["emb"])
    state = {"hidden": lm.zero_hidden(mcfg, cfg.population // world.size, xp)}  # (L, N/K, D)
    if cfg.update == "sgd":                                               # W_q16 - 2^16 W
        state.update({"fraction." + name: xp.zeros(w.shape, dtype=xp.int32)
                      for name, w in params.items()})
    return state


def step(params, state, batch, t, cfg, mcfg, seed, world):
    """One step on windows `batch` = (tokens (S, T + 1), reset). Under mpirun this
    process evaluates its share of the members; every process draws all the noise and applies
    the same update, so only the N fitness values travel (Salimans et al. 2017, Alg. 2)."""
    tokens, reset = batch
    xp = lm.backend_of(tokens)
    mine = world.share(cfg.population)                                    # members [a, b)
    hidden = lm.zero_hidden(mcfg, mine.stop - mine.start, xp) if reset else state["hidden"]
    member_tokens = tokens[xp.arange(mine.start, mine.stop) // cfg.group_size]  # (n, T + 1)
    noise = noise_source(seed, t, cfg, mcfg, xp)
    fitness, hidden = population_fitness(params, mcfg, member_tokens, hidden, noise, cfg,
                                         mine.start)
    fitness = world.allgather(fitness)                                    # (N,): all that travels
    F = direction_signal(fitness, cfg)                                    # (P,)
    T = tokens.shape[1] - 1
    alpha = alpha_schedule(t, cfg, T)
    params, state, moved = update(params, dict(state, hidden=hidden), F, noise, alpha, cfg)
    stats = {LOSS: -fitness.mean() / (lm.LOGP_UNIT * T),          # population bits/byte
             "member_tokens": cfg.population * T, "alpha": alpha,
             "moved": moved, "ties": (F == 0).mean()}              # device scalars: no sync
    return params, state, stats

# -----------------------------------------------------------------------------
# the toy problem, the float algorithm on it: what `python eggroll.py` runs


def regression_problem(seed=0, n_in=32, n_hidden=16, n_out=8, n_examples=256):
    """The toy: fit Y = X W1^T W2^T, a 2-layer linear map, from 256 examples."""
    rng = np.random.default_rng([seed, 1])
    X = rng.standard_normal((n_examples, n_in))
    W1 = rng.standard_normal((n_hidden, n_in)) / math.sqrt(n_in)
    W2 = rng.standard_normal((n_out, n_hidden)) / math.sqrt(n_hidden)
    return X, X @ W1.T @ W2.T


def regression_fitness(X, Y):
    """fitness_fn for float_es_gradient: minus each member's mean squared error."""
    def fitness(params, noise, sigma):
        h = X[None]                                                        # (1, E, n_in)
        for name in ("w1", "w2"):
            h = member_matmul(h, params[name], noise[name], sigma)         # (N, E, m)
        return -((h - Y[None]) ** 2).mean(axis=(1, 2))                     # (N,)
    return fitness


def regression_loss(params, X, Y):
    return float(((X @ params["w1"].T @ params["w2"].T - Y) ** 2).mean())


def demo(fcfg, log_every=50):
    """ES with Adam on the toy regression; returns the (first, last) mean squared error."""
    X, Y = regression_problem()
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((16, 32)) * 0.1, "w2": rng.standard_normal((8, 16)) * 0.1}
    moments = {k: {name: np.zeros_like(w) for name, w in params.items()} for k in ("m", "v")}
    first, start = regression_loss(params, X, Y), time.time()
    print(f"float EGGROLL, population {fcfg.population}: fit a 32 -> 16 -> 8 linear map "
          f"(MSE of predicting 0: {float((Y ** 2).mean()):.4f})")
    for t in range(fcfg.steps):
        if t % log_every == 0:
            print(f"step {t:4d} | mse {regression_loss(params, X, Y):.5f} | "
                  f"{time.time() - start:.1f}s")
        g, _ = float_es_gradient(regression_fitness(X, Y), params, 0, t, fcfg)
        ascent = {name: -v for name, v in g.items()}                       # Adam descends
        lm.adam_step(params, ascent, moments, t + 1, fcfg.lr * (1 - t / fcfg.steps))
    last = regression_loss(params, X, Y)
    print(f"step {fcfg.steps:4d} | mse {last:.5f} | {time.time() - start:.1f}s")
    return first, last


if __name__ == "__main__":
    demo(FloatConfig())
