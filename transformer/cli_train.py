"""`transformer train`: fine-tune a sentence encoder on a TSV / JSONL file (transformer.train).

    transformer train --model all-MiniLM-L6-v2 --data pairs.tsv --loss mnrl \\
        --epochs 1 --batch-size 16 --lr 2e-5 --output my-model

The output is a sentence-transformers folder (model.safetensors, config.json, tokenizer
files, modules.json, 1_Pooling) plus training_state/, written after every epoch; Ctrl-C
leaves the last one. `--resume` continues from a saved folder.
"""

import argparse
import sys
import time
from pathlib import Path

from transformer.cli_common import DEFAULT_MODEL, CommandError


def _positive_number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _dims(text):
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 384,256,128, got {text!r}") from None
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return dims


# transformer.train.LOSSES, spelt here so that `transformer --help` imports no numpy
LOSSES = ("mnrl", "cosent", "softmax", "cross-encoder", "mlm")


def add_train(subparsers, common):
    parser = subparsers.add_parser(
        "train", help="fine-tune a sentence encoder on pairs, scored pairs or labelled texts",
        description="Fine-tune a sentence encoder (NumPy backward pass, AdamW, linear warm-up and decay). "
                    "FILE rows: anchor<TAB>positive (mnrl), a<TAB>b<TAB>score (cosent), text<TAB>label "
                    "(softmax), a<TAB>b<TAB>label (cross-encoder: a score in [0, 1] or a class), text "
                    "(mlm); or JSON lines with those keys. mnrl, cosent and softmax write a "
                    "sentence-transformers folder; cross-encoder and mlm a transformers task-model folder.")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"the model to start from (default: {DEFAULT_MODEL})")
    parser.add_argument("--data", required=True, type=Path, metavar="FILE", help="training rows (.tsv or .jsonl)")
    parser.add_argument("--eval", type=Path, metavar="FILE", help="held-out rows of the same form: loss each epoch")
    parser.add_argument("--loss", choices=LOSSES, default="mnrl")
    parser.add_argument("--epochs", type=int, default=None,
                        help="passes over the data (default 1); with --resume, the new total")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-5, help="the peak learning rate (> 0)")
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-grad-norm", type=_positive_number, default=1.0)
    parser.add_argument("--accumulation-steps", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--symmetric", action="store_true", help="mnrl: also rank anchors for each positive")
    parser.add_argument("--matryoshka-dims", type=_dims, default=(), metavar="D,D,...",
                        help="also train the first D dimensions (MatryoshkaLoss), e.g. 384,256,128")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR when it exists")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in DIR")
    parser.add_argument("--backend", choices=("numba", "numpy"), default=None,
                        help="numba (default): the matrix products and the heaviest backward steps on the Numba "
                             "kernels; numpy: the readable NumPy backward alone (the same gradients to ~1e-6)")
    return parser


