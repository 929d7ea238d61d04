"""Embed a dataset's products with a trained model and write them into a catalog.

    unifashion catalog build  --model MODEL --data DIR --out CATALOG [--split train,val]
    unifashion catalog add    --catalog CATALOG --data DIR [--split novel] [--replace]
    unifashion catalog remove --catalog CATALOG --ids ID [ID ...]

Images go through the model's frozen-feature cache in batches (a catalog built from the data
the model was trained on skips the vision encoder); with a caption head the model captions
every product and the caption's embedding goes into the catalog too (or the dataset's own
descriptions, ``--captions data``).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from unifashion.catalog.index import APPROXIMATE_ABOVE
from unifashion.catalog.store import Catalog, CatalogError, ProductEntry, ProductVectors
from unifashion.checkpoint import CONFIG_FILE, QFORMER_WEIGHTS
from unifashion.config import CAPTION_WEIGHT
from unifashion.data.records import ImageRef, Product, encode_png
from unifashion.utils.errors import DataError

# Which text of a product goes into the caption index: ``generate`` (the model's caption head),
# ``data`` (the dataset's own first caption or title, as a shop's descriptions), ``auto``
# (generated when the model has a caption head, else the data's), ``none``.
CAPTION_MODES = ("auto", "generate", "data", "none")


def model_fingerprint(model_path: str | os.PathLike) -> str:
    """Hash of the retrieval part of a checkpoint folder (what decides the vectors)."""
    folder = Path(model_path)
    h = hashlib.sha256()
    for name in (CONFIG_FILE, QFORMER_WEIGHTS):
        path = folder / name
        if not path.is_file():
            raise CatalogError(f"{folder}: not a UniFashion checkpoint folder (no {name})")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def read_products(data: str | os.PathLike, splits: Sequence[str] | None = None) -> list[Product]:
    """Products of ``splits`` (default: every split) of the dataset at ``data``; an id met twice
    keeps its first record."""
    from unifashion.data.formats import list_splits, read_split

    chosen = list(splits) if splits else list_splits(data)
    out: dict[str, Product] = {}
    for split in chosen:
        for p in read_split(data, split, check_images="exists").products:
            if p.images and p.id not in out:
                out[p.id] = p
    if not out:
        raise DataError(f"no products with images in split(s) {', '.join(chosen)}", path=str(data))
    return list(out.values())


def image_bytes(ref: ImageRef) -> tuple[bytes, str]:
    """The stored bytes of an image and their MIME type (HDF5 rows are stored as PNG)."""
    if ref.key is not None:
        return encode_png(Image.fromarray(ref.array())), "image/png"
    data = ref.content_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"unreadable image ({exc})", path=ref.path) from None
    return data, Image.MIME.get(fmt or "", "application/octet-stream")


def mean_vectors(queries: np.ndarray) -> np.ndarray:
    """(N, e) normalised means of query vectors (N, Q, e): what an image query is matched on
    (the evaluation's image-only measure)."""
    means = queries.mean(axis=1)
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def embed_products(
    model,
    products: Sequence[Product],
    *,
    captions: str = "auto",
    style: str = "description",
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[list[ProductEntry], ProductVectors, str | None]:
    """Entries, vectors and the caption source (``generated:<style>``, ``data`` or None) of
    ``products`` under ``model`` (a :class:`UniFashion`); ``captions``: one of :data:`CAPTION_MODES`."""
    if captions not in CAPTION_MODES:
        raise CatalogError(f"captions: expected one of {', '.join(CAPTION_MODES)}, got {captions!r}")
    refs = [p.images[0] for p in products]
    texts = [""] * len(products)
    generated = [""] * len(products)
    source = None
    if captions == "generate" or (captions == "auto" and "captioning" in model.heads):
        source = f"generated:{style}"
        bar = tqdm(total=len(refs), desc="captions", unit="img", disable=not progress)
        for start in range(0, len(refs), batch_size):
            chunk = refs[start : start + batch_size]
            generated[start : start + len(chunk)] = model.caption(chunk, style=style, batch_size=min(16, batch_size))
            bar.update(len(chunk))
        bar.close()
        texts = [c.strip() for c in generated]
    elif captions in ("auto", "data"):
        source = "data"
        texts = [(p.captions[0] if p.captions else (p.title or "")).strip() for p in products]
    queries = model.encode_images(refs, batch_size=batch_size, progress=progress).float().numpy()  # (N, Q, e)
    means = mean_vectors(queries)
    caption_vecs = np.zeros_like(means)
    have = [i for i, c in enumerate(texts) if c]
    if have:
        caption_vecs[have] = model.encode_texts([texts[i] for i in have]).float().numpy()
    entries = []
    for p, ref, cap in zip(products, refs, generated, strict=True):
        data, mime = image_bytes(ref)
        entries.append(
            ProductEntry(
                id=p.id,
                category=p.category,
                image=data,
                image_mime=mime,
                title=p.title,
                captions=tuple(p.captions),
                generated_caption=cap.strip(),
                attributes=dict(p.attributes),
            )
        )
    return entries, ProductVectors(queries, means, caption_vecs), source


def _load_model(model_path: str | os.PathLike, device: str = "cpu"):
    from unifashion.pipelines.unifashion import UniFashion

    return UniFashion.from_pretrained(model_path, device=device)


def build_catalog(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    splits: Sequence[str] | None = None,
    captions: str = "auto",
    style: str = "description",
    kind: str = "auto",
    approximate_above: int = APPROXIMATE_ABOVE,
    caption_weight: float | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    progress: bool = True,
    device: str = "cpu",
    engine_uri: str | None = None,
) -> Catalog:
    """Embed the products of ``data`` with the model at ``model_path`` (on ``device``) into a new
    version of ``out``; with ``engine_uri`` its indexes go to that Milvus server or cluster."""
    if engine_uri is not None:  # reachable, before minutes of embedding
        from unifashion.catalog.milvus import _client

        _client(engine_uri)
    model = _load_model(model_path, device)
    products = read_products(data, splits)[:limit]
    entries, vectors, source = embed_products(
        model, products, captions=captions, style=style, batch_size=batch_size, progress=progress
    )
    if caption_weight is None:
        caption_weight = CAPTION_WEIGHT if source else 0.0
    info: dict[str, Any] = {"path": str(Path(model_path).resolve()), "fingerprint": model_fingerprint(model_path)}
    return Catalog.create(
        out,
        entries,
        vectors,
        model=info,
        kind=kind,
        approximate_above=approximate_above,
        caption_weight=caption_weight,
        caption_source=source,
        engine_uri=engine_uri,
    )


def check_model(catalog: Catalog, model_path: str | os.PathLike) -> None:
    """Error unless ``model_path`` holds the model the catalog's vectors came from."""
    want = catalog.manifest.get("model", {}).get("fingerprint")
    got = model_fingerprint(model_path)
    if want != got:
        raise CatalogError(
            f"{catalog.folder}: built with another model (fingerprint {want}, {model_path} has {got}); "
            f"rebuild it with `unifashion catalog build --model {model_path} --data DIR --out {catalog.folder}`"
        )


def add_to_catalog(
    catalog_path: str | os.PathLike,
    data: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    replace: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    device: str = "cpu",
) -> Catalog:
    """Embed the products of ``data`` with the catalog's model (on ``device``) and add them (a new version)."""
    catalog = Catalog.open(catalog_path)
    model_path = model_path or catalog.manifest["model"]["path"]
    check_model(catalog, model_path)
    model = _load_model(model_path, device)
    source = catalog.manifest.get("caption_source") or "none"
    mode, _, style = source.partition(":")  # the same caption source as the rest of the catalog
    entries, vectors, _ = embed_products(
        model,
        read_products(data, splits),
        captions=mode,
        style=style or "description",
        batch_size=batch_size,
        progress=progress,
    )
    return catalog.add(entries, vectors, replace=replace)
