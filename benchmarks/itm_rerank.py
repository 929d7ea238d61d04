"""Cost of the random-100 ITM re-ranking, as ratios measured side by side in one run.

    python benchmarks/itm_rerank.py --model runs/demo/model --data runs/demo/data [--split val]
        [--rerank-k 10] [--repeats 2]

The evaluation re-ranks the top ``--rerank-k`` of each query's 100 candidates by ITM, in both
directions (image -> text and text -> image). A pair that is in the top k of both directions is
the same (image, text) pair, and the evaluation scores it once. This script takes the pairs the
evaluation re-ranks (the seeded candidates of ``eval retrieval``, ranked by the model's ITC) and
times three ways of scoring them, best of ``--repeats``:

- ``apart``: each direction's pairs in their own pass, batches in the order drawn (the evaluation
  before pairs were shared);
- ``apart_by_length``: the same, each pass batching its pairs in order of text length;
- ``shared_by_length``: every distinct pair once, batched by text length (the evaluation now).

Prints JSON: pair counts, seconds, the speed-ups over ``apart`` and the largest difference of a
pair's score between ``apart`` and ``shared_by_length`` (float rounding of other batch shapes).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from unifashion.utils.hardware import cpu_has_bf16, quiet_libraries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--rerank-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    quiet_libraries()

    from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
    from unifashion.data.formats import read_split
    from unifashion.evaluation import protocols as P
    from unifashion.models.qformer import max_over_queries
    from unifashion.models.retrieval import RetrievalModel
    from unifashion.pipelines.retrieval import encode_images, encode_texts, itm_scores

    model = RetrievalModel.from_pretrained(args.model).eval()
    split = read_split(args.data, args.split)
    products = [p for p in split.products if p.captions]
    texts = [p.captions[0] for p in products]
    table = FeatureTable.build([p.images[0] for p in products], FeatureCache(model.vision), progress=False)
    first = np.array([table.index[str(p.images[0])] for p in products])
    images = encode_images(model, table)
    sim = max_over_queries(images.embeds[torch.as_tensor(first)], encode_texts(model, texts)).numpy()
    queries = np.arange(len(products))
    cand, _ = P.random_candidates(
        [p.subcategory or p.category for p in products], n=100, seed=0, queries=queries.tolist()
    )
    pairs: dict[str, list[tuple[int, int]]] = {}  # direction -> (image item, text item) re-ranked
    for direction, base in (("i2t", sim.T), ("t2i", sim)):
        scores = np.take_along_axis(base[queries], cand, axis=1)
        top = np.take_along_axis(cand, np.argsort(-scores, axis=1, kind="stable")[:, : args.rerank_k], axis=1)
        q = np.repeat(queries, top.shape[1])
        pairs[direction] = (
            list(zip(q, top.ravel(), strict=True)) if direction == "i2t" else list(zip(top.ravel(), q, strict=True))
        )
    shared = list(dict.fromkeys(pairs["i2t"] + pairs["t2i"]))
    bf16 = cpu_has_bf16()

    def score(chosen: list[tuple[int, int]], by_length: bool) -> np.ndarray:
        rows = torch.as_tensor(first[[i for i, _ in chosen]])
        return itm_scores(model, table.feats[rows], [texts[t] for _, t in chosen], bf16=bf16, by_length=by_length)

    variants = {
        "apart": lambda: [score(pairs[d], False) for d in pairs],
        "apart_by_length": lambda: [score(pairs[d], True) for d in pairs],
        "shared_by_length": lambda: [score(shared, True)],
    }
    variants["shared_by_length"]()  # warm-up
    seconds: dict[str, float] = {name: float("inf") for name in variants}
    outputs: dict[str, list[np.ndarray]] = {}
    for _ in range(args.repeats):  # interleaved, so a drift of the machine's speed hits every variant
        for name, fn in variants.items():
            t0 = time.perf_counter()
            outputs[name] = fn()
            seconds[name] = min(seconds[name], time.perf_counter() - t0)
    apart = dict(zip(pairs["i2t"] + pairs["t2i"], np.concatenate(outputs["apart"]).tolist(), strict=True))
    now = dict(zip(shared, outputs["shared_by_length"][0].tolist(), strict=True))
    result = {
        "model": args.model,
        "split": args.split,
        "queries": len(queries),
        "rerank_k": args.rerank_k,
        "pairs_both_directions": len(pairs["i2t"]) + len(pairs["t2i"]),
        "distinct_pairs": len(shared),
        "bf16_autocast": bf16,
        "threads": torch.get_num_threads(),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "speedup_over_apart": {k: round(seconds["apart"] / v, 2) for k, v in seconds.items()},
        "max_score_difference": float(max(abs(apart[p] - now[p]) for p in shared)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
