"""The folder format: what users bring.

::

    images/...                       any image files
    products.jsonl                   {"id", "image" | "images", "caption" | "captions", "category",
                                      optional "split", "title", "subcategory", "attributes"}
    triplets.jsonl     (optional)    {"reference", "target", "captions", optional "category", "split"}
    tryon.jsonl        (optional)    {"id", "person", "cloth", "paired", optional "split", "category",
                                      "cloth_mask", "agnostic", "agnostic_mask", "parse", "pose", "sketch", "text"}

Paths are relative to the folder (or absolute). Items without ``split`` are in
``train``. FashionSynth writes this format at the root of its output.
"""

from __future__ import annotations

from pathlib import Path

from unifashion.data.records import (
    DatasetSplit,
    ImageRef,
    Problems,
    Product,
    Triplet,
    TryOnSample,
    clean_captions,
    iter_jsonl,
    require,
)
from unifashion.utils.errors import DataError

FORMAT = "folder"


def detect(root: Path) -> bool:
    return (root / "products.jsonl").is_file()


def splits(root: Path) -> list[str]:
    found = set()
    for name in ("products.jsonl", "triplets.jsonl", "tryon.jsonl"):
        if (root / name).is_file():
            for _, obj in iter_jsonl(root / name, Problems(skip_bad=True)):
                split = obj.get("split", "train")
                if isinstance(split, str):
                    found.add(split)
    return sorted(found)


def _ref(root: Path, rel: str) -> ImageRef:
    p = Path(rel)
    return ImageRef(str(p if p.is_absolute() else root / p))


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
        raise DataError("not a folder-format dataset: products.jsonl is missing", path=str(root))
    problems = Problems(skip_bad)
    out = DatasetSplit(FORMAT, root, split)
    verify = check_images == "decode"
    path = root / "products.jsonl"
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(path, problems):
        item = f"line {lineno}"
        if obj.get("split", "train") != split:
            continue
        pid = require(obj, "id", str, problems, path=path, item=item)
        category = require(obj, "category", str, problems, path=path, item=item)
        if pid is None or category is None:
            continue
        if categories and category not in categories:
            continue
        if pid in seen:
            problems.report(f"duplicate product id {pid!r}", path=path, item=item)
            continue
        if "images" in obj:
            rels = require(obj, "images", list, problems, path=path, item=item)
            if rels is not None and (not rels or not all(isinstance(r, str) for r in rels)):
                problems.report("wrong type for 'images': expected a non-empty list of paths", path=path, item=item)
                rels = None
        else:
            one = require(obj, "image", str, problems, path=path, item=item)
            rels = [one] if one is not None else None
        if rels is None:
            continue
        if "captions" in obj:
            caps = require(obj, "captions", list, problems, path=path, item=item)
        else:
            one = require(obj, "caption", str, problems, path=path, item=item)
            caps = [one] if one is not None else None
        if caps is None:
            continue
        caps = clean_captions(caps, problems, path=path, item=item, key="captions" if "captions" in obj else "caption")
        if caps is None:
            continue
        refs = tuple(_ref(root, r) for r in rels)
        if check_images != "none" and not all(
            problems.check_image(r, path=path, item=item, verify=verify) for r in refs
        ):
            continue
        attributes = obj.get("attributes", {})
        if not isinstance(attributes, dict):
            problems.report("wrong type for 'attributes': expected an object", path=path, item=item)
            continue
        seen.add(pid)
        out.products.append(
            Product(
                id=pid,
                category=category,
                images=refs,
                captions=caps,
                title=obj.get("title") if isinstance(obj.get("title"), str) else None,
                split=split,
                subcategory=obj.get("subcategory") if isinstance(obj.get("subcategory"), str) else None,
                attributes={str(k): str(v) for k, v in attributes.items()},
            )
        )
    _read_triplets(root, split, out, problems, categories)
    _read_tryon(root, split, out, problems, check_images, categories)
    out.skipped = problems.skipped
    return out


