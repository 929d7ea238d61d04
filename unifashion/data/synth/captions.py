"""Captions of FashionSynth products, derived from their attributes.

Two product caption styles:

- ``description``: FashionGen-like sentences ("Long sleeve shirt in navy.
  White stripes throughout. Button closure at front.");
- ``title``: a short product title ("Navy striped long-sleeve shirt").

And Fashion-IQ-style relative captions for triplets: two annotators describe
how the target differs from the reference, in varied wording, lower case,
sometimes naming only part of the change or only its direction ("is darker",
"is longer"), with the odd typo or stray space, as people write them.

Product captions always use the canonical attribute words, so that a
caption's attributes can be scored; relative captions may use synonyms.
"""

from __future__ import annotations

import numpy as np

from unifashion.data.synth.attributes import CATEGORY_ATTRIBUTES, COLOURS, SLEEVES, attribute_names

NOUNS = {
    "dress": ("dress",),
    "shirt": ("shirt", "button-up shirt"),
    "toptee": ("top", "t-shirt"),
    "skirt": ("skirt",),
    "trousers": ("trousers", "pants"),
    "jacket": ("jacket",),
}
PATTERN_ADJ = {"solid": "", "stripes": "striped", "polka dots": "polka-dot", "checks": "checked", "floral": "floral"}
SLEEVE_ADJ = {"sleeveless": "sleeveless", "short": "short-sleeve", "long": "long-sleeve"}
NECKLINE_PHRASE = {"crew": "crewneck", "v-neck": "v-neck", "scoop": "scoop neck", "square": "square neck"}
LENGTH_ADJ = {
    "mini": "mini",
    "knee": "knee-length",
    "midi": "midi",
    "maxi": "maxi",
    "shorts": "",
    "cropped": "cropped",
    "full": "full-length",
    "hip": "hip-length",
    "long": "longline",
}
COLOUR_SYNONYMS = {
    "grey": ("grey", "gray"),
    "navy": ("navy", "navy blue", "dark blue"),
    "beige": ("beige", "tan", "cream"),
    "teal": ("teal", "turquoise"),
    "purple": ("purple", "violet"),
    "red": ("red",),
}


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def noun(attrs: dict[str, str], rng: np.random.Generator | None = None) -> str:
    cat = attrs["category"]
    if cat == "trousers" and attrs.get("length") == "shorts":
        return "shorts"
    if cat == "toptee" and attrs.get("sleeve") == "sleeveless":
        return "tank top"
    options = NOUNS[cat]
    return options[0] if rng is None else _pick(rng, options)


def title(attrs: dict[str, str]) -> str:
    """Short product title, e.g. "Navy striped long-sleeve shirt"."""
    words = [attrs["colour"], PATTERN_ADJ[attrs["pattern"]]]
    if "length" in attrs:
        words.append(LENGTH_ADJ[attrs["length"]])
    if "sleeve" in attrs and noun(attrs) != "tank top":  # "tank top" already says sleeveless
        words.append(SLEEVE_ADJ[attrs["sleeve"]])
    words.append(noun(attrs))
    text = " ".join(w for w in words if w)
    return text[:1].upper() + text[1:]


