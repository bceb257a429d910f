"""One thread setting governs Numba's kernels and NumPy's OpenBLAS."""

import subprocess
import sys

import pytest

import transformer
from transformer import threads


@pytest.fixture
def restore_threads():
    before = threads.get_num_threads()
    yield
    threads.set_num_threads(before)


def test_numpys_openblas_is_found():
    assert threads.blas_thread_functions(), "no OpenBLAS set_num_threads symbol found in the loaded libraries"
    assert threads.get_blas_num_threads() >= 1


def test_set_num_threads_sets_numba_and_blas(restore_threads):
    from transformer.kernels._jit import numba

    transformer.set_num_threads(1)
    assert transformer.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    assert threads.get_blas_num_threads() == 1
    limit = numba.config.NUMBA_NUM_THREADS
    transformer.set_num_threads(limit)
    assert transformer.get_num_threads() == limit
    assert threads.get_blas_num_threads() == limit


@pytest.mark.parametrize("bad", [0, -1, 10_000])
def test_a_thread_count_out_of_range_is_refused_with_the_limit(bad):
    with pytest.raises(ValueError, match=r"set_num_threads: n must be between 1 and \d+"):
        transformer.set_num_threads(bad)


@pytest.mark.parametrize("bad, shown", [(2.0, "the float 2.0"), ("2", "the str '2'"), (True, "the bool True"),
                                        (None, "None")])
def test_a_thread_count_that_is_not_an_int_is_refused_showing_it(bad, shown):
    with pytest.raises(TypeError, match=f"set_num_threads: n must be an int, got {shown}$"):
        transformer.set_num_threads(bad)


def test_importing_threads_does_not_import_numba():
    code = "import sys, transformer.threads; print('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_one_thread_gives_the_same_kernel_answer(restore_threads):
    import numpy as np

    from transformer.kernels.layernorm import layer_norm

    x = np.random.default_rng(0).standard_normal((400, 384)).astype(np.float32)
    weight, bias = np.ones(384, np.float32), np.zeros(384, np.float32)
    two = layer_norm(x, weight, bias, 1e-12)
    transformer.set_num_threads(1)
    np.testing.assert_array_equal(layer_norm(x, weight, bias, 1e-12), two)
