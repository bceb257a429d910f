"""The corpus embeddings `transformer search` keeps between runs.

    embeddings = corpus_embeddings(model, "notes.txt", texts, batch_size=32)   # [lines, dim]

One file per (corpus path, model folder): `<cache dir>/<hash>.npz` holding the embeddings,
their sha256, and a JSON record of what they were made from: the corpus file's sha256 and
line count, and the model: the sha256 of each of its files (config, weights, tokenizer,
sentence-transformers configs) with the identity it had when hashed (see
transformer.digest), and its settings (max_seq_length, pooling, normalize). The cached
embeddings are used only while all of that is unchanged, by content: new weights with the
old size and modification time are noticed. A model file is hashed again only when its
identity changed (a copy, a rewrite), so a search over an unchanged model costs a stat per
file.

A file that cannot be read or whose checksum fails is reported (SearchCacheError), never
trusted; `rebuild=True` replaces it. It is read with `allow_pickle=False`: nothing in it is
unpickled. When the cache folder cannot be written, the embeddings are computed and used
without being kept (one warning).
"""

import hashlib
import json
import os
import struct
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from transformer import digest

VERSION = 2
# The files of a model folder that the embeddings depend on (config, weights, tokenizer,
# sentence-transformers configs); hidden files and folders (caches, stamps) are not.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".txt", ".model")


class SearchCacheError(ValueError):
    """A cache file is corrupt (the message says how, and how to rebuild it)."""


class ModelChangedError(RuntimeError):
    """The model's files changed after it was loaded: embeddings made by the loaded model
    cannot be keyed on the files as they are now."""


def cache_dir(explicit=None):
    """`explicit`, else $TRANSFORMER_CACHE/search, else .search-cache/ in the weights folder."""
    from transformer.store import weights_dir

    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("TRANSFORMER_CACHE"):
        return Path(os.environ["TRANSFORMER_CACHE"]).expanduser() / "search"
    return weights_dir() / ".search-cache"


def model_files(folder):
    """The model's files the embeddings depend on, as paths relative to `folder`, sorted."""
    folder = Path(folder)
    names = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (path.suffix in MODEL_FILE_SUFFIXES and path.is_file()
                and not any(part.startswith(".") for part in relative.parts)):
            names.append(str(relative))
    return names


def model_record(model, memo=None):
    """{"path", "files": {name: {"identity", "sha256"}}, "max_seq_length", "pooling",
    "normalize"}: what the embeddings of `model` (a SentenceEncoder) depend on. `memo` (the
    "files" of an earlier record) spares hashing files whose identity is unchanged. Raises
    ModelChangedError when a file is not the one the model was loaded from
    (`SentenceEncoder.files_at_load`): the cache would otherwise key the loaded model's
    embeddings on other bytes."""
    folder = model.path.resolve()
    memo = {name: dict(value) for name, value in (memo or {}).items() if isinstance(value, dict)}
    digest.file_digests(folder, model_files(folder), memo)
    at_load = getattr(model, "files_at_load", None)
    if at_load is not None and {name: entry["identity"] for name, entry in memo.items()} != at_load:
        raise ModelChangedError(f"the files of {folder} changed since the model was loaded from them; "
                                f"run again to use the files as they are now")
    return {"path": str(folder), "files": memo, "max_seq_length": model.max_seq_length,
            "pooling": model.pooling_modes, "normalize": model.normalize}


def _same_content(stored, current):
    """True when two records name the same files with the same sums and the same settings
    (the files' identities may differ: a copy of the same bytes is the same model)."""
    def content(record):
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, dict):
            return None
        return ({name: value.get("sha256") if isinstance(value, dict) else None for name, value in files.items()},
                {key: value for key, value in record.items() if key != "files"})
    return content(stored) is not None and content(stored) == content(current)


