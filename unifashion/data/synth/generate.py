"""``unifashion data synth``: plan a FashionSynth catalogue and write it in the real layouts.

Output folder::

    synth.json                 what was generated (seed, sizes, held-out pairs, counts)
    products.jsonl, triplets.jsonl, tryon.jsonl, images/, tryon/    folder format
    fashioniq/                 Fashion-IQ layout (dress, shirt, toptee)
    vitonhd/                   VITON-HD layout (upper-body garments)
    dresscode/                 Dress Code layout with the MGD additions

The same seed gives byte-identical files: every product and try-on sample is
drawn with its own seeded generator, in any worker, and files are written by
the main process in a fixed order.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from unifashion.data.records import encode_png
from unifashion.data.synth import attributes as A
from unifashion.data.synth import captions as C
from unifashion.data.synth import render as R
from unifashion.utils.errors import DataError
from unifashion.utils.io import atomic_write_json, atomic_write_text

FORMAT_VERSION = 1
LAYOUTS = ("fashioniq", "vitonhd", "dresscode", "fashiongen", "fashion200k")
CATEGORY_WEIGHTS = {"dress": 0.2, "shirt": 0.2, "toptee": 0.2, "skirt": 0.14, "trousers": 0.13, "jacket": 0.13}


@dataclass(frozen=True)
class SynthConfig:
    products: int = 1000
    seed: int = 0
    size: int = 128  # product images are size x size; persons size x 3/4 size
    max_views: int = 2
    tryon: int | None = None  # try-on/design samples; None: a quarter of the products
    workers: int | None = None  # None: every core
    # Layouts besides the folder format (which is always written at the root).
    layouts: tuple[str, ...] = ("fashioniq", "vitonhd", "dresscode")

    def validate(self) -> None:
        if self.products < 10:
            raise DataError(f"--products: expected at least 10, got {self.products}")
        if self.size < 32 or self.size % 4:
            raise DataError(f"--size: expected a multiple of 4, at least 32, got {self.size}")
        if not 1 <= self.max_views <= 4:
            raise DataError(f"--views: expected 1 to 4, got {self.max_views}")
        if self.tryon is not None and self.tryon < 0:
            raise DataError(f"--tryon: expected 0 or more, got {self.tryon}")
        unknown = sorted(set(self.layouts) - set(LAYOUTS))
        if unknown:
            raise DataError(f"--layouts: unknown {', '.join(unknown)}; expected some of {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------------------
# planning (cheap, sequential, deterministic)


def _seed_of(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


def plan_catalogue(cfg: SynthConfig) -> dict[str, Any]:
    """Products (with attributes, captions, split, views), triplets and try-on samples."""
    plan = A.make_plan(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 1])
    split_names = list(A.SPLIT_SHARES)
    split_p = np.array(list(A.SPLIT_SHARES.values()))
    cats = list(CATEGORY_WEIGHTS)
    cat_p = np.array(list(CATEGORY_WEIGHTS.values()))
    cat_p = cat_p / cat_p.sum()
    all_colours = list(A.COLOURS)
    products: list[dict[str, Any]] = []
    triplets: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    family = 0
    while len(products) < cfg.products:
        split = str(rng.choice(split_names, p=split_p))
        cat = str(rng.choice(cats, p=cat_p))
        if split == "novel":
            colours = plan.novel_colours(cat)
        else:
            held_out = set(plan.novel_colours(cat))
            colours = [c for c in all_colours if c not in held_out]
        # Every product is a distinct look: an exact twin would make "the" match ambiguous.
        for _attempt in range(20):
            base = A.sample_attributes(rng, cat, colours)
            if A.attribute_key(base) not in seen:
                break
        seen.add(A.attribute_key(base))
        members = [base]
        for _ in range(int(rng.integers(1, 4))):
            if len(products) + len(members) >= cfg.products:
                break
            for _attempt in range(10):
                made = A.make_variant(rng, base, colours, int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])))
                if made and A.attribute_key(made[0]) not in seen:
                    members.append(made[0])
                    seen.add(A.attribute_key(made[0]))
                    break
        first = len(products)
        for attrs in members:
            idx = len(products)
            prng = np.random.default_rng([cfg.seed, idx, 3])
            products.append(
                {
                    "id": f"fs{idx:06d}",
                    "category": cat,
                    "split": split,
                    "family": family,
                    "attributes": attrs,
                    "title": C.title(attrs),
                    "description": C.description(attrs, prng),
                    "views": 1 + int(sum(prng.random() < 0.5 for _ in range(cfg.max_views - 1))),
                    "seed": _seed_of(cfg.seed, idx, 5),
                }
            )
        ids = range(first, len(products))
        pairs = [(first, j) for j in ids if j != first]
        pairs += [(j, first) for j in ids if j != first and rng.random() < 0.3]
        pairs += [(i, j) for i in ids for j in ids if first < i < j and rng.random() < 0.3]
        for ref, tgt in pairs:
            a, b = products[ref]["attributes"], products[tgt]["attributes"]
            changes = A.differences(a, b)
            if not 1 <= len(changes) <= 3:
                continue
            c1, c2 = C.relative_captions(rng, changes, b)
            triplets.append(
                {
                    "reference": products[ref]["id"],
                    "target": products[tgt]["id"],
                    "captions": [c1, c2],
                    "category": cat,
                    "split": split,
                    "changes": changes,
                }
            )
        family += 1
    tryon = _plan_tryon(cfg, products)
    return {"plan": plan, "products": products, "triplets": triplets, "tryon": tryon}


def _plan_tryon(cfg: SynthConfig, products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    n = cfg.products // 4 if cfg.tryon is None else cfg.tryon
    n = min(n, len(products))
    if n == 0:
        return []
    rng = np.random.default_rng([cfg.seed, 2])
    chosen = sorted(rng.choice(len(products), size=n, replace=False).tolist())
    samples = []
    for k, idx in enumerate(chosen):
        p = products[idx]
        samples.append(
            {
                "id": f"{k:05d}",
                "product": p["id"],
                "product_index": idx,
                "title": p["title"],
                "category": p["category"],
                "split": "train" if p["split"] == "train" else "test",
                "source_split": p["split"],
                "pose": str(rng.choice(R.POSES)),
                "body": str(rng.choice(list(R.BODY_SHAPES))),
                "seed": _seed_of(cfg.seed, idx, 7),
            }
        )
    # Unpaired partner: another sample of the same garment group and split.
    by_group: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(samples):
        by_group.setdefault((A.DRESSCODE_GROUP[s["category"]], s["split"]), []).append(i)
    for i, s in enumerate(samples):
        group = by_group[(A.DRESSCODE_GROUP[s["category"]], s["split"])]
        others = [j for j in group if j != i]
        s["unpaired_with"] = samples[int(rng.choice(others))]["id"] if others else s["id"]
        viton_group = [j for j in group if samples[j]["category"] in A.VITON_CATEGORIES and j != i]
        s["viton_unpaired_with"] = samples[int(rng.choice(viton_group))]["id"] if viton_group else s["id"]
    return samples


# ---------------------------------------------------------------------------
# drawing (parallel; pure functions of their arguments)


def _jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _palette_png(labels: np.ndarray, n: int) -> bytes:
    """A palette PNG whose pixel values are the label indices (as CIHP parse maps)."""
    im = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels, np.uint8).tobytes())
    palette = np.random.default_rng(42).integers(40, 255, size=(n, 3), dtype=np.uint8)
    palette[0] = 0
    im.putpalette(palette.flatten().tolist())
    return encode_png(im)


def draw_product(task: tuple[dict[str, Any], int]) -> list[bytes]:
    product, size = task
    out = []
    for view in range(product["views"]):
        rgb, _ = R.render_product(product["attributes"], size, product["seed"], view)
        out.append(encode_png(Image.fromarray(rgb)))
    return out


def draw_tryon(task: tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], int]) -> dict[str, bytes]:
    """Every file of one try-on sample (both layouts), as encoded bytes."""
    sample, product, partner, viton_partner, size = task
    h, w = size, size * 3 // 4
    attrs = product["attributes"]
    person = R.render_person(attrs, h, w, sample["seed"], sample["pose"], sample["body"], product["seed"])
    cloth, cloth_mask = R.render_cloth(attrs, h, w, product["seed"])
    kp = person.keypoints
    files = {
        "person.jpg": _jpeg(person.image),
        "person.png": encode_png(Image.fromarray(person.image)),
        "cloth.jpg": _jpeg(cloth),
        "cloth.png": encode_png(Image.fromarray(cloth)),
        "cloth_mask.jpg": _jpeg((cloth_mask * 255).astype(np.uint8)),
        "cloth_mask.png": encode_png(Image.fromarray((cloth_mask * 255).astype(np.uint8))),
        "agnostic.jpg": _jpeg(person.agnostic),
        "agnostic.png": encode_png(Image.fromarray(person.agnostic)),
        "agnostic_mask.png": encode_png(Image.fromarray((person.agnostic_mask * 255).astype(np.uint8))),
        "parse_cihp.png": _palette_png(R.TO_CIHP[person.labels], 20),
        "parse_atr.png": encode_png(Image.fromarray(R.TO_ATR[person.labels])),
        "sketch.png": encode_png(Image.fromarray(person.sketch)),
        "sketch_unpaired.png": encode_png(Image.fromarray(R.garment_sketch(partner["attributes"], kp, h, w))),
        "sketch_viton_unpaired.png": encode_png(
            Image.fromarray(R.garment_sketch(viton_partner["attributes"], kp, h, w))
        ),
        "openpose.json": json.dumps(
            {
                "version": 1.3,
                "people": [{"person_id": [-1], "pose_keypoints_2d": [round(float(v), 2) for v in kp.flatten()]}],
            }
        ).encode(),
        # Dress Code keypoints live in a 384 x 512 frame whatever the image size.
        "dresscode_keypoints.json": json.dumps(
            {
                "keypoints": [
                    [round(float(x) * 384 / w, 2), round(float(y) * 512 / h, 2), 1.0, float(i)]
                    for i, (x, y, _) in enumerate(kp)
                ]
            }
        ).encode(),
    }
    return files


# ---------------------------------------------------------------------------
# writing


class _Writer:
    """Writes files once; later copies of the same bytes become hard links."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0

    def write(self, rel: str, data: bytes) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.count += 1
        return rel

    def link(self, rel: str, existing: str) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        try:
            os.link(self.root / existing, path)
        except OSError:
            shutil.copyfile(self.root / existing, path)
        self.count += 1
        return rel


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)


