"""The integer LM: exact matmuls, saturation, perturbation hooks, fitness, noise, data, sampling.

Integer paths are compared *exactly* (array_equal) against an independent float64 reference:
every value in this model is an integer far below 2^53, so float64 with explicit floor and clip
computes the same numbers, in the byte-by-byte order of the paper's description."""
import math

import numpy as np
import pytest

import int_rnn_lm as lm
import train

# -----------------------------------------------------------------------------
# an independent reference model: float64, byte by byte, written from the paper's equations


def ref_i8(x):
    return np.clip(x, -127, 127)


def ref_linear(x, w, delta=0.0):
    n = w.shape[1]
    return ref_i8(np.floor((x @ w.T + delta) / (16 * math.isqrt(n))))


def ref_norm(u, w):
    mean_abs = np.clip(np.floor(np.abs(u).sum(-1, keepdims=True) / u.shape[-1]), 1, 127)
    return ref_i8(np.floor(u * w / mean_abs))


def ref_forward(params, cfg, tokens, hidden, noise=None):
    """float64 reference of the whole model, one byte at a time. noise (optional): {name: (E,
    shift)} with E (N, *shape) the materialised integer noise of every member: member i
    evaluates matmuls as u W^T + floor(u E_i^T / 2^shift), embedding rows and vectors as
    I8(w + floor(E_i / 2^shift)) (App. H.1), written here member by member."""
    if noise:
        rows = [ref_forward(params, cfg, tokens[i: i + 1], hidden[:, i: i + 1],
                            {k: (lm.to_numpy(E)[i], sh) for k, (E, sh) in noise.items()})
                for i in range(tokens.shape[0])] if noise and next(iter(
                    noise.values()))[0].ndim > len(lm.param_shapes(cfg)[next(iter(noise))]) \
            else None
        if rows is not None:
            return (np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows], 1))
    noise = noise or {}
    P = {k: lm.to_numpy(v).astype(np.float64) for k, v in params.items()}
    for k, (E, sh) in noise.items():
        if P[k].ndim == 1 or k == "emb":                         # one member's own weights
            P[k] = ref_i8(P[k] + np.floor(E.astype(np.float64) / 2 ** sh))

    def lin(x, k):                                              # the perturbed scaled matmul
        if k not in noise:
            return ref_linear(x, P[k])
        E, sh = noise[k]
        return ref_linear(x, P[k], np.floor(x @ E.astype(np.float64).T / 2 ** sh))
    s = lm.to_numpy(hidden).astype(np.float64).copy()          # (L, N, D)
    tokens = lm.to_numpy(tokens)
    out = []
    for t in range(tokens.shape[1]):
        y = P["emb"][tokens[:, t]]
        for i in range(cfg.n_layers):
            p = f"l{i}."
            u = ref_norm(y, P[p + "ln1"])
            f = ref_i8(lin(u, p + "w_f") + lin(s[i], p + "u_f") + P[p + "b_f"])
            f_hat = ref_i8(np.floor((f + 127) * s[i] / 256))
            h_hat = ref_i8(lin(u, p + "w_h") + lin(f_hat, p + "u_h") + P[p + "b_h"])
            s[i] = ref_i8(s[i] + np.floor((f + 127) * (h_hat - s[i]) / 256))
            y = ref_i8(y + s[i])
            if cfg.mlp_mult:                                    # --mlp_mult 0: the GRU only
                u = ref_norm(y, P[p + "ln2"])
                y = ref_i8(y + lin(lin(u, p + "mlp1"), p + "mlp2"))
        out.append(lin(ref_norm(y, P["ln_out"]), "head"))
    return np.stack(out, axis=1), s


