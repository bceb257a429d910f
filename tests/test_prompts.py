"""Prompts, similarity functions and truncate_dim: SentenceEncoder == sentence-transformers.

A copy of all-MiniLM-L6-v2 with prompts ("query", "passage", "classification" as the default)
and similarity_fn_name "dot" in its config_sentence_transformers.json
(tools/make_retrieval_references.py makes it, and wrote tests/references/retrieval_prompts.npz
with the pinned sentence-transformers). Every case must match within 1e-5, the committed file
always, the live library when it is importable.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from transformer.files import ModelFileError
from transformer.sentence import SentenceEncoder, similarity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from make_retrieval_references import (EXCLUDED_PROMPT_CASES, PROMPT_CASES, SIMILARITY_FUNCTIONS,  # noqa: E402
                                       TEXTS, prompt_excluded_folder, prompted_model_folder)

REFERENCE = Path(__file__).resolve().parent / "references" / "retrieval_prompts.npz"
EXCLUDED_REFERENCE = Path(__file__).resolve().parent / "references" / "retrieval_prompt_excluded.npz"
MAX_ABS_DIFF = 1e-5


@pytest.fixture(scope="module")
def prompted_dir(minilm_dir, tmp_path_factory):
    return prompted_model_folder(minilm_dir, tmp_path_factory.mktemp("models") / "prompted")


@pytest.fixture(scope="module")
def model(prompted_dir):
    return SentenceEncoder.from_pretrained(prompted_dir)


def ours(model, similarity_inputs):
    """Our answers to the reference's cases; the similarities of the reference's own vectors."""
    found = {name: getattr(model, method)(TEXTS, batch_size=4, **options) for name, method, options in PROMPT_CASES}
    found["similarity_inputs"] = model.encode(TEXTS, prompt="")
    for function in SIMILARITY_FUNCTIONS:
        found[f"similarity_{function}"] = similarity(similarity_inputs[:3], similarity_inputs, function)
    return found


def assert_matches(found, expected):
    assert sorted(found) == sorted(expected)
    for name in expected:
        assert found[name].dtype == np.float32 and found[name].shape == expected[name].shape, name
        worst = np.abs(found[name] - expected[name]).max()
        if name == "similarity_manhattan":
            assert_manhattan_matches(found[name], expected[name], expected["similarity_inputs"])
            continue
        assert worst <= MAX_ABS_DIFF, f"{name}: max |diff| {worst:.2e}"


def assert_manhattan_matches(found, expected, vectors):
    """The library's L1 distances (torch.cdist) add 384 float32 terms in its own order: at a
    distance of 23 they stray up to 1.4e-5 from the exact sum. Ours must be within 1e-5 of the
    exact (float64) sum, and the library's within 1e-6 of it relatively."""
    exact = -np.abs(vectors[:3, None].astype(np.float64) - vectors[None]).sum(axis=-1)  # [3, n]
    assert np.abs(found - exact).max() <= MAX_ABS_DIFF
    assert (np.abs(expected - exact) / np.maximum(np.abs(exact), 1)).max() <= 1e-6


def test_the_model_reads_prompts_and_similarity_from_its_config(model):
    assert model.prompts == {"query": "query: ", "document": "", "passage": "passage: ",
                             "classification": "Classify the topic: "}
    assert model.default_prompt_name == "classification"
    assert model.similarity_fn_name == "dot"


def test_a_model_without_that_config_has_empty_query_and_document_prompts(minilm_dir):
    plain = SentenceEncoder.from_pretrained(minilm_dir)
    assert plain.prompts == {"query": "", "document": ""} and plain.default_prompt_name is None
    assert plain.similarity_fn_name == "cosine"


def test_prompts_truncation_and_similarity_match_the_committed_reference(model):
    with np.load(REFERENCE) as reference:
        assert_matches(ours(model, reference["similarity_inputs"]), dict(reference))


def test_prompts_truncation_and_similarity_match_live_sentence_transformers(model, prompted_dir):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from make_retrieval_references import prompt_references

    live = prompt_references(sentence_transformers.SentenceTransformer(str(prompted_dir), device="cpu"))
    assert_matches(ours(model, live["similarity_inputs"]), live)
    with np.load(REFERENCE) as reference:  # the committed file still says what the library says
        assert sorted(reference) == sorted(live)
        for name in live:
            np.testing.assert_allclose(reference[name], live[name], rtol=1e-6, atol=MAX_ABS_DIFF, err_msg=name)


def test_a_prompt_is_the_same_as_its_text_put_before_each_text(model):
    by_name = model.encode(TEXTS[:2], prompt_name="query")
    by_hand = model.encode(["query: " + text for text in TEXTS[:2]], prompt="")
    np.testing.assert_array_equal(by_name, by_hand)


def test_model_similarity_uses_the_configured_function(model):
    vectors = model.encode(TEXTS[:3])
    np.testing.assert_allclose(model.similarity(vectors, vectors), vectors @ vectors.T, rtol=0, atol=1e-6)


