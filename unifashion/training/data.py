"""Training inputs held in memory: the index lists that phase 1a (image-caption pairs), the caption
head (captions per style), the image heads (latents and their conditions) and phase 2 (triplets)
sample from. Frozen image features come from the on-disk cache (``backbones.feature_cache``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from unifashion.backbones.feature_cache import FeatureCache, FeatureTable, content_key, memmapped_features
from unifashion.config import GenerationTrainingConfig
from unifashion.data.captions import style_texts
from unifashion.data.records import DatasetSplit, ImageRef, Triplet, TryOnSample, join_relative_captions
from unifashion.models.generator import Generator
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.generation import (
    composed_condition,
    encode_images,
    image_condition,
    load_pixels,
    sample_inputs,
    text_condition,
)
from unifashion.pipelines.retrieval import QueryTable
from unifashion.utils.errors import DataError
from unifashion.utils.tables import state_key, write_once_table


def product_texts(product) -> list[str]:
    """Every text of a product usable as its caption: captions, then the title."""
    texts = [c for c in product.captions if c.strip()]
    if product.title and product.title.strip() and product.title not in texts:
        texts.append(product.title)
    return texts


@dataclass
class PairItems:
    """Phase 1a: per product, its image rows and texts."""

    views: list[list[int]] = field(default_factory=list)
    texts: list[list[str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.views)


def pair_items(data: DatasetSplit, table: FeatureTable) -> PairItems:
    items = PairItems()
    for p in data.products:
        texts = product_texts(p)
        if texts:
            items.views.append(table.rows(p.images))
            items.texts.append(texts)
            items.categories.append(p.category or "")
    if len(items) < 2:
        raise DataError(
            f"split {data.split!r} has fewer than 2 products with captions: nothing to contrast", path=str(data.root)
        )
    return items


@dataclass
class TripletItems:
    """Phase 2: per triplet, reference rows, relative captions, target rows, target texts (Z_C) and id."""

    reference_views: list[list[int]] = field(default_factory=list)
    captions: list[tuple[str, ...]] = field(default_factory=list)
    target_views: list[list[int]] = field(default_factory=list)
    target_texts: list[list[str]] = field(default_factory=list)
    target_ids: list[int] = field(default_factory=list)
    target_titles: list[str] = field(default_factory=list)  # "" where the target has none

    def __len__(self) -> int:
        return len(self.captions)

    def caption_style(self, row: int, text: str) -> str:
        """The caption style ``text`` (one of ``target_texts[row]``) is written in: the title is
        answered to the title instruction, every other text to the description one."""
        return "title" if text == self.target_titles[row] else "description"


def triplet_items(
    data: DatasetSplit, table: FeatureTable, caption_source: dict[str, list[str]] | None = None
) -> TripletItems:
    """``caption_source`` maps a product id to the texts used as its Z_C (Eq. 10);
    by default the ground-truth captions."""
    products = data.product_map()
    ids = {pid: i for i, pid in enumerate(products)}
    items = TripletItems()
    for t in data.triplets:
        if t.target is None or t.reference not in products or t.target not in products:
            continue
        target = products[t.target]
        given = (caption_source or {}).get(t.target)
        texts = given or product_texts(target)
        if not texts:
            continue
        items.reference_views.append(table.rows(products[t.reference].images))
        items.captions.append(t.captions)
        items.target_views.append(table.rows(target.images))
        items.target_texts.append(list(texts))
        items.target_ids.append(ids[t.target])
        items.target_titles.append("" if given else (target.title or ""))
    if len(items) < 2:
        raise DataError(
            f"split {data.split!r} has fewer than 2 labelled triplets: nothing to train on", path=str(data.root)
        )
    return items


def training_query_text(t: Triplet | tuple[str, ...], generator: torch.Generator) -> str:
    """A relative-caption query for training: both captions in either order
    (as the evaluation joins them), or one of them alone now and then."""
    captions = t.captions if isinstance(t, Triplet) else t
    captions = [c for c in captions if c.strip()]
    if len(captions) < 2:
        return join_relative_captions(captions)
    r = float(torch.rand(1, generator=generator))
    if r < 0.4:
        return join_relative_captions(captions)
    if r < 0.8:
        return join_relative_captions(captions[::-1])
    return join_relative_captions([captions[int(r * 10) % 2]])


def pick(options: list, generator: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=generator))]


@dataclass
class CaptionItems:
    """Per product: its image rows and its captions of each style."""

    views: list[list[int]] = field(default_factory=list)
    texts: list[dict[str, list[str]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.views)


def caption_items(data: DatasetSplit, table: QueryTable, styles: tuple[str, ...]) -> CaptionItems:
    items = CaptionItems()
    for p in data.products:
        texts = {s: t for s in styles if (t := style_texts(p, s))}
        if texts:
            items.views.append(table.rows(p.images))
            items.texts.append(texts)
    if not items:
        raise DataError(
            f"split {data.split!r} has no product with a caption of the styles {', '.join(styles)}",
            path=str(data.root),
        )
    return items


def product_hw(cfg_size: int) -> tuple[int, int]:
    return (cfg_size, cfg_size)


def person_hw(cfg_size: int) -> tuple[int, int]:
    """Persons are 4:3 (height:width), as in VITON-HD and Dress Code."""
    return (cfg_size, cfg_size * 3 // 4)


def encode_refs(
    generator: Generator, refs: list[ImageRef], *, batch_size: int = 64, progress: bool = False, desc: str = "latents"
) -> torch.Tensor:
    """Scaled VAE latents (N, 4, h, w) on the CPU of ``refs``, read and encoded ``batch_size`` at a
    time on the generator's device: only one batch of pixels is ever in memory."""
    chunks = [
        encode_images(generator, load_pixels(refs[i : i + batch_size], generator.image_hw), batch_size)
        for i in tqdm(range(0, len(refs), batch_size), desc=desc, disable=not progress, leave=False)
    ]
    return torch.cat(chunks) if chunks else encode_images(generator, load_pixels([], generator.image_hw))


