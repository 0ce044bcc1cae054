"""Shared fixtures: `xp` runs a backend test on NumPy and, where a GPU is usable, on CuPy."""
import os
import sys

# many small matmuls: one BLAS thread avoids oversubscribing a busy 2-core machine (set before
# numpy loads; an explicit setting in the environment wins)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from int_rnn_lm import gpu_usable  # noqa: E402

GPU = gpu_usable()


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    if request.param == "numpy":
        return np
    if not GPU:
        pytest.skip("cupy: no usable GPU")
    import cupy
    return cupy


@pytest.fixture
def cupy_or_skip():
    if not GPU:
        pytest.skip("cupy: no usable GPU")
    import cupy
    return cupy
