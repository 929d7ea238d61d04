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


def cmd_train_pipeline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unifashion.training.pipeline import load_pipeline_config, train_pipeline
    from unifashion.utils.errors import ConfigError

    if not args.config or not args.pipeline_out:
        raise ConfigError("train: give --config CONFIG and --out MODEL, or a COMMAND (see unifashion train --help)")
    cfg = load_pipeline_config(args.config, args.set)
    summary = train_pipeline(cfg, Path(args.pipeline_out), resume=args.resume)
    print(json.dumps({"out": args.pipeline_out, "stages": summary}, indent=2, default=str))
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
        candidate_captions=args.candidate_captions,
        caption_style=args.caption_style,
        caption_weight=args.caption_weight,
        with_captions=not args.no_captions,
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
            for name in ("composed", "composed_itm", "composed_captions", "composed_fused", "late_fusion",
                         "text_only", "image_only"):  # fmt: skip
                if name in cir:
                    a = cir[name]["average"]
                    print(f"  CIR {name:<17} R@10 {a['R@10']:5.1f}  R@50 {a['R@50']:5.1f}  avg {a['avg']:5.1f}")
            if "skipped" in cir.get("variants", {}):
                print(f"  CIR caption variants: skipped ({cir['variants']['skipped']})")
        elif "skipped" in cir:
            print(f"  CIR: skipped ({cir['skipped']})")
    if args.json:
        print(f"results -> {args.json}")
    return 0


def _styles(text: str) -> tuple[str, ...]:
    from unifashion.models.captioner import CAPTION_STYLES
    from unifashion.utils.errors import ConfigError

    styles = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in styles:
        if s not in CAPTION_STYLES:
            raise ConfigError(f"--styles: expected a comma-separated subset of {', '.join(CAPTION_STYLES)}, got {s!r}")
    if not styles:
        raise ConfigError("--styles: name at least one caption style")
    return styles


def _decoding(args: argparse.Namespace):
    from unifashion.models.captioner import Decoding

    return Decoding(mode=args.decoding, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                    temperature=args.temperature, top_p=args.top_p, seed=args.seed)  # fmt: skip


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--decoding", default="greedy", choices=("greedy", "beam", "sample"))
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--num-beams", type=int, default=4, help="beam search width (--decoding beam)")
    p.add_argument("--temperature", type=float, default=0.7, help="--decoding sample")
    p.add_argument("--top-p", type=float, default=0.9, help="--decoding sample")


def cmd_train_captioning(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unifashion.config import CaptionTrainingConfig, ModelConfig
    from unifashion.models.retrieval import read_checkpoint_config
    from unifashion.training.captioning import train_captioning, with_lora

    cfg = CaptionTrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        bf16=not args.no_bf16,
        styles=_styles(args.styles),
    )
    # The LLM of the checkpoint's preset, with the LoRA size asked for.
    llm = ModelConfig.from_dict(read_checkpoint_config(Path(args.model))["config"]).llm
    llm = with_lora(llm, args.lora_rank, args.lora_alpha)
    summary = train_captioning(args.model, args.data, args.out, cfg=cfg, llm=llm, fmt=args.format, split=args.split)
    print(json.dumps(summary, indent=2))
    print(f"model -> {args.out}")
    return 0


def cmd_eval_captioning(args: argparse.Namespace) -> int:
    from unifashion.evaluation.captioning import evaluate_captioning
    from unifashion.evaluation.retrieval import save_json

    splits = [s for s in args.split.split(",") if s]
    result = evaluate_captioning(
        args.model,
        args.data,
        splits,
        args.format,
        baseline_split=args.baseline_split or None,
        styles=_styles(args.styles),
        decoding=_decoding(args),
        batch_size=args.batch_size,
        max_items=args.max_items,
        bf16=not args.no_bf16,
    )
    if args.json:
        save_json(args.json, result)
    for split, r in result["splits"].items():
        print(f"[{split}] {r['products']} products")
        for style, m in r["styles"].items():
            if "skipped" in m:
                print(f"  {style}: skipped ({m['skipped']})")
                continue
            for who in ("model", "nearest_neighbour"):
                if who not in m or "skipped" in m[who]:
                    continue
                x = m[who]
                line = f"  {style:<12} {who:<17} BLEU-4 {x['BLEU-4']:5.1f}  ROUGE-L {x['ROUGE-L']:5.1f}  CIDEr {x['CIDEr']:6.1f}"
                if x.get("METEOR") is not None:
                    line += f"  METEOR {x['METEOR']:5.1f}"
                if "attributes" in x:
                    a = x["attributes"]
                    line += f"  attributes correct {a['correct']:5.1f} / wrong {a['wrong']:5.1f}"
                print(line)
    if args.json:
        print(f"results -> {args.json}")
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from unifashion.captioning import caption_images, load_captioning_model
    from unifashion.models.captioner import check_style

    model, captioner = load_captioning_model(args.model)
    check_style(args.style, captioner.styles)
    captions = caption_images(model, captioner, args.images, args.style, _decoding(args), bf16=not args.no_bf16)
    if args.json:
        print(json.dumps([{"image": i, "caption": c} for i, c in zip(args.images, captions, strict=True)], indent=2))
    else:
        for image, caption in zip(args.images, captions, strict=True):
            print(f"{image}\t{caption}")
    return 0