def random_params(cfg, xp, seed, extreme=False):
    """Random int8 params; extreme=True draws every entry from {-127, 127} to provoke saturation."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in lm.param_shapes(cfg).items():
        if extreme:
            v = rng.choice([-127, 127], size=shape)
        else:
            v = rng.integers(-127, 128, size=shape)
        params[name] = xp.asarray(v.astype(np.int8))
    return params


def random_int8(rng, shape, extreme_fraction=0.2):
    v = rng.integers(-127, 128, size=shape)
    mask = rng.random(shape) < extreme_fraction
    v[mask] = rng.choice([-127, 127], size=int(mask.sum()))
    return v.astype(np.int8)

# -----------------------------------------------------------------------------
# integer matmul


@pytest.mark.parametrize("B,n,m", [(5, 7, 3), (4, 64, 64), (3, 1024, 8), (2, 1100, 5)])
def test_int_matmul_exact_vs_float64_reference(xp, B, n, m):
    """fast == float64 reference exactly, including n > 1040 (float64 path) and odd shapes."""
    rng = np.random.default_rng(B * n * m)
    x, w = random_int8(rng, (B, n)), random_int8(rng, (m, n))
    ref = (x.astype(np.float64) @ w.astype(np.float64).T).astype(np.int64)
    fast = lm.to_numpy(lm.int_matmul(xp.asarray(x), xp.asarray(w)))
    assert fast.dtype == np.int32
    np.testing.assert_array_equal(fast, ref)


def test_int_matmul_reference_loops_match_fast_path():
    rng = np.random.default_rng(1)
    x, w = random_int8(rng, (3, 13)), random_int8(rng, (6, 13))
    np.testing.assert_array_equal(lm.int_matmul_reference(x, w), lm.int_matmul(x, w))


def test_int_matmul_extremes_do_not_wrap(xp):
    """All +-127 at the largest MLP width (1024): sums of +-16.5M must come back exactly."""
    n = 1024
    x = xp.asarray(np.full((4, n), 127, np.int8))
    w = xp.asarray(np.stack([np.full(n, 127), np.full(n, -127),
                             np.tile([127, -127], n // 2), np.full(n, 1)]).astype(np.int8))
    got = lm.to_numpy(lm.int_matmul(x, w))
    np.testing.assert_array_equal(got[0], [n * 127 * 127, -n * 127 * 127, 0, n * 127])


def test_int_matmul_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="columns"):
        lm.int_matmul(np.zeros((2, 3), np.int8), np.zeros((4, 5), np.int8))

# -----------------------------------------------------------------------------
# saturation and the whole model against the float64 reference


def test_sat8_clips_and_never_produces_minus_128(xp):
    x = xp.asarray(np.array([-100000, -129, -128, -127, 0, 127, 128, 300, 2**31 - 1], np.int64))
    np.testing.assert_array_equal(lm.to_numpy(lm.sat8(x)),
                                  [-127, -127, -127, -127, 0, 127, 127, 127, 127])


def test_norm_guards_zero_divisor_and_saturates(xp):
    """sum|u| < D must divide by 1, not 0; u * w beyond int8 saturates."""
    u = xp.asarray(np.array([[1, 0, 0, 0] * 4, [127, -127] * 8]), dtype=xp.int32)
    w = xp.asarray(np.full(16, 127, np.int32))
    got = lm.to_numpy(lm.int_norm(u, w))
    np.testing.assert_array_equal(got[0], np.array([127, 0, 0, 0] * 4))   # 127 / max(1, 0)
    np.testing.assert_array_equal(got[1], np.array([127, -127] * 8))      # 16129 / 127 = 127


def test_norm_float32_division_is_exact_for_every_operand_pair(xp):
    """lm.int_norm itself (its float32 division) gives floor(u w / d) for every product u w of
    two int8 values and every divisor d the model can produce: rows of D = 128 whose first
    entry is u and the other 127 entries (weight 1) make sum|u| // D = d, with w a per-row
    weight. d in [1, 126] is reachable with any u; d = 127 (mean |u| 127) only with |u| = 127,
    so those rows are all the operand pairs the model can meet. Tolerance: none."""
    pairs = {}
    for u in range(-127, 128):                                   # one (u, w) per product
        for w in range(-127, 128):
            pairs.setdefault(u * w, (u, w))
    u0, w0 = (np.array(v) for v in zip(*pairs.values()))         # (P,) each
    checked = 0
    for d in range(1, 128):
        keep = np.abs(u0) == 127 if d == 127 else np.ones(len(u0), bool)
        u, w = u0[keep], w0[keep]
        fill = 128 * d - np.abs(u)                               # sum|u| = 128 d: d exactly
        rows = np.zeros((len(u), 128), np.int64)
        rows[:, 0] = u
        rows[:, 1:] = fill[:, None] // 127 + (np.arange(127) < (fill % 127)[:, None])
        assert (np.abs(rows[:, 1:]) <= 127).all() and (np.abs(rows).sum(1) // 128 == d).all()
        weights = np.ones((len(u), 128), np.int64)
        weights[:, 0] = w
        got = lm.to_numpy(lm.int_norm(xp.asarray(rows.astype(np.int32)),
                                      xp.asarray(weights.astype(np.int32))))[:, 0]
        np.testing.assert_array_equal(got, np.clip((u * w) // d, -127, 127), err_msg=f"d {d}")
        checked += len(u)
    assert checked == 126 * len(pairs) + int((np.abs(u0) == 127).sum())


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("d_model,n_layers,mlp_mult", [(16, 1, 4), (32, 2, 4), (16, 2, 2),
                                                       (32, 2, 0)])
def test_forward_matches_float64_reference_exactly(xp, d_model, n_layers, mlp_mult, extreme):
    """Layer-major integer forward == byte-by-byte float64 reference, logits and state, with
    random params and with every parameter at +-127 (saturation everywhere, nothing wraps);
    the MLP D -> 4D -> D, D -> 2D -> D and none."""
    cfg = lm.ModelConfig(d_model, n_layers, mlp_mult)
    params = random_params(cfg, xp, seed=d_model + n_layers, extreme=extreme)
    rng = np.random.default_rng(7)
    tokens = rng.integers(0, 256, size=(6, 9)).astype(np.uint8)
    hidden = random_int8(rng, (n_layers, 6, d_model), extreme_fraction=0.5)
    logits, h = lm.forward(params, cfg, xp.asarray(tokens), xp.asarray(hidden))
    ref_logits, ref_h = ref_forward(params, cfg, tokens, hidden)
    assert logits.dtype == xp.int8 and h.dtype == xp.int8
    np.testing.assert_array_equal(lm.to_numpy(logits), ref_logits)
    np.testing.assert_array_equal(lm.to_numpy(h), ref_h)
    if extreme:   # the extreme case must actually reach the rails somewhere
        assert np.abs(ref_logits).max() == 127


def test_gru_state_needs_no_saturation_and_the_int8_wrap_gives_the_same_state():
    """For every state s, candidate h' in [-127, 127] and gate g in [0, 254]: f' = (g s) >> 8 lies
    between 0 and s, and s + delta (delta = (g (h' - s)) >> 8, up to +-253, beyond int8) lies
    between s and h', so the paper's I8 on both never binds; and the reference code's int8
    arithmetic (delta cast to int8, then an int8 sum, both wrapping) gives the same state.
    Through the model code: a layer whose b_f, b_h force f = 127 (gate 254) and h' = -127 takes
    the state 127 to -126."""
    s = np.arange(-127, 128)[:, None, None]
    h = np.arange(-127, 128)[None, :, None]
    g = np.arange(0, 255)[None, None, :]
    f_hat = (g * s) >> 8
    assert (np.minimum(0, s) <= f_hat).all() and (f_hat <= np.maximum(0, s)).all()
    delta = (g * (h - s)) >> 8                                             # (255, 255, 255)
    new = s + delta
    assert (np.minimum(s, h) <= new).all() and (new <= np.maximum(s, h)).all()
    assert np.abs(delta).max() == 253                                      # beyond int8
    wrapped = (s.astype(np.int8) + delta.astype(np.int8)).astype(np.int8)  # wraps, twice
    np.testing.assert_array_equal(wrapped, new)
    cfg = lm.ModelConfig(16, 1)
    params = {k: np.zeros_like(v) for k, v in lm.init_params(cfg, seed=0).items()}
    params["l0.ln1"][:] = 16
    params["l0.b_f"][:], params["l0.b_h"][:] = 127, -127                 # f = 127, h' = -127
    u = lm.wide(np.zeros((1, 1, 16), np.int8))
    _, state = lm.gru_scan(params, "l0.", u, np.full((1, 16), 127, np.int8), None)
    np.testing.assert_array_equal(state, np.full((1, 16), -126))

@pytest.mark.parametrize("D,rank,shift,kind", [(16, 1, 8, "lowrank"), (64, 1, 7, "lowrank"),
                                              (64, 3, 4, "lowrank"), (16, 2, 8, "none"),
                                              (16, 2, 8, "full"), (64, 17, 8, "lowrank")])
def test_cpu_time_loop_equals_the_plain_gru_scan(D, rank, shift, kind):
    """gru_scan_cpu (the CPU's time loop: float32 GEMMs, in-place int32 steps) gives gru_scan's
    states bit for bit: saturating weights and factors, a carried state at the rails, per-member
    bias noise, small shifts (large deltas); naive ES's Full noise and rank 17 at D = 64 (an
    int64 matmul_delta) take gru_scan's own loop."""
    cfg = lm.ModelConfig(D, 1)
    params = random_params(cfg, np, seed=D + rank, extreme=D == 64 and rank == 3)
    n, T = 9, 13
    rng = np.random.default_rng(rank)
    pert = lowrank_perturbation(cfg, np, n, rank=rank, shift=shift, seed=shift)
    if kind == "full":
        pert["l0.u_h"] = lm.Full(pert["l0.u_h"].materialise(), shift)
    pert = None if kind == "none" else pert
    u = lm.wide(random_int8(rng, (n, T, D), extreme_fraction=0.3))
    s = random_int8(rng, (n, D), extreme_fraction=0.5)
    h_plain, s_plain = lm.gru_scan(params, "l0.", u, s, pert)
    h_cpu, s_cpu = lm.gru_scan_cpu(params, "l0.", u, s, pert)
    np.testing.assert_array_equal(h_cpu, h_plain)
    np.testing.assert_array_equal(s_cpu, s_plain)
    assert s_cpu.dtype == np.int8 and np.abs(h_plain).max() == 127   # the rails were reached


# -----------------------------------------------------------------------------
# perturbation hooks


def lowrank_perturbation(cfg, xp, n_members, rank, shift, seed):
    """Random low-rank factors for every matrix, full noise for every vector."""
    rng = np.random.default_rng(seed)
    pert = {}
    for name, shape in lm.param_shapes(cfg).items():
        if len(shape) == 2:
            m, n = shape
            pert[name] = lm.LowRank(xp.asarray(random_int8(rng, (n_members, m, rank))),
                                    xp.asarray(random_int8(rng, (n_members, n, rank))), shift)
        else:
            E = random_int8(rng, (n_members,) + shape).astype(np.int32) * 200
            pert[name] = lm.Full(xp.asarray(E), shift)
    return pert


def test_zero_noise_population_forward_equals_plain_forward(xp):
    cfg = lm.ModelConfig(32, 2)
    params = lm.init_params(cfg, seed=0, xp=xp)
    tokens = xp.asarray(np.random.default_rng(0).integers(0, 256, (4, 7)).astype(np.uint8))
    hidden = lm.zero_hidden(cfg, 4, xp)
    plain, h_plain = lm.forward(params, cfg, tokens, hidden)
    for kind in ("lowrank", "full"):
        pert = lowrank_perturbation(cfg, xp, 4, rank=1, shift=8, seed=1)
        for name, p in pert.items():
            if isinstance(p, lm.LowRank):
                pert[name] = (lm.LowRank(p.A * 0, p.B, 8) if kind == "lowrank"
                              else lm.Full(xp.zeros((4,) + params[name].shape, xp.int8), 8))
            else:
                pert[name] = lm.Full(p.E * 0, 8)
        pop, h_pop = lm.forward(params, cfg, tokens, hidden, pert)
        np.testing.assert_array_equal(lm.to_numpy(pop), lm.to_numpy(plain))
        np.testing.assert_array_equal(lm.to_numpy(h_pop), lm.to_numpy(h_plain))


@pytest.mark.parametrize("rank", [1, 3])
def test_lowrank_forward_equals_materialised_perturbation(xp, rank):
    """EGGROLL's (x B) A^T path == x (A B^T)^T with E materialised, bit for bit, whole model."""
    cfg = lm.ModelConfig(16, 2)
    params = lm.init_params(cfg, seed=1, xp=xp)
    n = 6
    pert = lowrank_perturbation(cfg, xp, n, rank=rank, shift=8, seed=rank)
    full = {k: (lm.Full(p.materialise(), p.shift) if isinstance(p, lm.LowRank) else p)
            for k, p in pert.items()}
    tokens = xp.asarray(np.random.default_rng(2).integers(0, 256, (n, 5)).astype(np.uint8))
    hidden = lm.zero_hidden(cfg, n, xp)
    a, ha = lm.forward(params, cfg, tokens, hidden, pert)
    b, hb = lm.forward(params, cfg, tokens, hidden, full)
    np.testing.assert_array_equal(lm.to_numpy(a), lm.to_numpy(b))
    np.testing.assert_array_equal(lm.to_numpy(ha), lm.to_numpy(hb))
    plain, _ = lm.forward(params, cfg, tokens, hidden)
    assert (lm.to_numpy(a) != lm.to_numpy(plain)).mean() > 0.05, "perturbation had no effect"


@pytest.mark.parametrize("kind", ["lowrank", "full"])
def test_perturbed_forward_equals_an_independent_reference(xp, kind):
    """The perturbed population forward (EGGROLL's LowRank hooks, naive ES's Full ones) equals
    ref_forward, which applies each member's materialised noise to its own copy of the
    weights byte by byte in float64 (no lm.linear / embed / vector_param): logits and state,
    bit for bit, with a carried state and some saturation."""
    cfg = lm.ModelConfig(16, 2)
    params = random_params(cfg, xp, seed=6)
    n = 4
    pert = lowrank_perturbation(cfg, xp, n, rank=2, shift=6, seed=7)
    if kind == "full":
        pert = {k: (lm.Full(p.materialise(), p.shift) if isinstance(p, lm.LowRank) else p)
                for k, p in pert.items()}
    noise = {k: (lm.to_numpy(p.materialise() if isinstance(p, lm.LowRank) else p.E), p.shift)
             for k, p in pert.items()}
    tokens = xp.asarray(np.random.default_rng(8).integers(0, 256, (n, 6)).astype(np.uint8))
    hidden = xp.asarray(np.random.default_rng(9).integers(-127, 128, (2, n, 16)).astype(np.int8))
    logits, h = lm.forward(params, cfg, tokens, hidden, pert)
    ref_logits, ref_h = ref_forward(params, cfg, tokens, hidden, noise)
    np.testing.assert_array_equal(lm.to_numpy(logits), ref_logits)
    np.testing.assert_array_equal(lm.to_numpy(h), ref_h)
    plain, _ = lm.forward(params, cfg, tokens, hidden)
    assert (lm.to_numpy(plain) != ref_logits).mean() > 0.05, "the noise had no effect"


@pytest.mark.parametrize("n,r", [(1048, 1), (1049, 1), (524, 2), (350, 3)])
def test_matmul_delta_at_the_int32_int64_switch(n, r):
    """LowRank.matmul_delta keeps int32 while n r 127^3 < 2^31 (n r <= 1048) and switches to
    int64 beyond: at n r = 1048, 1049 and 1050 with inputs at +-127 lined up so that the sum
    reaches n r 127^3 (beyond 2^31 on the int64 side, where int32 would wrap), its result
    equals the Python-int loop reference."""
    rng = np.random.default_rng(n + r)
    x = rng.choice([-127, 127], (1, 2, n)).astype(np.int32)
    A = rng.choice([-127, 127], (1, 3, r)).astype(np.int8)
    B = np.full((1, n, r), 127, np.int8) * np.sign(x[0, 0])[None, :, None].astype(np.int8)
    out = lm.LowRank(A, B, 4).matmul_delta(x)                           # (1, 2, 3)
    assert out.dtype == (np.int32 if n * r <= 1048 else np.int64)
    exact = [[sum(sum(int(x[0, t, k]) * int(B[0, k, q]) for k in range(n)) * int(A[0, j, q])
                  for q in range(r)) for j in range(3)] for t in range(2)]
    np.testing.assert_array_equal(out, np.array([[v >> 4 for v in row] for row in exact])[None])
    assert (max(abs(v) for row in exact for v in row) >= 2**31) == (n * r > 1048)


def test_lowrank_matmul_matches_loop_reference():
    """The written-out loop version == the vectorised accumulator for one member, extremes in."""
    rng = np.random.default_rng(4)
    n, m, r, shift = 24, 10, 2, 8
    x, w = random_int8(rng, (n,), 0.5), random_int8(rng, (m, n), 0.5)
    a, b = random_int8(rng, (m, r), 0.5), random_int8(rng, (n, r), 0.5)
    loop = np.array(lm.lowrank_matmul_reference(x, w, a, b, shift), dtype=np.int64)
    fast = (lm.int_matmul(x[None, None], w).astype(np.int64)
            + lm.LowRank(a[None], b[None], shift).matmul_delta(x[None, None]))[0, 0]
    np.testing.assert_array_equal(fast, loop)


def test_perturbed_members_are_independent():
    """Row i's output depends only on member i's noise: changing member 1 leaves member 0."""
    cfg = lm.ModelConfig(16, 1)
    params = lm.init_params(cfg, seed=2)
    pert = lowrank_perturbation(cfg, np, 2, rank=1, shift=8, seed=5)
    tokens = np.random.default_rng(3).integers(0, 256, (2, 6)).astype(np.uint8)
    a, _ = lm.forward(params, cfg, tokens, lm.zero_hidden(cfg, 2), pert)
    for p in pert.values():
        if isinstance(p, lm.LowRank):
            p.A[1] = -p.A[1]
    b, _ = lm.forward(params, cfg, tokens, lm.zero_hidden(cfg, 2), pert)
    np.testing.assert_array_equal(a[0], b[0])
    assert (a[1] != b[1]).any()

# -----------------------------------------------------------------------------
# log-likelihood


def ref_token_logprob(row, target):
    """The integer log-likelihood of one position in Python ints, from its definition (tables
    computed here with the math module): 16 (y_t - y_max) - LOG2(S), S = sum EXP2[y - y_max]."""
    y_max = max(row)
    S = sum(round(2 ** ((y - y_max) / 16 + 20)) for y in row)          # q20, in [2^20, 2^28]
    e = S.bit_length() - 1                                              # floor(log2 S)
    mant = S >> (e - 12)                                                # 13-bit mantissa
    log2_S = 256 * (e - 20) + round(256 * math.log2(mant / 4096))
    return 16 * (row[target] - y_max) - log2_S


def test_integer_logprob_equals_its_python_int_reference_and_the_exact_value(xp):
    """token_logprob == the Python-int reference exactly at 3 x 600 positions (soft, medium and
    saturated logits), and within 0.0025 bit of the exact float64 log2 p: the design's own
    error is the LOG2 table's rounding (<= 0.5/256 = 0.00195 bit) plus the 13-bit mantissa's
    truncation (<= log2(1 + 2^-12) = 0.00035 bit); a floor for a rint in a table would break
    the first check, a wrong shift the second."""
    rng = np.random.default_rng(5)
    for scale in (5, 40, 127):   # soft, medium and saturated logits
        logits = np.clip(rng.normal(0, scale, (20, 30, 256)), -127, 127).astype(np.int8)
        targets = rng.integers(0, 256, (20, 30)).astype(np.uint8)
        lp_int = lm.to_numpy(lm.token_logprob(xp.asarray(logits), xp.asarray(targets)))
        for idx in np.ndindex(targets.shape):
            assert int(lp_int[idx]) == ref_token_logprob(logits[idx].astype(int).tolist(),
                                                         int(targets[idx])), (scale, idx)
        ref = np.log2(np.exp2(logits / 16.0) / np.exp2(logits / 16.0).sum(-1, keepdims=True))
        ref_t = np.take_along_axis(ref, targets[..., None].astype(np.int64), -1)[..., 0]
        worst = float(np.abs(lp_int / lm.LOGP_UNIT - ref_t).max())   # `<` also fails on NaN
        assert worst < 0.0025, f"scale {scale}: worst token off by {worst:.5f} bit"
        mean_gap = abs(-lp_int.mean() / lm.LOGP_UNIT - lm.bits_per_byte(xp.asarray(logits),
                                                                         xp.asarray(targets)))
        assert mean_gap < 0.0025, f"scale {scale}: mean gap {mean_gap:.5f} bit"


def test_uniform_logits_give_8_bits():
    logits = np.zeros((2, 3, 256), np.int8)
    targets = np.array([[0, 1, 2], [253, 254, 255]], np.uint8)
    np.testing.assert_array_equal(lm.token_logprob(logits, targets), -8 * lm.LOGP_UNIT)
    assert lm.bits_per_byte(logits, targets) == pytest.approx(8.0, abs=1e-12)


def test_sequence_logprob_is_independent_of_time_chunking():
    cfg = lm.ModelConfig(16, 2)
    params = lm.init_params(cfg, seed=3)
    tokens = np.random.default_rng(6).integers(0, 256, (3, 21)).astype(np.uint8)
    h0 = lm.zero_hidden(cfg, 3)
    a, ha = lm.sequence_logprob(params, cfg, tokens, h0, time_chunk=20)
    b, hb = lm.sequence_logprob(params, cfg, tokens, h0, time_chunk=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ha, hb)
    logits, _ = lm.forward(params, cfg, tokens[:, :-1], h0)
    np.testing.assert_array_equal(a, lm.token_logprob(logits, tokens[:, 1:]).sum(1))


@pytest.mark.parametrize("threads,piece,time_piece",
                         [(1, 4, 9), (2, 256, 9), (2, 4, 3), (3, 256, 1), (7, 256, 9), (1, 512, 2)])
def test_sequence_logprob_is_independent_of_threads_and_pieces(threads, piece, time_piece,
                                                               monkeypatch):
    """Rows split into pieces of rows and bytes and over k CPU threads (uneven slices, low-rank
    and full perturbations, a carried state) give the integers of one forward over all rows
    and the whole window exactly."""
    monkeypatch.setattr(lm, "MIN_ROWS_PER_THREAD", 2)            # split even 15 rows
    monkeypatch.setattr(lm, "ROW_PIECE", piece)
    monkeypatch.setattr(lm, "TIME_PIECE", time_piece)
    cfg = lm.ModelConfig(16, 2)
    params = lm.init_params(cfg, seed=4)
    n = 15
    tokens = np.random.default_rng(7).integers(0, 256, (n, 11)).astype(np.uint8)
    h0 = np.random.default_rng(8).integers(-127, 128, (2, n, 16)).astype(np.int8)
    lowrank = lowrank_perturbation(cfg, np, n, rank=2, shift=8, seed=9)
    mixed = dict(lowrank, **{"l0.w_f": lm.Full(lowrank["l0.w_f"].materialise(), 8)})
    for pert in (lowrank, mixed, None):        # mixed: a full-rank E keeps its time chunks
        a, ha = lm.sequence_logprob(params, cfg, tokens, h0, pert, time_chunk=10)
        try:
            lm.set_threads(threads)
            b, hb = lm.population_logprob(params, cfg, tokens, h0, pert, time_chunk=4)
        finally:
            lm.set_threads(1)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ha, hb)


# -----------------------------------------------------------------------------
# counter-based noise


def test_noise_statistics_match_16_normal():
    v = lm.noise_int8(lm.stream_key(0, 1, 2), np.arange(256), 4096).astype(np.float64)
    assert abs(v.mean()) < 0.1, f"mean {v.mean():.3f} not ~0 (tolerance 0.1 = 0.006 sigma)"
    assert abs(v.std() - 16) < 0.25, f"std {v.std():.3f} not ~16 (tolerance 0.25)"
    assert np.abs(v).max() <= 69
    kurt = ((v - v.mean()) ** 4).mean() / v.var() ** 2
    assert abs(kurt - 3) < 0.1, f"kurtosis {kurt:.3f}, a normal has 3 (tolerance 0.1)"
    # rows and keys give different streams; the same (key, row) gives the same one
    assert (v[0] != v[1]).mean() > 0.9
    w = lm.noise_int8(lm.stream_key(0, 1, 3), np.arange(2), 4096)
    assert (w[0] != v[0]).mean() > 0.9
    again = lm.noise_int8(lm.stream_key(0, 1, 2), np.array([5, 0]), 4096)
    np.testing.assert_array_equal(again[1], v[0].astype(np.int8))
    np.testing.assert_array_equal(again[0], v[5].astype(np.int8))


@pytest.mark.parametrize("n_rows,size", [(2048, 640), (37, 1000), (5, 40_000), (3, 1), (0, 9)])
def test_blocked_cpu_noise_equals_the_plain_noise(n_rows, size):
    """noise_int8's in-place blocks (CPU) give noise_int8_plain's numbers bit for bit: blocks
    that end mid-population, a row longer than a block, one number, no rows."""
    key = lm.stream_key(9, 8, 7)
    rows = np.arange(n_rows) * 3 + 11                       # ids need not start at 0
    a, b = lm.noise_int8(key, rows, size), lm.noise_int8_plain(key, rows, size)
    assert a.shape == b.shape == (n_rows, size) and a.dtype == b.dtype == np.int8
    np.testing.assert_array_equal(a, b)


def test_noise_is_identical_on_numpy_and_cupy(cupy_or_skip):
    cp = cupy_or_skip
    key = lm.stream_key(123, 45, 6)
    a = lm.noise_int8(key, np.arange(17), 1001, np)
    b = lm.noise_int8(key, np.arange(17), 1001, cp)
    np.testing.assert_array_equal(a, cp.asnumpy(b))


def test_inverse_normal_table_equals_an_independent_inverse_of_erf():
    """NORMAL_Q4[u] = round(16 Phi^-1((u + 0.5) / 2^16)), checked at 2,049 entries against
    Phi^-1 by bisection on math.erf (not statistics.NormalDist, which builds the table), and
    monotone over all 65,536."""
    def phi_inv(p):
        lo, hi = -10.0, 10.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p else (lo, mid)
        return (lo + hi) / 2
    for u in list(range(0, 65536, 32)) + [65535]:
        want = round(16 * phi_inv((u + 0.5) / 65536))
        assert int(lm.NORMAL_Q4[u]) == want, (u, int(lm.NORMAL_Q4[u]), want)
    assert (np.diff(lm.NORMAL_Q4.astype(np.int32)) >= 0).all()

# -----------------------------------------------------------------------------
# determinism


def test_same_seed_same_params_and_logits(xp):
    cfg = lm.ModelConfig(32, 2)
    p1, p2, p3 = (lm.init_params(cfg, seed=s, xp=xp) for s in (7, 7, 8))
    tokens = xp.asarray(np.arange(40, dtype=np.uint8).reshape(2, 20))
    l1, _ = lm.forward(p1, cfg, tokens, lm.zero_hidden(cfg, 2, xp))
    l2, _ = lm.forward(p2, cfg, tokens, lm.zero_hidden(cfg, 2, xp))
    for k in p1:
        np.testing.assert_array_equal(lm.to_numpy(p1[k]), lm.to_numpy(p2[k]))
    np.testing.assert_array_equal(lm.to_numpy(l1), lm.to_numpy(l2))
    assert (lm.to_numpy(p1["emb"]) != lm.to_numpy(p3["emb"])).mean() > 0.9


@pytest.mark.parametrize("D,L,k", [(64, 1, 4), (256, 2, 4), (32, 3, 2), (64, 1, 0), (16, 2, 1)])
def test_parameter_count_and_names_follow_the_mlp_width(D, L, k):
    """513 D + L (3 D + 4 D^2 + [k > 0] (D + 2 k D^2)) int8 parameters, counted here from the
    model's definition; without the MLP no block has ln2, mlp1 or mlp2."""
    cfg = lm.ModelConfig(D, L, k)
    shapes = lm.param_shapes(cfg)
    assert lm.count_params(cfg) == 513 * D + L * (3 * D + 4 * D * D + (k > 0) * (D + 2 * k * D * D))
    assert all((shapes.get(f"l{i}.mlp1"), shapes.get(f"l{i}.mlp2"), shapes.get(f"l{i}.ln2"))
               == (((k * D, D), (D, k * D), (D,)) if k else (None, None, None)) for i in range(L))
    if (D, L, k) == (64, 1, 4):
        assert lm.count_params(cfg) == 82_240                    # the README's CPU model
    with pytest.raises(ValueError, match="mlp_mult must be >= 0"):
        lm.check_model_config(lm.ModelConfig(D, L, -1))


def test_init_matches_paper_scheme():
    cfg = lm.ModelConfig(64, 2)
    p = lm.init_params(cfg, seed=0)
    assert lm.count_params(cfg) == 513 * 64 + 2 * (4 * 64 + 12 * 64 * 64) == 131_648
    w = p["l1.mlp1"].astype(np.float64)
    assert abs(w.std() - 16) < 0.3 and abs(w.mean()) < 0.3, (w.mean(), w.std())
    assert (p["l0.ln1"] == 16).all() and (p["ln_out"] == 16).all() and (p["l0.b_f"] == 0).all()

# -----------------------------------------------------------------------------
# data


def test_split_is_last_ten_percent():
    data = np.arange(1000, dtype=np.int64).astype(np.uint8)
    train_bytes, val = train.split_train_val(data)
    assert len(train_bytes) == 900 and len(val) == 100
    np.testing.assert_array_equal(np.concatenate([train_bytes, val]), data)


def test_train_stream_continues_rows_and_flags_reset():
    data = (np.arange(10_000) % 251).astype(np.uint8)
    stream = train.TrainStream(data, n_rows=4, seq_len=10)
    b0, r0 = stream.batch(0)
    b1, r1 = stream.batch(1)
    assert r0 and not r1
    np.testing.assert_array_equal(b0[:, -1], b1[:, 0])   # window t+1 starts where t ended
    np.testing.assert_array_equal(b0[1, 0], data[stream.row_len])
    bK, rK = stream.batch(stream.windows_per_row)
    assert rK
    np.testing.assert_array_equal(bK, b0)


def test_val_windows_are_fixed_and_inside_val():
    val = np.arange(300, dtype=np.int64).astype(np.uint8)
    w = train.val_windows(val, 5, 20)
    assert w.shape == (5, 21)
    np.testing.assert_array_equal(w, train.val_windows(val, 5, 20))
    assert w[0, 0] == val[0] and w[-1, -1] == val[-1]   # first and last byte of val


def test_ngram_baselines_on_shipped_text():
    """The baselines the README quotes: unigram 4.83 and bigram 3.59 bits/byte on the val split."""
    train_bytes, val = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))
    b = train.ngram_baselines(train_bytes, val)
    assert b["uniform"] == 8.0
    assert abs(b["unigram"] - 4.83) < 0.005, b
    assert abs(b["bigram"] - 3.59) < 0.005, b


