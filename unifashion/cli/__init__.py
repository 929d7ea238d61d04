"""The ``unifashion`` command: one module per command group, registered here in one place.

Each subcommand imports what it needs when it runs, so ``unifashion --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from unifashion.cli import catalog, convert, data, doctor, eval, inference, recipes, train
from unifashion.utils.errors import UniFashionError
from unifashion.utils.hardware import quiet_libraries

# In the order ``unifashion --help`` lists them.
COMMAND_GROUPS = (doctor, recipes, data, train, eval, inference, catalog, convert)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unifashion",
        description="UniFashion: fashion retrieval, composed retrieval, captioning and generation in one model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
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
