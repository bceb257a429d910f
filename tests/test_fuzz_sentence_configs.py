"""Fuzzing the sentence-transformers files of a model folder: modules.json, the Pooling module's
config.json, sentence_bert_config.json and tokenizer_config.json (`read_modules` and
`_tokenizer_limit` in transformer/sentence.py).

Each input is the four real files of a weights/ model (plus pooling configs in the current
{"pooling_mode": ...} form), one of them with its JSON tree mutated (values of any type or size
in any place, entries deleted, added, reordered, paths made absolute or climbing out) or its
text edited character by character.

Property: a ModelFileError naming one of the files, or an answer of the documented types that
agrees with sentence-transformers 6 itself: the same pooling modes as its Pooling module makes
from the same config, a module path only where its _validate_relative_path allows one. Where
it takes a file we refuse, the reason is one of the documented deliberate differences (below).
Never another exception, a hang, or a write.
"""

import collections
import json

import pytest

sentence_transformers = pytest.importorskip("sentence_transformers")
from hypothesis import given  # noqa: E402
from sentence_transformers.sentence_transformer.modules import pooling as st_pooling  # noqa: E402
from sentence_transformers.util.file_io import _validate_relative_path  # noqa: E402

from fuzz_model_files import PER_EXAMPLE, inputs_of, mutate_text, mutate_tree, parse_guarded, plans, \
    scratch_folder  # noqa: E402
from fuzzing import FUZZ_EXAMPLES, fuzz_settings, ran  # noqa: E402
from transformer.files import ModelFileError  # noqa: E402
from transformer.pooling import POOLING_FUNCTIONS  # noqa: E402
from transformer.sentence import _tokenizer_limit, read_modules  # noqa: E402
from transformer.store import weights_dir  # noqa: E402

FILES = ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "tokenizer_config.json")
SEEDS = [{name: json.loads((weights_dir() / model / name).read_text()) for name in FILES}
         for model in ("all-MiniLM-L6-v2", "all-mpnet-base-v2")]
SEEDS += [{**SEEDS[0], "1_Pooling/config.json": {"embedding_dimension": 384, "pooling_mode": mode}}
          for mode in ("cls", ["mean", "max"], "lasttoken")]
KEYS = ("idx", "name", "path", "type", "pooling_mode", "pooling_mode_cls_token", "pooling_mode_mean_tokens",
        "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken", "include_prompt", "max_seq_length", "do_lower_case", "model_max_length")
PATHS = ["", "1_Pooling", "./1_Pooling", "1_Pooling/", "1_Pooling/.", "2_Normalize", "x" * 300, "a/" * 2100, "/etc",
         "/tmp", "..", "../1_Pooling", "1_Pooling/..", "1_Pooling/../1_Pooling", "C:\\x", "C:x", "\\\\server\\share",
         "..\\x", "\ud800", "\udcff", "a\x00b", "modules.json", "1_Pooling/config.json", "nonexistent", "~", "$HOME"]
LEGACY_FLAGS = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_tokens",
                "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def write_folder(folder, rng, drawn, on_disk):
    """The four files, one of them (or none) mutated -> {name: text}. on_disk: {name: text}
    already written (only the files that differ are written again)."""
    files = {name: json.dumps(tree) for name, tree in rng.choice(SEEDS).items()}
    target = rng.choice([None, *FILES, "modules.json", "1_Pooling/config.json", "path"])
    if target == "path":  # one module's folder: the paths that must not be followed, and some that may
        modules = json.loads(files["modules.json"])
        rng.choice(modules)["path"] = rng.choice(PATHS)
        files["modules.json"] = json.dumps(modules)
    elif target:
        if rng.random() < 0.75:
            keys = KEYS + ("", "1_Pooling", "2_Normalize", "/tmp", "../1_Pooling", "sentence_transformers.models.Dense")
            files[target] = json.dumps(mutate_tree(rng, json.loads(files[target]), keys, drawn))
        else:
            files[target] = mutate_text(rng, files[target])
    for name, text in files.items():
        if on_disk.get(name) != text:
            (folder / name).write_bytes(text.encode("utf-8", "surrogatepass"))
            on_disk[name] = text
    return files


