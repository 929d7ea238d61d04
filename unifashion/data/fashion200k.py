"""Fashion200K (Han et al., ICCV 2017).

::

    labels/{dress,jacket,pants,skirt,top}_{train,test}_detect_all.txt
        <image path> TAB <detection score> TAB <description>
    women/<category>/<subcategory>/<product id>/<product id>_<k>.jpeg
    test_queries.txt  (optional; composed-retrieval queries of TIRG)
        <source image path> <target image path>

Images of one product (the fourth path component) are grouped into one
product. TIRG's modification text ("replace <word> with <word>") is built for
each test query from the two descriptions.
"""

from __future__ import annotations

import re
from pathlib import Path

from unifashion.data.records import DatasetSplit, ImageRef, Problems, Product, Triplet
from unifashion.utils.errors import DataError

FORMAT = "fashion200k"
_LABEL_FILE = re.compile(r"^(\w+)_(train|test)_detect_all\.txt$")


def detect(root: Path) -> bool:
    return (root / "labels").is_dir() and any(_LABEL_FILE.match(p.name) for p in (root / "labels").iterdir())


def splits(root: Path) -> list[str]:
    return sorted({m.group(2) for p in (root / "labels").iterdir() if (m := _LABEL_FILE.match(p.name))})


def product_id(image_path: str) -> str:
    parts = image_path.split("/")
    return parts[3] if len(parts) >= 5 else Path(image_path).stem.rsplit("_", 1)[0]


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
        raise DataError("not a Fashion200K folder: labels/*_detect_all.txt not found", path=str(root))
    problems = Problems(skip_bad)
    out = DatasetSplit(FORMAT, root, split)
    files = sorted(p for p in (root / "labels").iterdir() if (m := _LABEL_FILE.match(p.name)) and m.group(2) == split)
    if not files:
        raise DataError(
            f"no label files for split {split!r} (available: {', '.join(splits(root))})", path=str(root / "labels")
        )
    verify = check_images == "decode"
    groups: dict[str, dict] = {}
    path_caption: dict[str, str] = {}
    for f in files:
        category = _LABEL_FILE.match(f.name).group(1)
        if categories and category not in categories:
            continue
        with open(f, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 3:
                    problems.report(
                        f"expected 3 tab-separated fields (path, score, description), got {len(fields)}",
                        path=f,
                        item=f"line {lineno}",
                    )
                    continue
                rel, _score, description = fields[0].strip(), fields[1], fields[2].strip()
                if not description:
                    problems.report("empty caption (description field)", path=f, item=f"line {lineno}")
                    continue
                ref = ImageRef(str(root / rel))
                if check_images != "none" and not problems.check_image(
                    ref, path=f, item=f"line {lineno}", verify=verify
                ):
                    continue
                pid = product_id(rel)
                g = groups.setdefault(pid, {"category": category, "images": [], "captions": [], "sub": None})
                g["images"].append(ref)
                if description not in g["captions"]:
                    g["captions"].append(description)
                parts = rel.split("/")
                if len(parts) >= 5:
                    g["sub"] = parts[2]
                path_caption[rel] = description
    out.products = [
        Product(pid, g["category"], tuple(g["images"]), tuple(g["captions"]), split=split, subcategory=g["sub"])
        for pid, g in groups.items()
    ]
    queries = root / "test_queries.txt"
    if split == "test" and queries.is_file():
        with open(queries, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                fields = line.split()
                if len(fields) != 2:
                    problems.report(
                        f"expected 2 paths (source target), got {len(fields)} fields",
                        path=queries,
                        item=f"line {lineno}",
                    )
                    continue
                src, tgt = fields
                if src not in path_caption or tgt not in path_caption:
                    problems.report("query image not among the test labels", path=queries, item=f"line {lineno}")
                    continue
                text = modification_text(path_caption[src], path_caption[tgt])
                out.triplets.append(
                    Triplet(product_id(src), product_id(tgt), (text,), groups[product_id(src)]["category"], split)
                )
    out.skipped = problems.skipped
    return out


def modification_text(source: str, target: str) -> str:
    """TIRG's query text: the first source word missing from the target,
    replaced by the first target word missing from the source."""
    s_words, t_words = source.split(), target.split()
    removed = next((w for w in s_words if w not in t_words), "")
    added = next((w for w in t_words if w not in s_words), "")
    return f"replace {removed} with {added}"
