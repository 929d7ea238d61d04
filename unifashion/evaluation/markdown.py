"""A quickstart ``report.json`` as the README's Markdown tables (``unifashion report RUN --markdown``).

The README's quality tables are printed by this module from one run's report, never copied by
hand: targets, the paper's Tables 1-4 and the time of every stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unifashion.evaluation.report import _get
from unifashion.evaluation.targets import format_targets
from unifashion.utils.errors import ConfigError

CAPTION_KEYS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _cell(x: Any, decimals: int = 1) -> str:
    if isinstance(x, bool) or x is None:
        return "-"
    if isinstance(x, int | float):
        return f"{x:.{decimals}f}"
    return str(x)


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], decimals: Sequence[int] = ()) -> str:
    """A Markdown table; the first cell of a row is its label, numbers get ``decimals[column - 1]``
    decimals (one where it does not say)."""
    places = lambda i: decimals[i - 1] if i - 1 < len(decimals) else 1
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c, places(i)) if i else str(c) for i, c in enumerate(r)) + " |" for r in rows]
    return "\n".join(lines)


def cmr_markdown(cmr: Any) -> str:
    rows = []
    for label, path in (
        ("random-100", ("random100",)),
        ("random-100, ITM re-ranking", ("random100_itm_rerank",)),
        ("full split", ("full",)),
        ("after phase 1a only, random-100", ("baseline", "random100")),
    ):
        p = _get(cmr, *path)
        if isinstance(p, Mapping):
            rows.append([label, *(_get(p, d, k) for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10"))])
    head = ["", *(f"{d} {k}" for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10"))]
    return table(head, rows)


def captioning_markdown(cap: Any) -> str:
    shares = _get(cap, "attributes") or {}
    rows = []
    for split, style, values, baseline in (
        ("val", "description", cap, _get(cap, "baseline_nn")),
        ("val", "title", _get(cap, "title"), None),
        ("novel", "description", _get(cap, "novel"), _get(cap, "novel", "baseline_nn")),
    ):
        if not isinstance(values, Mapping):
            continue
        attr = shares.get(split, {}) if style == "description" else {}
        rows.append([split, style, "model", *(values.get(k) for k in CAPTION_KEYS), _get(attr, "model", "correct")])
        if isinstance(baseline, Mapping):
            rows.append(
                [
                    split,
                    style,
                    "nearest neighbour",
                    *(baseline.get(k) for k in CAPTION_KEYS),
                    _get(attr, "nearest_neighbour", "correct"),
                ]
            )
    return table(["split", "style", "captions", *CAPTION_KEYS, "attributes correct %"], rows, (0, 0))


def generation_markdown(gen: Any) -> str:
    if not isinstance(gen, Mapping):
        return "not run"
    keys = ("colour_accuracy", "category_accuracy", "itc_score", "fid_effnet", "seconds_per_image")
    rows = [
        [label, *(_get(v, k) for k in keys)]
        for label, v in (
            (f"text -> image ({gen.get('sampler')}, {gen.get('n')} prompts)", gen),
            ("composed (reference + text)", gen.get("composed")),
            ("real images (the ceiling)", gen.get("real")),
        )
        if isinstance(v, Mapping)
    ]
    rows += [[f"text -> image, {name}", *(_get(v, k) for k in keys)] for name, v in (gen.get("samplers") or {}).items()]
    parts = [table(["", "colour %", "category %", "itc_score", "fid_effnet", "s / image"], rows, (1, 1, 1, 2, 3))]
    person = [
        [f"{task}, {setting}", *(_get(gen, task, setting, k) for k in ("colour_accuracy", "ssim", "fid_effnet"))]
        for task in ("tryon", "design")
        for setting in ("paired", "unpaired")
        if isinstance(_get(gen, task, setting), Mapping)
    ]
    if person:
        parts.append(table(["", "garment colour %", "SSIM", "fid_effnet"], person, (1, 3, 2)))
    return "\n\n".join(parts)


def cir_markdown(cir: Any) -> str:
    if not isinstance(cir, Mapping):
        return "not run"
    rows = [["composed query (Eq. 9)", *(_get(cir, "average", k) for k in ("R@10", "R@50", "avg"))]]
    for name, v in (cir.get("variants") or {}).items():
        if isinstance(v, Mapping) and "avg" in v:
            rows.append([f"caption library: {name}", v.get("R@10"), v.get("R@50"), v.get("avg")])
    for name, v in (cir.get("baselines") or {}).items():
        rows.append([f"baseline: {name.replace('_', ' ')}", _get(v, "R@10"), _get(v, "R@50"), _get(v, "avg")])
    early = cir.get("after_phase1a")
    if isinstance(early, Mapping):
        rows.append(["after phase 1a: composed query", *(_get(early, "composed", k) for k in ("R@10", "R@50", "avg"))])
        for name, v in (early.get("baselines") or {}).items():
            label = f"after phase 1a: baseline: {name.replace('_', ' ')}"
            rows.append([label, _get(v, "R@10"), _get(v, "R@50"), _get(v, "avg")])
    out = table(["", "R@10", "R@50", "average"], rows)
    saturated, gallery = cir.get("saturated"), cir.get("gallery") or {}
    if isinstance(saturated, Mapping) and saturated:
        parts = [f"{cat} ({gallery.get(cat, '?')} images): {', '.join(names)}" for cat, names in saturated.items()]
        out += "\n\nSaturated (gallery no larger than K, so R@K is 100 whatever the model does): " + "; ".join(parts)
    return out


def timing_markdown(timing: Any) -> str:
    rows = [[name, seconds / 60] for name, seconds in (_get(timing, "stages") or {}).items()]
    rows += [[f"training: {name}", seconds / 60] for name, seconds in (_get(timing, "training_stages") or {}).items()]
    total = _get(timing, "total_seconds")
    if isinstance(total, int | float):
        rows.append(["**total**", total / 60])
    return table(["stage", "minutes"], rows)


def report_markdown(report: Mapping[str, Any], targets: Mapping[str, Any], command: str) -> str:
    """Every README table of one run, each under the command that made it."""
    sections = [
        ("Targets", format_targets(targets)),
        ("Table 1: cross-modal retrieval (val)", cmr_markdown(report.get("cmr"))),
        ("Table 2: captioning", captioning_markdown(report.get("captioning"))),
        ("Table 3: generation, try-on and design (val)", generation_markdown(report.get("generation"))),
        ("Table 4: composed retrieval (val, average over categories)", cir_markdown(report.get("cir"))),
        ("Time of every stage", timing_markdown(report.get("timing"))),
    ]
    head = f"Printed by `{command}` from `{report.get('title', 'a quickstart run')}`."
    return head + "\n\n" + "\n\n".join(f"#### {title}\n\n{body}" for title, body in sections) + "\n"


ABLATION_COLUMNS = (
    ("CMR mean recall", "cmr_mean_recall", 2),
    ("CIR average recall", "cir_average_recall", 2),
    ("BLEU-4", "caption_bleu4", 2),
    ("fid_effnet", "generation_fid_effnet", 2),
)


def _shown(path: str) -> str:
    """``path`` relative to the working directory where it lies below it (as a README shows it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def ablation_markdown(result: Mapping[str, Any], command: str) -> str:
    """The paper's Table 5 from an ``ablation.json`` (``unifashion ablate``), with each row's
    composed average recall measured against the Q-Former-only row and its training minutes.
    A run of several seeds shows each figure's mean with its range (lowest-highest) beside it."""
    rows = result.get("rows")
    if not isinstance(rows, Mapping) or not rows:
        raise ConfigError("ablation.json: no 'rows' (expected the file written by unifashion ablate)")
    base = _get(rows, "qformer_only", "cir_average_recall")

    def figure(row: Mapping[str, Any], key: str, decimals: int) -> Any:
        value, span = row.get(key), _get(row, "range", key)
        if isinstance(value, int | float) and isinstance(span, Sequence) and len(span) == 2:
            return f"{value:.{decimals}f} ({span[0]:.{decimals}f}-{span[1]:.{decimals}f})"
        return value

    body = []
    for row in rows.values():
        cir = row.get("cir_average_recall")
        delta = cir - base if isinstance(cir, int | float) and isinstance(base, int | float) else None
        seconds = row.get("train_seconds")
        body.append(
            [
                row.get("label", "?"),
                *(figure(row, key, decimals) for _, key, decimals in ABLATION_COLUMNS),
                delta,
                seconds / 60 if isinstance(seconds, int | float) else None,
            ]
        )
    head = ["model", *(title for title, _, _ in ABLATION_COLUMNS), "CIR vs Q-Former only", "training min"]
    decimals = [d for _, _, d in ABLATION_COLUMNS] + [2, 1]
    total = result.get("seconds")
    minutes = f"; {total / 60:.1f} min in all" if isinstance(total, int | float) else ""
    about = f"size `{result.get('size', '?')}`, split `{result.get('split', '?')}`{minutes}"
    notes = []
    seeds = result.get("seeds")
    if isinstance(seeds, Sequence) and len(seeds) > 1:
        notes.append(
            f"Each figure is the mean over phase-2 seeds {', '.join(map(str, seeds))}, its lowest-highest in "
            f'brackets; phase 1 ran once, with seed {seeds[0]}. "CIR vs Q-Former only" compares the means: a '
            "difference inside the rows' ranges does not tell the rows apart."
        )
    phase1 = result.get("phase1_seconds")
    if isinstance(phase1, int | float):
        per_seed = " (the mean over seeds)" if notes else ""
        notes.append(
            f"Training minutes: each row's own phase 2{per_seed}; phase 1, which every row starts from, took "
            f"{phase1 / 60:.1f} min."
        )
    else:  # an ablation.json of the earlier layout, whose full row ran the whole pipeline
        notes.append(
            "Training minutes: the full row's are the whole pipeline, phase 1 included, which every other row "
            "starts from; the other rows' are their own phase 2."
        )
    if result.get("resumed"):
        notes.append("The run was resumed: a stage it resumed counts from where it resumed.")

    head_line = f"Printed by `{command}` from `{_shown(result.get('data', '?'))}` ({about})."
    return head_line + "\n\n" + table(head, body, decimals) + "\n\n" + " ".join(notes) + "\n"


BLOCK_BEGIN = "<!-- report: begin"
BLOCK_END = "<!-- report: end -->"
# A begin marker may name its block (``<!-- report: begin demo (any words) -->``, ended by
# ``<!-- report: end demo -->``), so one file can hold the tables of several runs.
_BEGIN = re.compile(r"^\s*<!-- report: begin(?: (?P<name>[A-Za-z0-9_.-]+))?(?:\s.*)?-->\s*$")
_END = re.compile(r"^\s*<!-- report: end(?: (?P<name>[A-Za-z0-9_.-]+))? -->\s*$")


def replace_report_block(text: str, block: str, name: str, block_name: str | None = None) -> str:
    """``text`` (a Markdown file called ``name``) with the lines between its one pair of report
    markers (those named ``block_name``, or the unnamed pair) replaced by ``block``; the marker lines
    themselves stay. A file without exactly one such begin line followed by its end line is refused."""
    lines = text.splitlines(keepends=True)

    def found(pattern: re.Pattern) -> list[int]:
        return [i for i, line in enumerate(lines) if (m := pattern.match(line)) and m["name"] == block_name]

    begins, ends = found(_BEGIN), found(_END)
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        begin = BLOCK_BEGIN + (f" {block_name}" if block_name else "")
        end = f"<!-- report: end {block_name} -->" if block_name else BLOCK_END
        raise ConfigError(
            f"{name}: expected one line starting with {begin!r} and, after it, one line {end!r} "
            f"around the report's place; found {len(begins)} begin and {len(ends)} end markers"
        )
    body = block if block.endswith("\n") else block + "\n"
    return "".join(lines[: begins[0] + 1]) + "\n" + body + "\n" + "".join(lines[ends[0] :])
