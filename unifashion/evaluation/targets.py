"""The quality targets of the quickstart's ``full`` size, read off a ``report.json``.

Each target is one figure of the report against a threshold. A seeded run moves by a few points
from one CPU to another (other kernels, other rounding), so a second run with another seed gives
each figure a *spread* (the absolute difference of the two runs), and a target counts as met only
where the figure clears its threshold by more than that spread. Without a second run the spread is
unknown and the status says so.

:func:`evaluate_targets` is a pure function of one or two reports, so the table can be recomputed
from any two ``report.json`` files (``unifashion report RUN --spread-from OTHER_RUN``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from unifashion.evaluation.report import _get
from unifashion.utils.errors import ConfigError

Report = Mapping[str, Any]

# The work the targets are judged on (the ``full`` size): a report that measured less is not judged.
FULL_WORK = {"products": 8000, "generation_limit": 150}


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _minus(a: Any, b: Any) -> float | None:
    a, b = _number(a), _number(b)
    return None if a is None or b is None else a - b


def _ratio(a: Any, b: Any) -> float | None:
    a, b = _number(a), _number(b)
    return None if a is None or b is None or b == 0 else a / b


def wall_minutes(r: Report) -> float | None:
    seconds = _number(_get(r, "timing", "total_seconds"))
    return None if seconds is None else seconds / 60


def _cir_baselines(r: Report) -> dict[str, Any]:
    """Every baseline of the run: with the final model and, when measured, after phase 1a."""
    out: dict[str, Any] = {}
    for prefix, keys in (("", ("cir", "baselines")), ("after phase 1a: ", ("cir", "after_phase1a", "baselines"))):
        found = _get(r, *keys)
        if isinstance(found, Mapping):
            out.update({prefix + name: v for name, v in found.items()})
    return out


def cir_margin(r: Report) -> float | None:
    """Composed retrieval's average recall minus the best baseline of the same run (the final
    model's baselines and, where the run measured them, the same baselines after phase 1a)."""
    baselines = _cir_baselines(r)
    if not baselines:
        return None
    best = max((_number(_get(v, "avg")) or 0.0) for v in baselines.values())
    return _minus(_get(r, "cir", "average", "avg"), best)


def cir_margin_basis(r: Report) -> tuple[str, ...]:
    """Which baselines the margin was taken over (two runs' margins compare only on the same ones)."""
    return tuple(sorted(_cir_baselines(r)))


def caption_cider_margin(r: Report) -> float | None:
    return _minus(_get(r, "captioning", "CIDEr"), _get(r, "captioning", "baseline_nn", "CIDEr"))


def caption_attribute_margin(r: Report) -> float | None:
    shares = _get(r, "captioning", "attributes", "val")
    return _minus(_get(shares, "model", "correct"), _get(shares, "nearest_neighbour", "correct"))


def sampler_speedup(r: Report) -> float | None:
    """Seconds per image of PLMS-50 over DPM-Solver++-20 on the same prompts."""
    samplers = _get(r, "generation", "samplers")
    return _ratio(_get(samplers, "plms-50", "seconds_per_image"), _get(samplers, "dpm++-20", "seconds_per_image"))


def sampler_fid_change(r: Report) -> float | None:
    """How much higher (in %) DPM-Solver++-20's fid_effnet is than PLMS-50's (negative: lower)."""
    samplers = _get(r, "generation", "samplers")
    ratio = _ratio(_get(samplers, "dpm++-20", "fid_effnet"), _get(samplers, "plms-50", "fid_effnet"))
    return None if ratio is None else 100.0 * (ratio - 1.0)


@dataclass(frozen=True)
class Target:
    name: str
    figure: Callable[[Report], float | None]
    threshold: float
    at_least: bool = True  # False: the figure must stay at or below the threshold
    unit: str = ""
    # What the figure was computed from, where a report may hold more or less of it: two runs give a
    # spread only where it is the same.
    basis: Callable[[Report], Any] | None = None

    def margin(self, value: float) -> float:
        """How far ``value`` clears the threshold (negative: it misses)."""
        return value - self.threshold if self.at_least else self.threshold - value


def _at(*keys: str) -> Callable[[Report], float | None]:
    return lambda r: _number(_get(r, *keys))


TARGETS: tuple[Target, ...] = (
    Target("wall time: data, every phase, every evaluation, report", wall_minutes, 90.0, False, " min"),
    Target("cross-modal random-100 R@1, image -> text", _at("cmr", "random100", "i2t", "R@1"), 85.0),
    Target("cross-modal random-100 R@1, text -> image", _at("cmr", "random100", "t2i", "R@1"), 85.0),
    Target(
        "composed retrieval average recall minus the best baseline",
        cir_margin,
        10.0,
        unit=" points",
        basis=cir_margin_basis,
    ),
    Target("description captions: CIDEr minus nearest neighbour's", caption_cider_margin, 3.0, unit=" points"),
    Target(
        "description captions: attributes correct minus nearest neighbour's",
        caption_attribute_margin,
        3.0,
        unit=" points",
    ),
    Target("text-to-image garment colour accuracy", _at("generation", "colour_accuracy"), 80.0, unit=" %"),
    Target("try-on garment colour, paired", _at("generation", "tryon", "paired", "colour_accuracy"), 60.0, unit=" %"),
    Target(
        "try-on garment colour, unpaired", _at("generation", "tryon", "unpaired", "colour_accuracy"), 50.0, unit=" %"
    ),
    Target("design garment colour, paired", _at("generation", "design", "paired", "colour_accuracy"), 60.0, unit=" %"),
    Target("DPM-Solver++ 20 over PLMS 50: speed-up per image", sampler_speedup, 2.0, unit="x"),
    Target("DPM-Solver++ 20 vs PLMS 50: fid_effnet change", sampler_fid_change, 10.0, False, " %"),
)


