"""A vector index on disk: corpus embeddings, their texts, and an approximate-nearest-
neighbour graph (usearch's HNSW) built from them.

    index = SemanticIndex.build("notes.index", model, texts)      # embeds, builds, saves
    index.add(["one more note"])                                   # embeds, adds, saves
    index.search("where did I put the keys", k=5)                  # [[Hit(row, score, text)]]
    SemanticIndex.open("notes.index", model)                       # checked, then used

The folder holds:

    manifest.json            what the other files are (their sha256), the model's record
    vectors-<sha>.npy        float32 [n, dim], unit rows: the exact scan reads these
    documents-<sha>.jsonl    the n texts, one JSON string a line
    ann-<sha>.usearch        the HNSW graph over those rows (only past EXACT_LIMIT rows)

Every file is named by its content and written beside the old ones (a temporary file, fsync,
rename); manifest.json is replaced last, in one rename, then the files it no longer names are
deleted. A process killed at any point (kill -9 mid-build) leaves the manifest naming either
the old complete set or the new complete set; leftovers are removed by the next write.

Nothing is trusted on open: each file must have the sha256 the manifest gives it. A damaged
or missing graph is rebuilt from the vectors; vectors made by another model (its files'
sha256, pooling, normalization, dimension) or damaged vectors are embedded again from the
texts; damaged texts cannot be recovered and are reported. Each repair is said (`say`).

Small corpora (fewer than EXACT_LIMIT rows) are searched by the exact scan, a matrix
product, which is also the check the approximate search is measured against
(benchmarks/bench_index.py: recall@10).

How wide the graph search must be depends on the data: on clustered vectors (real embeddings)
a narrow search (ef 64-128) finds nearly all of the exact top 10, while on vectors spread
uniformly over the sphere even ef 1024 misses about one in six. So the graph is never trusted
blind: whenever it is built or grown, `calibrate` searches it with PROBES queries drawn near
stored rows at ef = 64, 128, ... 1024 and keeps the first ef whose recall@10 against the
exact scan reaches TARGET_RECALL. If none does, searches take the exact scan
instead (`Calibration.expansion_search` None): slower than a good graph, never a silently
worse answer. The calibration is saved in the manifest beside the graph it measured.
"""

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

VERSION = 1
EXACT_LIMIT = 20_000  # rows below which the exact scan is fast enough and no graph is kept
CONNECTIVITY = 32  # HNSW's M: graph edges per node
EXPANSION_ADD = 128  # efConstruction
EXPANSION_SEARCH = 128  # ef the graph is made with; the one searches use comes from `calibrate`
EXPANSION_LEVELS = (64, 128, 256, 512, 1024)  # the ef values `calibrate` tries, in order
TARGET_RECALL = 0.96  # recall@10 on the probes an ef must reach (above 0.95 by two standard errors)
PROBES = 200  # queries `calibrate` searches for


class IndexDamagedError(ValueError):
    """An index file cannot be used and cannot be rebuilt (the message says which and how)."""


class Calibration(NamedTuple):
    """What `VectorIndex.calibrate` measured: the ef searches use (None: the graph never reached
    the target and searches take the exact scan), and the recall@10 on the probes at that ef
    (at the widest ef tried, when None)."""
    expansion_search: object  # int, or None
    recall: float


class Hit(NamedTuple):
    row: int  # the document's position in the index (0-based, in the order added)
    score: float  # cosine similarity
    text: str = None


def _usearch():
    try:
        from usearch.index import Index
    except ImportError:
        raise ImportError("the vector index needs usearch: pip install 'transformer[index]'") from None
    return Index


# --- the vectors and their graph, no model ----------------------------------------------------


