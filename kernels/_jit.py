"""The one place the kernels import Numba: threading layer, on-disk cache, lazy compilation, threads.

Every kernel module does

    from ._jit import even_bounds, jit, parallel_chunks, run_chunks

    @jit
    def _scale_rows(x, factor, first, stop):   # compiled on the first call, then cached on disk
        for i in range(first, stop):
            x[i] *= factor

    def scale_rows(x, factor):                  # rows split over the threads when it pays
        bounds = even_bounds(len(x), parallel_chunks(x.size, 64 * 1024))
        run_chunks(_scale_rows, bounds, x, factor)

and never imports numba itself. What this module takes care of:

- Numba's threading layer, for kernels that use `prange` (the GEMM). Numba's default `omp`
  layer spinning beside OpenBLAS's own threads made a feed-forward block 2.9-6x slower on
  2 cores; the `workqueue` layer cannot oversubscribe. So `NUMBA_THREADING_LAYER=workqueue`
  is set before numba is imported, unless the user chose a layer.
- The disk cache (`cache=True`). Numba stores compiled kernels next to the source
  (`kernels/__pycache__`) or in `~/.cache/numba`; when neither is writable (a read-only
  site-packages, no home directory) a plain `numba.njit(cache=True)` raises "no locator
  available" at import time. Here the search goes on to `$XDG_CACHE_HOME/transformer/numba`
  (`~/.cache/transformer/numba`) and a per-user temporary directory, and when nothing at all
  is writable the kernels compile without a cache, with one warning.
- Stale caches. Numba keys a cached kernel on its own source file only, so a kernel would
  keep running an old copy of a device function it imports from another module (say the
  GELU that the GEMM epilogue inlines). Here the key covers every source file of the
  `kernels` package: changing any of them recompiles them all.
- Laziness. Nothing is compiled at decoration time (no signatures are given), so importing
  a kernel module costs only importing numba; `import transformer` imports neither.
- Threads for the row kernels (`run_chunks`). Kernels are compiled `nogil=True`, and work
  that is worth splitting runs as contiguous chunks on a small pool of Python threads (the
  calling thread takes one chunk). Measured on 2 cores: a `prange` launch with the
  workqueue layer costs 60-90 us even when empty, a hand-off to a pooled thread 25-30 us;
  and every `parallel=True` function costs 1.5-2 s more to compile. Idle pool threads
  block on a queue, so they never spin beside BLAS's threads. The number of threads is
  Numba's (`numba.get_num_threads()`, set by `transformer.set_num_threads`).
"""

import functools
import hashlib
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Must happen before `import numba`; the user's choice wins.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

import numba  # noqa: E402
from numba import prange  # noqa: E402,F401  (re-exported for the kernel modules)
from numba.core import caching  # noqa: E402

KERNELS_DIR = Path(__file__).resolve().parent

__all__ = ["jit", "prange", "parallel_chunks", "run_chunks", "cache_dir", "numba"]


# ---------------------------------------------------------------------------------------
# The cache key: every source file of the kernels package.


@functools.lru_cache(maxsize=None)
def _hash_files(stamps):
    """sha256 over the contents of the files in `stamps` ((path, mtime, size), ...)."""
    digest = hashlib.sha256()
    for path, _mtime, _size in stamps:
        digest.update(path.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _source_stamp(py_file):
    """A stamp that changes when the kernel's file or any file of `kernels/` changes."""
    files = {str(Path(py_file).resolve())}
    files.update(str(p) for p in KERNELS_DIR.glob("*.py"))
    stamps = []
    for path in sorted(files):
        st = os.stat(path)
        stamps.append((path, st.st_mtime_ns, st.st_size))
    return _hash_files(tuple(stamps))


class _PackageStampMixin:
    """Replace Numba's one-file source stamp by the whole-package stamp."""

    def get_source_stamp(self):
        return _source_stamp(self._py_file)


class _InTreeLocator(_PackageStampMixin, caching.InTreeCacheLocator):
    """`kernels/__pycache__`, next to the source (an editable install, a writable venv)."""


class _UserProvidedLocator(_PackageStampMixin, caching.UserProvidedCacheLocator):
    """`$NUMBA_CACHE_DIR` when the user set it (or when we set it as the last resort)."""


class _UserWideLocator(_PackageStampMixin, caching.UserWideCacheLocator):
    """Numba's per-user cache directory, `~/.cache/numba`."""


class _KernelCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_UserProvidedLocator, _InTreeLocator, _UserWideLocator]


class _KernelFunctionCache(caching.FunctionCache):
    _impl_class = _KernelCacheImpl


# ---------------------------------------------------------------------------------------
# Where the cache goes when Numba's own places are not writable.


