"""The quickstart job's report as one self-contained HTML page (paper Tables 1-4, samples, curves, timing).

:func:`render_report` turns the content of ``report.json`` into ``report.html``
in the same folder: tables laid out like the UniFashion paper's, sample grids
with the true matches outlined in green, one SVG chart per training phase read
from its CSV log at render time, and the time each stage took. Any section or
key may be missing: its table then says "not run". Standard library only; the
page has no scripts and loads nothing but the images beside it.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from unifashion.utils.io import atomic_write_text

DEFAULT_TITLE = "UniFashion report"
NOT_RUN = '<p class="not-run">not run</p>'
NO_LOG = '<p class="not-run">no log</p>'
MISSING = "–"  # a cell whose value the report does not have

# Decimals per metric; any other metric is a percentage (recalls, accuracies, caption scores x100): one decimal.
DECIMALS = {"fid_effnet": 2, "kid_effnet": 3, "ssim": 3, "l1": 2, "outside_mask_change": 2, "seconds_per_image": 3}
# Columns of a training log that are not losses, so not plotted.
NOT_LOSSES = frozenset({"phase", "step", "epoch", "seconds", "lr", "grad_norm"})
THUMB_PX = 96

CMR_COLUMNS = [(direction, k) for direction in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10")]
CAPTION_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
GENERATION_KEYS = ("fid_effnet", "kid_effnet", "colour_accuracy", "category_accuracy", "itc_score")
SAMPLER_KEYS = ("fid_effnet", "seconds_per_image", "colour_accuracy")
TRYON_KEYS = ("ssim", "l1", "fid_effnet", "colour_accuracy", "outside_mask_change")
CIR_KEYS = ("R@10", "R@50", "avg")
CIR_ROWS = (  # label, path of its R@10/R@50/avg in the ``cir`` section
    ("with ITM re-ranking", ("itm_rerank",)),
    ("full: + caption library", ("variants", "full")),
    ("w/o captions", ("variants", "without_captions")),
    ("w/o image", ("variants", "without_image")),
    ("image only (baseline)", ("baselines", "image_only")),
    ("text only (baseline)", ("baselines", "text_only")),
    ("late fusion (baseline)", ("baselines", "late_fusion")),
    ("after phase 1a: composed query", ("after_phase1a", "composed")),
    ("after phase 1a: image only (baseline)", ("after_phase1a", "baselines", "image_only")),
    ("after phase 1a: text only (baseline)", ("after_phase1a", "baselines", "text_only")),
    ("after phase 1a: late fusion (baseline)", ("after_phase1a", "baselines", "late_fusion")),
)

TITLES = {
    "cmr": "Table 1: cross-modal retrieval",
    "captioning": "Table 2: captioning",
    "generation": "Table 3: generation and try-on",
    "cir": "Table 4: composed retrieval",
}
FID_NOTE = (
    '<p class="note">FID and KID use EfficientNet-Lite0 features (<code>fid_effnet</code>, '
    "<code>kid_effnet</code>): the formulas of the published FID, but the numbers are not comparable "
    "with published Inception FID.</p>"
)

CSS = f"""
body {{ font-family: system-ui, sans-serif; color: #222; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       line-height: 1.4; }}
h2 {{ border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #999; padding: 0.25em 0.6em; }}
.scroll {{ overflow-x: auto; }}
th {{ background: #eee; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.not-run {{ color: #888; font-style: italic; }}
.note {{ color: #555; font-size: 0.9em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; margin: 0.3em 0 1em; }}
.card {{ display: flex; gap: 6px; align-items: flex-start; border: 1px solid #ddd; padding: 4px; }}
.card p {{ max-width: 220px; margin: 0; font-size: 0.85em; }}
figure {{ margin: 0; width: {THUMB_PX}px; font-size: 0.75em; text-align: center; overflow-wrap: anywhere; }}
figure img, figure .missing {{ width: {THUMB_PX}px; height: {THUMB_PX}px; object-fit: contain;
                               border: 3px solid transparent; box-sizing: border-box; }}
figure .missing {{ display: flex; align-items: center; justify-content: center; background: #f3f3f3; color: #999; }}
figure.match img {{ border-color: #2a2; }}
svg {{ border: 1px solid #ddd; }}
svg text {{ font-size: 11px; fill: #333; }}
"""

# Chart geometry (px); the right margin holds the legend.
CHART_W, CHART_H = 560, 260
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 60, 120, 14, 34
LINE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def render_report(report: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` for ``report`` (the content of ``report.json``) atomically; return its path.

    Image and log paths in ``report`` are relative to ``out_dir``.
    """
    if not isinstance(report, Mapping):
        raise TypeError(f"render_report: expected the report as a dict, got {type(report).__name__}")
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    atomic_write_text(path, render_html(report, out_dir))
    return path


def render_html(report: Mapping[str, Any], out_dir: Path) -> str:
    """The whole page as a string."""
    title = report.get("title") or DEFAULT_TITLE
    body = [
        header(report),
        data_section(report.get("data")),
        settings_section(report.get("settings")),
        targets_table(report.get("targets")),
        cmr_table(report.get("cmr")),
        captioning_table(report.get("captioning")),
        generation_table(report.get("generation")),
        cir_table(report.get("cir")),
        samples_section(report.get("samples"), out_dir),
        curves_section(report.get("curves"), out_dir),
        timing_table(report.get("timing")),
        notes_section(report.get("notes")),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------
# Small pieces


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _get(d: Any, *keys: str) -> Any:
    """``d[k1][k2]...``, or None where a level is missing or not a dict."""
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    """The dicts of a list; anything else gives none."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def format_metric(value: Any, key: str) -> str:
    """``value`` as the tables print it (HTML): ``DECIMALS[key]`` decimals, else one; text is escaped."""
    if value is None:
        return MISSING
    if not _is_number(value):
        return _esc(value)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{DECIMALS.get(key, 1)}f}"


def _section(title: str, body: str) -> str:
    return f"<section>\n<h2>{_esc(title)}</h2>\n{body}\n</section>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: bool = True) -> str:
    """A bordered table, or "not run" without rows. ``head`` is text; cells are HTML, the first is the row label."""
    if not rows:
        return NOT_RUN
    cls = ' class="num"' if numeric else ""
    lines = ['<div class="scroll"><table>', "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for label, *cells in rows:
        lines.append(f"<tr><td>{label}</td>" + "".join(f"<td{cls}>{c}</td>" for c in cells) + "</tr>")
    lines.append("</table></div>")
    return "\n".join(lines)


def _has_any(values: Any, keys: Sequence[str]) -> bool:
    return isinstance(values, Mapping) and ("skipped" in values or any(k in values for k in keys))


def _metric_row(label: str, values: Any, keys: Sequence[str]) -> list[str]:
    """``label`` and ``values[k]`` for each of ``keys``; a ``skipped`` reason goes into the label."""
    reason = _get(values, "skipped")
    text = label if reason is None else f"{label} (skipped: {reason})"
    return [_esc(text)] + [format_metric(_get(values, k), k) for k in keys]


# ---------------------------------------------------------------------------
# Header, data, settings


def header(report: Mapping[str, Any]) -> str:
    """Title, size and preset, and the link to the exact numbers."""
    facts = [
        f"{key}: <strong>{_esc(report[key])}</strong>" for key in ("size", "preset") if report.get(key) is not None
    ]
    facts.append('exact numbers: <a href="report.json">report.json</a>')
    return f"<h1>{_esc(report.get('title') or DEFAULT_TITLE)}</h1>\n<p>{' · '.join(facts)}</p>"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _esc(value)


def data_section(data: Any) -> str:
    """One line: products, triplets and the size of each split."""
    if not isinstance(data, Mapping):
        return _section("Data", NOT_RUN)
    parts = [f"{_count(data[k])} {k}" for k in ("products", "triplets") if data.get(k) is not None]
    splits = data.get("splits")
    if isinstance(splits, Mapping) and splits:
        parts.append("splits: " + ", ".join(f"{_esc(name)} {_count(n)}" for name, n in splits.items()))
    return _section("Data", f"<p>{'; '.join(parts)}</p>" if parts else NOT_RUN)


def settings_section(settings: Any) -> str:
    """The run's settings as a key/value table."""
    if not isinstance(settings, Mapping):
        return _section("Settings", NOT_RUN)
    rows = []
    for key, value in settings.items():
        shown = json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, Mapping | list) else value
        rows.append([_esc(key), _esc(shown)])
    return _section("Settings", _table(("setting", "value"), rows, numeric=False))


def targets_table(targets: Any) -> str:
    """The quality targets of the ``full`` size: figure, threshold, spread and status of each."""
    rows = [
        [
            _esc(r.get("target")),
            *(format_metric(r.get(k), k) for k in ("figure", "spread")),
            _esc(r.get("threshold")),
            _esc(r.get("status")),
        ]
        for r in _mappings(_get(targets, "rows"))
    ]
    body = _table(("target", "figure", "spread", "threshold", "status"), rows)
    for r in _mappings(_get(targets, "rows")):
        if r.get("note"):
            body += f'\n<p class="note">{_esc(r.get("target"))}: no spread, {_esc(r["note"])}.</p>'
    if _get(targets, "not_judged"):
        body += f'\n<p class="note">Not judged: {_esc(targets["not_judged"])}.</p>'
    return _section("Quality targets", body)


# ---------------------------------------------------------------------------
# Tables 1-4


def _cmr_row(label: str, protocol: Any) -> list[str] | None:
    """R@1/5/10 both ways and their mean; None when the protocol did not run."""
    if not isinstance(protocol, Mapping):
        return None
    recalls = [_get(protocol, direction, k) for direction, k in CMR_COLUMNS]
    mean = sum(recalls) / len(recalls) if all(_is_number(r) for r in recalls) else None
    keys = [*(f"{d} {k}" for d, k in CMR_COLUMNS), "mean"]
    values = dict(zip(keys, [*recalls, mean], strict=True), skipped=protocol.get("skipped"))
    return _metric_row(label, values, keys)


def cmr_table(cmr: Any) -> str:
    """Table 1: image -> text and text -> image recall of each protocol, and the baseline."""
    baseline = _get(cmr, "baseline", "name") or "baseline"
    rows = [
        _cmr_row("UniFashion, random-100", _get(cmr, "random100")),
        _cmr_row("UniFashion, random-100, ITM re-ranking", _get(cmr, "random100_itm_rerank")),
        _cmr_row("UniFashion, full split", _get(cmr, "full")),
        _cmr_row(f"{baseline} (baseline), random-100", _get(cmr, "baseline", "random100")),
    ]
    head = ["", *(f"{d} {k}" for d, k in CMR_COLUMNS), "mean recall"]
    return _section(TITLES["cmr"], _table(head, [r for r in rows if r]))


def captioning_table(captioning: Any) -> str:
    """Table 2: caption metrics (x100) of the model and of the nearest-neighbour baseline."""
    candidates = (("UniFashion", captioning), ("nearest-neighbour caption (baseline)", _get(captioning, "baseline_nn")))
    rows = [_metric_row(label, values, CAPTION_KEYS) for label, values in candidates if _has_any(values, CAPTION_KEYS)]
    return _section(TITLES["captioning"], _table(["", *CAPTION_KEYS], rows))


def _tryon_rows(generation: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for task, label in (("tryon", "try-on"), ("design", "design")):
        for setting in ("paired", "unpaired"):
            values = _get(generation, task, setting)
            if _has_any(values, TRYON_KEYS):
                rows.append(_metric_row(f"{label}, {setting}", values, TRYON_KEYS))
    return rows


def generation_table(generation: Any) -> str:
    """Table 3: text -> image, composed and real-image ceiling; samplers; try-on and design."""
    if not isinstance(generation, Mapping):
        return _section(TITLES["generation"], NOT_RUN)
    candidates = (
        ("text → image", generation),
        ("reference + text → image (composed)", generation.get("composed")),
        ("real images (ceiling of the measurements)", generation.get("real")),
    )
    rows = [_metric_row(label, v, GENERATION_KEYS) for label, v in candidates if _has_any(v, GENERATION_KEYS)]
    head = ["", "FID (EffNet)", "KID (EffNet)", "colour acc. %", "category acc. %", "ITC score"]
    samplers = generation.get("samplers")
    sampler_rows = [
        _metric_row(str(name), values, SAMPLER_KEYS)
        for name, values in (samplers.items() if isinstance(samplers, Mapping) else ())
        if isinstance(values, Mapping)
    ]
    tryon_head = ["", "SSIM", "L1", "FID (EffNet)", "colour acc. %", "outside-mask change"]
    body = [
        _table(head, rows),
        FID_NOTE,
        "<h3>Samplers</h3>",
        _table(["sampler", "FID (EffNet)", "seconds / image", "colour acc. %"], sampler_rows),
        "<h3>Virtual try-on and design</h3>",
        _table(tryon_head, _tryon_rows(generation)),
    ]
    return _section(TITLES["generation"], "\n".join(body))


def _cir_row(label: str, average: Any, per_category: Any, categories: Sequence[str]) -> list[str]:
    """``label``, R@10/R@50 of each category (blank without ``per_category``), then the averages."""
    label_cell, *averages = _metric_row(label, average, CIR_KEYS)
    cells = [format_metric(_get(per_category, c, k), k) for c in categories for k in ("R@10", "R@50")]
    return [label_cell, *cells, *averages]


def cir_table(cir: Any) -> str:
    """Table 4: R@10/R@50 per category and on average, for the model, its ablations and the baselines."""
    per_category = _get(cir, "per_category")
    categories = [str(c) for c in per_category] if isinstance(per_category, Mapping) else []
    average = _get(cir, "average") if _has_any(_get(cir, "average"), CIR_KEYS) else _get(cir, "variants", "full")
    rows = []
    if categories or _has_any(average, CIR_KEYS):
        rows.append(_cir_row("UniFashion", average, per_category, categories))
    for label, path in CIR_ROWS:
        values = _get(cir, *path)
        if _has_any(values, CIR_KEYS):
            rows.append(_cir_row(label, values, None, categories))
    head = ["", *(f"{c} {k}" for c in categories for k in ("R@10", "R@50")), "average R@10", "average R@50", "avg"]
    return _section(TITLES["cir"], _table(head, rows) + saturation_note(cir))


def saturation_note(cir: Any) -> str:
    """Which recalls read 100 whatever the model does (a category's gallery no larger than K)."""
    saturated, gallery = _get(cir, "saturated"), _get(cir, "gallery")
    if not isinstance(saturated, Mapping) or not saturated:
        return ""
    parts = [
        f"{_esc(cat)} ({_esc(_get(gallery, cat))} images): {_esc(', '.join(map(str, names)))}"
        for cat, names in saturated.items()
        if isinstance(names, Sequence)
    ]
    return (
        '\n<p class="note">Saturated (a gallery no larger than K: R@K is 100 whatever the model does): '
        + "; ".join(parts)
        + ".</p>"
    )


# ---------------------------------------------------------------------------
# Sample grids


def _figure(out_dir: Path, image: Any, caption: Any = "", match: bool = False) -> str:
    """A thumbnail of ``out_dir/image`` with a caption; a green border when ``match``; a grey box if
    the file is missing."""
    cls = ' class="match"' if match is True else ""
    text = f"<figcaption>{_esc(caption)}</figcaption>" if caption not in (None, "") else ""
    if not isinstance(image, str) or not (out_dir / image).is_file():
        return f'<figure{cls}><div class="missing" title="{_esc(image)}">missing</div>{text}</figure>'
    src = _esc(quote(Path(image).as_posix()))
    return f'<figure{cls}><img src="{src}" alt="{_esc(caption)}" loading="lazy">{text}</figure>'


def _results(out_dir: Path, item: Mapping[str, Any]) -> str:
    return "".join(
        _figure(out_dir, r.get("image"), r.get("id", ""), r.get("match")) for r in _mappings(item.get("results"))
    )


def _text_search(out_dir: Path, item: Mapping[str, Any]) -> str:
    return f'<p>“{_esc(item.get("query", ""))}”</p>\n<div class="grid">{_results(out_dir, item)}</div>'


def _composed_search(out_dir: Path, item: Mapping[str, Any]) -> str:
    query = _figure(out_dir, item.get("reference"), "reference") + _figure(out_dir, item.get("target"), "target")
    return (
        f"<p>“{_esc(item.get('text', ''))}”</p>\n"
        f'<div class="grid"><div class="card">{query}</div>{_results(out_dir, item)}</div>'
    )


def _caption(out_dir: Path, item: Mapping[str, Any]) -> str:
    return (
        f'<div class="card">{_figure(out_dir, item.get("image"))}'
        f"<p><strong>UniFashion:</strong> {_esc(item.get('caption', ''))}<br>"
        f"<strong>truth:</strong> {_esc(item.get('truth', ''))}</p></div>"
    )


def _generated(out_dir: Path, item: Mapping[str, Any]) -> str:
    return f'<div class="card">{_figure(out_dir, item.get("image"))}<p>{_esc(item.get("prompt", ""))}</p></div>'


def _composed_generated(out_dir: Path, item: Mapping[str, Any]) -> str:
    return (
        f'<div class="card">{_figure(out_dir, item.get("reference"), "reference")}'
        f"<p>“{_esc(item.get('text', ''))}”</p>{_figure(out_dir, item.get('image'), 'generated')}</div>"
    )


def _tryon(out_dir: Path, item: Mapping[str, Any]) -> str:
    parts = (("person", "person"), ("cloth", "garment"), ("output", "try-on"))
    return '<div class="card">' + "".join(_figure(out_dir, item.get(k), label) for k, label in parts) + "</div>"


# kind in report["samples"], heading, one item's HTML, whether items share one grid
SAMPLE_KINDS: tuple[tuple[str, str, Callable[[Path, Mapping[str, Any]], str], bool], ...] = (
    ("text_search", "Text → image search", _text_search, False),
    ("composed_search", "Composed search (reference + text)", _composed_search, False),
    ("captions", "Captions", _caption, True),
    ("generated", "Text → image generation", _generated, True),
    ("composed_generated", "Composed generation", _composed_generated, True),
    ("tryon", "Virtual try-on", _tryon, True),
)


def samples_section(samples: Any, out_dir: Path) -> str:
    """One grid per kind of sample; green borders mark the true matches of a search."""
    if not isinstance(samples, Mapping):
        return _section("Samples", NOT_RUN)
    body = ['<p class="note">Search results in ranked order; a green border marks the true match.</p>']
    for kind, heading, render_item, one_grid in SAMPLE_KINDS:
        items = [render_item(out_dir, item) for item in _mappings(samples.get(kind))]
        if not items:
            grid = NOT_RUN
        elif one_grid:
            grid = f'<div class="grid">{"".join(items)}</div>'
        else:
            grid = "\n".join(items)
        body.append(f"<h3>{_esc(heading)}</h3>\n{grid}")
    return _section("Samples", "\n".join(body))


# ---------------------------------------------------------------------------
# Training curves


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_loss_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """``{loss column: [(step, value), ...]}`` of a CSV log; {} if the file is missing, empty or unreadable.

    Every column but ``NOT_LOSSES`` is a loss; non-numeric cells are skipped, and so are rows without a
    numeric ``step`` (the row number stands in for a log without a ``step`` column).
    """
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            header = reader.fieldnames or []
            columns = [c for c in header if c and c not in NOT_LOSSES]
            series: dict[str, list[tuple[float, float]]] = {c: [] for c in columns}
            for i, row in enumerate(reader):
                step = _float(row.get("step")) if "step" in header else float(i)
                if step is None:
                    continue
                for c in columns:
                    value = _float(row.get(c))
                    if value is not None:
                        series[c].append((step, value))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return {name: points for name, points in series.items() if points}


def _tick(value: float) -> str:
    return f"{value:.4g}"


def loss_chart(series: Mapping[str, Sequence[tuple[float, float]]]) -> str:
    """An SVG line chart: one polyline per loss, axes labelled with their min and max, and a legend."""
    points = [p for line in series.values() for p in line]
    x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
    y0, y1 = min(y for _, y in points), max(y for _, y in points)
    plot_w, plot_h = CHART_W - PAD_LEFT - PAD_RIGHT, CHART_H - PAD_TOP - PAD_BOTTOM
    left, bottom, right = PAD_LEFT, PAD_TOP + plot_h, PAD_LEFT + plot_w

    def xy(x: float, y: float) -> str:
        px = left + (x - x0) / ((x1 - x0) or 1.0) * plot_w
        py = bottom - (y - y0) / ((y1 - y0) or 1.0) * plot_h
        return f"{px:.1f},{py:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}" role="img">',
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{PAD_TOP}" x2="{left}" y2="{bottom}" stroke="#333"/>',
        f'<text x="{left}" y="{bottom + 14}" text-anchor="middle">{_tick(x0)}</text>',
        f'<text x="{right}" y="{bottom + 14}" text-anchor="middle">{_tick(x1)}</text>',
        f'<text x="{(left + right) / 2:.0f}" y="{bottom + 28}" text-anchor="middle">step</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{_tick(y0)}</text>',
        f'<text x="{left - 4}" y="{PAD_TOP + 10}" text-anchor="end">{_tick(y1)}</text>',
    ]
    for i, (name, line) in enumerate(series.items()):
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        coords = " ".join(xy(x, y) for x, y in line)
        parts.append(f'<polyline data-series="{_esc(name)}" points="{coords}" fill="none" stroke="{colour}"/>')
        if len(line) == 1:  # a lone point draws no line
            cx, cy = coords.split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
        ly = PAD_TOP + 10 + 16 * i
        parts.append(f'<rect x="{right + 12}" y="{ly - 8}" width="12" height="3" fill="{colour}"/>')
        parts.append(f'<text x="{right + 30}" y="{ly}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def curves_section(curves: Any, out_dir: Path) -> str:
    """One loss chart per training phase, read from the phase's CSV log (relative to ``out_dir``)."""
    if not isinstance(curves, Mapping) or not curves:
        return _section("Training curves", NOT_RUN)
    body = []
    for phase, rel in curves.items():
        series = read_loss_log(out_dir / rel) if isinstance(rel, str) else {}
        chart = loss_chart(series) if series else NO_LOG
        link = f' <a href="{_esc(quote(Path(rel).as_posix()))}">(csv)</a>' if series else ""
        body.append(f"<h3>{_esc(phase)}{link}</h3>\n{chart}")
    return _section("Training curves", "\n".join(body))


# ---------------------------------------------------------------------------
# Timing and notes


def timing_table(timing: Any) -> str:
    """Seconds and minutes of each stage, and the total."""
    stages = _get(timing, "stages")
    rows = []
    for name, seconds in stages.items() if isinstance(stages, Mapping) else ():
        minutes = seconds / 60 if _is_number(seconds) else None
        rows.append([_esc(name), format_metric(seconds, "seconds"), format_metric(minutes, "minutes")])
    total = _get(timing, "total_seconds")
    if _is_number(total):
        rows.append(["<strong>total</strong>", format_metric(total, "seconds"), format_metric(total / 60, "minutes")])
    return _section("Timing", _table(("stage", "seconds", "minutes"), rows))


def notes_section(notes: Any) -> str:
    """A bulleted list of notes (e.g. which figures are below their target); nothing without notes."""
    if isinstance(notes, str):
        notes = [notes]
    if not isinstance(notes, list) or not notes:
        return ""
    return _section("Notes", "<ul>\n" + "\n".join(f"<li>{_esc(n)}</li>" for n in notes) + "\n</ul>")
