"""Does a Q-Former retrieve in evaluation mode as it did in training? In-batch ITC accuracy with
dropout off (how every evaluation runs) and on (how training saw it), and with dropout on in one
group of layers at a time.

    python benchmarks/dropout_gap.py --data runs/full-data runs/phase1a-curve/epochs4 runs/phase1a-curve/epochs8

For each MODEL: ``--pairs`` training products (first image, first caption) in batches of 64, as in
phase 1a; the share of texts whose own image scores highest among the 64 (text -> image) and the
mean ITC loss (Eq. 3, label smoothing 0.1). Rows: every dropout off; every dropout on (seeded); the
image path with each group of dropout layers on alone (the text path in evaluation mode). A model
whose evaluation-mode figure falls far below its training-mode one has learnt weights that only
work with dropout's noise (the LayerNorm after a residual sees other statistics without it).
"""

from __future__ import annotations

import argparse
import json
import re

import torch

from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.data.formats import read_split
from unifashion.models.qformer import itc_loss
from unifashion.models.retrieval import RetrievalModel

# Dropout layers of the Q-Former (HF Blip2QFormerModel names), by what they follow.
GROUPS = {
    "embeddings": r"^qformer\.dropout$",
    "self-attention output": r"\.layer\.\d+\.attention\.output\.dropout$",
    "cross-attention output": r"\.crossattention\.output\.dropout$",
    "text feed-forward output": r"\.layer\.\d+\.output\.dropout$",
    "query feed-forward output": r"\.output_query\.dropout$",
}


def in_batch(model: RetrievalModel, table: FeatureTable, texts: list[str], image_mode, text_mode, seed: int = 0):
    """(text -> image accuracy %, mean ITC loss) over batches of 64; ``image_mode`` / ``text_mode``
    set the dropout layers before each path runs (callables taking the Q-Former)."""
    qf = model.qformer
    torch.manual_seed(seed)
    hits, losses, n = 0, [], len(texts) // 64 * 64
    with torch.no_grad():
        for b in range(0, n, 64):
            rows = list(range(b, b + 64))
            image_mode(qf)
            image = qf.image_embeddings(table.batch(rows))
            text_mode(qf)
            text = qf.text_embedding(model.tokenize([texts[i] for i in rows]))
            loss, sim = itc_loss(image, text, qf.temperature(), torch.tensor(rows))
            hits += int((sim.argmax(dim=1) == torch.arange(64)).sum())
            losses.append(float(loss))
    qf.eval()
    return round(100 * hits / n, 1), round(sum(losses) / len(losses), 3)


def only(pattern: str):
    def mode(qf):
        qf.eval()
        for name, layer in qf.named_modules():
            if isinstance(layer, torch.nn.Dropout) and re.search(pattern, name):
                layer.train()

    return mode


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="retrieval checkpoints (a pipeline's model folder)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="train", help="whose products (default: the pairs training saw)")
    ap.add_argument("--pairs", type=int, default=256)
    args = ap.parse_args(argv)
    products = [p for p in read_split(args.data, args.split).products if p.captions][: args.pairs]
    if len(products) < 64:
        raise SystemExit(f"{args.data} {args.split}: {len(products)} captioned products, need at least 64")
    texts = [p.captions[0] for p in products]
    off, on = (lambda qf: qf.eval()), (lambda qf: qf.train())
    table = None  # the frozen vision tower's features: the same for every model
    for folder in args.models:
        model = RetrievalModel.from_pretrained(folder).eval()
        if table is None:
            table = FeatureTable.build([p.images[0] for p in products], FeatureCache(model.vision), progress=False)
        rows = {"dropout off": in_batch(model, table, texts, off, off)}
        rows["dropout on"] = in_batch(model, table, texts, on, on)
        for group, pattern in GROUPS.items():
            rows[f"image path: {group} on"] = in_batch(model, table, texts, only(pattern), off)
        print(json.dumps({"model": folder, "dropout": model.config.qformer.dropout, "accuracy_loss": rows}), flush=True)
        print(f"\n{folder} (t2i accuracy % / ITC loss, {len(texts) // 64 * 64} {args.split} pairs in batches of 64)")
        for name, (acc, loss) in rows.items():
            print(f"  {name:42s} {acc:5.1f}  {loss:.3f}")


if __name__ == "__main__":
    main()
