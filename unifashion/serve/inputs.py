"""Checks of what clients send: every refusal is an :class:`InputError` naming the field.

Images: at most ``max_upload_bytes``, JPEG / PNG / WebP only, at most ``max_image_pixels``
(checked from the header before any pixel is decoded, so a decompression bomb costs nothing),
fully decodable (a truncated file is refused, not half-read). Texts: Unicode NFC, control and
format characters (zero-width joiners, bidi overrides, lone surrogates) dropped, whitespace
collapsed, not empty, at most ``max_text_chars``.
"""

from __future__ import annotations

import io
import unicodedata
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# Unicode categories removed from texts: control, format, surrogate, private use, unassigned.
_DROPPED = {"Cc", "Cf", "Cs", "Co", "Cn"}


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
    kept = "".join(
        " " if ch in "\t\n\r" else ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) not in _DROPPED
    )
    kept = " ".join(kept.split())
    if not kept:
        raise InputError(422, field, f"{field}: empty text (nothing left to search for)")
    return kept
