"""The packed cache: a prepared model saved beside its checkpoint, read straight back.

    cache = PackedCache.find(model_dir)    # None: not cached (small, switched off, not a folder)
    cache = PackedCache.find(model_dir, "bf16")   # the bf16 panels' cache (precision="bf16")
    prepared = cache.load(config)          # a PreparedEncoder, or None when no cache is valid
    cache.save(prepared)                   # after packing from the checkpoint

Reading a checkpoint, transposing its linear weights and packing them is most of a big
model's load time, and holds two copies of the weights in memory on the way. The prepared arrays are
saved once in `<model folder>/.transformer-packed/<key>/`: packed.bin holds them one after
another (each on a 64-byte boundary), packed.meta (JSON) their offsets and shapes and what
they were made from. They come back with nothing to transpose or pack: the packed panels
read straight into the huge-page arena (one copy: a file read, not a mapping), the rest views
of one mapping of packed.bin (copy-on-write, pages from the OS's file cache).

When a cache is read (docs/security.md says the same for users):
  * Its record lists every checkpoint file (config.json, the .safetensors files, the shard
    index) with its sha256 and its identity as it was hashed (device, inode, size, mtime,
    ctime: see transformer.digest), plus CACHE_FORMAT and the packing layout. It is read
    only when those are the files present now, with the same identities, and the same
    format and layout. Any change to a file's bytes changes its ctime (whatever its mtime
    says), so new weights are never answered with the old ones. The folder's name is the
    sha256 over the files' contents, the format and the layout.
  * The record holds packed.bin's own identity as written too: a write to packed.bin since
    (an edit, a stray write) changes its ctime, and the cache is rebuilt, not read.
  * A cache that came with the folder (an archive, a copy, a download) has other identities
    than the files on this disk: it is rebuilt from the checkpoint, never read.
  * packed.bin and packed.meta are read only when they are regular files: a named pipe or
    a device in their place is passed over (never waited on).
  * The folders are handled through directory descriptors and never through a symbolic
    link: when `.transformer-packed` or a cache folder is a link, the cache is not used.
    Only the files this module writes (packed.bin, packed.meta), in folders named as it
    names them, are ever deleted, one file at a time: never a tree, never through a link.
Small checkpoints are not cached (packing them is quicker than reading a cache), nor is
anything when TRANSFORMER_PACKED_CACHE=0 or the folder is not writable.

Each precision has its own cache folder: the record names the precision (none: "fp32"; for
bf16, the label of the bf16 policy that chose which linears stay float32, e.g.
"bf16-fp32-ffn_down"), the folder's name includes it for bf16, a cache is read only for the
precision it was written for, and writing one replaces only the folders of its own precision
(a bf16 one: those of any bf16 policy).

Each checkpoint in a folder has its own cache folder too: two GGUF files side by side (or a
GGUF beside a safetensors checkpoint) are two models, each cached under the key of its own
files. Writing one's cache leaves the other's alone: a cache made from none of this one's
files, all of them still present, is another model's. One that shares a file with this one
(an older version of the same checkpoint), or whose files are gone, is replaced.
"""

import errno
import json
import os
import re
import stat

import numpy as np

from transformer import digest
from transformer.files import parse_json

from transformer.kernels.arena import ALIGN, WeightArena, aligned
from transformer.kernels.gemm import pack_weight

from .forward import PreparedEncoder
from .program import LayerStack, stack_layout

CACHE_FORMAT = 7
CACHE_MIN_BYTES = 32 << 20
FOLDER = ".transformer-packed"
DATA, META = "packed.bin", "packed.meta"  # the only files written (and ever deleted) here
_KEY = re.compile(r"^[0-9a-f]{24}$")  # a cache folder's name
_TEMPORARY = re.compile(r"^tmp-(\d+)-[0-9a-f]{24}$")  # one being written by process <pid>

# Reading the panels into the arena costs a copy at load, which grows with the model while
# what the huge pages save does not; above this size the packed cache is mapped instead (no
# huge pages, but nothing to read until used). MiniLM's 42 MB are read, BERT-base's 340 mapped.
ARENA_FROM_CACHE_MAX_BYTES = 128 << 20

