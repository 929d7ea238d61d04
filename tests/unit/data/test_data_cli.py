"""The `unifashion data` commands end to end."""

import json

from PIL import Image

from unifashion import cli


def test_synth_stats_preview(tmp_path, capsys):
    out = tmp_path / "fs"
    assert cli.main(["data", "synth", "--out", str(out), "--products", "40", "--size", "64", "--quiet"]) == 0
    assert "FashionSynth: 40 products" in capsys.readouterr().out
    assert cli.main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["format"] == "folder"
    assert sum(s["totals"]["products"] for s in stats["splits"].values()) == 40
    assert cli.main(["data", "stats", str(out / "fashioniq"), "--format", "fashioniq", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "fashioniq"
    sheet = tmp_path / "sheet.png"
    assert cli.main(["data", "preview", str(out), "--out", str(sheet)]) == 0
    with Image.open(sheet) as im:
        assert im.width > 400 and im.height > 400


def test_bad_input_is_one_clear_line_and_exit_code_1(tmp_path, capsys):
    (tmp_path / "products.jsonl").write_text('{"id": "a"}\n')
    assert cli.main(["data", "stats", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "products.jsonl [line 1]: missing key 'category'" in err
    assert cli.main(["data", "stats", str(tmp_path), "--skip-bad", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["train"]["skipped"]["count"] == 1
    assert cli.main(["data", "synth", "--out", str(tmp_path), "--products", "20"]) == 1
    assert "not empty" in capsys.readouterr().err
