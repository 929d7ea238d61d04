"""FashionSynth: determinism, ground truth that matches the pixels, splits, captions, triplets."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from unifashion.data.synth import attributes as A
from unifashion.data.synth import captions as C
from unifashion.data.synth import render as R
from unifashion.data.synth.generate import LAYOUTS, SynthConfig, plan_catalogue, write_fashionsynth
from unifashion.utils.errors import DataError


def _hashes(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tmp_path, synth_dir):
    root, _ = synth_dir
    again = tmp_path / "again"
    write_fashionsynth(
        again, SynthConfig(products=90, seed=3, size=64, tryon=30, layouts=LAYOUTS, workers=1), progress=False
    )
    first, second = _hashes(root), _hashes(again)
    assert len(first) > 500
    assert first == second


def test_another_seed_gives_another_catalogue():
    a = plan_catalogue(SynthConfig(products=40, seed=1))
    b = plan_catalogue(SynthConfig(products=40, seed=2))
    assert [p["attributes"] for p in a["products"]] != [p["attributes"] for p in b["products"]]


def test_refuses_to_write_into_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(DataError, match="not empty"):
        write_fashionsynth(tmp_path, SynthConfig(products=20), progress=False)
    assert (tmp_path / "keep.txt").read_text() == "user data"


# Solid garments: the median pixel of the (slightly eroded) garment mask is within
# COLOUR_TOLERANCE of the labelled colour on every channel, and the labelled colour
# is the nearest of the palette. (Measured: at most 16 over 336 renders.)
COLOUR_TOLERANCE = 24


def _median_colour(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inner = ndimage.binary_erosion(mask, iterations=2)
    return np.median(img[inner].astype(float), axis=0)


def _nearest(rgb: np.ndarray) -> str:
    names = list(A.COLOURS)
    pal = np.array([A.COLOURS[n] for n in names], float)
    return names[int(np.argmin(np.linalg.norm(pal - rgb, axis=1)))]


@pytest.mark.parametrize("category", A.CATEGORIES)
def test_solid_garment_pixels_have_the_labelled_colour(category):
    for i, colour in enumerate(A.COLOURS):
        rng = np.random.default_rng(i)
        attrs = A.sample_attributes(rng, category, [colour])
        attrs["pattern"] = "solid"
        attrs.pop("pattern_colour", None)
        img, mask = R.render_product(attrs, 96, seed=1000 + i, view=i % 2)
        assert mask.mean() > 0.1  # the garment fills a good part of the photo
        med = _median_colour(img, mask)
        assert np.abs(med - A.COLOURS[colour]).max() <= COLOUR_TOLERANCE, (colour, med)
        assert _nearest(med) == colour


def test_written_cloth_images_and_masks_agree_with_labels(synth_dir):
    root, _ = synth_dir
    products = {json.loads(x)["id"]: json.loads(x) for x in (root / "products.jsonl").read_text().splitlines()}
    rows = [json.loads(x) for x in (root / "tryon.jsonl").read_text().splitlines()]
    checked = 0
    for row in rows:
        attrs = products[row["cloth_id"]]["attributes"]
        if not row["paired"] or attrs["pattern"] != "solid":
            continue
        img = np.asarray(Image.open(root / row["cloth"]).convert("RGB"))
        mask = np.asarray(Image.open(root / row["cloth_mask"])) > 127
        med = _median_colour(img, mask)
        assert np.abs(med - A.COLOURS[attrs["colour"]]).max() <= COLOUR_TOLERANCE
        checked += 1
    assert checked >= 5


def test_images_vary_beyond_raw_pixels():
    attrs = {
        "category": "dress",
        "colour": "red",
        "pattern": "solid",
        "sleeve": "short",
        "neckline": "v-neck",
        "length": "knee",
    }
    a, ma = R.render_product(attrs, 96, seed=1)
    b, mb = R.render_product(attrs, 96, seed=2)
    back, _ = R.render_product(attrs, 96, seed=1, view=1)
    # Same attributes, other jitter and light: masks and pixels differ clearly.
    assert (ma ^ mb).mean() > 0.02
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
    assert np.abs(a.astype(int) - back.astype(int)).mean() > 5
    # Background tones vary between photos.
    assert not np.array_equal(a[0, 0], b[0, 0])


def test_plan_splits_by_family_and_holds_out_novel_pairs():
    cat = plan_catalogue(SynthConfig(products=600, seed=4))
    plan, products, triplets = cat["plan"], cat["products"], cat["triplets"]
    assert set(p["split"] for p in products) == set(A.SPLITS)
    by_family = {}
    for p in products:
        by_family.setdefault(p["family"], set()).add(p["split"])
        pair = (p["attributes"]["colour"], p["category"])
        assert plan.is_novel(*pair) == (p["split"] == "novel"), p
    assert all(len(s) == 1 for s in by_family.values())
    # Every colour is still seen in train with some category.
    train_colours = {p["attributes"]["colour"] for p in products if p["split"] == "train"}
    assert train_colours == set(A.COLOURS)
    by_id = {p["id"]: p for p in products}
    for t in triplets:
        ref, tgt = by_id[t["reference"]], by_id[t["target"]]
        assert ref["split"] == tgt["split"] == t["split"]
        assert 1 <= len(t["changes"]) <= 3
        assert t["changes"] == A.differences(ref["attributes"], tgt["attributes"])
        assert t["captions"][0].strip().lower() != t["captions"][1].strip().lower() or len(t["changes"]) == 0


def test_product_attributes_follow_the_vocabulary():
    products = plan_catalogue(SynthConfig(products=400, seed=6))["products"]
    assert {p["category"] for p in products} == set(A.CATEGORIES)
    assert len({p["attributes"]["colour"] for p in products}) >= 12
    assert {p["attributes"]["pattern"] for p in products} == set(A.PATTERNS)
    for p in products:
        a = p["attributes"]
        assert set(A.CATEGORY_ATTRIBUTES[p["category"]]) <= set(a)
        assert ("pattern_colour" in a) == (a["pattern"] != "solid")
        if "pattern_colour" in a:
            assert a["pattern_colour"] != a["colour"]


def test_captions_state_the_attributes():
    rng = np.random.default_rng(0)
    for cat in A.CATEGORIES:
        for _ in range(20):
            a = A.sample_attributes(rng, cat, list(A.COLOURS))
            d, t = C.description(a, rng), C.title(a)
            for text in (d, t):
                assert a["colour"] in text.lower()
                nouns = (*C.NOUNS[cat], "shorts", "tank top")
                assert any(n in text.lower() for n in nouns), text
            if a["pattern"] != "solid":
                assert a["pattern_colour"] in d.lower()
            if "length" in a and C.LENGTH_ADJ[a["length"]]:
                assert C.LENGTH_ADJ[a["length"]] in t.lower()
            assert len(t.split()) <= 6 < len(d.split())


def test_relative_captions_are_varied_and_sometimes_partial():
    rng = np.random.default_rng(1)
    base = {
        "category": "dress",
        "colour": "red",
        "pattern": "solid",
        "sleeve": "short",
        "neckline": "crew",
        "length": "knee",
    }
    target = dict(base, colour="blue", sleeve="long")
    changes = A.differences(base, target)
    texts = [C.relative_captions(rng, changes, target) for _ in range(200)]
    flat = [t for pair in texts for t in pair]
    assert len(set(flat)) > 40  # many wordings
    low = [t.lower() for t in flat]
    mentions_colour = ["blu" in t or "darker" in t or "lighter" in t for t in low]
    mentions_sleeve = ["sle" in t for t in low]  # robust to the odd typo
    partial = [c != s for c, s in zip(mentions_colour, mentions_sleeve, strict=True)]
    assert 0.1 < np.mean(partial) < 0.6  # some captions name only part of the change
    assert all(c or s for c, s in zip(mentions_colour, mentions_sleeve, strict=True))  # never nothing


def test_tryon_pose_and_parse_agree_with_the_person(synth_dir):
    from unifashion.data.pose import read_dresscode_keypoints, read_openpose

    root, _ = synth_dir
    row = next(json.loads(x) for x in (root / "tryon.jsonl").read_text().splitlines())
    kp = read_openpose(root / row["pose"])
    person = np.asarray(Image.open(root / row["person"]).convert("RGB"))
    parse = np.asarray(Image.open(root / row["parse"]))
    assert kp.shape == (18, 3) and parse.shape == person.shape[:2]
    h, w = parse.shape
    assert (kp[:, 0] >= 0).all() and (kp[:, 0] < w).all() and (kp[:, 1] < h).all()
    # The neck keypoint sits on skin or clothes, not on the background.
    x, y = np.round(kp[1, :2]).astype(int)
    assert parse[y, x] != 0
    # Dress Code stores the same points in a 384 x 512 frame.
    stem = f"{int(row['id'].split('_')[0]):06d}"
    dc = next((root / "dresscode").glob(f"*/keypoints/{stem}_2.json"))
    assert np.allclose(read_dresscode_keypoints(dc, w, h)[:, :2], kp[:, :2], atol=0.05)
    # The agnostic image is grey exactly where its mask is set.
    agn = np.asarray(Image.open(root / row["agnostic"]).convert("RGB"))
    mask = np.asarray(Image.open(root / row["agnostic_mask"])) > 127
    assert mask.any() and (agn[mask] == 128).all()
    assert np.array_equal(agn[~mask], person[~mask])
