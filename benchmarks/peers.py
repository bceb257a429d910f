"""The systems the end-to-end benchmark races, each behind the same three calls.

    runner = load("onnxruntime", model_dir, onnx_path="...-optimized.onnx")
    runner.encode(texts)                    # texts -> float32 [n, dim] unit vectors, batches of 32
    runner.forward(input_ids, attention_mask)   # the model alone on int64 [batch, seq] arrays
    runner.tokenize(texts)                  # -> (input_ids, attention_mask) int64 [batch, seq], padded

Every system does the whole job the way its users run it, tokenization included:

  transformer-numba / -numpy  this project: `SentenceEncoder.from_pretrained(dir, backend=...)`,
                              `.encode(texts, batch_size=32)`
  sentence-transformers       `SentenceTransformer(dir, device="cpu").encode(texts, batch_size=32)`
                              on PyTorch (`torch.set_num_threads`)
  onnxruntime                 the checkpoint exported by `torch.onnx.export` and graph-optimized by
                              `onnxruntime.transformers.optimizer` (`export_onnx`), the Rust
                              `tokenizers`, batches sorted by length as sentence-transformers sorts
                              them, NumPy mean pooling + normalize

A system whose packages are missing raises `Unavailable` with the reason; the benchmark reports
it as skipped. Thread counts come from the caller (`load(..., threads=2)`) and from the
environment the benchmark gives each worker (OMP / OPENBLAS / NUMBA / RAYON_NUM_THREADS).
"""

import json
import time
from pathlib import Path

import numpy as np

SYSTEMS = ("transformer-numba", "transformer-numpy", "sentence-transformers", "onnxruntime")
BATCH_SIZE = 32
MAX_SEQ_LENGTH = 256


class Unavailable(Exception):
    """A system cannot run here (a package is missing or failed to load); the message says why."""


def load(system, model_dir, threads=2, onnx_path=None):
    """A runner for `system` on the sentence-transformers folder `model_dir`."""
    if system.startswith("transformer-"):
        return ProjectRunner(model_dir, system.split("-", 1)[1], threads)
    if system == "sentence-transformers":
        return SentenceTransformersRunner(model_dir, threads)
    if system == "onnxruntime":
        return OnnxRuntimeRunner(model_dir, onnx_path, threads)
    raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")


def _require(module):
    import importlib

    try:
        return importlib.import_module(module)
    except Exception as error:  # ImportError, or a broken install raising something else
        raise Unavailable(f"cannot import {module}: {type(error).__name__}: {error}") from None


class ProjectRunner:
    """This project: `transformer.SentenceEncoder` on the numba or numpy backend."""

    def __init__(self, model_dir, backend, threads):
        import transformer

        self.model = transformer.SentenceEncoder.from_pretrained(model_dir, backend=backend)
        transformer.set_num_threads(threads)
        self.description = f"transformer {transformer.__version__} (backend={backend})"

    def encode(self, texts):
        return self.model.encode(texts, batch_size=BATCH_SIZE, show_progress=False)

    def tokenize(self, texts):
        batch = self.model.tokenizer(texts, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH)
        return batch["input_ids"], batch["attention_mask"]

    def forward(self, input_ids, attention_mask):
        return self.model.encoder(input_ids, attention_mask, np.zeros_like(input_ids)).last_hidden_state


class SentenceTransformersRunner:
    """sentence-transformers on PyTorch CPU, as its README shows it."""

    def __init__(self, model_dir, threads):
        torch = _require("torch")
        st = _require("sentence_transformers")
        torch.set_num_threads(threads)
        self.torch = torch
        self.model = st.SentenceTransformer(str(model_dir), device="cpu")
        self.model.max_seq_length = MAX_SEQ_LENGTH
        self.description = f"sentence-transformers {st.__version__}, torch {torch.__version__}"

    def encode(self, texts):
        return self.model.encode(texts, batch_size=BATCH_SIZE, show_progress_bar=False, convert_to_numpy=True)

    def tokenize(self, texts):
        batch = self.model.tokenize(texts)
        return batch["input_ids"].numpy(), batch["attention_mask"].numpy()

    def forward(self, input_ids, attention_mask):
        torch = self.torch
        with torch.inference_mode():
            return self.model[0].auto_model(input_ids=torch.from_numpy(input_ids),
                                            attention_mask=torch.from_numpy(attention_mask)).last_hidden_state


