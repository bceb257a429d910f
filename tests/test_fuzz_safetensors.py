"""Fuzzing the safetensors reader against the `safetensors` package itself.

Each input is a small .safetensors file grown from a real one: a few tensors of a checkpoint in
tests/references/families (their real bytes) or of the headers in weights/ (the real names and
dtypes, tiny shapes, random bytes), laid out validly, then mutated: the header's JSON tree
(values of any type or size in any place, fields deleted or added), the layout (offsets shifted,
swapped, overlapping, a tensor dropped or listed twice), the header text byte by byte, the
length prefix, the data section's length.

Property: `read_safetensors` accepts exactly the files `safetensors.safe_open` accepts, except
the deliberate differences documented in transformer/loading.py (a key given twice, serde's
list form of an entry, its map form of a dtype: refused by us only; an integer written -0:
serde reads a float and refuses, we read 0); where both accept, they list the same tensors with
the same shapes and equal arrays. A refusal is one CheckpointError naming the file; never
another exception, a hang, or a write.
"""

import collections
import json
import struct
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
torch = pytest.importorskip("torch")
from hypothesis import given  # noqa: E402
from safetensors import safe_open  # noqa: E402

from fuzz_model_files import PER_EXAMPLE, dumps_with_duplicates, inputs_of, mutate_text, mutate_tree, odd_value, \
    parse_guarded, plans, scratch_folder  # noqa: E402
from fuzzing import FUZZ_EXAMPLES, fuzz_settings, ran  # noqa: E402
from transformer.loading import DTYPE_BITS, CheckpointError, read_safetensors, read_safetensors_header  # noqa: E402
from transformer.store import weights_dir  # noqa: E402

FAMILIES = Path(__file__).parent / "references" / "families"
WEIGHTS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def _header(path):
    with open(path, "rb") as file:
        length = struct.unpack("<Q", file.read(8))[0]
        return json.loads(file.read(length)), 8 + length


def _seeds():
    """(name, dtype, shape, bytes or None) lists: real tensors of the family checkpoints, and the
    real names and dtypes of the weights/ checkpoints (bytes None: tiny shapes drawn later)."""
    seeds = []
    for path in sorted(FAMILIES.glob("*/model.safetensors")):
        header, start = _header(path)
        data = path.read_bytes()[start:]
        seeds.append([(name, entry["dtype"], entry["shape"], data[entry["data_offsets"][0]:entry["data_offsets"][1]])
                      for name, entry in header.items() if name != "__metadata__"])
    for name in WEIGHTS:
        header, _ = _header(weights_dir() / name / "model.safetensors")
        seeds.append([(tensor, entry["dtype"], None, None) for tensor, entry in header.items()
                      if tensor != "__metadata__"])
    return seeds


