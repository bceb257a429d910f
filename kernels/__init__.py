"""Numba kernels for the hot paths (installed as `transformer.kernels`).

The kernels are leaves: arrays in, arrays out. Nothing here imports from `transformer` or
knows what a model is; the numba backend (`transformer/numba_backend/`) reads recipes and
params and calls them.

    gemm.py         linear layers: packed weights, x @ W + bias (+ activation) (+ residual)
    microkernel.py  the register-blocked tiles every product runs through (6 x 16 AVX2, 12 x 32 AVX-512)
    attention.py    softmax(q k^T / sqrt(d) + bias + mask) v per (sequence, head), padded or packed
    layernorm.py    residual add + LayerNorm in one pass
    activations.py  vectorizable float32 exp / erf / tanh, the GELUs, ReLU, SiLU; bias + activation
    softmax.py      row softmax (and the row pieces attention uses)
    embeddings.py   word + token type + position gather, add, LayerNorm
    program.py      a program of steps (GEMM, attention, LayerNorm, MLP) over buffer and weight
                    slots, every layer in one compiled call on all threads
    arena.py        one block of memory for the packed weights, in huge pages
    _jit.py         the one `import numba`: threading layer, disk cache, thread pool

Each kernel stands beside a naive reference loop, and each has a plain NumPy twin in
`transformer/model.py` that the tests hold it equal to. Importing this package imports
neither numba nor any kernel module, and importing a kernel module compiles nothing: each
kernel compiles (or loads from the disk cache) on its first call.
"""
