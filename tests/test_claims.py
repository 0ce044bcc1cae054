"""results/claims.py, the EGGROLL paper's claims (python results/claims.py NAME), at tiny sizes:
what each claim measures is what the code it names computes, and each prints its table and
draws its figure."""
import os
import sys

import numpy as np
import pytest

import bench
import eggroll
import int_rnn_lm as lm
import train
from conftest import ONE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "results"))

import claims  # noqa: E402

# -----------------------------------------------------------------------------
# the model of the 1 B-parameter claim: init_params in row blocks


@pytest.mark.parametrize("max_draw", [1, 100, 1 << 22])
def test_init_params_in_rows_equals_init_params(max_draw):
    """The row-block init gives init_params' parameters bit for bit (names, order, dtypes)."""
    cfg = lm.ModelConfig(48, 2)
    want, got = lm.init_params(cfg, 7), claims.init_params_in_rows(cfg, 7, max_draw=max_draw)
    assert len(want) > 0 and list(got) == list(want), list(got)
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k


def test_init_params_in_rows_holds_one_block_at_a_time():
    """Its peak is the int8 parameters plus one float64 block (x3 for the rounding's
    temporaries), far below init_params' whole-matrix float64 copies."""
    cfg, max_draw = lm.ModelConfig(256, 1), 1 << 14
    n_params = lm.count_params(cfg)
    rows_peak = bench.traced_peak_bytes(
        lambda: claims.init_params_in_rows(cfg, 0, max_draw=max_draw))
    whole_peak = bench.traced_peak_bytes(lambda: lm.init_params(cfg, 0))
    assert rows_peak <= n_params + 3 * 8 * max_draw + 2**16, rows_peak
    assert whole_peak > 8 * 4 * 256 * 256, whole_peak     # one float64 MLP matrix at least

# -----------------------------------------------------------------------------
# the claims at tiny sizes


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """The claims' figures go to a temporary results/ folder."""
    monkeypatch.setattr(claims, "RESULTS", str(tmp_path))
    return tmp_path


def count_noise_drawn(method, fn):
    """fn() once, counting the random numbers lm.noise_int8 draws during it."""
    drawn = []
    real = lm.noise_int8

    def counting(key, rows, size, xp=np):
        drawn.append(len(rows) * size)
        return real(key, rows, size, xp)
    lm.noise_int8 = counting
    try:
        fn()
    finally:
        lm.noise_int8 = real
    return sum(drawn)


@pytest.mark.parametrize("name", ["eggroll", "es_naive"])
def test_profile_step_times_a_step_and_counts_its_noise(name):
    """profile_step at D = 16: a step slower than its forward, phases inside the step, and the
    noise count it reports is what the step draws (EGGROLL r (m + n) per matrix and pair, once;
    naive ES m n per pair, for the forward and again for the update)."""
    row = claims.profile_step(name, 16, 1, 8, 3, 1)
    ph = row["phases"]
    assert row["step_s"] > 0 and row["inference_s"] > 0 and row["step_peak_bytes"] > 0
    assert ph["forward"] + ph["update"] <= row["step_s"]
    assert ph["gemm"] <= ph["forward"] + ph["update"] and ph["member_matmul"] <= ph["forward"]
    method, mcfg = claims.STEP_METHODS[name], lm.ModelConfig(16, 1)
    cfg = method.Config(population=8, group_size=2, time_chunk=3, update="threshold",
                        sampling="antithetic")
    params = lm.init_params(mcfg, 0)
    state = method.init(params, cfg, mcfg, 0, ONE)
    tokens = np.random.default_rng(0).integers(0, 256, (4, 4)).astype(np.uint8)
    drawn = count_noise_drawn(method, lambda: method.step(params, state, (tokens, True), 0, cfg,
                                                          mcfg, 0, ONE))
    assert drawn == row["noise_numbers"] == claims.noise_numbers_per_step(name, mcfg, 8)


def test_profile_step_reports_running_out_of_memory():
    """Under a memory cap a size that does not fit comes back as a MemoryError row (the
    process is not killed), and one that fits comes back timed."""
    small = claims.profile_step_capped(4 * 2**30, "eggroll", 16, 1, 4, 2, 1, None)
    assert "error" not in small and small["step_s"] > 0
    capped = claims.profile_step_capped(300 * 2**20, "es_naive", 512, 1, 32, 4, 1, None)
    assert capped["error"].startswith("MemoryError"), capped


def test_claim_billion_at_a_tiny_size(results_dir, capsys):
    """The sweep runs both methods in capped processes, prints its table and summary, draws
    the figure; EGGROLL draws far fewer numbers than naive ES at every size."""
    rows = claims.claim_billion(sizes=[(16, 1), (32, 1)], population=4, seq_len=2,
                                cap_bytes=4 * 2**30, least_memory_naive=(16, 1, 2))
    assert [(r["method"], r["D"], r["member_chunk"]) for r in rows] == [
        ("eggroll", 16, 0), ("es_naive", 16, 64), ("eggroll", 32, 0), ("es_naive", 32, 64),
        ("es_naive", 16, 2)]
    for egg, naive in zip(rows[0::2], rows[1::2]):
        assert egg["params"] == naive["params"] and egg["noise_numbers"] < naive["noise_numbers"]
    out = capsys.readouterr().out
    assert f"EGGROLL at {lm.count_params(lm.ModelConfig(32, 1)):,} parameters" in out
    assert (results_dir / "claim_billion.png").stat().st_size > 10_000