SEEDS = _seeds()
TORCH_DTYPES = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def valid_layout(rng):
    """[(name, entry)] and the data section: 1-6 tensors of a seed, back to back, listed in any
    order."""
    seed = rng.choice(SEEDS)
    chosen = rng.sample(seed, rng.randint(1, min(6, len(seed))))
    pairs, chunks, offset = [], [], 0
    for name, dtype, shape, data in chosen:
        if data is None:  # a weights/ name: a tiny shape, random bytes (any bit pattern: NaNs too)
            dtype = rng.choice([dtype, dtype, *DTYPE_BITS])
            shape = [rng.randint(0, 4) for _ in range(rng.randint(0, 3))]
            bits = int(np.prod(shape, dtype=np.int64)) * DTYPE_BITS[dtype]
            if bits % 8:
                shape, bits = shape + [2], bits * 2
            data = rng.randbytes(bits // 8)
        pairs.append((name, {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}))
        chunks.append(data)
        offset += len(data)
    rng.shuffle(pairs)
    return pairs, b"".join(chunks)


def safetensors_file(rng, drawn):
    """The bytes of one (often broken) safetensors file."""
    pairs, data = valid_layout(rng)
    if rng.random() < 0.5:
        metadata = rng.choice([{"format": "pt"}, None, odd_value(rng, drawn)])
        pairs.insert(rng.randint(0, len(pairs)), ("__metadata__", metadata))
    kind = rng.choice(["valid", "tree", "tree", "layout", "layout", "text", "prefix", "data"])
    if kind == "tree":
        keys = ["dtype", "shape", "data_offsets", "__metadata__"] + [name for name, _ in pairs]
        text = json.dumps(mutate_tree(rng, dict(pairs), keys, drawn))
    else:
        text = dumps_with_duplicates(_relayout(rng, pairs) if kind == "layout" else pairs)
    if kind == "text":
        text = mutate_text(rng, text)
    header = text.encode("utf-8", "surrogatepass")
    header += b" " * rng.choice([0, 0, -len(header) % 8])  # the writers pad to 8 bytes
    length = len(header)
    if kind == "prefix":
        length = rng.choice([rng.randint(0, len(header) + 16), 100_000_000, 100_000_001, 2 ** 63, 2 ** 64 - 1])
    elif kind == "data":
        data = rng.choice([data[:-1], data[:len(data) // 2], data + b"\0", data + bytes(8), b""])
    return struct.pack("<Q", length) + header + data


def _relayout(rng, pairs):
    """Offsets and entries moved so the tensors overlap, leave gaps, or repeat."""
    pairs = [(name, json.loads(json.dumps(entry))) for name, entry in pairs]
    tensors = [i for i, (name, entry) in enumerate(pairs) if name != "__metadata__"]
    i = rng.choice(tensors)
    name, entry = pairs[i]
    edit = rng.choice(["shift", "swap", "repeat", "alias", "drop", "grow", "negative"])
    if edit == "shift":
        entry["data_offsets"][rng.randint(0, 1)] += rng.choice([-8, -4, -1, 1, 2, 4, 8])
    elif edit == "swap":
        j = rng.choice(tensors)
        entry["data_offsets"], pairs[j][1]["data_offsets"] = pairs[j][1]["data_offsets"], entry["data_offsets"]
    elif edit == "repeat":  # the same name twice: a later entry pointing at the same or other bytes
        pairs.append((name, json.loads(json.dumps(rng.choice([entry, pairs[rng.choice(tensors)][1]])))))
    elif edit == "alias":  # another name over the same bytes
        pairs.append((name + ".alias", json.loads(json.dumps(entry))))
    elif edit == "drop":
        del pairs[i]
    elif edit == "grow":
        entry["shape"] = entry["shape"] + [rng.choice([0, 2, 2 ** 32, 2 ** 62])]
    else:
        entry["data_offsets"] = [-entry["data_offsets"][1], entry["data_offsets"][0]]
    return pairs


# --- the two readers ------------------------------------------------------------------------------

def _theirs(path):
    """safe_open's view: None when it refuses the file, else {name: array or None (unreadable)}."""
    try:
        with safe_open(path, framework="pt") as file:
            tensors = {}
            for name in file.keys():
                try:
                    tensors[name] = file.get_tensor(name)
                except Exception:  # a dtype or shape torch cannot hold
                    tensors[name] = None
            return tensors
    except Exception:  # SafetensorError and what the binding raises for a file it refuses
        return None


def _as_numpy(tensor, dtype):
    if tensor.dtype == torch.bool:
        return tensor.numpy().view(np.uint8)
    if tensor.is_floating_point():
        return tensor.float().numpy()
    return tensor.numpy()


def _documented_differences(file_bytes):
    """Which deliberate differences the header has (see transformer/loading.py)."""
    found = set()
    try:
        length = struct.unpack("<Q", file_bytes[:8])[0]
        text = file_bytes[8:8 + length].decode("utf-8")
    except (struct.error, UnicodeDecodeError):
        return found

    def pairs_hook(pairs):
        if len({key for key, _ in pairs}) != len(pairs):
            found.add("a key twice")
        return dict(pairs)

    def int_hook(digits):
        if digits == "-0":
            found.add("-0")
        return int(digits)

    try:
        tree = json.loads(text, object_pairs_hook=pairs_hook, parse_int=int_hook)
    except (ValueError, RecursionError):
        return found
    if isinstance(tree, dict):
        for name, entry in tree.items():
            if name != "__metadata__" and isinstance(entry, list):
                found.add("list entry")
            if name != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("dtype"), dict):
                found.add("map dtype")
    return found


def _compare(path, file_bytes, outcomes):
    path.write_bytes(file_bytes)
    theirs = _theirs(path)
    ours, error = parse_guarded(lambda: read_safetensors(path), CheckpointError, path.name)
    differences = _documented_differences(file_bytes)
    if "-0" in differences:  # serde refuses -0 in a size, takes it in an ignored field; we take both
        outcomes["with -0 (documented)"] += 1
        return
    if differences and ours is None:
        outcomes["refused by us only as documented" if theirs is not None else "refused by both"] += 1
        return
    assert not differences, f"we accepted a header with {differences}: {file_bytes[:300]!r}"
    assert (ours is None) == (theirs is None), (
        f"{'we refused' if ours is None else 'we accepted'} ({error}) what safetensors "
        f"{'accepts' if ours is None else 'refuses'}: {file_bytes[:300]!r}")
    if ours is None:
        outcomes["refused by both"] += 1
        return
    assert sorted(ours) == sorted(theirs)
    for name, tensor in theirs.items():
        array, error = parse_guarded(lambda: ours[name], CheckpointError, path.name)
        if array is None:
            assert name in str(error)  # a dtype this loader does not convert, or a shape NumPy cannot hold
            continue
        if tensor is not None:
            expected = _as_numpy(tensor, None)
            got = array.view(np.uint8) if array.dtype == np.bool_ else array
            assert got.shape == expected.shape, name
            assert np.array_equal(got, expected, equal_nan=got.dtype.kind == "f"), name
    outcomes["read by both, arrays equal"] += 1


# --- the tests ------------------------------------------------------------------------------------

def test_safetensors_reader_accepts_what_safetensors_accepts(tmp_path):
    outcomes = collections.Counter()
    with scratch_folder(tmp_path) as folder:
        @fuzz_settings(batch=PER_EXAMPLE)
        @given(plans())
        def run(plan):
            for rng, drawn in inputs_of(plan):
                ran("safetensors header")
                _compare(folder / "model.safetensors", safetensors_file(rng, drawn), outcomes)

        run()
    total = sum(outcomes.values())
    assert total >= FUZZ_EXAMPLES, outcomes
    # both sides reached: valid files read, broken ones refused
    assert outcomes["read by both, arrays equal"] >= total // 10 and outcomes["refused by both"] >= total // 10


def test_every_family_checkpoint_and_minilm_read_as_safetensors_reads_them(minilm_dir, tmp_path):
    outcomes = collections.Counter()
    for path in [*sorted(FAMILIES.glob("*/model.safetensors")), minilm_dir / "model.safetensors"]:
        copy = tmp_path / "model.safetensors"
        copy.write_bytes(path.read_bytes())
        _compare(copy, copy.read_bytes(), outcomes)
    assert outcomes == {"read by both, arrays equal": len(list(FAMILIES.glob("*/model.safetensors"))) + 1}
    assert len(read_safetensors_header(minilm_dir / "model.safetensors")) == 104
