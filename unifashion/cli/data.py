"""``unifashion data ...``: synth, stats, preview."""

from __future__ import annotations

import argparse
import json


def cmd_synth(args: argparse.Namespace) -> int:
    from unifashion.data.synth.generate import SynthConfig, write_fashionsynth

    cfg = SynthConfig(
        products=args.products,
        seed=args.seed,
        size=args.size,
        max_views=args.views,
        tryon=args.tryon,
        workers=args.workers,
        layouts=tuple(x for x in args.layouts.split(",") if x),
    )
    summary = write_fashionsynth(args.out, cfg, progress=not args.quiet)
    c = summary["counts"]
    print(
        f"FashionSynth: {c['products']} products ({', '.join(f'{k} {v}' for k, v in c['per_split'].items())}), "
        f"{c['images']} images, {c['triplets']} triplets, {c['tryon_samples']} try-on samples, "
        f"{c['files']} files in {summary['seconds']} s with {summary['workers']} workers -> {args.out}"
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from unifashion.data.formats import dataset_stats

    categories = args.categories.split(",") if args.categories else None
    stats = dataset_stats(
        args.dir, args.format, skip_bad=args.skip_bad, check_images=args.check_images, categories=categories
    )
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{stats['root']} ({stats['format']})")
    for split, s in stats["splits"].items():
        t = s["totals"]
        print(
            f"  {split:<10} products {t['products']:>7}  images {t['images']:>7}  captions {t['captions']:>7}  "
            f"triplets {t['triplets']:>7}  pairs {t['paired_pairs']:>6}/{t['unpaired_pairs']:<6}  "
            f"skipped {s['skipped']['count']}"
        )
        for note in s["notes"]:
            print(f"             note: {note}")
        for reason, n in s["skipped"]["reasons"].items():
            print(f"             skipped {n}: {reason}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from unifashion.data.preview import make_contact_sheet

    out = make_contact_sheet(args.dir, args.out, args.format, args.split)
    print(f"contact sheet -> {out}")
    return 0


def register(sub) -> None:
    from unifashion.data.formats import CHECK_IMAGES, FORMATS

    data = sub.add_parser("data", help="built-in FashionSynth data and readers of the real dataset formats")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)

    p = dsub.add_parser(
        "synth", help="write a FashionSynth catalogue (folder, Fashion-IQ, VITON-HD, Dress Code layouts)"
    )
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--products", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image size in pixels (persons are size x 3/4 size)")
    p.add_argument("--views", type=int, default=2, help="at most this many views per product")
    p.add_argument("--tryon", type=int, default=None, help="try-on/design samples (default: a quarter of the products)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    p.add_argument(
        "--layouts",
        default="fashioniq,vitonhd,dresscode",
        help="layouts written besides the folder format: any of fashioniq, vitonhd, dresscode, fashiongen, fashion200k",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_synth)

    p = dsub.add_parser("stats", help="what a reader finds in a dataset folder, per split and category")
    p.add_argument("dir")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: detected")
    p.add_argument("--json", action="store_true")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed items and count them, instead of stopping")
    p.add_argument(
        "--check-images",
        choices=CHECK_IMAGES,
        default="decode",
        help="decode every image (default), only check that files exist, or neither",
    )
    p.add_argument("--categories", default=None, help="comma-separated categories to read (default: all)")
    p.set_defaults(func=cmd_stats)

    p = dsub.add_parser("preview", help="a contact sheet of products, triplets and try-on samples")
    p.add_argument("dir")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--format", choices=FORMATS, default=None)
    p.add_argument("--split", default=None, help="default: train")
    p.set_defaults(func=cmd_preview)
