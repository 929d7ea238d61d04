import json
import os

import pytest

from unifashion.backbones.cache import backbone_dir, cache_home, cached_build
from unifashion.utils.io import atomic_directory, atomic_write_json, atomic_write_text


def test_cache_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path / "h"))
    assert cache_home() == tmp_path / "h"
    monkeypatch.delenv("UNIFASHION_HOME")
    assert cache_home() == os.path.expanduser("~/.cache/unifashion") or str(cache_home()).endswith(".cache/unifashion")


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "a" / "x.json"
    atomic_write_json(target, {"v": 1})
    atomic_write_text(target, '{"v": 2}')
    assert json.loads(target.read_text()) == {"v": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]  # no temp files left


def test_atomic_directory_keeps_the_old_folder_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as scratch:
        (scratch / "w.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as scratch:
        (scratch / "w.txt").write_text("half")
        raise RuntimeError("killed half-way")
    assert (target / "w.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_directory(target) as scratch:
        (scratch / "w.txt").write_text("new")
    assert (target / "w.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_cached_build_rebuilds_only_when_the_source_changes(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path))
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "weights").write_text(str(len(calls)))

    folder, built = cached_build("thing", {"version": 1}, build)
    assert built and folder == backbone_dir("thing") and (folder / "weights").read_text() == "1"
    folder, built = cached_build("thing", {"version": 1}, build)
    assert not built and len(calls) == 1
    folder, built = cached_build("thing", {"version": 2}, build)
    assert built and (folder / "weights").read_text() == "2"