_DIRECTORY = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_SAFE = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")


def checkpoint_files(model_dir):
    """The names of the files a prepared model is made from: config.json, the .safetensors
    files and the shard index, sorted."""
    with os.scandir(model_dir) as entries:
        return sorted(entry.name for entry in entries
                      if entry.name.endswith(".safetensors") or entry.name in ("config.json", "model.safetensors.index.json"))


def _layout():
    """The packing layout today: a small weight packed by `pack_weight` (a change to the
    layout changes this, and no cache of the old layout is read)."""
    probe = pack_weight(np.arange(5 * 37, dtype=np.float32).reshape(5, 37)).panels
    return digest.combined({}, f"{probe.shape}", probe.tobytes().hex())


class PackedCache:
    """The packed cache of the checkpoint in one model folder (see the module docstring)."""

    def __init__(self, model_dir, identities, precision="fp32"):
        self.model_dir = model_dir
        self.identities = identities  # {file name: identity} as found by `find`
        self.precision = precision  # "fp32" or "bf16": the panels it reads and writes

    @classmethod
    def find(cls, model_dir, precision="fp32", files=None):
        """The cache handle for model_dir at `precision`, or None when it is not to be cached: switched off
        (TRANSFORMER_PACKED_CACHE=0), not a folder, a checkpoint under CACHE_MIN_BYTES, or a
        system without the directory calls that make it safe. files: the names of the files
        in model_dir the model is made from (a GGUF file's name); default `checkpoint_files`."""
        if os.environ.get("TRANSFORMER_PACKED_CACHE", "1") == "0" or not _SAFE or not os.path.isdir(model_dir):
            return None
        names = checkpoint_files(model_dir) if files is None else sorted(files)
        stats = {name: os.stat(os.path.join(model_dir, name)) for name in names}
        if sum(stat.st_size for name, stat in stats.items() if name.endswith((".safetensors", ".gguf"))) \
                < CACHE_MIN_BYTES:
            return None
        return cls(os.fspath(model_dir), {name: digest.identity(stat) for name, stat in stats.items()}, precision)

    # --- reading ------------------------------------------------------------------------
    def load(self, config):
        """The PreparedEncoder saved for these exact checkpoint files, or None."""
        root = _open_folder(self.model_dir, FOLDER)
        if root is None:
            return None
        try:
            for name in _entries(root, _KEY):
                prepared = self._load_from(root, name, config)
                if prepared is not None:
                    return prepared
            return None
        finally:
            os.close(root)

    def _load_from(self, root, name, config):
        folder = _open_folder(root, name)
        if folder is None:
            return None
        try:
            meta = _read_meta(folder, name)
            made_from = meta["made_from"]
            files = made_from["files"]
            if (made_from["format"] != CACHE_FORMAT or made_from["layout"] != _layout()
                    or made_from.get("precision", "fp32") != self.precision
                    or sorted(files) != sorted(self.identities)
                    or any(files[file]["identity"] != self.identities[file] for file in files)):
                return None
            with _open_regular(folder, DATA) as data_file:
                status = os.fstat(data_file.fileno())
                if status.st_size != meta["bytes"] or digest.identity(status) != meta["data_identity"]:
                    return None  # cut short (a full disk), written to since, or not the file the record describes
                return _prepared_from(data_file, meta, config)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        finally:
            os.close(folder)

    # --- writing ------------------------------------------------------------------------
    def save(self, prepared):
        """Write `prepared` as the cache of these checkpoint files; quietly nothing when the
        folder is not writable, or a checkpoint file changed since `find`."""
        try:
            memo = {}
            digests = digest.file_digests(self.model_dir, sorted(self.identities), memo)
        except OSError:
            return
        if any(memo[name]["identity"] != self.identities[name] for name in memo):
            return  # rewritten while it was loaded: what was packed may not be what was hashed
        layout = _layout()
        if prepared.stack.precision != _base(self.precision):
            raise ValueError(f"packed cache: a {prepared.stack.precision} model saved as {self.precision}")
        parts = (f"format {CACHE_FORMAT}", layout) + ((f"precision {self.precision}",) if self.precision != "fp32" else ())
        key = digest.combined(digests, *parts)[:24]
        arrays, out_features = _arrays_of(prepared)
        index, size = {}, 0
        for name, array in arrays.items():
            if array.dtype == np.uint16 and name.endswith(".panels"):
                index[name] = {"offset": size, "shape": list(array.shape), "dtype": "uint16"}  # bf16 panels
            elif array.dtype != np.float32:
                raise TypeError(f"packed cache: {name} is {array.dtype}, expected float32")
            else:
                index[name] = {"offset": size, "shape": list(array.shape)}
            size = aligned(size + array.nbytes)  # each array on a cache line
        made_from = {"format": CACHE_FORMAT, "layout": layout, "files": memo}
        if self.precision != "fp32":
            made_from["precision"] = self.precision
        meta = {"made_from": made_from,
                "stack": _stack_names(prepared.stack.layout), "out_features": out_features,
                "in_features": prepared.stack.in_features, "bytes": size,
                "arrays": index}
        try:
            root = _open_folder(self.model_dir, FOLDER, create=True)
        except OSError:
            return
        if root is None:
            return
        temporary = f"tmp-{os.getpid()}-{key}"
        try:
            _remove_stale(root, self.precision, self.model_dir, self.identities)  # `load` found this one wanting
            os.mkdir(temporary, 0o755, dir_fd=root)
            folder = _open_folder(root, temporary)
            try:
                _write_file(folder, DATA, lambda file: _write_arrays(file, arrays, index, size))
                # packed.bin as written: any later write to it changes its ctime, so its
                # bytes are read back only while they are these.
                meta["data_identity"] = digest.identity(os.stat(DATA, dir_fd=folder, follow_symlinks=False))
                _write_file(folder, META, lambda file: file.write(json.dumps(meta).encode("utf-8")))
            finally:
                os.close(folder)
            os.rename(temporary, key, src_dir_fd=root, dst_dir_fd=root)  # whole or not at all
        except OSError:
            _remove_cache_folder(root, temporary)
        finally:
            os.close(root)


