"""Embedding a corpus on a Ray cluster: a Ray Data dataset in, the same dataset with an
`embedding` column out.

    import ray
    from transformer.distributed import embed_dataset

    ray.init()                                                   # or ray.init("ray://head:10001")
    ds = ray.data.read_parquet("texts.parquet")                  # a "text" column
    ds = embed_dataset(ds, model="all-MiniLM-L6-v2", column="text")
    ds.write_parquet("vectors/")                                 # text, ..., embedding

The texts go through `Dataset.map_batches` to a pool of actors; each actor loads the model
once and runs `SentenceEncoder.encode` on the batches it is given, with `threads_per_actor`
threads (and asks Ray for that many CPUs), so that actors x threads never exceeds the cores:
on one 2-core machine, 2 actors of 1 thread or 1 actor of 2 threads. Needs the `ray` extra.
docs/serving.md says how to run it on a real cluster and what scales.
"""

import numpy as np


class _Embedder:
    """One actor: a loaded model; a batch {column: texts, ...} -> the batch plus "embedding"."""

    def __init__(self, model, column, threads, backend, encode_batch_size, normalize):
        from transformer.sentence import SentenceEncoder

        self.model = SentenceEncoder.from_pretrained(model, backend=backend)
        self.column = column
        self.threads = threads
        self.encode_batch_size = encode_batch_size
        self.normalize = normalize

    def __call__(self, batch):
        from transformer.threads import set_num_threads

        set_num_threads(self.threads)  # Numba's count is per thread: set it on the thread that runs the model
        if self.column not in batch:
            raise KeyError(f"the dataset has no column {self.column!r} (it has {', '.join(map(repr, batch))}); "
                           f"pass column=NAME")
        texts = batch[self.column]
        bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
        if bad is not None:
            raise TypeError(f"column {self.column!r} holds a {type(texts[bad]).__name__} ({texts[bad]!r:.40}); "
                            f"expected text in every row")
        batch = dict(batch)
        batch["embedding"] = self.model.encode(list(texts), batch_size=self.encode_batch_size,
                                               normalize=self.normalize, show_progress=False)  # [rows, dim]
        return batch


def embed_dataset(ds, model="all-MiniLM-L6-v2", column="text", batch_size=256, precision="float32", actors=None,
                  threads_per_actor=1, backend=None, encode_batch_size=32, normalize=None):
    """A Ray Dataset -> the same rows with an "embedding" column (float32 [dim] per row).

    model: a model name or folder, resolved here (transformer.store); the actors load that
        folder, so on a cluster it must be at the same path on every node (a shared volume).
    batch_size: rows handed to an actor at a time (each actor encodes them `encode_batch_size`
        at a time, sorted by length).
    actors: the pool's size; default: the cluster's CPUs // threads_per_actor.
    precision: "float32", the only one the encoder has.
    """
    import ray

    if precision != "float32":
        raise ValueError(f"precision={precision!r}: the encoder computes in 'float32' only")
    for name, value in (("batch_size", batch_size), ("threads_per_actor", threads_per_actor),
                        ("encode_batch_size", encode_batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(column, str):
        raise TypeError(f"column must be a column name (str), got {column!r}")
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_actor)
    if not isinstance(actors, int) or isinstance(actors, bool) or actors < 1:
        raise ValueError(f"actors must be a positive integer, got {actors!r}")
    from transformer.store import resolve

    model = str(resolve(model).resolve())  # the actors load this folder: the same path on every node
    return ds.map_batches(
        _Embedder, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs=dict(model=model, column=column, threads=threads_per_actor, backend=backend,
                                   encode_batch_size=encode_batch_size, normalize=normalize),
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads_per_actor)


def vectors_in_order(ds, column="text"):
    """(texts, vectors float32 [n, dim]) of an embedded dataset, in its row order."""
    rows = ds.take_all()
    return [row[column] for row in rows], np.stack([row["embedding"] for row in rows]).astype(np.float32)
