"""``unifashion quickstart`` (the main job) and ``unifashion ablate`` (the paper's Table 5)."""

from __future__ import annotations

import argparse

from unifashion.recipes.quickstart import SIZES


def cmd_quickstart(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unifashion.recipes.quickstart import run_quickstart

    report = run_quickstart(
        args.out, args.size, seed=args.seed, train_seed=args.train_seed, resume=args.resume, progress=not args.quiet
    )
    out = Path(args.out).resolve()
    minutes = report["timing"]["total_seconds"] / 60
    print(
        f"Done in {minutes:.1f} min. Report: {out / 'report.html'} (figures: {out / 'report.json'}); "
        f"model: {out / 'model'}"
    )
    print(
        f"Search it in a browser: unifashion serve --model {out / 'model'} --catalog {out / 'catalog'}, "
        "then open http://127.0.0.1:8000/"
    )
    for note in report.get("notes", []):
        print(f"  - {note}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from unifashion.recipes.ablation import format_table, run_ablation

    result = run_ablation(args.data, args.out, args.size, seeds=args.seeds, resume=args.resume, progress=not args.quiet)
    print(format_table(result))
    print(f"({result['seconds'] / 60:.1f} min; every figure in {args.out}/ablation.json)")
    return 0


class _one_seed(argparse.Action):
    """``--seed N``: the same as ``--seeds N``."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, [value])


def _read_json(file, what: str) -> object:
    import json

    from unifashion.utils.errors import ConfigError

    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: cannot read {what} ({exc})") from None


def _read_ablation(path: str):
    """The ``ablation.json`` of an ``unifashion ablate --out`` folder (or the file), else None."""
    from pathlib import Path

    from unifashion.utils.errors import ConfigError

    file = Path(path)
    if file.is_dir():
        if (file / "report.json").is_file() or not (file / "ablation.json").is_file():
            return None
        file = file / "ablation.json"
    elif file.name != "ablation.json":
        return None
    result = _read_json(file, "an ablation")
    if not isinstance(result, dict) or not isinstance(result.get("rows"), dict):
        raise ConfigError(f"{file}: not an ablation.json of unifashion ablate (no 'rows')")
    return result


def _read_report(path: str):
    from pathlib import Path

    from unifashion.utils.errors import ConfigError

    file = Path(path) / "report.json" if Path(path).is_dir() else Path(path)
    report = _read_json(file, "a quickstart report")
    if not isinstance(report, dict) or "timing" not in report:
        raise ConfigError(f"{file}: not a quickstart report.json (no 'timing')")
    return report


def _command_args(args: argparse.Namespace) -> list[str]:
    """The report command's own arguments as a user types them (the same whatever the caller's argv)."""
    out = [args.run]
    if args.spread_from:
        out += ["--spread-from", args.spread_from]
    if not args.into:
        return [*out, "--markdown"]
    return [*out, "--into", args.into, *(["--block", args.block] if args.block else [])]


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from unifashion.evaluation.markdown import report_markdown
    from unifashion.evaluation.targets import evaluate_targets, format_targets
    from unifashion.utils.errors import ConfigError

    if args.block and not args.into:
        raise ConfigError("--block: names a block of the --into file; give --into FILE too")
    ablation = _read_ablation(args.run)
    if ablation is not None:
        return _report_ablation(args, ablation)
    report = _read_report(args.run)
    other = _read_report(args.spread_from) if args.spread_from else None
    try:
        targets = evaluate_targets(report, other)  # refuses a second run of other work
    except ConfigError as exc:
        raise ConfigError(f"--spread-from {args.spread_from}: {exc}") from None
    if args.json:
        print(json.dumps(targets, indent=1))
    elif args.markdown or args.into:
        _write_markdown(args, report_markdown(report, targets, _command(args)))
    else:
        print(format_targets(targets))
    return 0


def _command(args: argparse.Namespace) -> str:
    import shlex

    return "unifashion " + shlex.join(["report", *_command_args(args)])


def _write_markdown(args: argparse.Namespace, text: str) -> None:
    """Print ``text``, or write it into the --into file's report block."""
    if not args.into:
        print(text)
        return
    from pathlib import Path

    from unifashion.evaluation.markdown import replace_report_block
    from unifashion.utils.errors import ConfigError
    from unifashion.utils.io import atomic_write_text

    file = Path(args.into)
    try:
        old = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--into {file}: cannot read it ({exc})") from None
    atomic_write_text(file, replace_report_block(old, text, str(file), args.block))
    print(f"wrote the report's tables into {file}" + (f" (block {args.block!r})" if args.block else ""))


def _report_ablation(args: argparse.Namespace, result: dict) -> int:
    """``report`` of an ``unifashion ablate`` folder: its Table 5 (there are no targets to check)."""
    import json

    from unifashion.evaluation.markdown import ablation_markdown
    from unifashion.recipes.ablation import format_table
    from unifashion.utils.errors import ConfigError

    if args.spread_from:
        raise ConfigError(
            f"--spread-from: {args.run} is an ablation, not a quickstart run (an ablation measures its spread "
            "with --seeds)"
        )
    if args.json:
        print(json.dumps(result, indent=1))
    elif args.markdown or args.into:
        _write_markdown(args, ablation_markdown(result, _command(args)))
    else:
        print(format_table(result))
    return 0


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="the whole job on FashionSynth: data, every phase, every evaluation, report")
    p.add_argument("--out", required=True, help="folder for the data, the model and report.html / report.json")
    p.add_argument(
        "--size",
        default="small",
        choices=tuple(SIZES),
        help="small: ~13 min on 2 CPU cores without native bf16 (2-3x faster with it); full: the size "
        "of the quality targets (~1 h on 2 cores with native bf16, 2 h measured without); "
        "tiny: a one-minute smoke test with random tiny networks",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data (and of training, unless --train-seed)")
    p.add_argument(
        "--train-seed",
        type=int,
        metavar="N",
        help="seed of every training stage (default: --seed); a second run with another --train-seed on the "
        "same data gives the spread of each figure (unifashion report RUN --spread-from SECOND_RUN)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("ablate", help="the paper's Table 5: Q-Former only, + LLM, + diffusion, full")
    p.add_argument("--data", required=True, help="dataset folder (e.g. the quickstart's DIR/data)")
    p.add_argument("--out", required=True, help="folder for the four models and ablation.json")
    p.add_argument("--size", default="small", choices=tuple(SIZES), help="training length, as quickstart")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        metavar="SEED",
        help="phase 1 runs once with the first seed; every row runs phase 2 once per seed and reads the mean, "
        "with the range beside it (default: 0)",
    )
    seeds.add_argument("--seed", type=int, dest="seeds", action=_one_seed, help="the same as --seeds SEED")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted ablation in --out: finished trainings and evaluations are kept; "
        "a finished one resumed with more --seeds trains and evaluates only the new seeds",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser(
        "report", help="the quality targets of a quickstart run (and the README's tables), or an ablation's table"
    )
    p.add_argument(
        "run", help="a quickstart --out folder or its report.json; or an ablate --out folder or its ablation.json"
    )
    p.add_argument(
        "--spread-from",
        metavar="RUN",
        help="a second run (another --seed): each figure's spread is the difference of the two runs",
    )
    p.add_argument("--markdown", action="store_true", help="every README table of the run, as Markdown")
    p.add_argument("--json", action="store_true", help="the targets as JSON")
    p.add_argument(
        "--into",
        metavar="FILE",
        help="write the --markdown tables into FILE (e.g. README.md) between its lines "
        "'<!-- report: begin ... -->' and '<!-- report: end -->', replacing what was there",
    )
    p.add_argument(
        "--block",
        metavar="NAME",
        help="with --into: the block named NAME, between '<!-- report: begin NAME ... -->' and "
        "'<!-- report: end NAME -->' (one file can hold the tables of several runs)",
    )
    p.set_defaults(func=cmd_report)
