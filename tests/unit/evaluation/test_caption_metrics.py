"""Our caption-metric wrapper against pycocoevalcap's own numbers, and hand-computed BLEU."""

import contextlib
import io
import math

import pytest

from unifashion.evaluation import captioning as C

REFS = {
    "a": ["Long sleeve shirt in navy. White stripes throughout.", "Navy striped long-sleeve shirt"],
    "b": ["Maxi dress in red. Solid colour. V-neck neckline."],
    "c": ["Black cropped jacket. Notched lapel."],
}
CANDS = {
    "a": "Long sleeve shirt in navy. Red stripes throughout.",
    "b": "Midi dress in red. Solid colour.",
    "c": "Black jacket with notched lapel.",
}

needs_java = pytest.mark.skipif(not C.java_available(), reason="METEOR and the PTB tokenizer run on Java")


@needs_java
def test_wrapper_equals_pycocoevalcap_called_directly():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    with contextlib.redirect_stdout(io.StringIO()):
        gts = tok.tokenize({k: [{"caption": r} for r in v] for k, v in REFS.items()})
        res = tok.tokenize({k: [{"caption": v}] for k, v in CANDS.items()})
        bleu, _ = Bleu(4).compute_score(gts, res)
    expected = {
        "BLEU-1": bleu[0],
        "BLEU-4": bleu[3],
        "METEOR": Meteor().compute_score(gts, res)[0],
        "ROUGE-L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }
    ours = C.coco_caption_scores(REFS, CANDS)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(100 * value, abs=1e-9), name
    assert ours["tokenizer"] == "PTBTokenizer (Java)" and ours["items"] == 3
    assert ours["SPICE"] is None and "CoreNLP" in ours["SPICE_skipped"]


@needs_java
def test_perfect_captions_and_a_hand_computed_bleu():
    perfect = C.coco_caption_scores(
        {"x": ["a red dress"], "y": ["blue skirt with pockets"]}, {"x": "a red dress", "y": "blue skirt with pockets"}
    )
    assert perfect["BLEU-1"] == pytest.approx(100.0, abs=1e-4)
    assert perfect["ROUGE-L"] == pytest.approx(100.0)
    # One item, candidate "a red dress" vs reference "a red dress with sleeves":
    # unigram precision 3/3, brevity penalty exp(1 - 5/3), so BLEU-1 = 100 * exp(-2/3).
    short = C.coco_caption_scores({"x": ["a red dress with sleeves"]}, {"x": "a red dress"})
    assert short["BLEU-1"] == pytest.approx(100 * math.exp(-2 / 3), abs=1e-3)
    # Bigram precision 2/2: BLEU-2 = BP * sqrt(1 * 1).
    assert short["BLEU-2"] == pytest.approx(100 * math.exp(-2 / 3), abs=1e-3)


def test_without_java_a_python_tokenizer_stands_in_and_meteor_says_why(monkeypatch):
    monkeypatch.setattr(C, "java_available", lambda: False)
    out = C.coco_caption_scores(REFS, CANDS)
    assert out["METEOR"] is None and "Java" in out["METEOR_skipped"]
    assert out["tokenizer"] == "python (Java missing)"
    assert 0 < out["BLEU-4"] < 100 and out["CIDEr"] > 0
    assert C._python_tokenize("Long sleeve shirt, in navy. V-neck!") == "long sleeve shirt in navy v-neck"


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="same ids"):
        C.coco_caption_scores(REFS, {"a": "x"})
    with pytest.raises(ValueError, match="item 'a': no reference caption"):
        C.coco_caption_scores({"a": []}, {"a": "x"})
    # An empty caption scores (low) rather than crashing the scorers.
    out = C.coco_caption_scores({"a": ["red dress"], "b": ["blue skirt"]}, {"a": "", "b": "blue skirt"})
    assert out["BLEU-1"] < 100
