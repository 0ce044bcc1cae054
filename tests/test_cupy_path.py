"""The CuPy code path, run on every commit without a GPU: tests/strict_cupy.py stands in for
CuPy (its arrays refuse what CuPy's refuse and count every host round-trip), so `--device
cuda` and the `xp` fixture's "cupy" case run the code's CuPy branches on the CPU. Here:
  * the stand-in refuses what CuPy refuses (a check that can fail must be seen failing);
  * every golden run of tests/golden.json gives its golden checkpoint through the CuPy
    branches, and its training steps make no more host round-trips than measured (a new sync
    in a hot loop fails; the counts are printed: `pytest -s tests/test_cupy_path.py`);
  * the forward's integer matmuls take the cuBLAS int8 GEMM, not the float fallback.
(The NumPy == CuPy tests of the other files run on the stand-in through conftest's `xp` and
`cupy_or_skip` fixtures.)

What the stand-in cannot show stays for the real GPU check (.ci/gpu): CUDA kernels, cuBLAS
itself (its int8 GEMM is replaced by an exact NumPy product of the same integers), CuPy's own
dtype promotion rules (the stand-in computes with NumPy's), device memory and timing."""
import importlib
import shlex

import numpy as np
import pytest

import strict_cupy
import test_golden
import int_rnn_lm as lm
import train


@pytest.fixture
def cp(monkeypatch):
    """The stand-in as `cupy` for this test, even where a real GPU is usable."""
    return strict_cupy.install(monkeypatch)

# -----------------------------------------------------------------------------
# the stand-in refuses what CuPy refuses, and counts


def test_refuses_implicit_conversion_to_numpy(cp):
    a = cp.arange(3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError):
        np.testing.assert_array_equal(a, np.arange(3))


@pytest.mark.parametrize("mix", [
    lambda a, h: a + h, lambda a, h: h + a, lambda a, h: a @ h.reshape(3, 1),
    lambda a, h: a.__iadd__(h), lambda a, h: np.add(a, h), lambda a, h: np.add(a, a, out=h),
    lambda a, h: np.concatenate([a, h]), lambda a, h: strict_cupy.maximum(a, h)])
def test_refuses_mixing_device_and_host_arrays(cp, mix):
    with pytest.raises(TypeError):
        mix(cp.arange(3), np.arange(3))


def test_host_values_assign_as_in_cupy(cp):
    """A host array is copied up where it fills an array index, refused where it fills a slice."""
    a = cp.zeros(3, dtype=cp.int32)
    a[cp.arange(3)] = np.arange(3)
    a[[0]] = np.array([7])
    assert a.tolist() == [7, 1, 2] and strict_cupy.counts["uploads"] == 3   # values, list index
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[:] = np.arange(3)
    a[1:] = np.int32(5)                                 # a scalar fills
    assert a.tolist() == [7, 5, 5]


def test_scalars_mix_and_numpy_functions_dispatch_as_in_cupy(cp):
    a = cp.arange(4, dtype=cp.int32)
    b = np.int32(2) * a + 1 - np.uint8(1)               # NumPy and Python scalars are fine
    assert isinstance(b, strict_cupy.ndarray) and b.tolist() == [0, 2, 4, 6]
    assert isinstance(np.concatenate([a, b]), strict_cupy.ndarray)     # NEP-18: cupy's twin
    assert isinstance(np.exp(a), strict_cupy.ndarray)                  # ufunc: cupy's twin
    with pytest.raises(TypeError):
        np.unravel_index(a, (2, 2))                     # not in the stand-in: refused
    with pytest.raises(AttributeError):
        cp.unravel_index


def test_counts_host_round_trips_and_uploads(cp):
    a = cp.asarray(np.arange(6).reshape(2, 3))          # one upload
    assert strict_cupy.counts == {"syncs": 0, "uploads": 1, "int8_gemms": 0, "ops": 0}
    s = a.sum()
    assert isinstance(s, strict_cupy.ndarray) and s.shape == ()    # reductions stay on device
    int(s), float(a[0, 0]), bool(s > 0), a.get(), a[0, 1].item(), a.tolist(), a[a > 2]
    assert strict_cupy.counts["syncs"] == 7
    with pytest.raises(TypeError):
        range(s)                                        # no __index__, as in CuPy


