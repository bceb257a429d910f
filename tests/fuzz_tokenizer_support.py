"""What the tokenizer fuzz suites share: the hypothesis profile chosen by CI, how many inputs
one example carries, and the comparison with the reference.

The property every suite checks, for each generated input (a file or a set of files):

* we refuse it with one line (ModelFileError, a ValueError) naming the file; or
* we load it, the reference loads it too, and the same texts give the same encodings
  (every field), the same decoded text, or the same refusal to encode;

never another exception, a hang, or a file the reference refuses being accepted.
"""

import tempfile
from pathlib import Path

from fuzzing import BATCH, fuzz_settings, ran
from transformer.files import ModelFileError

FIELDS = ("ids", "tokens", "type_ids", "attention_mask", "offsets", "word_ids", "special_tokens_mask")
# tests/fuzzing.py: 10,000 inputs per parser when CI=true (as `make test` runs), 1,000 otherwise,
# drawn BATCH at a time.
INPUTS_PER_EXAMPLE = BATCH
PROFILE = fuzz_settings()
TEXTS = ["Hello, world! [MASK] <mask> héllo 中文", "don't  stop\n12345 ☃️ e\u0301", "", "<s> x </s> ▁a"]
_HUGE = 10 ** 5  # the reference aborts the process when it cannot allocate a padded row


def scratch_folder():
    """A fresh folder for one suite's files: in memory (/dev/shm) where there is one, since
    each input is written to disk once."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="tokenizer-fuzz-", dir=shm if shm.is_dir() else None))


class Outcomes(dict):
    """What happened to each input of one suite ({outcome: count}); each add() also counts
    the input for the run's report (fuzzing.ran)."""

    def __init__(self, parser):
        super().__init__()
        self.parser = parser

    def add(self, name):
        self[name] = self.get(name, 0) + 1
        ran(self.parser)


def fields(encoding):
    return {f: list(getattr(encoding, f)) for f in FIELDS} | {"overflowing": [fields(o) for o in encoding.overflowing]}


def _attempt(call):
    try:
        return call(), None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # the reference panics with a BaseException subclass
        return None, error


def refused_clearly(error, source):
    """A refusal must be one line naming the file."""
    message = str(error)
    assert isinstance(error, ModelFileError), f"{type(error).__name__} instead of a ModelFileError: {message}"
    assert "\n" not in message and source in message, message


def compare_tokenizers(ours, reference, texts, label, outcomes, huge=False):
    """Both loaded: the same encodings (or both refuse to encode), the same decoded text."""
    if huge:  # the reference would abort allocating rows of this size: check we refuse cleanly
        mine, error = _attempt(lambda: ours.encode_batch(texts))
        assert error is None or isinstance(error, ValueError), f"{label}: {type(error).__name__}: {error}"
        outcomes.add("loaded (huge padding: reference not run)")
        return
    # one text at a time: for a few short texts the reference's thread pool costs more than it saves
    expected, reference_error = _attempt(lambda: [reference.encode(text) for text in texts])
    mine, error = _attempt(lambda: ours.encode_batch(texts))
    if error is not None and not isinstance(error, ValueError):
        raise AssertionError(f"{label}: encoding raised {type(error).__name__}: {error}") from error
    if reference_error is not None:
        assert error is not None, f"{label}: the reference cannot encode ({reference_error}) but we can"
        outcomes.add("both refuse to encode")
        return
    assert error is None, f"{label}: the reference encodes but we raise {error}"
    for text, a, b in zip(texts, mine, expected):
        assert fields(a) == fields(b), f"{label}: {text!r} encodes differently: {fields(a)} != {fields(b)}"
    ids = [i for encoding in expected for i in encoding.ids]
    decoded, reference_error = _attempt(lambda: reference.decode(ids))
    if reference_error is None:
        assert ours.decode(ids) == decoded, f"{label}: decode({ids}) differs"
    outcomes.add("same encodings")


def is_huge(data):
    """True when padding / truncation hold a number the reference would try to allocate."""
    def walk(node):
        if isinstance(node, dict):
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return isinstance(node, int) and not isinstance(node, bool) and node > _HUGE
    return isinstance(data, dict) and (walk(data.get("padding")) or walk(data.get("truncation")))
