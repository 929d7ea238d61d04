"""Our caption-metric wrapper: pycocoevalcap's own numbers, and BLEU, METEOR, ROUGE-L and CIDEr
computed by hand on corpora small enough to follow each formula."""

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
def test_one_meteor_process_scores_every_call_as_a_fresh_one_would():
    """The METEOR process is shared by the calls of one Python process: each call's scores are
    those of a METEOR started for it alone, whatever was scored before; a dead process is
    replaced."""
    from pycocoevalcap.meteor.meteor import Meteor

    sets = [
        ({"a": ["navy striped shirt"], "b": ["red maxi dress"]}, {"a": ["navy shirt"], "b": ["red dress"]}),
        ({"c": ["black cropped jacket", "cropped black jacket"]}, {"c": ["black jacket"]}),
    ]
    fresh = [Meteor().compute_score(gts, res) for gts, res in sets]
    C._stop_meteor()
    shared = [C.meteor_scores(gts, res) for gts, res in [*sets, *sets]]
    first = C._meteor
    assert first is not None and first.meteor_p.poll() is None  # still running, for the next call
    for got, want in zip(shared, fresh + fresh, strict=True):
        assert got[0] == pytest.approx(want[0], abs=1e-12) and got[1] == pytest.approx(want[1], abs=1e-12)
    first.meteor_p.kill()
    first.meteor_p.wait()
    again = C.meteor_scores(*sets[0])
    assert C._meteor is not first and again[0] == pytest.approx(fresh[0][0], abs=1e-12)


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


# Two items with one reference each; every n-gram of the references occurs in one item only, so
# CIDEr's idf is log(2 items / 1) for each of them.
TWO = ({"x": ["red dress"], "y": ["blue skirt"]}, {"x": "red dress", "y": "blue dress"})


def _cider_by_hand() -> float:
    # CIDEr (Vedantam et al., 2015, as pycocoevalcap computes it): per item the mean over n = 1..4
    # of the cosine of tf-idf vectors, with the candidate's counts clipped by the reference's and a
    # Gaussian length penalty (sigma 6; here the lengths agree), times 10.
    # x: "red dress" vs "red dress": unigram cosine 1, bigram cosine 1, no 3- or 4-grams -> (1 + 1) / 4.
    # y: "blue dress" vs "blue skirt": unigrams {blue, dress} . {blue, skirt} with equal weights
    #    log 2 -> 1/2; bigrams share nothing -> (1/2 + 0) / 4.
    x = (1 + 1 + 0 + 0) / 4 * 10
    y = (0.5 + 0 + 0 + 0) / 4 * 10
    return 100 * (x + y) / 2


def _rouge_l_by_hand(lcs: int, cand: int, ref: int, beta: float = 1.2) -> float:
    # ROUGE-L F with pycocoevalcap's beta = 1.2: (1 + b^2) P R / (R + b^2 P), P = lcs/|cand|, R = lcs/|ref|.
    p, r = lcs / cand, lcs / ref
    return 100 * (1 + beta**2) * p * r / (r + beta**2 * p)


def _metric_cases(monkeypatch, java: bool):
    if not java:
        monkeypatch.setattr(C, "java_available", lambda: False)
    return C.coco_caption_scores(*TWO), C.coco_caption_scores({"x": ["a red dress with sleeves"]}, {"x": "a red dress"})


@pytest.mark.parametrize("java", [pytest.param(True, marks=needs_java), False], ids=["ptb", "python"])
def test_cider_and_rouge_l_equal_their_hand_computed_values(monkeypatch, java):
    two, short = _metric_cases(monkeypatch, java)
    assert two["CIDEr"] == pytest.approx(_cider_by_hand(), abs=1e-6)  # 312.5
    # x: identical -> 100; y: LCS 1 of 2 and 2 -> P = R = 1/2 -> 50.
    assert two["ROUGE-L"] == pytest.approx((100 + _rouge_l_by_hand(1, 2, 2)) / 2, abs=1e-6)
    # LCS 3, P = 3/3, R = 3/5: 100 * 2.44 * 0.6 / (0.6 + 1.44) = 71.76...
    assert short["ROUGE-L"] == pytest.approx(_rouge_l_by_hand(3, 3, 5), abs=1e-6)