def _read_triplets(root: Path, split: str, out: DatasetSplit, problems: Problems, categories) -> None:
    path = root / "triplets.jsonl"
    if not path.is_file():
        return
    by_id = out.product_map()
    labelled = []
    for lineno, obj in iter_jsonl(path, problems):
        item = f"line {lineno}"
        ref = require(obj, "reference", str, problems, path=path, item=item)
        if ref is None:
            continue
        ref_product = by_id.get(ref)
        t_split = obj.get("split", ref_product.split if ref_product else "train")
        if t_split != split:
            continue
        target = obj.get("target")
        if target is not None and not isinstance(target, str):
            problems.report(
                f"wrong type for 'target': expected a string or null, got {type(target).__name__}", path=path, item=item
            )
            continue
        caps = require(obj, "captions", list, problems, path=path, item=item)
        if caps is None:
            continue
        caps = clean_captions(caps, problems, path=path, item=item)
        if caps is None:
            continue
        if not caps:
            problems.report("empty 'captions': expected at least one relative caption", path=path, item=item)
            continue
        category = obj.get("category") or (ref_product.category if ref_product else None)
        if not isinstance(category, str):
            problems.report(
                "missing key 'category' (and the reference is not a product of this split)", path=path, item=item
            )
            continue
        if categories and category not in categories:
            continue
        unknown = [x for x in (ref, target) if x is not None and x not in by_id]
        if unknown:
            problems.report(f"refers to unknown product id(s) {unknown} of split {split!r}", path=path, item=item)
            continue
        changes = obj.get("changes", {})
        labelled.append(target is not None)
        out.triplets.append(
            Triplet(ref, target, caps, category, split, changes=changes if isinstance(changes, dict) else {})
        )
    if labelled and not any(labelled):
        out.has_targets = False
        out.notes.append(f"split {split!r} has no target labels: its triplets can be queried, not scored")


TRYON_IMAGE_KEYS = ("cloth_mask", "agnostic", "agnostic_mask", "parse", "sketch")


def _read_tryon(root: Path, split: str, out: DatasetSplit, problems: Problems, check_images: str, categories) -> None:
    path = root / "tryon.jsonl"
    if not path.is_file():
        return
    verify = check_images == "decode"
    for lineno, obj in iter_jsonl(path, problems):
        item = f"line {lineno}"
        if obj.get("split", "train") != split:
            continue
        sid = require(obj, "id", str, problems, path=path, item=item)
        person = require(obj, "person", str, problems, path=path, item=item)
        cloth = require(obj, "cloth", str, problems, path=path, item=item)
        paired = require(obj, "paired", bool, problems, path=path, item=item) if "paired" in obj else True
        if None in (sid, person, cloth, paired):
            continue
        category = obj.get("category", "upper_body")
        if categories and category not in categories:
            continue
        optional = {}
        bad = False
        for key in TRYON_IMAGE_KEYS:
            value = obj.get(key)
            if value is None:
                optional[key] = None
            elif not isinstance(value, str):
                problems.report(f"wrong type for {key!r}: expected a path", path=path, item=item)
                bad = True
                break
            else:
                optional[key] = _ref(root, value)
        if bad:
            continue
        refs = [_ref(root, person), _ref(root, cloth), *[r for r in optional.values() if r is not None]]
        if check_images != "none" and not all(
            problems.check_image(r, path=path, item=item, verify=verify) for r in refs
        ):
            continue
        pose = obj.get("pose")
        if pose is not None:
            pose_path = Path(pose) if Path(pose).is_absolute() else root / pose
            if not pose_path.is_file():
                problems.report(f"pose file is missing: {pose_path}", path=path, item=item)
                continue
            pose = str(pose_path)
        text = obj.get("text")
        out.tryon.append(
            TryOnSample(
                id=sid,
                category=category,
                split=split,
                person=refs[0],
                cloth=refs[1],
                paired=paired,
                pose=pose,
                pose_format=obj.get("pose_format", "openpose"),
                text=text if isinstance(text, str) else None,
                cloth_id=obj.get("cloth_id"),
                **optional,
            )
        )