def add_caption_command(sub) -> None:
    from unifashion.models.captioner import CAPTION_STYLES

    p = sub.add_parser("caption", help="caption images with a model that has a caption head")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", required=True)
    p.add_argument("--style", default="description", choices=tuple(CAPTION_STYLES))
    add_decoding_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of --decoding sample")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of tab-separated lines")
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_caption)


def add_train_eval_commands(sub) -> None:
    from unifashion.config import RetrievalTrainingConfig
    from unifashion.data.formats import FORMATS

    train = sub.add_parser(
        "train",
        help="train a model: every phase from a config file (--config), or one part (COMMAND)",
        description="With --config: phase 1a, phase 1b (caption head, VAE, image heads) and phase 2, "
        "resumable (--resume); runs under torchrun / accelerate launch as it is. Or one part with COMMAND.",
    )
    train.add_argument("--config", default=None, help="TOML or YAML file of the run (see configs/)")
    train.add_argument("--out", dest="pipeline_out", default=None, help="model folder to write (with --config)")
    train.add_argument("--resume", action="store_true", help="continue the run of --out from its last checkpoint")
    train.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override one config value (TOML syntax), e.g. --set retrieval.phase1_epochs=0.5")  # fmt: skip
    train.set_defaults(func=cmd_train_pipeline)
    tsub = train.add_subparsers(dest="train_command", metavar="COMMAND", required=False)
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

    from unifashion.config import CaptionTrainingConfig

    cdef = CaptionTrainingConfig()
    p = tsub.add_parser("captioning", help="phase 1b of the caption head: adapter + LoRA on ITG, Q-Former frozen")
    p.add_argument("--model", required=True, help="a retrieval checkpoint (unifashion train retrieval)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="checkpoint to write (the retrieval weights + captioner/)")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--split", default="train")
    p.add_argument("--epochs", type=float, default=cdef.epochs)
    p.add_argument("--batch-size", type=int, default=cdef.batch_size)
    p.add_argument("--lr", type=float, default=cdef.lr)
    p.add_argument("--lora-rank", type=int, default=None, help="default: the preset's")
    p.add_argument("--lora-alpha", type=int, default=None, help="default: twice the rank")
    p.add_argument("--styles", default=",".join(cdef.styles), help="caption styles to train, comma-separated")
    p.add_argument("--seed", type=int, default=cdef.seed)
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_train_captioning)

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
    p.add_argument(
        "--candidate-captions",
        default=None,
        help="JSON of captions for the split's products (eval captioning's output, or {id: caption}); "
        "default: generated by the model's caption head when it has one",
    )
    p.add_argument("--caption-style", default="description", help="style of the candidate captions")
    from unifashion.evaluation.retrieval import CAPTION_WEIGHT

    p.add_argument(
        "--caption-weight", type=float, default=CAPTION_WEIGHT, help="w in sim(e_cls, Z_T) + w * sim(e_cls, Z_C)"
    )
    p.add_argument("--no-captions", action="store_true", help="skip the caption-assisted CIR variants")
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_eval_retrieval)

    p = esub.add_parser("captioning", help="BLEU/METEOR/ROUGE-L/CIDEr, attribute accuracy, nearest-neighbour baseline")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val", help="one split or several, comma-separated (e.g. val,novel)")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--json", default=None)
    p.add_argument("--styles", default="description,title", help="caption styles to score, comma-separated")
    p.add_argument("--baseline-split", default="train", help="where the nearest-neighbour baseline looks ('' = off)")
    add_decoding_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="seed of --decoding sample")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-items", type=int, default=None, help="score only the first N products of each split")
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_eval_captioning)

    from unifashion.cli_generation import add_generation_commands

    add_generation_commands(sub, tsub, esub)