def _their_pooling_modes(config):
    """sentence-transformers' Pooling modes for this config, or None when it refuses it."""
    if not isinstance(config, dict):
        return None
    config = dict(config)
    st_pooling._convert_legacy_pooling_kwargs(config)
    try:
        module = st_pooling.Pooling(embedding_dimension=384, pooling_mode=config.get("pooling_mode", "mean"))
    except Exception:
        return None
    mode = module.pooling_mode
    return [mode] if isinstance(mode, str) else list(mode)


def _documented_pooling_difference(config, theirs):
    """Why we may refuse a pooling config sentence-transformers takes: its modes come out empty
    (it then makes zero-width vectors), a legacy flag is not true / false (it tests truthiness:
    "false" counts as true), no mode at all (it silently means mean), pooling_mode neither a
    name nor a flat list of names (it iterates whatever it is: an object's keys, a nested list),
    include_prompt not true / false (it tests truthiness)."""
    if theirs == [] or not isinstance(config.get("include_prompt", True), bool):
        return True
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        return not (isinstance(modes, str) or isinstance(modes, list) and all(isinstance(m, str) for m in modes))
    return (any(flag in config and not isinstance(config[flag], bool) for flag in LEGACY_FLAGS)
            or not any(config.get(flag) is True for flag in LEGACY_FLAGS))


def _module_paths_allowed_by_sentence_transformers(modules):
    try:
        for module in modules:
            _validate_relative_path(module["path"])
        return True
    except Exception:
        return False


def _loads(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def _check(folder, files, outcomes):
    found, error = parse_guarded(lambda: read_modules(folder), ModelFileError, FILES)
    modules, pooling_config = _loads(files["modules.json"]), _loads(files["1_Pooling/config.json"])
    if found is not None:
        assert set(found) == {"transformer", "pooling", "include_prompt", "dense", "normalize", "max_seq_length",
                              "do_lower_case"}
        assert isinstance(found["include_prompt"], bool)
        assert isinstance(found["transformer"], str) and ".." not in found["transformer"].replace("\\", "/").split("/")
        assert found["pooling"] and all(mode in POOLING_FUNCTIONS for mode in found["pooling"])
        assert isinstance(found["normalize"], bool) and isinstance(found["do_lower_case"], bool)
        assert found["max_seq_length"] is None or (type(found["max_seq_length"]) is int and found["max_seq_length"] > 0)
        assert _module_paths_allowed_by_sentence_transformers(modules), modules
        if any(isinstance(m, dict) and m["type"].rsplit(".", 1)[-1] == "Pooling" for m in modules):
            assert _their_pooling_modes(pooling_config) == found["pooling"], (pooling_config, found["pooling"])
        else:
            assert found["pooling"] == ["mean"]
        outcomes["read, as sentence-transformers reads it"] += 1
    else:
        if "1_Pooling/config.json:" in str(error):  # refused for what the pooling config says
            theirs = _their_pooling_modes(pooling_config)
            assert theirs is None or _documented_pooling_difference(pooling_config, theirs), (pooling_config, error)
        outcomes["refused"] += 1
    limit, error = parse_guarded(lambda: _tokenizer_limit(folder), ModelFileError, "tokenizer_config.json")
    assert limit is None or (type(limit) is int and 0 < limit < 1_000_000)


def test_sentence_files_are_refused_by_name_or_read_as_sentence_transformers_reads_them(tmp_path):
    outcomes, on_disk = collections.Counter(), {}
    with scratch_folder(tmp_path) as folder:
        (folder / "1_Pooling").mkdir()

        @fuzz_settings(batch=PER_EXAMPLE)
        @given(plans())
        def run(plan):
            for rng, drawn in inputs_of(plan):
                ran("modules.json + pooling / sentence / tokenizer configs")
                _check(folder, write_folder(folder, rng, drawn, on_disk), outcomes)

        run()
    total = sum(outcomes.values())
    assert total >= FUZZ_EXAMPLES, outcomes
    assert outcomes["read, as sentence-transformers reads it"] >= total // 10, outcomes
    assert outcomes["refused"] >= total // 10, outcomes
