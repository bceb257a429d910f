"""DeBERTa-v2/v3 against live `transformers` (fp32, eager), where torch is installed.

tests/test_families_live.py runs the NumPy backend on every case of tools/make_references.py,
the DeBERTa ones included; here the numba backend runs the larger DeBERTa cases (hidden 256
with DeBERTa-v3's 256 log buckets over 1100 tokens; own position linears), and our log
buckets are checked against transformers' make_log_bucket_position distance by distance.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformer import model as numpy_model  # noqa: E402
from transformer.encoder import Encoder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5


def _load_tool():
    spec = importlib.util.spec_from_file_location("make_references", ROOT / "tools" / "make_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_references = _load_tool()
LIVE = {case["name"]: case for case in make_references.LIVE_CASES if case["model_type"] == "deberta-v2"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("buckets, max_distance", [(256, 512), (16, 64), (8, 20), (32, 128), (64, 100), (4, 6)])
def test_log_buckets_are_transformers_own_at_every_distance(buckets, max_distance):
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    distance = np.arange(-5000, 5001, dtype=np.int64)
    theirs = make_log_bucket_position(torch.from_numpy(distance), buckets, max_distance).to(torch.long).numpy()
    np.testing.assert_array_equal(numpy_model.log_bucket_positions(distance, buckets, max_distance), theirs)


@pytest.mark.parametrize("name", sorted(LIVE))
def test_numba_backend_matches_transformers_on_larger_shapes(name, tmp_path):
    reference = make_references.write_case(LIVE[name], tmp_path / name)
    model = Encoder.from_pretrained(tmp_path / name, backend="numba")
    mask = reference["attention_mask"].astype(bool)
    out = model(reference["input_ids"], reference["attention_mask"], reference["token_type_ids"])
    assert np.abs(out.last_hidden_state - reference["last_hidden_state"])[mask].max() <= TOLERANCE
    logits, expected = out.logits, reference["logits"]
    if logits.shape[:2] == mask.shape:
        logits, expected = logits[mask], expected[mask]
    assert np.abs(logits - expected).max() <= TOLERANCE


def test_committed_deberta_references_are_what_the_script_makes(tmp_path):
    case = next(c for c in make_references.CASES if c["name"] == "deberta_v3_buckets")
    committed = np.load(ROOT / "tests" / "references" / "families" / case["name"] / "reference.npz")
    fresh = make_references.write_case(case, tmp_path / case["name"])
    np.testing.assert_array_equal(fresh["input_ids"], committed["input_ids"])
    # 1e-6 of each tensor's scale: torch's float32 kernels round differently from one CPU to
    # another (see test_families_live); a stale or hand-made file is off by far more.
    for key in ("last_hidden_state", "hidden_states", "attentions"):
        scale = max(1.0, float(np.abs(committed[key]).max()))
        assert np.abs(fresh[key] - committed[key]).max() <= 1e-6 * scale


def test_sentence_encoder_matches_sentence_transformers_on_a_deberta_folder(tmp_path):
    # A DeBERTa-v3-style sentence model: the committed tiny checkpoint, a SentencePiece-style
    # Unigram tokenizer.json (Metaspace, [CLS] $A [SEP]) made by the Rust `tokenizers`, mean
    # pooling and normalization; sentence-transformers runs the same folder.
    import json
    import shutil

    sentence_transformers = pytest.importorskip("sentence_transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    from transformer import SentenceEncoder

    folder = tmp_path / "deberta_sentence"
    shutil.copytree(ROOT / "tests" / "references" / "families" / "deberta_v3_buckets", folder)
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    pieces = ["\u2581the", "\u2581a", "\u2581cat", "\u2581sat", "\u2581on", "\u2581mat", "\u2581", "s", "ing",
              *"abcdefghijklmnopqrstuvwxyz.,!"]
    vocab = [(piece, 0.0) for piece in specials] + [(piece, -1.0 - 0.1 * i) for i, piece in enumerate(pieces)]
    tokenizer = Tokenizer(models.Unigram(vocab[:50], unk_id=3, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
        "unk_token": "[UNK]", "mask_token": "[MASK]", "model_max_length": 512}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                   "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    texts = ["the cat sat on the mat.", "a cat!", "the mats, sitting on cats", "z"]
    theirs = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    for backend in ("numpy", "numba"):
        ours = SentenceEncoder.from_pretrained(folder, backend=backend).encode(texts)
        assert np.abs(ours - theirs).max() <= TOLERANCE, backend
