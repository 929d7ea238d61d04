"""The HTML report: tables where the paper has them, numbers formatted, images and curves from the run folder."""

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from unifashion.evaluation.report import TITLES, format_metric, read_loss_log, render_report

LOG = """phase,step,epoch,loss,itc,itm,lr
retrieval,0,0,4.0,2.0,1.0,0.001
retrieval,10,0,3.0,1.5,oops,0.001
retrieval,20,1,2.5,1.2,0.6,0.001
retrieval,30,1,2.0,1.0,0.5,0.001
retrieval,40,2,1.8,0.9,,0.001
"""
LOG_ROWS = 5


class _Tags(HTMLParser):
    """Collects img sources and SVG polylines."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.polylines: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"])
        elif tag == "polyline":
            self.polylines[a["data-series"]] = a["points"]


def _tags(text: str) -> _Tags:
    parser = _Tags()
    parser.feed(text)
    return parser


def _section(text: str, title: str) -> str:
    """The HTML of the section headed ``title``."""
    start = text.index(f"<h2>{title}</h2>")
    return text[start : text.index("</section>", start)]


def _png(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path.name


def _recalls(r1: float, r5: float, r10: float) -> dict:
    return {"R@1": r1, "R@5": r5, "R@10": r10}


@pytest.fixture
def run(tmp_path) -> tuple[Path, dict]:
    """A run folder with two sample images, a loss log, and a report naming them."""
    _png(tmp_path / "samples" / "a.png", (200, 0, 0))
    _png(tmp_path / "samples" / "b.png", (0, 0, 200))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "retrieval.csv").write_text(LOG)
    hit = {"image": "samples/a.png", "id": "p1", "match": True}
    miss = {"image": "samples/b.png", "id": "p2", "match": False}
    caption_scores = {
        "BLEU-1": 50.0,
        "BLEU-2": 40.0,
        "BLEU-3": 30.0,
        "BLEU-4": 20.0,
        "METEOR": 25.0,
        "ROUGE-L": 45.0,
        "CIDEr": 123.456,
    }
    report = {
        "title": "Quickstart <small>",
        "size": "small",
        "preset": "tiny",
        "data": {"products": 1200, "triplets": 300, "splits": {"train": 1000, "val": 100, "test": 100}},
        "settings": {"epochs": 2, "lr": 0.001, "backbones": {"vision": "effnet"}},
        "cmr": {
            "random100": {"i2t": _recalls(10.0, 20.0, 30.0), "t2i": _recalls(40.0, 50.0, 60.0)},
            "full": {"i2t": _recalls(1.0, 2.0, 3.0), "t2i": _recalls(4.0, 5.0, 6.0)},
            "baseline": {"name": "CLIP", "random100": {"i2t": _recalls(5.0, 6.0, 7.0), "t2i": _recalls(8, 9, 10)}},
        },
        "captioning": {**caption_scores, "baseline_nn": {**caption_scores, "CIDEr": 77.77}},
        "generation": {
            "fid_effnet": 12.3456,
            "kid_effnet": 0.01234,
            "colour_accuracy": 81.25,
            "category_accuracy": 90.0,
            "itc_score": 31.04,
            "real": {"colour_accuracy": 95.0, "category_accuracy": 98.0, "itc_score": 35.0},
            "composed": {"colour_accuracy": 70.0, "fid_effnet": 20.0},
            "samplers": {"ddim-50": {"fid_effnet": 13.0, "seconds_per_image": 0.1234, "colour_accuracy": 80.0}},
            "tryon": {
                "paired": {
                    "ssim": 0.87654,
                    "l1": 5.4321,
                    "fid_effnet": 30.0,
                    "colour_accuracy": 75.0,
                    "outside_mask_change": 0.25,
                }
            },
        },
        "cir": {
            "average": {"R@10": 40.0, "R@50": 60.0, "avg": 50.0},
            "per_category": {"dress": {"R@10": 33.33, "R@50": 66.66, "avg": 50.0}},
            "variants": {"without_captions": {"R@10": 30.0, "R@50": 50.0, "avg": 40.0}},
            "baselines": {"image_only": {"R@10": 5.0, "R@50": 15.0, "avg": 10.0}},
        },
        "samples": {
            "text_search": [{"query": "red dress", "results": [hit, miss]}],
            "composed_search": [
                {"reference": "samples/b.png", "text": "is red", "target": "samples/a.png", "results": [miss, hit]}
            ],
            "captions": [{"image": "samples/a.png", "caption": "a red shirt", "truth": "red shirt"}],
            "generated": [{"prompt": "blue jacket", "image": "samples/b.png"}],
        },
        "curves": {"retrieval": "logs/retrieval.csv", "generation": "logs/missing.csv"},
        "timing": {"total_seconds": 300.0, "stages": {"train": 240.0, "eval": 60.0}},
        "notes": ["CIR R@10 is below its target"],
    }
    return tmp_path, report


def test_every_table_has_its_title(run):
    out_dir, report = run
    text = render_report(report, out_dir).read_text()
    for title in [*TITLES.values(), "Samples", "Training curves", "Timing", "Notes", "Settings", "Data"]:
        assert f"<h2>{title}</h2>" in text
    assert '<a href="report.json">' in text


def test_numbers_sit_in_their_table_with_their_decimals(run):
    out_dir, report = run
    text = render_report(report, out_dir).read_text()
    captioning = _section(text, TITLES["captioning"])
    assert '<td class="num">123.5</td>' in captioning
    assert '<td class="num">77.8</td>' in captioning
    assert "nearest-neighbour caption (baseline)" in captioning
    assert "123.5" not in _section(text, TITLES["cmr"])
    cmr = _section(text, TITLES["cmr"])
    assert '<td class="num">35.0</td>' in cmr  # mean of 10..60
    assert "CLIP (baseline), random-100" in cmr
    generation = _section(text, TITLES["generation"])
    for shown in ("12.35", "0.012", "81.2", "0.123", "0.877", "5.43"):
        assert f'<td class="num">{shown}</td>' in generation
    assert "EfficientNet-Lite0" in generation
    cir = _section(text, TITLES["cir"])
    assert "<th>dress R@10</th>" in cir
    assert '<td class="num">66.7</td>' in cir
    assert "w/o captions" in cir and "image only (baseline)" in cir
    timing = _section(text, "Timing")
    assert '<td class="num">240.0</td><td class="num">4.0</td>' in timing


def test_metric_format():
    assert format_metric(81.25, "R@10") == "81.2"
    assert format_metric(12.3456, "fid_effnet") == "12.35"
    assert format_metric(0.87654, "ssim") == "0.877"
    assert format_metric(None, "R@1") == "–"
    assert format_metric(float("nan"), "R@1") == "n/a"
    assert format_metric("skipped", "METEOR") == "skipped"


def test_images_point_to_files_and_matches_are_outlined(run):
    out_dir, report = run
    text = render_report(report, out_dir).read_text()
    sources = _tags(text).images
    assert len(sources) == 8  # 2 text-search results, 2 + 2 composed, 1 caption, 1 generated
    for src in sources:
        assert not src.startswith("/") and (out_dir / unquote(src)).is_file(), src
    assert text.count('<figure class="match">') == 2  # the true match in both searches


def test_a_missing_image_shows_a_placeholder(run):
    out_dir, report = run
    report["samples"] = {"generated": [{"prompt": "x", "image": "samples/nowhere.png"}]}
    text = render_report(report, out_dir).read_text()
    assert _tags(text).images == []
    assert ">missing<" in text


def test_curve_has_a_point_per_log_row_and_a_missing_log_says_so(run):
    out_dir, report = run
    text = render_report(report, out_dir).read_text()
    lines = _tags(text).polylines
    assert set(lines) == {"loss", "itc", "itm"}  # not phase, step, epoch or lr
    assert len(lines["loss"].split()) == LOG_ROWS
    assert len(lines["itm"].split()) == LOG_ROWS - 2  # "oops" and an empty cell skipped
    curves = _section(text, "Training curves")
    assert curves.count("<svg") == 1
    assert "no log" in curves[curves.index("<h3>generation") :]


def test_loss_log_of_an_empty_file_is_empty(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert read_loss_log(tmp_path / "empty.csv") == {}
    assert read_loss_log(tmp_path / "absent.csv") == {}
    assert read_loss_log(tmp_path) == {}


def test_a_report_with_only_timing_says_not_run(tmp_path):
    text = render_report({"timing": {"total_seconds": 90.0, "stages": {"train": 90.0}}}, tmp_path).read_text()
    for title in [*TITLES.values(), "Samples", "Training curves"]:
        assert "not run" in _section(text, title)
    assert '<td class="num">90.0</td><td class="num">1.5</td>' in _section(text, "Timing")


def test_wrong_shapes_render_as_not_run(tmp_path):
    report = {
        "cmr": "oops",
        "captioning": [1],
        "generation": {"samplers": 3},
        "cir": {"per_category": None},
        "samples": {"text_search": "x"},
        "curves": {"a": 5},
        "timing": {"stages": {"x": "?"}},
        "notes": "one",
    }
    text = render_report(report, tmp_path).read_text()
    assert "not run" in _section(text, TITLES["cmr"])
    assert "no log" in _section(text, "Training curves")
    assert "<li>one</li>" in text


def test_strings_are_escaped(run):
    out_dir, report = run
    evil = "<script>alert(1)</script>"
    report["title"] = evil
    report["settings"] = {evil: evil}
    report["cmr"]["baseline"]["name"] = evil
    report["samples"]["captions"][0]["caption"] = evil
    report["cir"]["per_category"] = {evil: {"R@10": 1.0}}
    report["notes"] = [evil]
    text = render_report(report, out_dir).read_text()
    assert "<script" not in text
    assert text.count("&lt;script&gt;") >= 6


def test_written_atomically_with_no_temp_file_left(run, monkeypatch):
    out_dir, report = run
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst))
    )
    (out_dir / "report.html").write_text("old")
    path = render_report(report, out_dir)
    assert path == out_dir / "report.html"
    [(src, dst)] = replaced
    assert dst == path and src.parent == out_dir and not src.exists()
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in out_dir.iterdir()) == ["logs", "report.html", "samples"]
    assert not re.search(r"\.tmp$", " ".join(p.name for p in out_dir.rglob("*")))


def test_saturated_recalls_are_named_in_html_and_markdown(tmp_path):
    from unifashion.evaluation.markdown import cir_markdown
    from unifashion.evaluation.retrieval import saturated_recalls

    # A gallery of 35 saturates R@50 (not R@10); one of 8 saturates both; one of 60 neither.
    saturated = saturated_recalls({"dress": 35, "hat": 8, "shirt": 60})
    assert saturated == {"dress": ["R@50"], "hat": ["R@10", "R@50"]}
    cir = {
        "average": {"R@10": 40.0, "R@50": 100.0, "avg": 70.0},
        "per_category": {"dress": {"R@10": 40.0, "R@50": 100.0}},
        "gallery": {"dress": 35},
        "saturated": {"dress": ["R@50"]},
    }
    text = _section(render_report({"cir": cir}, tmp_path).read_text(), TITLES["cir"])
    assert "Saturated" in text and "dress (35 images): R@50" in text
    assert "dress (35 images): R@50" in cir_markdown(cir)
    # Nothing saturated: no note.
    quiet = {**cir, "saturated": {}}
    assert "Saturated" not in _section(render_report({"cir": quiet}, tmp_path).read_text(), TITLES["cir"])
    assert "Saturated" not in cir_markdown(quiet)
