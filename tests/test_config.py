"""EncoderConfig: config.json -> one set of names for every family, and clear errors."""

import json

import pytest

from transformer.config import ConfigError, EncoderConfig


def bert_dict(**overrides):
    raw = dict(model_type="bert", vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=37, hidden_act="gelu", max_position_embeddings=64, type_vocab_size=2,
               layer_norm_eps=1e-12, pad_token_id=0)
    raw.update(overrides)
    return raw


def test_minilm_config_reads_its_sizes(minilm_dir):
    config = EncoderConfig.from_file(minilm_dir)
    assert (config.model_type, config.family) == ("bert", "bert")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 6, 12)
    assert config.head_dim == 32
    assert config.intermediate_size == 1536
    assert config.hidden_act == "gelu"
    assert config.layer_norm_eps == 1e-12
    assert config.type_vocab_size == 2
    assert config.position_padding_idx is None
    assert config.max_sequence_length == 512
    assert config.architectures == ("BertModel",)


def test_mpnet_config_has_no_token_types_and_counts_positions_from_one(mpnet_dir):
    config = EncoderConfig.from_file(mpnet_dir / "config.json")
    assert config.family == "mpnet"
    assert config.type_vocab_size == 0
    assert config.position_padding_idx == 1
    assert config.relative_attention_num_buckets == 32
    assert config.max_position_embeddings == 514
    assert config.max_sequence_length == 512
    assert config.layer_norm_eps == 1e-5


def test_distilbert_spelling_is_folded_into_common_names():
    config = EncoderConfig.from_dict(dict(model_type="distilbert", vocab_size=50, dim=64, n_heads=4, n_layers=3,
                                          hidden_dim=99, activation="relu", max_position_embeddings=40))
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (64, 4, 3)
    assert config.intermediate_size == 99
    assert config.hidden_act == "relu"
    assert config.layer_norm_eps == 1e-12  # hard-coded in DistilBERT's LayerNorms
    assert config.type_vocab_size == 0


def test_roberta_and_xlm_roberta_count_positions_from_pad_token():
    for model_type in ("roberta", "xlm-roberta"):
        config = EncoderConfig.from_dict(bert_dict(model_type=model_type, pad_token_id=1, max_position_embeddings=66))
        assert config.family == "roberta"
        assert config.position_padding_idx == 1
        assert config.max_sequence_length == 64


def test_electra_keeps_its_embedding_size():
    config = EncoderConfig.from_dict(bert_dict(model_type="electra", embedding_size=16))
    assert config.embedding_size == 16
    assert config.hidden_size == 32
    assert EncoderConfig.from_dict(bert_dict()).embedding_size == 32


def test_missing_keys_take_transformers_defaults():
    config = EncoderConfig.from_dict({"model_type": "bert", "vocab_size": 10})
    assert config.hidden_size == 768
    assert config.hidden_act == "gelu"
    assert config.layer_norm_eps == 1e-12
    assert config.pad_token_id == 0
    assert EncoderConfig.from_dict({"model_type": "roberta"}).pad_token_id == 1


def test_id2label_sets_num_labels():
    config = EncoderConfig.from_dict(bert_dict(id2label={"0": "neg", "1": "neutral", "2": "pos"}))
    assert config.num_labels == 3
    assert config.id2label[2] == "pos"


def test_unsupported_model_type_is_named_and_supported_ones_listed():
    with pytest.raises(ConfigError, match=r"unsupported model_type 'bloom'.*bert.*mpnet"):
        EncoderConfig.from_dict({"model_type": "bloom"})


def test_hidden_size_must_divide_into_heads():
    with pytest.raises(ConfigError, match="hidden_size 30 is not divisible by num_attention_heads 4"):
        EncoderConfig.from_dict(bert_dict(hidden_size=30))


def test_unknown_activation_is_named():
    with pytest.raises(ConfigError, match="unsupported activation 'mish'"):
        EncoderConfig.from_dict(bert_dict(hidden_act="mish"))


def test_relative_key_position_embeddings_are_refused_not_ignored():
    with pytest.raises(ConfigError, match="position_embedding_type 'relative_key'"):
        EncoderConfig.from_dict(bert_dict(position_embedding_type="relative_key"))


