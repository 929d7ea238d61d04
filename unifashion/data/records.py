"""The record types every reader yields, so every trainer and evaluator works on any dataset.

- :class:`Product`: one garment with its images (1..n views) and captions.
- :class:`Triplet`: a composed-retrieval query (reference, relative captions)
  and its target (``None`` where a split has no labels, as Fashion-IQ test).
- :class:`TryOnSample`: a person, a garment and what try-on / design need
  (masks, pose, parse map, sketch, text).
- :class:`DatasetSplit`: what a reader found in one split, with the items it
  skipped and why.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unifashion.data.hdf5 import read_h5_image
from unifashion.utils.errors import DataError

# Refuse images whose pixel count suggests a decompression bomb.
Image.MAX_IMAGE_PIXELS = 64_000_000


@dataclass(frozen=True)
class ImageRef:
    """Where an image's pixels are: a file, or row ``index`` of dataset ``key``
    in an HDF5 file (FashionGen)."""

    path: str
    key: str | None = None
    index: int | None = None

    def __str__(self) -> str:
        return self.path if self.key is None else f"{self.path}:{self.key}[{self.index}]"

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def open(self) -> Image.Image:
        """The image in RGB; a clear :class:`DataError` if it cannot be read."""
        if self.key is not None:
            return Image.fromarray(self.array())
        try:
            with Image.open(self.path) as im:
                im.load()
                return im.convert("RGB")
        except FileNotFoundError:
            raise DataError("image file is missing", path=self.path) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"unreadable image ({exc})", path=self.path) from None

    def open_raw(self) -> Image.Image:
        """The image in its own mode (label maps and masks keep their values)."""
        if self.key is not None:
            return Image.fromarray(self.array())
        try:
            with Image.open(self.path) as im:
                im.load()
                return im.copy()
        except FileNotFoundError:
            raise DataError("image file is missing", path=self.path) from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"unreadable image ({exc})", path=self.path) from None

    def array(self) -> np.ndarray:
        """uint8 pixels; for HDF5 refs, the stored (H, W, 3) row."""
        if self.key is None:
            return np.asarray(self.open())
        return read_h5_image(self.path, self.key, int(self.index or 0))

    def content_bytes(self) -> bytes:
        """Bytes that identify the image's content (for content-keyed caches)."""
        if self.key is None:
            try:
                return Path(self.path).read_bytes()
            except OSError as exc:
                raise DataError(f"cannot read image ({exc})", path=self.path) from None
        return self.array().tobytes()

    def verify(self) -> None:
        """Raise :class:`DataError` if the file is missing or not a decodable image."""
        if self.key is not None:
            self.array()
            return
        if not os.path.exists(self.path):
            raise DataError("image file is missing", path=self.path)
        try:
            with Image.open(self.path) as im:
                im.verify()
            with Image.open(self.path) as im:  # verify() misses truncated pixel data
                im.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"unreadable image ({exc})", path=self.path) from None


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


