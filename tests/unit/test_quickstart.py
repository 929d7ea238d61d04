"""The main job end to end at its smoke-test size, and the ablation table on the same data."""

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unifashion import cli


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "run"
    assert cli.main(["quickstart", "--out", str(out), "--size", "tiny", "--quiet"]) == 0
    return out


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        assert isinstance(d, dict) and part in d, dotted
        d = d[part]
    return d


def test_report_json_holds_every_figure_of_the_contract(quickstart):
    report = json.loads((quickstart / "report.json").read_text())
    for direction in ("i2t", "t2i"):
        for k in ("R@1", "R@5", "R@10"):
            assert 0 <= _get(report, f"cmr.random100.{direction}.{k}") <= 100
    for k in ("R@10", "R@50", "avg"):
        assert 0 <= _get(report, f"cir.average.{k}") <= 100
        for b in ("image_only", "text_only", "late_fusion"):
            assert 0 <= _get(report, f"cir.baselines.{b}.{k}") <= 100
    variants = _get(report, "cir.variants")
    # The tiny caption head (random weights) writes empty captions, so the caption-assisted variants
    # say why they did not run (the variants themselves are checked in test_captioning_pipeline.py).
    assert "no candidate caption" in variants["skipped"], variants
    for k in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
        assert isinstance(_get(report, f"captioning.{k}"), float)
    assert _get(report, "captioning.baseline_nn.CIDEr") > 0
    assert _get(report, "generation.fid_effnet") >= 0
    assert 0 <= _get(report, "generation.colour_accuracy") <= 100
    samplers = _get(report, "generation.samplers")
    assert set(samplers) == {"plms-50", "ddim-20", "dpm++-20"}
    for s in samplers.values():
        assert s["fid_effnet"] >= 0 and s["seconds_per_image"] > 0
    assert _get(report, "generation.tryon.paired.outside_mask_change") == 0.0
    timing = _get(report, "timing")
    assert timing["total_seconds"] >= sum(timing["stages"].values()) * 0.99
    assert {"data", "training", "eval retrieval", "eval captioning", "eval generation"} <= set(timing["stages"])
    assert (report["settings"]["seed"], report["settings"]["train_seed"]) == (0, 0)
    # The baselines with the Q-Former after phase 1a count toward the composed margin too.
    early = _get(report, "cir.after_phase1a.baselines")
    assert set(early) == {"image_only", "text_only", "late_fusion"}
    best = max(v["avg"] for v in [*early.values(), *_get(report, "cir.baselines").values()])
    margin = next(r for r in report["targets"]["rows"] if r["target"].startswith("composed retrieval"))
    assert margin["figure"] == round(_get(report, "cir.average.avg") - best, 2)
    # The phase-1a row ranks by ITC only (the report reads no re-ranking of it); the final model's
    # re-ranked rows are there.
    results = json.loads((quickstart / "results.json").read_text())
    assert "composed_itm" not in results["retrieval_phase1a"]["cir"]
    assert "itc_itm" not in results["retrieval_phase1a"]["cmr"]["random100"]
    assert "composed_itm" in results["retrieval"]["cir"] and _get(report, "cir.itm_rerank.avg") >= 0


def test_report_judges_the_targets_and_captions_the_novel_split(quickstart):
    report = json.loads((quickstart / "report.json").read_text())
    targets = report["targets"]
    assert len(targets["rows"]) == 12
    assert all(r["status"] in ("met (spread unknown)", "not met", "not measured") for r in targets["rows"])
    assert "products 700 < 8000" in targets["not_judged"]  # the tiny size is not what the targets are judged on
    assert report["captioning"]["novel"]["items"] > 0 and "CIDEr" in report["captioning"]["novel"]
    assert set(report["captioning"]["attributes"]) == {"val", "novel"}
    assert "Quality targets" in (quickstart / "report.html").read_text()


