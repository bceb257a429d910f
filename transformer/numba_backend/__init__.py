"""The numba backend: the encoder run on the kernels of `transformer.kernels`.

    forward.py       prepare (weights laid out once), encoder_forward, pooler, head_linear
    program.py       a recipe -> the weights stacked over the layers, and the step program the
                     fused layers run (kernels/program.py)
    packed_cache.py  the prepared weights saved beside the checkpoint, read straight back

The kernels (`kernels/`, installed as `transformer.kernels`) are the leaves: they know
arrays, not models, and import nothing from `transformer`. This package is what knows
models: it reads a recipe and a params dict and calls the kernels. Importing it imports
numba (not `import transformer`).
"""