def run_train(args):
    from transformer import train
    from transformer.progress import Progress
    from transformer.sentence import SentenceEncoder

    if not args.lr > 0:
        raise CommandError(f"--lr must be > 0, got {args.lr}")
    output = args.output
    if args.resume:
        trainer = train.Trainer.resume(output, [])
        trainer.examples = _relabel(trainer.settings, train.read_examples(args.data, trainer.settings.loss), args.data)
        if args.epochs is not None:
            trainer.settings.epochs = args.epochs
        if args.backend is not None:
            trainer.settings.backend = args.backend
    else:
        if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite:
            raise CommandError(f"the output folder {output} exists; pass --overwrite to replace it "
                               f"(or --resume to continue the run saved there)")
        examples, num_labels, label_names = _labelled(args, train.read_examples(args.data, args.loss))
        settings = train.Settings(
            loss=args.loss, epochs=1 if args.epochs is None else args.epochs, batch_size=args.batch_size, lr=args.lr,
            warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
            accumulation_steps=args.accumulation_steps, seed=args.seed, symmetric=args.symmetric,
            matryoshka_dims=args.matryoshka_dims, num_labels=num_labels, label_names=label_names,
            backend=args.backend or "numba")
        try:
            settings.check()
        except ValueError as error:
            raise CommandError(str(error)) from None
        model = SentenceEncoder.from_pretrained(args.model, backend="numpy")
        trainer = train.Trainer(model, examples, settings)
    evaluation = None
    if args.eval:
        evaluation = _relabel(trainer.settings, train.read_examples(args.eval, trainer.settings.loss), args.eval)
    total = trainer.total_steps
    print(f"training {total} steps ({trainer.settings.epochs} epochs of {trainer.batches_per_epoch} batches) "
          f"on {len(trainer.examples)} examples, loss {trainer.settings.loss}", file=sys.stderr)
    started = time.perf_counter()
    progress = Progress(total, "training", unit="steps")
    progress.update(trainer.state.step)

    def on_step(state, loss, lr):
        progress.update(1)
        if state.step % 10 == 0 or state.step == total:
            print(f"step {state.step}/{total} loss {loss:.4f} lr {lr:.3g}", file=sys.stderr)

    def on_epoch(epoch):
        trainer.save(output, overwrite=True)
        if evaluation is not None:
            print(f"epoch {epoch + 1}: held-out loss {evaluate(trainer, evaluation):.4f}", file=sys.stderr)

    try:
        with progress:
            trainer.run(on_step=on_step, on_epoch=on_epoch)
    except KeyboardInterrupt:
        # the interrupted step may have updated some weights and not others: what stays is
        # the checkpoint of the last finished epoch, written whole (see Trainer.save)
        saved = output / "training_state" / "state.json"
        print(f"interrupted: {output} keeps the last finished epoch's checkpoint (--resume continues from it)"
              if saved.is_file() else "interrupted before the first epoch ended: nothing saved", file=sys.stderr)
        raise
    print(f"saved {output} ({trainer.state.step} steps, {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


def _labelled(args, examples):
    """Class names -> ids: (examples, num_labels, label names in id order)."""
    from transformer import train

    if args.loss == "softmax":
        examples, names = train.label_ids(examples)
        return examples, len(names), tuple(names)
    if args.loss == "cross-encoder":
        return train.cross_encoder_labels(examples)
    return examples, 0, ()


def _relabel(settings, examples, path):
    """Labels as the run numbered them (its class names in id order; cross-encoder scores as
    numbers), for a held-out file or the data of a resumed run."""
    if settings.label_names:
        index = {name: i for i, name in enumerate(settings.label_names)}
        unknown = sorted({str(label) for _, _, label in examples} - set(index))
        if unknown:
            raise CommandError(f"{path}: labels the run was not trained on: {', '.join(unknown[:5])}")
        return [(a, b, index[str(label)]) for a, b, label in examples]
    if settings.loss == "cross-encoder":
        return [(a, b, float(label)) for a, b, label in examples]
    return examples


def evaluate(trainer, examples):
    """The mean loss over `examples` in batches of the training batch size, no update (the
    masked LM masks with a fixed seed, so epochs compare)."""
    import numpy as np

    from transformer.backward import steps_of
    from transformer.train import head_loss_and_gradients, loss_and_gradients

    size = trainer.settings.batch_size
    steps = steps_of(trainer.settings.backend)
    values = []
    for start in range(0, len(examples), size):
        batch = _batch(examples[start:start + size])
        if trainer.head is not None:
            value, _ = head_loss_and_gradients(trainer.model, trainer.params["encoder"], trainer.head,
                                               trainer.settings, batch, np.random.default_rng(start), steps)
        else:
            value, _ = loss_and_gradients(trainer.model, trainer.params["encoder"], trainer.settings, batch,
                                          trainer.params["classifier"], steps)
        values.append(value)
    return sum(values) / len(values)


def _batch(rows):
    import numpy as np

    labels = None if rows[0][2] is None else np.array([row[2] for row in rows])
    return [row[0] for row in rows], None if rows[0][1] is None else [row[1] for row in rows], labels
