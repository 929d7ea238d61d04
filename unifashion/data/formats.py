"""One entry point over every reader: detect a folder's format, list its splits, read one."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from unifashion.data import dresscode, fashion200k, fashiongen, fashioniq, folder, vitonhd
from unifashion.data.records import DatasetSplit
from unifashion.utils.errors import DataError

READERS: dict[str, ModuleType] = {
    "folder": folder,
    "fashioniq": fashioniq,
    "fashiongen": fashiongen,
    "fashion200k": fashion200k,
    "vitonhd": vitonhd,
    "dresscode": dresscode,
}
FORMATS = tuple(READERS)
CHECK_IMAGES = ("decode", "exists", "none")


def detect_format(root: str | Path) -> str:
    """The format of dataset folder ``root`` (the first reader that recognises it)."""
    root = Path(root)
    if not root.exists():
        raise DataError("no such file or folder", path=str(root))
    for name, reader in READERS.items():
        if reader.detect(root):
            return name
    raise DataError(f"cannot tell the dataset format; pass --format (one of {', '.join(FORMATS)})", path=str(root))


def reader_for(fmt: str | None, root: str | Path) -> tuple[str, ModuleType]:
    fmt = fmt or detect_format(root)
    if fmt not in READERS:
        raise DataError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt, READERS[fmt]


def list_splits(root: str | Path, fmt: str | None = None) -> list[str]:
    _, reader = reader_for(fmt, root)
    return reader.splits(Path(root))


def read_split(
    root: str | Path,
    split: str,
    fmt: str | None = None,
    *,
    skip_bad: bool = False,
    check_images: str = "exists",
    categories: list[str] | None = None,
) -> DatasetSplit:
    """Read ``split`` of the dataset at ``root`` (format detected unless given)."""
    if check_images not in CHECK_IMAGES:
        raise DataError(f"check_images: expected one of {', '.join(CHECK_IMAGES)}, got {check_images!r}")
    _, reader = reader_for(fmt, root)
    return reader.read(Path(root), split, skip_bad=skip_bad, check_images=check_images, categories=categories)


def dataset_stats(root: str | Path, fmt: str | None = None, **kwargs) -> dict:
    """What each split's reader found: counts per category, skipped items and why."""
    fmt, reader = reader_for(fmt, root)
    return {
        "format": fmt,
        "root": str(root),
        "splits": {s: read_split(root, s, fmt, **kwargs).stats() for s in reader.splits(Path(root))},
    }