@dataclass(frozen=True)
class Product:
    id: str
    category: str
    images: tuple[ImageRef, ...]
    captions: tuple[str, ...] = ()
    title: str | None = None
    split: str = "train"
    subcategory: str | None = None
    # Ground truth where a dataset has it (FashionSynth): name -> value.
    attributes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Other categories whose gallery also lists this product (Fashion-IQ's shirt and toptee
    # splits share image ids); ``category`` is the first one read.
    also_in: tuple[str, ...] = ()

    def in_category(self, category: str) -> bool:
        """Whether the product belongs to ``category``'s gallery."""
        return category == self.category or category in self.also_in


@dataclass(frozen=True)
class Triplet:
    """Composed-retrieval query: ``reference`` image + relative ``captions`` -> ``target``."""

    reference: str
    target: str | None
    captions: tuple[str, ...]
    category: str
    split: str
    # FashionSynth ground truth: attribute -> [reference value, target value].
    changes: dict[str, list[str]] = field(default_factory=dict, compare=False, hash=False)

    def query_text(self) -> str:
        """Fashion-IQ's evaluation query: "<first, stripped, capitalised> and <second, stripped>"."""
        return join_relative_captions(self.captions)


def join_relative_captions(captions: Iterable[str]) -> str:
    """The standard Fashion-IQ evaluation query (as CLIP4Cir builds it): each
    caption stripped of surrounding spaces, dots, commas and question marks;
    the first capitalised (Python's ``str.capitalize``, which also lower-cases
    the rest); joined with " and ".

    Two captions are joined exactly as that code does, an empty one included
    (Fashion-IQ has a few: ``["", "has buttons"]`` gives " and has buttons"), so
    the query strings are the published protocol's; other counts drop empty parts."""
    parts = [c.strip(".?, ") for c in captions]
    if len(parts) == 2:
        return f"{parts[0].capitalize()} and {parts[1]}"
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return " and ".join([parts[0].capitalize(), *parts[1:]])


@dataclass(frozen=True)
class TryOnSample:
    """A person and a garment. ``paired``: the person wears this very garment
    (ground truth exists); unpaired: another garment of the same kind."""

    id: str
    category: str
    split: str
    person: ImageRef
    cloth: ImageRef
    paired: bool
    cloth_mask: ImageRef | None = None
    agnostic: ImageRef | None = None
    agnostic_mask: ImageRef | None = None
    parse: ImageRef | None = None
    pose: str | None = None  # keypoints JSON file
    pose_format: str = "openpose"  # "openpose" (pixels, 18 or 25 points) or "dresscode" (384 x 512 frame)
    sketch: ImageRef | None = None  # design (MGD): garment sketch aligned with the person
    text: str | None = None  # design: text describing the garment
    cloth_id: str | None = None

    def image_refs(self) -> Iterator[tuple[str, ImageRef]]:
        for name in ("person", "cloth", "cloth_mask", "agnostic", "agnostic_mask", "parse", "sketch"):
            ref = getattr(self, name)
            if ref is not None:
                yield name, ref


@dataclass
class Skipped:
    path: str
    item: str | int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.path} [{self.item}]: {self.reason}" if self.item is not None else f"{self.path}: {self.reason}"


class Problems:
    """Collects malformed items: raises at the first one, or with
    ``skip_bad=True`` records it and lets the reader go on."""

    def __init__(self, skip_bad: bool = False, *, skip_missing_files: bool = False):
        self.skip_bad = skip_bad
        # Files a list names but the release lacks: recorded and skipped even without skip_bad
        # (the try-on releases' pair lists name a few files some copies do not hold).
        self.skip_missing_files = skip_missing_files
        self.skipped: list[Skipped] = []
        self.missing_files: list[Skipped] = []

    def missing(self, reason: str, *, path: str | os.PathLike, item: str | int | None = None) -> None:
        """A listed file that is not there: skipped where ``skip_missing_files``, else as :meth:`report`."""
        if self.skip_missing_files:
            self.skipped.append(Skipped(str(path), item, reason))
            self.missing_files.append(self.skipped[-1])
        else:
            self.report(reason, path=path, item=item)

    def report(self, reason: str, *, path: str | os.PathLike, item: str | int | None = None) -> None:
        if not self.skip_bad:
            raise DataError(reason, path=str(path), item=item)
        self.skipped.append(Skipped(str(path), item, reason))

    def check_image(self, ref: ImageRef, *, path: str | os.PathLike, item: str | int | None, verify: bool) -> bool:
        """True if ``ref`` is usable; otherwise report it (naming ``path``/``item``)."""
        if ref.key is None and not ref.exists():
            self.missing(f"image {ref}: image file is missing", path=path, item=item)
            return False
        try:
            if verify:
                ref.verify()
        except DataError as exc:
            self.report(f"image {ref}: {exc.reason}", path=path, item=item)
            return False
        return True


def note_missing_files(out: DatasetSplit, problems: Problems, what: str, where: str | os.PathLike) -> None:
    """After a reader that skips listed-but-missing files: say how many ``what`` were skipped in
    ``out.notes``, and refuse a split where nothing listed was found (a wrong folder, not a quirk)."""
    if not problems.missing_files:
        return
    first = problems.missing_files[0]
    if not out.tryon and not out.products:
        raise DataError(f"none of the listed {what} could be read; the first: {first.reason}", path=str(where))
    out.notes.append(
        f"{len(problems.missing_files)} listed {what} skipped, a file they name is missing (first: {first.reason}); "
        f"`data stats --json` lists them all"
    )