def _meteor_by_hand(p: float, r: float, chunks: int, matches: int, everything_in_one_chunk: bool) -> float:
    # METEOR 1.5 (Denkowski & Lavie, 2014) with the English parameters of `-l en`: alpha 0.85,
    # beta 0.2, gamma 0.6 (delta 0.75 and the module weights enter P and R, computed by the caller).
    # Fmean = P R / (alpha P + (1 - alpha) R); penalty gamma (chunks / matches)^beta, none when
    # every word of both sides is matched in one chunk.
    alpha, beta, gamma = 0.85, 0.2, 0.6
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    penalty = 0.0 if everything_in_one_chunk else gamma * (chunks / matches) ** beta
    return 100 * fmean * (1 - penalty)


# P and R weigh a content word delta = 0.75 and a function word ("a", "the", "with") 0.25; an exact
# match counts 1, a stem match ("shirt" / "shirts") 0.6.
METEOR_CASES = [
    # identical: P = R = 1, one chunk -> 100
    ("red dress", "red dress", _meteor_by_hand(1, 1, 1, 2, True)),
    # nothing in common -> 0
    ("red dress", "blue skirt", 0.0),
    # swapped: P = R = 1, 2 chunks of 2 matches -> 1 - 0.6 = 40
    ("dress red", "red dress", _meteor_by_hand(1, 1, 2, 2, False)),
    # a stem match: P = R = 0.75 (1 + 0.6) / (0.75 * 2) = 0.8, every word matched in one chunk -> 80
    ("navy shirts", "navy shirt", _meteor_by_hand(0.8, 0.8, 1, 2, True)),
    # red, dress, with matched, pockets/buttons not: P = R = (0.75 * 2 + 0.25) / (0.75 * 3 + 0.25) = 0.7;
    # one chunk of 3 -> 0.7 (1 - 0.6 (1/3)^0.2) = 36.28...
    ("red dress with pockets", "red dress with buttons", _meteor_by_hand(0.7, 0.7, 1, 3, False)),
    # the reference is longer: P = 1, R = 0.75 * 2 / (0.75 * 3 + 0.25) = 0.6 -> 30.49...
    ("red dress", "red dress with pockets", _meteor_by_hand(1, 0.6, 1, 2, False)),
    # an unmatched function word in the candidate: P = 1.5 / 1.75, R = 1 -> 46.60...
    ("the red dress", "red dress", _meteor_by_hand(1.5 / 1.75, 1, 1, 2, False)),
]


@needs_java
def test_meteor_equals_its_hand_computed_value_item_by_item():
    refs = {str(i): [r] for i, (_, r, _) in enumerate(METEOR_CASES)}
    cands = {str(i): c for i, (c, _, _) in enumerate(METEOR_CASES)}
    out = C.coco_caption_scores(refs, cands, per_item=True)
    for i, (candidate, _, expected) in enumerate(METEOR_CASES):
        assert out["per_item"][str(i)]["METEOR"] == pytest.approx(expected, abs=1e-4), candidate
    # Each item's other scores are the ones it gets scored alone (CIDEr aside: its idf is the corpus's).
    alone = C.coco_caption_scores({"x": refs["4"]}, {"x": cands["4"]})
    for name in ("BLEU-4", "ROUGE-L", "METEOR"):
        assert out["per_item"]["4"][name] == pytest.approx(alone[name], abs=1e-6), name


@needs_java
def test_the_python_tokenizer_agrees_with_ptb_on_our_captions(monkeypatch):
    # The no-Java fallback must give the same tokens, hence the same BLEU/ROUGE-L/CIDEr, on the
    # captions this project writes and reads (punctuation, hyphens, capitals).
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    texts = [r for refs in REFS.values() for r in refs] + list(CANDS.values()) + ["Crew-neck top, in olive! Solid."]
    with contextlib.redirect_stdout(io.StringIO()):
        ptb = PTBTokenizer().tokenize({str(i): [{"caption": t}] for i, t in enumerate(texts)})
    for i, text in enumerate(texts):
        assert C._python_tokenize(text) == ptb[str(i)][0], text
    with_java = C.coco_caption_scores(REFS, CANDS)
    monkeypatch.setattr(C, "java_available", lambda: False)
    without = C.coco_caption_scores(REFS, CANDS)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert without[name] == pytest.approx(with_java[name], abs=1e-9), name


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
