r"""EGGROLL: evolution strategies with low-rank perturbations, on the integer LM.

Every member of a population perturbs every weight matrix M (m x n) by a rank-r matrix
E_i = A_i B_i^T / sqrt(r) instead of a full-rank one, so a member costs r (m + n) random numbers
instead of m n, the population forward is one shared GEMM plus a cheap per-member correction,
and the update is still (almost always) full rank.

Paper: B. Sarkar, M. Fellows, J. A. Duque et al., "Evolution Strategies at the Hyperscale"
(EGGROLL), arXiv 2511.16652 (v2, Feb 2026). Reference code: ESHyperscale/HyperscaleES (float),
ESHyperscale/nano-egg (the int8 language model).

Float EGGROLL (paper §4.1-4.2, used by the demo at the bottom):
    E_i = A_i B_i^T / sqrt(r),  A_i ~ N(0,1)^{m x r},  B_i ~ N(0,1)^{n x r}             (§4.1)
    u (M + sigma E_i)^T = u M^T + (sigma / sqrt(r)) (u B_i) A_i^T                        (§4.2)
    M <- M + (alpha / N) sum_i E_i f(M + sigma E_i),  1/sigma folded into alpha          (Eq. 6)
    sum_i z_i E_i = (diag(z) A)^T B: one GEMM, no E_i built                              (§4.2)
Integer EGGROLL (paper App. H; `train.py --method eggroll --update threshold` runs it as is):
    A_k in I8^{m x r}, B_k in I8^{n x r} ~ 16 N(0,1), pair k = member >> 1, odd member: -A   (H.1)
    member forward: I8((u W^T + ((u B) A^T >> (4 + sigma_hat))) / (16 isqrt n))          (H.1)
    vectors: noise a_k * b_k (two int8 normals) >> (4 + sigma_hat)                      (H.1)
    F_k = sign(f(member 2k) - f(member 2k+1)),  f = integer log-likelihood of the window (H.2)
    Z = sum_k F_k A_k B_k^T  in int32, as one GEMM (diag(F) A)^T B                       (H.2)
    W <- I8(W + sign(Z) [|Z| >= 256 z_{1-alpha_t/2} sqrt(P r)]),  alpha_t = 1/(1 + 0.015 t) (H.3)
The update train.py runs by default (--update sgd, a departure) replaces the last line by
    W_q16 <- W_q16 + 2^16 lr alpha_t Z / (256 sqrt(P r)),   W = I8(round(W_q16 / 2^16))
i.e. the SGD step of the float code path (HyperscaleES: lr sqrt(N) times the mean of F E) with
Z z-scored as in the threshold's test, on weights that keep a 16-bit fraction: the forward
still reads int8 weights, and the fraction (int32 per weight) is the optimiser state the paper
leaves to future work (App. H.3: no "momentum or other optimiser states").

Departures, each also marked at its line:
  * rank r > 1 in the integer scheme is a sum of r rank-1 terms (the reference code has rank 1
    only); the 1/sqrt(r) of the float scheme becomes the threshold's sqrt(P r);
  * the threshold is floor(256 z sqrt(P r)) (the reference code floors z and sqrt(P) first),
    and Z = 0 never moves a weight (the reference code moves it by -1 when the threshold is 0);
  * noise comes from a counter hash (int_rnn_lm.noise_int8), not a 1 GiB table;
  * alpha_t counts t in the paper's steps of 2048 x 100 member-tokens, not in ours (a CPU step
    is 1/16 of one): alpha = 1/(1 + 0.015 M / 204800) after M member-tokens;
  * optionally (--cooldown, off by default) alpha falls linearly to 0 over the last fraction of
    the run, as the learning rate of a warmup-stable-decay schedule does;
  * the default update keeps a 16-bit fraction per weight (above): the paper's +-1 step moves
    about a fraction alpha of the weights each step whatever the signal (README "Explanation
    of atypical hyperparameters" has the measurements that made it the default).

Run: $ python eggroll.py                          (float demo: low-rank ES on a regression)
     $ python train.py --method eggroll           (the integer LM on tinyshakespeare)
"""
import math
import statistics
import time
from dataclasses import dataclass

