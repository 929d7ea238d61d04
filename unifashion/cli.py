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

    from unifashion.data.cli import add_data_commands

    add_data_commands(sub)

    from unifashion.training.cli import add_train_eval_commands

    add_train_eval_commands(sub)

    from unifashion.training.cli import add_caption_command

    add_caption_command(sub)
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
