"""``unifashion data preview``: a contact sheet of a dataset, to look at before training on it."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from unifashion.data.formats import list_splits, read_split
from unifashion.data.records import DatasetSplit, ImageRef
from unifashion.utils.errors import DataError
from unifashion.utils.io import atomic_write_bytes

TILE = 128
PAD = 8
BG = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _thumb(ref: ImageRef | None, w: int = TILE, h: int = TILE) -> Image.Image:
    canvas = Image.new("RGB", (w, h), (235, 235, 235))
    if ref is None:
        return canvas
    try:
        im = ref.open()
    except DataError:
        ImageDraw.Draw(canvas).text((6, h // 2), "unreadable", fill=(180, 0, 0), font=_font(11))
        return canvas
    im.thumbnail((w, h))
    canvas.paste(im, ((w - im.width) // 2, (h - im.height) // 2))
    return canvas


def _text_block(lines: list[tuple[str, tuple]], width: int, size: int = 11, max_lines: int = 4) -> Image.Image:
    font = _font(size)
    wrapped: list[tuple[str, tuple]] = []
    chars = max(8, int(width / (size * 0.55)))
    for text, colour in lines:
        for part in textwrap.wrap(text, chars)[: max_lines - len(wrapped)]:
            wrapped.append((part, colour))
    height = max(1, len(wrapped)) * (size + 3) + 4
    im = Image.new("RGB", (width, height), BG)
    d = ImageDraw.Draw(im)
    for i, (t, c) in enumerate(wrapped):
        d.text((2, 2 + i * (size + 3)), t, fill=c, font=font)
    return im


def _stack(images: list[Image.Image], vertical: bool, gap: int = PAD) -> Image.Image:
    if not images:
        return Image.new("RGB", (1, 1), BG)
    if vertical:
        w, h = max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)
    else:
        w, h = sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)
    out = Image.new("RGB", (w, h), BG)
    pos = 0
    for im in images:
        out.paste(im, (0, pos) if vertical else (pos, 0))
        pos += (im.height if vertical else im.width) + gap
    return out


def _header(text: str, width: int) -> Image.Image:
    im = Image.new("RGB", (width, 26), BG)
    ImageDraw.Draw(im).text((2, 4), text, fill=INK, font=_font(16))
    return im


def product_section(data: DatasetSplit, n: int) -> Image.Image | None:
    tiles = []
    for p in data.products[:n]:
        caption = p.title or (p.captions[0] if p.captions else "")
        detail = p.captions[0] if p.title and p.captions else ""
        block = _text_block([(f"{p.id} · {p.category}", MUTED), (caption, INK), (detail, MUTED)], TILE, max_lines=6)
        views = [_thumb(r, TILE // 2, TILE // 2) for r in p.images[1:3]]
        col = [_thumb(p.images[0]), *([_stack(views, False, 0)] if views else []), block]
        tiles.append(_stack(col, True, 2))
    if not tiles:
        return None
    rows = [_stack(tiles[i : i + 6], False) for i in range(0, len(tiles), 6)]
    return _stack(rows, True)


def triplet_section(data: DatasetSplit, n: int) -> Image.Image | None:
    products = data.product_map()
    rows = []
    for t in data.triplets[:n]:
        ref = products.get(t.reference)
        tgt = products.get(t.target) if t.target else None
        arrow = _text_block([("->", INK)], 24, size=16)
        block = _text_block(
            [(f"{t.category}: {t.reference} -> {t.target or '(no label)'}", MUTED)]
            + [(f'"{c}"', INK) for c in t.captions],
            TILE * 2,
            max_lines=6,
        )
        rows.append(
            _stack(
                [_thumb(ref.images[0] if ref else None), arrow, _thumb(tgt.images[0] if tgt else None), block], False
            )
        )
    return _stack(rows, True) if rows else None


def tryon_section(data: DatasetSplit, n: int) -> Image.Image | None:
    rows = []
    w, h = TILE * 3 // 4, TILE
    for s in data.tryon[:n]:
        cells = [
            _thumb(s.person, w, h),
            _thumb(s.cloth, w, h),
            _thumb(s.agnostic, w, h),
            _thumb(s.agnostic_mask, w, h),
            _thumb(s.parse, w, h),
            _thumb(s.sketch, w, h),
        ]
        block = _text_block(
            [(f"{s.id} · {s.category} · {'paired' if s.paired else 'unpaired'}", MUTED), (s.text or "", INK)], TILE * 2
        )
        rows.append(_stack([*cells, block], False, 4))
    if not rows:
        return None
    legend = _text_block([("person · cloth · agnostic · agnostic mask · parse · sketch", MUTED)], TILE * 6)
    return _stack([legend, *rows], True)


def make_contact_sheet(
    root: str | Path,
    out: str | Path,
    fmt: str | None = None,
    split: str | None = None,
    products: int = 18,
    triplets: int = 4,
    tryon: int = 4,
) -> Path:
    """Write a PNG contact sheet of ``root`` to ``out``; returns ``out``."""
    available = list_splits(root, fmt)
    if not available:
        raise DataError("the dataset has no splits to preview", path=str(root))
    if split is None:
        split = "train" if "train" in available else available[0]
    data = read_split(root, split, fmt, skip_bad=True, check_images="exists")
    sections: list[Image.Image] = []
    title = f"{Path(root).name} ({data.format}, split {split}): {len(data.products)} products, "
    title += f"{len(data.triplets)} triplets, {len(data.tryon)} try-on samples"
    for name, section in (
        ("Products", product_section(data, products)),
        ("Composed-retrieval triplets (reference -> target)", triplet_section(data, triplets)),
        ("Try-on and design samples", tryon_section(data, tryon)),
    ):
        if section is not None:
            sections += [_header(name, section.width), section]
    if not sections:
        raise DataError(f"split {split!r} has nothing to show", path=str(root))
    body = _stack(sections, True, PAD * 2)
    sheet = _stack([_header(title, max(body.width, 600)), body], True)
    framed = Image.new("RGB", (sheet.width + 2 * PAD, sheet.height + 2 * PAD), BG)
    framed.paste(sheet, (PAD, PAD))
    import io

    buf = io.BytesIO()
    framed.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)
