"""GGUF files (llama.cpp's format): read strictly, dequantized to float32.

    from transformer.gguf import read_gguf

    gguf = read_gguf("weights/SmolLM2-135M-Instruct-Q4_1/SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf.metadata["general.architecture"]      -> "llama"
    gguf.tensors["blk.0.attn_q.weight"]        -> TensorInfo(type_name="Q4_1", shape=(576, 576), ...)
    gguf.dequantize("blk.0.attn_q.weight")     -> float32 [576, 576]

    reader.py          the file: header, metadata, tensor infos, checked; tensors read on demand
    quants.py          ggml's tensor types and block layouts, dequantized in NumPy (the reference)

The Numba twin of quants.py is `transformer/kernels/quants.py`.
"""

from transformer.gguf.reader import GGUFError, GGUFFile, TensorInfo, read_gguf

__all__ = ["GGUFError", "GGUFFile", "TensorInfo", "read_gguf"]
