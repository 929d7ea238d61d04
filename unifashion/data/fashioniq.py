"""Fashion-IQ (Wu et al., CVPR 2021).

::

    captions/cap.{dress,shirt,toptee}.{train,val,test}.json   [{"candidate", "target", "captions": [c1, c2]}]
    image_splits/split.{dress,shirt,toptee}.{split}.json      [asin, ...]   (the retrieval gallery)
    images/{asin}.png | .jpg

The test split has no ``target``: it is read as unlabelled (``has_targets``
False) with a note, not as an error. Captions are kept exactly as written
(leading spaces, typos, case); the evaluation query joins them with
:func:`~unifashion.data.records.join_relative_captions`.

Quirks of the real release, kept as the published protocol keeps them and
reported in the split's notes: a triplet where one annotator wrote nothing
(``"captions": ["", "..."]``) is kept; an image id listed by two categories'
split files (shirt and toptee share 121 val ids) belongs to both galleries
(``Product.also_in``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from unifashion.data.records import (
    DatasetSplit,
    ImageRef,
    Problems,
    Product,
    Triplet,
    clean_captions,
    read_json_file,
)
from unifashion.utils.errors import DataError

FORMAT = "fashioniq"
CATEGORIES = ("dress", "shirt", "toptee")
_CAPTION_FILE = re.compile(r"^cap\.(\w+)\.(\w+)\.json$")
_SPLIT_FILE = re.compile(r"^split\.(\w+)\.(\w+)\.json$")


def detect(root: Path) -> bool:
    return (root / "captions").is_dir() and any((root / "captions").glob("cap.*.json"))


def splits(root: Path) -> list[str]:
    found = set()
    for folder, pattern in (("captions", _CAPTION_FILE), ("image_splits", _SPLIT_FILE)):
        if (root / folder).is_dir():
            for f in (root / folder).iterdir():
                m = pattern.match(f.name)
                if m:
                    found.add(m.group(2))
    return sorted(found)


def image_ref(root: Path, asin: str) -> ImageRef:
    """``images/{asin}.png`` or ``.jpg``, whichever exists (loaders differ)."""
    for ext in (".png", ".jpg", ".jpeg"):
        path = root / "images" / f"{asin}{ext}"
        if path.exists():
            return ImageRef(str(path))
    return ImageRef(str(root / "images" / f"{asin}.png"))


def read(
    root: str | Path,
    split: str,
    *,
    skip_bad: bool = False,
    check_images: str = "exists",
    categories: list[str] | None = None,
) -> DatasetSplit:
    root = Path(root)
    if not detect(root):
        raise DataError("not a Fashion-IQ folder: captions/cap.*.json not found", path=str(root))
    problems = Problems(skip_bad)
    out = DatasetSplit(FORMAT, root, split)
    cats = [c for c in (categories or CATEGORIES)]
    found_any = False
    labelled_files, unlabelled_files = [], []
    products: dict[str, Product] = {}
    empty_captions: dict[str, int] = {}  # file -> triplets with one empty caption (kept)
    shared: dict[str, int] = {}  # "shirt+toptee" -> image ids in both splits
    for cat in cats:
        split_file = root / "image_splits" / f"split.{cat}.{split}.json"
        cap_file = root / "captions" / f"cap.{cat}.{split}.json"
        gallery: list[str] = []
        if split_file.exists():
            found_any = True
            ids = read_json_file(split_file)
            if not isinstance(ids, list):
                raise DataError(f"expected a list of image ids, got {type(ids).__name__}", path=str(split_file))
            for i, asin in enumerate(ids):
                if not isinstance(asin, str) or not asin.strip():
                    problems.report(f"wrong type: expected an image id string, got {asin!r}", path=split_file, item=i)
                    continue
                gallery.append(asin)
        triplets: list[Triplet] = []
        if cap_file.exists():
            found_any = True
            items = read_json_file(cap_file)
            if not isinstance(items, list):
                raise DataError(f"expected a list of triplets, got {type(items).__name__}", path=str(cap_file))
            has_target = [isinstance(x, dict) and "target" in x for x in items]
            unlabelled = bool(items) and not any(has_target)
            (unlabelled_files if unlabelled else labelled_files).append(cap_file.name)
            for i, obj in enumerate(items):
                t = _triplet(obj, cat, split, unlabelled, problems, cap_file, i)
                if t is not None:
                    triplets.append(t)
                    if any(not c.strip() for c in t.captions):
                        empty_captions[cap_file.name] = empty_captions.get(cap_file.name, 0) + 1
        for asin in dict.fromkeys(gallery + [x for t in triplets for x in (t.reference, t.target) if x]):
            p = products.get(asin)
            if p is None:
                products[asin] = Product(asin, cat, (image_ref(root, asin),), (), split=split)
            elif not p.in_category(cat):  # listed by two categories' splits: a member of both galleries
                products[asin] = replace(p, also_in=(*p.also_in, cat))
                shared[f"{p.category}+{cat}"] = shared.get(f"{p.category}+{cat}", 0) + 1
        out.triplets.extend(triplets)
    if not found_any:
        raise DataError(
            f"no Fashion-IQ files for split {split!r} (available: {', '.join(splits(root)) or 'none'})", path=str(root)
        )
    if check_images != "none":
        verify = check_images == "decode"
        bad = {
            asin
            for asin, p in products.items()
            if not problems.check_image(p.images[0], path=root / "images", item=asin, verify=verify)
        }
        if bad:
            out.triplets = [t for t in out.triplets if t.reference not in bad and t.target not in bad]
            products = {k: v for k, v in products.items() if k not in bad}
    out.products = list(products.values())
    if unlabelled_files and not labelled_files:
        out.has_targets = False
        out.notes.append(
            f"split {split!r} has no target labels ({', '.join(unlabelled_files)}): "
            "its triplets can be queried, not scored"
        )
    elif unlabelled_files:
        out.notes.append(f"no target labels in {', '.join(unlabelled_files)}")
    if empty_captions:
        where = ", ".join(f"{name}: {n}" for name, n in sorted(empty_captions.items()))
        out.notes.append(
            f"{sum(empty_captions.values())} triplets with one empty caption kept, the query joins what "
            f"is there as the published evaluation code does ({where})"
        )
    if shared:
        where = ", ".join(f"{pair}: {n}" for pair, n in sorted(shared.items()))
        out.notes.append(
            f"{sum(shared.values())} image ids listed by two categories' splits ({where}); each category's "
            "gallery is its own split list, shared ids included"
        )
    out.skipped = problems.skipped
    return out


def _triplet(obj, cat: str, split: str, unlabelled: bool, problems: Problems, path: Path, i: int) -> Triplet | None:
    if not isinstance(obj, dict):
        problems.report(f"wrong type: expected an object, got {type(obj).__name__}", path=path, item=i)
        return None
    for key in ("candidate", "captions") if unlabelled else ("candidate", "target", "captions"):
        if key not in obj:
            problems.report(f"missing key {key!r}", path=path, item=i)
            return None
    candidate, target, captions = obj["candidate"], obj.get("target"), obj["captions"]
    if not isinstance(candidate, str) or (target is not None and not isinstance(target, str)):
        problems.report("wrong type: 'candidate' and 'target' must be image id strings", path=path, item=i)
        return None
    if not isinstance(captions, list) or not captions:
        problems.report("wrong type for 'captions': expected a non-empty list of strings", path=path, item=i)
        return None
    caps = clean_captions(captions, problems, path=path, item=i, allow_empty=True)
    if caps is None:
        return None
    return Triplet(candidate, target, caps, cat, split)
