"""VITON-HD (Choi et al., CVPR 2021), with the MGD additions (sketches, captions).

::

    {train,test}/image/{stem}.jpg                     person
    {train,test}/cloth/{stem}.jpg, cloth-mask/{stem}.jpg
    {train,test}/image-parse-v3/{stem}.png            CIHP labels (palette PNG)
    {train,test}/openpose_json/{stem}_keypoints.json  OpenPose (18 or 25 points)
    {train,test}/agnostic-v3.2/{stem}.jpg, agnostic-mask/{stem}_mask.png
    {train,test}/im_sketch/{stem}.png, im_sketch_unpaired/{stem}_{cloth stem}.png   (MGD)
    {train,test}_pairs.txt                            "<person>.jpg <cloth>.jpg" (unpaired)
    captions.json                                     (MGD) {"<5-digit id>": [phrases]}

Each line of a pairs file gives two samples: paired (the person's own cloth,
the ground truth exists) and unpaired (the listed cloth). The older hyphenated
folder names (``openpose-json``, ``image-parse``) are accepted too.
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

FORMAT = "vitonhd"
CATEGORY = "upper_body"


def detect(root: Path) -> bool:
    return any((root / s / "image").is_dir() and (root / s / "cloth").is_dir() for s in ("train", "test"))


def splits(root: Path) -> list[str]:
    return [s for s in ("train", "test") if (root / s / "image").is_dir()]


def _first_dir(base: Path, *names: str) -> Path:
    for n in names:
        if (base / n).is_dir():
            return base / n
    return base / names[0]


def _optional(path: Path) -> ImageRef | None:
    return ImageRef(str(path)) if path.exists() else None


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
        raise DataError(f"no VITON-HD split {split!r} (available: {', '.join(splits(root)) or 'none'})", path=str(root))
    problems = Problems(skip_bad, skip_missing_files=True)
    out = DatasetSplit(FORMAT, root, split)
    if categories and CATEGORY not in categories:
        return out
    base = root / split
    pose_dir = _first_dir(base, "openpose_json", "openpose-json")
    parse_dir = _first_dir(base, "image-parse-v3", "image-parse")
    pairs = root / f"{split}_pairs.txt"
    if not pairs.is_file():
        raise DataError(f"pairs file is missing (expected {split}_pairs.txt)", path=str(pairs))
    captions = {}
    if (root / "captions.json").is_file():
        captions = read_json_file(root / "captions.json")
        if not isinstance(captions, dict):
            raise DataError("expected an object {id: [phrases]}", path=str(root / "captions.json"))
    verify = check_images == "decode"
    cloths: dict[str, Product] = {}
    with open(pairs, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            fields = line.split()
            item = f"line {lineno}"
            if len(fields) != 2:
                problems.report(f"expected 2 names (person cloth), got {len(fields)}", path=pairs, item=item)
                continue
            person_name, cloth_name = fields
            stem = Path(person_name).stem
            person = ImageRef(str(base / "image" / person_name))
            own_cloth = ImageRef(str(base / "cloth" / person_name))
            other_cloth = ImageRef(str(base / "cloth" / cloth_name))
            needed = [person, own_cloth, other_cloth]
            if check_images != "none" and not all(
                problems.check_image(r, path=pairs, item=item, verify=verify) for r in needed
            ):
                continue
            pose = pose_dir / f"{stem}_keypoints.json"
            if not pose.is_file():
                problems.missing(f"pose file is missing: {pose}", path=pairs, item=item)
                continue
            common = {
                "category": CATEGORY,
                "split": split,
                "person": person,
                "agnostic": _optional(base / "agnostic-v3.2" / f"{stem}.jpg"),
                "agnostic_mask": _optional(base / "agnostic-mask" / f"{stem}_mask.png"),
                "parse": _optional(parse_dir / f"{stem}.png"),
                "pose": str(pose),
                "pose_format": "openpose",
            }
            for paired, cname in ((True, person_name), (False, cloth_name)):
                cstem = Path(cname).stem
                sketch = (
                    base / "im_sketch" / f"{stem}.png"
                    if paired
                    else base / "im_sketch_unpaired" / f"{stem}_{cstem}.png"
                )
                text = captions.get(cstem.split("_")[0])
                out.tryon.append(
                    TryOnSample(
                        id=f"{stem}_{'paired' if paired else 'unpaired'}",
                        paired=paired,
                        cloth=ImageRef(str(base / "cloth" / cname)),
                        cloth_mask=_optional(base / "cloth-mask" / cname),
                        sketch=_optional(sketch),
                        text=", ".join(text) if isinstance(text, list) else None,
                        cloth_id=cstem,
                        **common,
                    )
                )
                if cstem not in cloths:
                    cloths[cstem] = Product(
                        cstem,
                        CATEGORY,
                        (ImageRef(str(base / "cloth" / cname)),),
                        (", ".join(text),) if isinstance(text, list) and text else (),
                        split=split,
                    )
    out.products = list(cloths.values())
    out.skipped = problems.skipped
    note_missing_files(out, problems, "pairs", root)
    return out
