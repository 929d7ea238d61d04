"""The attribute reader is pinned on every caption style FashionSynth writes, and the scores on hand-made cases."""

import numpy as np
import pytest

from unifashion.data.captions import attribute_list
from unifashion.data.synth.attributes import CATEGORIES, COLOURS, sample_attributes
from unifashion.data.synth.captions import description, title
from unifashion.evaluation.attributes import attribute_scores, parse_attributes


def _products(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield sample_attributes(rng, CATEGORIES[i % len(CATEGORIES)], list(COLOURS)), rng


def test_descriptions_state_every_attribute_but_an_absent_pocket():
    for attrs, rng in _products(600):
        expected = {k: v for k, v in attrs.items() if not (k == "pocket" and v == "none")}
        text = description(attrs, rng)
        assert parse_attributes(text) == expected, text


def test_titles_state_category_colour_sleeve_length_and_a_non_solid_pattern():
    for attrs, _ in _products(600, seed=1):
        text = title(attrs)
        stated = parse_attributes(text)
        keep = {"category", "colour", "pattern", "sleeve", "length"}
        expected = {k: v for k, v in attrs.items() if k in keep}
        if attrs["pattern"] == "solid":  # a title says "striped", "floral", ... but not "solid"
            del expected["pattern"]
        assert stated == expected, text


def test_attribute_lines_round_trip():
    for attrs, _ in _products(300, seed=2):
        line = attribute_list(attrs)
        assert parse_attributes(line) == attrs, line


def test_long_sleeve_is_not_a_length_and_pattern_colours_are_not_the_colour():
    stated = parse_attributes("Long sleeve top in navy. White stripes throughout. V-neck collar.")
    assert stated == {
        "category": "toptee",
        "colour": "navy",
        "pattern": "stripes",
        "pattern_colour": "white",
        "sleeve": "long",
        "neckline": "v-neck",
    }
    assert parse_attributes("Checked in red.")["pattern_colour"] == "red"
    assert "colour" not in parse_attributes("Checked in red.")


def test_scores_on_hand_counted_cases():
    truths = [
        {"category": "dress", "colour": "red", "pattern": "solid"},
        {"category": "skirt", "colour": "blue", "pattern": "stripes", "pattern_colour": "white"},
    ]
    captions = [
        "Red dress. Solid colour.",  # 3 correct
        "Skirt in green. Striped in white.",  # category, pattern, pattern colour correct; colour wrong
    ]
    s = attribute_scores(truths, captions)
    assert s["attributes"] == 7
    assert s["correct"] == pytest.approx(100 * 6 / 7)
    assert s["wrong"] == pytest.approx(100 * 1 / 7)
    assert s["missing"] == 0
    assert s["exact"] == 50.0
    assert s["per_attribute"]["colour"] == {"correct": 50.0, "wrong": 50.0, "missing": 0.0}
    missing = attribute_scores(truths[:1], ["A dress."])
    assert missing["correct"] == pytest.approx(100 / 3) and missing["missing"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="2 ground truths but 1 captions"):
        attribute_scores(truths, captions[:1])
