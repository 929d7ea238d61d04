"""Search latency against catalog size: FAISS exact, FAISS HNSW, FAISS IVF, NumPy brute force, and
Milvus IVF_FLAT (the engine of ``--engine-uri`` catalogs).

    python benchmarks/catalog_search.py [--sizes 1000,10000,100000] [--queries 300] [--catalog CATALOG]
    python benchmarks/catalog_search.py --kinds ivf,milvus --engine-dir /tmp/milvus   # starts a local server
    python benchmarks/catalog_search.py --kinds ivf,milvus --engine-uri http://host:19530  # or a cluster's

All kinds run side by side in one process on the same vectors and queries (one query at a
time, k=10, as a search request does). Vectors: a real catalog's image query vectors (``--catalog``,
sampled with replacement up to each size, with a little noise so that copies differ) searched
with its caption vectors as text queries, or by default clustered synthetic 256-dim unit
vectors. Prints JSON: build seconds, p50 / p99
milliseconds and recall@10 of each approximate kind against the exact answer.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from unifashion.catalog.index import VectorIndex


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def vectors_for(n: int, n_queries: int, pool, dim: int, rng) -> tuple[np.ndarray, np.ndarray]:
    if pool is not None:  # (image query vectors, caption vectors) of a real catalog
        images, texts = pool
        base = images[rng.integers(0, len(images), n)] + 0.02 * rng.normal(size=(n, images.shape[1]))
        return _unit(base), _unit(texts[rng.integers(0, len(texts), n_queries)])
    centres = rng.normal(size=(max(8, n // 200), dim))
    base = centres[rng.integers(0, len(centres), n)] + 1.0 * rng.normal(size=(n, dim))
    queries = centres[rng.integers(0, len(centres), n_queries)] + 1.0 * rng.normal(size=(n_queries, dim))
    return _unit(base), _unit(queries)


def _milvus_index(base: np.ndarray, uri: str):
    """Milvus IVF_FLAT at every size (FAISS IVF's cells-per-vector rule and nprobe), through the catalog's
    own MilvusIndex."""
    import tempfile
    import uuid

    from unifashion.catalog import milvus

    milvus.EXACT_UP_TO = 0
    index = milvus.MilvusIndex(base.shape[1], uri)
    index.add(base, np.arange(len(base)))
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        index.save(f"{tmp}/p.json", name)
        loaded = milvus.MilvusIndex.load(f"{tmp}/p.json", base.shape[1])
    return loaded, name


def measure(
    kind: str, base: np.ndarray, queries: np.ndarray, k: int, uri: str | None = None
) -> tuple[dict, np.ndarray]:
    t0 = time.perf_counter()
    if kind == "milvus":
        index, collection = _milvus_index(base, uri)
    else:
        index = VectorIndex(base.shape[1], kind)
        index.add(base, np.arange(len(base)))
    build = time.perf_counter() - t0
    index.search(queries[:5], k)  # warm-up
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q[None], k)
        times.append(time.perf_counter() - t)
        found.append(ids[0])
    if kind == "milvus":
        from unifashion.catalog.milvus import _client

        _client(uri).drop_collection(collection)
    ms = np.asarray(times) * 1000
    return {
        "build_s": round(build, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }, np.asarray(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--kinds", default="numpy,flat,hnsw,ivf")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--catalog", default=None, help="take the vectors from this catalog's query vectors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine-uri", default=None, help="Milvus to measure (kind milvus)")
    parser.add_argument("--engine-dir", default=None, help="start a local Milvus server with data here")
    args = parser.parse_args()
    server = None
    if "milvus" in args.kinds.split(","):
        if args.engine_uri is None and args.engine_dir is None:
            raise SystemExit("kind milvus: give --engine-uri URI or --engine-dir DIR (a local server)")
        if args.engine_uri is None:
            import socket

            from unifashion.catalog.milvus import run_local_server

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            server = run_local_server(args.engine_dir, port)
            args.engine_uri = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(args.seed)
    pool = None
    if args.catalog:
        from unifashion.catalog.store import Catalog

        cat = Catalog.open(args.catalog)
        texts = cat.vectors.captions[np.abs(cat.vectors.captions).sum(axis=1) > 0]
        if not len(texts):
            raise SystemExit(f"{args.catalog}: no caption vectors to use as text queries")
        pool = (cat.vectors.queries.reshape(-1, cat.dim), texts)
    out = {
        "source": args.catalog or f"synthetic clustered, {args.dim} dims",
        "k": args.k,
        "queries": args.queries,
        "sizes": {},
    }
    for n in (int(s) for s in args.sizes.split(",")):
        base, queries = vectors_for(n, args.queries, pool, args.dim, rng)
        exact = np.argsort(-(queries @ base.T), axis=1)[:, : args.k]
        row = {}
        for kind in args.kinds.split(","):
            stats, found = measure(kind, base, queries, args.k, args.engine_uri)
            stats["recall_at_k"] = round(
                float(np.mean([len(set(f) & set(e)) / args.k for f, e in zip(found, exact, strict=True)])), 4
            )
            row[kind] = stats
        if "flat" in row:
            for stats in row.values():
                stats["p50_vs_flat"] = round(stats["p50_ms"] / max(row["flat"]["p50_ms"], 1e-9), 3)
        out["sizes"][str(n)] = row
        print(json.dumps({str(n): row}), flush=True)
    print(json.dumps(out, indent=2))
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
