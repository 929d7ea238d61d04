"""``unifashion train ...`` and ``unifashion eval ...`` commands."""

from __future__ import annotations

import argparse
import json


def cmd_train_retrieval(args: argparse.Namespace) -> int:
    from unifashion.config import RetrievalTrainingConfig
    from unifashion.training.retrieval import train_retrieval

    cfg = RetrievalTrainingConfig(
        phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        category_batches=args.category_batches,
        seed=args.seed,
        bf16=not args.no_bf16,
    )
    summary = train_retrieval(args.data, args.out, preset=args.preset, cfg=cfg, fmt=args.format, split=args.split)
    print(json.dumps(summary, indent=2))
    print(f"model -> {args.out}")
    return 0


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from unifashion.evaluation.retrieval import evaluate_model, save_json

    splits = [s for s in args.split.split(",") if s]
    result = evaluate_model(
        args.model,
        args.data,
        splits,
        args.format,
        seed=args.seed,
        rerank_k=args.rerank_k,
        cir_rerank_k=args.cir_rerank_k,
        max_queries=args.max_queries,
        bf16=not args.no_bf16,
        dump_dir=args.dump,
    )
    if args.json:
        save_json(args.json, result)
    for split, r in result["splits"].items():
        print(f"[{split}]")
        cmr = r["cmr"].get("random100", {})
        if "itc" in cmr:
            for d in ("i2t", "t2i"):
                m = cmr["itc"][d]
                line = f"  CMR random-100 {d}: R@1 {m['R@1']:.1f}  R@5 {m['R@5']:.1f}  R@10 {m['R@10']:.1f}"
                if "itc_itm" in cmr:
                    line += f"   (+ITM re-rank R@1 {cmr['itc_itm'][d]['R@1']:.1f})"
                print(line)
        if "full" in r["cmr"]:
            f = r["cmr"]["full"]
            print(f"  CMR full split: i2t R@1 {f['i2t']['R@1']:.1f}  t2i R@1 {f['t2i']['R@1']:.1f}")
        cir = r["cir"]
        if "composed" in cir:
            for name in ("composed", "composed_itm", "late_fusion", "text_only", "image_only"):
                if name in cir:
                    a = cir[name]["average"]
                    print(f"  CIR {name:<13} R@10 {a['R@10']:5.1f}  R@50 {a['R@50']:5.1f}  avg {a['avg']:5.1f}")
        elif "skipped" in cir:
            print(f"  CIR: skipped ({cir['skipped']})")
    if args.json:
        print(f"results -> {args.json}")
    return 0


def add_train_eval_commands(sub) -> None:
    from unifashion.config import RetrievalTrainingConfig
    from unifashion.data.formats import FORMATS

    train = sub.add_parser("train", help="train a model")
    tsub = train.add_subparsers(dest="train_command", metavar="COMMAND", required=True)
    p = tsub.add_parser("retrieval", help="phase 1a (ITC + ITM) then phase 2 (L_cir) of the Q-Former")
    p.add_argument("--data", required=True, help="dataset folder (any supported format)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--preset", default="mini", choices=("tiny", "mini", "paper"))
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--split", default="train")
    defaults = RetrievalTrainingConfig()
    p.add_argument("--phase1-epochs", type=float, default=defaults.phase1_epochs, help="ITC + ITM epochs (0: skip)")
    p.add_argument("--phase2-epochs", type=float, default=defaults.phase2_epochs, help="L_cir epochs (0: skip)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument(
        "--category-batches",
        type=float,
        default=defaults.category_batches,
        help="phase 1a: share of the items batched by category (same-category negatives)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 even where bf16 autocast is available")
    p.set_defaults(func=cmd_train_retrieval)

    ev = sub.add_parser("eval", help="evaluate a model")
    esub = ev.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    p = esub.add_parser("retrieval", help="cross-modal (random-100, full) and composed (Fashion-IQ protocol) retrieval")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val", help="one split or several, comma-separated (e.g. val,novel)")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--dump", default=None, help="also write query and index embeddings with their ids here")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-100 candidate sampling")
    p.add_argument("--rerank-k", type=int, default=10, help="CMR: ITM re-ranks each query's top k (0: off)")
    p.add_argument(
        "--cir-rerank-k", type=int, default=20, help="CIR: ITM re-ranks each query's top k (0: off; > 10 to move R@10)"
    )
    p.add_argument("--max-queries", type=int, default=1000, help="random-100 queries (a fixed-seed sample if more)")
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_eval_retrieval)
