"""Write tests/references/retrieval_*.npz: what the pinned sentence-transformers gives for
prompts, truncate_dim, similarity functions and quantized vectors, so the tests can check
this package without torch.

    .venv/bin/python tools/make_retrieval_references.py [prompts] [exclude] [dense] [quantize] [cross] [sparse] [eval]
    (default: all)

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


# Pooling that leaves the prompt out (include_prompt: false), every mode at once (concatenated),
# so one folder covers how each mode reads the mask.
EXCLUDED_PROMPT_POOLING = {"pooling_mode": ["mean", "cls", "lasttoken", "max", "weightedmean", "mean_sqrt_len_tokens"],
                           "include_prompt": False, "embedding_dimension": 384}
EXCLUDED_PROMPT_CASES = [
    ("default_prompt", {}),
    ("prompt_name_query", {"prompt_name": "query"}),
    ("prompt_text", {"prompt": "Represent this sentence for searching relevant passages: "}),
    ("no_prompt", {"prompt": ""}),
    ("long_text_cut", {"prompt_name": "passage", "texts": ["the end of a long text " * 80]}),
]


def prompt_excluded_folder(source, target):
    """`prompted_model_folder` whose Pooling module is EXCLUDED_PROMPT_POOLING (in 1_Pooling)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for entry in Path(source).iterdir():
        if entry.name not in ("config_sentence_transformers.json", "1_Pooling") and not entry.name.startswith("."):
            os.symlink(entry.resolve(), target / entry.name)
    (target / "config_sentence_transformers.json").write_text(json.dumps(PROMPTED_CONFIG), encoding="utf-8")
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps(EXCLUDED_PROMPT_POOLING), encoding="utf-8")
    return target


def excluded_prompt_references(model):
    """{case: float32 [n, dim]} of a model from `prompt_excluded_folder` on EXCLUDED_PROMPT_CASES."""
    found = {}
    for name, options in EXCLUDED_PROMPT_CASES:
        options = dict(options)
        found[name] = model.encode(options.pop("texts", TEXTS), batch_size=4, **options)
    return found


# Dense modules after the pooling, as sentence-t5 and EmbeddingGemma have them: (folder,
# in_features, out_features, bias, activation class, use_residual).
DENSE_LAYERS = [
    ("2_Dense", 384, 256, True, "Tanh", False),
    ("3_Dense", 256, 96, False, "Identity", False),
    ("4_Dense", 96, 96, True, "GELU", True),
]
DENSE_TEXTS = TEXTS + ["the end of a long text " * 80]


def dense_modules_json(layers=DENSE_LAYERS):
    listed = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    for folder, *_ in layers:
        listed.append({"idx": len(listed), "name": str(len(listed)), "path": folder,
                       "type": "sentence_transformers.models.Dense"})
    listed.append({"idx": len(listed), "name": str(len(listed)), "path": f"{len(listed)}_Normalize",
                   "type": "sentence_transformers.models.Normalize"})
    return listed


