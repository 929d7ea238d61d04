"""The catalog folder: search equals brute force, versions, add / remove, atomic writes under SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from unifashion.catalog.store import Catalog, CatalogError, ProductEntry, ProductVectors

Q, E = 4, 16


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _products(n, seed=0, prefix="p"):
    rng = np.random.default_rng(seed)
    queries = _unit(rng.normal(size=(n, Q, E)))
    means = _unit(queries.mean(axis=1))
    captions = _unit(rng.normal(size=(n, E)))
    captions[::5] = 0.0  # every fifth product has no caption
    entries = [
        ProductEntry(
            f"{prefix}{i}",
            ("dress", "shirt", "skirt")[i % 3],
            f"img{i}".encode(),
            "image/png",
            title=f"title {i}",
            captions=(f"caption {i}",),
            attributes={"colour": "red"},
        )
        for i in range(n)
    ]
    return entries, ProductVectors(queries, means, captions)


def _brute(vectors, q, w):
    image = np.einsum("nqe,e->nq", vectors.queries, q).max(axis=1)  # Eq. 3
    return image + w * (vectors.captions @ q)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_search_matches_brute_force_scores(tmp_path, kind):
    entries, vectors = _products(120)
    cat = Catalog.create(tmp_path / "c", entries, vectors, model={"fingerprint": "x"}, kind=kind, caption_weight=0.5)
    rng = np.random.default_rng(3)
    for q in _unit(rng.normal(size=(10, E))):
        for w in (0.0, 0.5):
            hits = cat.search(q, k=5, caption_weight=w)
            want = np.argsort(-_brute(vectors, q, w), kind="stable")[:5]
            if kind == "flat":  # exact: the same products in the same order
                assert [h.id for h in hits] == [f"p{i}" for i in want]
            for h in hits:  # every kind: the scores are exact
                assert h.score == pytest.approx(float(_brute(vectors, q, w)[h.row]), abs=1e-5)
    # Image queries use the mean vectors.
    hits = cat.search(vectors.means[7], by="means", k=1)
    assert hits[0].id == "p7" and hits[0].image_score == pytest.approx(1.0, abs=1e-5)


def test_tied_scores_come_back_by_row_whatever_the_index_returns(tmp_path):
    """Products whose vectors are all the same tie on every query: the answer is the first rows, in
    order, and not whichever tied products the index happened to return (an engine's own choice)."""
    entries, vectors = _products(40)
    same = ProductVectors(
        np.repeat(vectors.queries[:1], 40, axis=0), np.repeat(vectors.means[:1], 40, axis=0), vectors.captions * 0
    )
    cat = Catalog.create(tmp_path / "c", entries, same, model={"fingerprint": "x"}, kind="flat")
    index = cat.indexes["means"]
    real_search = index.search

    def last_rows_first(queries, k):  # a valid top k of tied products: the highest rows
        scores, ids = real_search(queries, len(cat))
        order = np.argsort(-ids[0])[:k]
        return scores[:, order], ids[:, order]

    index.search = last_rows_first
    hits = cat.search(same.means[0], by="means", k=5, exclude=("p1",))
    assert [h.id for h in hits] == ["p0", "p2", "p3", "p4", "p5"]
    assert all(h.score == pytest.approx(1.0, abs=1e-5) for h in hits)


def test_filters_and_metadata(tmp_path):
    entries, vectors = _products(30)
    cat = Catalog.create(tmp_path / "c", entries, vectors, model={})
    q = vectors.queries[4, 1]
    hits = cat.search(q, k=6, category="shirt")
    assert len(hits) == 6 and {cat.product(h.id)["category"] for h in hits} == {"shirt"}
    assert "p4" not in [h.id for h in cat.search(q, k=5, exclude=["p4"])]
    assert cat.search(q, k=100)[-1] and len(cat.search(q, k=100)) == 30
    assert cat.product("p3") == {
        "id": "p3",
        "category": "dress",
        "title": "title 3",
        "captions": ["caption 3"],
        "generated_caption": "",
        "attributes": {"colour": "red"},
        "image_mime": "image/png",
    }
    assert cat.image("p3") == (b"img3", "image/png")
    assert cat.categories() == ["dress", "shirt", "skirt"]
    with pytest.raises(CatalogError, match="16-dim"):
        cat.search(np.zeros(8), k=1)


def test_add_remove_and_replace_write_new_versions(tmp_path):
    entries, vectors = _products(20)
    v1 = Catalog.create(tmp_path / "c", entries[:15], vectors.take(np.arange(15)), model={})
    v2 = v1.add(entries[15:], vectors.take(np.arange(15, 20)))
    assert (len(v1), len(v2)) == (15, 20) and v2.version != v1.version
    assert v2.search(vectors.queries[17, 0], k=1, caption_weight=0)[0].id == "p17"
    with pytest.raises(CatalogError, match="'p3'"):
        v2.add(entries[3:4], vectors.take(np.arange(3, 4)))
    # Replacing p3 with p9's vectors moves it.
    new, newvec = [ProductEntry("p3", "dress", b"new", "image/jpeg")], vectors.take(np.arange(9, 10))
    v3 = v2.add(new, newvec, replace=True)
    assert len(v3) == 20 and v3.image("p3") == (b"new", "image/jpeg")
    top = [h.id for h in v3.search(vectors.queries[9, 0], k=2, caption_weight=0)]
    assert set(top) == {"p3", "p9"}
    v1.close()
    v2.close()  # no one holds v1 and v2 any more: the next write may delete them
    v4 = v3.remove(["p9", "p0"])
    assert len(v4) == 18 and "p9" not in v4 and v4.search(vectors.queries[9, 0], k=1, caption_weight=0)[0].id == "p3"
    with pytest.raises(CatalogError, match="'nope'"):
        v4.remove(["nope"])
    # The live version is the last; two versions are kept on disk; the loaded v3 still answers.
    assert Catalog.open(tmp_path / "c").version == v4.version
    assert sorted(p.name for p in (tmp_path / "c").glob("v*")) == [v3.version, v4.version]
    assert v3.search(vectors.queries[9, 0], k=1)[0].id in ("p3", "p9")


def test_bad_catalogs_and_entries_are_named(tmp_path):
    with pytest.raises(CatalogError, match="no CURRENT"):
        Catalog.open(tmp_path)
    entries, vectors = _products(3)
    with pytest.raises(CatalogError, match="appears twice"):
        Catalog.create(tmp_path / "c", [entries[0], entries[0], entries[1]], vectors, model={})
    with pytest.raises(CatalogError, match="3 rows"):
        Catalog.create(tmp_path / "c", entries[:2], vectors, model={})
    cat = Catalog.create(tmp_path / "c", entries, vectors, model={})
    (cat.path / "catalog.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CatalogError, match=r"catalog\.json"):
        Catalog.open(tmp_path / "c")


# A writer that stalls after writing the vectors of its new version, so the test can kill it there.
_SLOW_WRITER = textwrap.dedent(
    """
    import importlib.util, time
    from unifashion.catalog import store

    spec = importlib.util.spec_from_file_location("test_store", {here!r})
    here = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(here)

    def stall_after(name, message):
        real = getattr(store, name)
        def stalled(*args, **kwargs):
            out = real(*args, **kwargs)
            print(message, flush=True)
            time.sleep(60)
            return out
        setattr(store, name, stalled)

    if {stall!r} == "vectors":  # half a version written in its .building folder
        stall_after("_save_vectors", "writing")
    else:  # the new version renamed into place, CURRENT not switched yet
        real_rename = store.os.rename
        def rename(src, dst):
            real_rename(src, dst)
            print("renamed", flush=True)
            time.sleep(60)
        store.os.rename = rename
    entries, vectors = here._products(40, seed=1, prefix="new")
    store.Catalog.open({folder!r}).add(entries, vectors)
    """
)


def _writer(folder, stall: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER.format(here=__file__, folder=str(folder), stall=stall)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill_writer_at(folder, stall: str, marker: str, on_disk) -> None:
    """Start a writer that stalls at ``stall``, check ``on_disk()`` there, SIGKILL it."""
    proc = _writer(folder, stall)
    try:
        assert proc.stdout.readline().strip() == marker
        on_disk()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_writer_killed_half_way_leaves_the_previous_catalog_live(tmp_path):
    entries, vectors = _products(25)
    folder = tmp_path / "c"
    before = Catalog.create(folder, entries, vectors, model={})

    def half_a_version():
        assert list(folder.glob(".building-*/vectors.safetensors"))

    _kill_writer_at(folder, "vectors", "writing", half_a_version)
    after = Catalog.open(folder)
    assert after.version == before.version and len(after) == 25 and "new0" not in after
    assert after.search(vectors.queries[5, 0], k=1, caption_weight=0)[0].id == "p5"
    # The next writer clears the leftovers (and the lock died with the killed process).
    time.sleep(0.1)
    grown = after.add(*_products(2, seed=2, prefix="x"))
    assert len(grown) == 27 and not list(folder.glob(".building-*"))


def test_a_writer_killed_between_the_new_version_and_the_switch(tmp_path):
    entries, vectors = _products(25)
    folder = tmp_path / "c"
    before = Catalog.create(folder, entries, vectors, model={})
    finished: list[str] = []

    def new_version_not_live():  # the new version is complete on disk, CURRENT still names the old
        finished.extend(sorted(p.name for p in folder.glob("v[0-9]*")))
        assert len(finished) == 2 and Catalog.open(folder).version == before.version

    _kill_writer_at(folder, "rename", "renamed", new_version_not_live)
    after = Catalog.open(folder)
    assert after.version == before.version and len(after) == 25 and "new0" not in after
    # The orphaned version is never made live by accident; the next write takes a new name and is live.
    time.sleep(0.1)
    grown = after.add(*_products(2, seed=2, prefix="x"))
    assert grown.version not in finished and Catalog.open(folder).version == grown.version
    assert len(Catalog.open(folder)) == 27 and "new0" not in Catalog.open(folder)


def test_a_second_writer_is_refused_while_one_writes(tmp_path):
    entries, vectors = _products(25)
    folder = tmp_path / "c"
    live = Catalog.create(folder, entries, vectors, model={})
    proc = _writer(folder, "vectors")
    try:
        assert proc.stdout.readline().strip() == "writing"
        with pytest.raises(CatalogError, match="another process is writing"):
            live.add(*_products(2, seed=3, prefix="y"))
        with pytest.raises(CatalogError, match="another process is writing"):
            live.remove(["p1"])
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert Catalog.open(folder).version == live.version and len(Catalog.open(folder)) == 25


def test_clean_up_keeps_a_version_that_a_reader_still_has_open(tmp_path):
    entries, vectors = _products(10)
    folder = tmp_path / "c"
    reader = Catalog.create(folder, entries, vectors, model={})  # held open, as a running server does
    latest = Catalog.open(folder)
    for i in range(3):  # three more versions: the first is now beyond the versions kept
        newer = latest.add(*_products(1, seed=10 + i, prefix=f"n{i}_"))
        latest.close()
        latest = newer
    assert (folder / reader.version).is_dir()
    assert reader.search(vectors.queries[3, 0], k=1, caption_weight=0)[0].id == "p3"
    assert reader.image("p3")[0] == b"img3" and len(reader) == 10
    reader.close()
    newest = latest.add(*_products(1, seed=20, prefix="m"))  # the reader is gone: its version goes
    latest.close()
    assert not (folder / reader.version).exists()
    kept = sorted(p.name for p in folder.glob("v[0-9]*"))
    assert len(kept) == 2 and kept[-1] == newest.version
    newest.close()


def test_stored_vectors_are_memory_mapped_not_read(tmp_path):
    """A catalog larger than memory opens: its vectors are mapped from the version's file (read-only)
    and only the pages a search re-scores are read."""
    entries, vectors = _products(40)
    Catalog.create(tmp_path / "c", entries, vectors, model={})
    cat = Catalog.open(tmp_path / "c")
    for arr in (cat.vectors.queries, cat.vectors.means, cat.vectors.captions):
        base = arr
        while not isinstance(base, np.memmap) and getattr(base, "base", None) is not None:
            base = base.base
        assert isinstance(base, np.memmap) and not arr.flags.writeable
    np.testing.assert_array_equal(cat.vectors.queries, vectors.queries)
    assert cat.search(vectors.means[5], by="means", k=1)[0].id == "p5"
    cat.close()
