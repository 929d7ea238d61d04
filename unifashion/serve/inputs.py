"""Checks of what clients send: every refusal is an :class:`InputError` naming the field.

Images: at most ``max_upload_bytes``, JPEG / PNG / WebP only, at most ``max_image_pixels``
(checked from the header before any pixel is decoded, so a decompression bomb costs nothing),
fully decodable (a truncated file is refused, not half-read). Texts: Unicode NFC, control and
format characters of the Basic Multilingual Plane (zero-width joiners, bidi overrides) and lone
surrogates dropped, whitespace collapsed, not empty, at most ``max_text_chars`` as sent. Which
characters count as invisible is a fixed list (``INVISIBLE``), not the running Python's Unicode
tables, so the API schema's ``VISIBLE_TEXT`` pattern says exactly which texts are accepted.

"""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Code point ranges a text may not consist of alone: white space, control characters (Cc), format
# characters of the Basic Multilingual Plane (Cf: soft hyphen, zero-width and bidi controls, BOM)
# and surrogates (Cs), as of Unicode 14. White space becomes a space; the rest is dropped.
INVISIBLE = (
    (0x0000, 0x0020),
    (0x007F, 0x00A0),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x1680, 0x1680),
    (0x180E, 0x180E),
    (0x2000, 0x200F),
    (0x2028, 0x202F),
    (0x205F, 0x2064),
    (0x2066, 0x206F),
    (0x3000, 0x3000),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
)


def _char_class(ranges) -> str:
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


# A text is accepted when it has one character outside INVISIBLE (the OpenAPI ``pattern`` of every
# text field; JSON Schema patterns match anywhere in the string). The pattern leaves surrogates out:
# they are not characters to a schema validator, and neither UTF-8 forms nor our JSON parser take one.
VISIBLE_TEXT = f"[^{_char_class(r for r in INVISIBLE if r != (0xD800, 0xDFFF))}]"
_INVISIBLE_RE = re.compile(f"[{_char_class(INVISIBLE)}]")


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    max_text_chars: int = 500
    max_k: int = 100
    max_generation_jobs: int = 1  # running at once
    max_queued_jobs: int = 4  # waiting beyond those; more is answered 429
    max_pose_bytes: int = 256 * 1024
    # Dynamic batching of search encodings: at most this many requests per model pass (1: off),
    # collected for at most this long after the first one arrives.
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    # Requests a minute per client (per key with API keys, else per address); None: no limit.
    # A key's own limit, when it has one, replaces this.
    rate_per_minute: float | None = None


class InputError(Exception):
    """A request the server refuses: HTTP ``status``, the ``field`` at fault, and why."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message

    def payload(self) -> dict:
        return {"error": {"status": self.status, "field": self.field, "message": self.message}}


def read_image(data: bytes, field: str, limits: Limits) -> Image.Image:
    """The uploaded bytes as an RGB image (transparency composited on white)."""
    if not data:
        raise InputError(422, field, f"{field}: empty file (expected a JPEG, PNG or WebP image)")
    if len(data) > limits.max_upload_bytes:
        raise InputError(413, field, f"{field}: {len(data):,} bytes; at most {limits.max_upload_bytes:,}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
            OSError,
            SyntaxError,
            ValueError,
        ) as exc:
            if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
                raise InputError(413, field, f"{field}: image too large to decode ({exc})") from None
            raise InputError(415, field, f"{field}: not an image we can read (expected JPEG, PNG or WebP)") from None
        if im.format not in FORMATS:
            raise InputError(415, field, f"{field}: {im.format} images are not accepted (expected JPEG, PNG or WebP)")
        w, h = im.size
        if w < 1 or h < 1 or w * h > limits.max_image_pixels:
            raise InputError(413, field, f"{field}: {w} x {h} pixels; at most {limits.max_image_pixels:,} pixels")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
            raise InputError(422, field, f"{field}: truncated or corrupt {im.format} image ({exc})") from None
    if im.mode.startswith(("I", "F")):  # 16/32-bit greyscale: scale to 8 bits
        arr = np.asarray(im, dtype=np.float32)
        top = float(arr.max()) if arr.size else 0.0
        im = Image.fromarray((arr * (255.0 / top) if top > 0 else arr).clip(0, 255).astype(np.uint8), mode="L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def clean_text(text: object, field: str, limits: Limits) -> str:
    """``text`` normalised for the tokenizer; refused when empty or too long."""
    if not isinstance(text, str):
        raise InputError(422, field, f"{field}: expected a string")
    if len(text) > limits.max_text_chars:
        raise InputError(422, field, f"{field}: {len(text):,} characters; at most {limits.max_text_chars:,}")
    text = unicodedata.normalize("NFC", text)
    kept = _INVISIBLE_RE.sub(lambda m: " " if m.group().isspace() else "", text)
    kept = " ".join(w for w in kept.split(" ") if w)
    if not kept:
        raise InputError(422, field, f"{field}: empty text (nothing left to search for)")
    return kept
