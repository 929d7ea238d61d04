"""A catalog on disk: product metadata in SQLite, vectors in safetensors, FAISS indexes.

    CATALOG/
      CURRENT                the name of the live version (replaced in one rename)
      v000002/               one complete, immutable version
        catalog.json         manifest: counts, dims, index kinds, the model it was built with
        products.sqlite      id, category, title, captions, generated caption, attributes, image bytes
        vectors.safetensors  rows (N,), queries (N, Q, e), means (N, e), captions (N, e)
        queries.faiss  means.faiss  captions.faiss
      .lock                  held while a version is written

Every change (build, add, remove) writes a whole new version beside the live one and then
switches ``CURRENT``: a writer killed half-way leaves the previous version live and loadable,
and its half-written folder (``.building-*``) is removed by the next writer; one killed after
renaming its version into place but before the switch leaves an orphan that is never made live.
A loaded ``Catalog`` holds a shared lock on its version's ``catalog.json``; writers keep the two
newest versions and delete older ones only when no process holds them (a later write retries).

Three indexes answer three kinds of query (same scores as ``unifashion eval retrieval``):
``queries`` holds each product's Q query vectors, for text and composed queries (Eq. 3: the best
query); ``means`` holds each product's normalised mean query vector, for image queries (the
image-only measure); ``captions`` holds the embedding of the caption the model generated for
the product (or the dataset's own description), added with ``caption_weight`` (Table 4's
caption-assisted retrieval). The indexes propose candidates; candidates are re-scored exactly from the stored vectors.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unifashion.catalog.index import APPROXIMATE_ABOVE, KINDS, VectorIndex, auto_kind, best_per_item
from unifashion.catalog.milvus import POINTER_SUFFIX, MilvusIndex, collection_name, drop_collections
from unifashion.utils.errors import UniFashionError
from unifashion.utils.io import atomic_write_json, atomic_write_text

FORMAT = "unifashion-catalog"
FORMAT_VERSION = 1
INDEXES = ("queries", "means", "captions")
KEEP_VERSIONS = 2  # the live one and the one before it (a running server may still read it)

_SCHEMA = """
CREATE TABLE products (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    title TEXT,
    captions TEXT NOT NULL,          -- JSON list: the dataset's captions
    generated_caption TEXT NOT NULL, -- the model's caption ('' when none was generated)
    attributes TEXT NOT NULL,        -- JSON object
    image BLOB NOT NULL,
    image_mime TEXT NOT NULL
);
CREATE INDEX products_category ON products(category);
"""


class CatalogError(UniFashionError):
    """A catalog folder is missing, damaged, or does not fit the request."""


@dataclass
class ProductEntry:
    """What a catalog stores about one product, besides its vectors."""

    id: str
    category: str
    image: bytes
    image_mime: str
    title: str | None = None
    captions: tuple[str, ...] = ()
    generated_caption: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ProductVectors:
    """Embeddings of N products: ``queries`` (N, Q, e), ``means`` (N, e), ``captions`` (N, e;
    zero rows where a product has no generated caption)."""

    queries: np.ndarray
    means: np.ndarray
    captions: np.ndarray

    def __post_init__(self) -> None:
        self.queries = np.ascontiguousarray(self.queries, dtype=np.float32)
        self.means = np.ascontiguousarray(self.means, dtype=np.float32)
        self.captions = np.ascontiguousarray(self.captions, dtype=np.float32)
        n = self.queries.shape[0]
        if (
            self.queries.ndim != 3
            or self.means.shape != (n, self.queries.shape[2])
            or self.captions.shape != self.means.shape
        ):
            raise CatalogError(
                f"product vectors: expected queries (N, Q, e), means and captions (N, e); got "
                f"{self.queries.shape}, {self.means.shape}, {self.captions.shape}"
            )

    def __len__(self) -> int:
        return self.queries.shape[0]

    def take(self, keep: np.ndarray) -> ProductVectors:
        return ProductVectors(self.queries[keep], self.means[keep], self.captions[keep])

    @staticmethod
    def concat(a: ProductVectors, b: ProductVectors) -> ProductVectors:
        return ProductVectors(
            np.concatenate([a.queries, b.queries]),
            np.concatenate([a.means, b.means]),
            np.concatenate([a.captions, b.captions]),
        )


@dataclass(frozen=True)
class Hit:
    """One search result: ``score = image_score + caption_weight * caption_score``."""

    id: str
    row: int
    score: float
    image_score: float
    caption_score: float


# -- writing ---------------------------------------------------------------------


@contextlib.contextmanager
def _writer_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CatalogError(f"{folder}: another process is writing this catalog") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _hold_version(path: Path):
    """A shared lock on a version's manifest, held while a ``Catalog`` reads that version: the
    writers' clean-up leaves a version alone while anyone holds it."""
    f = open(path / "catalog.json", "rb")  # noqa: SIM115 (held for the Catalog's lifetime)
    fcntl.flock(f, fcntl.LOCK_SH)
    return f


