"""Fuzzing config.json against `transformers`' own config classes.

Each input is a real config.json (weights/ and every tests/references/families checkpoint) with
its JSON tree mutated (a field set to a value of any type or size, deleted, added, copied from
another field; model_type swapped for another family's) or its text edited character by
character.

Property: `EncoderConfig.from_file` raises one ConfigError naming config.json, or returns a
config whose every field is what the model code needs (ints in range, a finite epsilon, labels
0 .. n-1) and equals what `transformers` 5 reads from the same dict (its strict config classes:
vocab_size, hidden_size, ..., id2label, architectures, tie_word_embeddings). Where transformers
refuses a dict we accept, the field it names must be one we never read. Never another exception,
a hang, or a write.
"""

import collections
import functools
import json
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
from hypothesis import given  # noqa: E402

from fuzz_model_files import PER_EXAMPLE, inputs_of, mutate_text, mutate_tree, parse_guarded, plans, \
    scratch_folder  # noqa: E402
from fuzzing import FUZZ_EXAMPLES, fuzz_settings, ran  # noqa: E402
from transformer.config import FAMILIES, MAX_SIZE, SUPPORTED_ACTIVATIONS, ConfigError, EncoderConfig  # noqa: E402
from transformer.store import weights_dir  # noqa: E402

CONFIGS = [json.loads(path.read_text()) for path in
           sorted((Path(__file__).parent / "references" / "families").glob("*/config.json"))
           + sorted((Path(__file__).parent / "references" / "decoders").glob("*/config.json"))
           + [weights_dir() / name / "config.json" for name in ("all-MiniLM-L6-v2", "all-mpnet-base-v2")]]

# Every key this package reads from config.json (the mutations aim at these more often).
READ = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
        "embedding_size", "relative_attention_num_buckets", "architectures", "num_labels", "id2label",
        "tie_word_embeddings", "position_embedding_type", "is_decoder", "add_cross_attention",
        "dim", "n_layers", "n_heads", "hidden_dim", "activation",
        "hidden_activation", "norm_eps", "norm_bias", "attention_bias", "mlp_bias", "layer_types", "local_attention",
        "global_attn_every_n_layers", "rope_parameters", "classifier_pooling", "head_dim",
        "n_embd", "n_layer", "n_head", "n_inner", "n_positions", "activation_function", "layer_norm_epsilon",
        "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
        "rms_norm_eps", "num_key_value_heads", "sliding_window",
        "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "feed_forward_proj", "dense_act_fn", "is_gated_act",
        "relative_attention_max_distance")
# Keys only some families read. transformers' base config checks them for every model type
# (a distilbert config with Gemma's `layer_types: [333]` is refused), but a family that never
# reads one computes nothing from it: for the others, the key is left out of the comparison.
READ_BY = {"layer_types": {"modernbert", "gemma3", "llama", "qwen"},
           "rope_parameters": {"modernbert", "gemma3", "llama", "qwen", "nomic_bert", "jina_embeddings_v3"}}
SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "max_position_embeddings", "embedding_size", "num_labels")


def config_text(rng, drawn):
    raw = rng.choice(CONFIGS)
    kind = rng.choice(["valid", "tree", "tree", "tree", "family", "text"])
    if kind == "tree":
        raw = mutate_tree(rng, raw, READ, drawn)
    elif kind == "family":
        raw = {**raw, "model_type": rng.choice(list(FAMILIES) + ["bloom", "BERT"])}
        if rng.random() < 0.5:
            raw = mutate_tree(rng, raw, READ, drawn, count=1)
    text = json.dumps(raw)
    return mutate_text(rng, text) if kind == "text" else text


def _check_fields(config):
    """What the model code relies on, whatever the file said."""
    for name in SIZES:
        value = getattr(config, name)
        assert type(value) is int and 1 <= value <= MAX_SIZE, (name, value)
    assert type(config.type_vocab_size) is int and 0 <= config.type_vocab_size <= MAX_SIZE
    assert config.type_vocab_size >= 1 or not config.recipe.embeddings.token_types
    # a family whose heads have their own width (T5's d_kv) needs no even split
    assert config.hidden_size % config.num_attention_heads == 0 or \
        not getattr(config.family_module, "HEADS_SPLIT_HIDDEN", True)
    assert config.hidden_act in SUPPORTED_ACTIVATIONS
    assert type(config.layer_norm_eps) is float and 0 < config.layer_norm_eps < 1
    assert config.pad_token_id is None or type(config.pad_token_id) is int
    assert all(isinstance(name, str) for name in config.architectures)
    assert isinstance(config.tie_word_embeddings, bool)
    assert not config.id2label or list(config.id2label) == list(range(config.num_labels))


