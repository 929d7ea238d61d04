"""How often a product's own description finds it in a catalog, per caption weight.

    python benchmarks/catalog_quality.py --model MODEL --catalog CATALOG [--queries 500] [--weights 0,0.25,1]

For a random sample of the catalog's products, the query is the product's first dataset
caption; prints JSON with R@1 and R@10 over the whole catalog for each caption weight
(0: the image vectors alone, Eq. 3; above 0: plus the caption index), and the mean latency of
one search (text encoding excluded).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from unifashion.catalog.build import check_model
from unifashion.catalog.store import Catalog
from unifashion.pipelines.unifashion import UniFashion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--weights", default="0,0.25,1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    catalog = Catalog.open(args.catalog)
    check_model(catalog, args.model)
    model = UniFashion.from_pretrained(args.model)
    rng = np.random.default_rng(args.seed)
    ids = [catalog.ids[i] for i in rng.choice(len(catalog), min(args.queries, len(catalog)), replace=False)]
    meta = [m for m in catalog.products(ids) if m["captions"]]
    vectors = model.encode_texts([m["captions"][0] for m in meta]).float().numpy()
    out = {
        "catalog": args.catalog,
        "products": len(catalog),
        "queries": len(meta),
        "caption_source": catalog.manifest.get("caption_source"),
        "weights": {},
    }
    for w in (float(x) for x in args.weights.split(",")):
        ranks, seconds = [], []
        for m, v in zip(meta, vectors, strict=True):
            t = time.perf_counter()
            hits = catalog.search(v, k=10, caption_weight=w)
            seconds.append(time.perf_counter() - t)
            got = [h.id for h in hits]
            ranks.append(got.index(m["id"]) + 1 if m["id"] in got else 11)
        ranks = np.asarray(ranks)
        out["weights"][str(w)] = {
            "R@1": round(100 * float(np.mean(ranks == 1)), 1),
            "R@10": round(100 * float(np.mean(ranks <= 10)), 1),
            "search_ms": round(1000 * float(np.mean(seconds)), 2),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