import numpy as np

import int_rnn_lm as lm

# -----------------------------------------------------------------------------
# config


@dataclass
class Config:
    population: int = 2048    # N members per step, even (antithetic pairs 2k, 2k+1)
    group_size: int = 2       # members sharing one data window; even, divides population
    sigma_shift: int = 4      # sigma_hat: perturbation scale sigma = 2^-sigma_hat (App. H.1)
    alpha_decay: float = 0.015  # alpha = 1 / (1 + alpha_decay M / 204800) after M member-tokens
    cooldown: float = 0.0     # alpha falls linearly to 0 over this last fraction of the run
    horizon: int = 400        # steps the schedule spans; train.py sets it to the run's steps
    update: str = "sgd"       # sgd: lr alpha Z / std(Z) into 16-bit fractions; threshold: App. H.3
    lr: float = 1.0           # sgd: int8 weight units per standard deviation of Z, times alpha
    rank: int = 1             # r: rank of each member's perturbation of each matrix
    noise_reuse: int = 1      # steps sharing one noise draw (0: the same noise every step)
    time_chunk: int = 25      # bytes per forward chunk (memory bound; results do not depend on it)
    member_chunk: int = 0     # members per forward chunk, 0 = all (memory bound on large N)


# the GPU default run: nearer the paper (population 2^13 and more; App. H.3 and §10 of the brief)
GPU_DEFAULTS = dict(population=8192, group_size=16, time_chunk=25, member_chunk=4096)
# train.py run settings. CPU: 25-byte windows (the state still carries across them) and 2048
# members; 400 steps are about 2 minutes on 2 cores (README "Explanation of atypical
# hyperparameters" has the measurements behind both).
RUN_DEFAULTS = {"cpu": dict(steps=400, seq_len=25, eval_every=40, log_every=10),
                "cuda": dict(steps=1000, seq_len=100, eval_every=25, log_every=5)}


