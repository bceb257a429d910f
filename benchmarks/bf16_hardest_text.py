"""bf16's error on all-mpnet-base-v2's worst text, one variant at a time (the NumPy emulation).

    .venv/bin/python benchmarks/bf16_hardest_text.py

Each variant of `bf16_attribution.variants` (rounding on some kinds of linear, some layers,
weights or inputs) plus a few more, on "(Zool.) The lant, or sand eel." (the lowest cosine of
the bench's mpnet set with every linear in bf16) and a typical text beside it: the cosine of
each to the fp32 sentence vector. Prints one line per variant (docs/performance.md#bf16).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bf16_attribution import ROOT, Rounding, cosines, variants  # noqa: E402

TEXTS = ["(Zool.) The lant, or sand eel.", "Enough usually follows the word it modifies."]


def main():
    import transformer
    from transformer.sentence import SentenceEncoder

    transformer.set_num_threads(2)
    model = SentenceEncoder.from_pretrained(ROOT / "weights" / "all-mpnet-base-v2", backend="numpy")
    found = variants(model.encoder.config.num_hidden_layers)
    found["keep qkv + attention_output fp32"] = \
        lambda i, k: (False, False) if k in ("qkv", "attention_output") else (True, True)
    rounding = Rounding(model.encoder)
    with rounding:
        reference = model.encode(TEXTS)
        for name, choose in found.items():
            rounding.choose = choose
            values = cosines(reference, model.encode(TEXTS))
            print(f"{name:40s} " + " ".join(f"{value:.6f}" for value in values), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
