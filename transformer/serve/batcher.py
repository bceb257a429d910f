"""Dynamic batching: the texts of concurrent requests merged into length-sorted batches.

    batcher = Batcher(engine.embed, max_batch_tokens=8192, max_queue=1024)
    vectors = await batcher.embed([[101, 7592, 102], [101, 2088, 102]])   # float32 [2, dim]

Each request hands its token id lists to `embed` and waits. One forward thread takes what is
waiting, oldest first, up to `max_batch_tokens` real tokens; sorts it by length; and cuts it
into batches whose padded size (rows x longest row) stays within the same budget, as
text-embeddings-inference does. The forward pass runs on that thread, off the event loop, so
the server keeps accepting requests while the model runs, and those requests form the next
batch. The thread takes the next batch itself as soon as a batch is done, without a round
trip through the event loop (which may be busy answering, or waiting for a core): the model
never idles while texts wait. Answers go back to the event loop, one call per batch.

The queue is bounded: `max_queue` texts admitted and not yet answered. A request that would
go past it is refused at once (QueueFull, the server's 429), so memory never grows with the
load. `close()` refuses new work (Closed, the server's 503) and returns when what was
admitted is answered.
"""

import asyncio
import threading
import time

import numpy as np


class QueueFull(Exception):
    """The queue holds `max_queue` texts already; try again after `retry_after` seconds."""

    def __init__(self, retry_after):
        super().__init__(f"the server's queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Closed(Exception):
    """The server is shutting down and takes no new work."""


class _Request:
    """One caller's texts in flight: its rows as they come back, and the future it awaits."""

    __slots__ = ("future", "rows", "missing")

    def __init__(self, future, count):
        self.future = future
        self.rows = [None] * count
        self.missing = count


class Batcher:
    """Merges token id lists from concurrent callers into batches for `embed_batch`.

    embed_batch: [token ids] -> float32 [n, ...] (run on the forward thread).
    thread_setup: called once on the forward thread before any batch (e.g. to set its threads).
    on_batch(rows, padded_tokens, seconds): told after each batch, on the forward thread (metrics).
    """

    def __init__(self, embed_batch, max_batch_tokens, max_queue, thread_setup=None, on_batch=None):
        self.embed_batch = embed_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.thread_setup = thread_setup or (lambda: None)
        self.on_batch = on_batch or (lambda rows, tokens, seconds: None)
        self.admitted = 0  # texts accepted and not yet answered (touched on the event loop only)
        self._pending = []  # [(token ids, (request, row))], oldest first; guarded by _ready's lock
        self._ready = threading.Condition()
        self._loop = None
        self._thread = None
        self._closed = False
        self._stopping = False

    @property
    def waiting(self):
        """Texts in the queue, not yet in a batch."""
        return len(self._pending)

    def start(self):
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="forward", daemon=True)
        self._thread.start()

    async def embed(self, sequences):
        """[token ids] -> float32 [len(sequences), ...], in order. Raises QueueFull or Closed."""
        if self._closed:
            raise Closed()
        if self.admitted + len(sequences) > self.max_queue:
            raise QueueFull(retry_after=1)
        request = _Request(self._loop.create_future(), len(sequences))
        with self._ready:
            self._pending.extend((ids, (request, row)) for row, ids in enumerate(sequences))
            self._ready.notify()
        self.admitted += len(sequences)
        try:
            return await request.future
        finally:
            self.admitted -= len(sequences)

    async def close(self):
        """Refuse new work; return once everything admitted has been answered."""
        self._closed = True
        while self.admitted or self._pending:
            await asyncio.sleep(0.01)
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _take(self):
        """Oldest first, up to max_batch_tokens real tokens (at least one text). Called with
        the lock held."""
        taken, tokens = 0, 0
        for ids, _ in self._pending:
            if taken and tokens + len(ids) > self.max_batch_tokens:
                break
            taken += 1
            tokens += len(ids)
        round_, self._pending = self._pending[:taken], self._pending[taken:]
        return round_

    def _batches(self, round_):
        """Length-sorted batches whose padded size (rows x longest) fits max_batch_tokens."""
        round_ = sorted(round_, key=lambda item: -len(item[0]))  # longest first: each batch's first row is its longest
        batches, current = [], []
        for item in round_:
            if current and (len(current) + 1) * len(current[0][0]) > self.max_batch_tokens:
                batches.append(current)
                current = []
            current.append(item)
        return batches + [current]

    def _run(self):
        """The forward thread: batches, one after another, while there are texts waiting."""
        self.thread_setup()
        while True:
            with self._ready:
                while not self._pending and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                round_ = self._take()
            for batch in self._batches(round_):
                batch = [item for item in batch if not item[1][0].future.cancelled()]  # callers gone away
                if not batch:
                    continue
                sequences = [ids for ids, _ in batch]
                started = time.perf_counter()
                try:
                    result = self.embed_batch(sequences)
                except Exception as error:  # the callers of this batch get the error; the thread goes on
                    result = error
                else:
                    self.on_batch(len(batch), len(batch) * len(sequences[0]), time.perf_counter() - started)
                self._loop.call_soon_threadsafe(self._answer, [slot for _, slot in batch], result)

    @staticmethod
    def _answer(slots, result):
        """On the event loop: a batch's rows (or its error) to the requests they belong to."""
        for index, (request, row) in enumerate(slots):
            if request.future.done():  # cancelled, or failed by another batch
                continue
            if isinstance(result, Exception):
                request.future.set_exception(result)
                continue
            request.rows[row] = result[index]
            request.missing -= 1
            if not request.missing:
                request.future.set_result(np.stack(request.rows))