def description(attrs: dict[str, str], rng: np.random.Generator) -> str:
    """FashionGen-like description: every attribute stated once, in varied order and wording."""
    cat = attrs["category"]
    first = []
    if "sleeve" in attrs:
        first.append({"sleeveless": "Sleeveless", "short": "Short sleeve", "long": "Long sleeve"}[attrs["sleeve"]])
    if "length" in attrs and LENGTH_ADJ[attrs["length"]]:
        first.append(LENGTH_ADJ[attrs["length"]] if first else LENGTH_ADJ[attrs["length"]].capitalize())
    lead = " ".join(first + [noun(attrs, rng)])
    lead = lead[:1].upper() + lead[1:]
    sentences = [f"{lead} in {attrs['colour']}."]
    pattern, pc = attrs["pattern"], attrs.get("pattern_colour")
    if pattern == "solid":
        sentences.append(_pick(rng, ["Solid colour.", "Plain, solid fabric.", "Solid tone throughout."]))
    elif pattern == "stripes":
        sentences.append(_pick(rng, [f"{pc.capitalize()} stripes throughout.", f"Striped in {pc}."]))
    elif pattern == "polka dots":
        sentences.append(_pick(rng, [f"{pc.capitalize()} polka dots throughout.", f"Polka-dot pattern in {pc}."]))
    elif pattern == "checks":
        sentences.append(_pick(rng, [f"{pc.capitalize()} check pattern throughout.", f"Checked in {pc}."]))
    else:
        sentences.append(_pick(rng, [f"{pc.capitalize()} floral print throughout.", f"Floral pattern in {pc}."]))
    extra = []
    if "neckline" in attrs:
        n = NECKLINE_PHRASE[attrs["neckline"]]
        extra.append(_pick(rng, [f"{n.capitalize()} collar.", f"{n.capitalize()} neckline."]))
    if cat == "shirt":
        extra += ["Spread collar.", "Button closure at front."]
        if attrs.get("pocket") == "chest pocket":
            extra.append("Patch pocket at chest.")
    elif cat == "jacket":
        extra += ["Notched lapel.", "Two-button closure at front."]
    elif cat == "trousers":
        extra.append("Tonal waistband.")
    elif cat == "skirt":
        extra.append(_pick(rng, ["Flared silhouette.", "A-line silhouette."]))
    elif cat == "dress":
        extra.append(_pick(rng, ["Seam at waist.", "Fitted bodice."]))
    rng.shuffle(extra)
    return " ".join(sentences + extra)


# ---------------------------------------------------------------------------
# relative captions


def _luminance(colour: str) -> float:
    r, g, b = COLOURS[colour]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _colour_word(rng: np.random.Generator, colour: str) -> str:
    return _pick(rng, COLOUR_SYNONYMS.get(colour, (colour,)))


def change_phrase(rng: np.random.Generator, name: str, old: str, new: str, target: dict[str, str]) -> str:
    """One way an annotator might state that attribute ``name`` went from ``old`` to ``new``."""
    if name == "colour":
        c = _colour_word(rng, new)
        options = [
            f"is {c}",
            f"is {c} in color",
            f"is {c} instead of {old}",
            f"{c} colored",
            f"has a {c} color",
            f"is a {c} one",
            c,
        ]
        diff = _luminance(new) - _luminance(old)
        if abs(diff) > 80:
            options.append("is darker" if diff < 0 else "is lighter")
        return _pick(rng, options)
    if name == "pattern":
        pc = target.get("pattern_colour", "")
        return _pick(
            rng,
            {
                "solid": ["is solid", "is plain", "has no pattern", "is a solid color"],
                "stripes": ["is striped", "has stripes", f"has {pc} stripes"],
                "polka dots": ["has polka dots", "is polka dotted", f"has {pc} dots"],
                "checks": ["is plaid", "has a check pattern", "is checkered"],
                "floral": ["has a floral print", "is floral", "has flowers on it", f"has a {pc} flower pattern"],
            }[new],
        )
    if name == "sleeve":
        longer = SLEEVES.index(new) > SLEEVES.index(old)
        base = {
            "sleeveless": ["is sleeveless", "has no sleeves"],
            "short": ["has short sleeves", "is short sleeved"],
            "long": ["has long sleeves", "is long sleeved"],
        }[new]
        return _pick(rng, [*base, "has longer sleeves" if longer else "has shorter sleeves"])
    if name == "neckline":
        base = {
            "crew": ["has a crew neck", "has a round neckline"],
            "v-neck": ["has a v-neck", "has a v neckline"],
            "scoop": ["has a scoop neck", "has a lower neckline"],
            "square": ["has a square neckline", "has a square neck"],
        }[new]
        return _pick(rng, base)
    if name == "length":
        order = CATEGORY_ATTRIBUTES[target["category"]]["length"]
        longer = order.index(new) > order.index(old)
        more = "longer" if longer else "shorter"
        part = "legs" if target["category"] == "trousers" else "hem"
        comparative = [
            f"is {more}",
            f"is {more}",
            f"is {more} in length",
            f"has a {more} {part}".replace("a longer legs", "longer legs").replace("a shorter legs", "shorter legs"),
        ]
        absolute = {
            "mini": ["is a mini", "is mini length"],
            "knee": ["is knee length", "ends at the knee"],
            "midi": ["is midi length", "is a midi"],
            "maxi": ["is maxi length", "is floor length"],
            "shorts": ["is shorts", "is a pair of shorts"],
            "cropped": ["is cropped", "is ankle cropped"]
            if target["category"] == "trousers"
            else ["is cropped", "is a cropped one"],
            "full": ["is full length", "has full length legs"],
            "hip": ["is hip length", "ends at the hip"],
            "long": ["is a long coat", "is longline"],
        }[new]
        return _pick(rng, comparative + absolute)
    if name == "pocket":
        return _pick(
            rng,
            ["has a chest pocket", "has a pocket", "with a pocket"]
            if new != "none"
            else ["has no pocket", "has no pockets", "without the pocket"],
        )
    raise ValueError(f"unknown attribute {name!r}")