def _writable(path):
    """True when `path` exists or can be made, and a file can be created in it."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _fallback_cache_dirs():
    """Candidate directories, best first: the user's cache dir, then a per-user temp dir."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return [
        os.path.join(xdg, "transformer", "numba"),
        os.path.join(tempfile.gettempdir(), f"transformer-numba-{uid}"),
    ]


_caching_disabled = False  # set once nothing writable was found (warned once)


def _use_fallback_cache_dir():
    """Point NUMBA_CACHE_DIR at the first writable fallback; False when there is none."""
    for path in _fallback_cache_dirs():
        if _writable(path):
            os.environ["NUMBA_CACHE_DIR"] = path
            numba.config.CACHE_DIR = path  # the locator reads the config, not the env
            return True
    return False


def _make_cache(py_func):
    """A disk cache for `py_func`, or None when no directory is writable (warns once)."""
    global _caching_disabled
    if _caching_disabled:
        return None
    try:
        return _KernelFunctionCache(py_func)
    except RuntimeError as error:  # "cannot cache function ...: no locator available"
        if "no locator" not in str(error):
            raise
    if _use_fallback_cache_dir():
        try:
            return _KernelFunctionCache(py_func)
        except RuntimeError as error:
            if "no locator" not in str(error):
                raise
    _caching_disabled = True
    warnings.warn(
        "transformer.kernels: no writable directory for Numba's kernel cache "
        f"(tried {KERNELS_DIR / '__pycache__'}, ~/.cache/numba, {', '.join(_fallback_cache_dirs())}); "
        "kernels will be compiled in every new process. Set NUMBA_CACHE_DIR to a writable "
        "directory to keep them.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def cache_dir(dispatcher):
    """The directory a jitted kernel is cached in, or None when it is not cached."""
    cache = getattr(dispatcher, "_cache", None)
    return getattr(cache, "cache_path", None)


# ---------------------------------------------------------------------------------------
# The decorator.


def jit(func=None, **options):
    """`numba.njit` with the disk cache described above; compiles lazily, on the first call.

    Use bare (`@jit`) or with Numba options (`@jit(parallel=True, fastmath=False)`);
    `cache` is always on (when a directory is writable) and need not be given;
    `error_model` defaults to "numpy" (division by zero gives inf/nan, no check, as in NumPy)
    and `nogil` to True.
    """
    options.pop("cache", None)
    # NumPy's error model: x / 0 gives inf as in NumPy, instead of a ZeroDivisionError
    # check on every division, which keeps loops with a division from vectorizing.
    options.setdefault("error_model", "numpy")
    # Release the GIL while running, so that `run_chunks` threads really run at once.
    options.setdefault("nogil", True)

    def decorate(py_func):
        dispatcher = numba.njit(**options)(py_func)
        cache = _make_cache(py_func)
        if cache is not None:
            dispatcher._cache = cache  # what `cache=True` does, with our locators
        return dispatcher

    if func is not None:
        return decorate(func)
    return decorate


def parallel_chunks(work, work_per_chunk):
    """How many chunks to split `work` into: 1 (run on the calling thread alone) when it is
    small, else up to `numba.get_num_threads()`, each chunk getting at least `work_per_chunk`.

    Handing a chunk to another thread costs tens of microseconds, more than small work
    takes on one core.
    """
    if work < 2 * work_per_chunk:  # not worth a second thread; skip asking Numba (~1 us)
        return 1
    return max(1, min(numba.get_num_threads(), int(work // work_per_chunk)))


def even_bounds(items, chunks):
    """[0, ..., items]: `chunks` contiguous runs of items as equal in size as they can be."""
    return [chunk * items // chunks for chunk in range(chunks + 1)]


_pool = None  # the ThreadPoolExecutor, made on first use, remade larger when more threads are asked for
_pool_workers = 0


def _executor(workers):
    global _pool, _pool_workers
    if _pool is None or _pool_workers < workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transformer-kernels")
        _pool_workers = workers
    return _pool


def run_chunks(range_kernel, bounds, *args):
    """range_kernel(*args, bounds[c], bounds[c + 1]) for each chunk c, all chunks at once.

    `range_kernel` is a `@jit` function (so nogil) that does the items first..stop-1 of
    some work; `bounds` is a list of len(chunks) + 1 increasing item indices. The calling
    thread runs the last chunk, pool threads the others; returns when all are done.
    """
    chunks = len(bounds) - 1
    if chunks == 1:
        range_kernel(*args, bounds[0], bounds[1])
        return
    pool = _executor(chunks - 1)
    futures = [pool.submit(range_kernel, *args, bounds[c], bounds[c + 1]) for c in range(chunks - 1)]
    range_kernel(*args, bounds[-2], bounds[-1])
    for future in futures:
        future.result()
