"""Dress Code (Morelli et al., ECCV 2022), with the MGD additions (sketches, captions).

::

    {dresses,upper_body,lower_body}/images/{id}_0.jpg      person
    {dresses,upper_body,lower_body}/images/{id}_1.jpg      in-shop garment
    {...}/keypoints/{id}_2.json                            {"keypoints": [[x, y, score, id], ...]} (384 x 512 frame)
    {...}/label_maps/{id}_4.png                            ATR labels (18 classes)
    {...}/im_sketch/{cloth stem}.png, im_sketch_unpaired/{person stem}_{cloth stem}.png   (MGD)
    {...}/train_pairs.txt, test_pairs_paired.txt, test_pairs_unpaired.txt
    fine_captions.json, coarse_captions.json               (MGD) {"<garment id>": [noun phrases]}

Split ``train`` reads the train pairs (paired); ``test`` reads both test pair
files. Garments become products whose caption joins their MGD phrases.
"""

from __future__ import annotations

from pathlib import Path

from unifashion.data.records import (
    DatasetSplit,
    ImageRef,
    Problems,
    Product,
    TryOnSample,
    note_missing_files,
    read_json_file,
)
from unifashion.utils.errors import DataError

FORMAT = "dresscode"
GROUPS = ("dresses", "upper_body", "lower_body")


def detect(root: Path) -> bool:
    return any((root / g / "images").is_dir() for g in GROUPS)


def splits(root: Path) -> list[str]:
    found = set()
    for g in GROUPS:
        if (root / g / "train_pairs.txt").is_file():
            found.add("train")
        if any((root / g / f"test_pairs_{o}.txt").is_file() for o in ("paired", "unpaired")):
            found.add("test")
    return sorted(found)


def _captions(root: Path) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for name in ("coarse_captions.json", "fine_captions.json"):  # fine wins
        path = root / name
        if path.is_file():
            data = read_json_file(path)
            if not isinstance(data, dict):
                raise DataError("expected an object {garment id: [phrases]}", path=str(path))
            merged.update({k: v for k, v in data.items() if isinstance(v, list)})
    return merged


def read(
    root: str | Path,
    split: str,
    *,
    skip_bad: bool = False,
    check_images: str = "exists",
    categories: list[str] | None = None,
) -> DatasetSplit:
    root = Path(root)
    if split not in splits(root):
        raise DataError(
            f"no Dress Code split {split!r} (available: {', '.join(splits(root)) or 'none'})", path=str(root)
        )
    problems = Problems(skip_bad, skip_missing_files=True)
    out = DatasetSplit(FORMAT, root, split)
    captions = _captions(root)
    verify = check_images == "decode"
    cloths: dict[str, Product] = {}
    files = (
        [("train_pairs.txt", True)]
        if split == "train"
        else [("test_pairs_paired.txt", True), ("test_pairs_unpaired.txt", False)]
    )
    for group in GROUPS:
        if categories and group not in categories:
            continue
        base = root / group
        for name, paired in files:
            pairs = base / name
            if not pairs.is_file():
                continue
            with open(pairs, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    fields = line.split()
                    item = f"line {lineno}"
                    if len(fields) < 2:
                        problems.report(f"expected 2 names (person cloth), got {len(fields)}", path=pairs, item=item)
                        continue
                    person_name, cloth_name = fields[0], fields[1]
                    pstem, cstem = Path(person_name).stem, Path(cloth_name).stem
                    pid = pstem.split("_")[0]
                    person = ImageRef(str(base / "images" / person_name))
                    cloth = ImageRef(str(base / "images" / cloth_name))
                    if check_images != "none" and not all(
                        problems.check_image(r, path=pairs, item=item, verify=verify) for r in (person, cloth)
                    ):
                        continue
                    pose = base / "keypoints" / f"{pid}_2.json"
                    if not pose.is_file():
                        problems.missing(f"pose file is missing: {pose}", path=pairs, item=item)
                        continue
                    parse = base / "label_maps" / f"{pid}_4.png"
                    sketch = (
                        base / "im_sketch" / f"{cstem}.png"
                        if paired
                        else base / "im_sketch_unpaired" / f"{pstem}_{cstem}.png"
                    )
                    garment_id = cstem.split("_")[0]
                    phrases = captions.get(garment_id)
                    text = ", ".join(phrases) if phrases else None
                    out.tryon.append(
                        TryOnSample(
                            id=f"{group}/{pstem}_{'paired' if paired else 'unpaired'}",
                            category=group,
                            split=split,
                            person=person,
                            cloth=cloth,
                            paired=paired,
                            parse=ImageRef(str(parse)) if parse.exists() else None,
                            pose=str(pose),
                            pose_format="dresscode",
                            sketch=ImageRef(str(sketch)) if sketch.exists() else None,
                            text=text,
                            cloth_id=garment_id,
                        )
                    )
                    if garment_id not in cloths:
                        cloths[garment_id] = Product(garment_id, group, (cloth,), (text,) if text else (), split=split)
    out.products = list(cloths.values())
    out.skipped = problems.skipped
    note_missing_files(out, problems, "pairs", root)
    return out
