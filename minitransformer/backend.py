"""Devices, the array module, dtypes and random numbers.

This is the only module of the package that imports NumPy or CuPy by name. Every other
piece of compute code asks for the array module of its inputs,

    xp = get_array_module(x)

and then writes `xp.exp`, `xp.matmul`, ... so the same lines run on the CPU (NumPy) and on an
NVIDIA GPU (CuPy).
"""
from __future__ import annotations

import contextlib
import ctypes
import os

import numpy as np

DEVICES = ("cpu", "cuda")
FLOAT_DTYPES = (np.float16, np.float32, np.float64)

_cupy = None  # the cupy module once it has been imported and checked


class DeviceError(RuntimeError):
    """Raised when a device is asked for that this machine cannot give."""


# --8<-- [start:load_cupy]
def _load_cupy():
    """Import CuPy and check that a GPU is usable; raise a DeviceError saying what is missing."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as err:
        raise DeviceError(
            "device 'cuda' needs CuPy, which is not installed. Install the extra that matches your "
            "CUDA driver: pip install 'minitransformer[cuda12]' or 'minitransformer[cuda13]'"
        ) from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError: no driver, wrong driver version, ...
        raise DeviceError(f"CuPy is installed but no usable GPU/driver was found: {err}") from err
    if count == 0:
        raise DeviceError("CuPy is installed but it sees no GPU (getDeviceCount() == 0)")
    _cupy = cupy
    return cupy
# --8<-- [end:load_cupy]


def cuda_available() -> bool:
    """True when CuPy is installed and a GPU answers."""
    try:
        _load_cupy()
    except DeviceError:
        return False
    return True


def check_device(device: str) -> str:
    """Return `device` if it is known and usable, else raise ValueError / DeviceError."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda":
        _load_cupy()
    return device


def xp_for(device: str):
    """The array module (numpy or cupy) of a device name."""
    check_device(device)
    return np if device == "cpu" else _cupy


# --8<-- [start:array_module]
# --8<-- [start:get_array_module]
def get_array_module(*arrays):
    """numpy, or cupy if any argument is a CuPy array (the Chainer idiom)."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np
# --8<-- [end:get_array_module]


def device_of(array) -> str:
    """'cuda' for a CuPy array, 'cpu' otherwise."""
    return "cuda" if _cupy is not None and isinstance(array, _cupy.ndarray) else "cpu"


def to_numpy(array) -> np.ndarray:
    """A host NumPy copy (or view) of any array."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


# --8<-- [start:to_device]
def to_device(array, device: str, dtype=None):
    """Move (and optionally cast) an array to `device`; a no-op when it is already there."""
    check_device(device)
    if device == "cpu":
        out = to_numpy(array)
    else:
        out = _cupy.asarray(array)
    if dtype is not None and out.dtype != np.dtype(dtype):
        out = out.astype(dtype)
    return out
# --8<-- [end:to_device]
# --8<-- [end:array_module]


def check_float_dtype(dtype) -> np.dtype:
    """Normalise a dtype name or object and check that it is a floating type we support."""
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"unknown dtype {dtype!r}: expected float16, float32 or float64") from err
    if dt not in [np.dtype(d) for d in FLOAT_DTYPES]:
        raise TypeError(f"unsupported dtype {dt}: expected float16, float32 or float64")
    return dt


# --8<-- [start:rngs]
def host_rng(seed: int | None) -> np.random.Generator:
    """The seeded host generator all parameters are drawn from (same weights on every device)."""
    return np.random.default_rng(seed)


def device_rng(device: str, seed: int | None):
    """A generator that draws directly on `device` (for dropout masks and random features)."""
    xp = xp_for(device)
    return xp.random.default_rng(seed)
# --8<-- [end:rngs]


def synchronize(device: str) -> None:
    """Wait for queued GPU work (for honest timings); nothing to do on the CPU."""
    if device == "cuda":
        _load_cupy().cuda.Device().synchronize()


def erf(x):
    """The error function on either device (NumPy has none: SciPy's on the CPU, CuPy's on the GPU)."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    import scipy.special
    return scipy.special.erf(x)


_host_allocator_tuned = False


def tune_host_allocator() -> bool:
    """Keep freed host memory for reuse instead of returning it to the operating system.

    Every NumPy operation allocates its result. glibc serves blocks above 128 KiB with fresh
    ``mmap`` pages and gives them back on ``free``, so each (B, T, C) temporary of a training step
    page-faults (the kernel zeroes every new page) before the math even starts: about 10% of a small
    GPT's step. Raising glibc's mmap and trim thresholds makes such blocks come from the heap and be
    reused, which is what a deep-learning framework's caching allocator does. Called by the
    training loop and the benchmarks; a no-op (returning False) where glibc is not the allocator.
    """
    global _host_allocator_tuned
    if _host_allocator_tuned:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, 256 * 2 ** 20) == 1      # blocks < 256 MiB from the heap
        ok = libc.mallopt(M_TRIM_THRESHOLD, 1024 * 2 ** 20) == 1 and ok   # keep up to 1 GiB free
    except (OSError, AttributeError):
        return False
    _host_allocator_tuned = ok
    return ok


# -- the host BLAS's threads --------------------------------------------------------------------
# (setter, getter) of the thread count in the BLAS libraries NumPy is built with: the OpenBLAS of the
# NumPy wheels (64-bit integers, prefixed), other OpenBLAS builds, Intel MKL.
_BLAS_THREAD_FUNCTIONS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"),
)
_host_blas = False  # False: not looked for yet; None: not found; else (set, get)


def _find_host_blas():
    """The (set, get) thread-count functions of the BLAS that NumPy loaded, found among the shared
    libraries mapped into this process (Linux), or None."""
    global _host_blas
    if _host_blas is not False:
        return _host_blas
    _host_blas = None
    try:
        with open("/proc/self/maps") as maps:          # address perms offset dev inode path
            fields = (line.split(maxsplit=5) for line in maps)
            paths = sorted({f[5].strip() for f in fields if len(f) == 6 and ".so" in f[5]})
    except OSError:
        return None
    for path in paths:
        name = os.path.basename(path).lower()
        if "blas" not in name and "mkl" not in name:
            continue
        try:
            lib = ctypes.CDLL(path)                      # already loaded: this only looks it up
        except OSError:
            continue
        for set_name, get_name in _BLAS_THREAD_FUNCTIONS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                _host_blas = (getattr(lib, set_name), getattr(lib, get_name))
                return _host_blas
    return None


def host_blas_threads() -> int | None:
    """How many threads the host BLAS (NumPy's matrix products) uses, or None if it cannot be told."""
    blas = _find_host_blas()
    return None if blas is None else int(blas[1]())


@contextlib.contextmanager
def host_blas_threads_limited(n: int):
    """Run the block with the host BLAS on at most n threads, restoring the count after. Used where
    the caller runs its own threads (one BLAS thread each, so that n threads use n cores). Returns
    whether the count could be set (where the BLAS is unknown the block still runs, unchanged)."""
    blas = _find_host_blas()
    if blas is None:
        yield False
        return
    before = int(blas[1]())
    blas[0](min(n, before))
    try:
        yield True
    finally:
        blas[0](before)
