"""Write docs/scorecard.md: every evaluation task of transformer/eval.py for the sentence models
the store knows, with this package's vectors and with sentence-transformers' vectors (the
pinned version) through the same evaluation code.

    .venv/bin/python tools/make_scorecard.py            # all-MiniLM-L6-v2 and all-mpnet-base-v2
    .venv/bin/python tools/make_scorecard.py --fresh    # recompute the tasks the last run recorded too

A task already in tests/references/retrieval_scorecard.json for a model (both sides) is kept,
so a stopped run goes on where it was; after changing a task, run with --fresh.

It also writes tests/references/retrieval_scorecard.json, which tests/test_eval.py checks.
"""

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
BATCH_SIZE = 16


def embedders(name):
    """(our model, sentence-transformers' model as something with encode(texts, batch_size))."""
    from sentence_transformers import SentenceTransformer

    from transformer.sentence import SentenceEncoder
    from transformer.store import resolve

    reference = SentenceTransformer(str(resolve(name)), device="cpu")

    class Theirs:
        def encode(self, texts, batch_size):
            return np.asarray(reference.encode(texts, batch_size=batch_size), dtype=np.float32)

    return SentenceEncoder.from_pretrained(name), Theirs()


def markdown(results):
    from transformer.eval import TASKS
    from transformer.eval import __doc__ as tasks_doc

    lines = [
        "# Scorecard",
        "",
        "What each sentence model scores on the evaluation tasks of `transformer/eval.py`, with this",
        "package's vectors and with sentence-transformers' vectors (the pinned version) put through",
        "the same evaluation code. Made by `.venv/bin/python tools/make_scorecard.py`; one model,",
        "this package only: `transformer eval --model all-MiniLM-L6-v2`.",
        "",
        "| model | task | metric | transformer | sentence-transformers |",
        "|---|---|---|---|---|",
    ]
    for name, (ours, theirs) in results.items():
        for task, metrics in ours.items():
            for metric, value in metrics.items():
                lines.append(f"| {name} | {task} | {metric} | {value:.4f} | {theirs[task][metric]:.4f} |")
    missing = [task for task in TASKS if not all(task in ours for ours, _ in results.values())]
    if missing:
        lines += ["", f"No numbers yet for {', '.join(missing)}: the last run of the script was stopped before "
                      f"it reached {'it' if len(missing) == 1 else 'them'}."]
    lines += ["", "## The tasks", "", "```", tasks_doc.split("from registry packages", 1)[1].split("\n", 1)[1].rstrip(),
              "```", "", "Both models are English-only: their udhr-bitext numbers are the floor a cross-lingual",
              "model is measured against (the store holds no multilingual model's weights yet).", ""]
    return "\n".join(lines)


def main():
    """The small model first, each result written as soon as it is known: {model: (ours, theirs)}."""
    from transformer.eval import TASKS, evaluate

    started = time.time()
    recorded = ROOT / "tests" / "references" / "retrieval_scorecard.json"
    results = {name: ({}, {}) for name in MODELS}
    if "--fresh" not in sys.argv[1:] and recorded.is_file():
        for name, sides in json.loads(recorded.read_text(encoding="utf-8")).items():
            if name in results:
                for task in set(sides["transformer"]) & set(sides["sentence_transformers"]):
                    results[name][0][task] = sides["transformer"][task]
                    results[name][1][task] = sides["sentence_transformers"][task]
    for name in MODELS:
        missing = [task for task in TASKS if task not in results[name][0]]
        if not missing:
            continue
        ours, theirs = embedders(name)
        for task in missing:
            results[name][0].update(evaluate(ours, [task], batch_size=BATCH_SIZE))
            results[name][1].update(evaluate(theirs, [task], batch_size=BATCH_SIZE))
            (ROOT / "docs" / "scorecard.md").write_text(markdown(results), encoding="utf-8")
            (ROOT / "tests" / "references" / "retrieval_scorecard.json").write_text(json.dumps(
                {name: {"transformer": ours, "sentence_transformers": theirs} for name, (ours, theirs) in results.items()},
                indent=1) + "\n", encoding="utf-8")
            print(f"{name} {task}: {time.time() - started:.0f} s", flush=True)
    print(f"wrote docs/scorecard.md in {time.time() - started:.0f} s on {platform.machine()}")


if __name__ == "__main__":
    main()
