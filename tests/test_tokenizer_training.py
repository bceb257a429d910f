"""train_bpe: the vocab + merges it learns load and apply identically here and in Rust `tokenizers`."""

import pytest

from transformer.tokenizer import Tokenizer, bpe_tokenizer, save_bpe, train_bpe

tokenizers = pytest.importorskip("tokenizers")

CORPUS = [line for line in (__import__("pathlib").Path(__file__).parent / "tokenizer_data" / "multilingual.txt")
          .read_text(encoding="utf-8").split("\n") if line]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    vocab, merges = train_bpe(CORPUS, vocab_size=600)
    directory = save_bpe(vocab, merges, tmp_path_factory.mktemp("bpe"))
    return vocab, merges, directory


def test_train_bpe_reaches_the_requested_vocab_size(trained):
    vocab, merges, _ = trained
    assert len(vocab) == 600
    assert len(merges) == 600 - 256
    assert sorted(vocab.values()) == list(range(600))


def test_trained_files_encode_identically_here_and_in_rust(trained):
    from tokenizers import decoders, models, pre_tokenizers

    _, _, directory = trained
    reference = tokenizers.Tokenizer(models.BPE.from_file(str(directory / "vocab.json"), str(directory / "merges.txt")))
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = decoders.ByteLevel()
    ours = Tokenizer.from_pretrained(directory)
    texts = CORPUS + [t.upper() for t in CORPUS] + [t[::-1] for t in CORPUS]
    for text in texts:
        expected = reference.encode(text)
        got = ours.encode(text)
        assert (got.ids, got.tokens, got.offsets) == (expected.ids, expected.tokens, expected.offsets), text
        assert ours.decode(got.ids) == reference.decode(expected.ids) == text


def test_trained_tokenizer_round_trips_text(trained):
    vocab, merges, _ = trained
    tok = bpe_tokenizer(vocab, merges)
    for text in CORPUS:
        assert tok.decode(tok.encode(text).ids) == text


def test_train_bpe_is_deterministic():
    assert train_bpe(CORPUS[:20], 300) == train_bpe(CORPUS[:20], 300)


def test_train_bpe_names_a_non_str_item():
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        train_bpe(["fine", 3], 300)
