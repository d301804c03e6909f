"""videoprune.hub.resolve: embedded names, local paths and hub ids, decided at once and never online in a test."""

from __future__ import annotations

import pytest

from videoprune import hub
from videoprune.hub import EMBEDDED, HubUnavailable, looks_like_path, resolve

MISSING_ID = "Qwen/Nonexistent-xyz"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection attempt fails the test: resolve must decide from the environment and the cache alone."""
    def connect(*a, **k):
        raise AssertionError("resolve tried to reach the hub")

    monkeypatch.setattr(hub, "_hub_reachable", connect)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def unreachable(monkeypatch):
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=hub.CONNECT_TIMEOUT_S: False)


def fake_cache(root, repo_id: str):
    """A hub cache holding ``repo_id`` at one snapshot with a config.json, as huggingface_hub lays it out."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    return snap


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_embedded_names_resolve_to_the_packaged_folders(name):
    """Each embedded model name resolves to its folder inside the package."""
    assert resolve(name) == str(EMBEDDED[name])


def test_an_existing_local_folder_is_used_as_is(tmp_path):
    """An existing local folder resolves to itself."""
    assert resolve(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize("name", ["./runs/export", "/no/such/checkpoint", "~/no-such-ckpt", "runs/a/export",
                                  "export/", "model.safetensors", "bad name"])
def test_a_missing_path_fails_naming_the_path(name):
    """A name that looks like a path but does not exist fails with FileNotFoundError naming it, instead of being tried
    as a hub id."""
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        resolve(name)
    assert repr(name) in str(e.value)


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_an_uncached_hub_id_offline_fails_without_touching_the_network(monkeypatch, tmp_path, var):
    """With HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set, an uncached hub id fails naming the id, the cache, the variable
    and the --model path alternative."""
    monkeypatch.setenv(var, "1")
    with pytest.raises(HubUnavailable) as e:
        resolve(MISSING_ID, cache_dir=tmp_path)
    msg = str(e.value)
    assert MISSING_ID in msg and str(tmp_path) in msg and var in msg and "--model /path/to/checkpoint" in msg


def test_an_uncached_hub_id_with_the_hub_unreachable_fails_naming_the_id(unreachable, tmp_path):
    """An uncached hub id with the hub unreachable fails fast in one line naming the id."""
    with pytest.raises(HubUnavailable, match="not in the local Hugging Face cache.*unreachable") as e:
        resolve(MISSING_ID, cache_dir=tmp_path)
    assert MISSING_ID in str(e.value) and "\n" not in str(e.value)


def test_a_cached_hub_id_offline_resolves_to_its_snapshot(monkeypatch, tmp_path):
    """Offline, a hub id already in the cache resolves to its snapshot folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = fake_cache(tmp_path, "org/cached-model")
    assert resolve("org/cached-model", cache_dir=tmp_path) == str(snap)


def test_a_hub_id_is_passed_through_when_the_hub_answers(monkeypatch, tmp_path):
    """When the hub answers, an uncached hub id is passed through unchanged for transformers to download."""
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=hub.CONNECT_TIMEOUT_S: True)
    assert resolve(MISSING_ID, cache_dir=tmp_path) == MISSING_ID


@pytest.mark.parametrize("name, path_like", [("Qwen/Qwen2.5-VL-7B-Instruct", False), ("gpt2", False),
                                              ("./ckpt", True), ("a/b/c", True), ("w.safetensors", True),
                                              ("a--b", True)])
def test_hub_ids_and_paths_are_told_apart(name, path_like):
    """looks_like_path tells hub ids (org/name, a bare name) from paths (./, two slashes, a file suffix, or a name the
    hub would refuse such as 'a--b')."""
    assert looks_like_path(name) is path_like


def test_the_proxy_is_what_the_connectivity_check_dials(monkeypatch):
    """With HTTPS_PROXY set, the connectivity check dials the proxy, not the hub directly."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")
    assert hub._hub_address() == ("proxy.local", 3128)
