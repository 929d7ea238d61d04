import json
import signal
import subprocess
import sys
import textwrap

import pytest

from unifashion.backbones.cache import backbone_dir, cache_home, cached_build
from unifashion.utils.io import (
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    exchange_paths,
    recover_directory,
)


def test_cache_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path / "h"))
    assert cache_home() == tmp_path / "h"
    monkeypatch.delenv("UNIFASHION_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_home() == tmp_path / "home" / ".cache" / "unifashion"


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


# A child process replaces a folder holding "old" files by one holding "new" files and kills itself
# with SIGKILL at one point of the replace; the folder must then hold every old file or every new one.
KILLED_REPLACE = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from pathlib import Path
    from unifashion.utils import io

    target, point = Path(sys.argv[1]), sys.argv[2]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    exchange, rename, rmtree = io.exchange_paths, os.rename, shutil.rmtree
    fallback = point.startswith("fallback")
    moves = []  # renames and exchanges done so far

    def move(do, a, b):
        if point.endswith("before the first move") and not moves:
            die()
        done = do(a, b)
        if done is not False:
            moves.append(b)
        if point.endswith("after the first move") and len(moves) == 1:
            die()
        return done

    def rmtree_half_then_die(folder, ignore_errors=False):
        if point.endswith("cleanup"):
            files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
            files[0].unlink()  # a kill half-way through deleting the previous folder
            die()
        rmtree(folder, ignore_errors=ignore_errors)

    io.exchange_paths = (lambda a, b: False) if fallback else (lambda a, b: move(exchange, a, b))
    io.os.rename = lambda a, b: move(rename, a, b)
    io.shutil.rmtree = rmtree_half_then_die
    with io.atomic_directory(target) as scratch:
        for i in range(3):
            (scratch / f"part{i}").write_text("new")
            if point == "writing" and i == 1:
                die()
    """
)
# Where the child dies, and what the folder then holds.
KILL_POINTS = {
    "writing": "old",
    "before the first move": "old",
    "after the first move": "new",  # the exchange: one move and the new folder is in place
    "cleanup": "new",
    "fallback: before the first move": "old",
    "fallback: after the first move": "old",  # moved aside, put back by the next access
    "fallback: cleanup": "new",
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_at_any_point_of_a_folder_replace_keeps_a_whole_folder(tmp_path, point):
    if not point.startswith("fallback") and not exchange_paths(tmp_path, tmp_path):
        pytest.skip("this system has no exchange of two paths in one call")
    target = tmp_path / "model"
    with atomic_directory(target) as scratch:
        for i in range(3):
            (scratch / f"part{i}").write_text("old")
    child = subprocess.run(
        [sys.executable, "-c", KILLED_REPLACE, str(target), point], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    if point == "fallback: after the first move":
        # Without the exchange call the old folder sits aside until the next access puts it back.
        assert not target.exists()
        assert recover_directory(target)
    contents = {p.name: p.read_text() for p in target.iterdir()}
    assert contents == {f"part{i}": KILL_POINTS[point] for i in range(3)}
    # The next write of the same folder works and leaves nothing but the folder and hidden scraps of the kill.
    with atomic_directory(target) as scratch:
        (scratch / "part0").write_text("next")
    assert [p.name for p in target.iterdir()] == ["part0"]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["model"]


def test_exchange_paths_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("a")
    (b / "f").write_text("b")
    if not exchange_paths(a, b):
        pytest.skip("this system has no exchange of two paths in one call")
    assert ((a / "f").read_text(), (b / "f").read_text()) == ("b", "a")
    with pytest.raises(FileNotFoundError):
        exchange_paths(a, tmp_path / "missing")


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


def test_a_memory_mapped_feature_table_equals_the_in_memory_one_and_is_written_once(tmp_path):
    """run.feature_memmap: the table is one .npy file (rows written chunk by chunk, renamed into place when
    complete), read back as a read-only map; a second build with the same images computes nothing."""
    import numpy as np
    import torch
    from PIL import Image

    from unifashion.backbones.feature_cache import FeatureCache, FeatureTable, table_path
    from unifashion.backbones.vision import load_vision_encoder
    from unifashion.config import get_preset
    from unifashion.data.records import ImageRef

    rng = np.random.default_rng(0)
    refs = []
    for i in range(7):
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
        refs.append(ImageRef(str(path)))
    encoder = load_vision_encoder(get_preset("tiny").vision)
    plain = FeatureTable.build(refs + refs[:2], FeatureCache(encoder, root=tmp_path / "a"), progress=False)
    cache = FeatureCache(encoder, root=tmp_path / "b", memmap=True)
    import unifashion.backbones.feature_cache as feature_cache

    mapped = FeatureTable.build(refs + refs[:2], cache, progress=False)
    assert mapped.index == plain.index and torch.equal(mapped.feats, plain.feats)
    file = table_path(refs, cache)
    assert file.is_file() and not list(file.parent.glob(".*.tmp"))
    assert isinstance(np.load(file, mmap_mode="r"), np.memmap)
    assert torch.equal(mapped.batch([6, 0]), plain.batch([6, 0]))
    # Written in chunks: the same rows with chunks of 3 images.
    file.unlink()
    chunked = feature_cache.memmapped_features(refs, cache, chunk=3)
    assert torch.equal(chunked, plain.feats)
    again = FeatureCache(encoder, root=tmp_path / "b", memmap=True)
    FeatureTable.build(refs, again, progress=False)
    assert again.hits == 0 and again.misses == 0  # the whole table came from the file