def test_truncate_dim_at_load_applies_to_every_encode(prompted_dir, model):
    cut = SentenceEncoder.from_pretrained(prompted_dir, truncate_dim=32)
    np.testing.assert_array_equal(cut.encode(TEXTS[:2]), model.encode(TEXTS[:2])[:, :32])


def test_a_prompt_name_the_model_lacks_is_refused_by_name(model):
    with pytest.raises(ValueError, match=r"prompt_name 'search' is not one of this model's prompts.*'query'"):
        model.encode(TEXTS, prompt_name="search")


@pytest.mark.parametrize("truncate_dim", [0, 385, 1.5, True])
def test_truncate_dim_outside_the_dimension_is_refused(model, truncate_dim):
    with pytest.raises(ValueError, match=r"truncate_dim must be an integer in \[1, 384\]"):
        model.encode(TEXTS, truncate_dim=truncate_dim)


def test_an_unknown_similarity_function_is_refused(model):
    with pytest.raises(ValueError, match="similarity function 'jaccard'; expected one of 'cosine'"):
        similarity(np.ones((1, 4)), np.ones((1, 4)), "jaccard")


@pytest.mark.parametrize("config, field", [
    ({"prompts": {"query": 3}}, "prompts must be an object of name: text"),
    ({"default_prompt_name": "search"}, "default_prompt_name \"search\" is not one of the prompts"),
    ({"similarity_fn_name": "maxsim"}, "similarity_fn_name is \"maxsim\"; expected one of"),
    ({"truncate_dim": -4}, "truncate_dim must be a positive integer or null"),
])
def test_a_malformed_model_config_is_refused_naming_the_field(minilm_dir, tmp_path, config, field):
    folder = prompted_model_folder(minilm_dir, tmp_path / "bad")
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelFileError, match="config_sentence_transformers.json: " + field):
        SentenceEncoder.from_pretrained(folder)


# --- include_prompt: false (the prompt's tokens left out of the pooling) ---------------------


@pytest.fixture(scope="module")
def excluded_dir(minilm_dir, tmp_path_factory):
    return prompt_excluded_folder(minilm_dir, tmp_path_factory.mktemp("models") / "excluded")


@pytest.fixture(scope="module")
def excluding_model(excluded_dir):
    return SentenceEncoder.from_pretrained(excluded_dir)


def excluded_cases(model):
    found = {}
    for name, options in EXCLUDED_PROMPT_CASES:
        options = dict(options)
        found[name] = model.encode(options.pop("texts", TEXTS), batch_size=4, **options)
    return found


def test_the_pooling_config_says_the_prompt_is_excluded(excluding_model, model):
    assert excluding_model.include_prompt is False and model.include_prompt is True


def test_excluded_prompts_match_the_committed_reference(excluding_model):
    with np.load(EXCLUDED_REFERENCE) as reference:
        assert_matches(excluded_cases(excluding_model), dict(reference))


def test_excluded_prompts_match_live_sentence_transformers(excluding_model, excluded_dir):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from make_retrieval_references import excluded_prompt_references

    live = excluded_prompt_references(sentence_transformers.SentenceTransformer(str(excluded_dir), device="cpu"))
    assert_matches(excluded_cases(excluding_model), live)


def test_the_prompt_length_counts_cls_and_not_the_closing_sep(excluding_model):
    # "query: " is [CLS] query : [SEP] alone; a text follows in place of the [SEP].
    assert excluding_model.prompt_length("query: ") == 3


def test_an_excluded_prompt_is_pooled_as_a_masked_prefix(excluding_model):
    text = "A man is eating food."
    batch = excluding_model.tokenizer(["query: " + text], padding=True)
    hidden = excluding_model.encoder.last_hidden_state(batch["input_ids"], batch["attention_mask"],
                                                       batch["token_type_ids"])  # [1, seq, 384]
    mean = hidden[0, 3:].mean(axis=0)  # every token after [CLS] query :, the [SEP] included
    found = excluding_model.encode(text, prompt_name="query", normalize=False)  # [6 * 384]
    np.testing.assert_allclose(found[:384], mean, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(found[384:768], hidden[0, 3])  # cls: the first pooled token


def test_chunking_with_an_excluded_prompt_is_refused(excluding_model):
    with pytest.raises(ValueError, match="long='chunk' with a prompt this model leaves out of its pooling"):
        excluding_model.encode(TEXTS, prompt_name="query", long="chunk")


def test_a_non_boolean_include_prompt_is_refused_naming_the_file(minilm_dir, tmp_path):
    folder = prompt_excluded_folder(minilm_dir, tmp_path / "bad")
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean", "include_prompt": "no"}),
                                                     encoding="utf-8")
    with pytest.raises(ModelFileError, match=r"1_Pooling/config.json: include_prompt must be true or false, "
                                             r"found \"no\""):
        SentenceEncoder.from_pretrained(folder)
