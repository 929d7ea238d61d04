"""The quality targets read off a report: each figure, its spread against a second run, its status."""

import copy
import json

import pytest

from unifashion import cli
from unifashion.evaluation.markdown import report_markdown
from unifashion.evaluation.targets import TARGETS, evaluate_targets, format_targets
from unifashion.utils.errors import ConfigError


def _report(**changes) -> dict:
    report = {
        "title": "UniFashion quickstart (full)",
        "settings": {"products": 8000, "generation_limit": 150, "caption_items": "all", "retrieval_queries": 1000},
        "timing": {"total_seconds": 80 * 60.0, "stages": {"data": 150.0}, "training_stages": {"phase1a": 900.0}},
        "cmr": {"random100": {"i2t": {"R@1": 88.0}, "t2i": {"R@1": 86.0}}},
        "cir": {
            "average": {"R@10": 95.0, "R@50": 99.0, "avg": 97.0},
            "baselines": {"image_only": {"avg": 50.0}, "text_only": {"avg": 70.0}, "late_fusion": {"avg": 85.0}},
        },
        "captioning": {
            "CIDEr": 350.0,
            "baseline_nn": {"CIDEr": 330.0},
            "attributes": {"val": {"model": {"correct": 73.0}, "nearest_neighbour": {"correct": 71.5}}},
            "novel": {"CIDEr": 280.0, "baseline_nn": {"CIDEr": 245.0}},
        },
        "generation": {
            "colour_accuracy": 81.0,
            "n": 150,
            "samplers": {
                "plms-50": {"seconds_per_image": 0.75, "fid_effnet": 168.0},
                "dpm++-20": {"seconds_per_image": 0.30, "fid_effnet": 176.4},
            },
            "tryon": {"paired": {"colour_accuracy": 15.0}, "unpaired": {"colour_accuracy": 52.0}},
            "design": {"paired": {"colour_accuracy": 61.0}},
        },
    }
    for dotted, value in changes.items():
        d = report
        *path, last = dotted.split("__")
        for k in path:
            d = d[k]
        d[last] = value
    return report


def _rows(targets: dict) -> dict:
    return {r["target"]: r for r in targets["rows"]}


