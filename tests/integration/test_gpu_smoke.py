"""benchmarks/gpu_smoke.py, run on the CPU: every stage of the tiny and the shrunk-paper pipelines,
then captioning and generation through UniFashion on the chosen device. (On a CUDA machine the same
script reports bf16 step times and peak memory.)"""

import json

import pytest

pytestmark = pytest.mark.slow

STAGES = [
    "phase1a",
    "phase1b_caption",
    "phase1b_vae",
    "phase1b_text2image",
    "phase1b_tryon",
    "phase1b_design",
    "phase2",
]


def test_the_gpu_smoke_script_runs_every_stage_of_both_pipelines(tmp_path, capsys, monkeypatch, load_benchmark):
    import torch

    script = load_benchmark("gpu_smoke")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main([]) == 0
    assert "skipped" in json.loads(capsys.readouterr().out)
    assert script.main(["--allow-cpu", "--steps", "2", "--out", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == "cpu"
    for run in ("tiny", "paper-shrunk"):
        assert list(report["runs"][run]["stages"]) == STAGES, run
        assert report["runs"][run]["model_device"] == "cpu"
    # The paper run went through the paper preset's loaders: its model keeps the stand-ins' sources.
    config = json.loads((tmp_path / "paper-shrunk" / "config.json").read_text())["config"]
    assert config["preset"] == "paper" and config["qformer"]["vocab_size"] == 30523
    assert config["llm"]["source"].endswith("llava") and config["diffusion"]["beta_start"] == 0.00085