def test_non_positive_sizes_are_refused():
    with pytest.raises(ConfigError, match=r"num_hidden_layers must be a positive integer \(at most 16,777,216\), "
                                          r"found 0"):
        EncoderConfig.from_dict(bert_dict(num_hidden_layers=0))


def test_unreadable_config_file_error_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json is not valid JSON"):
        EncoderConfig.from_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        EncoderConfig.from_file(tmp_path / "elsewhere")


def test_config_error_from_file_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bloom"}))
    with pytest.raises(ConfigError, match=r"config\.json: unsupported model_type 'bloom'"):
        EncoderConfig.from_file(tmp_path)


def test_mpnet_needs_its_32_relative_position_buckets():
    with pytest.raises(ConfigError, match="relative_attention_num_buckets is 16; MPNet reads 32"):
        EncoderConfig.from_dict({"model_type": "mpnet", "relative_attention_num_buckets": 16})


# --- issue 17, finding 8: nonsense is refused, naming config.json and the field ------------
@pytest.mark.parametrize("field, value, message", [
    ("layer_norm_eps", -1e-12, r"layer_norm_eps must be a positive number below 1"),
    ("layer_norm_eps", 0, r"layer_norm_eps must be a positive number below 1"),
    ("layer_norm_eps", 1e30, r"layer_norm_eps must be a positive number below 1 .*found 1e\+30"),
    ("layer_norm_eps", 1e-50, r"layer_norm_eps is 1e-50, which float32 rounds to 0"),
    ("layer_norm_eps", "1e-12", r"layer_norm_eps must be a number, found \"1e-12\""),
    ("layer_norm_eps", True, r"layer_norm_eps must be a number, found true"),
    ("type_vocab_size", 0, r"type_vocab_size is 0, but bert adds a token-type embedding to every token"),
    ("vocab_size", 2 ** 40, r"vocab_size must be a positive integer \(at most 16,777,216\), found 1099511627776"),
    ("vocab_size", 100.0, r"vocab_size must be an integer, found 100\.0"),
    ("hidden_size", True, r"hidden_size must be an integer, found true"),
    ("num_attention_heads", "4", r"num_attention_heads must be an integer, found \"4\""),
    ("intermediate_size", -37, r"intermediate_size must be a positive integer \(at most 16,777,216\), found -37"),
    ("max_position_embeddings", None, r"max_position_embeddings must be an integer, found null"),
    ("num_hidden_layers", [2], r"num_hidden_layers must be an integer, found \[2\]"),
    ("pad_token_id", 0.5, r"pad_token_id must be an integer, found 0\.5"),
    ("hidden_act", ["gelu"], r"hidden_act must be an activation name, found \[\"gelu\"\]"),
    ("hidden_act", "mish", r"unsupported activation 'mish'"),
    ("id2label", {"a": "x"}, r"id2label has the key 'a'; its keys must be label ids"),
    ("id2label", {"0": "x", "2": "y"}, r"id2label's keys must be 0 \.\. 1, one each, found \[\"0\", \"2\"\]"),
    ("id2label", {"0": "x", "00": "y"}, r"id2label's keys must be 0 \.\. 1, one each"),
    ("id2label", {"0": 1}, r"id2label\['0'\] must be a string, found 1"),
    ("id2label", ["x"], r"id2label must be an object"),
    ("num_labels", -1, r"num_labels must be a positive integer"),
    ("architectures", "BertModel", r"architectures must be a list of class names, found \"BertModel\""),
    ("architectures", [1], r"architectures must be a list of class names, found \[1\]"),
    ("tie_word_embeddings", "false", r"tie_word_embeddings must be true or false, found \"false\""),
    ("is_decoder", "no", r"is_decoder must be true or false"),
    ("model_type", ["bert"], r"unsupported model_type \['bert'\]"),
])
def test_a_nonsense_field_is_refused_naming_the_file_and_the_field(tmp_path, field, value, message):
    (tmp_path / "config.json").write_text(json.dumps(bert_dict(**{field: value})))
    with pytest.raises(ConfigError, match=r"config\.json: " + message):
        EncoderConfig.from_file(tmp_path)


