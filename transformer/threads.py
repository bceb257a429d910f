"""One thread setting for both pools this package runs on: Numba's kernels and NumPy's BLAS.

    >>> import transformer
    >>> transformer.set_num_threads(1)     # e.g. one encoder per core in a process pool
    >>> transformer.get_num_threads()
    1

Why both: the numba backend runs its own kernels, but NumPy code around them (the pooler,
heads, the numpy backend) calls OpenBLAS, which keeps its own threads. A limit that reached
only one of them would still let the other take every core.

NumPy's OpenBLAS (`scipy_openblas64_` in current wheels) is set through its C function
`*openblas_set_num_threads*`, found with ctypes in the libraries the process has loaded; no
threadpoolctl. Numba's count is per calling thread (`numba.set_num_threads`): set it in the
thread that runs the model. Numba is imported on the first call here (never by
`import transformer`), with the workqueue threading layer that `transformer.kernels` picks;
nothing is compiled.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

# Spellings of OpenBLAS's setter / getter: scipy-openblas (NumPy >= 2 wheels, 64-bit ints),
# older NumPy wheels, and a plain system OpenBLAS.
_SETTERS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
            "scipy_openblas_get_num_threads", "openblas_get_num_threads")


def _loaded_library_paths():
    """Paths of the shared libraries mapped into this process whose name mentions openblas."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:  # Linux: what is actually loaded
            for line in maps:
                fields = line.split(maxsplit=5)  # address perms offset device inode [path]
                path = fields[5].strip() if len(fields) == 6 else ""
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    if not paths:  # elsewhere: the copies NumPy's wheels bundle
        import numpy

        root = os.path.dirname(os.path.dirname(numpy.__file__))
        for pattern in ("numpy.libs/*openblas*", "numpy/.dylibs/*openblas*", "numpy/.libs/*openblas*"):
            paths.extend(glob.glob(os.path.join(root, pattern)))
    return paths


@functools.lru_cache(maxsize=None)
def blas_thread_functions():
    """[(set_num_threads, get_num_threads), ...] of each OpenBLAS NumPy uses (may be empty)."""
    import numpy  # noqa: F401  (loads NumPy's BLAS, so that it shows up in the process maps)

    functions = []
    for path in _loaded_library_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(library, name) for name in _SETTERS if hasattr(library, name)), None)
        getter = next((getattr(library, name) for name in _GETTERS if hasattr(library, name)), None)
        if setter is None:
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], None
        if getter is not None:
            getter.argtypes, getter.restype = [], ctypes.c_int
        functions.append((setter, getter))
    return functions


def _numba():
    """numba, imported through transformer.kernels (which sets the threading layer first)."""
    from transformer.kernels._jit import numba

    return numba


def thread_limit() -> int:
    """The most threads `set_num_threads` takes: those Numba was started with (the CPU count,
    or $NUMBA_NUM_THREADS)."""
    return _numba().config.NUMBA_NUM_THREADS


def set_num_threads(n: int) -> None:
    """Use `n` threads in the Numba kernels (for the calling thread) and in NumPy's BLAS.

    n must be an int from 1 to the number of threads Numba was started with (the CPU count,
    or $NUMBA_NUM_THREADS).
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {'None' if n is None else f'the {type(n).__name__} {n!r}'}")
    numba = _numba()
    limit = thread_limit()
    if not 1 <= n <= limit:
        raise ValueError(f"set_num_threads: n must be between 1 and {limit} (the threads Numba started with; "
                         f"set NUMBA_NUM_THREADS before starting Python to allow more), got {n}")
    numba.set_num_threads(n)
    for setter, _ in blas_thread_functions():
        setter(n)


def get_num_threads() -> int:
    """The number of threads the Numba kernels use in the calling thread."""
    return _numba().get_num_threads()


def get_blas_num_threads() -> int | None:
    """The number of threads NumPy's OpenBLAS uses, or None when it was not found."""
    for _, getter in blas_thread_functions():
        if getter is not None:
            return int(getter())
    return None


__all__ = ["set_num_threads", "get_num_threads", "get_blas_num_threads", "thread_limit"]
