"""Vector indexes of a catalog: FAISS exact (flat), FAISS approximate (HNSW or IVF), and NumPy.

Scores are inner products of normalised vectors (cosine). Every vector carries an integer id;
a product's 32 query vectors (Eq. 3) share its row, ``id = row * per_item + q``, and
:func:`best_per_item` turns the vector hits into one score per product: the best of its
vectors, which is exactly Eq. 3's max over queries when the index is exact.

The kind follows the number of vectors unless told: exact up to
:data:`APPROXIMATE_ABOVE` vectors, IVF above (``benchmarks/catalog_search.py`` measures
where exact search stops being fast enough, and the recall of HNSW and IVF). FAISS files are FAISS's own binary format
(``faiss.write_index``), never pickles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unifashion.utils.errors import UniFashionError

KINDS = ("flat", "hnsw", "ivf", "numpy")
# Above this many vectors ``kind="auto"`` picks IVF. Measured on 2 CPU cores, 256 dims, k=10,
# text queries against a real catalog's image query vectors (benchmarks/catalog_search.py):
# exact search p50 8.8 ms at 100k vectors, 27 ms at 300k; IVF (nprobe 16) 0.10 / 0.17 ms with
# recall@10 0.999 / 1.0; HNSW (efSearch 128) 0.18 / 0.21 ms with recall@10 0.956 / 0.955.
# IVF also deletes in place, HNSW cannot. 100k vectors are ~3,000 products of 32 queries.
APPROXIMATE_ABOVE = 100_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 16


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise UniFashionError("the catalog needs faiss-cpu (pip install faiss-cpu)") from exc
    return faiss


def auto_kind(n_vectors: int, approximate_above: int = APPROXIMATE_ABOVE) -> str:
    return "flat" if n_vectors <= approximate_above else "ivf"


def _as_matrix(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise UniFashionError(f"{what}: expected an (n, {dim}) array, got shape {tuple(x.shape)}")
    return x


@dataclass
class VectorIndex:
    """One index of ``dim``-dimensional vectors with int64 ids; ``kind`` in :data:`KINDS`."""

    dim: int
    kind: str = "flat"
    ef_search: int = HNSW_EF_SEARCH
    nprobe: int = IVF_NPROBE

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UniFashionError(f"index kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        self._index = None  # FAISS index: IndexIDMap2 around a flat or HNSW one, or an IVF one
        self._np_vectors = np.zeros((0, self.dim), np.float32)
        self._np_ids = np.zeros(0, np.int64)

    @property
    def ntotal(self) -> int:
        if self.kind == "numpy":
            return int(self._np_ids.shape[0])
        return 0 if self._index is None else int(self._index.ntotal)

    def _new_faiss(self, train: np.ndarray):
        faiss = _faiss()
        if self.kind == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        elif self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        elif train.shape[0] < 39:  # too few vectors to train IVF cells: exact until rebuilt
            inner = faiss.IndexFlatIP(self.dim)
        else:  # ivf: coarse k-means cells trained on the first vectors it sees
            nlist = max(1, min(4096, int(4 * np.sqrt(max(train.shape[0], 1)))))
            nlist = min(nlist, max(1, train.shape[0] // 39))
            inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.train(train)
        # IVF keeps ids itself (and its removal reorders lists, which an id map cannot follow).
        index = inner if isinstance(inner, faiss.IndexIVF) else faiss.IndexIDMap2(inner)
        self._inner = inner
        self._tune()
        return index

    def _tune(self) -> None:
        faiss = _faiss()
        if isinstance(self._inner, faiss.IndexHNSW):
            self._inner.hnsw.efSearch = self.ef_search
        elif isinstance(self._inner, faiss.IndexIVF):
            self._inner.nprobe = self.nprobe

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors = _as_matrix(vectors, self.dim, "vectors")
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if ids.shape[0] != vectors.shape[0]:
            raise UniFashionError(f"ids: {ids.shape[0]} ids for {vectors.shape[0]} vectors")
        if self.kind == "numpy":
            self._np_vectors = np.concatenate([self._np_vectors, vectors])
            self._np_ids = np.concatenate([self._np_ids, ids])
            return
        if vectors.shape[0] == 0:
            return
        if self._index is None:
            self._index = self._new_faiss(vectors)
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Drop the vectors with these ids; returns how many went. HNSW cannot delete in place:
        the caller rebuilds it (:meth:`supports_remove` is False)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if self.kind == "numpy":
            keep = ~np.isin(self._np_ids, ids)
            gone = int((~keep).sum())
            self._np_vectors, self._np_ids = self._np_vectors[keep], self._np_ids[keep]
            return gone
        if not self.supports_remove:
            raise UniFashionError("an HNSW index cannot delete vectors; rebuild it")
        if self._index is None:
            return 0
        return int(self._index.remove_ids(ids))

    @property
    def supports_remove(self) -> bool:
        return self.kind != "hnsw"

    @property
    def exact(self) -> bool:
        """Whether a search returns the true top k (the flat and NumPy kinds)."""
        return self.kind in ("flat", "numpy")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids (m, k) of the best ``k`` vectors per query, best first; id -1 pads."""
        queries = _as_matrix(queries, self.dim, "queries")
        m, n = queries.shape[0], self.ntotal
        k = max(1, int(k))
        if n == 0:
            return np.full((m, k), -np.inf, np.float32), np.full((m, k), -1, np.int64)
        if self.kind == "numpy":
            scores = queries @ self._np_vectors.T  # (m, n)
            kk = min(k, n)
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
            ids = self._np_ids[top]
            if kk < k:
                pad = k - kk
                top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
                ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            return top_scores.astype(np.float32), ids
        scores, ids = self._index.search(queries, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids

    # -- persistence -------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """FAISS's binary index file (the NumPy kind is not saved: it is rebuilt from the vectors)."""
        if self.kind == "numpy":
            raise UniFashionError("the numpy index is not saved; build it from the stored vectors")
        faiss = _faiss()
        index = self._index if self._index is not None else self._new_faiss(np.zeros((0, self.dim), np.float32))
        faiss.write_index(index, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike, dim: int, kind: str) -> VectorIndex:
        faiss = _faiss()
        path = Path(path)
        try:
            index = faiss.read_index(os.fspath(path))
        except RuntimeError as exc:
            raise UniFashionError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
        if index.d != dim:
            raise UniFashionError(f"{path}: index of {index.d}-dim vectors, the catalog says {dim}")
        out = cls(dim, kind)
        out._index = index  # read_index's object owns the C++ index: keep it alive
        out._inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
        out._tune()
        return out


def best_per_item(scores: np.ndarray, ids: np.ndarray, per_item: int, k: int) -> list[tuple[int, float]]:
    """(row, score) of the best ``k`` items from one query's vector hits (best first), where vector
    ``id`` belongs to row ``id // per_item`` and an item scores its best vector (Eq. 3).

    Exact when the hits are the true top ``k * per_item`` vectors: they then hold at least ``k``
    distinct items, and an item's first hit is its best vector."""
    seen: dict[int, float] = {}
    for s, i in zip(scores.tolist(), ids.tolist(), strict=True):
        if i < 0:
            continue
        row = i // per_item
        if row not in seen:
            seen[row] = s
            if len(seen) == k:
                break
    return list(seen.items())
