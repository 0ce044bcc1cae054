r"""OpenAI-style evolution strategies with full-rank Gaussian noise: the naive ES baseline.

Each step draws P noise vectors ε_i ~ N(0, I_d), evaluates the loss at θ + σε_i and θ − σε_i
(antithetic pairs, N = 2P members), turns the N losses into centred ranks and moves θ with Adam
along the rank-weighted sum of the noise. The noise is materialised: a full copy of the
parameters per pair, P·d floats per step, and each member's weights are another d floats.
That O(d) cost per member is what makes this the *naive* baseline.

Paper: T. Salimans, J. Ho, X. Chen, S. Sidor, I. Sutskever, "Evolution Strategies as a Scalable
Alternative to Reinforcement Learning", arXiv 1703.03864 (2017). The recipe (antithetic pairs,
centred ranks, Adam, L2) is that of the authors' code, openai/evolution-strategies-starter.

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

Departures from the paper and its code (each also marked at its line):
  * we minimise a loss instead of maximising a reward: F is built from L and Adam descends,
    so the member with the lowest loss gets rank −0.5.
  * the 1/(Nσ) of Eq. 2 is kept; the OpenAI code drops it, since Adam does not see the scale.
  * noise comes from counter-style keys (seed, step, pair, tensor), not from a shared 1 GB
    noise table, and is drawn on the host with NumPy, so CPU and GPU runs agree bit for bit.
  * members are evaluated one after another by one loss function on one batch: no workers,
    no observation normalisation, no virtual batch norm (nothing here needs them).
  * L2 defaults to 0 (the OpenAI humanoid config uses 0.005).

Memory: θ (d) + noise (P·d) + Adam moments (2d) + one member's weights (d).

Run: $ python es_naive.py      (XOR with a 2-8-1 MLP, d = 33, a few seconds on CPU)
"""
import math
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Config:
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
    demo(Config())
