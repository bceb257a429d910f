"""Startup and the kernel cache: nothing compiles at import, unwritable cache dirs are survived."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from transformer.kernels import _jit


def run_python(code, env=None, cwd=None):
    """Run `code` in a fresh interpreter; returns its stdout (fails the test on error)."""
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=full_env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_import_transformer_imports_neither_numba_nor_kernels():
    out, _ = run_python("""
        import sys
        import transformer
        import transformer.kernels
        print(sorted(m for m in sys.modules if m == "numba" or m.startswith("transformer.kernels.")))
    """)
    assert out.strip() == "[]"


def test_importing_every_kernel_module_compiles_nothing():
    out, _ = run_python("""
        import importlib, pkgutil
        import transformer.kernels as package
        from numba.core.registry import CPUDispatcher
        compiled = []
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module("transformer.kernels." + info.name)
            for name, value in vars(module).items():
                if isinstance(value, CPUDispatcher) and value.overloads:
                    compiled.append(f"{info.name}.{name}")
        print("compiled:", compiled)
    """)
    assert out.strip() == "compiled: []"


def test_numba_gets_the_workqueue_threading_layer_unless_the_user_chose_one():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", "import transformer.kernels._jit as j, os; "
                          "print(os.environ['NUMBA_THREADING_LAYER'], j.numba.config.THREADING_LAYER)"],
                         capture_output=True, text=True, env=env).stdout
    assert out.split() == ["workqueue", "workqueue"]
    out, _ = run_python("import transformer.kernels._jit as j; print(j.numba.config.THREADING_LAYER)",
                        env={"NUMBA_THREADING_LAYER": "omp"})
    assert out.strip() == "omp"


@pytest.mark.parametrize("variable, value", [("NUMBA_NUM_THREADS", "0"), ("NUMBA_NUM_THREADS", "abc"),
                                             ("NUMBA_NUM_THREADS", ""), ("NUMBA_THREADING_LAYER", "garbage")])
def test_a_numba_variable_that_cannot_work_is_one_error_naming_it(variable, value):
    result = subprocess.run([sys.executable, "-c", "import transformer.kernels._jit"], capture_output=True, text=True,
                            env=dict(os.environ, **{variable: value}))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(f"ValueError: {variable}={value!r}")
    assert "RuntimeWarning" not in result.stderr  # Numba's own warning, traceback inside, never shows


KERNEL_MODULE = """
from pathlib import Path

import numpy as np
from transformer.kernels._jit import jit

@jit
def add_one(x):
    return x + np.float32(1)
"""


def blocked_dir(tmp_path, name):
    """A path that cannot be created: its parent is a regular file (fails even for root)."""
    blocker = tmp_path / f"{name}-is-a-file"
    blocker.write_text("")
    return str(blocker / "cache")


def isolated_module(tmp_path):
    """A kernel module whose own __pycache__ cannot be created (it is a file)."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "mykernels.py").write_text(KERNEL_MODULE)
    (source / "__pycache__").write_text("not a directory")
    return source


