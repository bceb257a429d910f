"""Write docs/scorecard.md: every evaluation task of transformer/eval.py for the sentence models
the store knows, with this package's vectors and with sentence-transformers' vectors (the
pinned version) through the same evaluation code.

    .venv/bin/python tools/make_scorecard.py            # all-MiniLM-L6-v2 and all-mpnet-base-v2
    .venv/bin/python tools/make_scorecard.py --fresh    # recompute the tasks the last run recorded too

A task already in tests/references/retrieval_scorecard.json for a model (both sides) is kept,
so a stopped run goes on where it was; after changing a task, run with --fresh. --tasks a,b
runs only those tasks: several such runs may share the machine's cores and the file.

It also writes tests/references/retrieval_scorecard.json, which tests/test_eval.py checks.
"""

import json
import platform
import sys
import tempfile
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
    for name, (ours, _) in results.items():
        missing = [task for task in TASKS if task not in ours]
        if missing:
            lines += ["", f"No numbers yet for {name} on {', '.join(missing)}: the last run of the script was "
                          f"stopped before it reached {'it' if len(missing) == 1 else 'them'} (run it again: it "
                          f"goes on from the recorded tasks)."]
    lines += ["", "## The tasks", "", "```", tasks_doc.split("from registry packages", 1)[1].split("\n", 1)[1].rstrip(),
              "```", "", "Both models are English-only: their udhr-bitext numbers are the floor a cross-lingual",
              "model is measured against (the store holds no multilingual model's weights yet).", ""]
    return "\n".join(lines)


def read_recorded(recorded):
    """{model: (ours, theirs)} of the tasks recorded for both sides, in TASKS' order."""
    from transformer.eval import TASKS

    results = {name: ({}, {}) for name in MODELS}
    if recorded.is_file():
        for name, sides in json.loads(recorded.read_text(encoding="utf-8")).items():
            if name in results:
                for task in TASKS:
                    if task in sides["transformer"] and task in sides["sentence_transformers"]:
                        results[name][0][task] = sides["transformer"][task]
                        results[name][1][task] = sides["sentence_transformers"][task]
    return results


def record(recorded, name, task, ours, theirs):
    """Add one task's numbers to the recorded file and rewrite docs/scorecard.md, under a lock:
    several runs (--tasks) may share the file. task None: rewrite both files as recorded."""
    import fcntl

    from transformer.eval import TASKS

    with open(Path(tempfile.gettempdir()) / "transformer-scorecard.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_recorded(recorded)
        if task is not None:
            results[name][0][task], results[name][1][task] = ours, theirs
            results = {model: tuple({key: side[key] for key in TASKS if key in side} for side in sides)
                       for model, sides in results.items()}  # in TASKS' order
        (ROOT / "docs" / "scorecard.md").write_text(markdown(results), encoding="utf-8")
        recorded.write_text(json.dumps({model: {"transformer": mine, "sentence_transformers": reference}
                                        for model, (mine, reference) in results.items()}, indent=1) + "\n",
                            encoding="utf-8")


def main():
    """The small model first, each result recorded as soon as it is known.

    --tasks a,b: only these tasks (several runs with different tasks may run at once);
    --fresh: recompute tasks already recorded."""
    from transformer.eval import TASKS, evaluate

    arguments = sys.argv[1:]
    tasks = list(TASKS)
    if "--tasks" in arguments:
        tasks = arguments[arguments.index("--tasks") + 1].split(",")
        unknown = set(tasks) - set(TASKS)
        if unknown:
            raise SystemExit(f"unknown tasks {sorted(unknown)}; the tasks are {', '.join(TASKS)}")
    started = time.time()
    recorded = ROOT / "tests" / "references" / "retrieval_scorecard.json"
    done = {} if "--fresh" in arguments else read_recorded(recorded)
    for name in MODELS:
        missing = [task for task in tasks if task not in done.get(name, ({},))[0]]
        if not missing:
            continue
        ours, theirs = embedders(name)
        for task in missing:
            mine = evaluate(ours, [task], batch_size=BATCH_SIZE)[task]
            reference = evaluate(theirs, [task], batch_size=BATCH_SIZE)[task]
            record(recorded, name, task, mine, reference)
            print(f"{name} {task}: {time.time() - started:.0f} s", flush=True)
    record(recorded, MODELS[0], None, None, None)  # both files in TASKS' order
    print(f"wrote docs/scorecard.md in {time.time() - started:.0f} s on {platform.machine()}")


if __name__ == "__main__":
    main()