def test_ngram_baselines_on_a_periodic_text():
    """'ab' repeated: unigram is 1 bit; the bigram predicts every byte (almost 0 bits)."""
    data = np.frombuffer(b"ab" * 500, np.uint8)
    b = train.ngram_baselines(*train.split_train_val(data))
    assert abs(b["unigram"] - 1.0) < 0.01 and b["bigram"] < 0.05, b


def test_bad_data_gives_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found: .*nope.txt"):
        train.load_bytes(str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.*empty.txt"):
        train.load_bytes(str(empty))
    short = tmp_path / "short.txt"
    short.write_bytes(b"x" * 100)
    need = train.min_data_bytes(8, 32, 64)
    with pytest.raises(ValueError, match=f"short.txt has 100 bytes; need at least {need}"):
        train.check_data_size(train.load_bytes(str(short)), str(short), 8, 32, 64)
    # and the bound is tight enough: a file of exactly `need` bytes works end to end
    data = np.zeros(need, np.uint8)
    train.check_data_size(data, "ok", 8, 32, 64)
    train_bytes, val = train.split_train_val(data)
    train.TrainStream(train_bytes, 8, 32).batch(0)
    train.val_windows(val, 4, 64)

# -----------------------------------------------------------------------------
# sampling


def test_sampling_follows_the_model_and_is_deterministic():
    """A model rigged to always predict 'a' samples 'a'; same seed -> same text."""
    cfg = lm.ModelConfig(16, 1)
    params = {k: np.zeros_like(v) for k, v in lm.init_params(cfg, seed=0).items()}
    params["emb"][:] = 16
    params["ln_out"][:] = 16
    params["head"][:] = -127
    params["head"][ord("a")] = 127
    predict = lm.lm_predict(params, cfg)
    text = lm.sample(predict, lm.zero_hidden(cfg, 1), b"xyz", 20, seed=0, temperature=0.05)
    assert text == b"a" * 20
    p2 = lm.init_params(cfg, seed=1)
    s1 = lm.sample(lm.lm_predict(p2, cfg), lm.zero_hidden(cfg, 1), b"ab", 30, seed=4)
    s2 = lm.sample(lm.lm_predict(p2, cfg), lm.zero_hidden(cfg, 1), b"ab", 30, seed=4)
    s3 = lm.sample(lm.lm_predict(p2, cfg), lm.zero_hidden(cfg, 1), b"ab", 30, seed=5)
    assert s1 == s2 and s1 != s3
