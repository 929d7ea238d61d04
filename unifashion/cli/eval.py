"""``unifashion eval retrieval | captioning | generation``: the paper's protocols, one command per task."""

from __future__ import annotations

import argparse

from unifashion.cli.args import add_decoding_arguments, decoding_from, splits_arg, styles_arg


def cmd_eval_retrieval(args: argparse.Namespace) -> int:
    from unifashion.evaluation.retrieval import evaluate_model, save_json

    splits = splits_arg(args.split)
    if args.candidates and len(splits) > 1:
        from unifashion.utils.errors import UniFashionError

        raise UniFashionError(f"--candidates lists the products of one split; --split names {len(splits)}")
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
        candidate_lists=args.candidates,
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
            variants = ("composed", "composed_itm", "composed_captions", "composed_fused", "late_fusion")
            for name in (*variants, "text_only", "image_only"):
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


def cmd_eval_captioning(args: argparse.Namespace) -> int:
    from unifashion.evaluation.captioning import evaluate_captioning
    from unifashion.evaluation.retrieval import save_json

    splits = splits_arg(args.split)
    batch = {} if args.batch_size is None else {"batch_size": args.batch_size}  # else CAPTION_BATCH
    result = evaluate_captioning(
        args.model,
        args.data,
        splits,
        args.format,
        baseline_split=args.baseline_split or None,
        styles=styles_arg(args.styles),
        decoding=decoding_from(args),
        max_items=args.max_items,
        bf16=not args.no_bf16,
        **batch,
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
                line = (
                    f"  {style:<12} {who:<17} BLEU-4 {x['BLEU-4']:5.1f}  ROUGE-L {x['ROUGE-L']:5.1f}  "
                    f"CIDEr {x['CIDEr']:6.1f}"
                )
                if x.get("METEOR") is not None:
                    line += f"  METEOR {x['METEOR']:5.1f}"
                if "attributes" in x:
                    a = x["attributes"]
                    line += f"  attributes correct {a['correct']:5.1f} / wrong {a['wrong']:5.1f}"
                print(line)
    if args.json:
        print(f"results -> {args.json}")
    return 0


def cmd_eval_generation(args: argparse.Namespace) -> int:
    from unifashion.evaluation.generation import GenerationEvalConfig, evaluate_generation

    sweep = (
        tuple((s.split(":")[0], int(s.split(":")[1])) for s in args.sampler_sweep.split(",") if s)
        if args.sampler_sweep
        else ()
    )
    cfg = GenerationEvalConfig(
        limit=args.limit,
        sampler=args.sampler,  # None: each head's own
        steps=args.steps,
        guidance_scale=args.guidance,
        sampler_sweep=sweep,
        batch_size=args.batch_size,
        seed=args.seed,
        samples_dir=args.samples,
        inception_weights=args.inception_weights,
        clip_model=args.clip_model,
    )
    splits = splits_arg(args.split)
    result = evaluate_generation(args.model, args.data, splits, cfg, args.format, args.json)
    for split, r in result["splits"].items():
        print(f"[{split}]")
        for key in ("text", "composed", "composed_text_only", "real_images"):
            if key in r:
                x = r[key]
                print(f"  {key:<19} " + "  ".join(f"{k} {v}" for k, v in x.items() if isinstance(v, int | float)))
        for name, x in r.get("samplers", {}).items():
            print(
                f"  sampler {name:<10} fid_effnet {x['fid_effnet']:.2f}  colour {x['colour_accuracy']:.1f}  "
                f"s/image {x['seconds_per_image']:.3f}"
            )
        for task in ("tryon", "design"):
            for setting, x in r.get(task, {}).items():
                print(
                    f"  {task} {setting:<9} "
                    + "  ".join(f"{k} {v}" for k, v in x.items() if isinstance(v, int | float))
                )
    if args.json:
        print(f"results -> {args.json}")
    return 0


def _read_result(path: str | None, what: str):
    import json
    from pathlib import Path

    from unifashion.utils.errors import UniFashionError

    if path is None:
        return None
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UniFashionError(f"--{what} {path}: cannot read the JSON of `eval {what} --json` ({exc})") from exc
    if not isinstance(result, dict) or not isinstance(result.get("splits"), dict):
        raise UniFashionError(f"--{what} {path}: not the JSON of `eval {what} --json` (no 'splits' object)")
    return result


def cmd_eval_paper(args: argparse.Namespace) -> int:
    from unifashion.evaluation.published import paper_tables
    from unifashion.utils.errors import UniFashionError

    results = {w: _read_result(getattr(args, w), w) for w in ("retrieval", "captioning", "generation")}
    if not any(results.values()):
        raise UniFashionError("give at least one of --retrieval, --captioning, --generation (`eval ... --json`)")
    try:
        text = paper_tables(**results, split=args.split, cir_split=args.cir_split, style=args.style)
    except ValueError as exc:
        raise UniFashionError(str(exc)) from exc
    print(text, end="")
    return 0


def register(sub) -> None:
    from unifashion.data.formats import FORMATS

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
        "--candidates",
        default=None,
        metavar="FILE",
        help='random-100 from fixed candidate lists (JSON lines {"query": id, "candidates": [ids], '
        'optional "direction": "i2t"|"t2i"}) instead of the seeded sampler; one split only',
    )
    p.add_argument(
        "--candidate-captions",
        default=None,
        help="JSON of captions for the split's products (eval captioning's output, or {id: caption}); "
        "default: generated by the model's caption head when it has one",
    )
    p.add_argument("--caption-style", default="description", help="style of the candidate captions")
    from unifashion.config import CAPTION_WEIGHT

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
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="captions decoded together (default: CAPTION_BATCH of unifashion.pipelines.captioning)",
    )
    p.add_argument("--max-items", type=int, default=None, help="score only the first N products of each split")
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_eval_captioning)

    from unifashion.models.generator import SAMPLERS

    p = esub.add_parser("generation", help="fid_effnet/kid_effnet, colour and category accuracy, samplers, try-on")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val", help="one split or several, comma-separated")
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--json", default=None)
    p.add_argument("--limit", type=int, default=300, help="prompts / try-on samples per setting")
    p.add_argument("--sampler", default=None, choices=SAMPLERS, help="default: the model's")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument(
        "--sampler-sweep",
        default="plms:50,ddim:20,dpm++:20",
        help="samplers compared on the text prompts, NAME:STEPS comma-separated ('' = off)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", default=None, help="write sample sheets (PNG) to this folder")
    p.add_argument(
        "--inception-weights",
        default=None,
        help="safetensors of the published FID's Inception-v3: adds fid_inception / kid_inception",
    )
    p.add_argument(
        "--clip-model",
        default=None,
        help="CLIP checkpoint folder (config.json + safetensors + processor files): adds clip_score, "
        "the paper's CLIP-S as torchmetrics computes it",
    )
    p.set_defaults(func=cmd_eval_generation)

    p = esub.add_parser(
        "paper", help="Tables 1-4 of the paper: this run's figures beside the published ones (Markdown)"
    )
    p.add_argument("--retrieval", default=None, help="JSON of `eval retrieval --json` (Tables 1 and 4)")
    p.add_argument("--captioning", default=None, help="JSON of `eval captioning --json` (Table 2)")
    p.add_argument("--generation", default=None, help="JSON of `eval generation --json` (Table 3)")
    p.add_argument("--split", default=None, help="the split to read (default: the only one each JSON holds)")
    p.add_argument("--cir-split", default=None, help="Table 4's split when it differs (Fashion-IQ: val)")
    p.add_argument("--style", default="description", help="Table 2's caption style")
    p.set_defaults(func=cmd_eval_paper)
