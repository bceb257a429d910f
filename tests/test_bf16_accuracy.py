"""bf16 sentence vectors against our fp32 ones, on a slice of benchmarks/data/corpus.txt and
long texts (8 corpus lines each), for all-MiniLM-L6-v2 and all-mpnet-base-v2, with the tier
this CPU runs and the bf16 policy (`transformer.encoder.BF16_POLICY`: the attention's output
projection kept in float32). benchmarks/bench_bf16.py measures the bench's whole sets.

Bars: issue 21's, min cosine >= 0.9999 and median >= 0.99999. Over the bench's sets (the
whole corpus plus 100 long texts for MiniLM; 600 lines plus 40 long ones for mpnet) the policy
gives min 0.999964 / median 0.999991 (MiniLM) and 0.999911 / 0.999992 (mpnet); every linear in
bf16 gave 0.999956 / 0.999989 and 0.999652 / 0.999990 (docs/performance.md#bf16). The slices
here are smaller; mpnet's adds the text that fell lowest with every linear in bf16.
"""

from pathlib import Path

import numpy as np
import pytest

CORPUS = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "corpus.txt"


def _texts(short, long):
    lines = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:short] + [" ".join(lines[i:i + 8]) for i in range(0, 8 * long, 8)]


def _cosines(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# all-mpnet-base-v2's worst text of the bench's set with every linear in bf16 (cosine 0.99965)
HARDEST = "(Zool.) The lant, or sand eel."


@pytest.mark.parametrize("fixture, short, long", [("minilm_dir", 200, 8), ("mpnet_dir", 48, 4)])
def test_bf16_sentence_vectors_stay_within_the_bar_of_fp32(fixture, short, long, request):
    from transformer.sentence import SentenceEncoder

    model_dir = request.getfixturevalue(fixture)
    texts = _texts(short, long) + ([HARDEST] if fixture == "mpnet_dir" else [])
    fp32 = SentenceEncoder.from_pretrained(model_dir).encode(texts)
    bf16 = SentenceEncoder.from_pretrained(model_dir, precision="bf16").encode(texts)
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    cosines = _cosines(fp32, bf16)
    assert cosines.min() >= 0.9999, cosines.min()
    assert np.median(cosines) >= 0.99999, np.median(cosines)
    assert cosines.min() < 1.0  # bf16 really ran
