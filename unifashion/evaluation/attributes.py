"""Reading garment attributes back out of a caption, and scoring them against the ground truth.

:func:`parse_attributes` understands the three caption styles of FashionSynth
(titles, descriptions and the ``"key: value; ..."`` attribute lines) and the
vocabulary of :mod:`unifashion.data.synth.attributes`; a test pins it on every
ground-truth caption of a generated dataset. :func:`attribute_scores` then
counts, over all ground-truth attributes, the share a caption states
correctly, states wrongly, or leaves out.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from unifashion.data.synth.attributes import (
    CATEGORY_ATTRIBUTES,
    COLOURS,
    DRESS_LENGTHS,
    JACKET_LENGTHS,
    NECKLINES,
    PATTERNS,
    POCKETS,
    SLEEVES,
    TROUSER_LENGTHS,
)

# Phrase -> value, matched as whole words, longest phrase first.
CATEGORY_WORDS = {
    "tank top": "toptee",
    "t-shirt": "toptee",
    "top": "toptee",
    "button-up shirt": "shirt",
    "shirt": "shirt",
    "dress": "dress",
    "skirt": "skirt",
    "trousers": "trousers",
    "pants": "trousers",
    "shorts": "trousers",
    "jacket": "jacket",
}
SLEEVE_WORDS = {
    "sleeveless": "sleeveless",
    "tank top": "sleeveless",
    "short sleeve": "short",
    "short-sleeve": "short",
    "long sleeve": "long",
    "long-sleeve": "long",
}
NECKLINE_WORDS = {
    "crewneck": "crew",
    "crew neck": "crew",
    "v-neck": "v-neck",
    "scoop neck": "scoop",
    "square neck": "square",
}
LENGTH_WORDS = {
    "mini": "mini",
    "knee-length": "knee",
    "midi": "midi",
    "maxi": "maxi",
    "shorts": "shorts",
    "cropped": "cropped",
    "full-length": "full",
    "hip-length": "hip",
    "longline": "long",
}
PATTERN_WORDS = {
    "solid": "solid",
    "plain": "solid",
    "striped": "stripes",
    "stripes": "stripes",
    "polka-dot": "polka dots",
    "polka dots": "polka dots",
    "checked": "checks",
    "check pattern": "checks",
    "checks": "checks",
    "floral": "floral",
}
POCKET_WORDS = {"pocket at chest": "chest pocket", "chest pocket": "chest pocket"}

_COLOUR = "|".join(sorted(COLOURS, key=len, reverse=True))
# Colour words that name the pattern's colour, not the garment's.
_PATTERN_COLOUR = [
    re.compile(rf"\b({_COLOUR}) (?:stripes|polka dots|check pattern|checks|floral print)\b"),
    re.compile(rf"\b(?:striped|polka-dot pattern|checked|floral pattern|check pattern|floral print) in ({_COLOUR})\b"),
]
_KEY_VALUE = re.compile(r"(?:^|;)\s*([a-z][a-z _-]*?)\s*:\s*([^;]+)")

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "category": tuple(CATEGORY_ATTRIBUTES),
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "pattern_colour": tuple(COLOURS),
    "sleeve": SLEEVES,
    "neckline": NECKLINES,
    "length": tuple(dict.fromkeys(DRESS_LENGTHS + TROUSER_LENGTHS + JACKET_LENGTHS)),
    "pocket": POCKETS,
}


def _find(text: str, words: dict[str, str]) -> list[tuple[int, str]]:
    """(position, value) of every whole-word phrase of ``words`` in ``text``; longer phrases win overlaps."""
    taken = [False] * len(text)
    found = []
    for phrase in sorted(words, key=len, reverse=True):
        for m in re.finditer(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text):
            if any(taken[m.start() : m.end()]):
                continue
            taken[m.start() : m.end()] = [True] * (m.end() - m.start())
            found.append((m.start(), words[phrase]))
    return sorted(found)


def parse_attribute_list(text: str) -> dict[str, str]:
    """``"category: dress; pattern colour: blue"`` -> ``{"category": "dress", "pattern_colour": "blue"}``;
    unknown keys and values outside the vocabulary are dropped."""
    out: dict[str, str] = {}
    for key, value in _KEY_VALUE.findall(text.lower()):
        key = key.strip().replace(" ", "_").replace("-", "_")
        value = value.strip().rstrip(".")
        if key in ATTRIBUTE_VALUES and value in ATTRIBUTE_VALUES[key] and key not in out:
            out[key] = value
    return out


def parse_attributes(text: str) -> dict[str, str]:
    """The attributes a caption states: ``{"category": ..., "colour": ..., ...}`` (only those it states)."""
    lower = " ".join(text.lower().split())
    if _KEY_VALUE.search(lower) and ":" in lower:
        listed = parse_attribute_list(lower)
        if listed:
            return listed
    out: dict[str, str] = {}
    # Colours inside pattern phrases name the pattern colour; mask them before finding the main colour.
    masked = lower
    for rx in _PATTERN_COLOUR:
        for m in rx.finditer(lower):
            out.setdefault("pattern_colour", m.group(1))
            masked = masked[: m.start(1)] + "#" * (m.end(1) - m.start(1)) + masked[m.end(1) :]
    colours = _find(masked, {c: c for c in COLOURS})
    if colours:
        out["colour"] = colours[0][1]
    for name, words in (
        ("category", CATEGORY_WORDS),
        ("sleeve", SLEEVE_WORDS),
        ("neckline", NECKLINE_WORDS),
        ("pocket", POCKET_WORDS),
    ):
        hits = _find(lower, words)
        if hits:
            out[name] = hits[0][1]
    # "long sleeve" is a sleeve, not a length: only the length words proper count.
    lengths = _find(re.sub(r"\b(?:short|long)[ -]sleeve", "#", lower), LENGTH_WORDS)
    if lengths:
        out["length"] = lengths[0][1]
    patterns = _find(lower.replace("solid colour", "solid"), PATTERN_WORDS)
    if patterns:
        out["pattern"] = patterns[0][1]
    if out.get("pattern") == "solid":
        out.pop("pattern_colour", None)
    return out


def attribute_scores(truths: Sequence[dict[str, str]], captions: Sequence[str]) -> dict[str, object]:
    """Over every ground-truth attribute of every item: the share of them the
    caption states correctly (``correct``), states with another value
    (``wrong``) or does not state (``missing``), in percent; also per attribute,
    and ``exact``: the share of captions with every attribute they state right
    and none missing."""
    if len(truths) != len(captions):
        raise ValueError(f"attribute_scores: {len(truths)} ground truths but {len(captions)} captions")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # name -> [correct, wrong, missing]
    exact = 0
    for truth, caption in zip(truths, captions, strict=True):
        stated = parse_attributes(caption)
        all_right = True
        for name, value in truth.items():
            c = counts[name]
            if name not in stated:
                c[2] += 1
                all_right = False
            elif stated[name] == value:
                c[0] += 1
            else:
                c[1] += 1
                all_right = False
        exact += all_right
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    n = max(1, sum(total))

    def pct(x: int, d: int) -> float:
        return 100.0 * x / max(1, d)

    return {
        "items": len(truths),
        "attributes": sum(total),
        "correct": pct(total[0], n),
        "wrong": pct(total[1], n),
        "missing": pct(total[2], n),
        "exact": pct(exact, len(truths)),
        "per_attribute": {
            name: {"correct": pct(c[0], sum(c)), "wrong": pct(c[1], sum(c)), "missing": pct(c[2], sum(c))}
            for name, c in sorted(counts.items())
        },
    }
