"""The `mini` retrieval path on the real backbones: MiniLM-initialised Q-Former over EfficientNet features."""

import json

import pytest

from unifashion import cli
from unifashion.config import RetrievalTrainingConfig
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.pipeline import retrieval_part, train_pipeline

pytestmark = pytest.mark.slow


def test_mini_trains_saves_loads_and_evaluates(tmp_path):
    data = tmp_path / "fs"
    assert (
        cli.main(
            [
                "data",
                "synth",
                "--out",
                str(data),
                "--products",
                "70",
                "--size",
                "64",
                "--quiet",
                "--views",
                "1",
                "--layouts",
                "fashioniq",
                "--tryon",
                "0",
            ]
        )
        == 0
    )
    cfg = RetrievalTrainingConfig(phase1_epochs=2, phase2_epochs=1, batch_size=16, itm_pairs=4)
    summary = train_pipeline(retrieval_part(data, cfg, preset="mini", progress=False), tmp_path / "model")
    assert summary["phase1a"]["last"]["itc"] > 0 and summary["phase2"]["last"]["itc_target"] > 0
    model = RetrievalModel.from_pretrained(tmp_path / "model")
    assert model.config.preset == "mini" and model.qformer.config.hidden_size == 384
    # The checkpoint's text path still carries MiniLM's knowledge of fashion words.
    import torch

    with torch.no_grad():
        e = model.qformer.text_embedding(
            model.tokenize(["red floral dress", "crimson flowery dress", "black leather boots"])
        )
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])
    out = tmp_path / "eval.json"
    assert (
        cli.main(
            [
                "eval",
                "retrieval",
                "--model",
                str(tmp_path / "model"),
                "--data",
                str(data),
                "--split",
                "train",
                "--json",
                str(out),
                "--rerank-k",
                "3",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())["splits"]["train"]
    assert "full" in result["cmr"] and "composed" in result["cir"]
