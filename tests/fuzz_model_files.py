"""What the fuzz suites of a model folder's files share (tests/test_fuzz_safetensors.py,
_config.py, _sentence_configs.py, _shard_index.py): a plan per hypothesis example, mutations
of the real files' JSON trees and text, and the guards every parse runs under.

    @fuzz_settings(batch=PER_EXAMPLE)         # tests/fuzzing.py: 10,000 inputs when CI=true
    @given(plans())
    def test_...(plan):
        for rng, drawn in inputs_of(plan):     # PER_EXAMPLE inputs
            ran("config.json")
            tree = mutate_tree(rng, seed_tree, keys, drawn)
            config, error = parse_guarded(lambda: parse(tree), ConfigError, "config.json")

The property, for each generated input: the parser either answers (and the suite checks the
answer against a reference) or raises one of the errors it documents, on one line naming the
file; never an exception from deep inside (IndexError, KeyError, TypeError, OverflowError,
MemoryError, RecursionError), never longer than TIME_LIMIT, never a write (`no_writes`).
"""

import builtins
import contextlib
import io
import json
import os
import random
import signal
import tempfile
from pathlib import Path

from hypothesis import strategies as st

# Inputs made from one hypothesis example (one plan): hypothesis's own work, ~0.4 ms an
# example, is then paid once for all of them.
PER_EXAMPLE = 5

# One input's parse may take this long before it counts as a hang.
TIME_LIMIT = 5.0


@contextlib.contextmanager
def time_limit(seconds=TIME_LIMIT):
    """Raise TimeoutError when the block runs longer than `seconds` (a hang)."""
    def expire(signum, frame):
        raise TimeoutError(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def scratch_folder(fallback):
    """A folder for the generated files: in /dev/shm when there is one (a file rewritten there
    costs ~13 us; on this machine's disk ~200 us, 2 s of every 10,000 inputs), else `fallback`
    (pytest's tmp_path)."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="transformer-fuzz-") as folder:
            yield Path(folder)
    else:
        yield Path(fallback)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@contextlib.contextmanager
def no_writes():
    """Fail any attempt, from Python, to open a file for writing or to make, move or delete
    one while the block runs: a parser of untrusted files only reads."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a parser tried to write: {args!r:.200}")

    def checked_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            refuse(file, mode)
        return real_open(file, mode, *args, **kwargs)

    def checked_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS:
            refuse(path, flags)
        return real_os_open(path, flags, *args, **kwargs)

    real_open, real_os_open = builtins.open, os.open
    saved = {name: getattr(os, name) for name in ("remove", "unlink", "rename", "replace", "mkdir", "rmdir",
                                                  "symlink", "link", "makedirs")}
    builtins.open = io.open = checked_open
    os.open = checked_os_open
    for name in saved:
        setattr(os, name, refuse)
    try:
        yield
    finally:
        builtins.open = io.open = real_open
        os.open = real_os_open
        for name, function in saved.items():
            setattr(os, name, function)


def parse_guarded(parse, errors, file_names):
    """Run `parse()` under `time_limit` and `no_writes` -> (result, None) or (None, error) for
    an error of the `errors` kinds, whose message must be one line naming the file (one of
    `file_names`, a name or a tuple of names). Any other exception propagates and fails."""
    try:
        with time_limit(), no_writes():
            return parse(), None
    except errors as error:
        message = str(error)
        names = (file_names,) if isinstance(file_names, str) else file_names
        assert "\n" not in message, f"a multi-line error: {message!r}"
        assert any(name in message for name in names), f"the error names none of {names}: {message!r}"
        return None, error


# --- JSON values and tree mutations -------------------------------------------------------------
# Hypothesis draws a plan for each example: a seed for the mutator's own random choices (which
# place in the tree, which edit) and a JSON value; the mutator puts that value, and the edge
# values below, into the real files' trees. Drawing every choice through hypothesis costs
# ~2.5 ms an input; this way ~0.1 ms, so 10,000 inputs fit the time budget.

# Values a size, an offset, a flag or a name in a model's files must be checked against.
EDGE_VALUES = [
    0, 1, 2, 3, -1, -4, 7, 255, 256, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 53) + 1, (1 << 63) - 1, 1 << 63,
    (1 << 64) - 1, 1 << 64, 1 << 70, 10 ** 30, -(1 << 63),
    0.0, -0.0, 0.5, 1.0, 2.0, -1.0, 1e-12, 1e-50, 1e-320, 1e30, 1e308, float("inf"), float("-inf"), float("nan"),
    "", "0", "1", "-1", "true", "null", "NaN", "F32", "bert", "mean", "..", "../x", "/etc/passwd", "C:\\x", "a/b",
    "\ud800", "\x00", "é", "\u202e", "x" * 300,
    None, True, False, [], {}, [0], [0, 0], [0, 1, 2], {"": None}, {"F32": None},
]
DEEP_VALUES = ("deep126", "deep127", "deep128", "deep300")  # lists nested that deep (made on use)

