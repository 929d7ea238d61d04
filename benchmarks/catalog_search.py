"""Search latency against catalog size: FAISS exact, FAISS HNSW, FAISS IVF and NumPy brute force.

    python benchmarks/catalog_search.py [--sizes 1000,10000,100000] [--queries 300] [--catalog CATALOG]

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


def measure(kind: str, base: np.ndarray, queries: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    t0 = time.perf_counter()
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
    args = parser.parse_args()
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
            stats, found = measure(kind, base, queries, args.k)
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


if __name__ == "__main__":
    main()