def _join(phrases: list[str], rng: np.random.Generator) -> str:
    if len(phrases) == 1:
        return phrases[0]
    if rng.random() < 0.25 and phrases[1].startswith(("has ", "is ")) and not phrases[0].startswith("has "):
        # "red with long sleeves" style
        rest = [p.removeprefix("has ").removeprefix("is ") for p in phrases[1:]]
        return phrases[0].removeprefix("is ") + " with " + " and ".join(rest)
    if len(phrases) == 2:
        return f"{phrases[0]} and {phrases[1]}"
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _typo(rng: np.random.Generator, text: str) -> str:
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) > 4]
    if not long_words:
        return text
    i = long_words[int(rng.integers(len(long_words)))]
    w = words[i]
    j = int(rng.integers(1, len(w) - 1))
    words[i] = w[:j] + w[j + 1 :] if rng.random() < 0.5 else w[: j - 1] + w[j] + w[j - 1] + w[j + 1 :]
    return " ".join(words)


def relative_captions(
    rng: np.random.Generator, changes: dict[str, list[str]], target: dict[str, str]
) -> tuple[str, str]:
    """Two annotators' captions of how ``target`` differs (``changes``: name -> [old, new])."""
    names = [n for n in attribute_names(target["category"]) if n in changes]
    captions: list[str] = []
    for annotator in range(2):
        for _attempt in range(10):  # two annotators rarely write the very same words
            text = _annotate(rng, names, changes, target, partial=0.5 if annotator else 0.2)
            if not captions or text.strip().lower() != captions[0].strip().lower():
                break
        captions.append(text)
    return captions[0], captions[1]


def _annotate(
    rng: np.random.Generator, names: list[str], changes: dict[str, list[str]], target: dict[str, str], partial: float
) -> str:
    """One annotator's caption; with probability ``partial`` it names only some changes."""
    chosen = list(names)
    # People often name only part of the change.
    if len(chosen) > 1 and rng.random() < partial:
        k = int(rng.integers(1, len(chosen)))
        chosen = [chosen[i] for i in sorted(rng.choice(len(chosen), size=k, replace=False))]
    rng.shuffle(chosen)
    phrases = [change_phrase(rng, n, changes[n][0], changes[n][1], target) for n in chosen]
    text = _join(phrases, rng)
    r = rng.random()
    if r < 0.12:
        text = f"The {noun(target, rng)} {text if text.startswith(('is ', 'has ')) else 'is ' + text}."
    elif r < 0.17:
        text = text[:1].upper() + text[1:]
    if rng.random() < 0.04:
        text = _typo(rng, text)
    if rng.random() < 0.05:
        text = " " + text
    return text
