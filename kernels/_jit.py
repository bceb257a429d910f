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

- Numba's threading layer, for any kernel that uses `prange`. Numba's default `omp` layer
  spins beside OpenBLAS's own threads and the two oversubscribe the cores; the `workqueue`
  layer cannot. So `NUMBA_THREADING_LAYER=workqueue` is set before numba is imported, unless
  the user chose a layer.
- The disk cache (`cache=True`). Numba stores compiled kernels next to the source
  (`kernels/__pycache__`) or in `~/.cache/numba`; when neither is writable (a read-only
  site-packages, no home directory) a plain `numba.njit(cache=True)` raises "no locator
  available" at import time. Here the search goes on to `$XDG_CACHE_HOME/transformer/numba`
  (`~/.cache/transformer/numba`) and `$XDG_RUNTIME_DIR/transformer/numba`, each used only
  when it is a directory of this user's that no one else can write to (Numba's cache index
  files are pickles: see `_private_dir`), never a guessable shared path such as /tmp; when
  none is usable the kernels compile without a cache, with one warning.
- Stale caches. Numba keys a cached kernel on its own source file only, so a kernel would
  keep running an old copy of a device function it imports from another module (say the
  GELU that the GEMM epilogue inlines). Here the key covers every source file of the
  `kernels` package: changing any of them recompiles them all.
- Laziness. Nothing is compiled at decoration time (no signatures are given), so importing
  a kernel module costs only importing numba; `import transformer` imports neither.
- A quick warm start. Loading a cached kernel skips Numba's refresh of its whole target
  context (`_KernelFunctionCache.load_overload`), and numba is imported without the SciPy
  and PyYAML it only checks for (`_import_numba`): together ~0.2 s less from a new
  process to its first vector.
- Threads for the kernels (`run_chunks`). Kernels are compiled `nogil=True`, and work that
  is worth splitting runs as contiguous chunks on persistent worker threads (the calling
  thread takes one chunk): a worker spinning on a counter in compiled code picks a job up
  far sooner than a `prange` launch or a ThreadPoolExecutor hand-off, and no kernel pays
  `parallel=True`'s extra compile time (benchmarks/bench_gemm.py measures the hand-offs).
  A worker spins for at most SPIN_SECONDS after its last job, yielding the core to any
  other runnable thread on every round, then blocks, so an idle process never keeps a core
  busy beside BLAS's threads. The number of threads is Numba's (`numba.get_num_threads()`,
  set by `transformer.set_num_threads`).
"""

import functools
import hashlib
import importlib.util
import os
import platform
import stat
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# ---------------------------------------------------------------------------------------
# Imports Numba makes only to check something the kernels do not need. SciPy: its version
# (at `import numba`, `_ensure_critical_deps`) and, when Numba compiles, whether np.correlate /
# np.convolve in jitted code may call BLAS's dot (`ensure_blas` imports scipy.linalg: 0.12-0.19
# s). PyYAML: to read a `.numba_config.yaml` in the working directory (at `import numba`).
# Here SciPy is hidden from those two checks (and only from them, in this thread), and PyYAML
# from Numba's config when there is no such file: importing either is a large part of a new
# process's time to its first vector (docs/performance.md), for nothing the kernels use. What changes: np.correlate / np.convolve in jitted code use Numba's own loop (np.dot
# and everything else still import SciPy when they need it), and Numba reads a config file
# that appears later through a PyYAML imported then.


def _is_numba_frame(frame, function, path_end):
    code = frame.f_code
    return code.co_name == function and code.co_filename.replace("\\", "/").endswith(path_end)


class _HiddenFromNumbasChecks:
    """A meta-path finder that fails `import <module>` (and its submodules) when one of the
    numba functions named for it is the importer; every other import passes."""

    def __init__(self, checks):
        self.checks = checks  # {module: ((function, file path end), ...)}

    def find_spec(self, name, path=None, target=None):
        checks = self.checks.get(name.partition(".")[0])
        if not checks:
            return None
        frame = sys._getframe(1)
        for _ in range(40):  # importlib's frames lie between the importer and here
            if frame is None:
                return None
            if any(_is_numba_frame(frame, function, path_end) for function, path_end in checks):
                raise ImportError(f"{name} hidden from numba's {frame.f_code.co_name} by transformer.kernels")
            frame = frame.f_back
        return None


_SCIPY_VERSION_CHECK = ("_ensure_critical_deps", "numba/__init__.py")
_SCIPY_BLAS_CHECK = ("ensure_blas", "numba/np/linalg.py")
_YAML_CONFIG = ("<module>", "numba/core/config.py")


class _YamlOnFirstUse:
    """Stands in for `yaml` in Numba's config: imports PyYAML when a config file needs it."""

    @staticmethod
    def safe_load(stream):
        import yaml

        return yaml.safe_load(stream)


