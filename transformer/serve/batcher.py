"""Dynamic batching: the texts of concurrent requests merged into length-sorted batches.

    batcher = Batcher(engine.embed, max_batch_tokens=8192, max_queue=1024)
    vectors = await batcher.embed([[101, 7592, 102], [101, 2088, 102]])   # float32 [2, dim]

Each request hands its token id lists to `embed` and waits. One worker task takes what is
waiting, oldest first, up to `max_batch_tokens` real tokens; sorts it by length; and cuts it
into batches whose padded size (rows x longest row) stays within the same budget, as
text-embeddings-inference does. The forward pass runs on one worker thread, off the event
loop, so the server keeps accepting requests while the model runs, and those requests form
the next batch.

The queue is bounded: `max_queue` texts admitted and not yet answered. A request that would
go past it is refused at once (QueueFull, the server's 429), so memory never grows with the
load. `close()` refuses new work (Closed, the server's 503) and returns when what was
admitted is answered.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class QueueFull(Exception):
    """The queue holds `max_queue` texts already; try again after `retry_after` seconds."""

    def __init__(self, retry_after):
        super().__init__(f"the server's queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Closed(Exception):
    """The server is shutting down and takes no new work."""


class Batcher:
    """Merges token id lists from concurrent callers into batches for `embed_batch`.

    embed_batch: [token ids] -> float32 [n, dim] (run on the worker thread).
    thread_setup: called once on the worker thread before any batch (e.g. to set its threads).
    on_batch(rows, padded_tokens, seconds): told after each batch (metrics).
    """

    def __init__(self, embed_batch, max_batch_tokens, max_queue, thread_setup=None, on_batch=None):
        self.embed_batch = embed_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.on_batch = on_batch or (lambda rows, tokens, seconds: None)
        self.admitted = 0  # texts accepted and not yet answered
        self._pending = []  # [(token ids, future)], oldest first
        self._wakeup = None
        self._worker = None
        self._closed = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="forward", initializer=thread_setup)

    @property
    def waiting(self):
        """Texts in the queue, not yet in a batch."""
        return len(self._pending)

    def start(self):
        self._wakeup = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def embed(self, sequences):
        """[token ids] -> float32 [len(sequences), dim], in order. Raises QueueFull or Closed."""
        if self._closed:
            raise Closed()
        if self.admitted + len(sequences) > self.max_queue:
            raise QueueFull(retry_after=1)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in sequences]
        self._pending.extend(zip(sequences, futures))
        self.admitted += len(sequences)
        self._wakeup.set()
        try:
            rows = await asyncio.gather(*futures)
        finally:
            self.admitted -= len(sequences)
        return np.stack(rows)

    async def close(self):
        """Refuse new work; return once everything admitted has been answered."""
        self._closed = True
        while self.admitted or self._pending:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    def _take(self):
        """Oldest first, up to max_batch_tokens real tokens (at least one text)."""
        self._pending = [item for item in self._pending if not item[1].cancelled()]  # callers gone away
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

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                for batch in self._batches(self._take()):
                    sequences = [ids for ids, _ in batch]
                    started = time.perf_counter()
                    try:
                        vectors = await loop.run_in_executor(self._executor, self.embed_batch, sequences)
                    except Exception as error:  # the callers of this batch get the error; the worker goes on
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(error)
                        continue
                    self.on_batch(len(batch), len(batch) * len(sequences[0]), time.perf_counter() - started)
                    for (_, future), vector in zip(batch, vectors):
                        if not future.done():  # a caller that went away cancelled its future
                            future.set_result(vector)