def test_closed_form_updates_agree_with_monte_carlo():
    """Both fitnesses, Gaussian and rank 1 and 2: the Monte Carlo mean lies within about one
    standard error of the closed form as a whole matrix (under 2), and within 4 along the bias;
    the rank-r bias is resolved (> 4 standard errors) at r = 1."""
    G, sigma = claims.rank_problem(m=4, n=3, sigma=0.3, seed=1)
    gauss = {k: claims.expected_update(k, G, sigma) for k in claims.FITNESS}
    for r in (None, 1, 2):
        want = {k: claims.expected_update(k, G, sigma, r) for k in claims.FITNESS}
        bias = {k: claims.expected_update(k, G, sigma, r or 1) - gauss[k] for k in claims.FITNESS}
        unit = {k: b / np.linalg.norm(b) for k, b in bias.items()}
        got = claims.monte_carlo_update(G, sigma, r, 200_000, 0, unit)
        assert sorted(got) == sorted(claims.FITNESS), sorted(got)
        for k, g in got.items():
            assert np.linalg.norm(g["mean"] - want[k]) < 2 * g["se"], (k, r)
            along = g["along"] - float((gauss[k] * unit[k]).sum())
            exact = float(((want[k] - gauss[k]) * unit[k]).sum())
            assert abs(along - exact) < 4 * g["along_se"], (k, r, along, exact)
            if r == 1:
                assert exact > 4 * g["along_se"]


def test_rank_convergence_is_one_over_r(results_dir):
    """The expectation's error falls as 1/r: the cubic's exactly (slope -1 to 1e-9, error x r
    constant), the exponential's within 0.02 of slope -1 for r >= 8; as r grows the rank-r
    update becomes the Gaussian one; the finite-population error is far above the bias."""
    res = claims.claim_rank_convergence(ranks=(1, 8, 16, 32, 64), mc_ranks=(1,), samples=20_000,
                                        population=64, finite_ranks=(1,), draws=2, fit_from=8)
    assert abs(res["slope"]["cubic"] + 1) < 1e-9
    assert abs(res["slope"]["exp"] + 1) < 0.02
    assert np.allclose(np.array(res["exact"]["cubic"]) * [1, 8, 16, 32, 64],
                       res["exact"]["cubic"][0])
    G, sigma = claims.rank_problem(**claims.RANK_PROBLEM)
    for k in claims.FITNESS:
        assert claims.relative_error(claims.expected_update(k, G, sigma, 10**7),
                                     claims.expected_update(k, G, sigma)) < 1e-7
        assert res["finite"][k, 1] > 2 * res["exact"][k][0]
    assert (results_dir / "claim_rank_convergence.png").stat().st_size > 10_000


def test_step_update_is_what_eggroll_step_computes(monkeypatch):
    """claims.step_update's F and Z are the ones eggroll.step's update receives."""
    mcfg, N, r, T = lm.ModelConfig(16, 1), 8, 2, 5
    F, Z = claims.step_update(mcfg, N, r, T)
    seen = {}
    real = eggroll.accumulate_z

    def spy(F_step, noise, name, cfg):
        seen[name] = (F_step, real(F_step, noise, name, cfg))
        return seen[name][1]
    monkeypatch.setattr(eggroll, "accumulate_z", spy)
    cfg = eggroll.Config(population=N, rank=r, time_chunk=T, group_size=2, sampling="antithetic")
    params = lm.init_params(mcfg, 0)
    data = train.split_train_val(train.load_bytes(train.DEFAULT_DATA))[0]
    batch = train.TrainStream(data, eggroll.num_sequences(cfg), T).batch(0)
    eggroll.step(params, eggroll.init(params, cfg, mcfg, 0, ONE), batch, 0, cfg, mcfg, 0, ONE)
    assert Z and sorted(Z) == sorted(k for k, (_, z) in seen.items() if z.ndim == 2), sorted(Z)
    for name, z in Z.items():
        assert np.array_equal(seen[name][0], F) and np.array_equal(seen[name][1], z), name


def test_full_rank_update_from_rank_r_members(results_dir):
    """A real step's update of every matrix has rank min(P' r, m, n): P' r while that is
    below the matrix's smaller side, then full rank (here 16 at D = 16)."""
    out = claims.claim_full_rank(runs=[(4, 1), (8, 2), (64, 1)], mcfg=lm.ModelConfig(16, 1),
                                 seq_len=5)
    assert len(out) == 3, f"{len(out)} runs reported, 3 asked for"
    for o in out:
        assert o["live_pairs"] > 0
        assert o["ranks"] == o["want"], (o["N"], o["r"])
    assert set(out[-1]["ranks"].values()) == {16}
    assert out[0]["ranks"]["l0.mlp1"] == out[0]["live_pairs"] < 16
    assert (results_dir / "claim_full_rank.png").stat().st_size > 10_000


def test_claim_inference_at_a_tiny_size(capsys):
    """The inference claim's table at D = 16: EGGROLL and naive ES as a % of inference."""
    out = claims.claim_inference(runs=[(16, 8)], naive_runs=[(16, 8)], seq_len=3, repeat=1)
    t = out[0]
    assert t["inference"] > 0 and t["eggroll"] > 0 and t["es_naive"] > 0
    assert set(t["eggroll_phases"]) >= {"noise", "forward", "update", "member_matmul"}
    assert "EGGROLL % of inference" in capsys.readouterr().out


def test_billion_step_on_device_runs_the_real_step_at_a_tiny_size(capsys):
    """The GPU acceptance's 1 B step, here on NumPy at D = 16: the step it times is
    eggroll.step's, and it reports the step and the inference of the same batch."""
    out = claims.billion_step_on_device(np, D=16, L=1, population=8, seq_len=4, repeat=1)
    assert out["params"] == lm.count_params(lm.ModelConfig(16, 1)) and out["step_s"] > 0
    assert 0 < out["inference_s"] and "EGGROLL step of a 11,344-parameter" in capsys.readouterr().out
