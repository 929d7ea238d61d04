"""Which text of a product is its caption in each caption style.

- ``title``: the product's short title;
- ``description``: its captions (FashionGen-like descriptions);
- ``attributes``: its labelled attributes written as one attribute-rich line,
  ``"category: dress; colour: red; pattern: stripes; pattern colour: white; ..."``
  (:func:`attribute_list`), for datasets that label attributes (FashionSynth).

A product lacking a style's text has no caption of that style.
"""

from __future__ import annotations

from unifashion.data.records import Product

# Attribute order of the attribute-rich style; other labelled keys follow, sorted.
ATTRIBUTE_ORDER = ("category", "colour", "pattern", "pattern_colour", "sleeve", "neckline", "length", "pocket")


def attribute_list(attributes: dict[str, str]) -> str:
    """``{"category": "dress", "pattern_colour": "blue"}`` -> ``"category: dress; pattern colour: blue"``."""
    keys = [k for k in ATTRIBUTE_ORDER if k in attributes] + sorted(set(attributes) - set(ATTRIBUTE_ORDER))
    return "; ".join(f"{k.replace('_', ' ')}: {attributes[k]}" for k in keys if str(attributes[k]).strip())


def style_texts(product: Product, style: str) -> list[str]:
    """The product's captions of ``style`` (possibly none)."""
    if style == "title":
        return [product.title.strip()] if product.title and product.title.strip() else []
    if style == "description":
        return [c.strip() for c in product.captions if c.strip()]
    if style == "attributes":
        text = attribute_list(product.attributes) if product.attributes else ""
        return [text] if text else []
    raise ValueError(f"style: expected title, description or attributes, got {style!r}")