@dataclass
class DatasetSplit:
    format: str
    root: Path
    split: str
    products: list[Product] = field(default_factory=list)
    triplets: list[Triplet] = field(default_factory=list)
    tryon: list[TryOnSample] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # False where the split's triplets carry no targets (Fashion-IQ test).
    has_targets: bool = True
    notes: list[str] = field(default_factory=list)

    def product_map(self) -> dict[str, Product]:
        return {p.id: p for p in self.products}

    def categories(self) -> list[str]:
        cats = {p.category for p in self.products} | {c for p in self.products for c in p.also_in}
        return sorted(cats | {t.category for t in self.triplets})

    def stats(self) -> dict[str, Any]:
        """Counts per category; a product listed by several categories counts in each of them
        (a category's count is its gallery), once in the totals."""
        per_cat: dict[str, Counter] = defaultdict(Counter)
        totals: Counter = Counter()
        for p in self.products:
            for cat in (p.category, *p.also_in):
                c = per_cat[cat]
                c["products"] += 1
                c["images"] += len(p.images)
                c["captions"] += len(p.captions)
            totals["products"] += 1
            totals["images"] += len(p.images)
            totals["captions"] += len(p.captions)
        for t in self.triplets:
            per_cat[t.category]["triplets"] += 1
            totals["triplets"] += 1
        for s in self.tryon:
            key = "paired_pairs" if s.paired else "unpaired_pairs"
            per_cat[s.category][key] += 1
            totals[key] += 1
        keys = ("products", "images", "captions", "triplets", "paired_pairs", "unpaired_pairs")
        reasons = Counter(_reason_kind(s.reason) for s in self.skipped)
        return {
            "split": self.split,
            "totals": {k: totals.get(k, 0) for k in keys},
            "per_category": {cat: {k: c.get(k, 0) for k in keys} for cat, c in sorted(per_cat.items())},
            "has_targets": self.has_targets,
            "skipped": {
                "count": len(self.skipped),
                "reasons": dict(reasons),
                "examples": [str(s) for s in self.skipped[:5]],
            },
            "notes": list(self.notes),
        }


def _reason_kind(reason: str) -> str:
    """Group skip reasons by kind (drop the specific file or value)."""
    for kind in ("missing", "unreadable", "empty caption", "wrong type", "missing key", "not valid JSON"):
        if kind in reason:
            return kind
    return reason.split(":")[0][:60]


# ---------------------------------------------------------------------------
# small readers shared by the format modules


def read_json_file(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError("file is missing", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc})", path=str(path)) from None


def iter_jsonl(path: Path, problems: Problems) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of a JSON-lines file; bad lines are reported."""
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise DataError("file is missing", path=str(path)) from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.report(f"not valid JSON ({exc.msg})", path=path, item=f"line {lineno}")
                continue
            if not isinstance(obj, dict):
                problems.report(
                    f"wrong type: expected a JSON object, got {type(obj).__name__}", path=path, item=f"line {lineno}"
                )
                continue
            yield lineno, obj


def require(obj: dict, key: str, types: type | tuple[type, ...], problems: Problems, *, path, item) -> Any:
    """``obj[key]`` if present and of ``types``; otherwise report and return None."""
    if key not in obj:
        problems.report(f"missing key {key!r}", path=path, item=item)
        return None
    value = obj[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        names = " or ".join(t.__name__ for t in allowed)
        problems.report(f"wrong type for {key!r}: expected {names}, got {type(value).__name__}", path=path, item=item)
        return None
    return value


def clean_captions(
    values: list, problems: Problems, *, path, item, key: str = "captions", allow_empty: bool = False
) -> tuple[str, ...] | None:
    """Caption strings as they are (human captions keep their spaces and
    typos); a non-string caption is reported, and so is an empty one unless
    ``allow_empty`` (then only a list with no non-empty caption is)."""
    out = []
    for i, c in enumerate(values):
        if not isinstance(c, str):
            problems.report(
                f"wrong type for {key}[{i}]: expected a string, got {type(c).__name__}", path=path, item=item
            )
            return None
        if not c.strip() and not allow_empty:
            problems.report(f"empty caption in {key}[{i}]", path=path, item=item)
            return None
        out.append(c)
    if out and not any(c.strip() for c in out):
        problems.report(f"every caption in {key} is empty", path=path, item=item)
        return None
    return tuple(out)
