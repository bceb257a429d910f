"""One block of memory for a model's packed weights, in 2 MiB pages where the OS allows.

Why: at small batches a forward pass is bound by memory bandwidth, not arithmetic. A
batch-1 MiniLM forward on 16 tokens streams all 42 MB of layer weights from DRAM (they do
not stay in the last-level cache between calls), and with ordinary 4 KiB pages that is
10,000 pages: a TLB miss every 4 KiB, and the hardware prefetchers stop at every page
boundary. Linux's transparent huge pages (2 MiB) make it 21 pages (docs/performance.md has
what that saves).

Linux gives huge pages to anonymous memory that asks for them (`madvise(MADV_HUGEPAGE)`;
the default mode of most distributions is "madvise"), not to memory-mapped files, so the
packed weights are copied (or read, from the packed cache) into one `WeightArena`:

    arena = WeightArena(total_bytes)        # reserves address space; pages come on first touch
    panels = arena.take((96, 384, 16))      # a float32 view, 64-byte aligned
    panels[...] = packed_panels             # the pages of the arena fill as it is written

Only whole 2 MiB extents are advised as huge pages; the last partial one stays in 4 KiB
pages, so the arena's resident size is what is written into it, never a rounded-up 2 MiB.
Where there is no `madvise` (not Linux, or THP switched off) the arena is ordinary memory:
the same numbers, only the TLB saving is lost.
"""

import mmap

import numpy as np

HUGE_PAGE = 2 << 20  # bytes in one x86-64 / arm64 transparent huge page
ALIGN = 64  # each array starts on a cache line


def aligned(nbytes):
    """nbytes rounded up to a whole number of cache lines (ALIGN bytes)."""
    return -(-nbytes // ALIGN) * ALIGN


class WeightArena:
    """A bump allocator over one anonymous memory block, 2 MiB-aligned, advised as huge pages.

    take(shape) hands out float32 [shape] views, one after another, until the block is full.
    """

    def __init__(self, nbytes):
        self.nbytes = int(nbytes)
        self.used = 0
        self._buffer = self._allocate(self.nbytes)

    @staticmethod
    def _allocate(nbytes):
        """A uint8 [nbytes] array; its start 2 MiB-aligned in an mmap where huge pages can be asked for."""
        advise = getattr(mmap.mmap, "madvise", None)
        flag = getattr(mmap, "MADV_HUGEPAGE", None)
        if nbytes < HUGE_PAGE or advise is None or flag is None:
            return WeightArena._ordinary(nbytes)
        try:
            block = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except (OSError, ValueError, AttributeError):
            return WeightArena._ordinary(nbytes)
        whole = np.frombuffer(block, dtype=np.uint8)  # keeps `block` alive as its base
        start = (-whole.ctypes.data) % HUGE_PAGE  # the first 2 MiB boundary
        huge_bytes = nbytes // HUGE_PAGE * HUGE_PAGE  # whole huge pages only: no rounded-up tail
        try:
            block.madvise(flag, start, huge_bytes)
        except OSError:  # THP not available: ordinary pages, same numbers
            pass
        return whole[start:start + nbytes]

    @staticmethod
    def _ordinary(nbytes):
        """A uint8 [nbytes] array of ordinary memory, its start on a cache line."""
        whole = np.empty(nbytes + ALIGN, dtype=np.uint8)
        start = (-whole.ctypes.data) % ALIGN
        return whole[start:start + nbytes]

    def take(self, shape):
        """A float32 array of `shape` in the arena (contents undefined until written)."""
        count = int(np.prod(shape, dtype=np.int64))
        first = self.used
        if first + 4 * count > self.nbytes:
            raise ValueError(f"WeightArena: {shape} does not fit: {self.nbytes - first} of {self.nbytes} bytes left")
        self.used = first + aligned(4 * count)
        return self._buffer[first:first + 4 * count].view(np.float32).reshape(shape)

    @staticmethod
    def bytes_for(shapes):
        """The arena size that holds float32 arrays of these shapes (with their alignment)."""
        return sum(aligned(4 * int(np.prod(shape, dtype=np.int64))) for shape in shapes)