def _map_ordered(fn, tasks: list, workers: int, desc: str, progress: bool) -> Iterator:
    bar = tqdm(total=len(tasks), desc=desc, unit="item", disable=not progress, leave=False)
    if workers <= 1 or len(tasks) < 16:
        for t in tasks:
            yield fn(t)
            bar.update()
    else:
        ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ctx.Pool(workers) as pool:
            for out in pool.imap(fn, tasks, chunksize=8):
                yield out
                bar.update()
    bar.close()


def write_fashionsynth(out: str | os.PathLike, cfg: SynthConfig, *, progress: bool = True) -> dict[str, Any]:
    """Generate FashionSynth into ``out`` (which must be empty or absent).

    Returns the summary that is also written to ``out/synth.json``.
    """
    cfg.validate()
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root}: output folder is not empty (choose a new folder; nothing was overwritten)")
    started = time.perf_counter()
    catalogue = plan_catalogue(cfg)
    products, triplets, tryon = catalogue["products"], catalogue["triplets"], catalogue["tryon"]
    workers = cfg.workers or os.cpu_count() or 1
    w = _Writer(root)

    # Product images, folder layout (+ Fashion-IQ layout links).
    image_paths: dict[str, list[str]] = {}
    tasks = [(p, cfg.size) for p in products]
    for p, views in zip(products, _map_ordered(draw_product, tasks, workers, "products", progress), strict=True):
        image_paths[p["id"]] = [w.write(f"images/{p['id']}_{v}.png", data) for v, data in enumerate(views)]
    rows = []
    for p in products:
        rows.append(
            {
                "id": p["id"],
                "category": p["category"],
                "split": p["split"],
                "image": image_paths[p["id"]][0],
                "images": image_paths[p["id"]],
                "caption": p["description"],
                "title": p["title"],
                "attributes": p["attributes"],
            }
        )
    atomic_write_text(root / "products.jsonl", _jsonl(rows))
    atomic_write_text(root / "triplets.jsonl", _jsonl(triplets))
    if "fashioniq" in cfg.layouts:
        _write_fashioniq(w, products, triplets, image_paths)
    if "fashiongen" in cfg.layouts:
        _write_fashiongen(w, products, image_paths)
    if "fashion200k" in cfg.layouts:
        _write_fashion200k(w, products, triplets, image_paths)

    # Try-on and design samples.
    by_id = {s["id"]: s for s in tryon}
    tasks = [
        (
            s,
            products[s["product_index"]],
            products[by_id[s["unpaired_with"]]["product_index"]],
            products[by_id[s["viton_unpaired_with"]]["product_index"]],
            cfg.size,
        )
        for s in tryon
    ]
    tryon_rows = []
    for s, files in zip(tryon, _map_ordered(draw_tryon, tasks, workers, "try-on", progress), strict=True):
        tryon_rows.extend(_write_tryon_sample(w, s, products[s["product_index"]], files, by_id, cfg.layouts))
    atomic_write_text(root / "tryon.jsonl", _jsonl(tryon_rows))
    _write_pairs_files(w, tryon, products, cfg.layouts)

    seconds = time.perf_counter() - started
    summary = {
        "format": "fashionsynth",
        "version": FORMAT_VERSION,
        "config": {k: v for k, v in asdict(cfg).items() if k != "workers"},  # output does not depend on workers
        "novel_pairs": sorted([list(p) for p in catalogue["plan"].novel_pairs]),
        "counts": {
            "products": len(products),
            "images": sum(len(v) for v in image_paths.values()),
            "triplets": len(triplets),
            "tryon_samples": len(tryon),
            "files": w.count,
            "per_split": {s: sum(p["split"] == s for p in products) for s in A.SPLITS},
        },
        "seconds": round(seconds, 1),
        "workers": workers,
    }
    # Timing varies run to run; keep it out of the byte-identical metadata.
    atomic_write_json(root / "synth.json", {k: v for k, v in summary.items() if k not in ("seconds", "workers")})
    return summary


