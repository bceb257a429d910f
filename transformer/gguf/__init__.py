"""GGUF files (llama.cpp's format): read strictly, dequantized to float32, read as a transformers
checkpoint.

    from transformer.gguf import read_gguf, config_from_gguf, checkpoint_arrays

    gguf = read_gguf("weights/SmolLM2-135M-Instruct-Q4_1/SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf.metadata["general.architecture"]      -> "llama"
    gguf.tensors["blk.0.attn_q.weight"]        -> TensorInfo(type_name="Q4_1", shape=(576, 576), ...)
    gguf.dequantize("blk.0.attn_q.weight")     -> float32 [576, 576]
    config_from_gguf(gguf)                     -> {"model_type": "llama", "hidden_size": 576, ...}
    checkpoint_arrays(gguf)["model.layers.0.self_attn.q_proj.weight"]   -> float32 [576, 576]
    tokenizer_metadata(gguf)                   -> GGUFTokenizer(model="gpt2", tokens=[...], merges=[...], ...)

    reader.py          the file: header, metadata, tensor infos, checked; tensors read on demand
    quants.py          ggml's tensor types and block layouts, dequantized in NumPy (the reference)
    architectures.py   metadata -> config, GGUF names -> transformers names, per architecture
    tokenizer.py       the `tokenizer.ggml.*` metadata, typed and checked

The Numba twin of quants.py is `transformer/kernels/quants.py`.
"""

from transformer.gguf.architectures import ARCHITECTURES, checkpoint_arrays, checkpoint_name, config_from_gguf
from transformer.gguf.reader import GGUFError, GGUFFile, TensorInfo, read_gguf
from transformer.gguf.tokenizer import GGUFTokenizer, tokenizer_metadata

__all__ = ["ARCHITECTURES", "GGUFError", "GGUFFile", "GGUFTokenizer", "TensorInfo", "checkpoint_arrays",
           "checkpoint_name", "config_from_gguf", "read_gguf", "tokenizer_metadata"]
