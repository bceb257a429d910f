#!/usr/bin/env python3
"""Try the package as a new user would: 500 bad inputs, each run the way a user runs it, and
what happened to each.

    .venv/bin/python tools/fault_probe.py                 # every case: a table, then the counts
    .venv/bin/python tools/fault_probe.py --list          # the cases and what each expects
    .venv/bin/python tools/fault_probe.py --only config/  # the cases whose name contains PATTERN
    .venv/bin/python tools/fault_probe.py --skip-slow     # without the few that compile the kernels anew

Each case is a user's step (the `transformer` command in a subprocess, or a few lines of the
Python API in a new interpreter) in a world of its own: a temporary folder with its own HOME,
TMPDIR, TRANSFORMER_WEIGHTS, Hugging Face cache and working directory, and, where it needs
one, a model folder made of hard links to a pristine copy of all-MiniLM-L6-v2 (a file a case
changes is written anew, never through a link). Downloads go to a local stand-in for the hub
(HF_ENDPOINT) or nowhere (a closed port, pip without an index): nothing leaves the machine.

What a case expects, and what counts as right:
  error    exit status != 0, exactly one line on stderr, no traceback, the line naming what
           the case says it must (the file, the field, the argument), in the program's words,
           not NumPy's or Python's internals'. From the API: an exception of the package's own
           (or ValueError / TypeError / OSError) raised by the package's code, on one line.
  answer   exit status 0 (or a return) and the output equal to a reference computed apart:
           sentence-transformers / tokenizers from the test extras, on the same folder.
  stopped  an interrupted run: a non-zero status, no traceback, and nothing half-written left
           where a later run would trust it (each case says what it checks on disk).
And after every case, whatever it expects: no file outside the case's folder changed (a
sentinel tree and this checkout, snapshotted), no code from the inputs ran (every payload
writes a marker file), the pristine model copy unchanged, no hang (a timeout per case).

It is a tool, not a test: it takes ~20 minutes on 2 cores and needs the test extras
(`make setup-test weights-test`). Cases run as root and, where a read-only folder matters
(root writes anywhere), as the user `nobody` through setpriv.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import http.server
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
STORE = REPO / "weights"
MODEL = "all-MiniLM-L6-v2"
REPO_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ("A man is eating food.", "A man is eating a piece of bread.")
NOBODY = 65534
ERROR, ANSWER, STOPPED, EITHER = "error", "answer", "stopped", "error or answer"
# What a message says when it is Python's or NumPy's, not the program's.
INTERNAL_WORDS = ("Traceback", "object of type", "NoneType", "has no attribute", "not subscriptable",
                  "index out of range", "index out of bounds", "invalid literal for int", "could not broadcast",
                  "setting an array element", "unsupported operand", "cannot be interpreted as an integer",
                  "must be real number", "unhashable", "is not iterable", "dtype('", "ufunc",
                  "not JSON serializable", "codec can't", "object is not callable")
# The exceptions an API call may end in for bad input (besides the package's own classes).
CLEAR_EXCEPTIONS = ("ValueError", "TypeError", "OSError")


# ---------------------------------------------------------------------------------------
# A case, and what one run of it gave.


@dataclasses.dataclass
class Case:
    name: str                                  # "category/what", unique
    expect: str                                # ERROR, ANSWER, EITHER (a clear error or a right answer), STOPPED
    act: Callable                              # act(world) -> Result: set up, then the user's step
    names: tuple = ()                          # ERROR: what the line must name; a tuple inside = any of
    check: Callable | None = None              # ANSWER / STOPPED: check(world, result) -> None or why not
    slow: bool = False                         # compiles the kernels from scratch (~1-2 min)
    timeout: float = 180.0
    notes_ok: bool = False                     # ERROR: progress lines may precede the error line
    after: Callable | None = None              # after(world, result) -> None or why not, whatever the outcome

    @property
    def category(self):
        return self.name.split("/", 1)[0]


@dataclasses.dataclass
class Result:
    returncode: int | None                     # None: the API call returned; -N: killed by signal N
    stdout: bytes = b""
    stderr: bytes = b""
    elapsed: float = 0.0
    timed_out: bool = False
    api: dict | None = None                    # an API call's record (see API_PRELUDE)
    vectors: np.ndarray | None = None          # what the step answered, when it is vectors
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def err(self):
        return self.stderr.decode("utf-8", "replace")

    @property
    def out(self):
        return self.stdout.decode("utf-8", "replace")

    def stderr_lines(self):
        return [line for line in self.err.strip().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------
# The world a case runs in.


class Probe:
    """What every case shares: the pristine model copy, the sentinel, the marker folder,
    the local hub, the references."""

    def __init__(self, root):
        self.root = Path(root)
        self.pristine = self.root / "pristine" / MODEL
        self.sentinel = self.root / "sentinel"
        self.markers = self.root / "markers"
        self.cases = self.root / "cases"
        self.nobody_cache = self.root / "nobody-cache"  # kernels compiled as nobody, kept between cases
        for folder in (self.markers, self.cases):
            folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.markers, 0o777)
        self._copy_pristine()
        self._make_sentinel()
        self.nobody_cache.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.nobody_cache, NOBODY, NOBODY)
        self.hub = LocalHub(self.pristine)
        self.snapshot = self.take_snapshot()
        self.pristine_state = _tree_state(self.pristine, with_ctime=False)

    def _copy_pristine(self):
        if self.pristine.is_dir():
            return
        source = STORE / MODEL
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if relative.parts[0] == ".transformer-packed":
                continue
            if path.is_dir():
                (self.pristine / relative).mkdir(parents=True, exist_ok=True)
            else:
                (self.pristine / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, self.pristine / relative)
        for path in [self.pristine, *self.pristine.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    def _make_sentinel(self):
        """Files a case must never touch: the target of symbolic-link tricks."""
        important = self.sentinel / "important"
        for sub in ("photos", "thesis", "taxes"):
            (important / sub).mkdir(parents=True, exist_ok=True)
            (important / sub / "keep.txt").write_text(f"{sub}: do not delete\n")
        (important / "notes.txt").write_text("important notes\n")
        os.chmod(self.sentinel, 0o755)

    def take_snapshot(self):
        """{path: state} of the sentinel tree and this checkout (but its venv, .git, caches)."""
        state = _tree_state(self.sentinel, with_ctime=True)
        for path in _walk(REPO, skip=lambda p: p.name in (".venv", ".git", "__pycache__", ".transformer-packed",
                                                           ".pytest_cache", ".hypothesis", ".search-cache")
                          or p.name.endswith(".egg-info") or p == Path(__file__).resolve()):
            state[str(path)] = _state(path, with_ctime=False)
        return state

    def invariants(self):
        """Why the world outside the cases is not as it was, or None."""
        problems = []
        now = self.take_snapshot()
        changed = sorted(set(now) ^ set(self.snapshot) | {p for p in now if p in self.snapshot and now[p] != self.snapshot[p]})
        if changed:
            problems.append(f"changed outside the case: {', '.join(changed[:3])}")
            self.snapshot = now  # report each change once
        markers = sorted(os.listdir(self.markers))
        if markers:
            problems.append(f"code from the inputs ran: {', '.join(markers)}")
            for name in markers:
                os.unlink(self.markers / name)
        if _tree_state(self.pristine, with_ctime=False) != self.pristine_state:
            problems.append("the pristine model copy was written to (through a hard link)")
        return "; ".join(problems) or None


def _walk(root, skip=lambda path: False):
    root = Path(root)
    if not os.path.lexists(root):
        return
    yield root
    if root.is_symlink() or not root.is_dir():
        return
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        if skip(path):
            continue
        yield from _walk(path, skip)


def _state(path, with_ctime):
    info = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
    return (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_size if not stat.S_ISDIR(info.st_mode) else 0,
            info.st_mtime_ns, info.st_ctime_ns if with_ctime else 0, link)


def _tree_state(root, with_ctime):
    return {str(path): _state(path, with_ctime) for path in _walk(root)}


class World:
    """One case's folder: home/, tmp/, weights/, hf/, work/ (the working directory), and the
    model folders it makes. Its environment is a new user's: nothing from ours but PATH."""

    def __init__(self, probe, case, number):
        self.probe = probe
        self.case = case
        self.root = probe.cases / f"{number:03d}"
        if self.root.exists():
            _remove(self.root)
        self.root.mkdir(parents=True)
        os.chmod(self.root, 0o755)
        self.home, self.tmp, self.weights, self.hf, self.work = (self.root / name for name in
                                                                 ("home", "tmp", "weights", "hf", "work"))
        for folder in (self.home, self.tmp, self.weights, self.hf, self.work):
            folder.mkdir()
        self.marker = probe.markers / f"{number:03d}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
            "HOME": str(self.home), "TMPDIR": str(self.tmp), "TRANSFORMER_WEIGHTS": str(self.weights),
            "HF_HUB_CACHE": str(self.hf),
            # No network: the hub is a closed port, pip has no index (so no registry is asked).
            "HF_ENDPOINT": "http://127.0.0.1:9", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }

    # --- making things ----------------------------------------------------------------
    def model(self, where=None, files=None):
        """A model folder of hard links to the pristine all-MiniLM-L6-v2 (all its files, or
        `files`); returns its path."""
        folder = Path(where) if where is not None else self.root / "model"
        for path in sorted(self.probe.pristine.rglob("*")):
            relative = path.relative_to(self.probe.pristine)
            if path.is_dir() or relative.name == ".transformer-download.json":
                continue
            if files is not None and str(relative) not in files:
                continue
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, folder / relative)
        folder.mkdir(parents=True, exist_ok=True)
        self.model_dir = folder
        return folder

    def stored(self, name=MODEL, stamp=True):
        """weights/NAME as `transformer download` leaves it (with its stamp)."""
        folder = self.model(self.weights / name)
        if stamp:
            shutil.copy(self.probe.pristine / ".transformer-download.json", folder / ".transformer-download.json")
        return folder

    def write(self, path, data):
        """Write a file anew (never through a hard link or a symbolic link to the pristine copy)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            data = (data if isinstance(data, str) else dumps(data)).encode("utf-8")
        with open(path, "xb") as file:
            file.write(data)
        return path

    def own(self, path):
        """Turn a hard link into a copy of its own (before changing it in place or its mode)."""
        path = Path(path)
        data = path.read_bytes()
        info = path.stat()
        self.write(path, data)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
        return path

    def edit_json(self, path, change):
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data = change(data) or data
        return self.write(path, data)

    def give(self, *paths):
        """Make folders (and what is in them) nobody's."""
        for top in paths:
            for path in _walk(top):
                os.lchown(path, NOBODY, NOBODY)

    # --- running ----------------------------------------------------------------------
    def cli(self, *args, stdin=None, env=None, user="root", stdout=None, interrupt=None, cwd=None):
        """`transformer ARGS` as a user types it. stdin: bytes (or None: an empty pipe);
        stdout: None (captured), "closed", "full" (/dev/full) or "head" (read one line, then
        close the pipe); interrupt: (signal, seconds or a predicate) to send it."""
        command = [str(TRANSFORMER_COMMAND), *(a if isinstance(a, bytes) else str(a) for a in args)]
        return self._run(command, stdin, env, user, stdout, interrupt, cwd)

    def api(self, code, env=None, user="root", interrupt=None):
        """`code` (Python, ending by assigning `result`) in a new interpreter; the result
        or the exception comes back as Result.api, an array result as Result.vectors."""
        record_file = self.root / "api-result.json"
        command = [sys.executable, "-c", API_PRELUDE, str(record_file), textwrap.dedent(code)]
        result = self._run(command, None, env, user, None, interrupt, None)
        if record_file.exists():
            result.api = json.loads(record_file.read_text())
            if "array" in result.api:
                result.vectors = np.load(result.api["array"])
        return result

    def _run(self, command, stdin, env, user, stdout, interrupt, cwd):
        environment = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        if user == "nobody":
            command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
            if "XDG_CACHE_HOME" not in (env or {}):  # kernels compiled once for every nobody case
                environment["XDG_CACHE_HOME"] = str(self.probe.nobody_cache)
        preexec, out = None, subprocess.PIPE
        if stdout == "closed":
            preexec, out = (lambda: os.close(1)), None
        elif stdout == "full":
            out = open("/dev/full", "wb")
        started = time.monotonic()
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE,
                                   env=environment, cwd=cwd or self.work, preexec_fn=preexec, start_new_session=True)
        deadline = started + self.case.timeout
        if stdin:
            try:
                process.stdin.write(stdin)
            except BrokenPipeError:
                pass
        process.stdin.close()
        errors = []
        reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()
        output = b""
        if stdout == "head":
            output = process.stdout.readline()
            process.stdout.close()
        elif out is subprocess.PIPE:
            chunks = []
            threading.Thread(target=lambda: chunks.append(process.stdout.read()), daemon=True).start()
        if interrupt is not None:
            signum, when = interrupt
            while process.poll() is None and time.monotonic() < deadline:
                if (callable(when) and when()) or (not callable(when) and time.monotonic() - started >= when):
                    process.send_signal(signum)
                    break
                time.sleep(0.02)
        timed_out = False
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(5)
        if stdout not in ("head", "closed", "full"):
            for _ in range(100):
                if chunks:
                    break
                time.sleep(0.05)
            output = chunks[0] if chunks else b""
        if stdout == "full":
            out.close()
        return Result(process.returncode, output, errors[0] if errors else b"", time.monotonic() - started, timed_out)


# The interpreter an API case runs in: it runs the case's code, then writes what came of it.
API_PRELUDE = r"""
import json, sys, traceback
_record_file, _code = sys.argv[1], sys.argv[2]
_scope = {"__name__": "__case__"}
try:
    exec(compile(_code, "<case>", "exec"), _scope)
    import numpy as np
    _value = _scope.get("result")
    _record = {"returned": type(_value).__name__, "repr": repr(_value)[:300]}
    if isinstance(_value, np.ndarray) or isinstance(_value, list) and all(isinstance(v, np.ndarray) for v in _value):
        np.save(_record_file + ".npy", np.asarray(_value))
        _record["array"] = _record_file + ".npy"
except BaseException as _error:
    _frames = traceback.extract_tb(_error.__traceback__)
    _record = {"raised": type(_error).__name__, "module": type(_error).__module__,
               "classes": [k.__name__ for k in type(_error).__mro__], "message": str(_error),
               "where": _frames[-1].filename if _frames else "", "traceback": traceback.format_exc()}
with open(_record_file, "w") as _file:
    json.dump(_record, _file)
"""

TRANSFORMER_COMMAND = Path(sys.executable).with_name("transformer")


def dumps(value):
    """JSON text; Raw("1e999") values are written as given (what json.dumps cannot write)."""
    raws = []

    def replace(item):
        if isinstance(item, Raw):
            raws.append(item.text)
            return f"__raw_{len(raws) - 1}__"
        if isinstance(item, dict):
            return {key: replace(part) for key, part in item.items()}
        if isinstance(item, list):
            return [replace(part) for part in item]
        return item

    text = json.dumps(replace(value), indent=1, ensure_ascii=False)
    for number, raw in enumerate(raws):
        text = text.replace(f'"__raw_{number}__"', raw)
    return text


@dataclasses.dataclass(frozen=True)
class Raw:
    text: str


def _remove(path):
    """Remove a case's folder, whatever modes its parts were left with (never following a link)."""
    for current, folders, files in os.walk(path):
        for name in folders:
            full = os.path.join(current, name)
            if not os.path.islink(full):
                os.chmod(full, 0o755)
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Judging a run.


def verdict(case, world, result):
    """(outcome, ok, line): what happened, whether it is what the case expects, and the
    line that says so (the error line, or why the answer is wrong)."""
    outcome, ok, line = _verdict(case, world, result)
    if case.after is not None and outcome != "hang":
        why = case.after(world, result)
        if why:
            return outcome, False, f"{why} ({line})"
    return outcome, ok, line