def _import_numba():
    """`import numba`, with SciPy hidden from its version check and PyYAML from its config."""
    if "numba" in sys.modules:
        return  # imported by the user already: nothing left to save
    checks = {"scipy": (_SCIPY_VERSION_CHECK,)}
    hide_yaml = not os.path.isfile(".numba_config.yaml")  # Numba's name, read from the working directory
    if hide_yaml:
        checks["yaml"] = (_YAML_CONFIG,)
    finder = _HiddenFromNumbasChecks(checks)
    sys.meta_path.insert(0, finder)
    try:
        import numba  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
    config = sys.modules["numba.core.config"]
    if hide_yaml and not config._HAVE_YAML and importlib.util.find_spec("yaml") is not None:
        config.yaml, config._HAVE_YAML = _YamlOnFirstUse(), True


def _import_numba_arraymath_without_scipy():
    """Numba's NumPy implementations (what a compile loads first), SciPy hidden from `ensure_blas`."""
    if "numba.np.arraymath" in sys.modules or "scipy.linalg.cython_blas" in sys.modules:
        return  # nothing left to save
    finder = _HiddenFromNumbasChecks({"scipy": (_SCIPY_BLAS_CHECK,)})
    sys.meta_path.insert(0, finder)
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        sys.meta_path.remove(finder)


# The values Numba takes for NUMBA_THREADING_LAYER (a layer, or a rule to pick one).
THREADING_LAYERS = ("workqueue", "omp", "tbb", "default", "safe", "threadsafe", "forksafe")


def _check_numba_environment():
    """ValueError naming NUMBA_NUM_THREADS or NUMBA_THREADING_LAYER when the value set cannot
    work. Numba itself says "Number of threads specified must be > 0." from inside its
    import, warns with a traceback and goes on for a value that is not a number, and names
    an unknown layer only when a kernel first runs; none of those names the variable."""
    threads = os.environ.get("NUMBA_NUM_THREADS")
    if threads is not None and not (threads.strip().isdigit() and int(threads) > 0):
        raise ValueError(f"NUMBA_NUM_THREADS={threads!r}: expected a positive whole number of threads "
                         f"(or leave it unset for one per CPU)")
    layer = os.environ.get("NUMBA_THREADING_LAYER")
    if layer is not None and layer not in THREADING_LAYERS:
        raise ValueError(f"NUMBA_THREADING_LAYER={layer!r} is not a threading layer Numba knows: "
                         f"{', '.join(THREADING_LAYERS)}")


# Must happen before `import numba`; the user's choice wins.
_check_numba_environment()
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
_import_numba()


def _prefer_512_bit_vectors():
    """Let LLVM vectorize the kernels' loops with 512-bit registers where the CPU has AVX-512.

    LLVM's tuning for Intel's AVX-512 CPUs prefers 256-bit vectors in loops it vectorizes
    itself ("prefer-256-bit": older ones lowered their clock for 512-bit code), so exp,
    GELU, LayerNorm and softmax loops would run at half the width the micro-kernels use anyway.
    Numba compiles for the host's feature list (`numba.core.config.CPU_FEATURES` when set);
    here that list gains "-prefer-256-bit" on such a CPU, unless the user set
    NUMBA_CPU_FEATURES or NUMBA_CPU_NAME, or Numba has already compiled something.
    Numba keys its disk cache on the feature list, so kernels cached without it recompile.
    """
    from numba.core import config, registry

    if config.CPU_FEATURES is not None or config.CPU_NAME is not None or not config.ENABLE_AVX:
        return
    if "_toplevel_target_context" in vars(registry.cpu_target):  # too late: its code generator exists
        return
    import llvmlite.binding as ll

    try:
        features = ll.get_host_cpu_features()
    except RuntimeError:
        return
    if features.get("avx512f"):
        config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"

