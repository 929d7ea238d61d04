"""The ``unifashion`` command.

Each subcommand imports what it needs when it runs, so ``unifashion --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from unifashion.utils.errors import UniFashionError
from unifashion.utils.hardware import quiet_libraries

# ---------------------------------------------------------------------------
# doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    from unifashion.doctor import print_report, run_doctor

    report = run_doctor(args.preset)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


# ---------------------------------------------------------------------------
# quickstart


def cmd_quickstart(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unifashion.quickstart import run_quickstart

    report = run_quickstart(args.out, args.size, seed=args.seed, resume=args.resume, progress=not args.quiet)
    out = Path(args.out).resolve()
    minutes = report["timing"]["total_seconds"] / 60
    print(f"Done in {minutes:.1f} min. Report: {out / 'report.html'} (figures: {out / 'report.json'}); "
          f"model: {out / 'model'}")  # fmt: skip
    print(f"Search it in a browser: unifashion serve --model {out / 'model'} --catalog {out / 'catalog'}, "
          "then open http://127.0.0.1:8000/")  # fmt: skip
    for note in report.get("notes", []):
        print(f"  - {note}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from unifashion.evaluation.ablation import format_table, run_ablation

    result = run_ablation(args.data, args.out, args.size, seed=args.seed, progress=not args.quiet)
    print(format_table(result))
    print(f"({result['seconds'] / 60:.1f} min; every figure in {args.out}/ablation.json)")
    return 0


# ---------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unifashion",
        description="UniFashion: fashion retrieval, composed retrieval, captioning and generation in one model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="check that the backbones of a preset load, and report versions")
    p.add_argument("--preset", default="mini", choices=("tiny", "mini", "paper"))
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("quickstart", help="the whole job on FashionSynth: data, every phase, every evaluation, report")
    p.add_argument("--out", required=True, help="folder for the data, the model and report.html / report.json")
    p.add_argument("--size", default="small", choices=("small", "full", "tiny"),
                   help="small: ~15 min on 2 CPU cores; full: the size of the quality targets (~2 h); "
                   "tiny: a one-minute smoke test with random tiny networks")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("ablate", help="the paper's Table 5: Q-Former only, + LLM, + diffusion, full")
    p.add_argument("--data", required=True, help="dataset folder (e.g. the quickstart's DIR/data)")
    p.add_argument("--out", required=True, help="folder for the four models and ablation.json")
    p.add_argument("--size", default="small", choices=("small", "full", "tiny"), help="training length, as quickstart")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ablate)

    from unifashion.data.cli import add_data_commands

    add_data_commands(sub)

    from unifashion.training.cli import add_train_eval_commands

    add_train_eval_commands(sub)

    from unifashion.training.cli import add_caption_command

    add_caption_command(sub)

    from unifashion.catalog.cli import add_catalog_commands

    add_catalog_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except UniFashionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
