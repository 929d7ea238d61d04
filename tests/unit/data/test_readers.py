"""Every reader: round trip from FashionSynth, the real Fashion-IQ files, and clear errors on bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unifashion.data import fashioniq
from unifashion.data.formats import FORMATS, dataset_stats, detect_format, list_splits, read_split
from unifashion.data.records import join_relative_captions
from unifashion.data.synth import attributes as A
from unifashion.utils.errors import DataError

FIXTURES = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "fashioniq"


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# ---------------------------------------------------------------------------
# round trip: FashionSynth -> each reader


def test_every_layout_is_detected(synth_dir):
    root, _ = synth_dir
    assert detect_format(root) == "folder"
    for fmt in ("fashioniq", "vitonhd", "dresscode", "fashiongen", "fashion200k"):
        assert detect_format(root / fmt) == fmt


def test_folder_round_trip(synth_dir):
    root, summary = synth_dir
    products = _rows(root / "products.jsonl")
    triplets = _rows(root / "triplets.jsonl")
    assert list_splits(root) == sorted(A.SPLITS)
    for split in A.SPLITS:
        data = read_split(root, split, check_images="decode")
        expected = [p for p in products if p["split"] == split]
        assert [p.id for p in data.products] == [p["id"] for p in expected]
        assert data.products[0].attributes == expected[0]["attributes"]
        assert data.products[0].captions == (expected[0]["caption"],)
        assert len(data.triplets) == sum(t["split"] == split for t in triplets)
        assert all(len(p.images) == len(e["images"]) for p, e in zip(data.products, expected, strict=True))
        assert data.skipped == [] and data.has_targets
    assert sum(len(read_split(root, s).tryon) for s in A.SPLITS) == len(_rows(root / "tryon.jsonl"))
    assert summary["counts"]["products"] == len(products)


def test_fashioniq_round_trip(synth_dir):
    root, _ = synth_dir
    products = [p for p in _rows(root / "products.jsonl") if p["category"] in A.FASHIONIQ_CATEGORIES]
    triplets = [t for t in _rows(root / "triplets.jsonl") if t["category"] in A.FASHIONIQ_CATEGORIES]
    for split in A.SPLITS:
        data = read_split(root / "fashioniq", split, check_images="decode")
        assert sorted(p.id for p in data.products) == sorted(p["id"] for p in products if p["split"] == split)
        got = sorted((t.reference, t.target, t.captions) for t in data.triplets)
        want = sorted((t["reference"], t["target"], tuple(t["captions"])) for t in triplets if t["split"] == split)
        assert got == want


def test_tryon_layouts_round_trip(synth_dir):
    root, _ = synth_dir
    rows = _rows(root / "tryon.jsonl")
    upper = [r for r in rows if r["paired"] and r["category"] in A.VITON_CATEGORIES]
    viton = [s for split in ("train", "test") for s in read_split(root / "vitonhd", split, check_images="decode").tryon]
    assert sum(s.paired for s in viton) == len(upper)
    assert all(s.pose and s.parse and s.agnostic and s.agnostic_mask and s.sketch for s in viton)
    paired = [s for s in viton if s.paired]
    assert all(Path(s.cloth.path).stem == Path(s.person.path).stem for s in paired)
    dc_train = read_split(root / "dresscode", "train", check_images="decode")
    dc_test = read_split(root / "dresscode", "test", check_images="decode")
    assert len(dc_train.tryon) + sum(s.paired for s in dc_test.tryon) == sum(r["paired"] for r in rows)
    assert all(s.paired for s in dc_train.tryon)
    assert all(s.text and s.sketch and s.pose_format == "dresscode" for s in dc_train.tryon + dc_test.tryon)
    assert {p.category for p in dc_train.products} <= {"dresses", "upper_body", "lower_body"}


def test_fashiongen_round_trip(synth_dir):
    root, _ = synth_dir
    products = _rows(root / "products.jsonl")
    assert list_splits(root / "fashiongen") == ["train", "validation"]
    for split, ours in (("train", "train"), ("val", "val")):
        data = read_split(root / "fashiongen", split)
        expected = [p for p in products if p["split"] == ours]
        assert [p.captions[0] for p in data.products] == [p["caption"] for p in expected]
        assert [len(p.images) for p in data.products] == [len(p["images"]) for p in expected]
        # The stored pixels are the catalogue image.
        first = data.products[0]
        stored = first.images[0].array()
        original = np.asarray(Image.open(root / expected[0]["images"][0]).convert("RGB"))
        assert np.array_equal(stored, original)
        assert first.subcategory == expected[0]["category"]


def test_fashion200k_round_trip(synth_dir):
    root, _ = synth_dir
    products = _rows(root / "products.jsonl")
    train = read_split(root / "fashion200k", "train", check_images="decode")
    assert len(train.products) == sum(p["split"] == "train" for p in products)
    assert sum(len(p.images) for p in train.products) == sum(
        len(p["images"]) for p in products if p["split"] == "train"
    )
    test = read_split(root / "fashion200k", "test")
    assert all(t.captions[0].startswith("replace ") for t in test.triplets)


def test_stats_reports_counts_per_split_and_category(synth_dir):
    root, _ = synth_dir
    stats = dataset_stats(root, check_images="exists")
    assert stats["format"] == "folder" and set(stats["splits"]) == set(A.SPLITS)
    train = stats["splits"]["train"]
    assert train["totals"]["products"] == sum(c["products"] for c in train["per_category"].values())
    assert train["skipped"]["count"] == 0


# ---------------------------------------------------------------------------
# the real Fashion-IQ annotation files


def test_fashioniq_fixture_counts():
    val = fashioniq.read(FIXTURES, "val", check_images="none")
    assert len(val.triplets) == 75  # 25 per category
    assert {c: sum(t.category == c for t in val.triplets) for c in fashioniq.CATEGORIES} == {
        c: 25 for c in fashioniq.CATEGORIES
    }
    assert len(val.products) == 225  # every id of the three image_splits files
    ids = {p.id for p in val.products}
    assert all(t.reference in ids and t.target in ids for t in val.triplets)
    assert val.has_targets and all(len(t.captions) == 2 for t in val.triplets)


def test_fashioniq_test_split_has_no_targets_and_says_so():
    test = fashioniq.read(FIXTURES, "test", check_images="none")
    assert len(test.triplets) == 15 and all(t.target is None for t in test.triplets)
    assert not test.has_targets
    assert any("no target labels" in n for n in test.notes)


def test_fashioniq_captions_are_kept_as_written_and_joined_like_the_reference():
    val = fashioniq.read(FIXTURES, "val", check_images="none")
    t = next(t for t in val.triplets if t.target == "B0091PLEKA")
    assert t.captions == ("is gold and strapless", " button front longer sleeves")
    assert t.query_text() == "Is gold and strapless and button front longer sleeves"
    # CLIP4Cir's construction: strip ".?, ", capitalise the first (rest lower-cased).
    assert join_relative_captions(["The shirt is black with the Cat in Hat.", " has a V-neck?"]) == (
        "The shirt is black with the cat in hat and has a V-neck"
    )


QUIRKS = FIXTURES.parent / "fashioniq-quirks"


def _split_ids(cat):
    return json.loads((QUIRKS / f"image_splits/split.{cat}.val.json").read_text())


def test_fashioniq_keeps_triplets_with_one_empty_caption_and_says_so():
    val = fashioniq.read(QUIRKS, "val", check_images="none")
    assert val.skipped == []
    counts = {c: sum(t.category == c for t in val.triplets) for c in ("dress", "shirt", "toptee")}
    assert counts == {"dress": 6, "shirt": 11, "toptee": 12}  # every triplet of the files
    empty = [t for t in val.triplets if any(not c.strip() for c in t.captions)]
    assert len(empty) == 3
    assert any("3 triplets with one empty caption kept" in n and "cap.toptee.val.json: 2" in n for n in val.notes)
    # The query string is the published code's, the empty caption included.
    shirt = next(t for t in empty if t.category == "shirt")
    assert shirt.query_text() == " and is grey with a design on the back"
    stats = dataset_stats(QUIRKS, check_images="none")["splits"]["val"]
    assert stats["totals"]["triplets"] == 29 and stats["skipped"]["count"] == 0


def test_fashioniq_ids_shared_by_two_splits_are_in_both_galleries():
    from types import SimpleNamespace

    from unifashion.evaluation.retrieval import category_queries, cir_triplets_by_category

    val = fashioniq.read(QUIRKS, "val", check_images="none")
    shared = set(_split_ids("shirt")) & set(_split_ids("toptee"))
    assert len(shared) == 13
    assert any("13 image ids listed by two categories' splits (shirt+toptee: 13)" in n for n in val.notes)
    stats = val.stats()
    for cat in ("dress", "shirt", "toptee"):  # each category's gallery is exactly its split file
        assert stats["per_category"][cat]["products"] == len(_split_ids(cat))
    assert stats["totals"]["products"] == len(val.products) == len({*_split_ids("shirt"), *_split_ids("toptee")}) + 12
    # The composed-retrieval index of each category is its split list, and targets among the
    # shared ids are found in either category's index.
    products = val.product_map()
    rows = {str(p.images[0]): i for i, p in enumerate(val.products)}
    fake_images = SimpleNamespace(table=SimpleNamespace(index=rows))
    by_cat = cir_triplets_by_category(val, products)
    targets_shared = 0
    for cat, trips in by_cat.items():
        q = category_queries(trips, products, fake_images, cat)
        assert set(q.index_ids) == set(_split_ids(cat))
        assert [q.index_ids[i] for i in q.target] == [t.target for t in trips]
        targets_shared += sum(t.target in shared for t in trips)
    assert targets_shared > 0  # the fixture has such targets: the lookup above is exercised


def test_fashioniq_missing_images_are_errors_unless_skipped(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "fiq")
    with pytest.raises(DataError, match=r"images \[B0084Y8XIU\].*image file is missing"):
        fashioniq.read(tmp_path / "fiq", "val", categories=["dress"])
    data = fashioniq.read(tmp_path / "fiq", "val", categories=["dress"], skip_bad=True)
    assert len(data.skipped) == 75 and data.products == [] and data.triplets == []


def test_fashioniq_reads_png_or_jpg_stand_in_images(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "fiq")
    ids = json.loads((tmp_path / "fiq/image_splits/split.shirt.val.json").read_text())
    (tmp_path / "fiq/images").mkdir()
    for i, asin in enumerate(ids):
        ext = "png" if i % 2 else "jpg"
        Image.new("RGB", (16, 20), (i, 0, 0)).save(tmp_path / f"fiq/images/{asin}.{ext}")
    data = fashioniq.read(tmp_path / "fiq", "val", categories=["shirt"], check_images="decode")
    assert len(data.products) == 75 and len(data.triplets) == 25
    assert {Path(p.images[0].path).suffix for p in data.products} == {".png", ".jpg"}


# ---------------------------------------------------------------------------
# malformed input: a clear error naming the file and item, or --skip-bad


def _folder(tmp_path, products, triplets=None, image_ok=True):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(root / "images" / "a.png")
    if image_ok:
        (root / "images" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "products.jsonl").write_text("".join(json.dumps(p) + "\n" for p in products))
    if triplets is not None:
        (root / "triplets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in triplets))
    return root


GOOD = {"id": "a", "image": "images/a.png", "caption": "red dress", "category": "dress"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"image": "images/a.png", "caption": "x", "category": "dress"}, r"\[line 2\]: missing key 'id'"),
        ({**GOOD, "id": 7}, r"\[line 2\]: wrong type for 'id': expected str, got int"),
        ({**GOOD, "id": "b", "caption": "   "}, r"\[line 2\]: empty caption"),
        ({**GOOD, "id": "b", "captions": ["ok", 3]}, r"\[line 2\]: wrong type for captions\[1\]"),
        ({**GOOD, "id": "b", "image": "images/none.png"}, r"\[line 2\]: image .*none\.png: image file is missing"),
        ({**GOOD, "id": "b", "image": "images/bad.png"}, r"\[line 2\]: image .*bad\.png: unreadable image"),
        ({**GOOD, "id": "b", "images": "images/a.png"}, r"\[line 2\]: wrong type for 'images': expected list"),
        ({**GOOD}, r"\[line 2\]: duplicate product id 'a'"),
    ],
)
def test_folder_malformed_products(tmp_path, bad, message):
    root = _folder(tmp_path, [GOOD, bad])
    with pytest.raises(DataError, match=r"products\.jsonl " + message):
        read_split(root, "train", check_images="decode")
    data = read_split(root, "train", check_images="decode", skip_bad=True)
    assert [p.id for p in data.products] == ["a"]
    assert len(data.skipped) == 1 and data.skipped[0].item == "line 2"


def test_folder_invalid_json_line_is_named(tmp_path):
    root = _folder(tmp_path, [GOOD])
    with open(root / "products.jsonl", "a") as f:
        f.write('{"id": "b", \n')
    with pytest.raises(DataError, match=r"products\.jsonl \[line 2\]: not valid JSON"):
        read_split(root, "train")


def test_folder_malformed_triplets(tmp_path):
    root = _folder(tmp_path, [GOOD, {**GOOD, "id": "b"}], [{"reference": "a", "target": "zz", "captions": ["redder"]}])
    with pytest.raises(DataError, match=r"triplets\.jsonl \[line 1\]: refers to unknown product id"):
        read_split(root, "train")
    root = _folder(tmp_path / "2", [GOOD, {**GOOD, "id": "b"}], [{"reference": "a", "target": "b", "captions": [""]}])
    with pytest.raises(DataError, match=r"triplets\.jsonl \[line 1\]: empty caption"):
        read_split(root, "train")
    root = _folder(tmp_path / "3", [GOOD, {**GOOD, "id": "b"}], [{"reference": "a", "target": "b"}])
    with pytest.raises(DataError, match=r"triplets\.jsonl \[line 1\]: missing key 'captions'"):
        read_split(root, "train")


def test_fashioniq_malformed_items(tmp_path):
    root = tmp_path / "fiq"
    (root / "captions").mkdir(parents=True)
    (root / "captions" / "cap.dress.val.json").write_text(
        json.dumps([{"candidate": "A", "target": "B", "captions": ["x", "y"]}, {"candidate": "A", "captions": ["x"]}])
    )
    with pytest.raises(DataError, match=r"cap\.dress\.val\.json \[1\]: missing key 'target'"):
        fashioniq.read(root, "val", check_images="none")
    (root / "captions" / "cap.dress.val.json").write_text(
        json.dumps([{"candidate": "A", "target": "B", "captions": ["", " "]}])
    )
    # One empty caption of two is kept (the real release has such triplets); none at all is an error.
    with pytest.raises(DataError, match=r"cap\.dress\.val\.json \[0\]: every caption in captions is empty"):
        fashioniq.read(root, "val", check_images="none")
    (root / "captions" / "cap.dress.val.json").write_text("[{")
    with pytest.raises(DataError, match=r"cap\.dress\.val\.json: not valid JSON"):
        fashioniq.read(root, "val", check_images="none")
    with pytest.raises(DataError, match=r"no Fashion-IQ files for split 'train' \(available: val\)"):
        fashioniq.read(root, "train", check_images="none")


def test_fashiongen_malformed(tmp_path):
    import h5py

    path = tmp_path / "fashiongen_256_256_train.h5"
    with h5py.File(path, "w") as f:
        f["input_image"] = np.zeros((3, 8, 8, 3), np.uint8)
        f["input_description"] = np.array([[b"a red dress"], [b""], [b"blue shirt"]])
        f["input_productID"] = np.array([[1], [2], [3]])
        f["input_category"] = np.array([[b"DRESSES"], [b"SHIRTS"], [b"SHIRTS"]])
    with pytest.raises(DataError, match=r"fashiongen_256_256_train\.h5 \[row 1 \(product 2\)\]: empty caption"):
        read_split(tmp_path, "train", "fashiongen")
    data = read_split(tmp_path, "train", "fashiongen", skip_bad=True)
    assert [p.id for p in data.products] == ["1", "3"] and data.products[0].category == "dresses"
    with h5py.File(tmp_path / "fashiongen_256_256_validation.h5", "w") as f:
        f["input_image"] = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match=r"validation\.h5: missing key\(s\) \['input_description'"):
        read_split(tmp_path, "val", "fashiongen")


def test_fashion200k_malformed(tmp_path):
    (tmp_path / "labels").mkdir()
    img = tmp_path / "women/dresses/casual/123/123_0.jpeg"
    img.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(img, format="JPEG")
    good = "women/dresses/casual/123/123_0.jpeg\t0.91\tblack lace dress\n"
    (tmp_path / "labels" / "dress_train_detect_all.txt").write_text(good + "women/x.jpeg\t0.5\n")
    with pytest.raises(DataError, match=r"dress_train_detect_all\.txt \[line 2\]: expected 3 tab-separated fields"):
        read_split(tmp_path, "train")
    (tmp_path / "labels" / "dress_train_detect_all.txt").write_text(
        good + "women/dresses/casual/9/9_0.jpeg\t0.5\tred dress\n"
    )
    with pytest.raises(DataError, match=r"\[line 2\]: image .*9_0\.jpeg: image file is missing"):
        read_split(tmp_path, "train")
    data = read_split(tmp_path, "train", skip_bad=True)
    assert [p.id for p in data.products] == ["123"] and data.products[0].subcategory == "casual"


def test_tryon_layouts_skip_listed_files_that_are_missing_and_say_so(synth_dir, tmp_path):
    """A pair list naming a file the copy lacks costs that pair only: it is skipped, counted in the
    split's notes and listed in ``skipped``; a list none of whose files exist is an error (a wrong
    folder); a malformed line stays an error unless ``skip_bad``."""
    root, _ = synth_dir
    viton = tmp_path / "viton"
    shutil.copytree(root / "vitonhd", viton)
    lines = (viton / "train_pairs.txt").read_text().splitlines()
    whole = read_split(viton, "train", "vitonhd")
    first = lines[0].split()[0]
    (viton / "train" / "image" / first).unlink()
    data = read_split(viton, "train", "vitonhd")
    assert len(data.tryon) == len(whole.tryon) - 2  # the paired and unpaired samples of line 1
    assert [(s.item, "image file is missing" in s.reason) for s in data.skipped] == [("line 1", True)]
    assert any(n.startswith("1 listed pairs skipped, a file they name is missing") for n in data.notes)
    assert dataset_stats(viton, "vitonhd")["splits"]["train"]["skipped"]["count"] == 1
    for line in lines:
        (viton / "train" / "image" / line.split()[0]).unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"none of the listed pairs could be read; the first: image"):
        read_split(viton, "train", "vitonhd")
    (viton / "test_pairs.txt").write_text("only_one_name.jpg\n")
    with pytest.raises(DataError, match=r"test_pairs\.txt \[line 1\]: expected 2 names"):
        read_split(viton, "test", "vitonhd")
    with pytest.raises(DataError, match=r"no VITON-HD split 'val' \(available: train, test\)"):
        read_split(viton, "val", "vitonhd")
    dc = tmp_path / "dc"
    shutil.copytree(root / "dresscode", dc)
    group = next(g for g in ("dresses", "upper_body", "lower_body") if (dc / g / "train_pairs.txt").read_text().strip())
    line = (dc / group / "train_pairs.txt").read_text().splitlines()[0]
    whole = read_split(dc, "train", "dresscode")
    (dc / group / "keypoints" / line.split()[0].replace("_0.jpg", "_2.json")).unlink()
    data = read_split(dc, "train", "dresscode")
    assert len(data.tryon) == len(whole.tryon) - 1
    assert "pose file is missing" in data.skipped[0].reason and data.notes


def test_unknown_format_and_missing_folder_are_clear(tmp_path):
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        detect_format(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        detect_format(tmp_path / "nope")
    with pytest.raises(DataError, match="--format: expected one of"):
        read_split(tmp_path, "train", "parquet")
    assert "folder" in FORMATS


def test_fashiongen_jsonl_annotations(tmp_path):
    Image.new("RGB", (8, 8), (0, 0, 200)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 8), (0, 200, 0)).save(tmp_path / "b.jpg")
    lines = [
        {
            "product_id": 10,
            "image": "a.jpg",
            "description": "Blue shirt.",
            "category": "SHIRTS",
            "subcategory": "Casual",
        },
        {
            "product_id": 10,
            "image": "b.jpg",
            "description": "Blue shirt.",
            "category": "SHIRTS",
            "subcategory": "Casual",
        },
        {"product_id": 11, "image": "missing.jpg", "description": "Green dress.", "category": "DRESSES"},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert detect_format(tmp_path) == "fashiongen"
    with pytest.raises(DataError, match=r"train\.jsonl \[line 3\]: image .*missing\.jpg: image file is missing"):
        read_split(tmp_path, "train", "fashiongen")
    data = read_split(tmp_path, "train", "fashiongen", skip_bad=True)
    assert len(data.products) == 1 and len(data.products[0].images) == 2
    assert data.products[0].category == "shirts" and data.products[0].subcategory == "casual"