def vae_key(generator: Generator) -> str:
    """Hash of what a latent depends on besides its image: the VAE's weights, the latent scale and
    the image size the head reads."""
    return state_key(generator.vae, scale=float(generator.spec.latent_scale), hw=list(generator.image_hw))


def _table(folder: Path | None, key: str, n: int, rows, *, chunk: int, progress: bool, desc: str) -> torch.Tensor:
    """``rows(start, stop)`` over ``0..n`` as one tensor: a write-once memory-mapped table named
    ``key`` in ``folder``, or (no folder) concatenated in RAM."""
    if folder is None or n == 0:
        parts = [
            torch.as_tensor(rows(i, min(i + chunk, n)))
            for i in tqdm(range(0, n, chunk), desc=desc, disable=not progress, leave=False)
        ]
        return torch.cat(parts) if parts else torch.as_tensor(rows(0, 0))
    return write_once_table(
        Path(folder) / f"{key}.npy",
        n,
        lambda a, b: torch.as_tensor(rows(a, b)).numpy(),
        chunk=chunk,
        progress=progress,
        desc=desc,
    )


def latent_table(
    generator: Generator,
    refs: list[ImageRef],
    folder: Path | None = None,
    *,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "latents",
) -> torch.Tensor:
    """Scaled VAE latents (N, 4, h, w) float32 of ``refs`` (see :func:`encode_refs`). With ``folder``:
    a write-once memory-mapped table named by the VAE and the images' content, so every process
    maps one file and a later stage or a resumed run with the same VAE and images reads it instead
    of encoding again."""
    h = hashlib.sha256(f"latents {vae_key(generator)}".encode())
    for r in refs if folder is not None else ():
        h.update(content_key(r).encode())
    return _table(
        folder,
        f"latents-{h.hexdigest()[:24]}",
        len(refs),
        lambda a, b: encode_refs(generator, refs[a:b], batch_size=batch_size),
        chunk=batch_size,
        progress=progress,
        desc=desc,
    )


@dataclass
class Text2ImageData:
    """Latents of product images and what their conditions are made of."""

    latents: torch.Tensor  # (N, 4, h, w), one row per distinct image
    rows: dict[str, int]
    feats: FeatureTable
    products: list[tuple[list[int], list[str]]]  # (image rows, texts)
    triplets: list[tuple[int, int, tuple[str, ...]]]  # (reference row, target row, captions)


def text2image_data(
    model: RetrievalModel,
    generator: Generator,
    data: DatasetSplit,
    cache: FeatureCache,
    progress: bool = True,
    tables: Path | None = None,
) -> Text2ImageData:
    """The latents of every product image (a write-once memory-mapped table in ``tables`` if
    given, else in RAM) and the rows their conditions are drawn from."""
    refs: dict[str, ImageRef] = {}
    for p in data.products:
        for r in p.images:
            refs.setdefault(str(r), r)
    ordered = list(refs.values())
    latents = latent_table(generator, ordered, tables, progress=progress, desc="text2image latents")
    rows = {str(r): i for i, r in enumerate(ordered)}
    feats = FeatureTable.build(ordered, cache, progress=progress)
    products = [([rows[str(r)] for r in p.images], product_texts(p)) for p in data.products if product_texts(p)]
    by_id = data.product_map()
    triplets = [
        (rows[str(by_id[t.reference].images[0])], rows[str(by_id[t.target].images[0])], t.captions)
        for t in data.triplets
        if t.target and t.reference in by_id and t.target in by_id and t.captions
    ]
    if not products:
        raise DataError(f"split {data.split!r}: no product with a caption", path=str(data.root))
    return Text2ImageData(latents, rows, feats, products, triplets)


