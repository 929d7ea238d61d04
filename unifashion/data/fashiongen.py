"""FashionGen (Rostamzadeh et al., 2018): the HDF5 release and JSON-lines annotations.

HDF5 (``fashiongen_256_256_{train,validation}.h5``): one row per image; rows
of one product are consecutive and share ``input_productID``. Keys used:
``input_image`` (N, H, W, 3) uint8, ``input_description``, ``input_productID``,
``input_category`` (required); ``input_name``, ``input_subcategory``,
``input_pose`` (optional). Text columns are (N, 1) byte strings, decoded as
UTF-8 with a Latin-1 fallback.

JSON lines (``{split}.jsonl`` or ``fashiongen_{split}.jsonl``), one image per
line: ``{"product_id", "image", "description", "category", optional
"subcategory", "name"}``, image paths relative to the file.

Split names: ``train`` and ``validation`` (``val`` is accepted for the latter).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unifashion.data.records import DatasetSplit, ImageRef, Problems, Product, iter_jsonl, require
from unifashion.utils.errors import DataError

FORMAT = "fashiongen"
REQUIRED_KEYS = ("input_image", "input_description", "input_productID", "input_category")
SPLIT_ALIASES = {"val": "validation", "valid": "validation"}


def _h5_files(root: Path) -> list[Path]:
    if root.is_file() and root.suffix in (".h5", ".hdf5"):
        return [root]
    return sorted(p for p in root.glob("*.h5")) + sorted(root.glob("*.hdf5")) if root.is_dir() else []


def _jsonl_files(root: Path) -> list[Path]:
    return sorted(root.glob("*.jsonl")) if root.is_dir() else []


def detect(root: Path) -> bool:
    return bool(_h5_files(root)) or any(
        p.stem in ("train", "validation", "val", "fashiongen_train", "fashiongen_validation")
        for p in _jsonl_files(root)
    )


def _split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    for name in ("train", "validation", "val", "test"):
        if stem.endswith(name) or f"_{name}" in stem:
            return SPLIT_ALIASES.get(name, name)
    return None


def splits(root: Path) -> list[str]:
    return sorted({s for p in _h5_files(root) + _jsonl_files(root) if (s := _split_of(p))})


def _text(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else b""
    if isinstance(value, bytes | np.bytes_):
        raw = bytes(value).rstrip(b"\x00")
        try:
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return raw.decode("latin-1").strip()
    return str(value).strip()


def read(
    root: str | Path,
    split: str,
    *,
    skip_bad: bool = False,
    check_images: str = "exists",
    categories: list[str] | None = None,
) -> DatasetSplit:
    root = Path(root)
    split = SPLIT_ALIASES.get(split, split)
    problems = Problems(skip_bad)
    out = DatasetSplit(FORMAT, root, split)
    h5 = [p for p in _h5_files(root) if _split_of(p) == split or root.is_file()]
    jl = [p for p in _jsonl_files(root) if _split_of(p) == split]
    if not h5 and not jl:
        raise DataError(
            f"no FashionGen file for split {split!r} (available: {', '.join(splits(root)) or 'none'})", path=str(root)
        )
    for path in h5:
        out.products.extend(_read_h5(path, split, problems, categories))
    for path in jl:
        out.products.extend(_read_jsonl(path, split, problems, check_images, categories))
    out.skipped = problems.skipped
    return out


def _read_h5(path: Path, split: str, problems: Problems, categories) -> list[Product]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file ({exc})", path=str(path)) from None
    with f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            raise DataError(f"missing key(s) {missing}; found {sorted(f.keys())}", path=str(path))
        images = f["input_image"]
        n = images.shape[0]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise DataError(
                f"input_image: expected (N, H, W, 3) uint8, got {images.shape} {images.dtype}", path=str(path)
            )
        columns = {}
        for key in ("input_description", "input_productID", "input_category", "input_name", "input_subcategory"):
            if key in f:
                data = f[key][()]
                if data.shape[0] != n:
                    raise DataError(f"{key}: {data.shape[0]} rows but input_image has {n}", path=str(path))
                columns[key] = data.reshape(n, -1)[:, 0]
    products: list[Product] = []
    start = 0
    pids = columns["input_productID"]
    while start < n:
        end = start + 1
        while end < n and pids[end] == pids[start]:
            end += 1
        product = _h5_product(path, columns, start, end, split, problems)
        if product is not None and (not categories or product.category in categories):
            products.append(product)
        start = end
    return products


def _h5_product(path: Path, columns, start: int, end: int, split: str, problems: Problems) -> Product | None:
    raw_pid = columns["input_productID"][start]
    pid = _text(raw_pid) if isinstance(raw_pid, bytes | np.bytes_) else str(int(raw_pid))
    description = _text(columns["input_description"][start])
    if not description:
        problems.report("empty caption in input_description", path=path, item=f"row {start} (product {pid})")
        return None
    category = _text(columns["input_category"][start]).lower()
    if not category:
        problems.report("missing value of input_category", path=path, item=f"row {start} (product {pid})")
        return None
    name = _text(columns["input_name"][start]) if "input_name" in columns else None
    sub = _text(columns["input_subcategory"][start]).lower() if "input_subcategory" in columns else None
    refs = tuple(ImageRef(str(path), "input_image", i) for i in range(start, end))
    return Product(pid, category, refs, (description,), title=name or None, split=split, subcategory=sub or None)


def _read_jsonl(path: Path, split: str, problems: Problems, check_images: str, categories) -> list[Product]:
    groups: dict[str, dict] = {}
    verify = check_images == "decode"
    for lineno, obj in iter_jsonl(path, problems):
        item = f"line {lineno}"
        pid = obj.get("product_id", obj.get("productID"))
        if pid is None:
            problems.report("missing key 'product_id'", path=path, item=item)
            continue
        image = require(obj, "image", str, problems, path=path, item=item)
        description = require(obj, "description", str, problems, path=path, item=item)
        category = require(obj, "category", str, problems, path=path, item=item)
        if None in (image, description, category):
            continue
        if not description.strip():
            problems.report("empty caption in 'description'", path=path, item=item)
            continue
        ref = ImageRef(str(Path(image) if Path(image).is_absolute() else path.parent / image))
        if check_images != "none" and not problems.check_image(ref, path=path, item=item, verify=verify):
            continue
        g = groups.setdefault(
            str(pid),
            {
                "images": [],
                "description": description.strip(),
                "category": category.lower(),
                "sub": obj.get("subcategory"),
                "name": obj.get("name"),
            },
        )
        g["images"].append(ref)
    products = []
    for pid, g in groups.items():
        if categories and g["category"] not in categories:
            continue
        sub = g["sub"].lower() if isinstance(g["sub"], str) else None
        images = tuple(g["images"])
        products.append(
            Product(pid, g["category"], images, (g["description"],), title=g["name"], split=split, subcategory=sub)
        )
    return products
