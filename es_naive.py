r"""Naive (OpenAI-style) evolution strategies: every member perturbs every weight at full rank.

Each step draws P noise tensors ε_k, one per antithetic pair, evaluates the loss at θ + σε_k
and θ − σε_k (N = 2P members) and moves θ along the fitness-weighted sum of the noise. The
noise is full rank and materialised: every member holds its own copy of every perturbation,
d numbers for d parameters. That O(d) cost per member (EGGROLL's is O(r (m + n)) per matrix)
is what makes this the *naive* baseline; eggroll.py is the same method with low-rank noise, and
`diff es_naive.py eggroll.py` shows mainly the noise.

Paper: T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever, "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning", arXiv 1703.03864 (2017). The float recipe (antithetic
pairs, centred ranks, Adam, L2) is that of the authors' code, openai/evolution-strategies-starter.
The integer scheme is EGGROLL's (Sarkar et al., arXiv 2511.16652, App. H) with full-rank noise:
the paper's "naive ES" baseline.

Equations (numbered here; the source of each in brackets):
  (1) smoothed objective and its gradient                                 [§2]
          J_σ(θ) = E_ε[L(θ + σε)],     ∇J_σ(θ) = (1/σ) · E_ε[L(θ + σε) ε]
  (2) Monte-Carlo estimate over N members with fitness F_i                [Algorithm 1]
          g = 1/(Nσ) · Σ_i F_i ε_i
  (3) antithetic pairs: member 2i uses +ε_i, member 2i+1 uses −ε_i        [mirrored sampling]
          g = 1/(Nσ) · Σ_i (F_i+ − F_i−) ε_i
      With raw fitness F = L this is unbiased for ∇J_σ and equals n-SPSA (mezo.py) with
      n = P and ε = σ. For a quadratic ∇J_σ = ∇L, and E‖g − ∇L‖² = (d + 1)/P · ‖∇L‖².
  (4) fitness shaping, centred ranks over all N members                   [code: centered ranks]
          F_i = rank(L_i) / (N − 1) − 1/2  ∈ [−0.5, 0.5]
      Invariant to any increasing transform of L and robust to outliers, but biased: g no
      longer scales with ∇L, it only points the same way on average.
  (5) Adam (Kingma & Ba) on g + λθ, the L2 term added to the gradient     [code: optimizers.py]
Integer scheme (what `train.py --method es_naive` runs; EGGROLL App. H with E_k full rank):
  (6) E_k ∈ I8^{m x n} ~ 16 N(0, 1) for every matrix (I8^d for every vector), pair k =
      member >> 1, odd member: −E_k                                      [H.1, full rank]
  (7) member forward: I8((u W^T + ((u E_i^T) >> σ̂)) / (16 isqrt n)),  rows and vectors
      I8(w + (E_i >> σ̂)). E_i ~ 16 N(0,1) >> σ̂ is the relative perturbation σ = 2^-σ̂ of the
      16-scale weights, as EGGROLL's (u (A B^T)^T) >> (4 + σ̂) with A B^T ~ 256 N(0,1)   [H.1]
  (8) F_k = sign(f(member 2k) − f(member 2k+1)),  f = integer log-likelihood   [H.2; Eq. 3]
  (9) Z = Σ_k F_k E_k in int64, summed over the materialised noise          [H.2; Eq. 3]
  (10) W ← I8(W + sign(Z) [|Z| ≥ ⌊s z_{1−α_t/2} √P⌋]),  α_t = 1/(1 + 0.015 t)      [H.3]
       with t counted in member-tokens: 0.24 per 204,800, i.e. 0.015 per CPU step of 128 x 100
      s = the per-entry std of E_k: 16 for int8 normals, 256 for a materialised A B^T.
      Under random F, Z_ij ~ N(0, s² P), so about a fraction α_t of the weights moves by ±1.
  (11) --update sgd, as eggroll.py's: W_q16 ← W_q16 + 2^16 lr α_t Z / (s √P), the int8 weight
       its rounding (a 16-bit fraction per weight kept as optimiser state)   [departure]

Departures, each also marked at its line:
  * float part: we minimise a loss instead of maximising a reward: F is built from L and Adam
    descends, so the member with the lowest loss gets rank −0.5; the 1/(Nσ) of Eq. 2 is kept
    (the OpenAI code drops it, since Adam does not see the scale); L2 defaults to 0 (OpenAI's
    humanoid config: 0.005); members are evaluated one after another, no workers, no
    observation normalisation, no virtual batch norm.
  * noise comes from counter-based keys, not from a shared 1 GB noise table: (seed, step, pair,
    tensor) through NumPy generators in the float part, int_rnn_lm.noise_int8 in the integer
    part. Either way a chunk of pairs can be drawn, dropped, and drawn again for the update.
  * integer part: the threshold scales with the noise's per-entry std s (Eq. 10), so the same
    code runs EGGROLL's materialised noise bit for bit (tests/test_es_naive.py).

Memory per member (memory_per_member_bytes): d int8 noise numbers, 82,240 bytes at D = 64, L = 1,
against EGGROLL's r (m + n) per matrix plus 2 per vector entry, 2,432 bytes at rank 1. The
population is evaluated member_chunk members at a time, so about 1.5 member_chunk d int8 noise
numbers exist at once (the pairs' draws and the members' signed copies), plus the float64 copy
of one matrix's noise per member that the GEMV makes; the update draws each chunk again.

Run: $ python es_naive.py                  (float demo: XOR with a 2-8-1 MLP)
     $ python train.py --method es_naive   (the integer LM: 250 steps, about 2 min on 2 cores)
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
    population: int = 128     # N members per step, even (antithetic pairs 2k, 2k+1)
    group_size: int = 2       # members sharing one data window; even, divides population
    sigma_shift: int = 4      # sigma_hat: perturbation scale sigma = 2^-sigma_hat (Eq. 7)
    alpha_decay: float = 0.24   # alpha = 1 / (1 + alpha_decay M / 204800) after M member-tokens
    cooldown: float = 0.0     # alpha falls linearly to 0 over this last fraction of the run
    horizon: int = 250        # steps the schedule spans; train.py sets it to the run's steps
    update: str = "threshold"  # threshold: Eq. 10; sgd: lr alpha Z / std(Z) into 16-bit fractions
    lr: float = 1.0           # sgd: int8 weight units per standard deviation of Z, times alpha
    noise_reuse: int = 1      # steps sharing one noise draw (0: the same noise every step)
    time_chunk: int = 25      # bytes per forward chunk (memory bound; results do not depend on it)
    member_chunk: int = 64    # members per forward chunk, even, 0 = all: bounds the noise held


# the GPU default run (D = 256, L = 2: d = 1.7 M, so 128 members hold 218 MB of int8 noise)
GPU_DEFAULTS = dict(population=512, group_size=2, time_chunk=25, member_chunk=128)
# alpha_decay 0.24 is 0.015 per step at the CPU default's 128 x 100 member-tokens per step: the
# schedule this baseline was tuned with (4.735 val bits/byte in 2 minutes); EGGROLL's 0.015 per
# member-token rate gave it 4.914 there (README "Explanation of atypical hyperparameters").
# train.py run settings. CPU: every member-token costs a per-member GEMV (22-30 k member-tokens/s
# on 2 cores), so 2 minutes buy ~3 M of them; 100-byte windows learned more per member-token
# than 25-byte ones (4.97 vs 5.18 val bits/byte after ~2 M at N = 32), and N = 128 slightly more
# than N = 64 (4.80 after 210 steps vs 4.83 after 400; 4.77 after 200 with seed 1).
# The cuda numbers are not timed (no GPU in this session).
RUN_DEFAULTS = {"cpu": dict(steps=250, seq_len=100, eval_every=25, log_every=10),
                "cuda": dict(steps=300, seq_len=100, eval_every=25, log_every=5)}


def check_config(cfg):
    if cfg.population < 2 or cfg.population % 2:
        raise ValueError(f"population must be even and >= 2, got {cfg.population}")
    if cfg.group_size < 2 or cfg.group_size % 2 or cfg.population % cfg.group_size:
        raise ValueError(f"group_size must be even and divide population {cfg.population}, "
                         f"got {cfg.group_size}")
    if cfg.member_chunk < 0 or cfg.member_chunk % 2:
        raise ValueError(f"member_chunk must be even and >= 0, got {cfg.member_chunk}")
    if cfg.time_chunk < 1:
        raise ValueError(f"time_chunk must be >= 1, got {cfg.time_chunk}")
    if cfg.sigma_shift < 0 or cfg.noise_reuse < 0:
        raise ValueError("sigma_shift and noise_reuse must be >= 0")
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
# noise: a full-rank int8 tensor per parameter and pair, regenerated from (seed, epoch, param, pair)


def noise_epoch(t, cfg):
    return t // cfg.noise_reuse if cfg.noise_reuse > 0 else 0


@dataclass
class NoiseSource:
    """Where the pair noise E_k comes from; the step never sees anything else of it.

    draw(pid, shape, pairs) -> (len(pairs), *shape) integer E_k for parameter number pid;
    shift: the right shift of E_k in the member forward (Eq. 7); std: E_k's per-entry std s,
    which sets the threshold (Eq. 10)."""
    draw: object
    shift: int
    std: float


def full_rank_source(seed, t, cfg, xp):
    """Eq. 6: E_k ~ 16 N(0, 1) int8, every entry its own draw. Row k of parameter pid is a pure
    function of (seed, epoch, pid, k), so any chunk of pairs can be drawn on its own."""
    def draw(pid, shape, pairs):
        key = lm.stream_key(seed, noise_epoch(t, cfg), pid)
        E = lm.noise_int8(key, pairs, math.prod(shape), xp)             # (p, m n) int8
        return E.reshape((len(pairs),) + tuple(shape))                   # (p, m, n) or (p, d)
    return NoiseSource(draw, cfg.sigma_shift, float(lm.Q_ONE))            # std 16: q4 normals


def chunk_noise(source, mcfg, pairs):
    """Every parameter's noise for the pairs `pairs`: {name: (p, *shape)}, p d numbers."""
    return {name: source.draw(pid, shape, pairs)
            for pid, (name, shape) in enumerate(lm.param_shapes(mcfg).items())}


