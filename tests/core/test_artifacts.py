"""The artifact store chosen by settings: the local folder by default, schemes from LETHE_ARTIFACT_URL."""

from __future__ import annotations

import numpy as np
import pytest

from core.artifacts import ArtifactMissing, LocalStore, get_store
from tests.utils import configure


def test_no_url_means_the_local_folder_and_round_trips(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path / "home")
    store = get_store()
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "home" / "artifacts").resolve()
    assert get_store() is store  # made once per settings and process
    store.write_array("a/b.npy", np.arange(5))
    assert store.exists("a/b.npy") and not store.exists("a/c.npy")
    assert store.read_array("a/b.npy").tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (store.root / "a").iterdir()) == ["b.npy"]  # no temporary file left
    with pytest.raises(ArtifactMissing, match=r"'a/c.npy' not found"):
        store.read_bytes("a/c.npy")
    with pytest.raises(FileNotFoundError):  # callers that expect the old error still get it
        store.read_bytes("a/c.npy")


def test_file_url_names_the_folder(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path / "home", artifact_url=f"file://{tmp_path / 'elsewhere'}")
    store = get_store()
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "elsewhere").resolve()
    store.write_bytes("x", b"1")
    assert (tmp_path / "elsewhere" / "x").read_bytes() == b"1"


@pytest.mark.parametrize("key", ["/etc/passwd", "../up", "a/../../b", ""])
def test_keys_stay_inside_the_store(tmp_path, key):
    with pytest.raises(ValueError, match="relative path inside the store"):
        LocalStore(tmp_path).write_bytes(key, b"x")


def test_an_unknown_scheme_is_a_clear_error(tmp_path, monkeypatch):
    configure(monkeypatch, home=tmp_path / "home", artifact_url="gs://bucket/p")
    with pytest.raises(ValueError, match=r"scheme 'gs' is not one of \['file', 's3'\]"):
        get_store()


def test_create_writes_only_once_and_delete_removes(tmp_path):
    store = LocalStore(tmp_path)
    assert store.create("keys/k.pem", b"first") is True
    assert store.create("keys/k.pem", b"second") is False
    assert store.read_bytes("keys/k.pem") == b"first"
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["k.pem"]  # no temporary file left
    assert store.delete("keys/k.pem") is True and not store.exists("keys/k.pem")
    assert store.delete("keys/k.pem") is False
