"""Fuzzing model.safetensors.index.json, the shard index of a sharded checkpoint.

The checkpoint is tests/references/families/bert_gelu split into three shards, beside a folder
named like a shard, a file that is not one, and a link to /dev/zero. Each input is its true
index with the JSON tree mutated (a tensor moved to another shard, to a path outside the folder,
to a folder or a device; entries dropped, added, duplicated; weight_map replaced by any value)
or the text edited character by character.

Property, exact: `read_checkpoint` reads the folder iff the index is strict JSON (no NaN, no key
twice) whose weight_map is exactly the true one (every tensor, each in the shard that holds
it), and then gives each tensor from its shard, the same arrays as the unsharded file;
otherwise one CheckpointError naming the index or a shard. Never another exception, a hang, or a write.
"""

import collections
import json
import os
import shutil
from pathlib import Path

import numpy as np
from hypothesis import given

from safetensors.numpy import save_file

from fuzz_model_files import PER_EXAMPLE, inputs_of, mutate_text, mutate_tree, parse_guarded, plans, scratch_folder
from fuzzing import FUZZ_EXAMPLES, fuzz_settings, ran
from transformer.loading import CheckpointError, read_checkpoint

SOURCE = Path(__file__).parent / "references" / "families" / "bert_gelu"
SHARDS = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")
ODD_SHARDS = ["dir.safetensors", "notes.txt", "zero.safetensors", "missing.safetensors",
              "../bert_gelu/model.safetensors", "/dev/zero", "/etc/passwd", "", ".", "..", "sub/x.safetensors", "C:\\x",
              "x" * 300, "\ud800", "a\x00b", "a\nb", "\u202e", SHARDS[0] + "/", "./" + SHARDS[0]]


def make_sharded(folder):
    """The checkpoint in three shards, its true weight_map, and the reference arrays."""
    tensors = {name: np.array(array) for name, array in read_checkpoint(SOURCE).items()}
    names = sorted(tensors)
    weight_map = {}
    for index, shard in enumerate(SHARDS):
        part = names[index::len(SHARDS)]
        save_file({name: tensors[name] for name in part}, folder / shard)
        weight_map.update({name: shard for name in part})
    (folder / "dir.safetensors").mkdir()
    (folder / "notes.txt").write_text("not a checkpoint")
    os.symlink("/dev/zero", folder / "zero.safetensors")
    shutil.copy(SOURCE / "config.json", folder / "config.json")
    return weight_map, tensors


def index_text(rng, drawn, weight_map):
    index = {"metadata": {"total_size": 0}, "weight_map": dict(weight_map)}
    kind = rng.choice(["valid", "move", "move", "drop", "add", "tree", "tree", "text"])
    names = list(weight_map)
    if kind == "move":  # one tensor to another shard, or somewhere a shard must not be
        index["weight_map"][rng.choice(names)] = rng.choice([*SHARDS, *ODD_SHARDS])
    elif kind == "drop":
        del index["weight_map"][rng.choice(names)]
    elif kind == "add":
        index["weight_map"][rng.choice(["extra.weight", names[0] + ".x", ""])] = rng.choice([*SHARDS, *ODD_SHARDS])
    elif kind == "tree":
        index = mutate_tree(rng, index, ["weight_map", "metadata", *names[:5], *SHARDS], drawn)
    text = json.dumps(index)
    return mutate_text(rng, text) if kind == "text" else text


def _strict_json(text):
    """The JSON value, or None when strict JSON refuses it (NaN / Infinity, a key twice)."""
    def pairs_hook(pairs):
        if len({key for key, _ in pairs}) != len(pairs):
            raise ValueError("a key twice")
        return dict(pairs)

    def no_constant(name):
        raise ValueError(name)

    try:
        return json.loads(text, object_pairs_hook=pairs_hook, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return None


def test_shard_index_is_read_only_when_it_names_every_tensor_in_its_own_shard(tmp_path):
    outcomes = collections.Counter()
    with scratch_folder(tmp_path) as folder:
        weight_map, reference = make_sharded(folder)
        index_path = folder / "model.safetensors.index.json"

        @fuzz_settings(batch=PER_EXAMPLE)
        @given(plans())
        def run(plan):
            for rng, drawn in inputs_of(plan):
                ran("shard index")
                text = index_text(rng, drawn, weight_map)
                index_path.write_bytes(text.encode("utf-8", "surrogatepass"))
                tensors, error = parse_guarded(lambda: read_checkpoint(folder), CheckpointError,
                                               ("model.safetensors.index.json", *SHARDS, *ODD_SHARDS[:3]))
                index = _strict_json(text)
                valid = isinstance(index, dict) and index.get("weight_map") == weight_map
                assert (tensors is not None) == valid, (text[:300], error)
                if tensors is None:
                    outcomes["refused"] += 1
                    continue
                assert sorted(tensors) == sorted(reference)
                assert all(tensors.source(name).name == weight_map[name] for name in reference)
                for name in rng.sample(sorted(reference), 4):  # the arrays themselves, a few an input
                    np.testing.assert_array_equal(tensors[name], reference[name])
                outcomes["read, arrays equal"] += 1

        run()
    total = sum(outcomes.values())
    assert total >= FUZZ_EXAMPLES, outcomes
    assert outcomes["read, arrays equal"] >= total // 20, outcomes
