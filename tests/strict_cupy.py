"""A strict stand-in for CuPy, for the tests only: the `cupy` names this repository calls,
backed by NumPy arrays wrapped in an `ndarray` type of its own, so that the code's CuPy
branches (`xp is not np`) run on a machine without a GPU.

It refuses what CuPy refuses (the messages are CuPy's, cupy/_core/core.pyx):
  * implicit conversion to NumPy: `np.asarray(a)`, `__array__`, hence np.testing on a device
    array (TypeError "Implicit conversion to a NumPy array is not allowed...");
  * an operation mixing a device array with a NumPy array, as operand or `out=` (TypeError
    "Unsupported type <class 'numpy.ndarray'>"), or assigning a host array to a slice
    (ValueError); NumPy and Python scalars are fine, and so is a host array as an index;
  * a NumPy function CuPy does not implement, called on a device array (NEP-18
    `__array_function__` and `__array_ufunc__` find no `cupy` twin, so NumPy raises TypeError);
  * `operator.index(a)` (no `__index__`), like CuPy.
Beyond that it refuses what it does not have: a name missing here raises AttributeError. Add
it (to FUNCTIONS or METHODS) when the code needs it and CuPy has it.

It counts, in `counts`:
  * "syncs": host round-trips, each a wait for the device: `.get()`, `asnumpy`, `.item()`,
    `.tolist()`, `int()`, `float()`, `bool()`, printing, and the operations whose output size
    lives on the device (boolean-mask indexing, `flatnonzero`);
  * "uploads": host -> device copies (`asarray` of host data, a host array as an index or as
    the values assigned to an array index);
  * "int8_gemms": calls of `cublas_int8_tn`, which `install` puts in place of
    `int_rnn_lm._cublas_int8_tn` (the cuBLAS int8 GEMM) with the same exact integers;
  * "ops": array operations (functions, operators, methods): about the kernels a GPU would
    launch (CuPy fuses none of them), for the GPU plan in .ci/gpu.

What it cannot show (CUDA kernels, cuBLAS itself, CuPy's own dtype promotion, device memory
and timing) stays for the real GPU check (.ci/gpu)."""
import sys

import numpy as np

counts = {"syncs": 0, "uploads": 0, "int8_gemms": 0, "ops": 0}

IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly.")

# CuPy's dtypes are NumPy's
int8, int16, int32, int64, uint8, uint32 = (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                            np.uint32)
float32, float64, bool_ = np.float32, np.float64, np.bool_


def reset():
    for k in counts:
        counts[k] = 0


def sync():
    counts["syncs"] += 1

# -----------------------------------------------------------------------------
# unwrapping arguments (refusing host arrays) and wrapping results


def unwrap(x):
    """A device array's NumPy array; host arrays refused; lists, tuples, dicts recursed."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (list, tuple)):
        return type(x)(unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: unwrap(v) for k, v in x.items()}
    return x


def wrap(r):
    """A NumPy result as CuPy gives it: arrays, and scalars as 0-d arrays, on the device."""
    if isinstance(r, (np.ndarray, np.generic)):
        return ndarray(np.asarray(r))
    if isinstance(r, (list, tuple)):
        return type(r)(wrap(v) for v in r)
    return r


def call(f, *args, **kwargs):
    """f on the unwrapped arguments, its result wrapped; an `out=` array is returned as is."""
    counts["ops"] += 1
    r = f(*unwrap(args), **unwrap(kwargs))
    out = kwargs.get("out")
    return out if isinstance(out, ndarray) else wrap(r)

# -----------------------------------------------------------------------------
# the array


class ndarray:
    """A device array: a NumPy array that never leaves without being counted."""
    __slots__ = ("_a",)

    def __init__(self, a):
        assert isinstance(a, np.ndarray), type(a)
        self._a = a

    # what CuPy refuses
    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """np.<ufunc>(device array): CuPy's ufunc of that name, as in CuPy."""
        f = FUNCTIONS.get(ufunc.__name__)
        if f is None or method != "__call__":
            return NotImplemented
        if "out" in kwargs:
            (kwargs["out"],) = kwargs["out"]
        return f(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        """np.<function>(device array): CuPy's function of that name, as in CuPy (NEP-18)."""
        f = FUNCTIONS.get(func.__name__) if func.__module__ == "numpy" else None
        if f is None or not all(issubclass(t, (ndarray, np.ndarray)) for t in types):
            return NotImplemented
        return f(*args, **kwargs)

    # attributes and methods CuPy's ndarray has
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    T = property(lambda self: ndarray(self._a.T))

    def __getattr__(self, name):
        if name not in METHODS:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r} (or the "
                                 f"stand-in lacks it: tests/strict_cupy.py METHODS)")
        method = getattr(self._a, name)
        return lambda *args, **kwargs: call(method, *args, **kwargs)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, key):
        return wrap(self._a[index(key)])

    def __setitem__(self, key, value):
        """As in CuPy, host values are copied up for an array index and refused for a slice
        (there CuPy's ndarray.fill takes a scalar only)."""
        key = index(key)
        if isinstance(value, (np.ndarray, list)):
            parts = key if isinstance(key, tuple) else (key,)
            if np.ndim(value) and not any(isinstance(k, np.ndarray) for k in parts):
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            counts["uploads"] += 1
            value = ndarray(np.array(value))
        self._a[key] = unwrap(value)

    # host round-trips
    def get(self):
        sync()
        return self._a.copy()

    def item(self):
        sync()
        return self._a.item()

    def tolist(self):
        sync()
        return self._a.tolist()

    def __bool__(self):
        sync()
        return bool(self._a)

    def __int__(self):
        sync()
        return int(self._a)

    def __float__(self):
        sync()
        return float(self._a)

    def __repr__(self):
        sync()
        return repr(self._a)

    def __str__(self):
        sync()
        return str(self._a)

    def __format__(self, spec):
        sync()
        return format(self._a, spec)

    __hash__ = None