def _remove_unless_open(version_dir: Path) -> bool:
    """Delete an old version unless a reader holds it (then a later write removes it)."""
    try:
        f = open(version_dir / "catalog.json", "rb")  # noqa: SIM115
    except FileNotFoundError:
        shutil.rmtree(version_dir, ignore_errors=True)
        return True
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if any(version_dir.glob(f"*{POINTER_SUFFIX}")):
            drop_collections(version_dir)
        shutil.rmtree(version_dir, ignore_errors=True)
        return True


def _live_version(folder: Path) -> str | None:
    try:
        name = (folder / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


def _next_version(folder: Path) -> str:
    taken = [int(p.name[1:]) for p in folder.glob("v[0-9]*") if p.name[1:].isdigit()]
    return f"v{max(taken, default=0) + 1:06d}"


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _write_db(
    path: Path,
    entries: Sequence[ProductEntry],
    rows: Sequence[int],
    *,
    base: Path | None = None,
    drop_rows: Sequence[int] = (),
) -> None:
    if base is not None:
        shutil.copyfile(base, path)
        con = sqlite3.connect(path)
    else:
        con = sqlite3.connect(path)
        con.executescript(_SCHEMA)
    with con:
        if drop_rows:
            con.executemany("DELETE FROM products WHERE row = ?", [(int(r),) for r in drop_rows])
        con.executemany(
            "INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    int(r),
                    e.id,
                    e.category,
                    e.title,
                    json.dumps(list(e.captions)),
                    e.generated_caption,
                    json.dumps(e.attributes, sort_keys=True),
                    sqlite3.Binary(e.image),
                    e.image_mime,
                )
                for r, e in zip(rows, entries, strict=True)
            ],
        )
    if drop_rows:
        con.execute("VACUUM")
    con.close()


def _save_vectors(path: Path, rows: np.ndarray, vectors: ProductVectors) -> None:
    from safetensors.numpy import save_file

    save_file(
        {
            "rows": np.ascontiguousarray(rows, dtype=np.int64),
            "queries": vectors.queries,
            "means": vectors.means,
            "captions": vectors.captions,
        },
        os.fspath(path),
    )