def text2image_batch(
    model: RetrievalModel, data: Text2ImageData, kind: str, batch: int, gen: torch.Generator, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(target latents, Q-Former states, their mask) of one batch of condition ``kind``."""
    if kind == "composed":
        idx = torch.randint(0, len(data.triplets), (batch,), generator=gen).tolist()
        trip = [data.triplets[i] for i in idx]
        texts = [training_query_text(t[2], gen) for t in trip]
        states, mask = composed_condition(model, data.feats.batch([t[0] for t in trip]), texts, bf16)
        return data.latents[[t[1] for t in trip]], states, mask
    idx = torch.randint(0, len(data.products), (batch,), generator=gen).tolist()
    rows = [pick(data.products[i][0], gen) for i in idx]
    if kind == "image":
        states, mask = image_condition(model, data.feats.batch(rows), bf16)
    else:
        states, mask = text_condition(model, [pick(data.products[i][1], gen) for i in idx], bf16)
    return data.latents[rows], states, mask


@dataclass
class InpaintData:
    targets: torch.Tensor  # (N, 4, h, w) person latents
    extra: torch.Tensor  # (N, E, h, w)
    cloth_feats: torch.Tensor | None  # (N, T, C) try-on condition
    texts: list[str]  # design condition


def inpaint_samples(data: DatasetSplit, task: str) -> list:
    """The samples a try-on or design head trains on: paired ones (design: with a text and a sketch)."""
    samples = [s for s in data.tryon if s.paired]
    if task == "design":
        samples = [s for s in samples if s.text and s.sketch is not None]
    return samples


def _sample_key(s: TryOnSample, cloth: bool) -> str:
    """Hash of every file an inpainting input of sample ``s`` is made from."""
    h = hashlib.sha256(f"{s.pose_format}".encode())
    for name in ("person", "agnostic", "agnostic_mask", "sketch", *(("cloth",) if cloth else ())):
        ref = getattr(s, name)
        h.update(f"{name}={content_key(ref) if ref is not None else '-'};".encode())
    if s.pose is not None:
        try:
            h.update(hashlib.sha256(Path(s.pose).read_bytes()).digest())
        except OSError as exc:
            raise DataError(f"try-on sample {s.id}: cannot read its pose file ({exc})", path=str(s.pose)) from None
    return h.hexdigest()


def inpaint_data(
    model: RetrievalModel,
    generator: Generator,
    data: DatasetSplit,
    cache: FeatureCache,
    progress: bool = True,
    batch_size: int = 64,
    tables: Path | None = None,
) -> InpaintData:
    """Person latents and spatial inputs of every paired sample of ``generator``'s task (each a
    write-once memory-mapped table in ``tables`` if given, else in RAM), computed ``batch_size``
    samples at a time, and the condition of each (cloth features or design text)."""
    samples = inpaint_samples(data, generator.task)
    if not samples:
        raise DataError(f"split {data.split!r}: no paired {generator.task} samples", path=str(data.root))
    task = generator.task
    targets = latent_table(
        generator, [s.person for s in samples], tables, batch_size=batch_size, progress=progress, desc=f"{task} targets"
    )
    h = hashlib.sha256(f"{task} inputs {vae_key(generator)} {generator.cloth_latent}".encode())
    for s in samples if tables is not None else ():
        h.update(_sample_key(s, generator.cloth_latent).encode())
    extra = _table(
        tables,
        f"{task}-inputs-{h.hexdigest()[:24]}",
        len(samples),
        lambda a, b: sample_inputs(generator, samples[a:b]).extra,
        chunk=batch_size,
        progress=progress,
        desc=f"{task} inputs",
    )
    cloth = None
    if task == "tryon":
        cloths = [s.cloth for s in samples]
        use_map = cache.memmap and cloths
        cloth = memmapped_features(cloths, cache) if use_map else cache.features(cloths, progress=progress)
    return InpaintData(targets, extra, cloth, [s.text or "" for s in samples])


def head_batches(
    model: RetrievalModel, generator: Generator, data: Text2ImageData | InpaintData, cfg: GenerationTrainingConfig
):
    """A function drawing one global batch (latents, states, mask, spatial input, kind) of ``generator``'s task."""
    kinds = ("text", "image", "composed")
    mix = torch.tensor(cfg.condition_mix, dtype=torch.float)
    if isinstance(data, Text2ImageData) and not data.triplets:
        mix[2] = 0.0

    @torch.no_grad()
    def draw(gen: torch.Generator):
        if isinstance(data, Text2ImageData):
            kind = kinds[int(torch.multinomial(mix, 1, generator=gen))]
            latents, states, mask = text2image_batch(model, data, kind, cfg.batch_size, gen, cfg.bf16)
            return latents, states, mask, None, kind
        idx = torch.randint(0, data.targets.shape[0], (min(cfg.batch_size, data.targets.shape[0]),), generator=gen)
        if data.cloth_feats is not None:
            states, mask = image_condition(model, data.cloth_feats[idx].float(), cfg.bf16)
        else:
            states, mask = text_condition(model, [data.texts[i] for i in idx.tolist()], cfg.bf16)
        return data.targets[idx], states.detach(), mask, data.extra[idx], generator.task

    return draw