# --- the arrays ------------------------------------------------------------------------------
def _flatten(prefix, value, arrays):
    if isinstance(value, dict):
        for name, part in value.items():
            _flatten(f"{prefix}.{name}", part, arrays)
    elif value is not None:
        arrays[prefix] = value


def _arrays_of(prepared):
    """({dotted name: float32 array}, {linear: out_features}) of a PreparedEncoder: every
    parameter but the layers' by its params path ("embeddings.word", "pooler.weight", ...),
    the stacked layers as "stack.<linear>.panels", "stack.<linear>.bias", "stack.<norm>.<part>"."""
    params = prepared.params
    arrays = {}
    for name, value in params.items():
        if name != "layers":
            _flatten(name, value, arrays)
    stack = prepared.stack
    for linear in stack.layout.linears:
        arrays[f"stack.{linear.name}.panels"] = stack.panels[linear.name]
        arrays[f"stack.{linear.name}.bias"] = stack.bias[linear.name]
    for name in stack.layout.vectors:
        arrays[f"stack.{name}"] = stack.vectors[name]
    return arrays, stack.out_features


def _write_arrays(file, arrays, index, size):
    for name, array in arrays.items():
        file.seek(index[name]["offset"])
        file.write(np.ascontiguousarray(array).data)
    file.truncate(size)


def _dtype_of(entry):
    """An entry's dtype: float32, or uint16 (bf16 panels, recorded as "dtype": "uint16")."""
    dtype = entry.get("dtype", "float32")
    if dtype not in ("float32", "uint16"):
        raise ValueError(f"packed cache: an array of dtype {dtype!r}")
    return np.dtype(dtype)


