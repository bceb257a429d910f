"""GGUF files (llama.cpp's format).

    quants.py          ggml's tensor types and block layouts, dequantized in NumPy (the reference)

The Numba twin of quants.py is `transformer/kernels/quants.py`.
"""