def corpus_embeddings(model, corpus, texts, batch_size, rebuild=False, explicit_dir=None, say=None):
    """The corpus lines' embeddings [lines, dim], from the cache when neither the corpus bytes
    nor the model changed since they were stored, else computed (and stored when the cache
    folder is writable). say(message): progress notes (default: stderr)."""
    say = say or (lambda message: print(message, file=sys.stderr))
    corpus_path = Path(corpus).resolve()
    made_from = {
        "version": VERSION,
        "corpus": str(corpus_path),
        "corpus_sha256": digest.sha256_file(corpus_path),
        "lines": len(texts),
    }
    key = hashlib.sha256(json.dumps([made_from["corpus"], str(model.path.resolve())]).encode()).hexdigest()
    folder = cache_dir(explicit_dir)
    cache_file = folder / f"{key[:24]}.npz"
    stored = None
    if cache_file.exists() and not rebuild:
        stored, embeddings = load(cache_file)
        record = stored.get("model") if isinstance(stored, dict) else None
        made_from["model"] = model_record(model, record.get("files") if isinstance(record, dict) else None)
        if {k: v for k, v in stored.items() if k != "model"} == {k: v for k, v in made_from.items() if k != "model"} \
                and _same_content(record, made_from["model"]):
            say(f"using cached corpus embeddings {cache_file}")
            if record != made_from["model"]:  # the same files, hashed again: keep their new identities
                _save_quietly(cache_file, made_from, embeddings)
            return embeddings
        say(f"{corpus} or the model changed since it was cached; embedding {len(texts)} lines again")
    else:
        made_from["model"] = model_record(model)
        say(f"embedding {len(texts)} corpus lines (cached in {cache_file})")
    writable = _writable(folder)
    if writable is not True:
        say(f"cannot keep corpus embeddings in {folder} ({writable}); embedding without the cache")
    embeddings = model.encode(texts, batch_size=batch_size)
    if writable is True:
        _save_quietly(cache_file, made_from, embeddings, say)
    return embeddings


def _writable(folder):
    """True when a file can be made in `folder` (made if missing), else the reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError as error:
        return error.strerror or type(error).__name__


def load(cache_file):
    """(record, embeddings) from a cache file, or a SearchCacheError saying it is corrupt."""
    def corrupt(reason):
        return SearchCacheError(f"cached index {cache_file} is corrupt ({reason}); "
                                f"run again with --rebuild to recompute it")

    try:
        with np.load(cache_file, allow_pickle=False) as data:
            record = json.loads(data["made_from"].tobytes().decode("utf-8"))
            embeddings = data["embeddings"]
            checksum = data["embeddings_sha256"].tobytes().decode("ascii")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, struct.error,
            NotImplementedError, RuntimeError, OverflowError, MemoryError) as error:
        # Damage to a zip shows as any of these (an unknown compression method, an
        # "encrypted" flag, a size that does not fit): each is a corrupt cache, nothing else.
        raise corrupt(f"{type(error).__name__}: {' '.join(str(error).split())}") from None
    if not isinstance(record, dict) or embeddings.dtype != np.float32 or embeddings.ndim != 2:
        raise corrupt("unexpected contents")
    if hashlib.sha256(embeddings.tobytes()).hexdigest() != checksum:
        raise corrupt("the embeddings do not match their checksum")
    if embeddings.shape[0] != record.get("lines"):
        raise corrupt(f"{embeddings.shape[0]} rows for {record.get('lines')} lines")
    return record, embeddings


def save(cache_file, made_from, embeddings):
    """Write the cache file atomically (a temporary file renamed into place)."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_name(cache_file.stem + f".{os.getpid()}.tmp.npz")
    checksum = hashlib.sha256(embeddings.tobytes()).hexdigest()
    try:
        np.savez(temporary, embeddings=embeddings,
                 made_from=np.frombuffer(json.dumps(made_from).encode("utf-8"), dtype=np.uint8),
                 embeddings_sha256=np.frombuffer(checksum.encode("ascii"), dtype=np.uint8))
        os.replace(temporary, cache_file)
    finally:
        if temporary.exists():
            temporary.unlink()


def _save_quietly(cache_file, made_from, embeddings, say=None):
    """`save`, with a failure (a full disk, a folder made read-only meanwhile) reported and
    the run going on: the embeddings are right, only not kept."""
    try:
        save(cache_file, made_from, embeddings)
    except OSError as error:
        if say is not None:
            say(f"could not keep corpus embeddings in {cache_file} ({error.strerror or error})")