METHODS = {"astype", "copy", "max", "mean", "ravel", "repeat", "reshape", "sum", "transpose"}

# operators, each NumPy's ufunc on the unwrapped operands
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
          "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power,
          "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
          "lshift": np.left_shift, "rshift": np.right_shift}
for _name, _f in BINARY.items():
    setattr(ndarray, f"__{_name}__", lambda self, other, f=_f: call(f, self, other))
    setattr(ndarray, f"__r{_name}__", lambda self, other, f=_f: call(f, other, self))
    setattr(ndarray, f"__i{_name}__", lambda self, other, f=_f: call(f, self, other, out=self))
ndarray.__matmul__ = lambda self, other: call(np.matmul, self, other)
ndarray.__rmatmul__ = lambda self, other: call(np.matmul, other, self)
for _name, _f in {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
                  "gt": np.greater, "ge": np.greater_equal}.items():
    setattr(ndarray, f"__{_name}__", lambda self, other, f=_f: call(f, self, other))
for _name, _f in {"neg": np.negative, "pos": np.positive, "abs": np.absolute,
                  "invert": np.invert}.items():
    setattr(ndarray, f"__{_name}__", lambda self, f=_f: call(f, self))


def index(key):
    """An index as CuPy takes it: device arrays, and host arrays or lists copied up (counted);
    a boolean mask is a round-trip (the result's size is the mask's count, on the device)."""
    parts = key if isinstance(key, tuple) else (key,)
    out = []
    for k in parts:
        if isinstance(k, (np.ndarray, list)):
            counts["uploads"] += 1
            k = np.asarray(k)
        elif isinstance(k, ndarray):
            k = k._a
        if isinstance(k, np.ndarray) and k.dtype == np.bool_:
            sync()
        out.append(k)
    return tuple(out) if isinstance(key, tuple) else out[0]

# -----------------------------------------------------------------------------
# module functions: NumPy's, on device arrays only


def numpy_twin(name):
    """cupy.<name> as NumPy's function of that name on the unwrapped arrays."""
    f = getattr(np, name)

    def cupy_function(*args, **kwargs):
        return call(f, *args, **kwargs)
    cupy_function.__name__ = name
    return cupy_function


FUNCTIONS = {name: numpy_twin(name) for name in """
    abs add arange broadcast_to clip concatenate cumsum einsum empty empty_like exp exp2 eye
    floor floor_divide full log log2 logaddexp maximum mean minimum multiply ones repeat
    right_shift rint sign sqrt stack subtract sum take take_along_axis tanh tensordot tile zeros
    zeros_like""".split()}


def asarray(a, dtype=None):
    """A device array as is (cast to dtype); host data copied to the device (counted)."""
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype, copy=False)
    counts["uploads"] += 1
    return ndarray(np.array(a, dtype=dtype))       # a copy: the host array may change later


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def array_equal(a, b):
    """A 0-d device array, as CuPy's (NumPy's is a Python bool)."""
    return ndarray(np.asarray(np.array_equal(*unwrap((a, b)))))


def flatnonzero(a):
    sync()
    return call(np.flatnonzero, a)


FUNCTIONS.update(asarray=asarray, asnumpy=asnumpy, array_equal=array_equal,
                 flatnonzero=flatnonzero)
globals().update(FUNCTIONS)

# -----------------------------------------------------------------------------
# the device


class cuda:
    """One device, always available."""

    @staticmethod
    def is_available():
        return True

    class Device:
        id = 0


class MemoryPool:
    def total_bytes(self):
        return 0        # no device memory: peak memory is for the real GPU check


def get_default_memory_pool():
    return MemoryPool()


def cublas_int8_tn(x, w):
    """int_rnn_lm._cublas_int8_tn's result, x (B, n) @ w (m, n)^T int8 -> int32 (B, m), counted.
    Exact: in float32 while every partial sum is below n 127^2 < 2^24 (n <= 1040), else in
    float64 (below 2^31 < 2^53)."""
    assert isinstance(x, ndarray) and isinstance(w, ndarray), (type(x), type(w))
    assert x.dtype == w.dtype == np.int8 and x.ndim == w.ndim == 2, (x.dtype, w.dtype)
    assert x.shape[1] == w.shape[1] and x.shape[1] % 4 == 0 and w.shape[0] % 4 == 0
    counts["int8_gemms"] += 1
    ft = np.float32 if x.shape[1] <= (2**24 - 1) // 127**2 else np.float64
    return ndarray((x._a.astype(ft) @ w._a.astype(ft).T).astype(np.int32))


def install(monkeypatch):
    """For one test: `import cupy` gives this module, int_rnn_lm's cuBLAS call is
    cublas_int8_tn and its device tables start empty. The counts start at zero."""
    import int_rnn_lm
    monkeypatch.setitem(sys.modules, "cupy", sys.modules[__name__])
    monkeypatch.setattr(int_rnn_lm, "_cublas_int8_tn", cublas_int8_tn)
    monkeypatch.setattr(int_rnn_lm, "_DEVICE_TABLES", {})   # uploaded afresh: counted here
    reset()
    return sys.modules[__name__]