def _same_as_transformers(config, raw):
    """Our reading of `raw` equals transformers' reading of the keys we read (the others change
    nothing we compute; transformers may refuse them, or crash on them: a dtype of [[null]])."""
    family = FAMILIES[raw["model_type"]]
    read = {key: value for key, value in raw.items() if key in READ and family in READ_BY.get(key, {family})}
    expected = dict(_transformers_reading(json.dumps(read, sort_keys=True)))
    ours = {name: config.options["gated"] if name == "is_gated_act" else getattr(config, name) for name in expected}
    assert ours == expected, f"{raw}: ours {ours} transformers {expected}"
    return "read, equal to transformers"


@functools.lru_cache(maxsize=None)
def _transformers_reading(read_json):
    """transformers' values of the fields we read, under our names, from config.json's keys."""
    read = json.loads(read_json)
    try:
        theirs = transformers.CONFIG_MAPPING[read["model_type"]].from_dict(read)
    except Exception as error:  # its strict dataclasses name the field
        raise AssertionError(f"transformers refuses {read} ({error}); we accepted it") from None
    family = FAMILIES[read["model_type"]]
    fields = {name: getattr(theirs, name) for name in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "pad_token_id", "num_labels",
        "tie_word_embeddings")}
    if family != "t5":  # T5 has no position table (n_positions is only shown)
        fields["max_position_embeddings"] = theirs.max_position_embeddings
    if family == "t5":
        fields["intermediate_size"], fields["hidden_act"] = theirs.d_ff, theirs.dense_act_fn
        fields["layer_norm_eps"] = float(theirs.layer_norm_epsilon)
        fields["head_dim"] = theirs.d_kv
        fields["relative_attention_num_buckets"] = theirs.relative_attention_num_buckets
        fields["is_gated_act"] = theirs.is_gated_act  # ours: config.options["gated"]
    elif family == "distilbert":
        fields["intermediate_size"], fields["hidden_act"] = theirs.hidden_dim, theirs.activation
    elif family == "gpt2":
        fields["intermediate_size"] = theirs.n_inner if theirs.n_inner is not None else 4 * theirs.n_embd
        fields["hidden_act"] = theirs.activation_function
        fields["layer_norm_eps"] = float(theirs.layer_norm_epsilon)
    elif family == "modernbert":
        fields["intermediate_size"], fields["hidden_act"] = theirs.intermediate_size, theirs.hidden_activation
        fields["layer_norm_eps"] = float(theirs.norm_eps)
    elif family == "gemma3":
        fields["intermediate_size"], fields["hidden_act"] = theirs.intermediate_size, theirs.hidden_activation
    else:
        fields["intermediate_size"], fields["hidden_act"] = theirs.intermediate_size, theirs.hidden_act
    if family in ("llama", "qwen", "gemma3"):
        fields["layer_norm_eps"] = float(theirs.rms_norm_eps)
    elif family not in ("distilbert", "gpt2", "modernbert", "t5"):
        fields["layer_norm_eps"] = float(theirs.layer_norm_eps)
    if family in ("bert", "roberta", "electra", "nomic_bert", "jina_embeddings_v3"):
        fields["type_vocab_size"] = theirs.type_vocab_size
    if family == "electra":
        fields["embedding_size"] = theirs.embedding_size
    if family == "mpnet":
        fields["relative_attention_num_buckets"] = theirs.relative_attention_num_buckets
    fields["architectures"] = tuple(theirs.architectures or ())
    if read.get("id2label"):
        fields["id2label"] = dict(theirs.id2label)
    return fields


def test_config_json_is_refused_by_name_or_read_as_transformers_reads_it(tmp_path):
    transformers.logging.set_verbosity_error()
    outcomes = collections.Counter()
    with scratch_folder(tmp_path) as folder:
        @fuzz_settings(batch=PER_EXAMPLE)
        @given(plans())
        def run(plan):
            for rng, drawn in inputs_of(plan):
                ran("config.json")
                text = config_text(rng, drawn)
                (folder / "config.json").write_bytes(text.encode("utf-8", "surrogatepass"))
                config, error = parse_guarded(lambda: EncoderConfig.from_file(folder), ConfigError, "config.json")
                if config is None:
                    outcomes["refused"] += 1
                    continue
                _check_fields(config)
                outcomes[_same_as_transformers(config, json.loads(text))] += 1

        run()
    total = sum(outcomes.values())
    assert total >= FUZZ_EXAMPLES, outcomes
    assert outcomes["read, equal to transformers"] >= total // 10 and outcomes["refused"] >= total // 10, outcomes