def test_type_vocab_size_zero_is_refused_for_every_family_that_adds_token_types():
    for model_type in ("roberta", "xlm-roberta", "electra"):
        with pytest.raises(ConfigError, match=rf"type_vocab_size is 0, but {model_type} adds"):
            EncoderConfig.from_dict(bert_dict(model_type=model_type, pad_token_id=1, type_vocab_size=0))
    one_row = EncoderConfig.from_dict(bert_dict(model_type="roberta", pad_token_id=1, type_vocab_size=1))
    assert one_row.type_vocab_size == 1


def test_distilbert_sizes_are_named_as_its_config_spells_them():
    with pytest.raises(ConfigError, match=r"^n_heads must be an integer, found \"4\""):
        EncoderConfig.from_dict(dict(model_type="distilbert", n_heads="4"))
    with pytest.raises(ConfigError, match=r"^activation must be an activation name"):
        EncoderConfig.from_dict(dict(model_type="distilbert", activation=None))


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "bert", "layer_norm_eps": Infinity}',
     r"config\.json is not valid JSON: Infinity is not a JSON number"),
    ('{"model_type": "bert", "vocab_size": 10, "vocab_size": 20}', r"the key 'vocab_size' appears twice"),
    ('["bert"]', r"config\.json must hold a JSON object, found list"),
])
def test_config_json_is_read_strictly(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        EncoderConfig.from_file(tmp_path)


def test_a_config_json_linked_to_a_device_is_refused(tmp_path):
    (tmp_path / "config.json").symlink_to("/dev/urandom")
    with pytest.raises(ConfigError, match=r"config\.json is a device; expected a regular file"):
        EncoderConfig.from_file(tmp_path)


def test_an_infinite_layer_norm_eps_is_refused_however_written(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "layer_norm_eps": 1e999}')  # Python reads inf
    with pytest.raises(ConfigError, match=r"config\.json: layer_norm_eps must be a positive number below 1 "
                                          r".*found inf"):
        EncoderConfig.from_file(tmp_path)
    with pytest.raises(ConfigError, match=r"layer_norm_eps must be a positive number below 1 .*found nan"):
        EncoderConfig.from_dict(bert_dict(layer_norm_eps=float("nan")))


# --- found by tests/test_fuzz_config.py: where transformers reads the dict otherwise ----------
def test_xlm_roberta_takes_its_own_default_vocab_size():
    assert EncoderConfig.from_dict({"model_type": "xlm-roberta"}).vocab_size == 30522  # XLMRobertaConfig's
    assert EncoderConfig.from_dict({"model_type": "roberta"}).vocab_size == 50265


def test_distilbert_reads_the_bert_spelling_as_transformers_does():
    config = EncoderConfig.from_dict(dict(model_type="distilbert", dim=32, hidden_size=64, n_heads=4,
                                          num_attention_heads=8, hidden_dim=37))
    assert (config.hidden_size, config.num_attention_heads) == (64, 8)  # DistilBertConfig.attribute_map


@pytest.mark.parametrize("field, value, message", [
    ("embedding_size", None, r"embedding_size must be an integer, found null"),
    ("is_decoder", None, r"is_decoder must be true or false, found null"),
    ("add_cross_attention", None, r"add_cross_attention must be true or false, found null"),
])
def test_a_null_where_transformers_needs_a_value_is_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        EncoderConfig.from_dict(bert_dict(model_type="electra", **{field: value}))


def test_num_labels_that_disagrees_with_id2label_is_refused():
    with pytest.raises(ConfigError, match=r"num_labels is 3 but id2label names 2 labels"):
        EncoderConfig.from_dict(bert_dict(num_labels=3, id2label={"0": "a", "1": "b"}))
    assert EncoderConfig.from_dict(bert_dict(num_labels=2, id2label={"0": "a", "1": "b"})).num_labels == 2


def test_an_error_message_escapes_a_lone_surrogate():
    with pytest.raises(ConfigError) as caught:
        EncoderConfig.from_dict(bert_dict(architectures="\ud800"))
    str(caught.value).encode("utf-8")  # printable on any terminal: no lone surrogate left in it


def test_a_config_json_that_is_a_folder_is_named_as_such(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match=r"config file .*/config\.json is a directory; expected a regular file"):
        EncoderConfig.from_file(tmp_path / "config.json")
