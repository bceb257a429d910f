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
def gpt2_tokenizer_dir():
    """GPT-2's byte-level BPE files: vocab.json + merges.txt."""
    return _model_dir("gpt2-tokenizer")


@pytest.fixture(scope="session")
def fuzz_inputs(request):
    """count(name, outcomes): record that a fuzz suite tried inputs on parser `name`
    (outcomes: {what happened: how many}); printed at the end of the run."""
    totals = request.config.__dict__.setdefault("_fuzz_inputs", {})

    def count(name, outcomes):
        for outcome, n in outcomes.items():
            totals.setdefault(name, {})[outcome] = totals.get(name, {}).get(outcome, 0) + n

    return count


def pytest_terminal_summary(terminalreporter, config):
    totals = config.__dict__.get("_fuzz_inputs")
    if totals:
        terminalreporter.write_sep("-", "fuzz suites: generated inputs per parser")
        for name, outcomes in sorted(totals.items()):
            detail = ", ".join(f"{outcome} {n:,}" for outcome, n in sorted(outcomes.items()))
            terminalreporter.write_line(f"{name}: {sum(outcomes.values()):,} inputs ({detail})")