def _run_folder(tmp_path, report: dict):
    """A quickstart output folder holding ``report`` as its report.json."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps(report))
    return run


def test_every_figure_is_read_from_its_place_in_the_report():
    rows = _rows(evaluate_targets(_report()))
    assert len(rows) == len(TARGETS)
    figures = {name: r["figure"] for name, r in rows.items()}
    assert figures["wall time: data, every phase, every evaluation, report"] == 80.0
    assert figures["cross-modal random-100 R@1, image -> text"] == 88.0
    # Composed retrieval against the best of the three baselines (late fusion here): 97 - 85.
    assert figures["composed retrieval average recall minus the best baseline"] == 12.0
    assert figures["description captions: CIDEr minus nearest neighbour's"] == 20.0
    assert figures["description captions: attributes correct minus nearest neighbour's"] == 1.5
    assert figures["DPM-Solver++ 20 over PLMS 50: speed-up per image"] == 2.5
    assert figures["DPM-Solver++ 20 vs PLMS 50: fid_effnet change"] == pytest.approx(5.0)


def test_status_without_a_second_run_says_the_spread_is_unknown():
    targets = evaluate_targets(_report())
    rows = _rows(targets)
    assert rows["cross-modal random-100 R@1, text -> image"]["status"] == "met (spread unknown)"
    assert rows["description captions: attributes correct minus nearest neighbour's"]["status"] == "not met"
    assert rows["try-on garment colour, paired"]["status"] == "not met"
    # A figure that must stay below its threshold: 80 minutes of 90 is met, 95 is not.
    assert rows["wall time: data, every phase, every evaluation, report"]["status"] == "met (spread unknown)"
    slow = _rows(evaluate_targets(_report(timing__total_seconds=95 * 60.0)))
    assert slow["wall time: data, every phase, every evaluation, report"]["status"] == "not met"
    assert targets["met"] == 0  # nothing counts as met beyond an unknown spread
    assert targets["novel_captions_reported"] is True and "not_judged" not in targets


def test_a_target_is_met_only_beyond_the_spread_of_a_second_run():
    first = _report()
    second = copy.deepcopy(first)
    second["cmr"]["random100"]["t2i"]["R@1"] = 83.0  # 3 points lower: the spread of that figure
    second["cmr"]["random100"]["i2t"]["R@1"] = 87.0  # 1 point lower
    second["generation"]["tryon"]["unpaired"]["colour_accuracy"] = 49.0
    rows = _rows(evaluate_targets(first, second))
    t2i = rows["cross-modal random-100 R@1, text -> image"]
    assert (t2i["second_run"], t2i["spread"], t2i["status"]) == (83.0, 3.0, "within the spread")  # 86 clears 85 by 1
    i2t = rows["cross-modal random-100 R@1, image -> text"]
    assert (i2t["spread"], i2t["status"]) == (1.0, "met")  # 88 clears 85 by 3 > 1
    assert rows["try-on garment colour, unpaired"]["status"] == "within the spread"  # 52 vs 50, spread 3
    assert rows["composed retrieval average recall minus the best baseline"]["status"] == "met"  # spread 0


def test_missing_figures_and_smaller_runs_are_not_judged():
    report = _report(settings={"products": 1000, "generation_limit": 32, "caption_items": 50})
    del report["generation"]["design"]
    targets = evaluate_targets(report)
    assert _rows(targets)["design garment colour, paired"]["status"] == "not measured"
    assert "products 1000 < 8000" in targets["not_judged"] and "caption_items 50" in targets["not_judged"]
    assert "Not judged" in format_targets(targets)


def test_markdown_tables_carry_the_figures_and_the_command():
    text = report_markdown(_report(), evaluate_targets(_report()), "unifashion report runs/full --markdown")
    assert "`unifashion report runs/full --markdown`" in text
    assert "| random-100 | 88.0 | - | - | 86.0 | - | - |" in text
    assert "| novel | description | model | - | - | - | 280.0 | - |" in text
    assert "| baseline: late fusion | - | - | 85.0 |" in text
    assert "| **total** | 80.0 |" in text


def test_the_report_command_reads_a_run_and_names_a_bad_file(tmp_path, capsys):
    run = _run_folder(tmp_path, _report())
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_report(cmr={"random100": {"i2t": {"R@1": 80.0}, "t2i": {"R@1": 86.0}}})))
    assert cli.main(["report", str(run), "--spread-from", str(other), "--json"]) == 0
    rows = _rows(json.loads(capsys.readouterr().out))
    assert rows["cross-modal random-100 R@1, image -> text"]["spread"] == 8.0
    (tmp_path / "bad.json").write_text("{not json")
    assert cli.main(["report", str(tmp_path / "bad.json")]) == 1
    assert "bad.json" in capsys.readouterr().err


def test_the_report_command_writes_its_tables_between_the_readme_markers(tmp_path, capsys):
    run = _run_folder(tmp_path, _report())
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nbefore\n<!-- report: begin (generated) -->\nold table\n<!-- report: end -->\nafter\n")
    assert cli.main(["report", str(run), "--into", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n<!-- report: begin (generated) -->\n")
    assert text.endswith("<!-- report: end -->\nafter\n")
    assert "old table" not in text
    assert f"`unifashion report {run} --into {readme}`" in text
    assert "| random-100 | 88.0 | - | - | 86.0 | - | - |" in text
    # Written again from the same report, the file does not change (the block is replaced, not added).
    assert cli.main(["report", str(run), "--into", str(readme)]) == 0
    assert readme.read_text() == text
    capsys.readouterr()
    # No markers, or two begin markers: refused with the file named, and the file left as it was.
    for bad in ("# no markers\n", "<!-- report: begin -->\n<!-- report: begin -->\n<!-- report: end -->\n"):
        readme.write_text(bad)
        assert cli.main(["report", str(run), "--into", str(readme)]) == 1
        err = capsys.readouterr().err
        assert str(readme) in err and "<!-- report: end -->" in err
        assert readme.read_text() == bad


def test_a_second_run_of_other_work_is_refused_and_the_seeds_are_named(tmp_path, capsys):
    run, same, other = tmp_path / "run.json", tmp_path / "seed1.json", tmp_path / "small.json"
    first = _report()
    first["settings"].update(seed=0, train_seed=0)
    run.write_text(json.dumps(first))
    second = copy.deepcopy(first)
    second["settings"]["train_seed"] = 1
    same.write_text(json.dumps(second))
    assert cli.main(["report", str(run), "--spread-from", str(same), "--markdown"]) == 0
    assert "this run: seed 0, train seed 0; the second run: seed 0, train seed 1." in capsys.readouterr().out
    smaller = copy.deepcopy(second)
    smaller["settings"]["products"] = 1000
    other.write_text(json.dumps(smaller))
    assert cli.main(["report", str(run), "--spread-from", str(other), "--json"]) == 1
    err = capsys.readouterr().err
    assert str(other) in err and "products 1000 (this run: 8000)" in err
    # Called from Python, the same pair is refused too.
    with pytest.raises(ConfigError, match=r"products 1000 \(this run: 8000\)"):
        evaluate_targets(first, smaller)


def test_the_composed_margin_counts_the_baselines_after_phase_1a_and_compares_like_with_like():
    first = _report()
    rows = _rows(evaluate_targets(first))
    assert rows["composed retrieval average recall minus the best baseline"]["figure"] == 12.0  # 97 - late fusion 85
    early = copy.deepcopy(first)
    early["cir"]["after_phase1a"] = {
        "composed": {"avg": 90.0},
        "baselines": {"image_only": {"avg": 40.0}, "text_only": {"avg": 60.0}, "late_fusion": {"avg": 89.5}},
    }
    margin = _rows(evaluate_targets(early))["composed retrieval average recall minus the best baseline"]
    assert (margin["figure"], margin["status"]) == (7.5, "not met")  # 97 - 89.5: phase 1a's late fusion is best
    # A second run without the phase-1a baselines computed its margin from fewer baselines: no spread.
    targets = evaluate_targets(early, first)
    margin = _rows(targets)["composed retrieval average recall minus the best baseline"]
    assert (margin["second_run"], margin["spread"]) == (12.0, None) and "late_fusion" in margin["note"]
    assert "no spread, the second run computed it from other parts" in format_targets(targets)
    from unifashion.evaluation.report import targets_table

    assert "no spread, the second run computed it from other parts" in targets_table(targets)
    # With the same baselines on both sides the spread is their difference, as for every figure.
    again = copy.deepcopy(early)
    again["cir"]["average"]["avg"] = 99.0
    margin = _rows(evaluate_targets(early, again))["composed retrieval average recall minus the best baseline"]
    assert (margin["spread"], "note" in margin) == (2.0, False)
    text = report_markdown(early, evaluate_targets(early), "unifashion report runs/full --markdown")
    assert "| after phase 1a: baseline: late fusion | - | - | 89.5 |" in text


def test_named_report_blocks_let_one_file_hold_several_runs(tmp_path, capsys):
    run = _run_folder(tmp_path, _report())
    readme = tmp_path / "README.md"
    original = (
        "<!-- report: begin full (the full run) -->\nold full\n<!-- report: end full -->\n"
        "between\n<!-- report: begin demo -->\nold demo\n<!-- report: end demo -->\n"
    )
    readme.write_text(original)
    assert cli.main(["report", str(run), "--into", str(readme), "--block", "demo"]) == 0
    text = readme.read_text()
    assert "old full" in text and "old demo" not in text
    assert text.index("between") < text.index(f"`unifashion report {run} --into {readme} --block demo`")
    assert text.startswith("<!-- report: begin full (the full run) -->\nold full\n<!-- report: end full -->\n")
    capsys.readouterr()
    # No unnamed pair, an unknown name, or --block without --into: refused, the file left as it was.
    readme.write_text(original)
    assert cli.main(["report", str(run), "--into", str(readme)]) == 1
    assert "found 0 begin and 0 end markers" in capsys.readouterr().err
    assert cli.main(["report", str(run), "--into", str(readme), "--block", "paper"]) == 1
    assert "'<!-- report: end paper -->'" in capsys.readouterr().err
    assert cli.main(["report", str(run), "--block", "demo"]) == 1
    assert "--block" in capsys.readouterr().err
    assert readme.read_text() == original


def test_the_report_command_prints_an_ablation_table_against_the_q_former_only_row(tmp_path, capsys):
    rows = {
        "qformer_only": {"label": "Q-Former only", "train_seconds": 120.0, "cmr_mean_recall": 80.0,
                         "cir_average_recall": 90.0},
        "with_llm": {"label": "+ LLM", "train_seconds": 240.0, "cmr_mean_recall": 81.0,
                     "cir_average_recall": 92.5, "caption_bleu4": 30.0},
        "full": {"label": "full (LLM + diffusion)", "train_seconds": 1800.0, "cmr_mean_recall": 82.0,
                 "cir_average_recall": 89.0, "caption_bleu4": 31.0, "generation_fid_effnet": 50.0},
    }  # fmt: skip
    out = tmp_path / "ablation"
    out.mkdir()
    (out / "ablation.json").write_text(json.dumps({"data": "d", "size": "full", "split": "val", "rows": rows}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- report: begin ablation -->\n<!-- report: end ablation -->\n")
    assert cli.main(["report", str(out), "--into", str(readme), "--block", "ablation"]) == 0
    text = readme.read_text()
    assert f"`unifashion report {out} --into {readme} --block ablation`" in text
    # The last two columns: composed average recall minus the Q-Former-only row's, and training minutes.
    assert "| Q-Former only | 80.00 | 90.00 | - | - | 0.00 | 2.0 |" in text
    assert "| + LLM | 81.00 | 92.50 | 30.00 | - | 2.50 | 4.0 |" in text
    assert "| full (LLM + diffusion) | 82.00 | 89.00 | 31.00 | 50.00 | -1.00 | 30.0 |" in text
    capsys.readouterr()
    # The file itself is read the same way; an ablation has no second run to take a spread from.
    assert cli.main(["report", str(out / "ablation.json")]) == 0
    assert "+ LLM" in capsys.readouterr().out
    assert cli.main(["report", str(out), "--spread-from", str(out)]) == 1
    assert "ablation" in capsys.readouterr().err
    # Today's layout: every row's minutes are its own phase 2, phase 1's are said once.
    layout = {"data": "d", "size": "full", "split": "val", "rows": rows, "phase1_seconds": 600.0, "resumed": True}
    (out / "ablation.json").write_text(json.dumps(layout))
    assert cli.main(["report", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert "each row's own phase 2; phase 1, which every row starts from, took 10.0 min." in text
    assert "The run was resumed" in text and "the full row's are the whole pipeline" not in text
    (out / "ablation.json").write_text(json.dumps({"rows": "none"}))
    assert cli.main(["report", str(out)]) == 1
    assert "ablation.json" in capsys.readouterr().err
