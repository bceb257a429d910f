"""Pooling: tokens' vectors -> one vector per text, with sentence-transformers' numbers."""

import numpy as np
import pytest

from transformer.pooling import (
    POOLING_FUNCTIONS,
    cls_pooling,
    max_pooling,
    mean_pooling,
    mean_sqrt_len_pooling,
    normalize,
    pool,
    pooling_modes_from_config,
)


def _batch(seed=0, lengths=(5, 3, 1, 7), hidden=16):
    """Random token vectors [batch, seq, hidden] and a right-padded mask for `lengths`."""
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    token_embeddings = rng.standard_normal((len(lengths), seq, hidden)).astype(np.float32)
    attention_mask = (np.arange(seq)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    return token_embeddings, attention_mask


def test_mean_pooling_averages_only_real_tokens():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_array_equal(mean_pooling(hidden, mask), [[2.0, 3.0]])


def test_mean_sqrt_len_pooling_divides_the_sum_by_sqrt_of_token_count():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 7.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 1, 1]])
    np.testing.assert_allclose(mean_sqrt_len_pooling(hidden, mask), [[16.0 / 2.0, 19.0 / 2.0]])


def test_cls_pooling_takes_the_first_token():
    token_embeddings, attention_mask = _batch()
    np.testing.assert_array_equal(cls_pooling(token_embeddings, attention_mask), token_embeddings[:, 0])


def test_max_pooling_ignores_padding_even_when_it_is_larger():
    hidden = np.array([[[-5.0, 1.0], [-3.0, 0.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]])
    np.testing.assert_array_equal(max_pooling(hidden, mask), [[-3.0, 1.0]])


@pytest.mark.parametrize("mode", sorted(POOLING_FUNCTIONS))
def test_pooling_returns_float32_batch_by_hidden(mode):
    token_embeddings, attention_mask = _batch()
    pooled = pool(token_embeddings, attention_mask, [mode])
    assert pooled.dtype == np.float32
    assert pooled.shape == (4, 16)


@pytest.mark.parametrize("mode", sorted(POOLING_FUNCTIONS))
def test_pooled_vector_does_not_depend_on_padding(mode):
    token_embeddings, attention_mask = _batch(lengths=(3, 9))
    alone = pool(token_embeddings[:1, :3], attention_mask[:1, :3], [mode])
    padded = pool(token_embeddings[:1], attention_mask[:1], [mode])
    np.testing.assert_allclose(padded, alone, rtol=0, atol=1e-6)


def test_pool_concatenates_modes_in_the_order_given():
    token_embeddings, attention_mask = _batch()
    both = pool(token_embeddings, attention_mask, ["cls", "mean"])
    assert both.shape == (4, 32)
    np.testing.assert_array_equal(both[:, :16], cls_pooling(token_embeddings, attention_mask))
    np.testing.assert_array_equal(both[:, 16:], mean_pooling(token_embeddings, attention_mask))


def test_pool_rejects_an_unknown_mode_by_name():
    token_embeddings, attention_mask = _batch()
    with pytest.raises(ValueError, match="unknown pooling mode 'median'"):
        pool(token_embeddings, attention_mask, ["median"])


def test_pool_rejects_a_mask_of_the_wrong_shape():
    token_embeddings, attention_mask = _batch()
    with pytest.raises(ValueError, match=r"attention_mask \[batch, seq\]"):
        pool(token_embeddings, attention_mask[:, :2], ["mean"])


def test_normalize_gives_unit_vectors_and_keeps_zero_vectors_zero():
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    normalized = normalize(vectors)
    assert normalized.dtype == np.float32
    np.testing.assert_allclose(normalized, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


def test_pooling_modes_from_config_reads_the_legacy_boolean_form():
    config = {
        "word_embedding_dimension": 384,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": True,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    assert pooling_modes_from_config(config) == ["max", "mean"]


def test_pooling_modes_from_config_reads_the_current_form():
    assert pooling_modes_from_config({"pooling_mode": "cls"}) == ["cls"]
    assert pooling_modes_from_config({"pooling_mode": ["mean", "max"]}) == ["mean", "max"]


def test_pooling_modes_from_config_rejects_a_config_without_a_mode():
    with pytest.raises(ValueError, match="names no pooling mode"):
        pooling_modes_from_config({"pooling_mode_mean_tokens": False})


@pytest.mark.parametrize("mode", sorted(POOLING_FUNCTIONS))
def test_pooling_matches_sentence_transformers_pooling_module(mode):
    torch = pytest.importorskip("torch")
    modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
    token_embeddings, attention_mask = _batch(seed=3, lengths=(6, 2, 9, 4), hidden=24)
    reference = modules.Pooling(24, pooling_mode=mode)
    features = {
        "token_embeddings": torch.from_numpy(token_embeddings.copy()),
        "attention_mask": torch.from_numpy(attention_mask.copy()),
    }
    expected = reference(features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(pool(token_embeddings, attention_mask, [mode]), expected, rtol=0, atol=1e-6)


def test_normalize_matches_torch_functional_normalize():
    torch = pytest.importorskip("torch")
    vectors = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    expected = torch.nn.functional.normalize(torch.from_numpy(vectors), p=2, dim=1).numpy()
    np.testing.assert_allclose(normalize(vectors), expected, rtol=0, atol=1e-7)