def check_config(cfg):
    if cfg.population < 2 or cfg.population % 2:
        raise ValueError(f"population must be even and >= 2, got {cfg.population}")
    if cfg.group_size < 2 or cfg.group_size % 2 or cfg.population % cfg.group_size:
        raise ValueError(f"group_size must be even and divide population {cfg.population}, "
                         f"got {cfg.group_size}")
    for name in ("rank", "time_chunk"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.sigma_shift < 0 or cfg.noise_reuse < 0 or cfg.member_chunk < 0:
        raise ValueError("sigma_shift, noise_reuse and member_chunk must be >= 0")
    if cfg.alpha_decay < 0:
        raise ValueError(f"alpha_decay must be >= 0, got {cfg.alpha_decay}")
    if not 0 <= cfg.cooldown <= 1 or cfg.horizon < 1:
        raise ValueError(f"cooldown must be in [0, 1] and horizon >= 1, got {cfg.cooldown}, "
                         f"{cfg.horizon}")
    if cfg.update not in ("sgd", "threshold"):
        raise ValueError(f"update must be sgd or threshold, got {cfg.update!r}")
    if not 0 < cfg.lr <= MAX_LR:
        raise ValueError(f"lr must be in (0, {MAX_LR}], got {cfg.lr}")


def follows_horizon(cfg):
    """Whether a step depends on the run's length (alpha's cooldown): train.py then refuses
    to resume a run under another plan."""
    return cfg.cooldown > 0


def check_split(cfg, n_processes):
    """Under mpirun every rank evaluates whole groups (so whole antithetic pairs) of members."""
    if cfg.population % (n_processes * cfg.group_size):
        raise ValueError(f"population {cfg.population} does not split into whole groups of "
                         f"{cfg.group_size} over {n_processes} processes: use a multiple of "
                         f"{n_processes * cfg.group_size}")

# -----------------------------------------------------------------------------
# noise: rank-r int8 factors per matrix and pair, regenerated from (seed, epoch, param, pair)


def noise_epoch(t, cfg):
    return t // cfg.noise_reuse if cfg.noise_reuse > 0 else 0


def pair_noise(seed, t, cfg, pid, shape, xp):
    """One noise draw per antithetic pair k (App. H.1).

    Matrix (m, n): A (P, m, r) and B (P, n, r) int8 ~ 16 N(0,1), B first as in the reference.
    Vector (d,): a * b of two int8 normals, (P, d) int32 ~ 256 scale."""
    P = cfg.population // 2
    key = lm.stream_key(seed, noise_epoch(t, cfg), pid)
    pairs = xp.arange(P)
    if len(shape) == 2:
        m, n = shape
        v = lm.noise_int8(key, pairs, (m + n) * cfg.rank, xp)            # (P, (m + n) r)
        B = v[:, : n * cfg.rank].reshape(P, n, cfg.rank)                  # (P, n, r)
        A = v[:, n * cfg.rank:].reshape(P, m, cfg.rank)                   # (P, m, r)
        return A, B
    d = shape[0]
    v = lm.wide(lm.noise_int8(key, pairs, 2 * d, xp))                     # (P, 2d)
    return v[:, :d] * v[:, d:]                                            # (P, d) int32


def pairs_of(noise, members):
    """The pair noise of a slice of members that starts at an even member (whole pairs)."""
    pairs = slice(members.start // 2, members.stop // 2)
    return {name: tuple(f[pairs] for f in nz) if isinstance(nz, tuple) else nz[pairs]
            for name, nz in noise.items()}


def member_perturbation(noise, cfg):
    """Expand pair noise to members: member 2k gets +E_k, member 2k+1 gets -E_k (sign on A)."""
    shift = lm.FRAC_BITS + cfg.sigma_shift             # >> (4 + sigma_hat), App. H.1
    first = next(iter(noise.values()))
    n_members = 2 * len(first[0] if isinstance(first, tuple) else first)
    xp = lm.backend_of(first[0])
    sign = 1 - 2 * (xp.arange(n_members) % 2)          # (n,) +1, -1, +1, ...
    pert = {}
    for name, nz in noise.items():
        if isinstance(nz, tuple):
            A, B = nz
            A_members = xp.repeat(A, 2, axis=0) * sign[:, None, None].astype(xp.int8)
            pert[name] = lm.LowRank(A_members, xp.repeat(B, 2, axis=0), shift)  # (N, m, r)
        else:
            pert[name] = lm.Full(xp.repeat(nz, 2, axis=0) * sign[:, None].astype(xp.int32),
                                 shift)                                        # (N, d) int32
    return pert

# -----------------------------------------------------------------------------
# estimator: population fitness and the antithetic sign (App. H.2)


def population_fitness(params, mcfg, tokens, hidden, pert, cfg):
    """Integer log-likelihood of each member's window. tokens (N, T + 1), hidden (L, N, D)."""
    xp = lm.backend_of(tokens)
    N = tokens.shape[0]
    chunk = cfg.member_chunk or N
    fit, new_hidden = [], []
    for i in range(0, N, chunk):
        rows = slice(i, i + chunk)
        f, h = lm.sequence_logprob(params, mcfg, tokens[rows], hidden[:, rows],
                                   lm.select_members(pert, rows), cfg.time_chunk)
        fit.append(f)
        new_hidden.append(h)
    return xp.concatenate(fit), xp.concatenate(new_hidden, axis=1)     # (N,), (L, N, D)


def antithetic_sign(fitness):
    """F_k = sign(f+ - f-) in {-1, 0, 1} per pair (App. H.2): the only thing the update sees."""
    return lm.backend_of(fitness).sign(fitness[0::2] - fitness[1::2]).astype(np.int8)  # (P,)

# -----------------------------------------------------------------------------
# update: Z = sum_k F_k A_k B_k^T in int32, then a +-1 step where |Z| passes a z-test


REFERENCE_STEP = 2048 * 100   # member-tokens in one step of the paper's int8 LM runs (nano-egg)


def alpha_schedule(t, cfg, seq_len):
    """alpha_t = 1 / (1 + 0.015 t) of App. H.3, with t counted in the paper's steps of 2048 members x
    100 bytes rather than in ours (departure): after M = t N T member-tokens, alpha =
    1 / (1 + alpha_decay M / 204800). A step of 512 x 25 member-tokens is 1/16 of a reference
    step, so a per-step decay would freeze a long run 16x too early. With --cooldown c > 0 (off
    by default; departure) alpha then falls linearly to 0 over the last fraction c of the run."""
    member_tokens = t * cfg.population * seq_len
    alpha = 1.0 / (1.0 + cfg.alpha_decay * member_tokens / REFERENCE_STEP)
    decay_start = (1.0 - cfg.cooldown) * cfg.horizon
    if cfg.cooldown > 0 and t > decay_start:
        alpha *= max(0.0, (cfg.horizon - t) / (cfg.horizon - decay_start))
    return alpha


def z_threshold(alpha, n_pairs, rank):
    """Under random F, Z_ij ~ N(0, 256^2 P r): move only where |Z| >= 256 z_{1-alpha/2} sqrt(P r),
    so about a fraction alpha of the weights moves (App. H.3; the paper prints
    Phi^-1((1 - alpha)/2), a typo for Phi^-1(1 - alpha/2))."""
    if alpha <= 0:
        return 2**62                                    # nothing moves
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2) if alpha < 1 else 0.0
    return int(math.floor(256 * z * math.sqrt(n_pairs * rank)))


PAIR_CHUNK = 65536   # pairs per int32 GEMM: 65536 * 69^2 < 2^31, summed across chunks in int64


def accumulate_z(F, nz):
    """Z = sum_k F_k E_k without materialising any E_k (App. H.2).

    Matrix: (diag(F) A)^T B as one exact int8 GEMM per chunk of pairs -> (m, n) int64.
    Vector: sum_k F_k a_k b_k -> (d,) int64."""
    xp = lm.backend_of(F)
    if not isinstance(nz, tuple):
        return (F[:, None].astype(xp.int64) * nz).sum(axis=0)             # (d,)
    A, B = nz
    P, m, r = A.shape
    Z = 0
    for i in range(0, P, PAIR_CHUNK):
        FA = (F[i: i + PAIR_CHUNK, None, None] * A[i: i + PAIR_CHUNK])    # (p, m, r) int8
        FA_t = FA.transpose(1, 0, 2).reshape(m, -1)                       # (m, p r)
        B_t = B[i: i + PAIR_CHUNK].transpose(1, 0, 2).reshape(B.shape[1], -1)  # (n, p r)
        Z = Z + lm.int_matmul(FA_t, B_t).astype(xp.int64)                 # (m, n): (FA)^T B
    return Z


def integer_update(params, F, noise, threshold):
    """W <- I8(W + sign(Z) [|Z| >= threshold]): +-1 steps, no optimiser state (App. H.3).

    Returns the new params and the fraction of weights that moved (a 0-d device array)."""
    xp = lm.backend_of(F)
    moved, total = 0, 0
    new = dict(params)
    for name, nz in noise.items():
        Z = accumulate_z(F, nz)
        step = xp.sign(Z) * (xp.abs(Z) >= threshold)       # Z = 0 never moves (departure)
        new[name] = lm.sat8(lm.wide(params[name]) + step.astype(xp.int32))
        moved = moved + (new[name] != params[name]).sum()
        total += Z.size
    return new, moved / total


FRACTION_BITS = 16   # sgd: each weight keeps W_q16 - 2^16 W in [-2^15, 2^15) as int32
# sgd: Z (|Z| <= P r 127^2) times the q36 multiplier (<= lr 2^28 / sqrt(P r)) stays below 2^63
# for P r < 2^30 when lr <= 64
MAX_LR = 64


def sgd_update(params, fractions, F, noise, eta, n_pairs, rank):
    """W_q16 <- W_q16 + 2^16 eta Z / std(Z), W = I8(round(W_q16 / 2^16)) (departure, above).

    std(Z) = 256 sqrt(P r) under random F (256 sqrt(P) for a vector's a * b noise). fractions:
    name -> (m, n) or (d,) int32, W_q16 - 2^16 W. A weight at +-127 drops the steps beyond it.
    Returns the new params, the new fractions and the fraction of weights that moved."""
    xp = lm.backend_of(F)
    moved, total = 0, 0
    new, new_fractions = dict(params), {}
    for name, nz in noise.items():
        r = rank if isinstance(nz, tuple) else 1
        # the multiplier 2^16 eta / std(Z) with 20 more bits, as an integer: every rank and
        # backend adds the same integers
        scale = int(round(eta * 2 ** (FRACTION_BITS + 20) / (256 * math.sqrt(n_pairs * r))))
        Z = accumulate_z(F, nz)                                           # (m, n) int64
        acc = fractions[name] + ((Z * scale) >> 20)                       # q16 weight change
        steps = (acc + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS       # round half up
        new_fractions[name] = (acc - (steps << FRACTION_BITS)).astype(xp.int32)
        steps = xp.clip(steps, -254, 254).astype(xp.int32)                # no int32 wrap
        new[name] = lm.sat8(lm.wide(params[name]) + steps)
        moved = moved + (new[name] != params[name]).sum()
        total += Z.size
    return new, new_fractions, moved / total


def step_peak_bytes(mcfg, cfg, seq_len):
    """An upper bound of one step's device memory, to size member_chunk and time_chunk by
    arithmetic (README "GPU memory"): the pair noise as drawn and sliced (2x), its per-member
    copies for all N members (int8 factors, int32 vector noise, one transient copy), the carried
    states (old and new), one member chunk's forward (lm.forward_peak_bytes), the update's Z
    (int32 and int64) with one pair chunk's (diag(F) A, B) operands, and for the sgd update the
    weight fractions (int32, old and new) and its int64 temporaries (Z scale, acc, steps)."""
    shapes = list(lm.param_shapes(mcfg).values())
    factors = sum(cfg.rank * (s[0] + s[1]) for s in shapes if len(s) == 2)   # int8 per pair
    vectors = sum(4 * s[0] for s in shapes if len(s) == 1)                 # int32 per pair
    P, N = cfg.population // 2, cfg.population
    noise = 2 * P * (factors + vectors) + 2 * N * (factors + vectors)
    hidden = 2 * mcfg.n_layers * N * mcfg.d_model
    forward = lm.forward_peak_bytes(mcfg, (cfg.member_chunk or N) * min(cfg.time_chunk, seq_len))
    sgd = cfg.update == "sgd"
    update = max((12 + 28 * sgd) * s[0] * s[1] + 2 * min(P, PAIR_CHUNK) * cfg.rank * (s[0] + s[1])
                 for s in shapes if len(s) == 2)
    fractions = 8 * lm.count_params(mcfg) * sgd
    return noise + hidden + forward + update + fractions

# -----------------------------------------------------------------------------
# the method interface train.py calls (README "The method interface")


def num_sequences(cfg):
    """Data rows per step: one window per group of members."""
    return cfg.population // cfg.group_size


# state entries that hold one row per member, and their member axis: under mpirun each rank
# keeps its own members' rows and train.py joins them for a checkpoint
PER_MEMBER_STATE = {"hidden": 1}


def init(params, cfg, mcfg, seed, world=lm.ONE_PROCESS):
    """Method state: each of this rank's members' carried hidden state (truncated ES), and for
    the sgd update each weight's 16-bit fraction (the same on every rank)."""
    check_config(cfg)
    xp = lm.backend_of(params["emb"])
    n_mine = cfg.population // world.size
    state = {"hidden": lm.zero_hidden(mcfg, n_mine, xp)}                 # (L, N / K, D) int8
    if cfg.update == "sgd":                                               # W_q16 - 2^16 W
        state.update({"fraction." + name: xp.zeros(w.shape, dtype=xp.int32)
                      for name, w in params.items()})
    return state


def step(params, state, batch, t, cfg, mcfg, seed, world=lm.ONE_PROCESS):
    """One EGGROLL step on windows `batch` = (tokens (S, T + 1), reset). Under mpirun this rank
    evaluates its share of the members; every rank draws all the noise and applies the same
    update, so only the N fitness values travel (Salimans et al. 2017, Alg. 2)."""
    tokens, reset = batch
    xp = lm.backend_of(tokens)
    mine = world.share(cfg.population)                                    # members [a, b)
    n_mine = mine.stop - mine.start
    hidden = lm.zero_hidden(mcfg, n_mine, xp) if reset else state["hidden"]   # (L, n, D)
    member_tokens = tokens[xp.arange(mine.start, mine.stop) // cfg.group_size]  # (n, T + 1)
    noise = {name: pair_noise(seed, t, cfg, pid, shape, xp)
             for pid, (name, shape) in enumerate(lm.param_shapes(mcfg).items())}
    pert = member_perturbation(pairs_of(noise, mine), cfg)                # this rank's members
    fitness_mine, hidden = population_fitness(params, mcfg, member_tokens, hidden, pert, cfg)
    fitness = world.allgather(fitness_mine)                               # (N,): all that travels
    F = antithetic_sign(fitness)                                          # (P,)
    T = tokens.shape[1] - 1
    alpha = alpha_schedule(t, cfg, T)
    state = dict(state, hidden=hidden)
    if cfg.update == "sgd":
        fractions = {name: state["fraction." + name] for name in noise}
        params, fractions, frac = sgd_update(params, fractions, F, noise, cfg.lr * alpha,
                                             cfg.population // 2, cfg.rank)
        state.update({"fraction." + name: f for name, f in fractions.items()})
    else:
        threshold = z_threshold(alpha, cfg.population // 2, cfg.rank)
        params, frac = integer_update(params, F, noise, threshold)
    stats = {"loss": -fitness.mean() / (lm.LOGP_UNIT * T),          # population bits/byte
             "member_tokens": cfg.population * T, "alpha": alpha,
             "frac_updated": frac, "ties": (F == 0).mean()}        # device scalars: no sync
    if cfg.update == "threshold":
        stats["threshold"] = threshold
    return params, state, stats

# -----------------------------------------------------------------------------
# float EGGROLL (paper §4.1-4.2, Eq. 6) for the demo: low-rank ES on float matrices


@dataclass
class FloatConfig:
    population: int = 256     # N members (even)
    sigma: float = 0.05       # perturbation scale
    rank: int = 1             # r
    lr: float = 0.02          # Adam step size on the ES gradient estimate, decayed linearly to 0
    steps: int = 300          # demo length


def float_lowrank_noise(seed, t, pid, shape, n_pairs, rank, xp):
    """A (P, m, r), B (P, n, r) ~ N(0, 1), from a generator keyed by (seed, step, param id)."""
    m, n = shape
    rng = np.random.default_rng([seed, t, pid])
    return (xp.asarray(rng.standard_normal((n_pairs, m, rank))),
            xp.asarray(rng.standard_normal((n_pairs, n, rank))))


def float_es_gradient(fitness_fn, params, seed, t, fcfg, xp=np):
    """Low-rank ES gradient estimate (§4.1, Eq. 6 without the step size).

    fitness_fn(params, factors, sigma) -> (N,) fitness, where factors[name] = (A_members,
    B_members) and member i evaluates W + sigma A_i B_i^T / sqrt(r). Returns the estimate
    g = (1 / (N sigma)) sum_i z_i E_i with z the z-scored fitness, built as (diag(z) A)^T B."""
    P = fcfg.population // 2
    sign = 1.0 - 2.0 * (xp.arange(fcfg.population) % 2)                  # (N,) +1, -1, ...
    noise = {name: float_lowrank_noise(seed, t, pid, w.shape, P, fcfg.rank, xp)
             for pid, (name, w) in enumerate(params.items())}
    factors = {name: (xp.repeat(A, 2, 0) * sign[:, None, None], xp.repeat(B, 2, 0))
               for name, (A, B) in noise.items()}
    f = fitness_fn(params, factors, fcfg.sigma)                            # (N,)
    z = (f - f.mean()) / (f.std() + 1e-8)                                  # global z-score (§2.4)
    zp = z[0::2] - z[1::2]                                                 # pair weight (P,)
    scale = 1.0 / (fcfg.population * fcfg.sigma * math.sqrt(fcfg.rank))
    return {name: scale * xp.einsum("p,pmr,pnr->mn", zp, A, B)            # (diag(zp) A)^T B
            for name, (A, B) in noise.items()}, f


def adam_ascent(params, grads, moments, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step *up* the fitness gradient; moments: dict name -> (m, v)."""
    new = {}
    for name, g in grads.items():
        m, v = moments.get(name, (0.0, 0.0))
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        moments[name] = (m, v)
        m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
        new[name] = params[name] + lr * m_hat / (v_hat ** 0.5 + eps)
    return new

# -----------------------------------------------------------------------------
# demo: fit a 2-layer linear map Y = X W1^T W2^T from 256 examples with low-rank ES


def regression_problem(seed=0, n_in=32, n_hidden=16, n_out=8, n_examples=256):
    rng = np.random.default_rng([seed, 1])
    X = rng.standard_normal((n_examples, n_in))
    W1 = rng.standard_normal((n_hidden, n_in)) / math.sqrt(n_in)
    W2 = rng.standard_normal((n_out, n_hidden)) / math.sqrt(n_hidden)
    return X, X @ W1.T @ W2.T


def regression_fitness(X, Y):
    """fitness_fn for float_es_gradient: minus the MSE of each member, batched the EGGROLL way:
    x (W + sigma A B^T / sqrt r)^T = x W^T + (sigma / sqrt r) (x B) A^T, never forming A B^T."""
    def fitness(params, factors, sigma):
        h = None
        for name in ("w1", "w2"):
            A, B = factors[name]
            c = sigma / math.sqrt(A.shape[-1])
            x = X[None] if h is None else h                                # (N or 1, E, n)
            base = x @ params[name].T                                      # shared GEMM
            low = np.einsum("ben,bnr->ber", np.broadcast_to(x, (len(A),) + x.shape[1:]), B)
            h = base + c * np.einsum("ber,bmr->bem", low, A)               # (N, E, m)
        return -((h - Y[None]) ** 2).mean(axis=(1, 2))                     # (N,)
    return fitness


def regression_loss(params, X, Y):
    return float(((X @ params["w1"].T @ params["w2"].T - Y) ** 2).mean())


if __name__ == "__main__":
    fcfg = FloatConfig()
    X, Y = regression_problem()
    rng = np.random.default_rng(0)
    params = {"w1": rng.standard_normal((16, 32)) * 0.1, "w2": rng.standard_normal((8, 16)) * 0.1}
    fitness = regression_fitness(X, Y)
    moments = {}
    start = time.time()
    print(f"float EGGROLL, rank {fcfg.rank}, population {fcfg.population}: "
          f"fit a 32 -> 16 -> 8 linear map (MSE of predicting 0: {float((Y ** 2).mean()):.4f})")
    for t in range(fcfg.steps + 1):
        if t % 50 == 0:
            print(f"step {t:4d} | mse {regression_loss(params, X, Y):.5f} | "
                  f"{time.time() - start:.1f}s")
        if t < fcfg.steps:
            grads, _ = float_es_gradient(fitness, params, seed=0, t=t, fcfg=fcfg)
            params = adam_ascent(params, grads, moments, t, fcfg.lr * (1 - t / fcfg.steps))
