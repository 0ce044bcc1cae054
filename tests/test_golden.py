"""Golden values: the claims "the same run on every machine, BLAS, process count and backend"
checked against numbers committed in tests/golden.json, not against a second run of the same
code. The digests were recorded before the redesign of issue 18 and hold for the code since:
  * the primitives: stream keys, the noise, the lookup tables, the integer log-likelihood of
    fixed logits, init_params;
  * a 20-step run of every method at the CPU default size, every flag spelled out (so that a
    change of defaults does not move them): SHA-256 of every integer array of the final
    checkpoint, and of its sample; the float arrays of Forward-Forward and NoProp (which
    learn in float32 through BLAS) as their largest |value| and four fixed random projections,
    within 1e-4 of that largest value (the tolerance of their NumPy-vs-CuPy test).
The two `--sampling independent` runs were recorded when that option came (issue 21); the
test that es_naive handed EGGROLL's noise gives EGGROLL's run bit for bit, and the signal's
Python-integer reference, check that code independently.
A GPU run of this file checks the cross-backend claim against the same numbers."""
import hashlib
import json
import os
import shlex

import numpy as np
import pytest

import int_rnn_lm as lm
import train
from conftest import GPU

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "golden.json")) as f:
    GOLDEN = json.load(f)
FLOAT_METHODS = ("forward_forward", "noprop")


def sha(a, n=None):
    h = hashlib.sha256(np.ascontiguousarray(lm.to_numpy(a)).tobytes()).hexdigest()
    return h[:n] if n else h


def projections(a, name):
    """|a|'s largest value and four projections on fixed N(0, 1) vectors keyed by the name."""
    v = np.random.default_rng(list(name.encode())).standard_normal((4, a.size))
    return np.array([np.abs(a).max()] + list(v @ a.ravel().astype(np.float64))), np.abs(v).sum(1)


def test_primitives_match_their_golden_digests():
    g = GOLDEN["primitives"]
    assert [lm.stream_key(0), lm.stream_key(1, 2, 3), lm.stream_key(2**40 + 5, 7),
            lm.stream_key(3, 0, 0, 0)] == g["stream_key"]
    assert sha(lm.noise_int8(lm.stream_key(3, 1, 4), np.arange(37), 1000)) == g["noise_int8"]
    assert sha(lm.NORMAL_Q4) == g["normal_q4"]
    assert sha(lm.EXP2_TABLE) == g["exp2"] and sha(lm.LOG2_MANT_TABLE) == g["log2_mant"]
    rng = np.random.default_rng(2026)
    logits = rng.integers(-127, 128, (64, 256)).astype(np.int8)
    logits[:8] = np.clip(rng.normal(0, 5, (8, 256)), -127, 127).astype(np.int8)
    targets = rng.integers(0, 256, 64).astype(np.uint8)
    assert sha(lm.token_logprob(logits, targets)) == g["token_logprob"]
    params = lm.init_params(lm.ModelConfig(32, 2), 7)
    assert sha(np.concatenate([v.ravel() for v in params.values()])) == g["init_params"]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("name", sorted(GOLDEN["runs"]))
def test_pinned_run_gives_its_golden_checkpoint(name, device, tmp_path):
    """The run's checkpoint after 20 steps, array by array (evaluation settings changed to one
    small evaluation at the end: no trained array depends on them), on the CPU and, where a
    GPU is usable, on CuPy against the same numbers."""
    if device == "cuda" and not GPU:
        pytest.skip("cupy: no usable GPU")
    run = GOLDEN["runs"][name]
    argv = (["--method", run["method"]] + shlex.split(GOLDEN["common_flags"]) +
            shlex.split(run["flags"]) + ["--eval_every", "20", "--val_windows", "2",
                                         "--val_len", "16", "--out", str(tmp_path),
                                         "--device", device])
    assert train.train(argv) == 0
    out = tmp_path / run["method"]
    with np.load(out / "ckpt_last.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    assert sorted(arrays) == sorted(run["arrays"]), name
    for k, want in run["arrays"].items():
        a = arrays[k]
        if a.dtype.kind == "f":
            got, scale = projections(a, k)
            want = np.array(want["max_abs_and_projections"])
            tol = 1e-4 * want[0]
            assert abs(got[0] - want[0]) <= tol and np.all(np.abs(got[1:] - want[1:]) <=
                                                           tol * scale), (name, k, got, want)
        else:
            assert sha(a, 16) == want, f"{name}: {k}"
    if run["method"] not in FLOAT_METHODS:       # the sample follows float predictions there
        assert sha((out / "sample.txt").read_bytes(), 16) == run["sample"], name