def member_perturbation(noise, shift):
    """Expand pair noise to members: member 2k gets +E_k, member 2k+1 gets -E_k (Eq. 6).
    Each member holds its own full tensor: lm.Full, the batched per-member-weight forward."""
    pert = {}
    for name, E in noise.items():
        xp = lm.backend_of(E)
        sign = (1 - 2 * (xp.arange(2 * len(E)) % 2)).astype(E.dtype)       # (n,) +1, -1, ...
        members = xp.repeat(E, 2, axis=0) * sign.reshape((-1,) + (1,) * (E.ndim - 1))
        pert[name] = lm.Full(members, shift)       # |E| <= 69 (int8) or 69^2 (A B^T): no wrap
    return pert

# -----------------------------------------------------------------------------
# estimator: population fitness and the antithetic sign (Eq. 8)


def population_fitness(params, mcfg, tokens, hidden, source, cfg, first=0):
    """Integer log-likelihood of each member's window, member_chunk members at a time: each
    chunk's noise is drawn, used and dropped. tokens (n, T + 1), hidden (L, n, D) are members
    first, first + 1, ... (first even: whole pairs)."""
    xp = lm.backend_of(tokens)
    n = tokens.shape[0]
    chunk = cfg.member_chunk or n
    fit, new_hidden = [], []
    for i in range(0, n, chunk):
        rows = slice(i, i + chunk)
        pairs = xp.arange((first + i) // 2, (first + min(n, i + chunk)) // 2)
        noise = chunk_noise(source, mcfg, pairs)
        f, h = lm.sequence_logprob(params, mcfg, tokens[rows], hidden[:, rows],
                                   member_perturbation(noise, source.shift), cfg.time_chunk)
        fit.append(f)
        new_hidden.append(h)
    return xp.concatenate(fit), xp.concatenate(new_hidden, axis=1)     # (n,), (L, n, D)


def antithetic_sign(fitness):
    """F_k = sign(f+ - f-) in {-1, 0, 1} per pair (Eq. 8): the only thing the update sees."""
    return lm.backend_of(fitness).sign(fitness[0::2] - fitness[1::2]).astype(np.int8)  # (P,)

# -----------------------------------------------------------------------------
# update: Z = sum_k F_k E_k in int64, then a +-1 step where |Z| passes a z-test (Eq. 9-10)


REFERENCE_STEP = 2048 * 100   # member-tokens in one step of the paper's int8 LM runs (nano-egg)


def alpha_schedule(t, cfg, seq_len):
    """alpha_t = 1 / (1 + c t) of Eq. 10 counted in member-tokens, as in eggroll.py: after
    M = t N T member-tokens, alpha = 1 / (1 + alpha_decay M / 204800), so a longer run continues
    the shorter one's schedule. The default alpha_decay 0.24 is the per-step 0.015 this baseline
    was tuned with, at its CPU step of 128 x 100 member-tokens. With --cooldown c > 0 (off by
    default; departure, as eggroll.py) alpha then falls linearly to 0 over the last fraction c
    of the run."""
    member_tokens = t * cfg.population * seq_len
    alpha = 1.0 / (1.0 + cfg.alpha_decay * member_tokens / REFERENCE_STEP)
    decay_start = (1.0 - cfg.cooldown) * cfg.horizon
    if cfg.cooldown > 0 and t > decay_start:
        alpha *= max(0.0, (cfg.horizon - t) / (cfg.horizon - decay_start))
    return alpha


def z_threshold(alpha, n_pairs, noise_std):
    """Under random F, Z_ij ~ N(0, s^2 P): move only where |Z| >= s z_{1-alpha/2} sqrt(P), so
    about a fraction alpha of the weights moves (Eq. 10). s = 256 and rank 1 give EGGROLL's."""
    if alpha <= 0:
        return 2**62                                    # nothing moves
    z = statistics.NormalDist().inv_cdf(1 - alpha / 2) if alpha < 1 else 0.0
    return int(math.floor(noise_std * z * math.sqrt(n_pairs)))


def accumulate_z(F, source, mcfg, cfg):
    """Z = sum_k F_k E_k for every parameter (Eq. 9), drawing the noise again chunk by chunk:
    {name: shape-of-parameter int64}. The sum over the materialised E_k is the naive part."""
    xp = lm.backend_of(F)
    P = len(F)
    chunk = (cfg.member_chunk or cfg.population) // 2                      # pairs per chunk
    Z = {}
    for i in range(0, P, chunk):
        pairs = xp.arange(i, min(P, i + chunk))
        F64 = F[pairs].astype(xp.int64)                                    # (p,)
        for name, E in chunk_noise(source, mcfg, pairs).items():
            Z[name] = Z.get(name, 0) + xp.tensordot(F64, E.astype(xp.int64), axes=1)
    return Z


def integer_update(params, Z, threshold):
    """W <- I8(W + sign(Z) [|Z| >= threshold]): +-1 steps, no optimiser state (Eq. 10).

    Returns the new params and the fraction of weights that moved (a 0-d device array)."""
    xp = lm.backend_of(params["emb"])
    moved, total = 0, 0
    new = dict(params)
    for name, z in Z.items():
        step = xp.sign(z) * (xp.abs(z) >= threshold)       # Z = 0 never moves, as in eggroll.py
        new[name] = lm.sat8(lm.wide(params[name]) + step.astype(xp.int32))
        moved = moved + (new[name] != params[name]).sum()
        total += z.size
    return new, moved / total


FRACTION_BITS = 16   # sgd: each weight keeps W_q16 - 2^16 W in [-2^15, 2^15) as int32
# sgd: Z (|Z| <= P 69 s, s = 16 or 256) times the q36 multiplier (<= lr 2^36 / (s sqrt(P)))
# stays below 2^63 for P < 2^30 pairs when lr <= 64
MAX_LR = 64


def sgd_update(params, fractions, Z, eta, n_pairs, noise_std):
    """(11) W_q16 <- W_q16 + 2^16 eta Z / (s sqrt(P)), W = I8(round(W_q16 / 2^16)).

    fractions: name -> int32 W_q16 - 2^16 W. A weight at +-127 drops the steps beyond it.
    Returns the new params, the new fractions and the fraction of weights that moved."""
    xp = lm.backend_of(params["emb"])
    # the multiplier 2^16 eta / std(Z) with 20 more bits, as an integer (same on every rank)
    scale = int(round(eta * 2 ** (FRACTION_BITS + 20) / (noise_std * math.sqrt(n_pairs))))
    moved, total = 0, 0
    new, new_fractions = dict(params), {}
    for name, z in Z.items():
        acc = fractions[name] + ((z * scale) >> 20)                       # q16 weight change
        steps = (acc + (1 << (FRACTION_BITS - 1))) >> FRACTION_BITS       # round half up
        new_fractions[name] = (acc - (steps << FRACTION_BITS)).astype(xp.int32)
        steps = xp.clip(steps, -254, 254).astype(xp.int32)                # no int32 wrap
        new[name] = lm.sat8(lm.wide(params[name]) + steps)
        moved = moved + (new[name] != params[name]).sum()
        total += z.size
    return new, new_fractions, moved / total


def memory_per_member_bytes(mcfg, cfg, rank=1):
    """Perturbation bytes one member holds during the population forward, for bench.py/README.

    es_naive: its own int8 copy of all d noise numbers (Eq. 6), plus the float64 copy of one
    matrix's noise that int_rnn_lm.Full.matmul_delta makes for the BLAS GEMV (transient).
    eggroll: int8 factors A (m, r) and B (n, r) per matrix and a, b per vector entry (eggroll.py
    multiplies a b into int32 per pair; the member needs only the two int8 factors).
    D = 64, L = 1: es_naive 82,240 (+ 131,072 transient), eggroll 2,432 at rank 1 (34x less)."""
    shapes = lm.param_shapes(mcfg).values()
    matrices = [s for s in shapes if len(s) == 2]
    vector_entries = sum(s[0] for s in shapes if len(s) == 1)
    return {"es_naive": sum(math.prod(s) for s in shapes),                     # int8 noise
            "es_naive_float64_transient": 8 * max(math.prod(s) for s in matrices),
            "eggroll": sum(rank * (m + n) for m, n in matrices) + 2 * vector_entries,
            "member_chunk": cfg.member_chunk or cfg.population}

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
    """One naive-ES step on windows `batch` = (tokens (S, T + 1), reset), full-rank noise."""
    source = full_rank_source(seed, t, cfg, lm.backend_of(batch[0]))
    return step_with_noise(params, state, batch, t, cfg, mcfg, source, world)


def step_with_noise(params, state, batch, t, cfg, mcfg, source, world=lm.ONE_PROCESS):
    """One step with the noise from `source` (a NoiseSource): the test hands it EGGROLL's.
    Under mpirun this rank evaluates its share of the members and every rank redraws all the
    noise for the same update: only the N fitness values travel (Salimans et al. 2017, Alg. 2)."""
    tokens, reset = batch
    xp = lm.backend_of(tokens)
    mine = world.share(cfg.population)                                    # members [a, b)
    n_mine = mine.stop - mine.start
    hidden = lm.zero_hidden(mcfg, n_mine, xp) if reset else state["hidden"]   # (L, n, D)
    member_tokens = tokens[xp.arange(mine.start, mine.stop) // cfg.group_size]  # (n, T + 1)
    fitness_mine, hidden = population_fitness(params, mcfg, member_tokens, hidden, source, cfg,
                                              first=mine.start)
    fitness = world.allgather(fitness_mine)                               # (N,): all that travels
    F = antithetic_sign(fitness)                                          # (P,)
    T = tokens.shape[1] - 1
    alpha = alpha_schedule(t, cfg, T)
    state = dict(state, hidden=hidden)
    Z = accumulate_z(F, source, mcfg, cfg)
    if cfg.update == "sgd":
        fractions = {name: state["fraction." + name] for name in Z}
        params, fractions, frac = sgd_update(params, fractions, Z, cfg.lr * alpha,
                                             cfg.population // 2, source.std)
        state.update({"fraction." + name: f for name, f in fractions.items()})
    else:
        threshold = z_threshold(alpha, cfg.population // 2, source.std)
        params, frac = integer_update(params, Z, threshold)
    stats = {"loss": -fitness.mean() / (lm.LOGP_UNIT * T),          # population bits/byte
             "member_tokens": cfg.population * T, "alpha": alpha,
             "frac_updated": frac, "ties": (F == 0).mean()}        # device scalars: no sync
    if cfg.update == "threshold":
        stats["threshold"] = threshold
    return params, state, stats

# -----------------------------------------------------------------------------
# float OpenAI-ES (Eq. 1-5) for the demo: antithetic pairs, centred ranks, Adam


@dataclass
class FloatConfig:
    pairs: int = 32         # P antithetic pairs; population N = 2P (brief: 16-64 for tiny nets)
    sigma: float = 0.05     # σ of Eq. 1, noise std = smoothing radius (OpenAI humanoid: 0.02)
    lr: float = 0.03        # Adam step size of Eq. 5 (OpenAI: 0.01)
    beta1: float = 0.9      # Adam first-moment decay
    beta2: float = 0.999    # Adam second-moment decay
    adam_eps: float = 1e-8  # Adam denominator guard
    l2: float = 0.0         # λ of Eq. 5, L2 coefficient added to g (OpenAI humanoid: 0.005)
    shaping: str = "centered_rank"  # Eq. 4; "raw" uses F = L (unbiased, Eq. 3)
    seed: int = 0           # run seed: every ε derives from (seed, step, pair, tensor)


# --- noise ---
# Key layout [seed, stream, step, pair, tensor_id]. The stream tag sits right after the seed
# because NumPy pads short keys with zeros: default_rng([s]) and default_rng([s, 0, 0, 0]) are
# the same generator, so an untagged noise key (s, 0, 0, 0) would equal default_rng(s).
DATA_STREAM = 0   # the demo's data and initial weights
NOISE_STREAM = 1  # perturbation directions ε


def get_xp(a):
    """The array module (numpy or cupy) that owns array a; cupy is imported only for its arrays."""
    if isinstance(a, np.ndarray):
        return np
    import cupy  # reached only for a non-NumPy array, so cupy is installed
    return cupy.get_array_module(a)


def tensor_noise(p, seed, step, pair, tensor_id):
    """ε_i for one tensor: N(0, I), shape, dtype and device of p; a pure function of its key."""
    rng = np.random.default_rng([seed, NOISE_STREAM, step, pair, tensor_id])
    eps = rng.standard_normal(p.shape, dtype=p.dtype)  # on the host: CPU and GPU agree bit for bit
    return get_xp(p).asarray(eps)  # on a GPU: one host-to-device copy of this tensor


def sample_noise(params, cfg, step):
    """ε for all P pairs, materialised: {name: (P, *shape)}, P·d floats (the naive part)."""
    noise = {}
    for tensor_id, name in enumerate(sorted(params)):  # fixed order; tensor_id keys the noise
        p = params[name]
        noise[name] = get_xp(p).empty((cfg.pairs,) + p.shape, dtype=p.dtype)  # (P, *shape)
        for i in range(cfg.pairs):
            noise[name][i] = tensor_noise(p, cfg.seed, step, i, tensor_id)  # pair i: ±ε_i
    return noise


# --- estimator ---

def member_params(params, noise, pair, sign, sigma):
    """The weights θ ± σε_i of one member, as a fresh dict: d more floats."""
    return {name: p + (sign * sigma) * noise[name][pair] for name, p in params.items()}


def population_losses(loss_fn, params, noise, cfg):
    """L(θ + σε_i) and L(θ − σε_i) for every pair: a (P, 2) host array, column 1 = the minus side.

    loss_fn(params) -> float is the loss on this step's batch, the same batch for every member.
    """
    losses = np.empty((cfg.pairs, 2))  # (P, 2)
    for i in range(cfg.pairs):
        for col, sign in enumerate((+1.0, -1.0)):  # antithetic pair, Eq. 3
            member = member_params(params, noise, i, sign, cfg.sigma)
            losses[i, col] = float(loss_fn(member))  # note: a CPU-GPU sync point
    return losses


def centered_ranks(x):
    """Eq. 4: the ranks of all entries of x (0 = smallest) mapped to [−0.5, 0.5]; shape of x."""
    ranks = np.empty(x.size)
    ranks[np.argsort(x, axis=None)] = np.arange(x.size)  # ties: argsort order, as in OpenAI code
    return (ranks / (x.size - 1) - 0.5).reshape(x.shape)


def es_grad(losses, noise, cfg):
    """Eq. 2-4: g = 1/(Nσ) Σ_i (F_i+ − F_i−) ε_i from the (P, 2) losses and the noise.

    A pure function of its inputs. With cfg.shaping == "raw" (F = L) it is unbiased for ∇J_σ.
    """
    if cfg.shaping == "centered_rank":
        fitness = centered_ranks(losses)  # (P, 2), ranks over all N = 2P members jointly
    elif cfg.shaping == "raw":
        fitness = losses  # (P, 2)
    else:
        raise ValueError(f"unknown shaping {cfg.shaping!r}: use 'centered_rank' or 'raw'")
    n_members = 2 * cfg.pairs
    # Eq. 1-2 keep 1/σ; the OpenAI code drops it because Adam is invariant to the scale
    weights = (fitness[:, 0] - fitness[:, 1]) / (n_members * cfg.sigma)  # (P,), Eq. 3
    grads = {}
    for name, eps in noise.items():
        xp = get_xp(eps)
        w = xp.asarray(weights, dtype=eps.dtype)  # (P,)
        grads[name] = xp.tensordot(w, eps, axes=1)  # (P,) . (P, *shape) -> (*shape)
    return grads


def estimate_grad(loss_fn, params, cfg, step):
    """Sample the noise, evaluate the N members, return (g as {name: array}, losses (P, 2))."""
    noise = sample_noise(params, cfg, step)  # P·d floats
    losses = population_losses(loss_fn, params, noise, cfg)
    return es_grad(losses, noise, cfg), losses


# --- update ---

def init_state(params, cfg):
    """Adam's state: a step counter and two moment arrays per tensor, 2d floats in all."""
    return {
        "step": 0,
        "m": {name: get_xp(p).zeros_like(p) for name, p in params.items()},  # first moment
        "v": {name: get_xp(p).zeros_like(p) for name, p in params.items()},  # second moment
    }


def adam_update_(params, grads, state, cfg):
    """Eq. 5, in place: one Adam step down g + λθ. Returns ‖Δθ‖/‖θ‖ (OpenAI's UpdateRatio)."""
    t = state["step"] + 1
    # bias correction folded into the step size, as in the OpenAI code
    step_size = cfg.lr * math.sqrt(1 - cfg.beta2 ** t) / (1 - cfg.beta1 ** t)
    update_sq, param_sq = 0.0, 0.0
    for name, p in params.items():
        xp = get_xp(p)
        g = grads[name] + cfg.l2 * p  # L2 added to the gradient, not to the fitness
        m, v = state["m"][name], state["v"][name]
        m *= cfg.beta1
        m += (1 - cfg.beta1) * g
        v *= cfg.beta2
        v += (1 - cfg.beta2) * g * g
        delta = -step_size * m / (xp.sqrt(v) + cfg.adam_eps)  # minus: we descend the loss
        p += delta
        update_sq += float(xp.sum(delta * delta))  # note: a CPU-GPU sync point
        param_sq += float(xp.sum(p * p))
    return math.sqrt(update_sq / max(param_sq, 1e-30))


def train_step(loss_fn, params, state, cfg):
    """One ES step on one batch: N = 2P forward passes, then Adam; params change in place.

    Returns (params, state, stats); stats["loss"] is the mean member loss, an estimate of the
    smoothed objective J_σ(θ) that ES actually minimises.
    """
    step = state["step"]
    grads, losses = estimate_grad(loss_fn, params, cfg, step)
    ratio = adam_update_(params, grads, state, cfg)
    state["step"] = step + 1
    stats = {"loss": float(losses.mean()), "loss_std": float(losses.std()), "update_ratio": ratio}
    return params, state, stats


# --- demo ---

def make_xor():
    """The four XOR points: inputs (4, 2) and targets (4,), float32."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    return x, np.array([0, 1, 1, 0], dtype=np.float32)


def init_mlp(seed, d_hidden=8):
    """A 2-d_hidden-1 MLP with N(0, 1/fan_in) weights and zero biases, float32."""
    rng = np.random.default_rng([seed, DATA_STREAM])
    w1 = rng.standard_normal((2, d_hidden), dtype=np.float32) / math.sqrt(2)
    w2 = rng.standard_normal((d_hidden, 1), dtype=np.float32) / math.sqrt(d_hidden)
    b1, b2 = np.zeros(d_hidden, np.float32), np.zeros(1, np.float32)
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def xor_loss(params, x, y):
    """Binary cross-entropy (nats) of the tanh MLP with a sigmoid output."""
    xp = get_xp(x)
    h = xp.tanh(x @ params["w1"] + params["b1"])  # (4, d_hidden)
    logit = (h @ params["w2"] + params["b2"])[:, 0]  # (4,)
    return float(xp.mean(xp.logaddexp(0, logit) - y * logit))  # BCE written with logits


def demo(cfg, steps=300, log_every=50):
    """Train XOR (d = 33) with antithetic ES + centred ranks + Adam; returns (first, last) loss."""
    x, y = make_xor()
    params = init_mlp(cfg.seed)
    state = init_state(params, cfg)
    loss_fn = lambda p: xor_loss(p, x, y)  # noqa: E731 -- one batch: all four points
    first = loss_fn(params)
    d = sum(p.size for p in params.values())
    print(f"naive ES on XOR: d = {d}, N = {2 * cfg.pairs}, {cfg}")
    t0 = time.perf_counter()
    for step in range(steps):
        params, state, stats = train_step(loss_fn, params, state, cfg)
        if step % log_every == 0 or step == steps - 1:
            ms = 1e3 * (time.perf_counter() - t0) / (step + 1)
            print(f"step {step:04d}/{steps} | loss {loss_fn(params):.3e} "
                  f"| fit μ/σ {stats['loss']:.3e}/{stats['loss_std']:.1e} "
                  f"| upd/param {stats['update_ratio']:.1e} | {ms:.1f} ms/step")
    last = loss_fn(params)
    print(f"loss {first:.4f} -> {last:.3e} in {time.perf_counter() - t0:.1f} s")
    return first, last


if __name__ == "__main__":
    demo(FloatConfig())