def dense_model_folder(source, target, seed=0):
    """all-MiniLM-L6-v2's files (linked) with Dense modules (DENSE_LAYERS) written here with
    NumPy weights (std 1/sqrt(in_features)), for the torch-free test."""
    from safetensors.numpy import save_file

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for entry in Path(source).iterdir():
        if entry.name != "modules.json" and not entry.name.startswith("."):
            os.symlink(entry.resolve(), target / entry.name)
    rng = np.random.default_rng(seed)
    for folder, inputs, outputs, bias, activation, residual in DENSE_LAYERS:
        (target / folder).mkdir()
        tensors = {"linear.weight": (rng.standard_normal((outputs, inputs)) / np.sqrt(inputs)).astype(np.float32)}
        if bias:
            tensors["linear.bias"] = (0.1 * rng.standard_normal(outputs)).astype(np.float32)
        save_file(tensors, str(target / folder / "model.safetensors"))
        config = {"in_features": inputs, "out_features": outputs, "bias": bias,
                  "activation_function": f"torch.nn.modules.{'linear' if activation == 'Identity' else 'activation'}"
                                         f".{activation}"}
        if residual:
            config["use_residual"] = True
        (target / folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (target / "modules.json").write_text(json.dumps(dense_modules_json()), encoding="utf-8")
    return target


def saved_dense_model(source, target, seed=0):
    """The same modules built by sentence-transformers itself (torch's own initialization) and
    saved with model.save: the folder a user of the library would have."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from sentence_transformers.base.modules import Dense, Normalize, Transformer

    torch.manual_seed(seed)
    modules = [Transformer(str(source), max_seq_length=256), Pooling(384, "mean")]
    for _, inputs, outputs, bias, activation, residual in DENSE_LAYERS:
        modules.append(Dense(inputs, outputs, bias=bias, activation_function=getattr(torch.nn, activation)(),
                             use_residual=residual))
    modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu")
    model.save(str(target))
    return model


# Cross-encoders without torch: all-MiniLM-L6-v2's encoder with a classifier drawn here.
CROSS_LABELS = (1, 3)
CROSS_PAIRS = [
    ("How do vaccines train the immune system?",
     "Vaccines expose the immune system to a harmless piece of a pathogen so it learns to recognise it."),
    ("How do vaccines train the immune system?", "The stock market closed higher on Friday after a week of losses."),
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("Where is the Eiffel Tower?", "The Eiffel Tower stands on the Champ de Mars in Paris, France."),
    ("Where is the Eiffel Tower?", ""),
    ("long " * 300, "the second text survives: the first, longer one is cut"),
]


def minilm_cross_encoder(source, target, num_labels, seed=0):
    """A BertForSequenceClassification folder at `target`: all-MiniLM-L6-v2's encoder and
    pooler (from `source`) under "bert.", a classifier [num_labels, 384] drawn with NumPy
    (std 1/sqrt(384), bias std 0.1), its tokenizer files linked."""
    from safetensors.numpy import load_file, save_file

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tensors = {"bert." + name: value for name, value in load_file(Path(source) / "model.safetensors").items()}
    rng = np.random.default_rng(seed)
    tensors["classifier.weight"] = (rng.standard_normal((num_labels, 384)) / np.sqrt(384)).astype(np.float32)
    tensors["classifier.bias"] = (0.1 * rng.standard_normal(num_labels)).astype(np.float32)
    save_file(tensors, str(target / "model.safetensors"))
    config = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
    config.update(architectures=["BertForSequenceClassification"], num_labels=num_labels)
    config.pop("_name_or_path", None)
    if num_labels != 2:
        config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        config["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        os.symlink((Path(source) / name).resolve(), target / name)
    return target


def cross_encoder_references(folder):
    """{"scores", "rank_ids", "rank_scores"} of sentence-transformers' CrossEncoder on CROSS_PAIRS."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(folder), device="cpu")
    found = {"scores": model.predict(CROSS_PAIRS, batch_size=4)}
    if model.num_labels == 1:
        ranked = model.rank(CROSS_PAIRS[0][0], [document for _, document in CROSS_PAIRS])
        found["rank_ids"] = np.array([hit["corpus_id"] for hit in ranked])
        found["rank_scores"] = np.array([hit["score"] for hit in ranked], dtype=np.float32)
    return found


SPARSE_TEXTS = [
    "The cat sat on the mat.",
    "How do vaccines train the immune system?",
    "",
    "Der Himmel ist heute sehr blau.",
    "Sparse retrieval expands a query to the words a relevant passage would use. " * 40,  # past 512 tokens
    "what is the capital of france",
]
SPARSE_MAX_ACTIVE_DIMS = 8


def sparse_references(folder):
    """sentence-transformers' SparseEncoder on SPARSE_TEXTS: the dense weights stored compactly
    (row, word, weight of every non-zero), the same with max_active_dims, and decode's top 5."""
    from sentence_transformers import SparseEncoder

    model = SparseEncoder(str(folder), device="cpu")
    found = {}
    for name, options in (("all", {}), ("top", {"max_active_dims": SPARSE_MAX_ACTIVE_DIMS})):
        dense = model.encode(SPARSE_TEXTS, batch_size=4, convert_to_sparse_tensor=False, **options).numpy()
        rows, words = np.nonzero(dense)
        found[f"{name}_rows"], found[f"{name}_words"], found[f"{name}_weights"] = rows, words, dense[rows, words]
    decoded = model.decode(model.encode(SPARSE_TEXTS[:2]), top_k=5)
    found["decoded_tokens"] = np.array([[token for token, _ in row] for row in decoded])
    found["decoded_weights"] = np.array([[weight for _, weight in row] for row in decoded], dtype=np.float32)
    return found


def dense_from(found, name, dimension):
    """The [len(SPARSE_TEXTS), dimension] weights stored by `sparse_references` under `name`."""
    dense = np.zeros((len(SPARSE_TEXTS), dimension), dtype=np.float32)
    dense[found[f"{name}_rows"], found[f"{name}_words"]] = found[f"{name}_weights"]
    return dense


EVAL_SLICE = 300  # the first sentences of each UCI source the probe test runs on


ROTTEN_TOMATOES_STEP = 40  # every 40th snippet: 321 of 12,808
BBC_STEP = 20  # every 20th article: 112 of 2,225, all five topics
UDHR_SLICE_LANGUAGES = ("deu_1996", "fra")


def eval_slices(embed):
    """The newer tasks on small slices, through transformer.eval's own code: {"rotten-tomatoes":
    {"accuracy"}, "bbc-news": {"accuracy", "v_measure"}, "udhr-bitext": {"accuracy@1", "mrr"}}."""
    from transformer import eval as evaluation

    texts, labels = evaluation.rotten_tomatoes_data()
    found = {"rotten-tomatoes": {"accuracy": evaluation.probe_accuracy(
        embed(texts[::ROTTEN_TOMATOES_STEP]), labels[::ROTTEN_TOMATOES_STEP])}}
    articles, topics = evaluation.bbc_data()
    vectors = embed([evaluation.headline_and_lead(article) for article in articles[::BBC_STEP]])
    topics = topics[::BBC_STEP]
    found["bbc-news"] = {"accuracy": evaluation.probe_accuracy(vectors, topics),
                         "v_measure": evaluation.v_measure(topics, evaluation.kmeans(evaluation.unit_rows(vectors), 5))}
    found["udhr-bitext"] = evaluation.udhr_bitext(embed, UDHR_SLICE_LANGUAGES)
    return found


def eval_references(model):
    """With sentence-transformers' vectors (`model`), through transformer.eval's own code:
    {source: 5-fold probe accuracy} on the first EVAL_SLICE sentences of each UCI source,
    "lee-similarity": {"pearson", "spearman"}, and `eval_slices`."""
    from transformer.eval import lee_similarity, probe_accuracy, uci_data

    found = {source: probe_accuracy(model.encode(texts[:EVAL_SLICE], batch_size=16), labels[:EVAL_SLICE])
             for source, (texts, labels) in uci_data().items()}
    found["lee-similarity"] = lee_similarity(lambda texts: model.encode(texts, batch_size=16))
    found.update(eval_slices(lambda texts: np.asarray(model.encode(texts, batch_size=16), dtype=np.float32)))
    return found


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
    only = sys.argv[1:] or ["prompts", "exclude", "dense", "quantize", "cross", "sparse", "eval"]
    with tempfile.TemporaryDirectory() as scratch:
        if "prompts" in only:
            folder = prompted_model_folder(source, Path(scratch) / "prompted")
            model = SentenceTransformer(str(folder), device="cpu")
            np.savez(REFERENCES / "retrieval_prompts.npz", **prompt_references(model))
        if "exclude" in only:
            folder = prompt_excluded_folder(source, Path(scratch) / "excluded")
            model = SentenceTransformer(str(folder), device="cpu")
            np.savez(REFERENCES / "retrieval_prompt_excluded.npz", **excluded_prompt_references(model))
        if "dense" in only:
            folder = dense_model_folder(source, Path(scratch) / "dense")
            model = SentenceTransformer(str(folder), device="cpu")
            np.savez(REFERENCES / "retrieval_dense.npz", vectors=model.encode(DENSE_TEXTS, batch_size=4))
        if "cross" in only:
            for labels in CROSS_LABELS:
                folder = minilm_cross_encoder(source, Path(scratch) / f"cross{labels}", labels)
                np.savez(REFERENCES / f"retrieval_cross_encoder_{labels}.npz", **cross_encoder_references(folder))
    if "sparse" in only:
        np.savez(REFERENCES / "retrieval_sparse.npz", **sparse_references(weights_dir() / "splade-tiny"))
    if "eval" in only:
        accuracies = eval_references(SentenceTransformer(str(source), device="cpu"))
        (REFERENCES / "retrieval_eval.json").write_text(json.dumps(accuracies, indent=1) + "\n", encoding="utf-8")
    if "quantize" in only:
        plain = SentenceTransformer(str(source), device="cpu")
        np.savez(REFERENCES / "retrieval_quantize.npz", **quantize_references(corpus_vectors(plain)))
    print(f"wrote the references for {', '.join(only)} in {REFERENCES}")


if __name__ == "__main__":
    main()
