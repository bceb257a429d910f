"""The weight arena: one block of memory for the packed weights, advised as huge pages."""

import mmap
import sys

import numpy as np
import pytest

from transformer.kernels.arena import ALIGN, HUGE_PAGE, WeightArena


def test_arena_hands_out_aligned_float32_arrays_that_do_not_overlap():
    shapes = [(3, 5, 16), (7,), (2, 384, 16)]
    arena = WeightArena(WeightArena.bytes_for(shapes))
    arrays = [arena.take(shape) for shape in shapes]
    for value, (array, shape) in enumerate(zip(arrays, shapes)):
        assert array.dtype == np.float32 and array.shape == shape and array.flags.c_contiguous
        assert array.ctypes.data % ALIGN == 0
        array[...] = value
    for value, array in enumerate(arrays):  # nothing written later overwrote an earlier array
        assert (array == value).all()


def test_arena_refuses_an_array_that_does_not_fit():
    arena = WeightArena(WeightArena.bytes_for([(10,)]))
    arena.take((10,))
    with pytest.raises(ValueError, match=r"\(4, 4\) does not fit: 0 of 64 bytes left"):
        arena.take((4, 4))


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"),
                    reason="transparent huge pages are a Linux feature")
def test_big_arena_starts_on_a_huge_page_and_asks_linux_for_huge_pages():
    arena = WeightArena(3 * HUGE_PAGE + 12345)
    panels = arena.take((3 * HUGE_PAGE // 64, 16))
    start = panels.ctypes.data
    assert start % HUGE_PAGE == 0
    # /proc/self/smaps lists the region's flags; "hg" = madvise(MADV_HUGEPAGE) was applied.
    flags = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                inside = low <= start < high
            elif inside and line.startswith("VmFlags:"):
                flags = fields[1:]
                break
    assert flags is not None and "hg" in flags