def unwritable_numba_env(tmp_path):
    """No NUMBA_CACHE_DIR, and ~/.cache (hence ~/.cache/numba) cannot be created."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["HOME"] = blocked_dir(tmp_path, "home")
    env["XDG_CACHE_HOME"] = blocked_dir(tmp_path, "xdg")
    return env


def test_unwritable_cache_dirs_fall_back_to_the_private_runtime_dir(tmp_path):
    source = isolated_module(tmp_path)
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    env = unwritable_numba_env(tmp_path)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    code = """
        import warnings
        warnings.simplefilter("error")  # a fallback that works must not warn
        import numpy as np, mykernels
        from transformer.kernels._jit import cache_dir
        print(mykernels.add_one(np.float32(1)), cache_dir(mykernels.add_one))
        print(dict(mykernels.add_one.stats.cache_hits))
    """
    first = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    value, where = first.stdout.splitlines()[0].split()
    assert value == "2.0"
    assert where.startswith(str(runtime / "transformer" / "numba"))
    assert any(name.endswith(".nbi") for name in os.listdir(where))
    second = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[1] != "{}"  # the second process loaded it from the cache


# A Numba cache index whose unpickling writes a file: what another user could leave in a
# shared cache directory made before ours.
_EVIL_INDEX = """
import os, pickle
class Payload:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
"""


def test_a_cache_dir_planted_in_the_shared_temp_dir_is_never_read(tmp_path):
    import pickle

    source = isolated_module(tmp_path)
    temp = tmp_path / "tmp"
    planted = temp / f"transformer-numba-{os.getuid()}"  # the name older versions used
    planted.mkdir(parents=True, mode=0o777)
    marker = tmp_path / "code-ran"
    namespace = {}
    exec(_EVIL_INDEX.format(marker=marker), namespace)
    # Where Numba would look: let it cache the kernel there, then swap its index files.
    plant = dict(os.environ, NUMBA_CACHE_DIR=str(planted),
                 PYTHONPATH=os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", "import numpy as np, mykernels; mykernels.add_one(np.float32(1))"],
                   check=True, env=plant)
    indexes = list(planted.rglob("*.nbi"))
    assert indexes
    for index in indexes:
        index.write_bytes(pickle.dumps(namespace["Payload"]()))
    env = unwritable_numba_env(tmp_path)
    env.pop("XDG_RUNTIME_DIR", None)
    env["TMPDIR"] = str(temp)
    env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    code = """
        import warnings
        import numpy as np, mykernels
        from transformer.kernels._jit import cache_dir
        print(mykernels.add_one(np.float32(1)), cache_dir(mykernels.add_one))
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert not marker.exists()  # the planted index was never unpickled
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2.0", "None"]  # compiled in memory, no cache
    assert "no private writable directory for Numba's kernel cache" in result.stderr