def judged_work(report: Report) -> str | None:
    """Why ``report`` measured less than the targets are judged on, or None."""
    settings = _get(report, "settings") or {}
    short = [
        f"{key} {settings.get(key)} < {wanted}"
        for key, wanted in FULL_WORK.items()
        if not isinstance(settings.get(key), int) or settings[key] < wanted
    ]
    if settings.get("caption_items") not in (None, "all"):
        short.append(f"caption_items {settings['caption_items']} (not every val product)")
    return "; ".join(short) or None


# What a second run must share with the first for their difference to be a spread: the work measured
# (the seeds are what may differ).
SAME_WORK = ("products", "image_size", "split", "generation_limit", "caption_items", "retrieval_queries")


def second_run_mismatch(report: Report, other: Report) -> str | None:
    """Why ``other`` cannot give ``report``'s figures a spread (it measured other work), or None."""
    mine, theirs = _get(report, "settings") or {}, _get(other, "settings") or {}
    differ = [
        f"{key} {theirs.get(key)!r} (this run: {mine.get(key)!r})"
        for key in SAME_WORK
        if mine.get(key) != theirs.get(key)
    ]
    if _get(report, "preset") != _get(other, "preset"):
        differ.append(f"preset {_get(other, 'preset')!r} (this run: {_get(report, 'preset')!r})")
    return "; ".join(differ) or None


def _seeds(r: Report) -> dict[str, Any]:
    settings = _get(r, "settings") or {}
    return {k: settings[k] for k in ("seed", "train_seed") if k in settings}


def status(target: Target, value: float | None, spread: float | None) -> str:
    if value is None:
        return "not measured"
    margin = target.margin(value)
    if margin < 0:
        return "not met"
    if spread is None:
        return "met (spread unknown)"
    return "met" if margin > spread else "within the spread"


def evaluate_targets(report: Report, other: Report | None = None) -> dict[str, Any]:
    """Every target's figure, threshold, spread (``|report - other|`` with a second run) and status;
    a second run that measured other work is refused (its difference is no spread)."""
    mismatch = second_run_mismatch(report, other) if other is not None else None
    if mismatch:
        raise ConfigError(f"the second run measured other work, so the difference is no spread: {mismatch}")
    rows = []
    for t in TARGETS:
        value = t.figure(report)
        second = t.figure(other) if other is not None else None
        spread = abs(value - second) if value is not None and second is not None else None
        row = {
            "target": t.name,
            "figure": None if value is None else round(value, 2),
            "threshold": ("<= " if not t.at_least else ">= ") + f"{t.threshold:g}{t.unit}",
            "second_run": None if second is None else round(second, 2),
            "spread": None if spread is None else round(spread, 2),
        }
        if spread is not None and t.basis is not None and t.basis(report) != t.basis(other):
            row["spread"] = spread = None
            row["note"] = f"the second run computed it from other parts: {', '.join(t.basis(other))}"
        rows.append({**row, "status": status(t, value, spread)})
    novel = _get(report, "captioning", "novel")
    out: dict[str, Any] = {
        "rows": rows,
        "met": sum(r["status"] == "met" for r in rows),
        "of": len(rows),
        "novel_captions_reported": isinstance(novel, Mapping) and "CIDEr" in novel,
    }
    if other is not None:
        out["seeds"] = {"first_run": _seeds(report), "second_run": _seeds(other)}
    short = judged_work(report)
    if short:
        out["not_judged"] = f"this run measured less than the targets are judged on: {short}"
    return out


def format_targets(targets: Mapping[str, Any]) -> str:
    """The targets as a Markdown table (what the README shows)."""

    def cell(x: Any) -> str:
        return "-" if x is None else f"{x:g}" if isinstance(x, float) else str(x)

    lines = ["| target | figure | threshold | second run | spread | status |", "|---|---|---|---|---|---|"]
    for r in targets["rows"]:
        lines.append(
            f"| {r['target']} | {cell(r['figure'])} | {r['threshold']} | {cell(r['second_run'])} "
            f"| {cell(r['spread'])} | {r['status']} |"
        )
    lines.append("")
    lines.append(f"{targets['met']} of {targets['of']} met beyond the spread.")
    seeds = targets.get("seeds")
    if seeds:

        def named(x: Mapping[str, Any]) -> str:
            return (
                ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in x.items())
                or "seeds not recorded (a report.json from before they were)"
            )

        lines.append(
            f"Spread: |this run - the second run|; this run: {named(seeds['first_run'])}; "
            f"the second run: {named(seeds['second_run'])}."
        )
    for r in targets["rows"]:
        if r.get("note"):
            lines.append(f"{r['target']}: no spread, {r['note']}.")
    if "not_judged" in targets:
        lines.append(f"Not judged: {targets['not_judged']}.")
    return "\n".join(lines)
