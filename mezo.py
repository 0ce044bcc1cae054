r"""MeZO: train with two forward passes per step and never store the noise (float parameters).

MeZO is zeroth-order SGD. It estimates the gradient from the loss difference along one random
direction z and never keeps z: z is regenerated from a seed each time it is needed. Memory is
that of inference plus ONE buffer the size of the largest tensor (z is drawn one tensor at a
time); the rest of the per-step state is a seed and one scalar per direction. A trained model
is therefore fully described by its initial weights, the seed and the list of scalars.

Paper: S. Malladi, T. Gao, E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora,
"Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023, arXiv 2305.17333.

Equations (numbered here; the paper's name for each in brackets):
  (1) SPSA estimate on a batch B, z ~ N(0, I_d)                           [Definition 1]
          pg    = (L(θ + εz; B) − L(θ − εz; B)) / (2ε)     a scalar, = zᵀ∇L + O(ε²)
          g_hat = pg · z                                   E[g_hat] = ∇L + O(ε²)
  (2) n-SPSA: the average of n independent estimates                     [Algorithm 2]
          g_hat = (1/n) Σ_j pg_j · z_j
  (3) ZO-SGD step                                                        [Definition 2]
          θ ← θ − η · g_hat
  (4) variance for Gaussian z (exact when L is quadratic)                [cf. Lemma 2]
          E‖g_hat − ∇L‖² = (d + 1)/n · ‖∇L‖²,  so the stable step is η ≈ n/d · η_SGD (Eq. 3)

Algorithm 1 (MeZO), paraphrased; the "Alg. 1 line k" comments below refer to this listing:
  1  for each step: take a batch B and a seed s
  2    perturb(θ, s, +ε);   ℓ+ = L(θ; B)                           now θ + εz
  3    perturb(θ, s, −2ε);  ℓ− = L(θ; B)                           now θ − εz
  4    perturb(θ, s, +ε)                                            back to θ (up to rounding)
  5    pg = (ℓ+ − ℓ−) / (2ε)                                        the "projected gradient"
  6    for each tensor θ_k: regenerate z_k from s;  θ_k ← θ_k − η · pg · z_k
  perturb(θ, s, c):  for each tensor θ_k: regenerate z_k from s;  θ_k ← θ_k + c · z_k

Departures from the paper and its code (each also marked at its line):
  * z_k has its own generator keyed by (seed, step, direction, tensor) instead of one global
    torch seed walked through the tensors in order, so z_k does not depend on the other
    tensors' shapes; the per-step seed is derived from (cfg.seed, step), not drawn fresh.
  * n > 1 follows Algorithm 2 (n seeds, n scalars, n updates of step η/n), but all n
    directions use the same batch (Algorithm 2 draws a new batch per direction).
  * no weight decay and a constant learning rate (the paper's full-parameter runs use wd = 0
    and a constant schedule).
  * the logged loss is (ℓ+ + ℓ−)/2 = L(θ) + O(ε²); the paper's code logs ℓ+.
  * z is drawn on the host with NumPy, so CPU and GPU runs see bit-identical noise; on a GPU
    that costs one host-to-device copy per tensor.
  * perturb/restore (lines 2-4) is not bit-exact in floating point: each add rounds, so θ
    drifts by about an ulp per step in float32, far below the update (tests/test_mezo.py
    measures it). Keep the weights in float32 or float64, never float16.

Run: $ python mezo.py      (least-squares regression, d = 101, a few seconds on CPU)
"""
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Config:
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


def get_xp(a):
    """The array module (numpy or cupy) that owns array a; cupy is imported only for its arrays."""
    if isinstance(a, np.ndarray):
        return np
    import cupy  # reached only for a non-NumPy array, so cupy is installed
    return cupy.get_array_module(a)


def tensor_noise(p, seed, step, direction, tensor_id):
    """z_k ~ N(0, I) with the shape, dtype and device of tensor p; a pure function of its key."""
    rng = np.random.default_rng([seed, NOISE_STREAM, step, direction, tensor_id])
    z = rng.standard_normal(p.shape, dtype=p.dtype)  # on the host: CPU and GPU agree bit for bit
    return get_xp(p).asarray(z)  # on a GPU: one host-to-device copy of this tensor


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
    grads = {name: get_xp(p).zeros_like(p) for name, p in params.items()}
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


# --- demo ---

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
    demo(Config())