def test_a_fallback_cache_dir_is_used_only_when_private(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh" / "numba"
    assert _jit._private_dir(str(fresh))
    assert fresh.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not _jit._private_dir(str(shared))  # others may write there
    link = tmp_path / "link"
    link.symlink_to(fresh)
    assert not _jit._private_dir(str(link))  # a symbolic link, wherever it points
    monkeypatch.setattr(os, "getuid", lambda: os.stat(fresh).st_uid + 1)
    assert not _jit._private_dir(str(fresh))  # someone else's


def test_nothing_writable_compiles_without_a_cache_and_warns_once(tmp_path):
    source = isolated_module(tmp_path)
    (source / "more.py").write_text(KERNEL_MODULE.replace("add_one", "add_two").replace("1)", "2)"))
    env = unwritable_numba_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    code = f"""
        import warnings
        import transformer.kernels._jit as j
        j._fallback_cache_dirs = lambda: [{blocked_dir(tmp_path, 'fallback')!r}]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import numpy as np, mykernels, more
        print(mykernels.add_one(np.float32(1)), more.add_two(np.float32(1)), j.cache_dir(mykernels.add_one))
        print(len(caught), caught[0].message if caught else "")
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    values, warning = result.stdout.splitlines()
    assert values.split() == ["2.0", "3.0", "None"]
    assert warning.startswith("1 transformer.kernels: no private writable directory for Numba's kernel cache")


def test_the_cache_key_covers_every_kernel_source_file(tmp_path, monkeypatch):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(_jit, "KERNELS_DIR", tmp_path)
    before = _jit._source_stamp(str(tmp_path / "a.py"))
    (tmp_path / "b.py").write_text("# b.py, changed: a kernel in a.py may inline a function from here\n")
    assert _jit._source_stamp(str(tmp_path / "a.py")) != before


@pytest.mark.parametrize("work, expected", [(0, 1), (10, 1), (10**12, None)])
def test_small_work_runs_on_the_calling_thread(work, expected):
    chunks = _jit.parallel_chunks(work, 1000)
    assert chunks == (expected if expected is not None else _jit.numba.get_num_threads())


# ---------------------------------------------------------------------------------------
# run_chunks: persistent workers that spin briefly, then sleep.

import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


@_jit.jit
def _fill_range(out, value, first, stop):
    for i in range(first, stop):
        out[i] = value + np.float32(i)


def test_run_chunks_runs_every_chunk_once_over_many_calls():
    out = np.zeros(1000, dtype=np.float32)
    for call in range(200):  # back to back: the worker is still spinning on the next job
        bounds = _jit.even_bounds(len(out), 1 + call % 4)
        _jit.run_chunks(_fill_range, bounds, out, np.float32(call))
        np.testing.assert_array_equal(out, call + np.arange(1000, dtype=np.float32))


def test_run_chunks_wakes_a_worker_that_went_to_sleep():
    out = np.zeros(100, dtype=np.float32)
    _jit.run_chunks(_fill_range, [0, 50, 100], out, np.float32(1))
    deadline = time.monotonic() + 5.0  # an idle worker stops spinning after SPIN_SECONDS (of its CPU time)
    while not _jit._workers[0].sleeping and time.monotonic() < deadline:
        time.sleep(20 * _jit.SPIN_SECONDS)
    assert _jit._workers[0].sleeping, "an idle worker must block, not spin forever"
    _jit.run_chunks(_fill_range, [0, 50, 100], out, np.float32(2))
    np.testing.assert_array_equal(out, 2 + np.arange(100, dtype=np.float32))


def test_an_error_in_a_worker_chunk_is_raised_by_run_chunks():
    def failing(first, stop):
        if first == 0:  # the worker's chunk (the caller runs the last one)
            raise ValueError(f"chunk {first}..{stop} failed")

    with pytest.raises(ValueError, match="chunk 0..1 failed"):
        _jit.run_chunks(failing, [0, 1, 2])
    out = np.zeros(10, dtype=np.float32)  # and the workers still work afterwards
    _jit.run_chunks(_fill_range, [0, 5, 10], out, np.float32(3))
    np.testing.assert_array_equal(out, 3 + np.arange(10, dtype=np.float32))


def test_run_chunks_from_several_threads_at_once_gives_every_caller_its_answer():
    results = {}

    def caller(index):
        out = np.zeros(5000, dtype=np.float32)
        for _ in range(50):
            _jit.run_chunks(_fill_range, [0, 2500, 5000], out, np.float32(index))
        results[index] = out

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(4):
        np.testing.assert_array_equal(results[index], index + np.arange(5000, dtype=np.float32))


def test_loading_a_kernel_does_not_import_scipy_linalg_and_np_dot_still_works():
    pytest.importorskip("scipy")  # installed with the test extras; the cut only matters with SciPy
    out, _ = run_python("""
        import sys
        import numpy as np
        from transformer.kernels.gemm import gemm, pack_weight
        gemm(np.ones((2, 3), np.float32), pack_weight(np.ones((3, 4), np.float32)))
        print("scipy.linalg" in sys.modules)

        import numba  # the user's own jitted np.dot still finds SciPy's BLAS
        print(numba.njit(lambda a, b: np.dot(a, b))(np.ones((2, 2)), np.ones((2, 2))).sum())
        import scipy.linalg
        print(scipy.linalg.norm(np.ones(4)))
    """)
    assert out.split() == ["False", "8.0", "2.0"]


def test_a_cached_kernel_loads_without_numbas_full_refresh_and_later_compiles_still_work(tmp_path):
    # Numba's own cache load imports and registers all its implementations first (the largest
    # part of a warm start); ours links the cached kernel alone. Anything compiled afterwards
    # in the same process (a kernel missing from the cache, the user's own jitted code) must
    # still get the full context.
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    gemm_call = """
        import sys
        import numpy as np
        from transformer.kernels.gemm import gemm, pack_weight
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        w = np.arange(12, dtype=np.float32).reshape(3, 4)
        print(np.array_equal(gemm(x, pack_weight(w)), x @ w), "numba.np.npyimpl" in sys.modules)
    """
    out, _ = run_python(gemm_call, env=env)  # an empty cache: compiles, so the full refresh
    assert out.split() == ["True", "True"]
    out, _ = run_python(gemm_call + """
        from transformer.kernels.layernorm import layer_norm, layer_norm_naive
        rows = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
        ones, zeros = np.ones(8, np.float32), np.zeros(8, np.float32)
        print(np.allclose(layer_norm(rows, ones, zeros, 1e-5), layer_norm_naive(rows, np.zeros_like(rows), ones, zeros, 1e-5),
                          atol=1e-6))
        import numba
        print(numba.njit(lambda a: np.sqrt(a).sum())(np.full(4, 4.0)))
    """, env=env)
    # gemm loaded alone; layer_norm, not in this cache, compiled; the user's njit compiled.
    assert out.split() == ["True", "False", "True", "8.0"]


def test_a_forward_pass_from_the_cache_loads_no_allocating_numpy_implementation():
    # The forward path's kernels allocate nothing (scratch comes from the caller), so loading
    # them links no compiled np.empty / reshape, and numba.np.arrayobj (with the unicode and
    # char-sequence modules it imports: ~40 ms) is never imported on the way to a first vector.
    family = Path(__file__).parent / "references" / "families" / "bert_gelu"
    code = f"""
        import sys
        import numpy as np
        from transformer.encoder import Encoder
        reference = dict(np.load({str(family / "reference.npz")!r}))
        model = Encoder.from_pretrained({str(family)!r}, backend="numba")
        hidden = model(reference["input_ids"], reference["attention_mask"]).last_hidden_state
        print(hidden.dtype, "numba.np.arrayobj" in sys.modules)
    """
    run_python(code)  # compiles whatever the cache lacks
    out, _ = run_python(code)
    assert out.split() == ["float32", "False"]


@_jit.jit
def _claim_items(counter, claimed_by, first, stop):
    while True:
        item = _jit.fetch_add(counter, 0, 1)
        if item >= claimed_by.shape[0]:
            return
        claimed_by[item] += first + 1  # chunk 0 writes 1, chunk 1 writes 2


def test_fetch_add_hands_every_item_to_exactly_one_thread():
    for _ in range(20):
        counter = np.zeros(1, dtype=np.int64)
        claimed_by = np.zeros(20000, dtype=np.int64)
        _jit.run_chunks(_claim_items, [0, 1, 2], counter, claimed_by)
        assert set(np.unique(claimed_by)) <= {1, 2}  # every item claimed (0: missed; 3: by both)
        # A lost update (two threads getting the same item) would leave the counter short.
        assert counter[0] == len(claimed_by) + 2  # n claims, then one empty claim per thread


def test_a_chunk_the_worker_has_not_started_is_taken_back_by_the_caller():
    worker = _jit._Worker()
    worker.post(lambda first, stop: time.sleep(0.5), (), 0, 0)  # keeps the worker busy
    while worker.job is not None:  # until the worker has taken that job
        time.sleep(0.001)
    out = np.zeros(10, dtype=np.float32)
    started = time.monotonic()
    worker.post(_fill_range, (out, np.float32(4)), 0, 10)
    worker.finish()  # the worker is busy: the caller runs the chunk itself, no waiting
    assert time.monotonic() - started < 0.4
    np.testing.assert_array_equal(out, 4 + np.arange(10, dtype=np.float32))
    worker.post(_fill_range, (out, np.float32(5)), 0, 10)  # the worker still takes later jobs
    time.sleep(1.0)
    worker.finish()
    np.testing.assert_array_equal(out, 5 + np.arange(10, dtype=np.float32))
    assert worker.counters[_jit._DONE] == 3


def _stderr_on_a_terminal(code, env):
    """Run `code` in a new interpreter with stderr on a pseudo-terminal; returns what it wrote there."""
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stderr=follower,
                               stdout=subprocess.DEVNULL, env=env)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, output
    return output.decode()


def test_a_first_compile_says_so_once_on_a_terminal_and_never_from_the_cache(tmp_path):
    source = isolated_module(tmp_path)
    (source / "more.py").write_text(KERNEL_MODULE.replace("add_one", "add_two").replace("1)", "2)"))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]))
    code = "import numpy as np, mykernels, more; mykernels.add_one(np.float32(1)); more.add_two(np.float32(1))"
    first = _stderr_on_a_terminal(code, env)
    assert first.count("transformer: compiling the kernels for this CPU") == 1  # two kernels, one note
    assert "compiling" not in _stderr_on_a_terminal(code, env)  # from the cache: nothing to say
    (source / "more.py").write_text(KERNEL_MODULE.replace("add_one", "add_two").replace("1)", "3)"))
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert piped.returncode == 0 and "compiling" not in piped.stderr  # not a terminal: quiet


# Numba internals kernels/_jit.py relies on, each for a reason its docstring gives. Nothing in
# Numba's public API promises them: when an upgrade moves one, this test names it (and the
# piece of _jit.py to revisit) instead of the kernels silently losing what it bought.
def _numba_internals():
    import inspect

    import numba
    from numba.core import caching, config, registry
    from numba.core.runtime import rtsys
    from numba.np import linalg

    return [
        ("numba._ensure_critical_deps imports scipy: _jit hides SciPy from this check at `import numba`",
         lambda: "import scipy" in inspect.getsource(numba._ensure_critical_deps)),
        ("numba.np.linalg.ensure_blas imports scipy.linalg: _jit hides it from a first compile",
         lambda: "scipy.linalg" in inspect.getsource(linalg.ensure_blas)),
        ("numba.core.config imports yaml at module level and keeps _HAVE_YAML: _jit reads PyYAML on first use",
         lambda: hasattr(config, "_HAVE_YAML") and "import yaml" in inspect.getsource(config)),
        ("numba.core.registry.CPUTarget._toplevel_target_context is made lazily (a cached property): "
         "_prefer_512_bit_vectors sets CPU_FEATURES before it exists",
         lambda: isinstance(inspect.getattr_static(registry.CPUTarget, "_toplevel_target_context"),
                            __import__("functools").cached_property)),
        ("numba.core.config.CPU_FEATURES / CPU_NAME / ENABLE_AVX / CACHE_DIR: read by _prefer_512_bit_vectors, "
         "host_has_avx512 and the fallback cache directory",
         lambda: all(hasattr(config, name) for name in ("CPU_FEATURES", "CPU_NAME", "ENABLE_AVX", "CACHE_DIR"))),
        ("numba.core.caching's locator classes and CompileResultCacheImpl._locator_classes: _jit's locators "
         "(the fallback directories, the whole-package source stamp)",
         lambda: all(hasattr(caching, name) for name in ("InTreeCacheLocator", "UserProvidedCacheLocator",
                                                          "UserWideCacheLocator"))
         and isinstance(caching.CompileResultCacheImpl._locator_classes, list)
         and callable(getattr(caching.InTreeCacheLocator, "get_source_stamp", None))),
        ("numba.core.caching.FunctionCache._impl_class, _load_overload and _guard_against_spurious_io_errors: "
         "_KernelFunctionCache.load_overload links a cached kernel without Numba's full refresh",
         lambda: all(hasattr(caching.FunctionCache, name) for name in
                     ("_impl_class", "_load_overload", "_guard_against_spurious_io_errors", "load_overload"))),
        ("numba.core.runtime.rtsys.initialize(target_context): the runtime a cached kernel links against",
         lambda: callable(rtsys.initialize)),
        ("a Dispatcher keeps its disk cache in `_cache`: jit() puts _KernelFunctionCache there",
         lambda: hasattr(numba.njit(cache=False)(lambda: 0), "_cache")),
    ]


@pytest.mark.parametrize("index", range(len(_numba_internals())))
def test_the_numba_internals_the_kernels_rely_on_are_still_there(index):
    reliance, holds = _numba_internals()[index]
    try:
        ok = holds()
    except Exception as error:  # a moved or renamed name
        ok, reliance = False, f"{reliance} ({type(error).__name__}: {error})"
    assert ok, f"Numba changed what kernels/_jit.py relies on: {reliance}"


def test_import_numba_through_the_kernels_does_not_import_scipy():
    pytest.importorskip("scipy")  # only matters where SciPy is installed
    out, _ = run_python("""
        import sys
        from transformer.kernels import _jit
        print("numba" in sys.modules, "scipy" in sys.modules)
    """)
    assert out.split() == ["True", "False"]