def _write_fashioniq(w: _Writer, products, triplets, image_paths) -> None:
    for p in products:
        if p["category"] in A.FASHIONIQ_CATEGORIES:
            w.link(f"fashioniq/images/{p['id']}.png", image_paths[p["id"]][0])
    for cat in A.FASHIONIQ_CATEGORIES:
        for split in A.SPLITS:
            ids = [p["id"] for p in products if p["category"] == cat and p["split"] == split]
            caps = [
                {"target": t["target"], "candidate": t["reference"], "captions": t["captions"]}
                for t in triplets
                if t["category"] == cat and t["split"] == split
            ]
            atomic_write_json(w.root / f"fashioniq/image_splits/split.{cat}.{split}.json", ids, indent=1)
            atomic_write_json(w.root / f"fashioniq/captions/cap.{cat}.{split}.json", caps, indent=1)


def _noun_phrases(attrs: dict[str, str]) -> list[str]:
    """MGD-style caption: three short noun phrases."""
    n = C.noun(attrs)
    phrases = [f"{attrs['colour']} {n}"]
    if attrs["pattern"] != "solid":
        phrases.append(f"{attrs['pattern_colour']} {attrs['pattern']}")
    else:
        phrases.append(f"solid {attrs['colour']}")
    if "sleeve" in attrs:
        phrases.append(f"{C.SLEEVE_ADJ[attrs['sleeve']]} {n}")
    elif "length" in attrs:
        phrases.append(f"{C.LENGTH_ADJ[attrs['length']] or 'short'} {n}")
    else:
        phrases.append(f"{C.PATTERN_ADJ[attrs['pattern']] or 'plain'} {n}")
    if "neckline" in attrs:
        phrases.append(f"{C.NECKLINE_PHRASE[attrs['neckline']]} {n}")
    if "length" in attrs and "sleeve" in attrs:
        phrases.append(f"{C.LENGTH_ADJ[attrs['length']]} {n}")
    return phrases