class VectorIndex:
    """Unit vectors float32 [n, dim] and, past EXACT_LIMIT rows, an HNSW graph over them."""

    def __init__(self, vectors, graph=None, exact_limit=None, calibration=None):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ValueError(f"vectors must be a 2-D array [n, dim], got shape {vectors.shape}")
        self.vectors = _unit(vectors)
        self.exact_limit = EXACT_LIMIT if exact_limit is None else exact_limit
        self.graph = graph
        self.calibration = None
        if self.graph is None and len(self.vectors) >= self.exact_limit:
            self.graph = self._new_graph()
            self._add_to_graph(0, self.vectors)
        if self.graph is not None:
            if calibration is None:
                self.calibrate()
            else:
                self._use(calibration)

    @property
    def dimension(self):
        return self.vectors.shape[1]

    def __len__(self):
        return len(self.vectors)

    def _new_graph(self):
        Index = _usearch()
        # Unit rows: inner product is the cosine, without usearch normalizing again.
        return Index(ndim=self.dimension, metric="ip", dtype="f32", connectivity=CONNECTIVITY,
                     expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)

    def _add_to_graph(self, first_row, vectors):
        keys = np.arange(first_row, first_row + len(vectors), dtype=np.uint64)
        self.graph.add(keys, vectors, threads=0)

    def add(self, vectors):
        """Append rows float32 [m, dim] (made unit length); they get rows n .. n+m-1."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(f"vectors to add have shape {vectors.shape}; this index holds vectors of "
                             f"dimension {self.dimension}")
        first = len(self.vectors)
        self.vectors = np.concatenate([self.vectors, _unit(vectors)])
        if self.graph is not None:
            self._add_to_graph(first, self.vectors[first:])
        elif len(self.vectors) >= self.exact_limit:
            self.graph = self._new_graph()
            self._add_to_graph(0, self.vectors)
        if self.graph is not None:
            self.calibrate()

    def calibrate(self, target=TARGET_RECALL, probes=PROBES, levels=EXPANSION_LEVELS, seed=0):
        """Choose the ef searches use: the first of `levels` at which the graph's recall@10
        against the exact scan, on `probes` queries drawn like the stored rows, reaches `target`;
        None (the exact scan) when none does. -> the Calibration, also kept in self.calibration.

        A stored row itself would be too easy a query: it is a node of the graph, linked to its
        neighbours. So each probe is a stored row v moved away from it as far as v's own nearest
        other row is (cosine c): q = c v + sqrt(1 - c^2) u, u a random unit direction at right
        angles to v -- a new point among the stored ones, as a real query is."""
        n = len(self.vectors)
        k = min(10, n)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(n, size=min(probes, n), replace=False)  # [p]
        rows = self.vectors[chosen]  # [p, dim]
        _, nearest = exact_search(self.vectors, rows, min(2, n))  # [p, 2]: itself, its nearest other row
        c = np.clip(nearest[:, -1:], -1, 1)  # [p, 1]
        u = rng.standard_normal(rows.shape).astype(np.float32)  # [p, dim]
        u = _unit(u - (u * rows).sum(axis=1, keepdims=True) * rows)  # [p, dim], at right angles to each row
        queries = _unit(c * rows + np.sqrt(1 - c * c) * u)  # [p, dim]
        truth, _ = exact_search(self.vectors, queries, k)  # [p, k]
        recall = 0.0
        for ef in levels:
            self.graph.expansion_search = ef
            matches = self.graph.search(queries, k, threads=0)
            found = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)  # [p, k]
            recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))
            if recall >= target:
                return self._use(Calibration(ef, recall))
        return self._use(Calibration(None, recall))

    def _use(self, calibration):
        self.calibration = Calibration(*calibration)
        if self.calibration.expansion_search is not None:
            self.graph.expansion_search = int(self.calibration.expansion_search)
        return self.calibration

    def search(self, queries, k=10, exact=None):
        """Queries float32 [q, dim] -> (rows int64 [q, k'], scores float32 [q, k']), best first,
        k' = min(k, n). exact: None -> the graph when there is one and its calibration found
        an ef that reaches the target recall, True -> the exact scan."""
        queries = _unit(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if queries.shape[1] != self.dimension:
            raise ValueError(f"queries have dimension {queries.shape[1]}; this index holds {self.dimension}")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = min(k, len(self.vectors))
        if k == 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        if exact or self.graph is None or self.calibration.expansion_search is None:
            return exact_search(self.vectors, queries, k)
        matches = self.graph.search(queries, k, threads=0)
        rows = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)  # [q, k]
        scores = (1 - np.asarray(matches.distances, dtype=np.float32)).reshape(len(queries), -1)  # ip distance = 1 - cos
        return rows, scores


def exact_search(vectors, queries, k):
    """The k rows of `vectors` [n, dim] with the highest dot product with each query [q, dim]:
    (rows int64 [q, k], scores float32 [q, k]), best first."""
    scores = queries @ vectors.T  # [q, dim] @ [dim, n] -> [q, n]
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [q, k], unordered
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64), np.take_along_axis(top_scores, order, axis=1)


def _unit(vectors):
    norms = np.sqrt((vectors * vectors).sum(axis=1, keepdims=True))  # [n, 1]
    return (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32)


# --- a corpus: texts, their vectors, the model that made them, on disk ------------------------


class SemanticIndex:
    """Texts, their embeddings by `model` (a SentenceEncoder) and a VectorIndex, kept in `path`."""

    def __init__(self, path, model, texts, vectors, model_record, say=None):
        self.path = Path(path)
        self.model = model
        self.texts = list(texts)
        self.vectors = vectors  # VectorIndex
        self.model_record = model_record
        self.say = say or (lambda message: print(message, file=sys.stderr))

    def __len__(self):
        return len(self.texts)

    @classmethod
    def build(cls, path, model, texts, batch_size=32, say=None):
        """Embed `texts` and write a new index to `path` (replacing one that is there)."""
        texts = _check_texts(texts)
        vectors = VectorIndex(model.encode(texts, batch_size=batch_size, normalize=True))
        index = cls(path, model, texts, vectors, _model_record(model), say)
        index.save()
        return index

    @classmethod
    def open(cls, path, model, batch_size=32, say=None):
        """The index in `path`, checked file by file; what is damaged or stale is rebuilt
        (and said), what cannot be rebuilt raises IndexDamagedError."""
        say = say or (lambda message: print(message, file=sys.stderr))
        path = Path(path)
        manifest_file = path / "manifest.json"
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            files = manifest["files"]
            if manifest.get("version") != VERSION:
                raise ValueError(f"version {manifest.get('version')!r}, expected {VERSION}")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} holds no index (no manifest.json); make one with "
                                    f"`transformer index build {path} --corpus FILE`") from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise IndexDamagedError(f"{manifest_file} is damaged ({error}); build the index again with "
                                    f"`transformer index build`") from None

        texts = _read_checked(path, files, "documents", lambda file: [json.loads(line) for line in
                                                                      file.read_text(encoding="utf-8").splitlines()])
        if texts is None:
            raise IndexDamagedError(f"the texts of the index in {path} are missing or damaged; build it again "
                                    f"from the corpus with `transformer index build`")
        record = _model_record(model, memo=(manifest.get("model") or {}).get("files"))
        vectors = _read_checked(path, files, "vectors", lambda file: np.load(file, allow_pickle=False))
        rebuilt = False
        if not _same_model(manifest.get("model"), record):
            say(f"{path} was made by another model ({(manifest.get('model') or {}).get('path')}); "
                f"embedding its {len(texts)} texts again with {model.path}")
            vectors, rebuilt = None, True
        elif vectors is None or vectors.dtype != np.float32 or vectors.shape != (len(texts), model.dimension):
            say(f"the vectors of {path} are missing or damaged; embedding its {len(texts)} texts again")
            vectors, rebuilt = None, True
        if vectors is None:
            vectors = model.encode(texts, batch_size=batch_size, normalize=True)
        graph = None
        if not rebuilt and len(vectors) >= EXACT_LIMIT:
            graph = _read_checked(path, files, "ann", _load_graph)
            if graph is None or len(graph) != len(vectors) or graph.ndim != vectors.shape[1]:
                say(f"the search graph of {path} is missing or damaged; building it again from the vectors")
                graph, rebuilt = None, True
        calibration = _stored_calibration(manifest.get("search")) if graph is not None else None
        index = cls(path, model, texts, VectorIndex(vectors, graph, calibration=calibration), record, say)
        if rebuilt or (graph is not None and calibration is None):
            index.save()
        return index

    def add(self, texts, batch_size=32):
        """Embed `texts`, append them, save. Their rows follow the existing ones."""
        texts = _check_texts(texts)
        self.vectors.add(self.model.encode(texts, batch_size=batch_size, normalize=True))
        self.texts.extend(texts)
        self.save()

    def search(self, queries, k=10, exact=None):
        """A query text (or a list of them) -> its hits [Hit(row, score, text)], best first (a
        list of such lists for a list of queries)."""
        single = isinstance(queries, str)
        vectors = self.model.encode([queries] if single else _check_texts(queries), normalize=True)
        rows, scores = self.vectors.search(vectors, k, exact=exact)
        hits = [[Hit(int(row), float(score), self.texts[row]) for row, score in zip(row_list, score_list)]
                for row_list, score_list in zip(rows, scores)]
        return hits[0] if single else hits

    def save(self):
        """Write the index: new files by content, then the manifest in one rename, then the
        files no longer named are removed."""
        self.path.mkdir(parents=True, exist_ok=True)
        documents = "".join(json.dumps(text, ensure_ascii=False) + "\n" for text in self.texts).encode("utf-8")
        files = {"documents": _write(self.path, "documents", ".jsonl", documents)}
        files["vectors"] = _write(self.path, "vectors", ".npy", _npy_bytes(self.vectors.vectors))
        if self.vectors.graph is not None:
            files["ann"] = _write(self.path, "ann", ".usearch", bytes(self.vectors.graph.save()))
        manifest = {"version": VERSION, "files": files, "count": len(self.texts),
                    "dimension": self.vectors.dimension, "model": self.model_record}
        if self.vectors.calibration is not None:
            manifest["search"] = self.vectors.calibration._asdict()
        _atomic_write(self.path / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))
        named = {entry["file"] for entry in files.values()} | {"manifest.json"}
        for leftover in self.path.iterdir():
            if leftover.name not in named and leftover.name.split("-")[0] in ("documents", "vectors", "ann"):
                leftover.unlink(missing_ok=True)
            elif leftover.name.startswith(".tmp-"):
                leftover.unlink(missing_ok=True)


def _check_texts(texts):
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("no texts: give at least one")
    for number, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{number}] is {type(text).__name__}; expected str")
    return texts


def _model_record(model, memo=None):
    from transformer.search_cache import model_record

    return model_record(model, memo if isinstance(memo, dict) else None)


def _same_model(stored, current):
    """Whether two model records describe the same files (by sha256) and settings."""
    def content(record):
        if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
            return None
        sums = {name: entry.get("sha256") if isinstance(entry, dict) else None for name, entry in record["files"].items()}
        return sums, record.get("max_seq_length"), record.get("pooling"), record.get("normalize")
    return content(stored) is not None and content(stored) == content(current)


def _stored_calibration(entry):
    """The manifest's "search" entry as a Calibration, or None when it is missing or malformed
    (the graph is then measured again)."""
    if not isinstance(entry, dict):
        return None
    ef, recall = entry.get("expansion_search"), entry.get("recall")
    if not (ef is None or (type(ef) is int and ef > 0)) or type(recall) not in (int, float) or not 0 <= recall <= 1:
        return None
    return Calibration(ef, float(recall))


def _npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write(folder, kind, suffix, data):
    """Write `data` as <kind>-<sha256[:16]><suffix> (kept when already there) -> its manifest entry."""
    checksum = hashlib.sha256(data).hexdigest()
    name = f"{kind}-{checksum[:16]}{suffix}"
    if not (folder / name).exists() or hashlib.sha256((folder / name).read_bytes()).hexdigest() != checksum:
        _atomic_write(folder / name, data)
    return {"file": name, "sha256": checksum, "bytes": len(data)}


def _atomic_write(target, data):
    """A temporary file in the same folder, flushed to disk, renamed over `target`."""
    temporary = target.with_name(f".tmp-{os.getpid()}-{target.name}")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself on disk
    finally:
        os.close(directory)


def _read_checked(folder, files, kind, read):
    """read(path) of the file the manifest names for `kind`, or None when it is not named,
    missing, not its sha256, or does not read."""
    entry = files.get(kind) if isinstance(files, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
        return None
    path = folder / entry["file"]
    try:
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
            return None
        return read(path)
    except (OSError, ValueError, UnicodeDecodeError, RuntimeError):
        return None


def _load_graph(path):
    Index = _usearch()
    graph = Index.restore(str(path))
    if graph is None:
        raise ValueError(f"{path} is not a usearch index")
    graph.expansion_search = EXPANSION_SEARCH
    return graph
