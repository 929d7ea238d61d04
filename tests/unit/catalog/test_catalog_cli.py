"""``unifashion catalog build | add | remove | info`` on the tiny model."""

import json
import shutil

import numpy as np
import pytest

from unifashion import cli
from unifashion.catalog.build import read_products
from unifashion.catalog.store import Catalog
from unifashion.pipelines.unifashion import UniFashion

pytestmark = pytest.mark.slow


def test_build_add_remove_info(shop, tmp_path, capsys):
    out = tmp_path / "cat"
    assert (
        cli.main(
            [
                "catalog",
                "build",
                "--model",
                str(shop.model),
                "--data",
                str(shop.data),
                "--out",
                str(out),
                "--split",
                "train",
                "--captions",
                "none",
                "--quiet",
            ]
        )
        == 0
    )
    train = [p for p in read_products(shop.data, ["train"])]
    cat = Catalog.open(out)
    assert cat.ids == [p.id for p in train] and not cat.has_captions
    assert cat.manifest["caption_weight"] == 0.0 and cat.manifest["caption_source"] is None
    # The stored vectors are the model's own embeddings of the product images.
    model = UniFashion.from_pretrained(shop.model)
    want = model.encode_images([p.images[0] for p in train[:4]]).float().numpy()
    np.testing.assert_allclose(cat.vectors.queries[:4], want, atol=1e-6)

    assert (
        cli.main(["catalog", "add", "--catalog", str(out), "--data", str(shop.data), "--split", "val", "--quiet"]) == 0
    )
    val = read_products(shop.data, ["val"])
    grown = Catalog.open(out)
    assert len(grown) == len(train) + len(val) and val[0].id in grown
    # The same products again: refused without --replace, naming one of them.
    assert cli.main(["catalog", "add", "--catalog", str(out), "--data", str(shop.data), "--split", "val"]) == 1
    assert val[0].id in capsys.readouterr().err
    assert (
        cli.main(
            [
                "catalog",
                "add",
                "--catalog",
                str(out),
                "--data",
                str(shop.data),
                "--split",
                "val",
                "--replace",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(Catalog.open(out)) == len(grown)

    assert cli.main(["catalog", "remove", "--catalog", str(out), "--ids", train[0].id, val[0].id]) == 0
    assert len(Catalog.open(out)) == len(grown) - 2 and train[0].id not in Catalog.open(out)
    capsys.readouterr()
    assert cli.main(["catalog", "info", "--catalog", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["products"] == len(grown) - 2 and info["kinds"]["queries"] == "flat"
    assert info["model"]["fingerprint"] and info["categories"]


def test_build_with_an_approximate_index_and_the_models_captions(shop, tmp_path):
    out = tmp_path / "cat"
    assert (
        cli.main(
            [
                "catalog",
                "build",
                "--model",
                str(shop.model),
                "--data",
                str(shop.data),
                "--out",
                str(out),
                "--index",
                "hnsw",
                "--captions",
                "generate",
                "--quiet",
            ]
        )
        == 0
    )
    cat = Catalog.open(out)
    assert set(cat.manifest["kinds"].values()) == {"hnsw"} and cat.manifest["caption_source"] == "generated:description"
    model = UniFashion.from_pretrained(shop.model)
    first = read_products(shop.data)[0]
    assert cat.product(first.id)["generated_caption"] == model.caption([first.images[0]])[0].strip()


def test_errors_name_what_is_wrong(shop, tmp_path, capsys):
    assert cli.main(["catalog", "info", "--catalog", str(tmp_path)]) == 1
    assert "no CURRENT" in capsys.readouterr().err
    no_model = tmp_path / "empty"
    no_model.mkdir()
    assert (
        cli.main(["catalog", "add", "--catalog", str(shop.catalog), "--data", str(shop.data), "--model", str(no_model)])
        == 1
    )
    assert "not a UniFashion checkpoint folder (no config.json)" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(shop.catalog, copy)
    assert cli.main(["catalog", "remove", "--catalog", str(copy), "--ids", "nope"]) == 1
    assert "'nope'" in capsys.readouterr().err
