"""Numba kernels for the hot paths (installed as `transformer.kernels`).

Each kernel stands beside a naive reference loop, and each has a plain NumPy twin in
`transformer/` that tests hold it equal to. Importing this package compiles nothing.
"""