def _write_tryon_sample(w: _Writer, s, product, files, by_id, layouts) -> list[dict[str, Any]]:
    sid, split = s["id"], s["split"]
    base = f"tryon/{split}"
    rel = {
        "person": w.write(f"{base}/person/{sid}.png", files["person.png"]),
        "cloth": w.write(f"{base}/cloth/{sid}.png", files["cloth.png"]),
        "cloth_mask": w.write(f"{base}/cloth_mask/{sid}.png", files["cloth_mask.png"]),
        "agnostic": w.write(f"{base}/agnostic/{sid}.png", files["agnostic.png"]),
        "agnostic_mask": w.write(f"{base}/agnostic_mask/{sid}.png", files["agnostic_mask.png"]),
        "parse": w.write(f"{base}/parse/{sid}.png", files["parse_cihp.png"]),
        "pose": w.write(f"{base}/pose/{sid}.json", files["openpose.json"]),
        "sketch": w.write(f"{base}/sketch/{sid}.png", files["sketch.png"]),
    }
    text = product["title"]
    common = {"category": s["category"], "split": s["source_split"], "text": text}
    rows = [{"id": f"{sid}_paired", "paired": True, "cloth_id": product["id"], **rel, **common}]
    partner = by_id[s["unpaired_with"]]
    if partner is not s:  # a group of one has no unpaired partner
        rows.append(
            {
                "id": f"{sid}_unpaired",
                "paired": False,
                "cloth_id": partner["product"],
                **rel,
                "cloth": f"{'tryon/' + partner['split']}/cloth/{partner['id']}.png",
                "cloth_mask": f"{'tryon/' + partner['split']}/cloth_mask/{partner['id']}.png",
                "sketch": w.write(f"{base}/sketch_unpaired/{sid}_{partner['id']}.png", files["sketch_unpaired.png"]),
                **common,
                "text": partner["title"],  # the text describes the garment being put on
            }
        )
    # VITON-HD: upper-body garments only.
    if "vitonhd" in layouts and s["category"] in A.VITON_CATEGORIES:
        vb, name = f"vitonhd/{split}", f"{sid}_00"
        w.write(f"{vb}/image/{name}.jpg", files["person.jpg"])
        w.write(f"{vb}/cloth/{name}.jpg", files["cloth.jpg"])
        w.write(f"{vb}/cloth-mask/{name}.jpg", files["cloth_mask.jpg"])
        w.write(f"{vb}/agnostic-v3.2/{name}.jpg", files["agnostic.jpg"])
        w.write(f"{vb}/agnostic-mask/{name}_mask.png", files["agnostic_mask.png"])
        w.write(f"{vb}/image-parse-v3/{name}.png", files["parse_cihp.png"])
        w.write(f"{vb}/openpose_json/{name}_keypoints.json", files["openpose.json"])
        w.write(f"{vb}/im_sketch/{name}.png", files["sketch.png"])
        other = by_id[s["viton_unpaired_with"]]
        w.write(f"{vb}/im_sketch_unpaired/{name}_{other['id']}_00.png", files["sketch_viton_unpaired.png"])
    # Dress Code: every garment, by group.
    if "dresscode" not in layouts:
        return rows
    group = A.DRESSCODE_GROUP[s["category"]]
    db, stem = f"dresscode/{group}", f"{int(sid):06d}"
    w.write(f"{db}/images/{stem}_0.jpg", files["person.jpg"])
    w.write(f"{db}/images/{stem}_1.jpg", files["cloth.jpg"])
    w.write(f"{db}/keypoints/{stem}_2.json", files["dresscode_keypoints.json"])
    w.write(f"{db}/label_maps/{stem}_4.png", files["parse_atr.png"])
    w.write(f"{db}/im_sketch/{stem}_1.png", files["sketch.png"])
    if partner is not s:
        w.write(f"{db}/im_sketch_unpaired/{stem}_0_{int(partner['id']):06d}_1.png", files["sketch_unpaired.png"])
    return rows