# A scalar or a shallow container of them (st.recursive costs ~1.5 ms a draw; deeper trees come
# from the mutator copying subtrees into each other).
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8))
JSON_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS,
                                                                                  max_size=2))


@st.composite
def plans(draw):
    """(random.Random for the mutator's choices, [one drawn JSON value])."""
    return random.Random(draw(st.integers(0, 2 ** 64 - 1))), [draw(JSON_VALUES)]


def inputs_of(plan):
    """The PER_EXAMPLE (rng, drawn) pairs of one example: the same drawn value, the mutator's
    random stream running on."""
    rng, drawn = plan
    return [(rng, drawn)] * PER_EXAMPLE


def odd_value(rng, drawn=()):
    """One value to put where something else was: an edge value, a drawn one, a deep list, a
    small integer."""
    pick = rng.random()
    if pick < 0.55:
        value = rng.choice(EDGE_VALUES)
    elif pick < 0.8 and drawn:
        value = rng.choice(drawn)
    elif pick < 0.85:
        value = deep(int(rng.choice(DEEP_VALUES)[4:]))
    else:
        value = rng.randint(-3, 600)
    return json.loads(json.dumps(value))  # a copy: a value is never shared between places


def deep(depth):
    """A JSON list nested `depth` deep."""
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


def mutate_tree(rng, tree, keys=(), drawn=(), count=None):
    """A copy of `tree` (a JSON value) with 1-3 (or `count`) edits at random places: a value
    replaced by an odd one, a key deleted, a key added (one of `keys` or any), a list item
    inserted, a subtree copied to another place."""
    tree = json.loads(json.dumps(tree))
    for _ in range(count or rng.randint(1, 3)):
        tree = _mutate_once(rng, tree, keys, drawn)
    return tree


def _places(tree, path=()):
    yield path
    if isinstance(tree, dict):
        for key, child in tree.items():
            yield from _places(child, path + (key,))
    elif isinstance(tree, list) and len(path) < 64:
        for index, child in enumerate(tree):
            yield from _places(child, path + (index,))


def _get(tree, path):
    for step in path:
        tree = tree[step]
    return tree


def _mutate_once(rng, tree, keys, drawn):
    places = list(_places(tree))
    path = rng.choice(places)
    node = _get(tree, path)
    action = rng.choice(["replace", "replace", "delete", "add", "copy"])
    if action == "add" and isinstance(node, dict):
        key = rng.choice(list(keys)) if keys and rng.random() < 0.7 else rng.choice(["", "x", "__metadata__", "\ud800"])
        node[key] = odd_value(rng, drawn)
        return tree
    if action == "add" and isinstance(node, list):
        node.insert(rng.randint(0, len(node)), odd_value(rng, drawn))
        return tree
    if action == "delete" and path:
        del _get(tree, path[:-1])[path[-1]]
        return tree
    new = json.loads(json.dumps(_get(tree, rng.choice(places)))) if action == "copy" else odd_value(rng, drawn)
    if not path:
        return new
    _get(tree, path[:-1])[path[-1]] = new
    return tree


def dumps_with_duplicates(pairs):
    """An object's JSON text from (key, value) pairs, keeping repeated keys (json.dumps cannot)."""
    return "{" + ", ".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in pairs) + "}"


TEXT_PIECES = ['"', ",", ":", "{", "}", "[", "]", "-", "0", "1", "e", ".", " ", "\\", "\x00", "NaN", "\ud800", "é",
               "\ufeff", "\t", "1e400", "-0"]


def mutate_text(rng, text):
    """JSON text with 1-2 character-level edits: a character deleted, inserted or replaced, the
    text cut short. Some stay valid JSON, most do not."""
    for _ in range(rng.randint(1, 2)):
        position = rng.randint(0, len(text))
        edit = rng.choice(["delete", "insert", "replace", "cut"])
        piece = rng.choice(TEXT_PIECES)
        if edit == "delete":
            text = text[:position] + text[position + 1:]
        elif edit == "insert":
            text = text[:position] + piece + text[position:]
        elif edit == "replace":
            text = text[:position] + piece + text[position + 1:]
        else:
            text = text[:position]
    return text
