"""Write tests/references/retrieval_*.npz: what the pinned sentence-transformers gives for
prompts, truncate_dim, similarity functions and quantized vectors, so the tests can check
this package without torch.

    .venv/bin/python tools/make_retrieval_references.py [prompts] [quantize]   (default: both)

The tests import the cases from here (`prompted_model_folder`, `PROMPT_CASES`, ...), so the
live comparison and the committed file run the same inputs.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "tests" / "references"

# A model config with prompts, a default prompt and a similarity function: all-MiniLM-L6-v2's
# files with this config_sentence_transformers.json instead of its own.
PROMPTED_CONFIG = {
    "prompts": {"query": "query: ", "passage": "passage: ", "classification": "Classify the topic: "},
    "default_prompt_name": "classification",
    "similarity_fn_name": "dot",
}
TEXTS = [
    "A man is eating food.",
    "How do I bake bread at home?",
    "The girl is carrying a baby.",
    "Der Himmel ist heute sehr blau.",
    "",
    "Matryoshka dolls nest one inside another, smaller and smaller.",
]
# (name, the method, its keyword arguments): each row of the reference is one call on TEXTS.
PROMPT_CASES = [
    ("default_prompt", "encode", {}),
    ("prompt_name_query", "encode", {"prompt_name": "query"}),
    ("prompt_text", "encode", {"prompt": "Represent this sentence: "}),
    ("prompt_wins_over_name", "encode", {"prompt": "search: ", "prompt_name": "query"}),
    ("encode_query", "encode_query", {}),
    ("encode_document", "encode_document", {}),
    ("truncate_128", "encode", {"truncate_dim": 128}),
    ("truncate_64_normalized", "encode", {"truncate_dim": 64, "normalize_embeddings": True}),
]
SIMILARITY_FUNCTIONS = ("cosine", "dot", "euclidean", "manhattan")
QUANTIZE_PRECISIONS = ("int8", "uint8", "binary", "ubinary")


def prompted_model_folder(source, target):
    """A model folder at `target`: links to every file of `source` but its own
    config_sentence_transformers.json (PROMPTED_CONFIG)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for entry in Path(source).iterdir():
        if entry.name != "config_sentence_transformers.json" and not entry.name.startswith("."):
            os.symlink(entry.resolve(), target / entry.name)
    (target / "config_sentence_transformers.json").write_text(json.dumps(PROMPTED_CONFIG), encoding="utf-8")
    return target


def calibration_split(vectors):
    """(calibration vectors, vectors to quantize) out of one set: the first two thirds calibrate."""
    cut = 2 * len(vectors) // 3
    return vectors[:cut], vectors[cut:]


def prompt_references(model):
    """{case: float32 [len(TEXTS), dim]} from a sentence-transformers model."""
    found = {}
    for name, method, options in PROMPT_CASES:
        found[name] = getattr(model, method)(TEXTS, batch_size=4, **options)
    # The similarities of one set of vectors, stored with them: a sum over 384 dimensions of
    # -15 or so magnifies the vectors' own 1e-7 differences past 1e-5.
    vectors = found["similarity_inputs"] = model.encode(TEXTS, prompt="")
    for function in SIMILARITY_FUNCTIONS:
        model.similarity_fn_name = function
        found[f"similarity_{function}"] = model.similarity(vectors[:3], vectors).numpy()
    return found


def quantize_references(vectors):
    """{precision + case: array} from sentence-transformers' quantize_embeddings."""
    from sentence_transformers.util.quantization import quantize_embeddings

    calibration, rest = calibration_split(vectors)
    found = {"vectors": vectors}
    for precision in QUANTIZE_PRECISIONS:
        found[f"{precision}_self"] = quantize_embeddings(vectors, precision=precision)
        found[f"{precision}_calibrated"] = quantize_embeddings(rest, precision=precision,
                                                               calibration_embeddings=calibration)
    return found


def corpus_vectors(model):
    """float32 [n, dim]: the bundled corpus's sentences (transformer.corpus) through `model`."""
    from transformer.corpus import load_corpus

    return model.encode(load_corpus().texts[::3], batch_size=16)  # 100 of the 300: a small file


def main():
    import tempfile

    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(ROOT))
    from transformer.store import weights_dir

    source = weights_dir() / "all-MiniLM-L6-v2"
    only = sys.argv[1:] or ["prompts", "quantize"]
    with tempfile.TemporaryDirectory() as scratch:
        if "prompts" in only:
            folder = prompted_model_folder(source, Path(scratch) / "prompted")
            model = SentenceTransformer(str(folder), device="cpu")
            np.savez(REFERENCES / "retrieval_prompts.npz", **prompt_references(model))
    if "quantize" in only:
        plain = SentenceTransformer(str(source), device="cpu")
        np.savez(REFERENCES / "retrieval_quantize.npz", **quantize_references(corpus_vectors(plain)))
    print(f"wrote the references for {', '.join(only)} in {REFERENCES}")


if __name__ == "__main__":
    main()