def _write_pairs_files(w: _Writer, tryon, products, layouts) -> None:
    by_id = {s["id"]: s for s in tryon}
    if "vitonhd" in layouts:
        _write_viton_pairs(w, tryon, products, by_id)
    if "dresscode" in layouts:
        _write_dresscode_pairs(w, tryon, products)


def _write_viton_pairs(w: _Writer, tryon, products, by_id) -> None:
    # VITON-HD: both released pairs files are unpaired; the paired setting
    # reuses the person's own name for the cloth.
    for split in ("train", "test"):
        lines = [
            f"{s['id']}_00.jpg {by_id[s['viton_unpaired_with']]['id']}_00.jpg"
            for s in tryon
            if s["split"] == split and s["category"] in A.VITON_CATEGORIES
        ]
        atomic_write_text(w.root / f"vitonhd/{split}_pairs.txt", "".join(line + "\n" for line in lines))
    captions = {}
    for s in tryon:
        if s["category"] in A.VITON_CATEGORIES:
            captions[s["id"]] = _noun_phrases(products[s["product_index"]]["attributes"])[:3]
    atomic_write_json(w.root / "vitonhd/captions.json", captions, indent=1)


def _write_dresscode_pairs(w: _Writer, tryon, products) -> None:
    """Per group: paired train, paired and unpaired test; MGD captions at the root."""
    fine, coarse = {}, {}
    for group in ("dresses", "upper_body", "lower_body"):
        members = [s for s in tryon if A.DRESSCODE_GROUP[s["category"]] == group]
        files = {"train_pairs.txt": [], "test_pairs_paired.txt": [], "test_pairs_unpaired.txt": []}
        for s in members:
            stem = f"{int(s['id']):06d}"
            other = f"{int(s['unpaired_with']):06d}"
            if s["split"] == "train":
                files["train_pairs.txt"].append(f"{stem}_0.jpg\t{stem}_1.jpg")
            else:
                files["test_pairs_paired.txt"].append(f"{stem}_0.jpg\t{stem}_1.jpg")
                if other != stem:
                    files["test_pairs_unpaired.txt"].append(f"{stem}_0.jpg\t{other}_1.jpg")
            attrs = products[s["product_index"]]["attributes"]
            fine[stem] = _noun_phrases(attrs)
            coarse[stem] = [C.noun(attrs)]
        for name, lines in files.items():
            atomic_write_text(w.root / f"dresscode/{group}/{name}", "".join(line + "\n" for line in lines))
    atomic_write_json(w.root / "dresscode/fine_captions.json", fine, indent=1)
    atomic_write_json(w.root / "dresscode/coarse_captions.json", coarse, indent=1)


