"""Vector indexes: exact kinds agree with brute force, HNSW / IVF recall, max-over-queries grouping, files."""

import numpy as np
import pytest

from unifashion.catalog.index import VectorIndex, auto_kind, best_per_item
from unifashion.utils.errors import UniFashionError


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_best_per_item_keeps_each_rows_first_hit_in_order():
    # Vector ids with per_item=3: 7 -> row 2, 1 -> row 0, 8 -> row 2 (already seen), 4 -> row 1, 0 -> row 0.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    ids = np.array([7, 1, 8, 4, 0])
    assert best_per_item(scores, ids, 3, k=2) == [(2, pytest.approx(0.9)), (0, pytest.approx(0.8))]
    assert [r for r, _ in best_per_item(scores, ids, 3, k=5)] == [2, 0, 1]
    # -1 pads (fewer vectors than asked) are skipped; per_item=1 is the identity on rows.
    assert best_per_item(np.array([0.5, -np.inf]), np.array([3, -1]), 1, k=2) == [(3, 0.5)]


@pytest.mark.parametrize("kind", ["flat", "numpy"])
def test_exact_kinds_return_the_brute_force_top_k(kind):
    rng = np.random.default_rng(0)
    base, queries = _unit(rng.normal(size=(500, 24))), _unit(rng.normal(size=(7, 24)))
    ids = np.arange(500) * 10 + 3  # ids need not be positions
    index = VectorIndex(24, kind)
    index.add(base, ids)
    scores, got = index.search(queries, 5)
    want = np.argsort(-(queries @ base.T), axis=1)[:, :5]
    assert (got == ids[want]).all()
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ base.T, want, axis=1), rtol=1e-5, atol=1e-6)
    # Asking for more than there is pads with id -1 and score -inf.
    small = VectorIndex(24, kind)
    small.add(base[:2], ids[:2])
    s, i = small.search(queries[:1], 4)
    assert list(i[0, 2:]) == [-1, -1] and np.isneginf(s[0, 2:]).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_find_most_true_neighbours(kind):
    # Clustered like real embeddings (uniform noise in 32 dims is the worst case for IVF cells).
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(40, 32))
    base = _unit(centres[rng.integers(0, 40, 4000)] + 0.4 * rng.normal(size=(4000, 32)))
    queries = _unit(centres[rng.integers(0, 40, 50)] + 0.4 * rng.normal(size=(50, 32)))
    index = VectorIndex(32, kind)
    index.add(base, np.arange(4000))
    _, got = index.search(queries, 10)
    want = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.9


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_indexes_survive_a_save_and_load(tmp_path, kind):
    rng = np.random.default_rng(2)
    base = _unit(rng.normal(size=(300, 16)))
    index = VectorIndex(16, kind)
    index.add(base, np.arange(300))
    index.save(tmp_path / "x.faiss")
    loaded = VectorIndex.load(tmp_path / "x.faiss", 16, kind)
    assert loaded.ntotal == 300
    np.testing.assert_array_equal(loaded.search(base[:5], 3)[1], index.search(base[:5], 3)[1])
    if loaded.supports_remove:
        assert loaded.remove(np.array([0, 1, 999])) == 2 and loaded.ntotal == 298
    else:
        with pytest.raises(UniFashionError, match="rebuild"):
            loaded.remove(np.array([0]))


def test_bad_files_and_shapes_are_named(tmp_path):
    bad = tmp_path / "bad.faiss"
    bad.write_bytes(b"not an index")
    with pytest.raises(UniFashionError, match=r"bad\.faiss"):
        VectorIndex.load(bad, 16, "flat")
    index = VectorIndex(16, "flat")
    with pytest.raises(UniFashionError, match=r"\(n, 16\)"):
        index.add(np.zeros((3, 8)), np.arange(3))
    with pytest.raises(UniFashionError, match="index kind"):
        VectorIndex(16, "lsh")


def test_auto_kind_switches_at_the_threshold():
    assert auto_kind(1000, approximate_above=1000) == "flat"
    assert auto_kind(1001, approximate_above=1000) == "ivf"
