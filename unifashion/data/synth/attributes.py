"""FashionSynth's attribute vocabulary and the sampling of products, families and splits.

Every product has ground-truth attributes: ``category``, ``colour``,
``pattern`` (+ ``pattern_colour`` unless solid), and, where they apply,
``sleeve``, ``neckline`` and ``length``. Products come in *families*: a base
product and variants that differ from it in one to three attributes; the
composed-retrieval triplets link members of a family.

Splits are by family. The ``novel`` split holds families whose
(colour, category) pairs never occur in train/val/test, to measure
compositional generalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# name -> sRGB of the cloth under neutral light
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (242, 242, 238),
    "grey": (128, 128, 132),
    "red": (200, 30, 40),
    "pink": (240, 140, 175),
    "orange": (240, 125, 25),
    "yellow": (242, 205, 40),
    "green": (40, 140, 60),
    "teal": (20, 140, 140),
    "blue": (45, 95, 210),
    "navy": (25, 35, 95),
    "purple": (120, 50, 155),
    "brown": (115, 70, 40),
    "beige": (215, 195, 155),
}

CATEGORIES = ("dress", "shirt", "toptee", "skirt", "trousers", "jacket")
PATTERNS = ("solid", "stripes", "polka dots", "checks", "floral")
SLEEVES = ("sleeveless", "short", "long")
NECKLINES = ("crew", "v-neck", "scoop", "square")
DRESS_LENGTHS = ("mini", "knee", "midi", "maxi")
TROUSER_LENGTHS = ("shorts", "cropped", "full")
JACKET_LENGTHS = ("cropped", "hip", "long")
POCKETS = ("none", "chest pocket")

# Which attributes each category has, and their possible values.
CATEGORY_ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "dress": {"sleeve": SLEEVES, "neckline": NECKLINES, "length": DRESS_LENGTHS},
    "shirt": {"sleeve": ("short", "long"), "pocket": POCKETS},
    "toptee": {"sleeve": SLEEVES, "neckline": NECKLINES},
    "skirt": {"length": DRESS_LENGTHS},
    "trousers": {"length": TROUSER_LENGTHS},
    "jacket": {"length": JACKET_LENGTHS},
}

# Garment groups of the try-on layouts.
VITON_CATEGORIES = ("shirt", "toptee", "jacket")  # VITON-HD: upper body only
DRESSCODE_GROUP = {
    "shirt": "upper_body",
    "toptee": "upper_body",
    "jacket": "upper_body",
    "skirt": "lower_body",
    "trousers": "lower_body",
    "dress": "dresses",
}
FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")

SPLITS = ("train", "val", "test", "novel")
# Evaluation splits are large enough that a category's retrieval index is not
# exhausted by R@50 and that random-100 finds 99 same-category negatives.
SPLIT_SHARES = {"train": 0.6, "val": 0.15, "test": 0.15, "novel": 0.1}
NOVEL_COLOURS_PER_CATEGORY = 2


def attribute_names(category: str) -> tuple[str, ...]:
    """Changeable attributes of ``category``, in caption order."""
    names = ["colour", "pattern"]
    names += list(CATEGORY_ATTRIBUTES[category])
    return tuple(names)


@dataclass(frozen=True)
class SynthPlan:
    """The held-out (colour, category) pairs of one seed."""

    novel_pairs: frozenset[tuple[str, str]]

    def is_novel(self, colour: str, category: str) -> bool:
        return (colour, category) in self.novel_pairs

    def novel_colours(self, category: str) -> list[str]:
        return sorted(c for c, cat in self.novel_pairs if cat == category)


def make_plan(seed: int) -> SynthPlan:
    """Hold out ``NOVEL_COLOURS_PER_CATEGORY`` colours per category, each colour
    at most once over all categories (so every colour is still seen in train)."""
    rng = np.random.default_rng([seed, 7919])
    colours = list(COLOURS)
    order = rng.permutation(len(colours))
    pairs = []
    k = 0
    for cat in CATEGORIES:
        for _ in range(NOVEL_COLOURS_PER_CATEGORY):
            pairs.append((colours[order[k % len(colours)]], cat))
            k += 1
    return SynthPlan(frozenset(pairs))


def sample_attributes(rng: np.random.Generator, category: str, colours: list[str]) -> dict[str, str]:
    """Random attributes for a product of ``category``; colour from ``colours``."""
    attrs = {"category": category, "colour": str(rng.choice(colours))}
    # Solid is the most common pattern in catalogues.
    attrs["pattern"] = str(rng.choice(PATTERNS, p=[0.4, 0.15, 0.15, 0.15, 0.15]))
    if attrs["pattern"] != "solid":
        attrs["pattern_colour"] = contrasting_colour(rng, attrs["colour"])
    for name, values in CATEGORY_ATTRIBUTES[category].items():
        attrs[name] = str(rng.choice(values))
    return attrs


def attribute_key(attrs: dict[str, str]) -> tuple:
    """Identity of a look: two products with the same key are indistinguishable."""
    return tuple(sorted(attrs.items()))


def contrasting_colour(rng: np.random.Generator, colour: str) -> str:
    """A pattern colour that stands out from ``colour`` (RGB distance > 120)."""
    base = np.array(COLOURS[colour], dtype=float)
    choices = [c for c, rgb in COLOURS.items() if np.linalg.norm(np.array(rgb) - base) > 120]
    return str(rng.choice(choices))


def make_variant(
    rng: np.random.Generator, base: dict[str, str], colours: list[str], n_changes: int
) -> tuple[dict[str, str], dict[str, list[str]]] | None:
    """A copy of ``base`` with ``n_changes`` attributes changed (colours from
    ``colours``); returns ``(attributes, changes)`` or None if not possible."""
    category = base["category"]
    names = list(attribute_names(category))
    rng.shuffle(names)
    attrs = dict(base)
    changes: dict[str, list[str]] = {}
    for name in names:
        if len(changes) == n_changes:
            break
        if name == "colour":
            options = [c for c in colours if c != base["colour"]]
        elif name == "pattern":
            options = [p for p in PATTERNS if p != base["pattern"]]
        else:
            options = [v for v in CATEGORY_ATTRIBUTES[category][name] if v != base[name]]
        if not options:
            continue
        attrs[name] = str(rng.choice(options))
        changes[name] = [base[name], attrs[name]]
    if len(changes) < n_changes:
        return None
    # Keep the pattern colour consistent with the (possibly new) pattern and colour.
    if attrs["pattern"] == "solid":
        attrs.pop("pattern_colour", None)
    else:
        pc = attrs.get("pattern_colour")
        if pc is None or np.linalg.norm(np.subtract(COLOURS[pc], COLOURS[attrs["colour"]])) <= 120:
            attrs["pattern_colour"] = contrasting_colour(rng, attrs["colour"])
    return attrs, changes


def differences(a: dict[str, str], b: dict[str, str]) -> dict[str, list[str]]:
    """Attributes (of ``attribute_names``) whose values differ between a and b."""
    return {n: [a[n], b[n]] for n in attribute_names(a["category"]) if a.get(n) != b.get(n)}


# ---------------------------------------------------------------------------
# garment colour read back from pixels (generated images are scored by it)

_COLOUR_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32)  # (K, 3)


def _palette_labels(pixels: np.ndarray) -> np.ndarray:
    """Nearest palette colour of each pixel (P, 3), allowing for shading: each palette colour may be
    scaled by 0.75-1.15 (the renderer's light and folds) before the distance is taken."""
    p = pixels.astype(np.float32)
    scale = np.clip((p @ _PALETTE.T) / (_PALETTE * _PALETTE).sum(1), 0.75, 1.15)  # (P, K)
    dist = np.linalg.norm(p[:, None, :] - scale[..., None] * _PALETTE[None], axis=-1)
    return dist.argmin(axis=1)


def garment_colour(image: np.ndarray, mask: np.ndarray | None = None, threshold: float = 35.0) -> str | None:
    """The dominant palette colour of the garment in a uint8 (H, W, 3) image.

    Without ``mask``, the garment is whatever differs from the background by
    more than ``threshold`` (background = median of a 2-pixel frame); with
    ``mask`` (H, W), the pixels where it is > 0.5. None when under 2 % of the
    image is garment."""
    a = np.asarray(image, dtype=np.float32)
    if mask is None:
        frame = np.concatenate(
            [a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)]
        )
        fg = np.linalg.norm(a - np.median(frame, axis=0), axis=-1) > threshold
    else:
        fg = np.asarray(mask) > 0.5
    pixels = a[fg]
    if len(pixels) < 0.02 * a.shape[0] * a.shape[1]:
        return None
    return _COLOUR_NAMES[int(np.bincount(_palette_labels(pixels), minlength=len(_COLOUR_NAMES)).argmax())]