def _verdict(case, world, result):
    if result.timed_out:
        return "hang", False, f"no answer after {case.timeout:.0f} s"
    expect = result.extra.get("expect", case.expect)  # set by an act that asks the reference
    if expect == EITHER:
        failed = result.returncode != 0 if result.api is None else "raised" in result.api
        expect = ERROR if failed else ANSWER
    if expect != case.expect:
        case = dataclasses.replace(case, expect=expect)
    if result.api is not None:
        return _api_verdict(case, world, result)
    lines = result.stderr_lines()
    if "Traceback" in result.err:
        last = lines[-1] if lines else ""
        return "traceback", False, last
    if result.returncode != 0:
        line = lines[-1] if lines else f"(no message; exit {result.returncode})"
        if case.expect == STOPPED:
            why = case.check(world, result) if case.check else None
            return "stopped", why is None, why or line
        if case.expect == ANSWER:
            return "error", False, line
        if len(lines) != 1 and not (case.notes_ok and lines):
            return "error", False, f"{len(lines)} lines on stderr: " + " | ".join(lines)[:300]
        vague = _vague(line, case.names)
        return "error", vague is None, line if vague is None else f"{vague}: {line}"
    # exit 0
    if case.expect == ERROR:
        return "answer", False, f"exit 0; expected an error ({(lines or ['no message'])[-1]})"
    why = case.check(world, result) if case.check else None
    return "answer", why is None and case.expect == ANSWER, why or (lines[-1] if lines else "")


def _api_verdict(case, world, result):
    record = result.api
    if "raised" not in record:
        if case.expect == ERROR:
            return "answer", False, f"returned {record['repr'][:100]}; expected an error"
        why = case.check(world, result) if case.check else None
        return "answer", why is None, why or f"returned {record['returned']}"
    line = f"{record['raised']}: {' / '.join(record['message'].splitlines())}"
    if case.expect != ERROR:
        return "error", False, line
    ours = record["module"].startswith("transformer") or any(name in CLEAR_EXCEPTIONS for name in record["classes"])
    inside = record["where"] == "<case>" or record["where"].startswith((str(REPO / "transformer"), str(REPO / "kernels")))
    if not ours:
        return "error", False, f"{record['raised']} is no error of the package's: {line}"
    if not inside:
        return "error", False, f"raised inside {record['where']}: {line}"
    if len(record["message"].strip().splitlines()) != 1:
        return "error", False, f"message of {len(record['message'].splitlines())} lines: {line}"
    vague = _vague(line, case.names)
    return "error", vague is None, line if vague is None else f"{vague}: {line}"


def _vague(line, names):
    """Why an error line is vague (does not name what it must, or speaks NumPy), or None."""
    for word in INTERNAL_WORDS:
        if word in line:
            return f"vague ({word!r})"
    lowered = line.lower()
    for name in names:
        options = name if isinstance(name, tuple) else (name,)
        if not any(option.lower() in lowered for option in options):
            return f"vague (names no {' / '.join(options)})"
    return None


# ---------------------------------------------------------------------------------------
# References: what sentence-transformers and tokenizers answer for the same folder.


@functools.lru_cache(maxsize=None)
def _sentence_transformer(folder):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings(), open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet), \
            contextlib.redirect_stdout(quiet):  # transformers prints a load report for unused weights
        warnings.simplefilter("ignore")
        return SentenceTransformer(folder, device="cpu")


_reference_cache = {}


def reference_vectors(folder, texts, normalize=None):
    """sentence-transformers' vectors for texts, from `folder` (the pristine copy when None)."""
    folder = str(folder)
    key = (folder, tuple(texts), normalize)
    if key not in _reference_cache or "/cases/" in folder:
        model = _sentence_transformer(folder)
        if normalize is False:  # without the model's Normalize module: its first two modules
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(modules=list(model)[:2], device="cpu")
        vectors = model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=bool(normalize))
        _reference_cache[key] = vectors.astype(np.float32)
        if "/cases/" in folder:  # a case's folder goes away with the case
            _sentence_transformer.cache_clear()
    return _reference_cache[key]


def vectors_from_stdout(result):
    """The vectors of `transformer embed`'s JSON lines, or None when the output is not that."""
    try:
        rows = [json.loads(line) for line in result.out.splitlines() if line.strip()]
        return rows, np.array([row["embedding"] for row in rows], dtype=np.float32).reshape(len(rows), -1)
    except (ValueError, KeyError, TypeError):
        return None, None


def same_vectors(texts=TEXTS, folder=None, normalize=None, tolerance=1e-5, source=None):
    """A check: the run answered sentence-transformers' vectors for `texts` (from `folder`:
    the pristine model, "case" for the case's model folder, or a path; reference texts may
    differ from the texts sent, e.g. a BOM the reader must drop)."""
    def check(world, result):
        vectors = result.vectors
        if vectors is None:
            rows, vectors = vectors_from_stdout(result)
            if rows is None:
                return f"output is not JSON lines of vectors: {result.out[:120]!r}"
            if [row["text"] for row in rows] != list(source if source is not None else texts):
                return f"texts echoed differ: {[row['text'][:30] for row in rows][:4]}"
        where = world.model_dir if folder == "case" else folder if folder is not None else world.probe.pristine
        try:
            expected = reference_vectors(where, texts, normalize)
        except Exception as error:  # noqa: BLE001  (a reference that cannot be made is reported, not raised)
            return f"no reference: sentence-transformers failed on it ({type(error).__name__}: {str(error)[:100]})"
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.shape != expected.shape:
            return f"shape {vectors.shape}, expected {expected.shape}"
        worst = float(np.abs(vectors - expected).max()) if vectors.size else 0.0
        if not worst <= tolerance:
            return f"wrong answer: max |diff| {worst:.3g} from sentence-transformers"
        return None
    return check


def all_of(*checks):
    def check(world, result):
        for one in checks:
            why = one(world, result)
            if why:
                return why
        return None
    return check


# ---------------------------------------------------------------------------------------
# What the cases build on: the checkpoint's bytes, payloads that would run code, a local hub.


class _Exec:
    """Pickles as a call of exec(code): whoever unpickles it runs the code."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def payload_code(world):
    """Python that leaves the case's marker file when it runs."""
    return f"open({str(world.marker)!r}, 'w').write('ran')\n"


def pickle_payload(world):
    return pickle.dumps(_Exec(payload_code(world)))