FASHIONGEN_CATEGORY = {
    "dress": "DRESSES",
    "shirt": "SHIRTS",
    "toptee": "TOPS",
    "skirt": "SKIRTS",
    "trousers": "PANTS",
    "jacket": "JACKETS & COATS",
}


def _write_fashiongen(w: _Writer, products, image_paths) -> None:
    """FashionGen's HDF5 release: one row per image, rows of a product consecutive."""
    import h5py

    for split, name in (("train", "train"), ("val", "validation")):
        rows = [(p, v) for p in products if p["split"] == split for v in range(len(image_paths[p["id"]]))]
        if not rows:
            continue
        path = w.root / f"fashiongen/fashiongen_256_256_{name}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        first = np.asarray(Image.open(w.root / image_paths[rows[0][0]["id"]][0]))
        with h5py.File(path, "w", track_order=True) as f:
            images = f.create_dataset("input_image", (len(rows), *first.shape), dtype=np.uint8)
            for i, (p, v) in enumerate(rows):
                images[i] = np.asarray(Image.open(w.root / image_paths[p["id"]][v]).convert("RGB"))

            def text(values: list[str]) -> np.ndarray:
                return np.array([[v.encode("utf-8")] for v in values], dtype="S400")

            f["input_description"] = text([p["description"] for p, _ in rows])
            f["input_name"] = text([p["title"].upper() for p, _ in rows])
            f["input_category"] = text([FASHIONGEN_CATEGORY[p["category"]] for p, _ in rows])
            f["input_subcategory"] = text([p["category"].upper() for p, _ in rows])
            f["input_pose"] = text(["id_gridfs_1" if v == 0 else "id_gridfs_2" for _, v in rows])
            f["input_productID"] = np.array([[int(p["id"][2:])] for p, _ in rows], dtype=np.int64)
            f["index_2"] = np.arange(len(rows), dtype=np.int64)
        w.count += 1