def _map_vectors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, memory-mapped (read-only): a catalog too large for memory is
    read from disk page by page, only where a search re-scores candidates."""
    import struct

    dtypes = {"F32": np.float32, "I64": np.int64}
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise CatalogError(f"{path}: unreadable vectors file ({exc})") from None
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta.get("dtype") not in dtypes:
            raise CatalogError(f"{path}: {name} is {meta.get('dtype')}, expected F32 or I64")
        start, end = meta["data_offsets"]
        shape = tuple(meta["shape"])
        if end == start:
            out[name] = np.zeros(shape, dtypes[meta["dtype"]])
            continue
        out[name] = np.memmap(path, dtype=dtypes[meta["dtype"]], mode="r", offset=8 + length + start, shape=shape)
    return out


def _new_index(manifest: dict[str, Any], name: str):
    """An empty index of ``name`` as the manifest says (kind; the engine for a Milvus catalog)."""
    kind = manifest["kinds"][name]
    if kind == "milvus":
        return MilvusIndex(int(manifest["dim"]), manifest["engine"]["uri"])
    return VectorIndex(int(manifest["dim"]), kind)


def _index_ids(name: str, rows: np.ndarray, per_product: int) -> np.ndarray:
    """Vector ids of these rows in index ``name``: ``row * Q + q`` for the query vectors, the row otherwise."""
    rows = np.asarray(rows, dtype=np.int64)
    if name == "queries":
        return (rows[:, None] * per_product + np.arange(per_product)[None, :]).reshape(-1)
    return rows


def _index_inputs(name: str, rows: np.ndarray, vectors: ProductVectors) -> tuple[np.ndarray, np.ndarray]:
    """The vectors and ids index ``name`` holds for these rows."""
    if name == "queries":
        n, q, e = vectors.queries.shape
        return vectors.queries.reshape(n * q, e), _index_ids(name, rows, q)
    if name == "captions":  # products without a generated caption are not in the caption index
        have = np.abs(vectors.captions).sum(axis=1) > 0
        return vectors.captions[have], rows[have]
    return vectors.means, rows


class Catalog:
    """One loaded version of a catalog folder. Writers return the new version's ``Catalog``."""

    def __init__(self, folder: Path, version: str):
        self.folder = folder
        self.version = version
        self.path = folder / version
        try:
            self.manifest: dict[str, Any] = json.loads((self.path / "catalog.json").read_text())
        except (OSError, ValueError) as exc:
            raise CatalogError(f"{self.path / 'catalog.json'}: unreadable catalog manifest ({exc})") from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("format_version") != FORMAT_VERSION:
            raise CatalogError(f"{self.path / 'catalog.json'}: not a version-{FORMAT_VERSION} UniFashion catalog")
        self._hold = _hold_version(self.path)
        stored = _map_vectors(self.path / "vectors.safetensors")
        self.rows = np.array(stored["rows"])
        self.vectors = ProductVectors(stored["queries"], stored["means"], stored["captions"])
        self._pos = {int(r): i for i, r in enumerate(self.rows.tolist())}
        self.dim = int(self.manifest["dim"])
        self.queries_per_product = int(self.manifest["queries_per_product"])
        self.indexes = {name: self._load_index(name) for name in INDEXES}
        self._db = sqlite3.connect(f"file:{self.path / 'products.sqlite'}?mode=ro", uri=True, check_same_thread=False)
        self._db_lock = threading.Lock()
        with self._db_lock:
            meta = self._db.execute("SELECT row, id, category, attributes FROM products").fetchall()
        self._ids = {int(r): pid for r, pid, _, _ in meta}
        self._row_of = {pid: int(r) for r, pid, _, _ in meta}
        self._category = {int(r): cat for r, _, cat, _ in meta}
        self._categories = sorted(set(self._category.values()))
        self._attributes = {int(r): _string_attributes(json.loads(a)) for r, _, _, a in meta}
        values: dict[str, set[str]] = {}
        for attrs in self._attributes.values():
            for name, value in attrs.items():
                values.setdefault(name, set()).add(value)
        self._attribute_values = {name: sorted(v) for name, v in sorted(values.items())}
        if set(self._ids) != set(self._pos):
            raise CatalogError(f"{self.path}: products.sqlite and vectors.safetensors list different products")

    def _load_index(self, name: str):
        kind = self.manifest["kinds"][name]
        if kind == "milvus":
            return MilvusIndex.load(self.path / f"{name}{POINTER_SUFFIX}", self.dim)
        return VectorIndex.load(self.path / f"{name}.faiss", self.dim, kind)

    # -- opening and writing --------------------------------------------------------

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Catalog:
        """The live version of the catalog in ``folder``."""
        folder = Path(folder)
        version = _live_version(folder)
        if version is None:
            raise CatalogError(
                f"{folder}: not a catalog (no CURRENT file); build one with "
                "`unifashion catalog build --model MODEL --data DIR --out CATALOG`"
            )
        return cls(folder, version)

    @classmethod
    def _write(
        cls, folder: Path, manifest: dict[str, Any], rows: np.ndarray, vectors: ProductVectors, fill_db, make_indexes
    ) -> Catalog:
        """Write a new version with ``fill_db(path)`` and ``make_indexes() -> {name: VectorIndex}``, then
        make it live."""
        with _writer_lock(folder):
            for stale in folder.glob(".building-*"):  # left by a writer that was killed
                shutil.rmtree(stale, ignore_errors=True)
            version = _next_version(folder)
            tmp = folder / f".building-{version}"
            tmp.mkdir()
            try:
                fill_db(tmp / "products.sqlite")
                _save_vectors(tmp / "vectors.safetensors", rows, vectors)
                for name, index in make_indexes().items():
                    if index.kind == "milvus":
                        prefix = manifest["engine"]["prefix"]
                        index.save(tmp / f"{name}{POINTER_SUFFIX}", collection_name(prefix, version, name))
                    else:
                        index.save(tmp / f"{name}.faiss")
                manifest = {
                    **manifest,
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "count": len(rows),
                    "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
                atomic_write_json(tmp / "catalog.json", manifest)
                _fsync_tree(tmp)
                os.rename(tmp, folder / version)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            atomic_write_text(folder / "CURRENT", version + "\n")  # the switch
            live = sorted(p for p in folder.glob("v[0-9]*") if p.is_dir())
            for old in live[:-KEEP_VERSIONS]:
                _remove_unless_open(old)
        return cls(folder, version)

    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        entries: Sequence[ProductEntry],
        vectors: ProductVectors,
        *,
        model: dict[str, Any],
        kind: str = "auto",
        approximate_above: int = APPROXIMATE_ABOVE,
        caption_weight: float = 0.0,
        caption_source: str | None = None,
        engine_uri: str | None = None,
    ) -> Catalog:
        """A new version holding exactly ``entries`` (replacing what ``folder`` held, atomically).
        ``engine_uri``: keep the indexes in the Milvus server or cluster there (``catalog/milvus.py``)."""
        folder = Path(folder)
        _check_entries(entries, vectors)
        rows = np.arange(len(entries), dtype=np.int64)
        q, e = vectors.queries.shape[1:]
        if engine_uri is not None:
            kinds = dict.fromkeys(INDEXES, "milvus")
        else:
            kinds = _kinds(kind, len(entries) * q, len(entries), approximate_above)
        manifest = {
            "dim": int(e),
            "queries_per_product": int(q),
            "kinds": kinds,
            "kind_requested": kind,
            "approximate_above": approximate_above,
            "caption_weight": caption_weight,
            "caption_source": caption_source,
            "model": model,
        }
        if engine_uri is not None:
            import uuid

            manifest["engine"] = {"kind": "milvus", "uri": engine_uri, "prefix": f"uf_{uuid.uuid4().hex[:12]}"}

        def make_indexes() -> dict[str, VectorIndex]:
            out = {}
            for name in INDEXES:
                index = _new_index(manifest, name)
                index.add(*_index_inputs(name, rows, vectors))
                out[name] = index
            return out

        return cls._write(folder, manifest, rows, vectors, lambda p: _write_db(p, entries, rows), make_indexes)

    def add(self, entries: Sequence[ProductEntry], vectors: ProductVectors, *, replace: bool = False) -> Catalog:
        """A new version with ``entries`` added (``replace``: products already there take the new
        data; otherwise an existing id is an error naming it)."""
        _check_entries(entries, vectors)
        if vectors.queries.shape[1:] != (self.queries_per_product, self.dim):
            raise CatalogError(
                f"add: vectors of shape {vectors.queries.shape[1:]}, the catalog holds "
                f"({self.queries_per_product}, {self.dim}); embed with the catalog's model"
            )
        clash = [e.id for e in entries if e.id in self._row_of]
        if clash and not replace:
            raise CatalogError(
                f"add: {len(clash)} products already in {self.folder} (first: {clash[0]!r}); "
                "pass replace=True (--replace) to update them"
            )
        drop = [self._row_of[i] for i in clash]
        old_rows, old_vectors = self.without_rows(drop)
        start = int(self.rows.max()) + 1 if len(self.rows) else 0
        new_rows = np.arange(start, start + len(entries), dtype=np.int64)
        rows = np.concatenate([old_rows, new_rows])
        all_vectors = ProductVectors.concat(old_vectors, vectors)

        def make_indexes() -> dict[str, VectorIndex]:
            out = self._indexes_without(drop, old_rows, old_vectors)
            for name, index in out.items():
                index.add(*_index_inputs(name, new_rows, vectors))
            return out

        fill = lambda p: _write_db(p, entries, new_rows, base=self.path / "products.sqlite", drop_rows=drop)
        return self._write(self.folder, self.manifest, rows, all_vectors, fill, make_indexes)

    def remove(self, ids: Sequence[str]) -> Catalog:
        """A new version without the products ``ids`` (an unknown id is an error naming it)."""
        unknown = [i for i in ids if i not in self._row_of]
        if unknown:
            raise CatalogError(f"remove: {len(unknown)} ids not in {self.folder} (first: {unknown[0]!r})")
        drop = [self._row_of[i] for i in ids]
        rows, vectors = self.without_rows(drop)
        make_indexes = lambda: self._indexes_without(drop, rows, vectors)
        fill = lambda p: _write_db(p, [], [], base=self.path / "products.sqlite", drop_rows=drop)
        return self._write(self.folder, self.manifest, rows, vectors, fill, make_indexes)

    def without_rows(self, drop: Sequence[int]) -> tuple[np.ndarray, ProductVectors]:
        """Rows and vectors of this version less ``drop``."""
        keep = ~np.isin(self.rows, np.asarray(drop, np.int64))
        return self.rows[keep], self.vectors.take(keep)

    def _indexes_without(
        self, drop: Sequence[int], rows: np.ndarray, vectors: ProductVectors
    ) -> dict[str, VectorIndex]:
        """Private copies of the loaded indexes less the products ``drop`` (the loaded ones keep
        serving): deleted in place, or rebuilt from ``rows`` / ``vectors`` (what stays) where the kind
        cannot delete (HNSW)."""
        out = {}
        for name in INDEXES:
            kind = self.indexes[name].kind
            # Milvus collections are never changed in place: a new version gets new ones.
            if kind == "milvus" or (drop and not self.indexes[name].supports_remove):
                index = _new_index(self.manifest, name)
                index.add(*_index_inputs(name, rows, vectors))
            else:
                index = VectorIndex.load(self.path / f"{name}.faiss", self.dim, kind)
                if drop:
                    index.remove(_index_ids(name, drop, self.queries_per_product))
            out[name] = index
        return out

    # -- reading ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        return [self._ids[int(r)] for r in self.rows.tolist()]

    @property
    def has_captions(self) -> bool:
        return self.indexes["captions"].ntotal > 0

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._row_of

    def product(self, product_id: str) -> dict[str, Any]:
        """Metadata of one product (no image bytes); KeyError if absent."""
        return self.products([product_id])[0]

    def products(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        rows = [self._row_of[i] for i in ids]  # KeyError names the id
        with self._db_lock:
            got = {
                r[0]: r
                for r in self._db.execute(
                    f"SELECT row, id, category, title, captions, generated_caption, attributes, image_mime "
                    f"FROM products WHERE row IN ({','.join('?' * len(rows))})",
                    rows,
                ).fetchall()
            }
        return [
            {
                "id": g[1],
                "category": g[2],
                "title": g[3],
                "captions": json.loads(g[4]),
                "generated_caption": g[5],
                "attributes": json.loads(g[6]),
                "image_mime": g[7],
            }
            for g in (got[r] for r in rows)
        ]

    def image(self, product_id: str) -> tuple[bytes, str]:
        """The product's image bytes and MIME type; KeyError if absent."""
        row = self._row_of[product_id]
        with self._db_lock:
            blob, mime = self._db.execute("SELECT image, image_mime FROM products WHERE row = ?", (row,)).fetchone()
        return bytes(blob), mime

    def categories(self) -> list[str]:
        return list(self._categories)

    def product_vector(self, product_id: str, by: str = "means") -> np.ndarray:
        """A stored vector of one product: ``means`` (e,) or ``queries`` (Q, e); KeyError if absent."""
        if by not in ("queries", "means"):
            raise CatalogError(f"product_vector: by must be 'queries' or 'means', got {by!r}")
        return getattr(self.vectors, by)[self._pos[self._row_of[product_id]]].copy()

    def attribute_values(self) -> dict[str, list[str]]:
        """Every attribute name products carry, with the values they take (sorted)."""
        return {name: list(v) for name, v in self._attribute_values.items()}

    def _matches(self, row: int, category: str | None, attributes: Mapping[str, frozenset[str]]) -> bool:
        if category is not None and self._category.get(row) != category:
            return False
        attrs = self._attributes.get(row, {})
        return all(attrs.get(name) in values for name, values in attributes.items())

    def search(
        self,
        vector: np.ndarray,
        *,
        by: str = "queries",
        k: int = 10,
        caption_weight: float | None = None,
        category: str | None = None,
        attributes: Mapping[str, str | Collection[str]] | None = None,
        exclude: Sequence[str] = (),
    ) -> list[Hit]:
        """The ``k`` best products for a query ``vector`` (e,): ``by="queries"`` for a text or
        composed query (Eq. 3), ``by="means"`` for an image query. ``caption_weight`` (default:
        the catalog's) adds the cosine with the product's generated caption. ``category`` and
        ``attributes`` filter: name -> a value or several (any of them), every name must match.
        ``exclude`` drops products by id."""
        wanted = {
            name: frozenset([values] if isinstance(values, str) else values)
            for name, values in (attributes or {}).items()
        }
        if by not in ("queries", "means"):
            raise CatalogError(f"search: by must be 'queries' or 'means', got {by!r}")
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise CatalogError(f"search: a {vector.shape[0]}-dim query for a catalog of {self.dim}-dim vectors")
        w = float(self.manifest.get("caption_weight", 0.0) if caption_weight is None else caption_weight)
        if not (w >= 0.0 and math.isfinite(w)):
            raise CatalogError(f"caption_weight: expected a finite number >= 0, got {w}")
        use_captions = w != 0.0 and self.has_captions
        n = len(self)
        if n == 0 or k < 1:
            return []
        excluded = {self._row_of[i] for i in exclude if i in self._row_of}
        per = self.queries_per_product if by == "queries" else 1
        n_captioned = self.indexes["captions"].ntotal
        exact = self.indexes[by].exact and self.indexes["captions"].exact
        # One more than the answer needs, so that the bound below comes from a product that is not in it.
        fetch = min(n, k + len(excluded) + 1)
        for _ in range(64 if exact else 3):  # exact indexes: until the answer is provably complete
            scores, ids = self.indexes[by].search(vector[None], fetch * per)
            image_hits = best_per_item(scores[0], ids[0], per, fetch)
            rows = {r for r, _ in image_hits}
            # Best image score a product outside the fetched ones can have (-inf: none is outside).
            image_bound = image_hits[-1][1] if len(image_hits) == fetch < n else -np.inf
            caption_bound = 0.0
            if use_captions:
                got = min(fetch, n_captioned)
                cs, cids = self.indexes["captions"].search(vector[None], got)
                rows |= {int(i) for i in cids[0].tolist() if i >= 0}
                # An unfetched product has a lower caption score, or none (0) if it has no caption.
                caption_bound = (
                    max(float(cs[0, -1]), 0.0) if got < n_captioned else (0.0 if n_captioned < n else -np.inf)
                )
            rows = {r for r in rows if r not in excluded and self._matches(r, category, wanted)}
            hits = self._rank(vector, rows, by, w if use_captions else 0.0, k)
            outside = image_bound + (w * caption_bound if use_captions else 0.0)
            # Strictly above: a product outside that ties the last hit could come first (ties go by
            # row), and which of several tied products an engine returns is its own choice.
            if fetch >= n or (len(hits) >= k and hits[-1].score > outside):
                break
            fetch = min(n, fetch * 4)
        return hits

    def _rank(self, vector: np.ndarray, rows: set[int], by: str, w: float, k: int) -> list[Hit]:
        """Exact scores of candidate ``rows`` from the stored vectors; the best ``k``, best first."""
        if not rows:
            return []
        cand = np.asarray(sorted(rows), np.int64)
        pos = np.asarray([self._pos[int(r)] for r in cand], np.int64)
        if by == "queries":
            image = (self.vectors.queries[pos] @ vector).max(axis=1)  # Eq. 3: best query
        else:
            image = self.vectors.means[pos] @ vector
        caption = self.vectors.captions[pos] @ vector
        total = image + w * caption
        order = np.lexsort((cand, -total))[:k]  # best first; ties by row
        return [
            Hit(self._ids[int(cand[i])], int(cand[i]), float(total[i]), float(image[i]), float(caption[i]))
            for i in order
        ]

    def close(self) -> None:
        with self._db_lock:
            self._db.close()
        for index in self.indexes.values():
            if hasattr(index, "close"):
                index.close()
        self._hold.close()  # releases the version for the writers' clean-up

    def __repr__(self) -> str:
        return f"Catalog({self.folder}, {self.version}, {len(self)} products, {self.manifest['kinds']['queries']})"


def _string_attributes(attrs: Any) -> dict[str, str]:
    """A product's attributes as name -> text (numbers and booleans as text; lists, objects and nulls left out,
    since a filter compares one value)."""
    if not isinstance(attrs, dict):
        return {}
    out = {}
    for name, value in attrs.items():
        if isinstance(value, bool):
            out[str(name)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[str(name)] = str(value)
    return out


def _kinds(kind: str, n_query_vectors: int, n_products: int, approximate_above: int) -> dict[str, str]:
    if kind == "auto":
        return {
            "queries": auto_kind(n_query_vectors, approximate_above),
            "means": auto_kind(n_products, approximate_above),
            "captions": auto_kind(n_products, approximate_above),
        }
    if kind not in KINDS or kind == "numpy":
        raise CatalogError(f"index kind: expected auto, flat, hnsw or ivf, got {kind!r}")
    return dict.fromkeys(INDEXES, kind)


def _check_entries(entries: Sequence[ProductEntry], vectors: ProductVectors) -> None:
    if len(entries) != len(vectors):
        raise CatalogError(f"{len(entries)} products but {len(vectors)} rows of vectors")
    seen: set[str] = set()
    for e in entries:
        if not e.id or not isinstance(e.id, str):
            raise CatalogError(f"product id: expected a non-empty string, got {e.id!r}")
        if e.id in seen:
            raise CatalogError(f"product id {e.id!r} appears twice in one batch")
        seen.add(e.id)