class Checkpoint:
    """The pristine model.safetensors as header and data, to write changed copies of."""

    def __init__(self, path):
        blob = Path(path).read_bytes()
        length = int.from_bytes(blob[:8], "little")
        self.header = json.loads(blob[8:8 + length])
        self.data = blob[8 + length:]

    def names(self):
        return [name for name in self.header if name != "__metadata__"]

    def tensor(self, name):
        entry = self.header[name]
        begin, end = entry["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[entry["dtype"]]
        return np.frombuffer(self.data[begin:end], dtype=dtype).reshape(entry["shape"]).copy()

    def replaced(self, **arrays):
        """The data with the named tensors' bytes replaced (same dtype and size): {name: array}
        with the dots of the name written as __."""
        data = bytearray(self.data)
        for key, array in arrays.items():
            begin, end = self.header[key.replace("__", ".")]["data_offsets"]
            data[begin:end] = np.ascontiguousarray(array).tobytes()
        return bytes(data)

    def write(self, world, path, header=None, data=None, raw_header=None, length=None, tail=b""):
        text = raw_header if raw_header is not None else json.dumps(header if header is not None else self.header).encode()
        body = self.data if data is None else data
        blob = (len(text) if length is None else length).to_bytes(8, "little", signed=length is not None and length < 0)
        return world.write(path, blob + text + body + tail)

    def converted(self, dtype_name):
        """(header, data) of the same tensors stored as F16 or BF16 (the position ids stay I64)."""
        header, parts, offset = {"__metadata__": {"format": "pt"}}, [], 0
        for name in self.names():
            array = self.tensor(name)
            if array.dtype == np.float32:
                array = _to_half(array, dtype_name)
                dtype = dtype_name
            else:
                dtype = self.header[name]["dtype"]
            raw = array.tobytes()
            header[name] = {"dtype": dtype, "shape": list(self.header[name]["shape"]),
                            "data_offsets": [offset, offset + len(raw)]}
            parts.append(raw)
            offset += len(raw)
        return header, b"".join(parts)

    def rounded(self, dtype_name):
        """The data with every float tensor rounded through F16 / BF16 and back (the values a
        half-precision checkpoint holds, as float32): the reference's weights."""
        arrays = {}
        for name in self.names():
            array = self.tensor(name)
            if array.dtype == np.float32:
                arrays[name.replace(".", "__")] = _from_half(_to_half(array, dtype_name), dtype_name)
        return self.replaced(**arrays)


def _to_half(array, dtype_name):
    if dtype_name == "F16":
        return array.astype(np.float16)
    bits = array.view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even, as torch does
    return (rounded >> 16).astype(np.uint16)


def _from_half(array, dtype_name):
    if dtype_name == "F16":
        return array.astype(np.float32)
    return (array.astype(np.uint32) << 16).view(np.float32)


@functools.lru_cache(maxsize=1)
def checkpoint():
    return Checkpoint(PROBE.pristine / "model.safetensors")


class LocalHub:
    """A stand-in for the Hugging Face hub on 127.0.0.1, serving the pristine copy's files at
    /MODE/ORG/NAME/resolve/REVISION/FILE. MODE says how: ok, slow (a few MB/s), wrong (other
    bytes), 404, 500, hang (never answers), short (the connection drops half way)."""

    def __init__(self, folder):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = self.path.lstrip("/").split("/")
                mode, rest = parts[0], parts[1:]
                if len(rest) < 5 or "/".join(rest[:2]) != REPO_ID or rest[2] != "resolve":
                    self.send_error(404)
                    return
                file = Path(folder) / "/".join(rest[4:])
                if mode == "404" or not file.is_file():
                    self.send_error(404)
                    return
                if mode == "500":
                    self.send_error(500)
                    return
                if mode == "hang":
                    time.sleep(60)
                    return
                data = file.read_bytes()
                if mode == "wrong":
                    data = data[::-1]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "short":
                    data = data[: len(data) // 2]
                step = 1 << 18
                for start in range(0, len(data), step):
                    try:
                        self.wfile.write(data[start:start + step])
                    except OSError:
                        return
                    if mode == "slow":
                        time.sleep(0.05)
                if mode == "short":
                    self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def endpoint(self, mode="ok"):
        return f"http://127.0.0.1:{self.server.server_address[1]}/{mode}"


PROBE: Probe  # set by main()
DELETE = object()  # a config value meaning: remove the key


def mkfifo(path):
    path = Path(path)
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path)
    return path


def symlink(target, path):
    path = Path(path)
    if os.path.lexists(path):
        os.unlink(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


def sparse(world, path, size):
    world.write(path, b"{")
    os.truncate(path, size)
    return path


# ---------------------------------------------------------------------------------------
# How the cases are written: an act (set up, then run) and what is expected.


def error(name, act, *names, **options):
    return Case(name, ERROR, act, names=names, **options)


def answer(name, act, check=None, **options):
    return Case(name, ANSWER, act, check=check or same_vectors(), **options)


def embed_folder(change, *args, texts=TEXTS):
    """Act: a copy of the model changed by change(world, folder), then `transformer embed -m FOLDER`."""
    def act(world):
        folder = world.model()
        change(world, folder)
        return world.cli("embed", "-m", folder, *args, *texts)
    return act


def embed_stored(*args, texts=TEXTS, env=None, before=None, stdin=None, user="root", stdout=None):
    """Act: the model in the store, then `transformer embed ARGS TEXTS` (the default model)."""
    def act(world):
        world.stored()
        if before is not None:
            before(world)
        return world.cli("embed", *args, *texts, env=env, stdin=stdin, user=user, stdout=stdout)
    return act


def api_call(code, before=None, env=None, user="root", store=True):
    """Act: the model in the store, then `code` in a new interpreter (MODEL, TEXTS and the
    case's folders are defined for it)."""
    def act(world):
        if store:
            world.stored()
        if before is not None:
            before(world)
        prelude = (f"MODEL = {MODEL!r}\nTEXTS = {list(TEXTS)!r}\nROOT = {str(world.root)!r}\n"
                   f"STORED = {str(world.weights / MODEL)!r}\n")
        return world.api(prelude + textwrap.dedent(code), env=env, user=user)
    return act


def config_set(**fields):
    """change(): set config.json's fields (DELETE removes one)."""
    def change(world, folder):
        def edit(config):
            for key, value in fields.items():
                if value is DELETE:
                    config.pop(key, None)
                else:
                    config[key] = value
        world.edit_json(folder / "config.json", edit)
    return change


def file_is(relative, data):
    """change(): the file `relative` of the model folder holds `data` (bytes, str, JSON value)."""
    def change(world, folder):
        world.write(folder / relative, data)
    return change


def file_gone(*relatives):
    def change(world, folder):
        for relative in relatives:
            path = folder / relative
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
    return change


def link_to(relative, target):
    """change(): the file `relative` is a symbolic link to `target` (a path, or a function of
    (world, folder) giving one)."""
    def change(world, folder):
        path = folder / relative
        symlink(target(world, folder) if callable(target) else target, path)
    return change


def fifo_at(relative):
    def change(world, folder):
        mkfifo(folder / relative)
    return change


def steps(*changes):
    def change(world, folder):
        for one in changes:
            one(world, folder)
    return change


# ---------------------------------------------------------------------------------------
# More checks.


def same_tokens(text, folder=None, special=True):
    """A check for `tokenize --json`: the ids Rust `tokenizers` gives for the same file."""
    def check(world, result):
        from tokenizers import Tokenizer as RustTokenizer

        where = world.model_dir if folder == "case" else folder or world.probe.pristine
        try:
            rust = RustTokenizer.from_file(str(Path(where) / "tokenizer.json"))
        except Exception as error:  # noqa: BLE001
            return f"Rust tokenizers refuses the file ({str(error)[:80]}), this answered"
        rust.no_truncation()
        rust.no_padding()
        expected = rust.encode(text, add_special_tokens=special).ids
        try:
            got = json.loads(result.out)["ids"]
        except (ValueError, KeyError):
            return f"output is not tokenize --json: {result.out[:100]!r}"
        return None if got == expected else f"ids differ from Rust tokenizers: {got[:8]} vs {expected[:8]}"
    return check


def search_matches(lines, query, k=3, folder=None):
    """A check for `search`: the top k lines and their scores as sentence-transformers ranks them."""
    def check(world, result):
        texts = [line for line in lines if line.strip()]
        numbers = [number for number, line in enumerate(lines, start=1) if line.strip()]
        where = world.model_dir if folder == "case" else folder
        corpus = reference_vectors(where or world.probe.pristine, texts)
        asked = reference_vectors(where or world.probe.pristine, [query])
        scores = (corpus / np.linalg.norm(corpus, axis=1, keepdims=True)) @ (asked[0] / np.linalg.norm(asked[0]))
        best = np.argsort(-scores, kind="stable")[:k]
        got = [line.split() for line in result.out.splitlines()[1:] if line.strip()]
        try:
            got = [(int(parts[3].rstrip(":")), float(parts[1])) for parts in got]
        except (IndexError, ValueError):
            return f"output is not a ranking: {result.out[:120]!r}"
        expected = [(numbers[i], float(scores[i])) for i in best]
        if [n for n, _ in got] != [n for n, _ in expected] or any(abs(a - b) > 1.5e-4 for (_, a), (_, b) in zip(got, expected)):
            return f"ranking {got} differs from sentence-transformers' {[(n, round(s, 4)) for n, s in expected]}"
        return None
    return check


def similarity_matches(texts, folder=None):
    def check(world, result):
        try:
            matrix = np.array(json.loads(result.out)["similarity"], dtype=np.float32)
        except (ValueError, KeyError):
            return f"output is not similarity --json: {result.out[:100]!r}"
        vectors = reference_vectors(folder or world.probe.pristine, texts)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        worst = float(np.abs(matrix - vectors @ vectors.T).max())
        return None if worst <= 2e-6 else f"cosines off by {worst:.3g} from sentence-transformers"
    return check


def npy_file(relative, texts=TEXTS, folder=None):
    """A check: the .npy file the run wrote holds sentence-transformers' vectors."""
    def check(world, result):
        path = world.work / relative
        if not path.is_file():
            return f"{relative} was not written"
        result.vectors = np.load(path)
        return same_vectors(texts, folder)(world, result)
    return check


def nothing_left(*patterns, where="work"):
    """A check: no file matching the patterns (glob, relative to the case's `where` folder) exists."""
    def check(world, result):
        base = getattr(world, where) if isinstance(where, str) else where(world)
        left = [str(p.relative_to(world.root)) for pattern in patterns for p in Path(base).glob(pattern)]
        return f"left on disk: {', '.join(left[:4])}" if left else None
    return check


def exit_is(*codes):
    def check(world, result):
        return None if result.returncode in codes else f"exit {result.returncode}, expected {codes}"
    return check


def quietly_answered(world, result):
    """A check for a command that prints no vectors: exit 0 and no traceback (verdict's part)."""
    return None


def stderr_says(*fragments):
    def check(world, result):
        missing = [f for f in fragments if f.lower() not in result.err.lower()]
        return f"stderr does not say {missing}: {result.err.strip()[:150]!r}" if missing else None
    return check


def later_run(check):
    """A check on the run kept in result.extra["later"] (a second run made by the act)."""
    def run_check(world, result):
        later = result.extra.get("later")
        if later is None:
            return "no later run"
        if later.returncode != 0:
            return f"the run after it failed: {later.stderr_lines()[-1:] or later.returncode}"
        return check(world, later)
    return run_check


def manifest_files():
    return json.loads((REPO / "transformer" / "models.json").read_text())[MODEL]["files"]


def store_is_sound(world, result=None):
    """A check: weights/all-MiniLM-L6-v2 holds every required file with the manifest's sum, and
    no half-written folder is left beside it."""
    folder = world.weights / MODEL
    for file, info in manifest_files().items():
        path = folder / file
        if info.get("optional") and not path.exists():
            continue
        if not path.is_file():
            return f"{file} missing from the store"
        if hashlib.sha256(path.read_bytes()).hexdigest() != info["sha256"]:
            return f"{file} in the store does not match the manifest"
    return None


# ---------------------------------------------------------------------------------------
# The cases. Each group is a list of (name, expectation, act, ...): the catalogue.

ALL_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def folder_cases():
    def only(*files):
        def act(world):
            folder = world.model(files=set(files))
            return world.cli("embed", "-m", folder, *TEXTS)
        return act

    def nobody_cannot_read(relative):
        def act(world):
            folder = world.model()
            path = folder / relative
            if path.is_file():
                world.own(path)
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
            return world.cli("embed", "-m", folder, *TEXTS, user="nobody")
        return act

    def payload_files(world, folder):
        for name in ("modeling_bert.py", "__init__.py", "configuration_bert.py", "setup.py"):
            world.write(folder / name, payload_code(world))

    def pickled_weights(world, folder):
        world.write(folder / "pytorch_model.bin", pickle_payload(world))

    def relative(world):
        world.model(world.work / "my model")
        return world.cli("embed", "-m", "my model", *TEXTS)

    def tilde(world):
        world.model(world.home / "models" / "mini")
        return world.cli("embed", "-m", "~/models/mini", *TEXTS)

    def linked_folder(world):
        folder = world.model(world.root / "elsewhere" / "model")
        symlink(folder, world.work / "linked")
        world.model_dir = folder
        return world.cli("embed", "-m", "linked", *TEXTS)

    def unicode_path(world):
        folder = world.model(world.root / "modèles – test" / "mini lm")
        return world.cli("embed", "-m", f"{folder}/", *TEXTS)

    def loop(world):
        symlink(world.work / "b", world.work / "a")
        symlink(world.work / "a", world.work / "b")
        return world.cli("embed", "-m", "./a", *TEXTS)

    def text_file(world):
        world.write(world.work / "notes.txt", "not a model\n")
        return world.cli("embed", "-m", "./notes.txt", *TEXTS)

    def weights_file(world):
        folder = world.model()
        return world.cli("embed", "-m", folder / "model.safetensors", *TEXTS)

    def config_file(world):
        folder = world.model()
        return world.cli("embed", "-m", folder / "config.json", *TEXTS)

    everything_but = lambda *gone: embed_folder(file_gone(*gone))  # noqa: E731
    return [
        error("folder/a path that does not exist", lambda w: w.cli("embed", "-m", "./no-such-model", "hi"),
              "no-such-model"),
        error("folder/an empty folder", only(), "config.json"),
        error("folder/config.json alone", only("config.json"), "model.safetensors"),
        error("folder/no config.json", everything_but("config.json"), "config.json"),
        error("folder/no model.safetensors", everything_but("model.safetensors"), "model.safetensors"),
        error("folder/no tokenizer files", everything_but(*ALL_TOKENIZER_FILES), "tokenizer"),
        error("folder/pickled pytorch_model.bin instead of safetensors",
              embed_folder(steps(file_gone("model.safetensors"), pickled_weights)), "safetensors"),
        answer("folder/pickled pytorch_model.bin beside the safetensors", embed_folder(pickled_weights)),
        answer("folder/python files beside the model", embed_folder(payload_files)),
        answer("folder/auto_map and trust_remote_code in config.json",
               embed_folder(steps(payload_files, config_set(auto_map={"AutoModel": "modeling_bert.Evil",
                                                                      "AutoConfig": "configuration_bert.Evil"},
                                                            trust_remote_code=True)))),
        answer("folder/extra files and folders (onnx/, tf weights, .DS_Store)",
               embed_folder(steps(file_is("onnx/model.onnx", b"\x08\x07garbage"), file_is("tf_model.h5", b"\x89HDF"),
                                  file_is(".DS_Store", b"\x00\x00\x00\x01Bud1"), file_is("notes/readme.txt", "hi")))),
        answer("folder/the path of model.safetensors", weights_file),
        answer("folder/the path of config.json", config_file),
        answer("folder/a relative path with a space", relative),
        answer("folder/a path with ~", tilde),
        answer("folder/a non-ASCII path with a trailing slash", unicode_path),
        answer("folder/a symbolic link to the folder", linked_folder),
        error("folder/a loop of symbolic links", loop, "./a"),
        error("folder/a text file given as the model", text_file, "notes.txt"),
        error("folder/a folder nobody may read", nobody_cannot_read("."), "model", timeout=400),
        error("folder/a config.json nobody may read", nobody_cannot_read("config.json"), "config.json", timeout=400),
        error("folder/a model.safetensors nobody may read", nobody_cannot_read("model.safetensors"),
              "model.safetensors", timeout=400),
        error("folder/a tokenizer.json nobody may read", nobody_cannot_read("tokenizer.json"), "tokenizer.json",
              timeout=400),
    ]


def config_file_cases():
    def deep(world, folder):
        world.write(folder / "config.json", "[" * 100_000 + "]" * 100_000)

    def huge(world, folder):
        sparse(world, folder / "config.json", 300 << 20)

    def outside(world, folder):
        target = world.root / "elsewhere" / "config.json"
        shutil.copy(world.probe.pristine / "config.json", target.parent.mkdir() or target)
        symlink(target, folder / "config.json")

    def with_bom(world, folder):
        world.write(folder / "config.json", b"\xef\xbb\xbf" + (world.probe.pristine / "config.json").read_bytes())

    def latin1(world, folder):
        text = (world.probe.pristine / "config.json").read_text().replace('"bert"', '"bert", "note": "café"')
        world.write(folder / "config.json", text.encode("latin-1"))

    def duplicate(world, folder):
        text = (world.probe.pristine / "config.json").read_text().replace('"hidden_size": 384', '"hidden_size": 384, "hidden_size": 768')
        world.write(folder / "config.json", text)

    def nan(world, folder):
        text = (world.probe.pristine / "config.json").read_text().replace('"layer_norm_eps": 1e-12', '"layer_norm_eps": NaN')
        world.write(folder / "config.json", text)

    return [
        error("config/an empty file", embed_folder(file_is("config.json", b"")), "config.json"),
        error("config/a list", embed_folder(file_is("config.json", [])), "config.json"),
        error("config/a string", embed_folder(file_is("config.json", '"bert"')), "config.json"),
        error("config/not JSON", embed_folder(file_is("config.json", "model_type = bert")), "config.json"),
        error("config/an empty object", embed_folder(file_is("config.json", {})), "config.json", "model_type"),
        error("config/cut short", embed_folder(file_is("config.json", '{"model_type": "bert", "hidden_')), "config.json"),
        either("config/a byte-order mark (Python's json and serde_json refuse it)", embed_folder(with_bom), "config.json"),
        error("config/Latin-1 bytes", embed_folder(latin1), "config.json", ("UTF-8", "utf8")),
        error("config/NaN", embed_folder(nan), "config.json", "NaN"),
        error("config/a key twice", embed_folder(duplicate), "config.json", "hidden_size"),
        error("config/300 MB", embed_folder(huge), "config.json"),
        error("config/nested 100,000 deep", embed_folder(deep), "config.json"),
        error("config/a directory", embed_folder(steps(file_gone("config.json"), lambda w, f: (f / "config.json").mkdir())),
              "config.json"),
        error("config/a named pipe", embed_folder(fifo_at("config.json")), "config.json"),
        error("config/a link to /dev/urandom", embed_folder(link_to("config.json", "/dev/urandom")), "config.json"),
        error("config/a link to /dev/zero", embed_folder(link_to("config.json", "/dev/zero")), "config.json"),
        error("config/a dangling link", embed_folder(link_to("config.json", "/nonexistent/config.json")), "config.json"),
        error("config/a link to itself", embed_folder(link_to("config.json", "config.json")), "config.json"),
        answer("config/a link to a file outside the folder", embed_folder(outside)),
    ]


# config.json's fields: bad values, each an error that must name config.json and the field;
# (value, names) where it must name something else: for a size that does not fit the
# checkpoint, the tensor and the field.
CONFIG_FIELD_VALUES = {
    "model_type": ["gpt2", 7, None, "", "BERT", DELETE],
    "vocab_size": ["30522", 30522.5, -1, 0, None, True, 2 ** 40, (30000, ("word_embeddings", "vocab_size")),
                   (40000, ("word_embeddings", "vocab_size"))],
    "hidden_size": ["384", 384.0, -384, 0, None, 2 ** 40, 383, (768, ("embeddings", "hidden_size"))],
    "num_hidden_layers": ["6", 6.5, -1, 0, None, (7, ("config.json", "num_hidden_layers"))],
    "num_attention_heads": ["12", 0, -12, 5, None],
    "intermediate_size": ["1536", 0, None, (1000, ("intermediate", "intermediate_size"))],
    "hidden_act": [3, None, ("softmax", ("config.json", ("hidden_act", "activation"))), ["gelu"],
                   ("", ("config.json", ("hidden_act", "activation")))],
    "max_position_embeddings": ["512", 0, -1, (10, ("position_embeddings", "max_position_embeddings")),
                                (1000, ("position_embeddings", "max_position_embeddings"))],
    "type_vocab_size": ["2", -1, 0, (3, ("token_type_embeddings", "type_vocab_size"))],
    "layer_norm_eps": ["1e-12", -1, 0, Raw("1e999"), 1e-50, 2, True],
    "pad_token_id": ["0", 1.5, 2 ** 40],
    "position_embedding_type": ["relative_key", 5],
    "architectures": ["BertModel", [3], {"a": 1}],
    "id2label": [[], {"a": "x"}, {"0": 1}],
    "num_labels": ["2", -1, 0],
    "tie_word_embeddings": ["yes", 1],
    "is_decoder": [True, "no"],
    "add_cross_attention": [True],
}


def config_field_cases():
    cases = []
    for field, values in CONFIG_FIELD_VALUES.items():
        for value in values:
            value, names = value if isinstance(value, tuple) else (value, ("config.json", field))
            shown = "deleted" if value is DELETE else value.text if isinstance(value, Raw) else json.dumps(value)
            cases.append(error(f"config/{field} {shown}", embed_folder(config_set(**{field: value})), *names))
    check_case = lambda: same_vectors(folder="case")  # noqa: E731  (transformers runs the changed config too)
    cases += [
        answer("config/num_hidden_layers 4 of the checkpoint's 6", embed_folder(config_set(num_hidden_layers=4)),
               check_case()),
        answer("config/num_attention_heads 6 (other heads, same weights)", embed_folder(config_set(num_attention_heads=6)),
               check_case()),
        answer("config/hidden_act gelu_new", embed_folder(config_set(hidden_act="gelu_new")), check_case()),
        answer("config/architectures BertForMaskedLM (no head in the file)",
               embed_folder(config_set(architectures=["BertForMaskedLM"]))),
        answer("config/pad_token_id null", embed_folder(config_set(pad_token_id=None))),
        answer("config/unknown keys", embed_folder(config_set(flash=True, rope_theta=1e4, _name_or_path="/etc/passwd"))),
        answer("config/layer_norm_eps 1e-5", embed_folder(config_set(layer_norm_eps=1e-5)), check_case()),
    ]
    return cases


def safetensors_cases():
    def written(**options):
        """change(): model.safetensors is the pristine one rewritten with these options
        (Checkpoint.write's), or the options computed by a function of the checkpoint."""
        def change(world, folder):
            made = options["of"](checkpoint()) if "of" in options else options
            checkpoint().write(world, folder / "model.safetensors", **made)
        return change

    def header_with(edit):
        def of(ckpt):
            header = json.loads(json.dumps(ckpt.header))
            edit(header)
            return {"header": header}
        return written(of=of)

    def entry(name, **fields):
        def edit(header):
            header[name].update(fields)
        return header_with(edit)

    def raw_header(text_of):
        return written(of=lambda ckpt: {"raw_header": text_of(ckpt)})

    def duplicate_name(ckpt):
        text = json.dumps(ckpt.header)
        name = "embeddings.LayerNorm.bias"
        first = f'"{name}": ' + json.dumps(ckpt.header[name])
        other = dict(ckpt.header["embeddings.LayerNorm.weight"])
        return text.replace(first, first + f', "{name}": ' + json.dumps(other)).encode()

    def overlap(header):
        # the word embeddings' bytes are also the position embeddings' (same size at the start)
        header["embeddings.token_type_embeddings.weight"]["data_offsets"] = header["embeddings.LayerNorm.bias"]["data_offsets"][:1] + [
            header["embeddings.LayerNorm.bias"]["data_offsets"][0] + 3072]

    def scaled(name, factor=None, value=None):
        def of(ckpt):
            array = ckpt.tensor(name)
            if value is not None:
                array.flat[:: max(1, array.size // 7)] = value
            else:
                array *= factor
            return {"data": ckpt.replaced(**{name.replace(".", "__"): array})}
        return written(of=of)

    def truncated(keep):
        def change(world, folder):
            blob = (world.probe.pristine / "model.safetensors").read_bytes()
            world.write(folder / "model.safetensors", blob[:keep(len(blob))])
        return change

    def half(dtype_name):
        def change(world, folder):
            header, data = checkpoint().converted(dtype_name)
            checkpoint().write(world, folder / "model.safetensors", header=header, data=data)
            reference = world.model(world.root / "reference", files=None)
            os.unlink(reference / "model.safetensors")
            checkpoint().write(world, reference / "model.safetensors", data=checkpoint().rounded(dtype_name))
            world.model_dir = reference
        return change

    def dropped(name):
        def of(ckpt):
            header, parts, offset = {}, [], 0
            for other in ckpt.names():
                if other != name:
                    begin, end = ckpt.header[other]["data_offsets"]
                    header[other] = dict(ckpt.header[other], data_offsets=[offset, offset + end - begin])
                    parts.append(ckpt.data[begin:end])
                    offset += end - begin
            return {"header": header, "data": b"".join(parts)}
        return of

    def extra_tensor(ckpt):
        header = dict(ckpt.header)
        end = len(ckpt.data)
        header["classifier.extra.weight"] = {"dtype": "F32", "shape": [4], "data_offsets": [end, end + 16]}
        return {"header": header, "tail": np.ones(4, np.float32).tobytes()}

    def outside(world, folder):
        target = world.root / "elsewhere" / "weights.safetensors"
        target.parent.mkdir()
        os.link(world.probe.pristine / "model.safetensors", target)
        symlink(target, folder / "model.safetensors")

    name = "encoder.layer.0.attention.self.query.weight"
    wide = "encoder.layer.0.intermediate.dense.weight"
    st = "model.safetensors"
    return [
        error("safetensors/0 bytes", embed_folder(file_is(st, b"")), st),
        error("safetensors/4 bytes", embed_folder(file_is(st, b"\x10\x00\x00\x00")), st),
        error("safetensors/cut in the header", embed_folder(truncated(lambda n: 4000)), st),
        error("safetensors/cut in half", embed_folder(truncated(lambda n: n // 2)), st),
        error("safetensors/one byte short", embed_folder(truncated(lambda n: n - 1)), st),
        error("safetensors/header length 2^62", embed_folder(written(length=1 << 62)), st, "header"),
        error("safetensors/header length past the end", embed_folder(written(length=200 << 20)), st, "header"),
        error("safetensors/header length negative", embed_folder(written(length=-5)), st, "header"),
        error("safetensors/header not JSON", embed_folder(raw_header(lambda c: b"{not json at all" + b" " * 50)), st),
        error("safetensors/header a list", embed_folder(raw_header(lambda c: b"[1, 2, 3]")), st),
        error("safetensors/header not UTF-8", embed_folder(raw_header(lambda c: json.dumps(c.header).replace(
            "format", "f\xe9rmat").encode("latin-1"))), st),
        error("safetensors/header followed by NUL bytes", embed_folder(raw_header(lambda c: json.dumps(c.header).encode()
                                                                                  + b"\0" * 8)), st),
        error("safetensors/trailing bytes after the data", embed_folder(written(tail=b"\0" * 64)), st),
        error("safetensors/a negative offset", embed_folder(entry(name, data_offsets=[-4096, 589824 - 4096])), st, name),
        error("safetensors/offsets as strings", embed_folder(entry(name, data_offsets=["0", "589824"])), st, name),
        error("safetensors/offsets as floats", embed_folder(entry(name, data_offsets=[0.0, 589824.0])), st, name),
        error("safetensors/overlapping offsets", embed_folder(header_with(overlap)), st, "data_offsets"),
        error("safetensors/a tensor name twice", embed_folder(written(of=lambda c: {"raw_header": duplicate_name(c)})), st,
              "embeddings.LayerNorm.bias"),
        error("safetensors/a negative shape", embed_folder(entry(name, shape=[-384, -384])), st, name),
        error("safetensors/shape 2^32 x 2^32", embed_folder(entry(name, shape=[1 << 32, 1 << 32])), st, name),
        error("safetensors/dtype a list", embed_folder(entry(name, dtype=["F32"])), st, name),
        error("safetensors/dtype unknown", embed_folder(entry(name, dtype="F33")), st, name),
        error("safetensors/dtype F16 for F32 bytes", embed_folder(entry(name, dtype="F16")), st, name),
        error("safetensors/dtype I32 for a weight", embed_folder(entry(name, dtype="I32")), name, ("I32", "int32")),
        error("safetensors/__metadata__ with a number", embed_folder(entry("__metadata__", format=3)), st, "__metadata__"),
        error("safetensors/a transposed weight", embed_folder(entry(wide, shape=[384, 1536])), wide),
        error("safetensors/a weight missing", embed_folder(written(of=dropped(name))), name),
        error("safetensors/NaN in a weight", embed_folder(scaled(name, value=np.nan)), name),
        error("safetensors/infinity in a LayerNorm", embed_folder(scaled("embeddings.LayerNorm.weight", value=np.inf)),
              "embeddings.LayerNorm.weight"),
        error("safetensors/a LayerNorm weight that overflows when run",
              embed_folder(scaled("embeddings.LayerNorm.weight", factor=np.float32(1e38))), "not finite"),
        answer("safetensors/an extra tensor", embed_folder(written(of=extra_tensor))),
        answer("safetensors/F16 weights", embed_folder(half("F16")), same_vectors(folder="case", tolerance=2e-5)),
        answer("safetensors/BF16 weights", embed_folder(half("BF16")), same_vectors(folder="case", tolerance=2e-5)),
        error("safetensors/a link to /dev/zero", embed_folder(link_to(st, "/dev/zero")), st),
        error("safetensors/a named pipe", embed_folder(fifo_at(st)), st),
        error("safetensors/a directory", embed_folder(steps(file_gone(st), lambda w, f: (f / st).mkdir())), st),
        error("safetensors/a dangling link", embed_folder(link_to(st, "/nonexistent/model.safetensors")), st),
        answer("safetensors/a link to a file outside the folder", embed_folder(outside)),
        answer("safetensors/another .safetensors file beside it",
               embed_folder(file_is("adapter.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "))),
    ]


def shard_cases():
    def sharded(edit_index=None, keep_index=True, second_name="model-00002-of-00002.safetensors"):
        """change(): model.safetensors split in two shards with an index, then edit_index(index)."""
        def change(world, folder):
            ckpt = checkpoint()
            names = ckpt.names()
            halves = (names[: len(names) // 2], names[len(names) // 2:])
            files = ("model-00001-of-00002.safetensors", second_name)
            weight_map = {}
            for file, part in zip(files, halves):
                header, chunks, offset = {}, [], 0
                for tensor in part:
                    begin, end = ckpt.header[tensor]["data_offsets"]
                    header[tensor] = dict(ckpt.header[tensor], data_offsets=[offset, offset + end - begin])
                    chunks.append(ckpt.data[begin:end])
                    offset += end - begin
                    weight_map[tensor] = file
                text = json.dumps(header).encode()
                world.write(folder / file, len(text).to_bytes(8, "little") + text + b"".join(chunks))
            os.unlink(folder / "model.safetensors")
            index = {"metadata": {"total_size": len(ckpt.data)}, "weight_map": weight_map}
            if edit_index is not None:
                index = edit_index(index) or index
            if keep_index:
                world.write(folder / "model.safetensors.index.json", index)
        return change

    def move(tensor_of, shard):
        def edit(index):
            key = next(name for name in index["weight_map"] if tensor_of(name))
            index["weight_map"][key] = shard
        return edit

    first = lambda name: True  # noqa: E731
    index = "model.safetensors.index.json"
    return [
        answer("shards/two shards and an index", embed_folder(sharded())),
        error("shards/shards without an index", embed_folder(sharded(keep_index=False)), ("index", "model.safetensors")),
        error("shards/an absolute shard path", embed_folder(sharded(move(first, "/etc/passwd"))), index, "/etc/passwd"),
        error("shards/a ../ shard path", embed_folder(sharded(move(first, "../model/model-00001-of-00002.safetensors"))),
              index, ".."),
        error("shards/a missing shard", embed_folder(steps(sharded(), file_gone("model-00002-of-00002.safetensors"))), "model-00002-of-00002"),
        error("shards/a tensor the index puts in the other shard",
              embed_folder(sharded(move(first, "model-00002-of-00002.safetensors"))), index),
        error("shards/weight_map a list", embed_folder(sharded(lambda i: {"weight_map": []})), index, "weight_map"),
        error("shards/index not JSON", embed_folder(steps(sharded(), file_is(index, "{weight_map"))), index),
        error("shards/index a link to /dev/urandom", embed_folder(steps(sharded(), link_to(index, "/dev/urandom"))), index),
    ]


def either(name, act, *names, check=None, **options):
    return Case(name, EITHER, act, names=names, check=check or same_vectors(), **options)


def packed_cases():
    def after_first_run(tamper, *args, user="root"):
        """Act: embed once (the packed cache is written), tamper(world, folder), embed again."""
        def act(world):
            folder = world.model()
            first = world.cli("embed", "-m", folder, *TEXTS)
            if first.returncode != 0:
                return first
            tamper(world, folder)
            return world.cli("embed", "-m", folder, *args, *TEXTS, user=user)
        return act

    def cache_folder(folder):
        found = [p for p in (folder / ".transformer-packed").iterdir() if len(p.name) == 24]
        return found[0]

    def in_cache(relative, data):
        def tamper(world, folder):
            world.write(cache_folder(folder) / relative, data)
        return tamper

    def cut_bin(world, folder):
        path = cache_folder(folder) / "packed.bin"
        os.truncate(path, path.stat().st_size // 2)

    def zero_bin(world, folder):
        """Bytes changed in place, the size kept (bit rot, a stray write)."""
        path = cache_folder(folder) / "packed.bin"
        with open(path, "r+b") as file:
            file.seek(path.stat().st_size // 3)
            file.write(b"\x7f" * 4096 * 64)

    def meta_lies(world, folder):
        path = cache_folder(folder) / "packed.meta"
        meta = json.loads(path.read_text())
        for entry in meta["arrays"].values():
            entry["offset"] = entry["offset"] + (1 << 40)
        world.write(path, meta)

    def bin_is(kind):
        def tamper(world, folder):
            path = cache_folder(folder) / "packed.bin"
            os.unlink(path)
            if kind == "fifo":
                os.mkfifo(path)
            else:
                os.symlink("/dev/zero", path)
        return tamper

    def shipped_cache(world, folder):
        """A cache made for other weights, then the folder's weights put back: the cache came
        with the folder (as an archive or a copy would bring it)."""
        data = checkpoint().replaced(encoder__layer__0__output__dense__weight=checkpoint().tensor(
            "encoder.layer.0.output.dense.weight") * 0.5)
        other = world.model(world.root / "other")
        checkpoint().write(world, other / "model.safetensors", data=data)
        world.cli("embed", "-m", other, *TEXTS)
        shutil.rmtree(folder / ".transformer-packed")
        shutil.copytree(other / ".transformer-packed", folder / ".transformer-packed", symlinks=True)
        world.model_dir = folder

    def key_folder_is_link(world, folder):
        """.transformer-packed/KEY is a link to a folder elsewhere holding a cache of other weights."""
        key = cache_folder(folder)
        elsewhere = world.root / "elsewhere"
        shutil.copytree(key, elsewhere)
        shutil.rmtree(key)
        os.symlink(elsewhere, key)

    def leftovers(world, folder):
        packed = folder / ".transformer-packed"
        for name in ("tmp-99999999-0123456789abcdef01234567", "tmp-1-0123456789abcdef01234567"):
            (packed / name).mkdir()
            world.write(packed / name / "packed.bin", b"half written")
        (packed / "0123456789abcdef01234567").mkdir()
        world.write(packed / "0123456789abcdef01234567" / "notes.txt", "mine")

    def users_file_kept(world, result):
        path = world.model_dir / ".transformer-packed" / "0123456789abcdef01234567" / "notes.txt"
        return None if path.is_file() else "a file the cache did not write was deleted"

    def as_file(kind):
        def act(world):
            folder = world.model()
            if kind == "file":
                world.write(folder / ".transformer-packed", "not a folder")
            else:
                mkfifo(folder / ".transformer-packed")
            return world.cli("embed", "-m", folder, *TEXTS)
        return act

    def no_cache_env(world):
        folder = world.model()
        return world.cli("embed", "-m", folder, *TEXTS, env={"TRANSFORMER_PACKED_CACHE": "0"})

    def none_written(world, result):
        return ".transformer-packed was written" if (world.model_dir / ".transformer-packed").exists() else None

    def read_only_folder(world):
        world.give(world.home, world.tmp, world.work)
        folder = world.model()
        return world.cli("embed", "-m", folder, *TEXTS, user="nobody")

    return [
        answer("packed/packed.meta not JSON", after_first_run(in_cache("packed.meta", b"\x00garbage"))),
        answer("packed/packed.meta offsets past the end", after_first_run(meta_lies)),
        answer("packed/packed.bin cut in half", after_first_run(cut_bin)),
        answer("packed/packed.bin changed in place, same size", after_first_run(zero_bin)),
        answer("packed/packed.bin a named pipe", after_first_run(bin_is("fifo"))),
        answer("packed/packed.bin a link to /dev/zero", after_first_run(bin_is("link"))),
        answer("packed/a cache that came with the folder", after_first_run(shipped_cache)),
        answer("packed/a cache folder that is a link elsewhere", after_first_run(key_folder_is_link)),
        answer("packed/leftovers of other runs and a user's file", after_first_run(leftovers),
               all_of(same_vectors(), users_file_kept)),
        answer("packed/.transformer-packed a regular file", as_file("file")),
        answer("packed/.transformer-packed a named pipe", as_file("fifo")),
        answer("packed/TRANSFORMER_PACKED_CACHE=0", no_cache_env, all_of(same_vectors(), none_written)),
        answer("packed/a model folder nobody may write (as nobody)", read_only_folder, timeout=400),
    ]


def sentence_cases():
    def modules(listing):
        return file_is("modules.json", listing)

    def module(kind, path):
        index = ("Transformer", "Pooling", "Normalize").index(kind) if kind in ("Transformer", "Pooling", "Normalize") else 3
        return {"idx": index, "name": str(index), "path": path, "type": f"sentence_transformers.models.{kind}"}

    standard = [module("Transformer", ""), module("Pooling", "1_Pooling"), module("Normalize", "2_Normalize")]

    def pooling(**modes):
        def change(world, folder):
            config = {"word_embedding_dimension": 384, "pooling_mode_cls_token": False,
                      "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                      "pooling_mode_mean_sqrt_len_tokens": False}
            config.update(modes)
            world.write(folder / "1_Pooling" / "config.json", config)
        return change

    def sentence_config(**fields):
        def change(world, folder):
            config = {"max_seq_length": 256, "do_lower_case": False}
            config.update(fields)
            world.write(folder / "sentence_bert_config.json", config)
        return change

    long_text = ("The quick brown fox jumps over the lazy dog. " * 80).strip()
    case_ref = lambda texts=TEXTS: same_vectors(texts, folder="case")  # noqa: E731
    pm = "modules.json"
    return [
        error("sentence/modules.json not JSON", embed_folder(modules("[{")), pm),
        error("sentence/modules.json an object", embed_folder(modules({"0": "Transformer"})), pm),
        error("sentence/modules.json empty list", embed_folder(modules([])), pm, "Transformer"),
        error("sentence/a Dense module", embed_folder(modules(standard[:2] + [module("Dense", "2_Dense")])), pm, "Dense"),
        error("sentence/a module path absolute", embed_folder(modules([module("Transformer", "/etc")] + standard[1:])), pm,
              "/etc"),
        error("sentence/a module path with ..", embed_folder(modules([standard[0], module("Pooling", "../x")])), pm, ".."),
        error("sentence/a module with no path", embed_folder(modules([{"type": "sentence_transformers.models.Transformer"}])),
              pm, "path"),
        error("sentence/a module type a number", embed_folder(modules([dict(standard[0], type=5)])), pm, "type"),
        error("sentence/Pooling before Transformer", embed_folder(modules([standard[1], standard[0]])), pm, "Pooling"),
        error("sentence/Normalize twice", embed_folder(modules(standard + [standard[2]])), pm, "Normalize"),
        error("sentence/modules.json a named pipe", embed_folder(fifo_at(pm)), pm),
        error("sentence/the pooling config missing", embed_folder(file_gone("1_Pooling")), "1_Pooling"),
        error("sentence/the pooling config a named pipe", embed_folder(fifo_at("1_Pooling/config.json")), "1_Pooling"),
        error("sentence/no pooling mode on", embed_folder(pooling()), "1_Pooling", "pooling_mode"),
        error("sentence/a pooling mode as a string", embed_folder(pooling(pooling_mode_mean_tokens="true")), "1_Pooling",
              "pooling_mode_mean_tokens"),
        answer("sentence/CLS pooling", embed_folder(pooling(pooling_mode_cls_token=True)), case_ref()),
        answer("sentence/max pooling", embed_folder(pooling(pooling_mode_max_tokens=True)), case_ref()),
        answer("sentence/mean and max pooling", embed_folder(pooling(pooling_mode_mean_tokens=True,
                                                                     pooling_mode_max_tokens=True)), case_ref()),
        answer("sentence/mean_sqrt_len pooling", embed_folder(pooling(pooling_mode_mean_sqrt_len_tokens=True)), case_ref()),
        either("sentence/last-token pooling", embed_folder(pooling(pooling_mode_lasttoken=True)), "1_Pooling",
               check=case_ref()),
        answer("sentence/no modules.json (a plain Hugging Face folder)", embed_folder(file_gone(pm)), case_ref()),
        answer("sentence/no Normalize module", embed_folder(modules(standard[:2])), case_ref()),
        error("sentence/max_seq_length -1", embed_folder(sentence_config(max_seq_length=-1)), "sentence_bert_config.json",
              "max_seq_length"),
        error("sentence/max_seq_length a string", embed_folder(sentence_config(max_seq_length="256")),
              "sentence_bert_config.json", "max_seq_length"),
        error("sentence/max_seq_length 256.5", embed_folder(sentence_config(max_seq_length=256.5)),
              "sentence_bert_config.json", "max_seq_length"),
        answer("sentence/max_seq_length 16 on a long text", embed_folder(sentence_config(max_seq_length=16),
                                                                        texts=[long_text]), case_ref([long_text])),
        answer("sentence/max_seq_length 100000 (past the position table)",
               embed_folder(sentence_config(max_seq_length=100000))),
        answer("sentence/max_seq_length null", embed_folder(sentence_config(max_seq_length=None), texts=[long_text]),
               case_ref([long_text])),
        error("sentence/do_lower_case yes", embed_folder(sentence_config(do_lower_case="yes")), "sentence_bert_config.json",
              "do_lower_case"),
        answer("sentence/do_lower_case true", embed_folder(sentence_config(do_lower_case=True),
                                                         texts=["ÉCOLE Normale", "HELLO"]), case_ref(["ÉCOLE Normale", "HELLO"])),
        error("sentence/sentence_bert_config.json a list", embed_folder(file_is("sentence_bert_config.json", [256])),
              "sentence_bert_config.json"),
        error("sentence/sentence_bert_config.json a link to /dev/zero",
              embed_folder(link_to("sentence_bert_config.json", "/dev/zero")), "sentence_bert_config.json"),
        error("sentence/tokenizer_config.json a list", embed_folder(steps(file_gone("sentence_bert_config.json"),
                                                                         file_is("tokenizer_config.json", []))),
              "tokenizer_config.json"),
    ]


def tokenizer_cases():
    """Expected as Rust `tokenizers` does: it refuses the file (a clear error) or reads it (the
    same ids)."""
    def tokenize_folder(change, text="Hello world, tokenizers!"):
        def act(world):
            folder = world.model()
            change(world, folder)
            result = world.cli("tokenize", "-m", folder, "--json", text)
            path = folder / "tokenizer.json"
            if os.path.exists(path) and stat.S_ISREG(os.stat(path).st_mode):  # Rust would block on a pipe
                result.extra["expect"] = ERROR  # what Rust refuses, at load or on this text, we must refuse too
                try:
                    from tokenizers import Tokenizer as RustTokenizer

                    RustTokenizer.from_file(str(path)).encode(text)
                    result.extra["expect"] = ANSWER
                except BaseException as error:  # noqa: BLE001  (a Rust panic is a BaseException)
                    if isinstance(error, (KeyboardInterrupt, SystemExit)):
                        raise
            return result
        return act

    def tokenizer_json(edit):
        def change(world, folder):
            world.edit_json(folder / "tokenizer.json", edit)
        return change

    def set_path(*path_and_value):
        *path, value = path_and_value

        def edit(data):
            node = data
            for key in path[:-1]:
                node = node[key]
            if value is DELETE:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        return tokenizer_json(edit)

    def unk_gone(data):
        del data["model"]["vocab"]["[UNK]"]

    def added_out_of_range(data):
        data["added_tokens"].append({"id": 99999, "content": "<extra>", "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": True})

    def vocab_txt_only(world, folder):
        os.unlink(folder / "tokenizer.json")

    def regex_case(world):
        folder = world.model()
        world.edit_json(folder / "tokenizer.json", lambda data: data.update(normalizer={
            "type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "x"}))
        return world.cli("tokenize", "-m", folder, "--json", "a" * 29 + "!")

    def long_api(world):
        world.stored()
        return world.api(f"""
            import time
            from transformer import Tokenizer
            tokenizer = Tokenizer.from_pretrained({MODEL!r})
            started = time.monotonic()
            batch = tokenizer(["word " * 2_000_000], truncation=True, max_length=256)
            seconds = time.monotonic() - started
            assert len(batch["input_ids"][0]) == 256, len(batch["input_ids"][0])
            if seconds > 5:
                raise RuntimeError(f"a 10 MB text cut at 256 tokens took {{seconds:.1f}} s")
            result = None
            """)

    tj = "tokenizer.json"
    return [
        Case("tokenizer/tokenizer.json not JSON", ERROR, tokenize_folder(file_is(tj, "{\"model\": ")), names=(tj,)),
        Case("tokenizer/tokenizer.json empty object", ERROR, tokenize_folder(file_is(tj, {})), names=(tj,)),
        Case("tokenizer/tokenizer.json not UTF-8", ERROR, tokenize_folder(file_is(tj, b'{"model": "\xff"}')), names=(tj,)),
        # Not a regular file: refused, or passed over for vocab.txt (the same vocabulary).
        Case("tokenizer/tokenizer.json a named pipe", EITHER, tokenize_folder(fifo_at(tj)), names=(tj,),
             check=same_tokens("Hello world, tokenizers!"), timeout=30),
        Case("tokenizer/tokenizer.json a link to /dev/urandom", EITHER, tokenize_folder(link_to(tj, "/dev/urandom")),
             names=(tj,), check=same_tokens("Hello world, tokenizers!"), timeout=60),
        Case("tokenizer/model type unknown", ERROR, tokenize_folder(set_path("model", "type", "Quantum")), names=(tj, "type")),
        Case("tokenizer/vocab without the unk token", ERROR, tokenize_folder(tokenizer_json(unk_gone)), names=(tj, "[UNK]")),
        Case("tokenizer/an empty vocab", ERROR, tokenize_folder(set_path("model", "vocab", {})), names=(tj, "vocab")),
        Case("tokenizer/vocab a list", ERROR, tokenize_folder(set_path("model", "vocab", ["a", "b"])), names=(tj, "vocab")),
        Case("tokenizer/normalizer type unknown", ERROR, tokenize_folder(set_path("normalizer", {"type": "Nope"})),
             names=(tj, "normalizer")),
        Case("tokenizer/a Split pre-tokenizer with a bad regex", ERROR, tokenize_folder(set_path("pre_tokenizer", {
            "type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated", "invert": False})),
            names=(tj, "(unclosed")),
        Case("tokenizer/post-processor naming an unknown token", ERROR, tokenize_folder(set_path(
            "post_processor", "cls", ["[NOPE]", 101])), names=(tj,)),
        Case("tokenizer/truncation max_length negative", ERROR, tokenize_folder(set_path("truncation", {
            "direction": "Right", "max_length": -5, "strategy": "LongestFirst", "stride": 0})), names=(tj, "max_length")),
        Case("tokenizer/an added token past the vocab", ERROR, tokenize_folder(tokenizer_json(added_out_of_range)),
             names=(tj,)),
        Case("tokenizer/version missing", ERROR, tokenize_folder(set_path("version", DELETE)), names=(tj,)),
        # Rust loads the pattern and panics on this text (Oniguruma's retry limit): refused at load.
        Case("tokenizer/Replace regex (a+)+$ on 29 a's", ERROR, regex_case, names=(tj, "(a+)+$"), timeout=15),
        answer("tokenizer/vocab.txt only (no tokenizer.json)", embed_folder(vocab_txt_only), same_vectors(folder="case")),
        error("tokenizer/vocab.txt only, empty", embed_folder(steps(vocab_txt_only, file_is("vocab.txt", b""))),
              "vocab.txt"),
        error("tokenizer/vocab.txt only, binary", embed_folder(steps(vocab_txt_only, file_is("vocab.txt", os.urandom(4096)))),
              "vocab.txt"),
        Case("tokenizer/a 10 MB text cut at 256 tokens within 5 s", ANSWER, long_api, check=lambda w, r: None, timeout=120),
    ]


def hf_cache(world, repo=REPO_ID, revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf", main=None, files=None):
    """The Hugging Face hub cache's layout for `repo`: blobs named by sha256, a snapshot of
    symbolic links to them, refs/main."""
    base = world.hf / ("models--" + repo.replace("/", "--"))
    snapshot = base / "snapshots" / revision
    for path in sorted(world.probe.pristine.rglob("*")):
        relative = path.relative_to(world.probe.pristine)
        if path.is_dir() or relative.name.startswith(".transformer") or (files is not None and str(relative) not in files):
            continue
        blob = base / "blobs" / hashlib.sha256(str(relative).encode()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            os.link(path, blob)
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snapshot / relative).parent), snapshot / relative)
    snapshot.mkdir(parents=True, exist_ok=True)
    world.write(base / "refs" / "main", main if main is not None else revision)
    world.model_dir = snapshot
    return snapshot


def store_cases():
    def named(name, *args, env=None, before=None, store=True):
        def act(world):
            if store:
                world.stored()
            if before is not None:
                before(world)
            return world.cli("embed", "-m", name, *args, *TEXTS, env=env)
        return act

    def shadow_folder(world):
        (world.work / MODEL).mkdir()

    def shadow_file(world):
        world.write(world.work / MODEL, "hello")

    def weights_as(value):
        def act(world):
            world.stored()
            return world.cli("embed", *TEXTS, env={"TRANSFORMER_WEIGHTS": value(world) if callable(value) else value})
        return act

    def weights_is_file(world):
        world.write(world.root / "weights-file", "x")
        return world.cli("embed", *TEXTS, env={"TRANSFORMER_WEIGHTS": str(world.root / "weights-file")})

    def stamp(data):
        def before(world):
            world.write(world.weights / MODEL / ".transformer-download.json", data)
        return before

    def linked_store(world):
        folder = world.model(world.root / "disk2" / MODEL)
        symlink(folder, world.weights / MODEL)
        return world.cli("embed", *TEXTS)

    def broken_store(world):
        os.unlink(world.weights / MODEL / "model.safetensors")

    def edited_config(world):
        world.edit_json(world.weights / MODEL / "config.json", lambda c: c.update(hidden_act="gelu_new"))
        world.model_dir = world.weights / MODEL

    def in_hf_cache(main=None, files=None, store=False, name=MODEL):
        def act(world):
            hf_cache(world, main=main, files=files)
            return world.cli("embed", "-m", name, *TEXTS)
        return act

    def hf_ref_outside(world):
        other = world.model(world.root / "other")
        data = checkpoint().replaced(encoder__layer__0__output__dense__weight=np.zeros((384, 1536), np.float32))
        checkpoint().write(world, other / "model.safetensors", data=data)
        hf_cache(world, main=str(other))
        return world.cli("embed", "-m", REPO_ID, *TEXTS)

    def hf_missing_snapshot(world):
        hf_cache(world, main="0" * 40)
        return world.cli("embed", "-m", REPO_ID, *TEXTS)

    def two_orgs(world):
        hf_cache(world, repo="alice/mini-model")
        hf_cache(world, repo="bob/mini-model")
        return world.cli("embed", "-m", "mini-model", *TEXTS)

    def hf_empty_snapshot(world):
        snapshot = world.hf / "models--alice--mini-model" / "snapshots" / ("1" * 40)
        snapshot.mkdir(parents=True)
        return world.cli("embed", "-m", "alice/mini-model", *TEXTS)

    def hf_cache_is_file(world):
        world.write(world.root / "hf-file", "x")
        return world.cli("embed", "-m", "alice/mini-model", *TEXTS, env={"HF_HUB_CACHE": str(world.root / "hf-file")})

    offline = {"TRANSFORMER_OFFLINE": "1"}
    return [
        answer("store/the model's repo id", named(REPO_ID)),
        answer("store/the name in capitals", named(MODEL.upper())),
        error("store/an unknown name", named("no-such-model"), "no-such-model"),
        error("store/an unknown ORG/NAME", named("acme/no-such-model"), "acme/no-such-model"),
        either("store/the name with a trailing slash", named(MODEL + "/"), MODEL),
        error("store/an empty folder of the same name in the working directory", named(MODEL, before=shadow_folder),
              MODEL, "config.json"),
        error("store/a file of the same name in the working directory", named(MODEL, before=shadow_file), MODEL),
        answer("store/a relative path into the store", named(f"../weights/{MODEL}")),
        answer("store/TRANSFORMER_WEIGHTS relative", weights_as("../weights")),
        answer("store/TRANSFORMER_WEIGHTS with ~", weights_as(lambda w: "~/../weights")),
        error("store/TRANSFORMER_WEIGHTS a file", weights_is_file, "weights-file", "TRANSFORMER_WEIGHTS", notes_ok=True),
        error("store/TRANSFORMER_WEIGHTS missing, offline", lambda w: w.cli("embed", *TEXTS, env=dict(
            offline, TRANSFORMER_WEIGHTS=str(w.root / "nowhere"))), MODEL, "transformer download"),
        error("store/no model, TRANSFORMER_OFFLINE=1", named(MODEL, store=False, env=offline), MODEL, "transformer download"),
        error("store/no model, no network", named(MODEL, store=False), MODEL, ("download", "unreachable"), notes_ok=True),
        answer("store/a garbage stamp", named(MODEL, before=stamp(b"\x00\xff garbage"))),
        answer("store/a stamp that is a list", named(MODEL, before=stamp([1, 2]))),
        either("store/a stamp naming another repo", named(REPO_ID, before=stamp({"repo": "evilorg/all-MiniLM-L6-v2"})),
               "evilorg"),
        answer("store/the stored folder a link elsewhere", linked_store),
        error("store/a stored folder without its weights, offline", named(MODEL, before=broken_store, env=offline),
              "model.safetensors"),
        answer("store/an edited config.json in the store", named(MODEL, before=edited_config), same_vectors(folder="case")),
        answer("store/the Hugging Face cache by repo id", in_hf_cache(name=REPO_ID)),
        answer("store/the Hugging Face cache by bare name", in_hf_cache()),
        answer("store/the Hugging Face cache, refs/main to a missing snapshot", hf_missing_snapshot),
        answer("store/the Hugging Face cache, refs/main an absolute path elsewhere", hf_ref_outside),
        error("store/the Hugging Face cache, one name under two orgs", two_orgs, "alice/mini-model", "bob/mini-model"),
        error("store/the Hugging Face cache, an empty snapshot", hf_empty_snapshot, "alice/mini-model"),
        error("store/HF_HUB_CACHE a file", hf_cache_is_file, "alice/mini-model"),
    ]


def download_cases():
    def download(*args, mode=None, before=None, user="root", env=None):
        def act(world):
            if before is not None:
                before(world)
            environment = dict(env or {})
            if mode is not None:
                environment["HF_ENDPOINT"] = world.probe.hub.endpoint(mode)
            return world.cli("download", *args, env=environment, user=user)
        return act

    def present(world):
        world.stored()

    def edited(world):
        folder = world.stored()
        world.write(folder / "tokenizer_config.json",
                    (world.probe.pristine / "tokenizer_config.json").read_text().replace("512", "128"))

    def partial_garbage(world):
        partial = world.weights / f".{MODEL}.partial"
        partial.mkdir()
        world.write(partial / "model.safetensors", b"junk" * 1000)
        world.write(partial / "config.json.tmp", b"{")

    def lock_is_folder(world):
        (world.weights / f".{MODEL}.lock").mkdir()

    def kept_edit(world, result):
        kept = list(world.weights.glob(f".{MODEL}.replaced-*/tokenizer_config.json"))
        return None if kept else "the edited file was not kept"

    def sound_then(check):
        return all_of(store_is_sound, check)

    def store_untouched(world, result):
        return store_is_sound(world)

    def read_only_weights(world):
        world.give(world.home, world.tmp, world.work)
        return world.cli("download", MODEL, user="nobody", env={"HF_ENDPOINT": world.probe.hub.endpoint()})

    def weights_file(world):
        world.write(world.root / "weights-file", "x")
        return world.cli("download", MODEL, env={"TRANSFORMER_WEIGHTS": str(world.root / "weights-file")})

    def auto_download(world):
        return world.cli("embed", *TEXTS, env={"HF_ENDPOINT": world.probe.hub.endpoint()})

    options = dict(notes_ok=True)
    return [
        answer("download/from the hub into an empty store", download(MODEL, mode="ok"), sound_then(nothing_left(
            ".*.partial", where="weights"))),
        error("download/the hub serves other bytes", download(MODEL, mode="wrong"), "sha256", **options),
        error("download/the hub answers 404", download(MODEL, mode="404"), "404", **options),
        error("download/the hub answers 500", download(MODEL, mode="500"), "500", **options),
        error("download/the hub never answers", download(MODEL, mode="hang"), MODEL, timeout=120, **options),
        error("download/the connection drops half way", download(MODEL, mode="short"), MODEL, **options),
        error("download/no network", download(MODEL), ("unreachable", "could not download"), **options),
        answer("download/a present model, no network", download(MODEL, before=present), store_untouched),
        answer("download/an edited file, the hub reachable", download(MODEL, mode="ok", before=edited),
               sound_then(kept_edit)),
        error("download/--force, no network", download(MODEL, "--force", before=present), MODEL, **options,
              after=store_untouched),
        answer("download/a half-written .partial left before", download(MODEL, mode="ok", before=partial_garbage),
               store_is_sound),
        either("download/the lock file a folder", download(MODEL, mode="ok", before=lock_is_folder), ".lock",
               check=store_is_sound),
        error("download/a weights folder nobody may write (as nobody)", read_only_weights, "weights", timeout=60),
        error("download/TRANSFORMER_WEIGHTS a file", weights_file, "weights-file"),
        error("download/an unknown name", download("no-such-model"), "no-such-model"),
        error("download/no name", download(), "download"),
        answer("download/--list", download("--list"), quietly_answered),
        answer("download/on first use, through embed", auto_download),
    ]


def encode(call, texts_ref=TEXTS, expect=ANSWER, names=(), check=None, before=None, **options):
    """A case: `model = SentenceEncoder.from_pretrained(MODEL)`, then `result = model.CALL`."""
    code = f"from transformer import SentenceEncoder\nmodel = SentenceEncoder.from_pretrained(MODEL)\nresult = model.{call}\n"
    return dict(act=api_call(code, before=before), names=names,
                check=check or (same_vectors(texts_ref) if expect != ERROR else None), **options)


def shape_is(*shape):
    def check(world, result):
        got = None if result.vectors is None else result.vectors.shape
        return None if got == shape else f"shape {got}, expected {shape}"
    return check


def input_cases():
    ten_mb = "The quick brown fox jumps over the lazy dog. " * 233_000  # ~10 MB
    prefix = ten_mb[:20_000]  # what truncation at 256 tokens keeps comes from the first few KB

    def api(name, expect, call, *names, ref=TEXTS, check=None, **options):
        return Case(name, expect, **encode(call, ref, expect, names, check, **options))

    def tokenizer(name, call, *names, expect=ERROR):
        code = f"from transformer import Tokenizer\ntokenizer = Tokenizer.from_pretrained(MODEL)\nresult = tokenizer.{call}\n"
        return Case(name, expect, api_call(code), names=names, check=lambda w, r: None)

    def encoder(name, call, *names, expect=ERROR, check=None):
        code = ("import numpy as np\nfrom transformer import Encoder\nmodel = Encoder.from_pretrained(MODEL)\n"
                f"result = model({call}).last_hidden_state\n")
        return Case(name, expect, api_call(code), names=names, check=check)

    def threads(value, *names, expect=ERROR):
        code = f"import transformer\nresult = transformer.set_num_threads({value})\n"
        return Case(f"input/set_num_threads({value})", expect, api_call(code, store=False), names=names,
                    check=lambda w, r: None)

    def loader(call, *names, expect=ERROR, check=None):
        code = f"from pathlib import Path\nfrom transformer import SentenceEncoder\nresult = SentenceEncoder.from_pretrained({call}).encode(TEXTS)\n"
        return Case(f"input/from_pretrained({call})", expect, api_call(code), names=names,
                    check=check or same_vectors())

    def from_file(data, *args, texts=None, ref=None, expect=ANSWER, names=()):
        def act(world):
            world.stored()
            world.write(world.work / "texts.txt", data)
            return world.cli("embed", "--file", "texts.txt", *args)
        return dict(act=act, names=names, check=same_vectors(ref or texts, source=texts) if expect == ANSWER else None)

    def from_stdin(data, texts=None, ref=None, expect=ANSWER, names=()):
        return dict(act=embed_stored("--file", "-", texts=(), stdin=data), names=names,
                    check=same_vectors(ref or texts, source=texts) if expect == ANSWER else None)

    def file_kind(kind):
        def act(world):
            world.stored()
            path = world.work / "texts.txt"
            if kind == "directory":
                path.mkdir()
            elif kind == "urandom":
                symlink("/dev/urandom", path)
            elif kind == "fifo":
                mkfifo(path)

                def feed():
                    with open(path, "wb") as pipe:
                        pipe.write("\n".join(TEXTS).encode() + b"\n")
                threading.Thread(target=feed, daemon=True).start()
            return world.cli("embed", "--file", "texts.txt")
        return act

    def unreadable_file(world):
        world.stored()
        world.give(world.home, world.tmp, world.work)
        world.write(world.work / "texts.txt", "\n".join(TEXTS))
        os.chmod(world.work / "texts.txt", 0o600)
        os.chown(world.work / "texts.txt", 0, 0)
        return world.cli("embed", "--file", "texts.txt", user="nobody")

    lines2000 = [f"sentence number {i} about {'cats' if i % 2 else 'markets'}" for i in range(2000)]
    blank_rows = ["first", "", "third", "   ", "fifth"]
    texts_file = "texts.txt"
    return [
        api("input/encode('')", ANSWER, "encode('')", ref=[""]),
        api("input/encode([])", ANSWER, "encode([])", check=shape_is(0, 384)),
        api("input/encode([''])", ANSWER, "encode([''])", ref=[""]),
        api("input/encode(b'hi')", ERROR, "encode(b'hi')", "bytes"),
        api("input/encode([b'hi'])", ERROR, "encode([b'hi'])", "texts[0]", "bytes"),
        api("input/encode(None)", ERROR, "encode(None)", "None"),
        api("input/encode([None])", ERROR, "encode([None])", "texts[0]", "None"),
        api("input/encode(123)", ERROR, "encode(123)", "int"),
        api("input/encode(['a', 3])", ERROR, "encode(['a', 3])", "texts[1]", "int"),
        api("input/encode({'a'})", ERROR, "encode({'a'})", "set"),
        api("input/encode({'a': 1})", ERROR, "encode({'a': 1})", "dict"),
        api("input/encode(a NumPy array of str)", ANSWER, "encode(__import__('numpy').array(TEXTS))"),
        api("input/encode(a tuple)", ANSWER, "encode(tuple(TEXTS))"),
        api("input/encode(a generator)", ANSWER, "encode(t for t in TEXTS)"),
        api("input/encode(2000 texts)", ANSWER, f"encode({lines2000!r})", ref=lines2000, timeout=300),
        api("input/encode(control characters)", ANSWER, "encode('\\x00\\x01\\x02 bin\\x7f\\uffff\\ufeff')",
            ref=["\x00\x01\x02 bin\x7f\uffff\ufeff"]),
        api("input/encode(a lone surrogate)", ERROR, "encode('ab\\ud800cd')", "texts[0]", "surrogate"),
        api("input/encode(a 10 MB text)", ANSWER, f"encode(['The quick brown fox jumps over the lazy dog. ' * 233_000])",
            ref=[prefix], timeout=120),
        api("input/encode(batch_size=0)", ERROR, "encode(TEXTS, batch_size=0)", "batch_size"),
        api("input/encode(batch_size=-1)", ERROR, "encode(TEXTS, batch_size=-1)", "batch_size"),
        api("input/encode(batch_size='32')", ERROR, "encode(TEXTS, batch_size='32')", "batch_size"),
        api("input/encode(batch_size=1.5)", ERROR, "encode(TEXTS, batch_size=1.5)", "batch_size"),
        api("input/encode(batch_size=None)", ERROR, "encode(TEXTS, batch_size=None)", "batch_size"),
        api("input/encode(long='chunks')", ERROR, "encode(TEXTS, long='chunks')", "long"),
        api("input/encode(long='chunk', stride=-1)", ERROR, "encode(TEXTS, long='chunk', stride=-1)", "stride"),
        api("input/encode(long='chunk', stride=10**6)", ERROR, "encode(TEXTS, long='chunk', stride=10**6)", "stride"),
        api("input/encode(long='chunk', stride='8')", ERROR, "encode(TEXTS, long='chunk', stride='8')", "stride"),
        api("input/encode(long='chunk') of short texts", ANSWER, "encode(TEXTS, long='chunk')"),
        api("input/encode(show_progress_bar=True)", ANSWER, "encode(TEXTS, show_progress_bar=True)"),
        api("input/encode(normalize_embeddings=True)", ANSWER, "encode(TEXTS, normalize_embeddings=True)"),
        api("input/encode(normalize=False)", ANSWER, "encode(TEXTS, normalize=False)",
            check=same_vectors(normalize=False)),
        Case("input/encode(normalize='yes')", EITHER, **encode("encode(TEXTS, normalize='yes')", TEXTS, EITHER,
                                                               ("normalize",))),
        api("input/encode(convert_to_tensor=True)", ERROR, "encode(TEXTS, convert_to_tensor=True)", "convert_to_tensor"),
        api("input/encode(device='cuda')", ERROR, "encode(TEXTS, device='cuda')", "device"),
        api("input/encode(prompt_name='query')", ERROR, "encode(TEXTS, prompt_name='query')", "prompt_name"),
        api("input/encode(precision='int8')", ERROR, "encode(TEXTS, precision='int8')", "precision"),
        Case("input/encode of a pickled and unpickled model", ANSWER, api_call(
            "import pickle\nfrom transformer import SentenceEncoder\n"
            "model = pickle.loads(pickle.dumps(SentenceEncoder.from_pretrained(MODEL)))\nresult = model.encode(TEXTS)\n"),
            check=same_vectors()),
        encoder("input/Encoder: an id past the vocabulary", "[[101, 99999, 102]]", "input_ids", "99999"),
        encoder("input/Encoder: a negative id", "[[101, -1, 102]]", "input_ids", "-1"),
        encoder("input/Encoder: an empty sequence", "[[]]", "input_ids", ("empty", "length 0")),
        encoder("input/Encoder: a string", "'hello'", "input_ids", "str"),
        encoder("input/Encoder: None", "None", "input_ids", "None"),
        encoder("input/Encoder: float ids", "[[101.5, 102.0]]", "input_ids"),
        encoder("input/Encoder: ragged rows", "[[101, 7592, 102], [101, 102]]", "input_ids"),
        encoder("input/Encoder: 600 tokens", "np.full((1, 600), 1000)", ("600", "sequence length")),
        encoder("input/Encoder: attention_mask of 2", "[[101, 102]], attention_mask=[[1, 2]]", "attention_mask"),
        encoder("input/Encoder: attention_mask of another shape", "[[101, 102]], attention_mask=[[1, 1, 1]]",
                "attention_mask"),
        encoder("input/Encoder: token type 5", "[[101, 102]], token_type_ids=[[0, 5]]", "token_type_ids"),
        encoder("input/Encoder: ids as strings", "[['101', '102']]", "input_ids", "str"),
        tokenizer("input/Tokenizer.encode(None)", "encode(None)", "None"),
        tokenizer("input/Tokenizer.encode(b'hi')", "encode(b'hi')", "bytes"),
        tokenizer("input/Tokenizer.encode(123)", "encode(123)", "int"),
        tokenizer("input/Tokenizer(texts, max_length=-1)", "__call__(['hi'], truncation=True, max_length=-1)", "max_length"),
        tokenizer("input/Tokenizer(texts, padding='maybe')", "__call__(['hi'], padding='maybe')", "padding"),
        tokenizer("input/Tokenizer.decode('abc')", "decode('abc')", "ids"),
        tokenizer("input/Tokenizer.decode([10**12])", "decode([10**12])", "1000000000000", expect=EITHER),
        threads(0, "set_num_threads"),
        threads(-1, "set_num_threads"),
        threads(64, "set_num_threads", "64"),
        threads("'2'", "set_num_threads", "str"),
        threads(2.0, "set_num_threads", "float"),
        threads(True, "set_num_threads", "bool"),
        threads(None, "set_num_threads", "None"),
        threads(1, expect=ANSWER),
        loader("None", "None"),
        loader("123", "123"),
        loader("''", "''"),
        loader("b'all-MiniLM-L6-v2'", "bytes", expect=EITHER),
        loader("Path(STORED)", expect=ANSWER),
        loader("MODEL, backend='torch'", "backend", "torch"),
        loader("MODEL, backend='numpy'", expect=ANSWER),
        Case("input/--file empty", ERROR, **from_file(b"", expect=ERROR, names=(texts_file,))),
        Case("input/--file blank lines only", ERROR, **from_file(b"\n  \n\n", expect=ERROR, names=(texts_file,))),
        Case("input/--file invalid UTF-8 on line 2", ERROR, **from_file(b"fine\nbad \xff here\n", expect=ERROR,
                                                                        names=(texts_file, "line 2"))),
        Case("input/--file UTF-16", ERROR, **from_file("hello\nworld\n".encode("utf-16"), expect=ERROR,
                                                       names=(texts_file, "UTF-8"))),
        Case("input/--file with a byte-order mark", ANSWER, **from_file(b"\xef\xbb\xbf" + "\n".join(TEXTS).encode(),
                                                                       texts=TEXTS)),
        Case("input/--file with CRLF", ANSWER, **from_file("\r\n".join(TEXTS).encode() + b"\r\n", texts=TEXTS)),
        Case("input/--file with CR only", ANSWER, **from_file("\r".join(TEXTS).encode(), texts=TEXTS)),
        Case("input/--file with NUL bytes", ANSWER, **from_file(b"a\x00b\nc", texts=["a\x00b", "c"])),
        Case("input/--file a 10 MB line", ANSWER, **from_file(ten_mb.encode(), texts=[ten_mb], ref=[prefix]), timeout=120),
        Case("input/--file 2000 lines", ANSWER, **from_file("\n".join(lines2000).encode(), texts=lines2000), timeout=300),
        Case("input/--file blank lines are rows", ANSWER, **from_file("\n".join(blank_rows).encode(), texts=blank_rows)),
        error("input/--file /dev/urandom", file_kind("urandom"), texts_file),
        error("input/--file a directory", file_kind("directory"), texts_file),
        either("input/--file a named pipe (a process substitution)", file_kind("fifo"), texts_file),
        error("input/--file missing", embed_stored("--file", "missing.txt", texts=()), "missing.txt"),
        error("input/--file nobody may read (as nobody)", unreadable_file, texts_file, timeout=400),
        Case("input/stdin binary garbage", ERROR, **from_stdin(bytes(range(256)) * 4, expect=ERROR, names=("stdin", "line"))),
        Case("input/stdin empty", ERROR, **from_stdin(b"", expect=ERROR, names=("stdin",))),
        Case("input/stdin with a byte-order mark", ANSWER, **from_stdin(b"\xef\xbb\xbf" + TEXTS[0].encode(), texts=TEXTS[:1])),
        answer("input/an empty text argument", embed_stored(texts=("",)), same_vectors([""])),
        error("input/a text argument that is not UTF-8", embed_stored(texts=("fine", b"caf\xe9")), "text argument 2",
              "UTF-8"),
        answer("input/a text that starts with a dash, after --", embed_stored("--", texts=("-5 degrees",)),
               same_vectors(["-5 degrees"])),
        error("input/similarity of one text", lambda w: (w.stored(), w.cli("similarity", "one"))[1], "two"),
        answer("input/similarity of two equal texts", lambda w: (w.stored(), w.cli("similarity", "--json", "same", "same"))[1],
               similarity_matches(["same", "same"])),
        answer("input/tokenize an empty text", lambda w: (w.stored(), w.cli("tokenize", "--json", ""))[1], same_tokens("")),
        answer("input/tokenize emoji and combining marks",
               lambda w: (w.stored(), w.cli("tokenize", "--json", "cafe\u0301 👩‍👩‍👧 ﷽"))[1],
               same_tokens("cafe\u0301 👩‍👩‍👧 ﷽")),
    ]


CORPUS = ["The cat sleeps on the sofa all afternoon.", "Stock markets fell sharply after the announcement.", "",
          "Add two eggs and a cup of flour, then stir.", "The football match ended in a draw.",
          "Our flight to Lisbon was cancelled because of the storm."]
QUERY = "stock prices dropped"


def search(*args, corpus=CORPUS, before=None, env=None, user="root", raw=None, store=True):
    """Act: the model in the store, corpus.txt in the working directory, then `transformer search`."""
    def act(world):
        if store:
            world.stored()
        world.write(world.work / "corpus.txt", raw if raw is not None else "\n".join(corpus) + "\n")
        if before is not None:
            before(world)
        return world.cli("search", "--corpus", "corpus.txt", *args, env=env, user=user)
    return act


def output_cases():
    def out(*args, before=None, user="root", stdout=None, texts=TEXTS):
        def act(world):
            world.stored()
            if before is not None:
                before(world)
            if user == "nobody":
                world.give(world.home, world.tmp)
            return world.cli("embed", *args, *texts, user=user, stdout=stdout)
        return act

    def read_only_dir(world):
        (world.work / "ro").mkdir()

    def existing(world):
        world.write(world.work / "out.npy", b"old contents")

    def read_only_file(world):
        world.give(world.work)
        world.write(world.work / "out.npy", b"keep me")
        os.chown(world.work / "out.npy", NOBODY, NOBODY)
        os.chmod(world.work / "out.npy", 0o444)

    def kept(world, result):
        data = (world.work / "out.npy").read_bytes()
        return None if data == b"keep me" else "a read-only output file was replaced"

    def linked_output(world):
        (world.root / "results").mkdir()
        world.write(world.root / "results" / "run-1.npy", b"old")
        symlink(world.root / "results" / "run-1.npy", world.work / "latest.npy")

    def through_link(world, result):
        target = world.root / "results" / "run-1.npy"
        if not (world.work / "latest.npy").is_symlink():
            return "the link latest.npy was replaced by a file (its target run-1.npy kept the old data)"
        result.vectors = np.load(target)
        return same_vectors()(world, result)

    def jsonl_file(world, result):
        path = world.work / "out.jsonl"
        if not path.is_file():
            return "out.jsonl was not written"
        result.stdout = path.read_bytes()
        return same_vectors()(world, result)

    def head_ok(world, result):
        first = result.out.splitlines()[:1]
        return None if first and json.loads(first[0])["text"] == TEXTS[0] else f"first line {first!r}"

    def corrupt_cache(world):
        world.cli("search", "--corpus", "corpus.txt", QUERY)
        for path in (world.weights / ".search-cache").glob("*.npz"):
            world.write(path, b"PK\x03\x04 not a zip")

    def pickled_cache(world):
        world.cli("search", "--corpus", "corpus.txt", QUERY)
        for path in (world.weights / ".search-cache").glob("*.npz"):
            with open(path, "wb") as file:
                np.savez(file, embeddings=np.array([_Exec(payload_code(world))], dtype=object),
                         made_from=np.frombuffer(b"{}", np.uint8), embeddings_sha256=np.frombuffer(b"0", np.uint8))

    def cache_dir_file(world):
        world.write(world.root / "cache-file", "x")

    def read_only_cache(world):
        (world.weights / ".search-cache").mkdir()

    matches = search_matches(CORPUS, QUERY)
    return [
        error("output/-o into a missing folder", out("-o", "missing/out.npy"), "missing"),
        error("output/-o into a folder nobody may write (as nobody)", out("-o", "ro/out.npy", before=read_only_dir,
                                                                          user="nobody"), "ro", timeout=400),
        answer("output/-o over an existing file", out("-o", "out.npy", before=existing), npy_file("out.npy")),
        error("output/-o over a read-only file (as nobody)", out("-o", "out.npy", before=read_only_file, user="nobody"),
              "out.npy", after=kept, timeout=400),
        error("output/-o a directory", out("-o", "."), "--output"),
        error("output/-o a .txt name", out("-o", "out.txt"), "--output", "out.txt"),
        error("output/-o ''", out("-o", ""), "--output"),
        answer("output/-o x.npy", out("-o", "x.npy"), npy_file("x.npy")),
        answer("output/-o x.jsonl", out("-o", "out.jsonl"), jsonl_file),
        answer("output/-o a link to a file elsewhere", out("-o", "latest.npy", before=linked_output), through_link),
        error("output/stdout closed", out(stdout="closed"), "stdout"),
        error("output/stdout /dev/full", out(stdout="full"), ("No space", "stdout")),
        answer("output/stdout into | head -1", out(stdout="head", texts=TEXTS * 200), head_ok),
        answer("output/search", search(QUERY, "-k", "3"), matches),
        answer("output/search -k 1000", search(QUERY, "-k", "1000"), search_matches(CORPUS, QUERY, k=5)),
        answer("output/search an empty query", search(""), search_matches(CORPUS, "", k=5)),
        answer("output/search a corpus with CRLF and a BOM", search(QUERY, "-k", "3", raw="\ufeff" + "\r\n".join(CORPUS)),
               matches),
        error("output/search a binary corpus", search(QUERY, raw=bytes(range(256)) * 8), "corpus.txt", "line"),
        error("output/search an empty corpus", search(QUERY, raw=b""), "corpus.txt"),
        answer("output/search with TRANSFORMER_CACHE a file", search(QUERY, "-k", "3", before=cache_dir_file,
                                                                     env={"TRANSFORMER_CACHE": "../cache-file"}), matches),
        answer("output/search with a cache folder nobody may write (as nobody)",
               search(QUERY, "-k", "3", before=lambda w: (read_only_cache(w), w.give(w.home, w.tmp)), user="nobody"),
               matches, timeout=400),
        error("output/search a corrupt cache file", search(QUERY, before=corrupt_cache), ".search-cache", "--rebuild"),
        answer("output/search --rebuild a corrupt cache", search(QUERY, "-k", "3", "--rebuild", before=corrupt_cache),
               matches),
        either("output/search a cache holding a pickle", search(QUERY, "-k", "3", before=pickled_cache), ".search-cache",
               check=matches),
        either("output/search --cache-dir ''", search(QUERY, "-k", "3", "--cache-dir", ""), "--cache-dir", check=matches),
    ]


def argument_cases():
    def embed(*args):
        return embed_stored(*args)

    def in_search(*args):
        return search(QUERY, *args)

    def inspect_broken(world):
        folder = world.model()
        world.write(folder / "config.json", "{")
        return world.cli("inspect", folder)

    cases = []
    for value in ("0", "-1", "abc", "1.5", ""):
        cases.append(error(f"argument/--threads {value!r}", embed("--threads", value), "--threads"))
    for value in ("0", "-5", "abc", ""):
        cases.append(error(f"argument/--batch-size {value!r}", embed("--batch-size", value), "--batch-size"))
    for value in ("0", "-1", "abc"):
        cases.append(error(f"argument/search --top-k {value!r}", in_search("--top-k", value), "--top-k"))
    for value in ("torch", "NUMBA", ""):
        cases.append(error(f"argument/--backend {value!r}", embed("--backend", value), "--backend"))
    cases += [
        answer("argument/--threads 64 (more than the cores)", embed("--threads", "64")),
        answer("argument/--threads 10**20", embed("--threads", "1" + "0" * 20)),
        answer("argument/--threads 1", embed("--threads", "1")),
        answer("argument/--batch-size 1", embed("--batch-size", "1")),
        answer("argument/--batch-size 100000", embed("--batch-size", "100000")),
        answer("argument/--backend numpy", embed("--backend", "numpy")),
        error("argument/--long chunks", embed("--long", "chunks"), "--long"),
        answer("argument/--long chunk", embed("--long", "chunk")),
        answer("argument/--no-normalize", embed("--no-normalize"), same_vectors(normalize=False)),
        error("argument/--model ''", embed("--model", ""), "model"),
        error("argument/--model ' '", embed("--model", " "), "model"),
        error("argument/--model a URL", embed("--model", "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2"),
              "https://huggingface.co"),
        error("argument/an unknown flag", embed("--fast"), "--fast"),
        error("argument/--file ''", embed_stored("--file", "", texts=()), "--file"),
        error("argument/--file and texts", embed_stored("--file", "x.txt"), "--file"),
        error("argument/search --corpus ''", lambda w: (w.stored(), w.cli("search", "--corpus", "", QUERY))[1], "corpus"),
        error("argument/search without --corpus", lambda w: (w.stored(), w.cli("search", QUERY))[1], "--corpus"),
        error("argument/tokenize -m ''", lambda w: w.cli("tokenize", "-m", "", "hi"), "model"),
        error("argument/inspect a missing model", lambda w: w.cli("inspect", "./nowhere"), "nowhere"),
        answer("argument/inspect a broken folder", inspect_broken, quietly_answered),
        error("argument/download ''", lambda w: w.cli("download", ""), "''"),
        answer("argument/--version", lambda w: w.cli("--version"), quietly_answered),
        error("argument/an unknown command", lambda w: w.cli("embedd", "hi"), "embedd"),
    ]
    return cases


def environment_cases():
    def with_env(env, *args, texts=TEXTS, user="root", before=None):
        def act(world):
            world.stored()
            if before is not None:
                before(world)
            environment = {key: (value(world) if callable(value) else value) for key, value in env.items()}
            return world.cli("embed", *args, *texts, env=environment, user=user)
        return act

    def deleted_cwd(world):
        world.stored()
        gone = world.root / "gone"
        gone.mkdir()
        script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
        return world._run(["sh", "-c", script, "sh", str(gone), str(TRANSFORMER_COMMAND), "embed", *TEXTS],
                          None, None, "root", None, None, None)

    def stdin_closed(world):
        world.stored()
        script = 'exec "$@" <&-'
        return world._run(["sh", "-c", script, "sh", str(TRANSFORMER_COMMAND), "embed"], None, None, "root", None, None,
                          None)

    def read_only_home(world):
        """As nobody, with a HOME it cannot write and no XDG cache folder: no private place
        for Numba's cache (the kernels compile in memory)."""
        world.stored()
        world.give(world.tmp, world.work)
        return world.cli("embed", *TEXTS, user="nobody", env={"XDG_CACHE_HOME": None})

    ascii_text = ("café ☕",)
    return [
        answer("environment/HOME unset", with_env({"HOME": None})),
        answer("environment/HOME missing", with_env({"HOME": "/nonexistent/home"})),
        answer("environment/HOME a file", with_env({"HOME": "/etc/passwd"})),
        answer("environment/HOME read-only, no cache folder (as nobody)", read_only_home, slow=True, timeout=900),
        answer("environment/NUMBA_CACHE_DIR=/dev/null", with_env({"NUMBA_CACHE_DIR": "/dev/null"})),
        answer("environment/NUMBA_CACHE_DIR a file's child", with_env({"NUMBA_CACHE_DIR": "/etc/passwd/numba"})),
        answer("environment/NUMBA_CACHE_DIR empty", with_env({"NUMBA_CACHE_DIR": ""})),
        answer("environment/NUMBA_CACHE_DIR new (compiles anew)", with_env({"NUMBA_CACHE_DIR": lambda w: str(w.root / "nc")}),
               slow=True, timeout=900),
        error("environment/NUMBA_NUM_THREADS=0", with_env({"NUMBA_NUM_THREADS": "0"}), "NUMBA_NUM_THREADS"),
        error("environment/NUMBA_NUM_THREADS=abc", with_env({"NUMBA_NUM_THREADS": "abc"}), "NUMBA_NUM_THREADS"),
        error("environment/NUMBA_NUM_THREADS empty", with_env({"NUMBA_NUM_THREADS": ""}), "NUMBA_NUM_THREADS"),
        answer("environment/NUMBA_NUM_THREADS=1 and --threads 2", with_env({"NUMBA_NUM_THREADS": "1"}, "--threads", "2")),
        either("environment/NUMBA_THREADING_LAYER=tbb (not installed)", with_env({"NUMBA_THREADING_LAYER": "tbb"}),
               ("NUMBA_THREADING_LAYER", "threading layer")),
        either("environment/NUMBA_THREADING_LAYER=garbage", with_env({"NUMBA_THREADING_LAYER": "garbage"}),
               "NUMBA_THREADING_LAYER"),
        answer("environment/OMP_NUM_THREADS=abc", with_env({"OMP_NUM_THREADS": "abc"})),
        answer("environment/OPENBLAS_NUM_THREADS=0", with_env({"OPENBLAS_NUM_THREADS": "0"})),
        answer("environment/TMPDIR missing", with_env({"TMPDIR": "/nonexistent/tmp"})),
        answer("environment/TMPDIR a file", with_env({"TMPDIR": "/etc/passwd"})),
        answer("environment/LC_ALL=C and a non-ASCII text", with_env({"LC_ALL": "C", "LANG": "C"}, texts=ascii_text),
               same_vectors(ascii_text)),
        either("environment/PYTHONIOENCODING=ascii and a non-ASCII text",
               with_env({"PYTHONIOENCODING": "ascii"}, texts=ascii_text), "stdout", check=same_vectors(ascii_text)),
        answer("environment/TRANSFORMER_OFFLINE=garbage", with_env({"TRANSFORMER_OFFLINE": "maybe"})),
        answer("environment/TRANSFORMER_PACKED_CACHE=garbage", with_env({"TRANSFORMER_PACKED_CACHE": "??"})),
        answer("environment/TRANSFORMER_DEBUG=0 and a good run", with_env({"TRANSFORMER_DEBUG": "0"})),
        answer("environment/HF_HOME and HF_HUB_CACHE missing", with_env({"HF_HOME": "/nonexistent", "HF_HUB_CACHE": None})),
        answer("environment/XDG_CACHE_HOME a file", with_env({"XDG_CACHE_HOME": "/etc/passwd"})),
        answer("environment/the working directory deleted", deleted_cwd),
        error("environment/stdin closed, no texts", stdin_closed, "texts"),
    ]


def together(*thunks):
    """Run the thunks at once (each in a thread); their results in order."""
    results = [None] * len(thunks)

    def run(index, thunk):
        results[index] = thunk()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(thunks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def changed_weights():
    """The data of model.safetensors with one weight halved: new weights of the same size."""
    ckpt = checkpoint()
    return ckpt.replaced(encoder__layer__0__output__dense__weight=ckpt.tensor("encoder.layer.0.output.dense.weight") * 0.5)


def race_cases():
    def replaced_while_loading(delay):
        def act(world):
            folder = world.model()
            new = checkpoint().write(world, world.root / "new.safetensors", data=changed_weights())
            timer = threading.Timer(delay, lambda: os.replace(new, folder / "model.safetensors"))
            timer.start()
            result = world.cli("embed", "-m", folder, *TEXTS)
            timer.join()
            result.extra["later"] = world.cli("embed", "-m", folder, *TEXTS)
            return result
        return act

    def old_or_new(world, result):
        if same_vectors()(world, result) is None or same_vectors(folder="case")(world, result) is None:
            return None
        return "the vectors match neither the old weights nor the new ones (a mix)"

    def concurrent(*args, check_others=True):
        def act(world):
            folder = world.model()
            first, second = together(*[lambda: world.cli("embed", "-m", folder, *args, *TEXTS)] * 2)
            first.extra["other"] = second
            first.extra["later"] = world.cli("embed", "-m", folder, *TEXTS)
            return first
        return act

    def other_run(check):
        def run_check(world, result):
            other = result.extra["other"]
            if other.returncode != 0:
                return f"the other run failed: {other.stderr_lines()[-1:]}"
            return check(world, other)
        return run_check

    def two_searches(world):
        world.stored()
        world.write(world.work / "corpus.txt", "\n".join(CORPUS) + "\n")
        first, second = together(*[lambda: world.cli("search", "--corpus", "corpus.txt", "-k", "3", QUERY)] * 2)
        first.extra["other"] = second
        first.extra["later"] = world.cli("search", "--corpus", "corpus.txt", "-k", "3", QUERY)
        return first

    def two_downloads(world):
        env = {"HF_ENDPOINT": world.probe.hub.endpoint()}
        first, second = together(*[lambda: world.cli("download", MODEL, env=env)] * 2)
        first.extra["other"] = second
        return first

    def embed_during_download(world):
        slow, fast = world.probe.hub.endpoint("slow"), world.probe.hub.endpoint()
        downloading, embedding = together(lambda: world.cli("download", MODEL, env={"HF_ENDPOINT": slow}),
                                          lambda: (time.sleep(1.0), world.cli("embed", *TEXTS, env={"HF_ENDPOINT": fast}))[1])
        embedding.extra["other"] = downloading
        return embedding

    def other_exit_0(world, result):
        other = result.extra["other"]
        return None if other.returncode == 0 else f"the other run failed: {other.stderr_lines()[-1:]}"

    no_tmp = nothing_left(".transformer-packed/tmp-*", where=lambda w: w.model_dir)
    matches = search_matches(CORPUS, QUERY)
    return [
        answer("race/the checkpoint replaced 0.3 s into a run", replaced_while_loading(0.3),
               all_of(old_or_new, later_run(same_vectors(folder="case")))),
        answer("race/the checkpoint replaced 1 s into a run", replaced_while_loading(1.0),
               all_of(old_or_new, later_run(same_vectors(folder="case")))),
        answer("race/two runs writing the same packed cache", concurrent(),
               all_of(same_vectors(), other_run(same_vectors()), later_run(same_vectors()), no_tmp)),
        answer("race/two searches writing the same cache", two_searches,
               all_of(matches, other_run(matches), later_run(matches))),
        answer("race/two downloads of one model at once", two_downloads, all_of(store_is_sound, other_exit_0),
               timeout=300),
        answer("race/embed while the model downloads", embed_during_download, all_of(same_vectors(), other_exit_0,
                                                                                     store_is_sound), timeout=300),
    ]


def interrupt_cases():
    many = "\n".join(f"line {i}: the weather today is {'sunny' if i % 3 else 'rainy'} in town {i % 97}"
                     for i in range(30_000)).encode()

    def packed_in(folder):
        packed = Path(folder) / ".transformer-packed"
        return lambda: packed.is_dir() and any(len(p.name) == 24 for p in packed.iterdir())

    def being_packed(folder):
        packed = Path(folder) / ".transformer-packed"
        return lambda: packed.is_dir() and any(p.name.startswith("tmp-") for p in packed.iterdir())

    def embed_to_file(signum):
        def act(world):
            folder = world.stored()
            return world.cli("embed", "--file", "-", "-o", "out.npy", stdin=many, interrupt=(signum, packed_in(folder)))
        return act

    def while_packing(signum):
        def act(world):
            folder = world.model()
            result = world.cli("embed", "-m", folder, *TEXTS, interrupt=(signum, being_packed(folder)))
            result.extra["later"] = world.cli("embed", "-m", folder, *TEXTS)
            return result
        return act

    def downloading(signum):
        def act(world):
            result = world.cli("download", MODEL, env={"HF_ENDPOINT": world.probe.hub.endpoint("slow")},
                               interrupt=(signum, 3.0))
            result.extra["state"] = sorted(p.name for p in world.weights.iterdir())
            result.extra["later"] = world.cli("download", MODEL, env={"HF_ENDPOINT": world.probe.hub.endpoint()})
            return result
        return act

    def searching(world):
        folder = world.stored()
        lines = [f"document {i} about {'stocks' if i % 5 == 0 else 'gardens'}" for i in range(5000)]
        world.write(world.work / "corpus.txt", "\n".join(lines) + "\n")
        result = world.cli("search", "--corpus", "corpus.txt", QUERY, interrupt=(signal.SIGINT, packed_in(folder)))
        result.extra["later"] = world.cli("search", "--corpus", "corpus.txt", "-k", "3", QUERY)
        result.extra["lines"] = lines
        return result

    def later_search(world, result):
        return later_run(search_matches(result.extra["lines"], QUERY))(world, result)

    def not_installed(world, result):
        return f"{MODEL} was installed half-fetched" if MODEL in result.extra["state"] else None

    def later_sound(world, result):
        later = result.extra["later"]
        if later.returncode != 0:
            return f"the download after it failed: {later.stderr_lines()[-1:]}"
        return store_is_sound(world)

    no_output = nothing_left("out.npy", ".out.npy*")
    no_tmp = nothing_left(".transformer-packed/tmp-*", where=lambda w: w.model_dir)
    return [
        Case("interrupt/SIGINT while embedding into -o out.npy", STOPPED, embed_to_file(signal.SIGINT),
             check=all_of(no_output, exit_is(130), stderr_says("interrupted"))),
        Case("interrupt/SIGTERM while embedding into -o out.npy", STOPPED, embed_to_file(signal.SIGTERM), check=no_output),
        Case("interrupt/SIGINT while the packed cache is written", STOPPED, while_packing(signal.SIGINT),
             check=all_of(later_run(same_vectors()), no_tmp)),
        Case("interrupt/SIGKILL while the packed cache is written", STOPPED, while_packing(signal.SIGKILL),
             check=all_of(later_run(same_vectors()), no_tmp)),
        Case("interrupt/SIGINT while downloading", STOPPED, downloading(signal.SIGINT),
             check=all_of(not_installed, later_sound), timeout=300),
        Case("interrupt/SIGTERM while downloading", STOPPED, downloading(signal.SIGTERM),
             check=all_of(not_installed, later_sound), timeout=300),
        Case("interrupt/SIGINT while search embeds its corpus", STOPPED, searching, check=later_search, timeout=300),
    ]


def finding_cases():
    """The issue's nine findings, reproduced as it describes them."""
    def packed_to_important(world):
        folder = world.model()
        symlink(world.probe.sentinel / "important", folder / ".transformer-packed")
        return world.cli("embed", "-m", folder, *TEXTS)

    def numba_trap(world):
        """A read-only HOME (no private cache folder) and another user's pickles waiting where
        a predictable cache folder would be: the old /tmp/transformer-numba-UID and a shared
        XDG_RUNTIME_DIR."""
        world.stored()
        world.give(world.work)
        shared = world.root / "shared"
        shared.mkdir()
        os.chmod(shared, 0o1777)
        os.chmod(world.tmp, 0o1777)
        kernels = REPO / "kernels"
        subfolder = f"kernels_{hashlib.sha1(str(kernels).encode()).hexdigest()}"
        names = sorted(p.name for p in (kernels / "__pycache__").glob("*.nbi"))
        for base in (world.tmp / f"transformer-numba-{NOBODY}", shared / "transformer" / "numba",
                     world.tmp / "numba"):
            for folder in (base, base / subfolder):
                for name in names:
                    world.write(folder / name, pickle_payload(world))
        for path in _walk(world.tmp):
            if path.is_dir():
                os.chmod(path, 0o1777)
        for path in _walk(shared):
            if path.is_dir():
                os.chmod(path, 0o1777)
        return world.cli("embed", *TEXTS, user="nobody", env={"XDG_CACHE_HOME": None, "XDG_RUNTIME_DIR": str(shared)})

    def stale(world):
        folder = world.model()
        world.cli("embed", "-m", folder, *TEXTS)  # writes the packed cache
        path = world.own(folder / "model.safetensors")
        before = path.stat()
        blob = path.read_bytes()
        length = int.from_bytes(blob[:8], "little")
        with open(path, "r+b") as file:  # the same inode, the same size, then the old times back
            file.seek(8 + length)
            file.write(changed_weights())
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return world.cli("embed", "-m", folder, *TEXTS)

    def stale_search(world):
        folder = world.model()
        world.write(world.work / "corpus.txt", "\n".join(CORPUS) + "\n")
        world.cli("search", "-m", folder, "--corpus", "corpus.txt", QUERY)
        path = world.own(folder / "model.safetensors")
        before = path.stat()
        length = int.from_bytes(path.read_bytes()[:8], "little")
        ckpt = checkpoint()
        data = ckpt.replaced(encoder__layer__0__output__dense__weight=ckpt.tensor("encoder.layer.0.output.dense.weight") * -1)
        with open(path, "r+b") as file:
            file.seek(8 + length)
            file.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        return world.cli("search", "-m", folder, "--corpus", "corpus.txt", "-k", "3", QUERY)

    def edited_offline(world):
        folder = world.stored()
        world.edit_json(folder / "config.json", lambda c: c.update(note="my edit"))
        result = world.cli("download", MODEL)
        result.extra["later"] = world.cli("embed", *TEXTS)
        return result

    def edit_kept(world, result):
        config = json.loads((world.weights / MODEL / "config.json").read_text())
        return None if config.get("note") == "my edit" else "the edited config.json is gone"

    def output_first(world):
        world.stored()
        return world.cli("embed", "--file", "-", "-o", "missing/out.npy",
                         stdin="\n".join(f"text {i}" for i in range(20_000)).encode())

    def fast(world, result):
        return None if result.elapsed < 3.0 else f"the error came after {result.elapsed:.1f} s (after embedding?)"

    def search_read_only(world):
        world.stored()
        world.give(world.home, world.tmp, world.work)
        world.write(world.work / "corpus.txt", "\n".join(CORPUS) + "\n")
        return world.cli("search", "--corpus", "corpus.txt", "-k", "3", QUERY, user="nobody")

    def infinity(world, folder):
        text = (world.probe.pristine / "config.json").read_text().replace('"layer_norm_eps": 1e-12',
                                                                          '"layer_norm_eps": Infinity')
        world.write(folder / "config.json", text)

    def nan_json(world, folder):
        ckpt = checkpoint()
        array = ckpt.tensor("encoder.layer.5.output.dense.bias")
        array[0] = np.nan
        ckpt.write(world, folder / "model.safetensors", data=ckpt.replaced(encoder__layer__5__output__dense__bias=array))

    return [
        answer("finding/1 .transformer-packed a link to ~/important", packed_to_important),
        answer("finding/2 another user's pickles where Numba's cache could be (as nobody)", numba_trap, slow=True,
               timeout=900),
        answer("finding/3 new weights, same size and mtime, packed cache", stale, same_vectors(folder="case")),
        answer("finding/3 new weights, same size and mtime, search cache", stale_search,
               search_matches(CORPUS, QUERY, folder="case")),
        Case("finding/5 download with an edited file and no network", ERROR, edited_offline, names=(MODEL,),
             notes_ok=True, after=all_of(edit_kept, later_run(quietly_answered))),
        answer("finding/6 five lines, two blank: five rows", embed_stored("--file", "-", texts=(),
                                                                          stdin=b"one\n\nthree\n\nfive\n"),
               same_vectors(["one", "", "three", "", "five"])),
        error("finding/7 -o into a missing folder, before embedding", output_first, "missing", after=fast),
        answer("finding/7 search with a read-only store (as nobody)", search_read_only, search_matches(CORPUS, QUERY),
               timeout=400),
        error("finding/8 layer_norm_eps Infinity", embed_folder(infinity), "config.json", "Infinity"),
        error("finding/8 NaN weights, JSON out", embed_folder(nan_json), "encoder.layer.5.output.dense.bias"),
        error("finding/8 Xenova/all-MiniLM-L6-v2", lambda w: (w.stored(), w.cli("embed", "-m", "Xenova/all-MiniLM-L6-v2",
                                                                                 *TEXTS))[1], "Xenova/all-MiniLM-L6-v2"),
        error("finding/8 evilorg/all-MiniLM-L6-v2", lambda w: (w.stored(), w.cli("embed", "-m", "evilorg/all-MiniLM-L6-v2",
                                                                                 *TEXTS))[1], "evilorg/all-MiniLM-L6-v2"),
        error("finding/8 modules.json a link to /dev/urandom", embed_folder(link_to("modules.json", "/dev/urandom")),
              "modules.json"),
        answer("finding/9 --threads 64 capped", embed_stored("--threads", "64")),
    ]


def all_cases():
    groups = (folder_cases, config_file_cases, config_field_cases, safetensors_cases, shard_cases, packed_cases,
              sentence_cases, tokenizer_cases, store_cases, download_cases, input_cases, output_cases,
              argument_cases, environment_cases, race_cases, interrupt_cases, finding_cases)
    cases = [case for group in groups for case in group()]
    names = [case.name for case in cases]
    duplicates = {name for name in names if names.count(name) > 1}
    assert not duplicates, f"cases named twice: {duplicates}"
    return cases


# ---------------------------------------------------------------------------------------
# Running.


def run_case(probe, case, number):
    world = World(probe, case, number)
    world.model_dir = None
    try:
        result = case.act(world)
        outcome, ok, line = verdict(case, world, result)
    except Exception as error:  # noqa: BLE001  (a case the harness could not run is a FAIL of the probe)
        import traceback

        outcome, ok, line = "probe bug", False, f"{type(error).__name__}: {error} " + \
            traceback.format_exc().strip().splitlines()[-3].strip()
        result = Result(None)
    broken = probe.invariants()
    if broken:
        outcome, ok, line = "unsafe", False, f"{broken}; {line}"
    return outcome, ok, " ".join(line.split()), result.elapsed


def main(argv=None):
    global PROBE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run the cases whose name contains PATTERN (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the cases and what each expects, run nothing")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the cases that compile the kernels anew")
    parser.add_argument("--root", default=None, help="where the cases' folders go (default: /dev/shm, else TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the cases' folders")
    parser.add_argument("--width", type=int, default=150, help="cut the table's lines at this width")
    args = parser.parse_args(argv)

    cases = [case for case in all_cases()
             if (not args.only or any(pattern in case.name for pattern in args.only))
             and not (args.skip_slow and case.slow)]
    if args.list:
        for case in cases:
            print(f"{case.name:<78} {case.expect}{'  (slow)' if case.slow else ''}")
        print(f"{len(cases)} cases")
        return 0
    if os.geteuid() != 0:
        parser.error("run as root: some cases act as the user nobody (through setpriv) to meet read-only folders")
    # A shell starts a background job (`&`, nohup) with SIGINT ignored, and the cases' processes
    # would inherit that: the SIGINT cases would then interrupt nothing. A handler of our own is
    # reset to the default in every child.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    base = args.root or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="transformer-fault-probe-", dir=base))
    os.chmod(root, 0o755)
    PROBE = Probe(root)
    started = time.monotonic()
    print(f"# transformer fault probe, {datetime.date.today()}: {len(cases)} cases in {root}")
    print(f"{'ok':<4} {'case':<70} {'expected':<16} {'outcome':<9} line")
    counts = {}
    failures = []
    try:
        for number, case in enumerate(cases):
            outcome, ok, line, elapsed = run_case(PROBE, case, number)
            category = counts.setdefault(case.category, [0, 0])
            category[0] += 1
            category[1] += ok
            if not ok:
                failures.append((case, outcome, line))
            row = f"{'ok' if ok else 'FAIL':<4} {case.name:<70} {case.expect:<16} {outcome:<9} {line}"
            print(row[: args.width] if args.width else row, flush=True)
            if not args.keep:
                _remove(PROBE.cases / f"{number:03d}")
    finally:
        PROBE.hub.server.shutdown()
        if not args.keep:
            _remove(root)
    total, passed = sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())
    print(f"\n# summary ({time.monotonic() - started:.0f} s)")
    print(f"{'category':<14} {'cases':>5} {'ok':>5} {'FAIL':>5}")
    for category, (count, ok) in counts.items():
        print(f"{category:<14} {count:>5} {ok:>5} {count - ok:>5}")
    print(f"{'total':<14} {total:>5} {passed:>5} {total - passed:>5}")
    if failures:
        print("\n# FAIL")
        for case, outcome, line in failures:
            print(f"{case.name}  [{case.expect} -> {outcome}]  {line}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