def test_the_caption_library_is_the_captioning_evaluation_when_it_covers_val(quickstart, tmp_path):
    from unifashion.data.formats import read_split
    from unifashion.recipes.quickstart import _candidate_library

    ids = [p.id for p in read_split(quickstart / "data", "val").products]
    every = {"styles": {"description": {"generated": {pid: f"caption of {pid}" for pid in ids}}}}
    path = _candidate_library(every, quickstart / "data", tmp_path / "library.json")
    assert json.loads(path.read_text()) == {pid: f"caption of {pid}" for pid in ids}
    part = {"styles": {"description": {"generated": {pid: "x" for pid in ids[1:]}}}}
    assert _candidate_library(part, quickstart / "data", tmp_path / "part.json") is None  # one product short


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.svgs = [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self.tables += tag == "table"
        self.svgs += tag == "svg"


def test_report_html_shows_tables_samples_and_curves(quickstart):
    html = (quickstart / "report.html").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Table 4"):
        assert title in html
    refs = _Refs()
    refs.feed(html)
    assert refs.images and all((quickstart / src).is_file() for src in refs.images)
    report = json.loads((quickstart / "report.json").read_text())
    assert {"text_search", "composed_search", "captions", "generated", "tryon"} <= set(report["samples"])
    assert refs.svgs >= len(report["curves"]) >= 7  # one curve per training stage
    # Each text query shows its top five, flagged where the result is the query's own product.
    for q in report["samples"]["text_search"]:
        assert len(q["results"]) == 5
        assert all(r["match"] == (r["id"] == q["target_id"]) for r in q["results"])


def test_a_train_seed_seeds_training_and_keeps_the_data(quickstart, tmp_path, monkeypatch):
    import shutil

    import unifashion.training.pipeline as pipeline
    from unifashion.recipes.quickstart import run_quickstart

    class Stop(Exception):
        pass

    seen = {}

    def train(cfg, out, **kwargs):
        seen["seed"], seen["data"] = cfg.run.seed, cfg.run.data
        raise Stop

    monkeypatch.setattr(pipeline, "train_pipeline", train)
    shutil.copytree(quickstart / "data", tmp_path / "data")  # the same data: kept, not written again
    before = (tmp_path / "data" / "quickstart.json").stat().st_mtime_ns
    with pytest.raises(Stop):
        run_quickstart(tmp_path, "tiny", seed=0, train_seed=3, progress=False)
    assert seen == {"seed": 3, "data": str(tmp_path / "data")}
    assert (tmp_path / "data" / "quickstart.json").stat().st_mtime_ns == before


def test_quickstart_keeps_its_data_and_the_model_loads(quickstart):
    from unifashion.pipelines.unifashion import UniFashion

    model = UniFashion.from_pretrained(quickstart / "model")
    assert {"retrieval", "captioning", "text2image", "tryon", "design"} <= set(model.heads)
    assert json.loads((quickstart / "data" / "quickstart.json").read_text())["products"] == 700
    # ... and leaves a catalog of every product, built with that model, ready to serve.
    from unifashion.catalog.build import check_model
    from unifashion.catalog.store import Catalog

    catalog = Catalog.open(quickstart / "catalog")
    check_model(catalog, quickstart / "model")
    assert len(catalog) == 700 and catalog.manifest["caption_source"] == "data"


def test_ablation_rows_and_resume(quickstart, tmp_path, capsys, monkeypatch):
    """The four rows, in a run stopped during its second evaluation and resumed: what was
    finished (every training, the first row's figures) is kept, not done again."""
    from unifashion.evaluation import generation
    from unifashion.recipes import ablation
    from unifashion.training import pipeline

    out = tmp_path / "ablation"
    args = ["ablate", "--data", str(quickstart / "data"), "--out", str(out), "--size", "tiny", "--quiet"]
    real_evaluate, evaluated = ablation._evaluate_row, []
    real_train = pipeline.train_pipeline

    def stopped_at_with_llm(model, *rest):
        if model.name == "with_llm":
            raise KeyboardInterrupt
        return real_evaluate(model, *rest)

    monkeypatch.setattr(ablation, "_evaluate_row", stopped_at_with_llm)
    # A row's generation figure is its text prompts' fid: no composed requests are generated for it.
    monkeypatch.setattr(generation, "evaluate_composed", lambda *a: pytest.fail("composed requests generated"))
    assert cli.main(args) == 130  # Ctrl-C
    saved = json.loads((out / ablation.PROGRESS_FILE).read_text())
    assert list(saved["trained"]) == ["phase1", "qformer_only", "with_llm", "with_diffusion", "full"]
    assert list(saved["rows"]) == ["qformer_only"] and not (out / "ablation.json").exists()
    assert not list(out.glob("*.init"))  # each row's starting copy goes once the row is trained

    def counted(model, *rest):
        evaluated.append(model.name)
        return real_evaluate(model, *rest)

    def no_training(*a, **k):
        raise AssertionError("a finished training ran again")

    monkeypatch.setattr(ablation, "_evaluate_row", counted)
    monkeypatch.setattr(pipeline, "train_pipeline", no_training)
    # Another seed is other work: refused, naming what differs.
    assert cli.main([*args, "--resume", "--seed", "1"]) == 1
    assert "seed differ" in capsys.readouterr().err
    assert cli.main([*args, "--resume"]) == 0
    assert evaluated == ["with_llm", "with_diffusion", "full"]
    result = json.loads((out / "ablation.json").read_text())
    assert result["resumed"] and result["rows"]["qformer_only"] == {
        "label": "Q-Former only",
        **saved["rows"]["qformer_only"],
        "train_seconds": saved["trained"]["qformer_only"]["seconds"],
    }
    rows = result["rows"]
    assert list(rows) == ["qformer_only", "with_llm", "with_diffusion", "full"]
    for row in rows.values():
        assert 0 <= row["cmr_mean_recall"] <= 100 and 0 <= row["cir_average_recall"] <= 100
    assert "caption_bleu4" not in rows["qformer_only"] and "generation_fid_effnet" not in rows["qformer_only"]
    assert "caption_bleu4" in rows["with_llm"] and "generation_fid_effnet" not in rows["with_llm"]
    assert "generation_fid_effnet" in rows["with_diffusion"] and "caption_bleu4" not in rows["with_diffusion"]
    assert {"caption_bleu4", "generation_fid_effnet"} <= set(rows["full"])
    # Phase 2 differs by its terms: the Q-Former of each row is its own; frozen heads are shared.
    q = {name: (out / name / "qformer.safetensors").read_bytes() for name in rows}
    assert len(set(q.values())) == 4
    assert not (out / "qformer_only" / "captioner").exists() and not (out / "qformer_only" / "vae").exists()
    lora = Path("captioner") / "lora.safetensors"
    assert (out / "with_llm" / lora).read_bytes() == (out / "full" / lora).read_bytes()
    # The README's Table 5 is printed from ablation.json by the report command.
    capsys.readouterr()
    assert cli.main(["report", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    full = rows["full"]
    assert f"| full (LLM + diffusion) | {full['cmr_mean_recall']:.2f} | {full['cir_average_recall']:.2f} |" in text

    # A second seed extends the finished ablation: only its four phase 2 runs and evaluations run,
    # and every figure becomes the mean of the two seeds with their range.
    trained = []

    def counted_training(cfg, model, **kwargs):
        trained.append((model.name, cfg.run.seed))
        return real_train(cfg, model, **kwargs)

    monkeypatch.setattr(pipeline, "train_pipeline", counted_training)
    evaluated.clear()
    assert cli.main([*args, "--resume", "--seeds", "0", "1"]) == 0
    assert trained == [(f"{name}.seed1", 1) for name in rows]
    assert evaluated == [f"{name}.seed1" for name in rows]
    two = json.loads((out / "ablation.json").read_text())
    assert two["seeds"] == [0, 1] and two["phase1_seconds"] == result["phase1_seconds"]
    for name, row in two["rows"].items():
        assert {k: v for k, v in row["seeds"]["0"].items() if k in ablation.FIGURES} == {
            k: v for k, v in rows[name].items() if k in ablation.FIGURES
        }
        for figure in ablation.FIGURES:
            values = [row["seeds"][s].get(figure) for s in ("0", "1")]
            if values[0] is None:
                assert figure not in row and values[1] is None
                continue
            assert row[figure] == pytest.approx(sum(values) / 2)
            assert row["range"][figure] == [min(values), max(values)]
    # The second seed is its own phase 2 from the same phase-1 model.
    assert (out / "full.seed1" / "qformer.safetensors").read_bytes() != q["full"]
    capsys.readouterr()
    assert cli.main(["report", str(out), "--markdown"]) == 0
    text = capsys.readouterr().out
    full, span = two["rows"]["full"], two["rows"]["full"]["range"]["cmr_mean_recall"]
    assert f"| full (LLM + diffusion) | {full['cmr_mean_recall']:.2f} ({span[0]:.2f}-{span[1]:.2f}) |" in text
    assert "mean over phase-2 seeds 0, 1" in text
    # Seeds must differ.
    assert cli.main([*args, "--resume", "--seeds", "0", "0"]) == 1
    assert "--seeds: expected one or more different seeds" in capsys.readouterr().err


def test_a_head_curve_measured_on_the_way_is_the_shorter_run(quickstart, tmp_path, monkeypatch, capsys, load_benchmark):
    """``head_levers.py --eval-at``: the try-on head measured after 2 of 4 constant-rate steps draws
    the very samples a run of 2 steps draws (and the run then goes on from its own weights, not the
    EMA it was measured with: its 4-step samples differ)."""
    script = load_benchmark("head_levers")
    common = ["head_levers", "--model", str(quickstart / "model"), "--data", str(quickstart / "data")]
    common += ["--task", "tryon", "--limit", "3", "--variant", 'c:lr_schedule="constant",warmup_ratio=0.0']
    monkeypatch.setattr("sys.argv", [*common, "--steps", "2", "--samples", str(tmp_path / "short")])
    script.main()
    monkeypatch.setattr(
        "sys.argv",
        [
            *common,
            "--steps",
            "4",
            "--eval-at",
            "2",
            "--samples",
            str(tmp_path / "long"),
            "--json",
            str(tmp_path / "t.json"),
        ],
    )
    script.main()
    capsys.readouterr()
    runs = json.loads((tmp_path / "t.json").read_text())["runs"]
    assert [(r["steps"], r["of_run"]) for r in runs] == [(2, 4), (4, 4)]
    assert runs[0]["train_seconds"] < runs[1]["train_seconds"]
    for setting in ("paired", "unpaired"):
        short = (tmp_path / "short" / f"tryon_c_2_{setting}.png").read_bytes()
        assert short == (tmp_path / "long" / f"tryon_c_2_{setting}.png").read_bytes(), setting
        assert short != (tmp_path / "long" / f"tryon_c_4_{setting}.png").read_bytes(), setting


def test_the_phase1a_curve_trains_each_length_with_the_quickstart_config(quickstart, tmp_path, capsys, load_benchmark):
    """``phase1a_curve.py``: one phase-1a run per length, each with the size's config and only
    ``phase1_epochs`` changed, measured on val (random-100 R@1 in both directions, composed)."""
    script = load_benchmark("phase1a_curve")
    args = ["--data", str(quickstart / "data"), "--size", "tiny", "--epochs", "0.5,1", "--work", str(tmp_path)]
    args += ["--json", str(tmp_path / "curve.json"), "--seed", "2", "--set", "retrieval.weight_decay=0.01"]
    script.main(args)
    assert "| phase 1a epochs |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "curve.json").read_text())
    assert [r["epochs"] for r in rows] == [0.5, 1.0]
    for r in rows:
        assert 0 <= r["r1_i2t"] <= 100 and 0 <= r["r1_t2i"] <= 100 and 0 <= r["composed_avg"] <= 100
        trained = json.loads((tmp_path / f"epochs{r['epochs']:g}" / "config.json").read_text())
        retrieval = trained["training"]["pipeline"]["config"]["retrieval"]
        wanted = (r["epochs"], 2, 0.01, 16)  # the length, --seed, --set and the tiny size's batch
        assert (
            retrieval["phase1_epochs"],
            retrieval["seed"],
            retrieval["weight_decay"],
            retrieval["batch_size"],
        ) == wanted
        assert trained["training"]["pipeline"]["config"]["run"]["stages"] == ["phase1a"]


def test_the_dropout_gap_switches_dropout_per_path_and_group(quickstart, capsys, load_benchmark):
    """``dropout_gap.py``: evaluation mode is deterministic, dropout on changes the scores, and each
    group's pattern names dropout layers that exist in the Q-Former."""
    import re

    import torch

    from unifashion.models.retrieval import RetrievalModel

    script = load_benchmark("dropout_gap")
    model = RetrievalModel.from_pretrained(quickstart / "model")
    names = [n for n, m in model.qformer.named_modules() if isinstance(m, torch.nn.Dropout)]
    for group, pattern in script.GROUPS.items():
        assert any(re.search(pattern, n) for n in names), group
    script.main([str(quickstart / "model"), "--data", str(quickstart / "data"), "--pairs", "128"])
    out = json.loads(capsys.readouterr().out.splitlines()[0])["accuracy_loss"]
    assert len(out) == 2 + len(script.GROUPS)
    assert all(0 <= acc <= 100 for acc, _ in out.values())
    script.main([str(quickstart / "model"), "--data", str(quickstart / "data"), "--pairs", "128"])
    assert json.loads(capsys.readouterr().out.splitlines()[0])["accuracy_loss"]["dropout off"] == out["dropout off"]
    assert out["dropout on"][1] != out["dropout off"][1]


def test_the_shipped_full_config_is_the_full_quickstarts_training():
    """configs/quickstart-full.toml trains what ``quickstart --size full`` trains (so its stages can
    be run on their own with ``unifashion train --config``): the same config, field for field."""
    from unifashion.config import to_dict
    from unifashion.recipes.quickstart import SIZES, training_config
    from unifashion.training.pipeline import load_pipeline_config

    shipped = load_pipeline_config(Path(__file__).parents[2] / "configs" / "quickstart-full.toml")
    quickstart = training_config(Path(shipped.run.data), SIZES["full"], seed=0, progress=True)
    assert to_dict(shipped) == to_dict(quickstart)
    assert shipped.model_config().qformer.dropout == 0.0 and shipped.retrieval.phase1_epochs == 8.0  # not defaults
