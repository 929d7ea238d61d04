"""LoRA rank of the caption head, measured: quality and cost per rank after the same number of steps.

    python benchmarks/lora_rank_sweep.py --model RETRIEVAL_MODEL --data DIR [--ranks 0,16,64] [--steps 150]

For each rank (0 = no LoRA: the text adapter alone prompts the frozen LLM),
trains phase 1b from the same retrieval checkpoint, seed and batches, then
reports seconds per step, the held-out ITG loss on ``--eval-items`` products of
``--eval-split`` (every style), and the attribute accuracy of their greedy
``attributes``-style captions. Prints JSON. alpha = 2 x rank, as in the paper.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.config import CaptionTrainingConfig
from unifashion.data.formats import read_split
from unifashion.evaluation.attributes import attribute_scores
from unifashion.models.captioner import Captioner, Decoding
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.captioning import generate_captions
from unifashion.pipelines.retrieval import image_queries
from unifashion.training.data import caption_items
from unifashion.training.loop import LossLog
from unifashion.training.phase1 import train_phase1b_captioner
from unifashion.utils.hardware import autocast, quiet_libraries


@torch.no_grad()
def heldout_itg(
    captioner: Captioner, queries: torch.Tensor, styles: list[str], answers: list[str], bf16: bool
) -> float:
    captioner.eval()
    total, n = 0.0, 0
    for start in range(0, len(answers), 16):
        with autocast(bf16):
            loss = captioner.itg_loss(
                queries[start : start + 16], styles[start : start + 16], answers[start : start + 16]
            )
        k = len(answers[start : start + 16])
        total += loss.item() * k
        n += k
    return total / max(1, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a retrieval checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--ranks", default="0,16,64")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=CaptionTrainingConfig().lr)
    parser.add_argument("--eval-split", default="val")
    parser.add_argument("--eval-items", type=int, default=128)
    args = parser.parse_args()
    quiet_libraries()
    model = RetrievalModel.from_pretrained(args.model)
    cache = FeatureCache(model.vision)
    train = read_split(args.data, "train")
    table = image_queries(model, [r for p in train.products for r in p.images], cache, progress=False)
    base = CaptionTrainingConfig(batch_size=args.batch_size, lr=args.lr)
    items = caption_items(train, table, base.styles)
    cfg = replace(base, epochs=args.steps * args.batch_size / len(items))
    pool = read_split(args.data, args.eval_split).products
    held = pool[:: max(1, len(pool) // args.eval_items)][: args.eval_items]  # spread over the split's categories
    held_refs = tuple(p.images[0] for p in held)
    held_table = image_queries(model, list(held_refs), cache, progress=False)
    held_queries = held_table.batch(held_table.rows(held_refs))
    styles, answers, rows = [], [], []
    from unifashion.data.captions import style_texts

    for i, p in enumerate(held):
        for s in base.styles:
            for t in style_texts(p, s)[:1]:
                styles.append(s)
                answers.append(t)
                rows.append(i)
    results = []
    for rank in [int(r) for r in args.ranks.split(",")]:
        llm = replace(model.config.llm, lora_rank=rank, lora_alpha=2 * rank)
        torch.manual_seed(0)
        captioner = Captioner.build(llm, model.config.qformer.hidden_size)
        t0 = time.perf_counter()
        train_phase1b_captioner(captioner, items, table, cfg, LossLog(None), progress=False)
        seconds = time.perf_counter() - t0
        loss = heldout_itg(captioner, held_queries[rows], styles, answers, cfg.bf16)
        captions = generate_captions(captioner, held_queries, "attributes", Decoding("greedy", 60), progress=False)
        attrs = attribute_scores([p.attributes for p in held], captions)
        results.append(
            {
                "lora_rank": rank,
                "lora_alpha": 2 * rank,
                "trainable_parameters": sum(p.numel() for p in captioner.parameters() if p.requires_grad),
                "seconds_per_step": round(seconds / max(1, round(cfg.epochs * len(items) / cfg.batch_size)), 3),
                "heldout_itg_loss": round(loss, 4),
                "attributes_correct": round(attrs["correct"], 1),
                "attributes_wrong": round(attrs["wrong"], 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