FASHION200K_CATEGORY = {
    "dress": ("dress", "dresses"),
    "shirt": ("top", "tops"),
    "toptee": ("top", "tops"),
    "skirt": ("skirt", "skirts"),
    "trousers": ("pants", "pants"),
    "jacket": ("jacket", "jackets"),
}


def _write_fashion200k(w: _Writer, products, triplets, image_paths) -> None:
    """Fashion200K: images under women/<category>/<subcategory>/<id>/, tab-separated label files, test queries."""
    lines: dict[tuple[str, str], list[str]] = {}
    paths: dict[str, str] = {}
    for p in products:
        if p["split"] not in ("train", "test"):
            continue
        label, folder = FASHION200K_CATEGORY[p["category"]]
        sub = "_".join(C.title(p["attributes"]).lower().split()[-2:]).replace("-", "_")
        pid = str(int(p["id"][2:]) + 10_000_000)
        desc = C.title(p["attributes"]).lower()
        for v, rel in enumerate(image_paths[p["id"]]):
            target = f"women/{folder}/{sub}/{pid}/{pid}_{v}.jpeg"
            with Image.open(w.root / rel) as im:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, format="JPEG", quality=95)
            w.write(f"fashion200k/{target}", buf.getvalue())
            lines.setdefault((label, p["split"]), []).append(f"{target}\t{0.9:.4f}\t{desc}")
            paths.setdefault(p["id"], target)
    for (label, split), rows in sorted(lines.items()):
        atomic_write_text(
            w.root / f"fashion200k/labels/{label}_{split}_detect_all.txt", "".join(r + "\n" for r in rows)
        )
    queries = [
        f"{paths[t['reference']]} {paths[t['target']]}"
        for t in triplets
        if t["split"] == "test" and len(t["changes"]) == 1 and t["reference"] in paths and t["target"] in paths
    ]
    atomic_write_text(w.root / "fashion200k/test_queries.txt", "".join(q + "\n" for q in queries))