def _array_in(data, entry, name):
    """The array `entry` ({"offset", "shape"}, and "dtype" when not float32) describes, a view
    of the uint8 `data`."""
    shape = tuple(int(size) for size in entry["shape"])
    offset = int(entry["offset"])
    dtype = _dtype_of(entry)
    if any(size < 0 for size in shape):
        raise ValueError(f"packed cache: {name} has a negative size")
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if offset < 0 or offset % ALIGN or offset + nbytes > data.size:
        raise ValueError(f"packed cache: {name} lies outside {DATA}")
    return data[offset:offset + nbytes].view(dtype).reshape(shape)


def _float32_shape(entry):
    """The shape of a float32 array of an entry's bytes (bf16 panels [..., 32] -> [..., 16]):
    what the WeightArena hands out."""
    shape = tuple(int(size) for size in entry["shape"])
    if _dtype_of(entry) == np.uint16:
        if not shape or shape[-1] % 2:
            raise ValueError("packed cache: bf16 panels of an odd width")
        shape = shape[:-1] + (shape[-1] // 2,)
    return shape


def _read_panels_into_arena(data_file, entries):
    """{name: float32 panels} read from packed.bin straight into one WeightArena (no mapping
    of the file, so its pages are not counted twice)."""
    shapes = {name: _float32_shape(entry) for name, entry in entries.items()}
    arena = WeightArena(WeightArena.bytes_for(shapes.values()))
    panels = {}
    for name, entry in entries.items():
        panels[name] = arena.take(shapes[name]).view(_dtype_of(entry))
        buffer = panels[name].reshape(-1).view(np.uint8)
        data_file.seek(int(entry["offset"]))
        if data_file.readinto(buffer) != buffer.nbytes:
            raise ValueError(f"packed cache: {name} is cut short")
    return panels


def _stack_names(layout):
    """The names of a StackLayout's slots, as the cache's meta records them."""
    return {"linears": [linear.name for linear in layout.linears], "vectors": list(layout.vectors)}


def _prepared_from(data_file, meta, config):
    """The PreparedEncoder in an open packed.bin and its meta: the packed panels read into a
    huge-page arena, or mapped when they are more than ARENA_FROM_CACHE_MAX_BYTES; the other
    arrays mapped, copy-on-write. None when the cache holds another layout than the config's
    recipe makes."""
    layers = config.recipe.layers
    layout = stack_layout(layers)
    if meta["stack"] != _stack_names(layout):
        return None
    data = np.memmap(data_file, dtype=np.uint8, mode="c")  # one mapping for every array
    entries = meta["arrays"]
    linears = [linear.name for linear in layout.linears]
    panel_names = [f"stack.{name}.panels" for name in linears]
    big = WeightArena.bytes_for(_float32_shape(entries[name]) for name in panel_names) > ARENA_FROM_CACHE_MAX_BYTES
    arrays = {name: _array_in(data, entry, name) for name, entry in entries.items()
              if big or name not in panel_names}
    if not big:
        arrays.update(_read_panels_into_arena(data_file, {name: entries[name] for name in panel_names}))
    nested = {}
    for name, array in arrays.items():
        if name.startswith("stack."):
            continue
        *path, leaf = name.split(".")
        node = nested
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = array
    recipe = config.recipe
    params = {"embeddings": {key: nested["embeddings"].get(key)
                             for key in ("word", "position", "token_type", "layer_norm", "projection")}}
    for part in (recipe.embeddings.norm, recipe.embeddings.projection):
        if part is not None and not part.bias:
            params["embeddings"][part.name]["bias"] = None
    for table in recipe.tables():
        params[table] = nested[table]
    for scheme in recipe.position_schemes():  # DeBERTa's norm of its relative table
        if getattr(scheme, "norm", None) is not None:
            params[scheme.norm.name] = {"weight": nested[scheme.norm.name]["weight"],
                                        "bias": nested[scheme.norm.name].get("bias")}
    if recipe.final_norm is not None:
        params[recipe.final_norm.name] = {"weight": nested[recipe.final_norm.name]["weight"],
                                          "bias": nested[recipe.final_norm.name].get("bias")}
    params["pooler"] = nested.get("pooler")
    stack = LayerStack(layout, tuple(stack_layout([layer]) for layer in layers),
                       panels={name: arrays[f"stack.{name}.panels"] for name in linears},
                       bias={name: arrays[f"stack.{name}.bias"] for name in linears},
                       vectors={name: arrays[f"stack.{name}"] for name in layout.vectors},
                       out_features={name: int(meta["out_features"][name]) for name in linears},
                       in_features={name: int(meta["in_features"][name]) for name in linears} if "in_features" in meta
                       else None)
    return PreparedEncoder(params, config, stack=stack)


# --- folders, through descriptors, never through a link ----------------------------------------
def _open_folder(parent, name, create=False):
    """A descriptor of the folder `name` inside `parent` (a path or a folder descriptor), or
    None when it does not exist or is not a real folder (a symbolic link, a file)."""
    parent_fd = parent if isinstance(parent, int) else os.open(parent, _DIRECTORY & ~os.O_NOFOLLOW)
    try:
        if create:
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass
        try:
            return os.open(name, _DIRECTORY, dir_fd=parent_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:  # a symbolic link
                return None
            raise
    finally:
        if not isinstance(parent, int):
            os.close(parent_fd)


def _entries(folder, pattern):
    """The names in the folder descriptor `folder` that match `pattern`."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if pattern.match(entry.name))


def _open_regular(folder, name):
    """The regular file `name` in the folder descriptor `folder`, open for reading; OSError
    for a link, a named pipe (opened without waiting for a writer), a device, a folder."""
    descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _write_file(folder, name, write):
    descriptor = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder)
    with os.fdopen(descriptor, "wb") as file:
        write(file)


def _remove_cache_folder(root, name):
    """Delete this module's files in the cache folder `name`, then the folder if it is then
    empty. Nothing else: a link is not followed, another file keeps the folder."""
    folder = _open_folder(root, name)
    if folder is None:
        return
    try:
        for file in (DATA, META):
            try:
                os.unlink(file, dir_fd=folder)
            except OSError:
                pass
    finally:
        os.close(folder)
    try:
        os.rmdir(name, dir_fd=root)
    except OSError:
        pass


def _remove_stale(root, precision, model_dir, files):
    """Remove the cache folders of `precision` made from this checkpoint's `files` (names) or
    from files no longer all in model_dir (an older checkpoint's is never read again; one that
    could not be read is rewritten), those whose record cannot be read, and the leftovers of
    writers that died. Left alone: a folder being written by a live process, another
    precision's cache, and another model's (made from none of `files`, all still present)."""
    for name in _entries(root, _KEY):
        record = _record_of_folder(root, name)
        if record is None:
            _remove_cache_folder(root, name)
            continue
        made_from = record["made_from"]
        if _base(made_from.get("precision", "fp32")) != _base(precision):  # any bf16 policy's is bf16's
            continue
        theirs = set(made_from["files"])
        if theirs.isdisjoint(files) and all(os.path.isfile(os.path.join(model_dir, file)) for file in theirs):
            continue  # another model's cache, beside this one
        _remove_cache_folder(root, name)
    for name in _entries(root, _TEMPORARY):
        pid = int(_TEMPORARY.match(name).group(1))
        if pid == os.getpid() or not _alive(pid):
            _remove_cache_folder(root, name)


def _read_meta(folder, name):
    """The record (packed.meta) of the cache folder `name`, open as the descriptor `folder`."""
    with _open_regular(folder, META) as meta_file:
        return parse_json(meta_file.read(1 << 24), f"{FOLDER}/{name}/{META}")


def _base(precision):
    """"fp32" or "bf16": a precision without its bf16 policy ("bf16-fp32-ffn_down" ->
    "bf16", `transformer.encoder.Bf16Policy.label`)."""
    return precision.split("-", 1)[0]


def _record_of_folder(root, name):
    """A cache folder's record (packed.meta), or None when it cannot be read or names no
    precision and files the way this module writes them."""
    folder = _open_folder(root, name)
    if folder is None:
        return None
    try:
        meta = _read_meta(folder, name)
        made_from = meta["made_from"]
        if not isinstance(made_from.get("precision", "fp32"), str) or not isinstance(made_from["files"], dict):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    finally:
        os.close(folder)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True