def test_asarray_copies_host_data(cp):
    host = np.zeros(3)
    dev = cp.asarray(host)
    host[0] = 1                                         # the device copy does not see it
    assert dev.get().tolist() == [0, 0, 0]

# -----------------------------------------------------------------------------
# the integer matmul on the "GPU"


def test_forward_takes_the_int8_gemm_for_every_matmul(cp):
    """One forward on the device: each matmul is one int8 GEMM (w_f, w_h, mlp1, mlp2, head once
    per window, u_f and u_h at every byte), and the logits equal NumPy's bit for bit."""
    cfg, T = lm.ModelConfig(d_model=32, n_layers=2), 5
    params = lm.init_params(cfg, 0)
    tokens = np.random.default_rng(0).integers(0, 256, (3, T), dtype=np.uint8)
    want, _ = lm.forward(params, cfg, tokens, lm.zero_hidden(cfg, 3))
    got, _ = lm.forward({k: cp.asarray(v) for k, v in params.items()}, cfg, cp.asarray(tokens),
                        lm.zero_hidden(cfg, 3, cp))
    assert strict_cupy.counts["int8_gemms"] == cfg.n_layers * (4 + 2 * T) + 1
    np.testing.assert_array_equal(got.get(), want)


def test_int_matmul_falls_back_to_float_where_cublas_cannot(cp):
    """n not a multiple of 4: the exact float path, no int8 GEMM (the count can stay 0)."""
    rng = np.random.default_rng(1)
    x, w = (rng.integers(-127, 128, shape, dtype=np.int8) for shape in ((5, 6), (4, 6)))
    got = lm.int_matmul(cp.asarray(x), cp.asarray(w))
    assert strict_cupy.counts["int8_gemms"] == 0
    np.testing.assert_array_equal(got.get(), x.astype(np.int32) @ w.T.astype(np.int32))

# -----------------------------------------------------------------------------
# every golden run through the CuPy branches, and its host round-trips per step

# Per training step (a call of method.step), the most over the golden run's 20 steps, measured
# on the stand-in on 2026-12-07: (host round-trips, host -> device copies). A new one inside a
# loop over bytes, chunks, tensors or members adds far more than MARGIN. Where they come from:
#   eggroll, es_naive, mezo: 3 copies in step 1 only, int_rnn_lm's lookup tables;
#   eggroll, es_naive: no round-trip, but with --signal zscore the integer rms of the fitness
#     differences, int() (eggroll.py:176, es_naive.py:163);
#   mezo: per direction 13 flatnonzero (the rails, one per tensor: an index array's size is
#     known only on the host), and one copy of every direction's two losses per step;
#   forward_forward: float(beta), float() of the readout, goodness and two FF losses, and the
#     stats neg_kept and beta; 3 copies of host-drawn indices and uniforms;
#   noprop: one copy of the blocks' losses, CEs and the KL; its noise is drawn on the device
#     (counter hash and a quantile table, uploaded once at init);
#   backprop (no golden run: its CPU defaults, 3 steps): none.
# The test asserts at most the measured count + MARGIN.
PER_STEP = {"eggroll": (0, 3), "eggroll_threshold": (0, 3), "eggroll_independent": (1, 3),
            "es_naive": (0, 3), "es_naive_sgd": (0, 3), "es_naive_independent": (1, 3),
            "mezo": (14, 3), "mezo_2dirs": (27, 3), "forward_forward": (7, 3),
            "noprop": (1, 0), "backprop": (0, 0)}
MARGIN = 2


def count_per_step(monkeypatch, method):
    """The stand-in's counts of each call of method.step, in a list that fills as it runs."""
    module, per_step = importlib.import_module(method), []
    step = module.step

    def counted(*args):
        before = dict(strict_cupy.counts)
        out = step(*args)
        per_step.append({k: strict_cupy.counts[k] - before[k] for k in before})
        return out
    monkeypatch.setattr(module, "step", counted)
    return per_step


