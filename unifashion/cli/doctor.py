"""``unifashion doctor``: do the backbones of a preset load, and what is this machine."""

from __future__ import annotations

import argparse
import json

from unifashion.config import PRESETS


def cmd_doctor(args: argparse.Namespace) -> int:
    from unifashion.backbones.doctor import print_report, run_doctor

    report = run_doctor(args.preset)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check that the backbones of a preset load, and report versions")
    p.add_argument("--preset", default="mini", choices=PRESETS)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_doctor)
