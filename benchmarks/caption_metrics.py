"""Cost of METEOR in a caption evaluation, as a ratio measured side by side in one run.

    python benchmarks/caption_metrics.py --data runs/demo/data [--split val] [--sets 6] [--items 50]

A caption evaluation scores several sets of captions (model and nearest neighbour, per style and
split: six in the quickstart). METEOR runs on Java; pycocoevalcap starts a METEOR process (Java,
then its paraphrase tables) for each ``Meteor()``. This script scores ``--sets`` sets of
``--items`` captions each (the split's product titles as candidates against their descriptions,
PTB-tokenised as the evaluation does; only the time matters) two ways:

- ``fresh``: a new ``Meteor()`` per set (the evaluation before);
- ``shared``: :func:`unifashion.evaluation.captioning.meteor_scores`, one process for the run
  (the evaluation now; its start is counted).

Prints JSON: seconds of each, the ratio, and whether every set's scores agree.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--sets", type=int, default=6)
    parser.add_argument("--items", type=int, default=50)
    args = parser.parse_args()

    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from unifashion.data.captions import style_texts
    from unifashion.data.formats import read_split
    from unifashion.evaluation import captioning as C

    if not C.java_available():
        raise SystemExit("METEOR runs on Java, which is not installed")
    products = [
        p
        for p in read_split(args.data, args.split).products
        if style_texts(p, "title") and style_texts(p, "description")
    ]
    sets = []
    for s in range(args.sets):
        chosen = products[s * args.items : (s + 1) * args.items] or products[: args.items]
        with contextlib.redirect_stdout(io.StringIO()):
            gts = PTBTokenizer().tokenize(
                {p.id: [{"caption": c} for c in style_texts(p, "description")] for p in chosen}
            )
            res = PTBTokenizer().tokenize({p.id: [{"caption": style_texts(p, "title")[0]}] for p in chosen})
        sets.append((gts, res))

    t0 = time.perf_counter()
    fresh = [Meteor().compute_score(gts, res) for gts, res in sets]
    fresh_seconds = time.perf_counter() - t0
    C._stop_meteor()  # the shared process's start is part of its time
    t0 = time.perf_counter()
    shared = [C.meteor_scores(gts, res) for gts, res in sets]
    shared_seconds = time.perf_counter() - t0
    result = {
        "sets": len(sets),
        "items_per_set": args.items,
        "seconds": {"fresh": round(fresh_seconds, 2), "shared": round(shared_seconds, 2)},
        "fresh_over_shared": round(fresh_seconds / shared_seconds, 2),
        "same_scores": all(a[0] == b[0] and list(a[1]) == list(b[1]) for a, b in zip(fresh, shared, strict=True)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