import numba  # noqa: E402
import numba.extending  # noqa: E402
import numpy as np  # noqa: E402
from numba import prange  # noqa: E402,F401  (re-exported for the kernel modules)
from numba.core import caching  # noqa: E402
from numba.core.cgutils import get_or_insert_function as cgutils_get_or_insert_function  # noqa: E402
from numba.core.runtime import rtsys  # noqa: E402

KERNELS_DIR = Path(__file__).resolve().parent
_prefer_512_bit_vectors()


__all__ = ["jit", "prange", "parallel_chunks", "run_chunks", "fetch_add", "add_release", "wait_until_at_least",
           "claim_front", "claim_back", "data_address", "cache_dir", "numba", "even_bounds", "PHASE_COUNTERS",
           "PHASE_FINISHED"]


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
    files = {os.path.realpath(py_file)}
    with os.scandir(KERNELS_DIR) as entries:  # scandir: one system call, no Path objects per kernel
        files.update(entry.path for entry in entries if entry.name.endswith(".py"))
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
    """Numba's per-function disk cache, with our locators and a lighter load.

    Numba's `load_overload` first refreshes the whole target context: it imports and
    registers every implementation Numba has (NumPy, unicode, typed containers, random,
    ...), the largest part of a new process's time to its first vector. Linking a cached
    kernel needs none of it, only the runtime (NRT) that compiled code calls to hold
    arrays; a cache miss compiles, and Numba's compiler refreshes the context itself
    before it compiles anything.
    """

    _impl_class = _KernelCacheImpl

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)  # once per process; what cached code links against
        with self._guard_against_spurious_io_errors():
            compiled = self._load_overload(sig, target_context)
        if compiled is None:  # not in the cache: Numba compiles it next
            compile_notice()
            _import_numba_arraymath_without_scipy()
        return compiled


_compile_noticed = False


def compile_notice(stream=None):
    """Say once per process, on a terminal, that the kernels are being compiled: the first run
    on a machine spends tens of seconds in LLVM with nothing else to show."""
    global _compile_noticed
    stream = stream if stream is not None else sys.stderr
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if _compile_noticed or not terminal:
        return
    _compile_noticed = True
    stream.write("transformer: compiling the kernels for this CPU (the first run only: they are kept "
                 "in a cache; this takes up to a minute)\n")
    stream.flush()


# ---------------------------------------------------------------------------------------
# Where the cache goes when Numba's own places are not writable.


def _private_dir(path):
    """True when `path` is, or has just been made, a private directory of this user: a real
    directory (not a symbolic link), owned by this user, that no other user may write to,
    in which a file can be created.

    Numba's cache index files are pickles, loaded when a kernel is looked up: a cache
    directory someone else can write to (or made first, under a name they can guess) would
    run their code in this process. A directory that fails the check is not used."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        status = os.lstat(path)
    except OSError:
        return False
    owner = os.getuid() if hasattr(os, "getuid") else status.st_uid
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != owner or status.st_mode & 0o022:
        return False
    try:
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _fallback_cache_dirs():
    """Candidate directories, best first: the user's cache directory, then the user's runtime
    directory ($XDG_RUNTIME_DIR, private by construction, when the session has one). Never a
    shared place such as the system's temporary directory."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [os.path.join(xdg, "transformer", "numba")]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "transformer", "numba"))
    return candidates


_caching_disabled = False  # set once nothing writable was found (warned once)


