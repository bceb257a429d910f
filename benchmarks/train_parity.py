"""Same training, same numbers: our NumPy training against sentence-transformers' modules in torch.

Both start from weights/all-MiniLM-L6-v2, see the same batches of (anchor, positive) pairs in
the same order, and train with MultipleNegativesRankingLoss (scale 20), AdamW (lr, weight
decay 0.01 except biases and LayerNorms), linear warm-up and decay, gradient clipping at 1.0,
dropout off. The torch side is sentence-transformers' SentenceTransformer and its loss
module stepped by torch.optim.AdamW and transformers' schedule, which is what `fit` runs
(`fit` itself needs the `datasets` package and shuffles with its own sampler).

    .venv/bin/python benchmarks/train_parity.py            # 50 steps -> benchmarks/results/train_parity.{json,md}

Reports each step's loss on both sides, the largest relative difference, and the cosine of
the two trained models' embeddings of held-out sentences.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MINILM = ROOT / "weights" / "all-MiniLM-L6-v2"
RESULTS = ROOT / "benchmarks" / "results"

# (anchor wording, paraphrase wording): a paraphrase shares few words with its anchor.
SUBJECTS = [("cat", "kitten"), ("old man", "elderly gentleman"), ("child", "little kid"), ("teacher", "instructor"),
            ("dog", "puppy"), ("farmer", "grower"), ("pilot", "aviator"), ("singer", "vocalist"),
            ("doctor", "physician"), ("baker", "pastry cook"), ("student", "pupil"), ("sailor", "seaman")]
ACTIONS = [("is eating", "devours"), ("is reading", "looks through"), ("is painting", "colours"),
           ("is carrying", "hauls"), ("is washing", "cleans"), ("is selling", "sells off"),
           ("is building", "puts together"), ("is buying", "purchases")]
OBJECTS = [("an apple", "a piece of fruit"), ("a newspaper", "the daily paper"), ("a fence", "some railings"),
           ("a heavy box", "a weighty crate"), ("the car", "an automobile"), ("fresh bread", "a warm loaf"),
           ("a small boat", "a little dinghy"), ("a chair", "a seat"), ("the dishes", "plates and cups"),
           ("some flowers", "a bouquet")]


def pairs(count, seed=0, group=8):
    """`count` (anchor, paraphrase) pairs of short English sentences, the same for a seed.
    Each run of `group` pairs shares its subject and action and differs in the object: a
    batch of them tells its pairs apart by one phrase, so the in-batch negatives stay hard
    and the loss does not fall to the float32 resolution of the scores within 50 steps."""
    rng = np.random.default_rng(seed)
    made = []
    while len(made) < count:
        subject, subject_2 = SUBJECTS[rng.integers(len(SUBJECTS))]
        action, action_2 = ACTIONS[rng.integers(len(ACTIONS))]
        for index in rng.permutation(len(OBJECTS))[:group]:
            thing, thing_2 = OBJECTS[index]
            made.append((f"The {subject} {action} {thing}.", f"A {subject_2} {action_2} {thing_2}."))
    return made[:count]


def numpy_run(examples, batch_size, lr, warmup_steps, steps):
    """Our training: (losses per step, the trained SentenceEncoder)."""
    from transformer import train
    from transformer.sentence import SentenceEncoder

    model = SentenceEncoder.from_pretrained(MINILM, backend="numpy")
    settings = train.Settings(loss="mnrl", epochs=1, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                              shuffle=False)
    trainer = train.Trainer(model, [(a, b, None) for a, b in examples], settings)
    trainer.run(stop_after=steps)
    return list(trainer.state.losses), model


def torch_run(examples, batch_size, lr, warmup_steps, steps):
    """sentence-transformers' model and loss, torch's AdamW, the same schedule and clipping:
    (losses per step, the trained SentenceTransformer)."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    model = SentenceTransformer(str(MINILM), device="cpu")
    model.eval()  # dropout off, as ours
    loss_module = MultipleNegativesRankingLoss(model)
    named = list(model.named_parameters())
    no_decay = [p for n, p in named if "bias" in n or "LayerNorm" in n]
    decay = [p for n, p in named if not ("bias" in n or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    total = len(examples) // batch_size  # the schedule spans the whole epoch, as ours
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup_steps, total)
    losses = []
    for step in range(steps):
        rows = examples[step * batch_size:(step + 1) * batch_size]
        features = [model.tokenize([row[column] for row in rows]) for column in (0, 1)]
        loss = loss_module(features, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    return losses, model


def compare(steps, batch_size=8, lr=2e-5, warmup_steps=5, epoch_steps=None):
    """Train both sides `steps` steps; -> a dict of the figures."""
    examples = pairs(batch_size * (epoch_steps or steps))
    held_out = [a for pair in pairs(16, seed=1) for a in pair]
    started = time.perf_counter()
    ours, our_model = numpy_run(examples, batch_size, lr, warmup_steps, steps)
    our_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs, their_model = torch_run(examples, batch_size, lr, warmup_steps, steps)
    their_seconds = time.perf_counter() - started
    differences = [abs(a - b) / abs(b) for a, b in zip(ours, theirs)]
    our_vectors = our_model.encode(held_out)
    their_vectors = their_model.encode(held_out, convert_to_numpy=True)
    cosines = np.sum(our_vectors * their_vectors, axis=1) / (
        np.linalg.norm(our_vectors, axis=1) * np.linalg.norm(their_vectors, axis=1))
    return {"steps": steps, "batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps,
            "numpy_losses": ours, "torch_losses": theirs, "max_relative_difference": max(differences),
            "min_embedding_cosine": float(cosines.min()), "numpy_seconds": our_seconds,
            "torch_seconds": their_seconds}


def main(steps=50):
    figures = compare(steps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_parity.json").write_text(json.dumps(figures, indent=1))
    lines = [f"# Training parity: NumPy vs sentence-transformers (torch), all-MiniLM-L6-v2, {steps} steps",
             "", f"batch {figures['batch_size']}, lr {figures['lr']}, warm-up {figures['warmup_steps']}, "
             f"MultipleNegativesRankingLoss, dropout off. Command: `.venv/bin/python benchmarks/train_parity.py`", "",
             f"- largest relative loss difference over the steps: {figures['max_relative_difference']:.2e}",
             f"- smallest cosine between the two trained models' embeddings (32 held-out sentences): "
             f"{figures['min_embedding_cosine']:.8f}",
             f"- wall time on this (shared) machine: numpy {figures['numpy_seconds']:.0f} s, "
             f"torch {figures['torch_seconds']:.0f} s (not a speed benchmark)", "",
             "| step | numpy loss | torch loss |", "|---:|---:|---:|"]
    lines += [f"| {i + 1} | {a:.6f} | {b:.6f} |" for i, (a, b) in
              enumerate(zip(figures["numpy_losses"], figures["torch_losses"]))]
    (RESULTS / "train_parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