class OnnxRuntimeRunner:
    """ONNX Runtime (graph-optimized export) + Rust tokenizers + NumPy mean pooling."""

    def __init__(self, model_dir, onnx_path, threads):
        ort = _require("onnxruntime")
        tokenizers = _require("tokenizers")
        if onnx_path is None or not Path(onnx_path).is_file():
            raise Unavailable(f"no exported ONNX model ({onnx_path}); the export step failed or was skipped")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = tokenizers.Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        # tokenizer.json pads and truncates to a fixed 128; sentence-transformers' settings instead:
        self.tokenizer.enable_truncation(max_length=MAX_SEQ_LENGTH)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in the batch
        self.description = f"onnxruntime {ort.__version__}, tokenizers {tokenizers.__version__}"

    def tokenize(self, texts):
        encodings = self.tokenizer.encode_batch(texts)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)  # [batch, seq]
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)  # [batch, seq]
        return input_ids, attention_mask

    def forward(self, input_ids, attention_mask):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        return self.session.run(None, feeds)[0]  # [batch, seq, hidden]

    def encode(self, texts):
        texts = list(texts)
        order = np.argsort([-len(text) for text in texts], kind="stable")  # longest first, as s-t
        vectors = None
        for start in range(0, len(texts), BATCH_SIZE):
            indices = order[start:start + BATCH_SIZE]
            input_ids, attention_mask = self.tokenize([texts[i] for i in indices])
            hidden = self.forward(input_ids, attention_mask)  # [batch, seq, hidden]
            mask = attention_mask[:, :, None].astype(np.float32)  # [batch, seq, 1]
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)  # [batch, hidden]
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if vectors is None:
                vectors = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            vectors[indices] = pooled
        return vectors


# ---------------------------------------------------------------------------------------
# Preparation (run once per benchmark, in its own process: it needs torch + transformers).


def make_bert_base(folder, tokenizer_source, seed=0):
    """Write a BERT-base-sized checkpoint with random weights as a sentence-transformers folder.

    768 wide, 12 layers, 12 heads, FFN 3072, MiniLM's vocabulary and tokenizer files, mean
    pooling + Normalize, max_seq_length 256: every system loads it as it loads MiniLM.
    Returns the folder; an existing complete folder is kept (the weights are seeded anyway).
    """
    import shutil

    folder = Path(folder)
    if (folder / "model.safetensors").is_file() and (folder / "modules.json").is_file():
        return folder
    torch = _require("torch")
    transformers = _require("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                     num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                     hidden_act="gelu", layer_norm_eps=1e-12)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    source = Path(tokenizer_source)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "modules.json"):
        shutil.copy(source / name, folder / name)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 768, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ_LENGTH,
                                                                  "do_lower_case": False}))
    return folder


def export_onnx(model_dir, out_dir):
    """Export `model_dir`'s BertModel to ONNX and graph-optimize it for ONNX Runtime.

    torch.onnx.export (the TorchScript exporter: opset 17, dynamic batch and sequence axes,
    eager attention so the optimizer recognises the pattern), then
    `onnxruntime.transformers.optimizer.optimize_model(model_type="bert")`, which fuses
    embeddings + LayerNorm, each layer's attention into one Attention op, bias + GELU and
    residual + LayerNorm. Returns (optimized path, {fused op: count}, seconds).
    """
    import warnings

    torch = _require("torch")
    transformers = _require("transformers")
    _require("onnx")
    optimizer = _require("onnxruntime.transformers.optimizer")
    start = time.perf_counter()
    config = json.loads((Path(model_dir) / "config.json").read_text())
    model = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw, optimized = out_dir / "model.onnx", out_dir / "model-optimized.onnx"
    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(LastHiddenState(model), example, str(raw), input_names=names,
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={name: {0: "batch", 1: "seq"} for name in [*names, "last_hidden_state"]})
    fused = optimizer.optimize_model(str(raw), model_type="bert", num_heads=config["num_attention_heads"],
                                     hidden_size=config["hidden_size"], opt_level=1)
    fused.save_model_to_file(str(optimized))
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    return optimized, counts, time.perf_counter() - start