def _use_fallback_cache_dir():
    """Point NUMBA_CACHE_DIR at the first writable fallback; False when there is none."""
    for path in _fallback_cache_dirs():
        if _private_dir(path):
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
        "transformer.kernels: no private writable directory for Numba's kernel cache "
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
        else:  # every kernel compiles in every process
            _import_numba_arraymath_without_scipy()
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
    if work < 2 * work_per_chunk:  # not worth a second thread; skip asking Numba
        return 1
    return max(1, min(numba.get_num_threads(), int(work // work_per_chunk)))


def even_bounds(items, chunks):
    """[0, ..., items]: `chunks` contiguous runs of items as equal in size as they can be."""
    return [chunk * items // chunks for chunk in range(chunks + 1)]


# ---------------------------------------------------------------------------------------
# Threads for `run_chunks`: persistent workers that spin briefly, then sleep.
#
# A ThreadPoolExecutor hand-off (submit + Future.result, the pool thread asleep on a queue)
# wakes a sleeping thread through the OS for every call, and a small forward pass makes many
# calls. Here each worker thread owns a small int64 array of
# counters [posted, done]. The caller stores the job, bumps `posted` and runs its own
# chunk; the worker, spinning in compiled nogil code on `posted`, sees it within a
# microsecond, takes the GIL to unpack the arguments and runs its chunk. It publishes
# `done` from compiled code too, after it let go of the GIL, so the caller that sees it
# can take the GIL at once. After a job the worker spins for at most SPIN_SECONDS on the
# next one (a forward pass calls again within tens of microseconds), then blocks on a
# Condition, so an idle process never keeps a core busy. Every spin round yields the core
# to any other runnable thread (sched_yield), so a spinner never holds up the thread it
# waits for, nor another process. When the caller is done with its own chunk and a worker
# has not started its chunk yet (descheduled by another process, or still waking up), the
# caller takes that chunk back and runs it itself, instead of waiting. Otherwise it spins
# on `done` for up to WAIT_SPIN_SECONDS, then polls it with short sleeps (long chunks).

SPIN_SECONDS = 200e-6  # how long an idle worker spins before it blocks
WAIT_SPIN_SECONDS = 2e-3  # how long the caller spins on the workers' `done` before it sleeps
_TICKS_PER_SECOND = 2.5e9  # rough cycle-counter rate (x86 TSC); only bounds the spins
_SPIN_TICKS = int(SPIN_SECONDS * _TICKS_PER_SECOND)
_WAIT_SPIN_TICKS = int(WAIT_SPIN_SECONDS * _TICKS_PER_SECOND)
_SPIN_ROUNDS = 2_000  # also bounds the spins where the cycle counter does not tick (a round is >= 0.1 us)
_POSTED, _DONE = 0, 1


@numba.extending.intrinsic
def _load_acquire(typingctx, counters, index):
    """counters[index] read with an atomic acquire load (re-read every time, never hoisted)."""
    from llvmlite import ir

    if not (isinstance(counters, numba.types.Array) and counters.dtype == numba.types.int64):
        raise TypeError(f"_load_acquire: counters must be an int64 array, got {counters}")

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        pointer = builder.gep(array.data, [args[1]])
        return builder.load_atomic(pointer, "acquire", 8, typ=ir.IntType(64))

    return numba.types.int64(counters, numba.types.intp), codegen


@numba.extending.intrinsic
def _store_release(typingctx, counters, index, value):
    """counters[index] = value with an atomic release store (seen by `_load_acquire`)."""
    if not (isinstance(counters, numba.types.Array) and counters.dtype == numba.types.int64):
        raise TypeError(f"_store_release: counters must be an int64 array, got {counters}")

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        builder.store_atomic(args[2], builder.gep(array.data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return numba.types.void(counters, numba.types.intp, numba.types.int64), codegen


@numba.extending.intrinsic
def fetch_add(typingctx, counters, index, delta):
    """counters[index] += delta as one atomic step; returns the value before. Threads that
    share `counters` each get distinct values: kernels use it to claim work items."""
    if not (isinstance(counters, numba.types.Array) and counters.dtype == numba.types.int64):
        raise TypeError(f"fetch_add: counters must be an int64 array, got {counters}")

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        delta = context.cast(builder, args[2], signature.args[2], numba.types.int64)
        return builder.atomic_rmw("add", builder.gep(array.data, [args[1]]), delta, "monotonic")

    return numba.types.int64(counters, numba.types.intp, delta), codegen


@numba.extending.intrinsic
def add_release(typingctx, counters, index, delta):
    """counters[index] += delta as one atomic step that also publishes this thread's earlier
    writes: a thread that sees the new value (`wait_until_at_least`) sees them too. Kernels
    use it to count finished work items."""
    if not (isinstance(counters, numba.types.Array) and counters.dtype == numba.types.int64):
        raise TypeError(f"add_release: counters must be an int64 array, got {counters}")

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        delta = context.cast(builder, args[2], signature.args[2], numba.types.int64)
        builder.atomic_rmw("add", builder.gep(array.data, [args[1]]), delta, "acq_rel")
        return context.get_dummy_value()

    return numba.types.void(counters, numba.types.intp, delta), codegen


# A phase of a program run by many threads at once (the GEMM's, attention's, LayerNorm's
# `*_phase` kernels; kernels/program.py runs them in turn) counts on PHASE_COUNTERS int64
# counters of its own (128 bytes: two cache lines, shared with no other phase): claim
# counters from 0, and at PHASE_FINISHED the items finished, which every thread waits on
# before the next phase reads what the others wrote.
PHASE_COUNTERS = 16
PHASE_FINISHED = 8

# A range of work units that its owner takes from the front while other threads take from
# the back, through one int64 counter: units taken from the front in its low 32 bits, from
# the back in its high ones. Whoever's fetch-add comes first wins a unit; a unit is taken at
# most once, and every unit is taken. (For a front claim of `batch` units (f, b) seen before
# the add: units f.. are the claimer's while f + i + b < units; a back claim seen as (f, b)
# gets unit units - 1 - b while f + b < units.)
_LOW_32 = (1 << 32) - 1
_ONE_BACK = 1 << 32


@jit(inline="always")
def claim_front(counters, index, units, batch):
    """Take up to `batch` units of the range counted in counters[index] from its front:
    (first unit, count); count <= 0 when none is left."""
    before = fetch_add(counters, index, batch)
    first = before & _LOW_32
    return first, min(batch, units - (before >> 32) - first)


@jit(inline="always")
def claim_back(counters, index, units):
    """Take one unit of the range counted in counters[index] from its back: the unit, or -1
    when none is left."""
    before = fetch_add(counters, index, _ONE_BACK)
    if (before & _LOW_32) + (before >> 32) >= units:
        return -1
    return units - 1 - (before >> 32)


@numba.extending.intrinsic
def data_address(typingctx, array):
    """The address of array's first element, as an int (kernels compare two arrays' with it:
    is `out` the array `x` itself?)."""
    from llvmlite import ir

    if not isinstance(array, numba.types.Array):
        raise TypeError(f"data_address: expected an array, got {array}")

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return numba.types.int64(array), codegen


@numba.extending.intrinsic
def _yield_and_read_clock(typingctx):
    """Give the core away if another thread waits for it, then read the cycle counter.

    The yield is `sched_yield()` on POSIX systems (a pause hint elsewhere): a spinning
    thread woken onto the core of the thread it waits for would otherwise keep that
    thread off the core until the spin ends. The counter is `llvm.readcyclecounter`
    (rdtsc on x86, 0 where there is none).
    """
    from llvmlite import ir

    def codegen(context, builder, signature, args):
        module = builder.module
        if os.name == "posix":
            sched_yield = cgutils_get_or_insert_function(module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(sched_yield, [])
        elif platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
            pause = module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(pause, [])
        counter = module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(counter, [])

    return numba.types.int64(), codegen


@jit
def _spin_until_at_least(counters, index, target, ticks, rounds):
    """Spin (nogil) until counters[index] >= target, for at most `ticks` cycles or `rounds`
    rounds; returns counters[index]."""
    value = _load_acquire(counters, index)
    if value >= target:
        return value
    start = _yield_and_read_clock()
    for _ in range(rounds):
        value = _load_acquire(counters, index)
        if value >= target:
            return value
        if _yield_and_read_clock() - start > ticks:
            break
    return _load_acquire(counters, index)


@jit
def wait_until_at_least(counters, index, target):
    """Wait (nogil, spinning, the core yielded on every round) until counters[index] >= target:
    for a phase's work items that other threads are finishing (`add_release`)."""
    while _spin_until_at_least(counters, index, target, _WAIT_SPIN_TICKS, 10 * _SPIN_ROUNDS) < target:
        pass


@jit
def _publish_then_spin(counters, done, ticks, rounds):
    """A worker's step between jobs, all without the GIL: counters[_DONE] = done, then spin
    until counters[_POSTED] > done (see `_spin_until_at_least`); returns counters[_POSTED]."""
    _store_release(counters, 1, done)  # 1 = _DONE, 0 = _POSTED
    return _spin_until_at_least(counters, 0, done + 1, ticks, rounds)


class _Worker:
    """One persistent thread that runs the chunks handed to it; see the comment above."""

    def __init__(self):
        self.counters = np.zeros(8, dtype=np.int64)  # [posted, done, unused...]: one cache line
        self.condition = threading.Condition(threading.Lock())
        self.sleeping = False  # the worker waits on `condition` for the next job
        self.job = None
        self.error = None
        self.thread = threading.Thread(target=self._loop, name="transformer-kernels", daemon=True)
        self.thread.start()

    def _loop(self):
        counters, condition = self.counters, self.condition
        done = 0
        while True:
            if _publish_then_spin(counters, done, _SPIN_TICKS, _SPIN_ROUNDS) <= done:
                with condition:
                    while counters[_POSTED] <= done:
                        self.sleeping = True
                        condition.wait()
            with condition:  # the job, unless the caller took it back already
                job, self.job = self.job, None
                done = int(counters[_POSTED])
            if job is not None:
                range_kernel, args, first, stop = job
                try:
                    range_kernel(*args, first, stop)
                except BaseException as error:  # handed to the caller, which raises it
                    self.error = error

    def post(self, range_kernel, args, first, stop):
        """Hand range_kernel(*args, first, stop) to the worker; returns at once."""
        self.error = None
        with self.condition:
            self.job = (range_kernel, args, first, stop)
            self.counters[_POSTED] += 1
            if self.sleeping:
                self.sleeping = False
                self.condition.notify()

    def finish(self):
        """Make sure the posted job is done: run it here if the worker has not started it
        (it may be descheduled, or still waking up), else wait for the worker. Raises the
        error the job raised, if any."""
        with self.condition:
            job, self.job = self.job, None
        if job is not None:  # taken back: the worker will find no job and skip it
            range_kernel, args, first, stop = job
            range_kernel(*args, first, stop)
            return
        counters = self.counters
        target = int(counters[_POSTED])
        if _spin_until_at_least(counters, _DONE, target, _WAIT_SPIN_TICKS, 10 * _SPIN_ROUNDS) < target:
            while counters[_DONE] < target:  # a long chunk: poll, the GIL released while asleep
                time.sleep(50e-6)
        if self.error is not None:
            error, self.error = self.error, None
            raise error


_workers = []  # the persistent workers, made on first use, more when more chunks are asked for
_workers_lock = threading.Lock()  # held by the one caller using the workers at a time
_workers_pid = None  # the process that made them (a forked child makes its own)
_pool = None  # for callers that find the workers busy (run_chunks called from two threads at once)
_pool_workers = 0


def _executor(workers):
    global _pool, _pool_workers
    if _pool is None or _pool_workers < workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="transformer-kernels-pool")
        _pool_workers = workers
    return _pool


def _run_on_pool(range_kernel, bounds, args):
    chunks = len(bounds) - 1
    pool = _executor(chunks - 1)
    futures = [pool.submit(range_kernel, *args, bounds[c], bounds[c + 1]) for c in range(chunks - 1)]
    range_kernel(*args, bounds[-2], bounds[-1])
    for future in futures:
        future.result()


def run_chunks(range_kernel, bounds, *args):
    """range_kernel(*args, bounds[c], bounds[c + 1]) for each chunk c, all chunks at once.

    `range_kernel` is a `@jit` function (so nogil) that does the items first..stop-1 of
    some work; `bounds` is a list of len(chunks) + 1 increasing item indices. The calling
    thread runs the last chunk, worker threads the others; returns when all are done.
    """
    global _workers, _workers_pid
    chunks = len(bounds) - 1
    if chunks == 1:
        range_kernel(*args, bounds[0], bounds[1])
        return
    if not _workers_lock.acquire(blocking=False):  # another thread is using the workers
        _run_on_pool(range_kernel, bounds, args)
        return
    try:
        if _workers_pid != os.getpid():
            _workers, _workers_pid = [], os.getpid()
        while len(_workers) < chunks - 1:
            _workers.append(_Worker())
        for c in range(chunks - 1):
            _workers[c].post(range_kernel, args, bounds[c], bounds[c + 1])
        try:
            range_kernel(*args, bounds[-2], bounds[-1])
        finally:
            for c in range(chunks - 1):
                _workers[c].finish()
    finally:
        _workers_lock.release()
