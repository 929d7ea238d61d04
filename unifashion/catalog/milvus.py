"""A catalog's vector indexes in Milvus, a distributed vector database, instead of FAISS files.

A catalog of a few million products does not fit one machine (32 query vectors of 384 floats are
~49 KB a product): with ``--engine-uri`` its three indexes live in Milvus collections and only
candidates come back; the catalog re-scores them exactly from its stored vectors, which it
memory-maps rather than reads. The client is ``pymilvus``; the same code talks to a local
standalone server (``unifashion catalog engine``, the ``milvus`` package's server binary) or to a
cluster, by its URI (``http://host:19530``; a token for a secured cluster from
``UNIFASHION_MILVUS_TOKEN``).

Versions stay atomic: each catalog version has its own collections
(``<prefix>_<version>_<index>``), written in full before the version goes live and dropped when
the version is removed, so a server reading the old version never sees a half-written one.
Vector ids are the catalog's (``row * per_item + q``); scores are inner products of normalised
vectors, as with FAISS. Collections up to :data:`EXACT_UP_TO` vectors use Milvus' ``FLAT``
(exact) index, larger ones ``IVF_FLAT`` with the same cells-per-vector rule and ``nprobe`` as
the FAISS IVF index.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unifashion.utils.errors import UniFashionError
from unifashion.utils.io import atomic_write_json

EXACT_UP_TO = 100_000
NPROBE = 16
MAX_TOPK = 16_384  # Milvus' limit on k
_INSERT_BATCH = 20_000
CONNECT_TIMEOUT = 10.0  # seconds
POINTER_SUFFIX = ".milvus.json"


class EngineError(UniFashionError):
    """The vector engine cannot be reached or refused a request."""


_CLIENTS: dict[str, object] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(uri: str):
    """One client per URI for the process (pymilvus pools a connection per address: closing one client
    would close it under the others)."""
    with _CLIENTS_LOCK:
        if uri in _CLIENTS:
            return _CLIENTS[uri]
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise EngineError(
                "a catalog in Milvus needs pymilvus (pip install 'unifashion[engine]' or pip install pymilvus)"
            ) from exc
        try:
            client = MilvusClient(uri=uri, token=os.environ.get("UNIFASHION_MILVUS_TOKEN", ""), timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # pymilvus raises its own types for every transport fault
            raise EngineError(f"Milvus at {uri}: cannot connect ({str(exc).splitlines()[0]})") from None
        _CLIENTS[uri] = client
        return client


def collection_name(prefix: str, version: str, index: str) -> str:
    name = f"{prefix}_{version}_{index}"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,254}", name):
        raise EngineError(f"collection name {name!r}: Milvus takes letters, digits and '_' (start with a letter)")
    return name


@dataclass
class MilvusIndex:
    """The :class:`~unifashion.catalog.index.VectorIndex` interface over one Milvus collection.

    Built in memory (``add``) and written to the engine by :meth:`save`; a loaded one searches its
    collection. It never changes a collection in place (``supports_remove`` is False): a new catalog
    version gets a new collection."""

    dim: int
    uri: str
    kind: str = "milvus"
    nprobe: int = NPROBE
    collection: str | None = None
    _count: int = 0
    _pending: list = field(default_factory=list)

    @property
    def ntotal(self) -> int:
        return self._count

    @property
    def supports_remove(self) -> bool:
        return False

    @property
    def exact(self) -> bool:
        """FLAT (exact) up to :data:`EXACT_UP_TO` vectors, IVF above."""
        return self._count <= EXACT_UP_TO

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if self.collection is not None:
            raise EngineError(f"{self.collection}: a saved collection is not changed; build a new version")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or ids.shape[0] != vectors.shape[0]:
            raise EngineError(f"add: expected (n, {self.dim}) vectors with n ids, got {vectors.shape} and {ids.shape}")
        if len(ids):
            self._pending.append((vectors, ids))
            self._count += len(ids)

    def remove(self, ids: np.ndarray) -> int:
        raise EngineError("a Milvus collection of a catalog version is not changed in place; build a new version")

    def save(self, pointer: str | os.PathLike, collection: str) -> None:
        """Create ``collection`` with its index, insert every vector added and check that the engine holds
        them all; then write the ``pointer`` file (URI, collection, size) that :meth:`load` reads."""
        from pymilvus import DataType, MilvusClient

        client = _client(self.uri)
        try:
            if client.has_collection(collection):  # left by a writer that was killed before the switch
                client.drop_collection(collection)
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
            params = client.prepare_index_params()
            if self.exact:
                params.add_index(field_name="vec", index_type="FLAT", metric_type="IP")
            else:
                nlist = max(1, min(65_536, int(4 * np.sqrt(self._count))))
                params.add_index(field_name="vec", index_type="IVF_FLAT", metric_type="IP", params={"nlist": nlist})
            # Created with its index, so it is loaded at once; inserts are searchable under Strong consistency.
            client.create_collection(collection, schema=schema, index_params=params)
            for vectors, ids in self._pending:
                for s in range(0, len(ids), _INSERT_BATCH):
                    batch_ids = ids[s : s + _INSERT_BATCH].tolist()
                    batch = vectors[s : s + _INSERT_BATCH].tolist()
                    client.insert(collection, [{"id": i, "vec": v} for i, v in zip(batch_ids, batch, strict=True)])
            if not self.exact:  # seal the segments so they get the IVF index rather than a brute-force scan
                client.flush(collection)
            stored = _count(client, collection)  # a Strong read: every insert is in
            if stored != self._count:
                raise EngineError(f"Milvus at {self.uri}: {collection} holds {stored} vectors, {self._count} were sent")
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(
                f"Milvus at {self.uri}: writing {collection} failed ({str(exc).splitlines()[0]})"
            ) from None
        self._pending = []
        self.collection = collection
        atomic_write_json(
            pointer, {"engine": "milvus", "uri": self.uri, "collection": collection, "count": self._count}
        )

    @classmethod
    def load(cls, pointer: str | os.PathLike, dim: int) -> MilvusIndex:
        pointer = Path(pointer)
        try:
            data = json.loads(pointer.read_text())
            uri, collection, count = data["uri"], data["collection"], int(data["count"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"{pointer}: not a readable Milvus index pointer ({exc})") from None
        index = cls(dim, uri, collection=collection, _count=count)
        index._client = _client(uri)
        try:
            if not index._client.has_collection(collection):
                raise EngineError(f"{pointer}: Milvus at {uri} has no collection {collection}")
            index._client.load_collection(collection)
            # A Strong read once, so that the searches after it, which read without waiting for the
            # latest timestamp (Bounded consistency), see the whole collection.
            stored = _count(index._client, collection)
            if stored != count:
                raise EngineError(f"{pointer}: {collection} holds {stored} vectors, the catalog wrote {count}")
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"Milvus at {uri}: cannot load {collection} ({str(exc).splitlines()[0]})") from None
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and ids (m, k) of the best ``k`` vectors per query, best first; id -1 pads."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = queries.shape[0]
        k = max(1, int(k))
        scores = np.full((m, k), -np.inf, np.float32)
        ids = np.full((m, k), -1, np.int64)
        if self._count == 0 or m == 0:
            return scores, ids
        limit = min(k, self._count, MAX_TOPK)
        try:
            hits = self._client.search(
                self.collection,
                data=queries.tolist(),
                limit=limit,
                anns_field="vec",
                search_params={"metric_type": "IP", "params": {"nprobe": self.nprobe}},
                consistency_level="Bounded",
            )
        except Exception as exc:
            raise EngineError(
                f"Milvus at {self.uri}: search in {self.collection} failed ({str(exc).splitlines()[0]})"
            ) from None
        for qi, row in enumerate(hits):
            for j, hit in enumerate(row[:limit]):
                ids[qi, j] = int(hit["id"])
                scores[qi, j] = float(hit["distance"])
        return scores, ids

    def close(self) -> None:
        self._client = None  # the client is shared by the process (see _client)


def _count(client, collection: str) -> int:
    rows = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def drop_collections(version_dir: Path) -> list[str]:
    """Drop the Milvus collections a catalog version points at (when the version is deleted); returns
    their names. A collection the engine no longer has is skipped."""
    dropped = []
    for pointer in sorted(version_dir.glob(f"*{POINTER_SUFFIX}")):
        try:
            data = json.loads(pointer.read_text())
            client = _client(data["uri"])
            if client.has_collection(data["collection"]):
                client.drop_collection(data["collection"])
                dropped.append(data["collection"])
        except (OSError, ValueError, KeyError, EngineError):
            continue  # the version's folder is removed all the same; an orphan collection is harmless
    return dropped


def run_local_server(base_dir: str | os.PathLike, port: int = 19530):
    """Start the Milvus standalone server of the ``milvus`` package (its own server binary, not an
    emulation) with data under ``base_dir``; returns the server object (``.stop()`` ends it). Its
    embedded etcd takes fixed ports: one such server runs on a machine at a time."""
    try:
        from milvus import MilvusServer
    except ImportError as exc:
        raise EngineError("a local Milvus server needs the milvus package (pip install 'unifashion[engine]')") from exc
    server = MilvusServer()
    server.set_base_dir(os.fspath(base_dir))
    server.listen_port = int(port)
    try:
        server.start()
    except Exception as exc:
        raise EngineError(
            f"the local Milvus server did not start on port {port} ({str(exc).splitlines()[0]})"
        ) from None
    return server