def check_per_step(name, per_step):
    syncs, uploads = (max(c[k] for c in per_step) for k in ("syncs", "uploads"))
    print(f"{name}: per step {syncs} host round-trips, {uploads} uploads, "
          f"{per_step[-1]['int8_gemms']} int8 GEMMs")
    bound = tuple(n + MARGIN for n in PER_STEP[name])
    assert syncs <= bound[0] and uploads <= bound[1], (name, (syncs, uploads), "bound", bound)


@pytest.mark.parametrize("name", sorted(test_golden.GOLDEN["runs"]))
def test_golden_run_through_the_cupy_branches(name, cp, tmp_path, monkeypatch):
    """test_golden's own check of the pinned run on --device cuda (every array against the same
    golden entries as the CPU run, and the sample), then its round-trips per step against
    PER_STEP. One run for both: the golden runs are most of this file's time."""
    monkeypatch.setattr(test_golden, "GPU", True)
    monkeypatch.setattr(train, "plot_curve", lambda *args: None)   # host-only drawing, 0.3 s
    per_step = count_per_step(monkeypatch, test_golden.GOLDEN["runs"][name]["method"])
    test_golden.test_pinned_run_gives_its_golden_checkpoint(name, "cuda", tmp_path)
    assert len(per_step) == 20
    check_per_step(name, per_step)


def test_backprop_round_trips_per_step(cp, tmp_path, monkeypatch):
    per_step = count_per_step(monkeypatch, "backprop")
    argv = (["--method", "backprop"] + shlex.split(test_golden.GOLDEN["common_flags"]) +
            ["--seq_len", "25", "--steps", "3", "--val_windows", "2", "--val_len", "16",
             "--sample_bytes", "8", "--out", str(tmp_path), "--device", "cuda"])
    assert train.train(argv) == 0 and len(per_step) == 3
    check_per_step("backprop", per_step)


def test_resume_and_sample_through_the_cupy_branches(cp, tmp_path, capsysbinary):
    """A checkpoint's way onto the device and back: 2 steps on the device, then `--resume` to
    step 4 on the device, give the CPU's 4-step checkpoint bit for bit, and `--sample` from it
    writes the same bytes on both devices."""
    flags = ["--method", "eggroll", "--population", "16", "--group_size", "4", "--d_model", "16",
             "--n_layers", "1",
             "--seq_len", "16", "--val_windows", "4", "--val_len", "32", "--sample_bytes", "8",
             "--eval_every", "2"]
    assert train.train(flags + ["--steps", "4", "--device", "cpu", "--out",
                                str(tmp_path / "cpu")]) == 0
    assert train.train(flags + ["--steps", "2", "--device", "cuda", "--out",
                                str(tmp_path / "cuda")]) == 0
    ckpt = str(tmp_path / "cuda" / "eggroll" / "ckpt_last.npz")
    assert train.train(["--resume", ckpt, "--steps", "4", "--device", "cuda"]) == 0
    with np.load(tmp_path / "cpu" / "eggroll" / "ckpt_last.npz") as a, np.load(ckpt) as b:
        assert a.files == b.files and len(a.files) > 2
        for k in a.files:
            if k != "meta":
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    samples = []
    for device in ("cpu", "cuda"):
        capsysbinary.readouterr()
        assert train.train(["--sample", ckpt, "--prompt", "ROMEO:", "--sample_bytes", "32",
                            "--device", device]) == 0
        samples.append(capsysbinary.readouterr().out)
    assert samples[0] == samples[1] and samples[0].startswith(b"ROMEO:"), samples


def test_a_gpu_run_says_it_takes_the_int8_gemm(cp, tmp_path, capsys):
    """train.py names the integer matmul a run takes; on the device it is cuBLAS's int8 GEMM,
    and the forward does call it (the stand-in's count)."""
    before = strict_cupy.counts["int8_gemms"]
    argv = ["--device", "cuda", "--d_model", "16", "--seq_len", "8", "--val_windows", "2",
            "--val_len", "16", "--population", "8", "--group_size", "2", "--steps", "1",
            "--out", str(tmp_path)]
    assert train.train(argv) == 0
    assert "| int matmul: cuBLAS int8 GEMM, int32 accumulate" in capsys.readouterr().out
    assert strict_cupy.counts["int8_gemms"] > before
