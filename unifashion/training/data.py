"""Training inputs held in memory: the index lists that phase 1a (image-caption pairs), the caption
head (captions per style), the image heads (latents and their conditions) and phase 2 (triplets)
sample from. Frozen image features come from the on-disk cache (``backbones.feature_cache``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.config import GenerationTrainingConfig
from unifashion.data.captions import style_texts
from unifashion.data.records import DatasetSplit, ImageRef, Triplet, join_relative_captions
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

    def __len__(self) -> int:
        return len(self.captions)


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
        texts = (caption_source or {}).get(t.target) or product_texts(target)
        if not texts:
            continue
        items.reference_views.append(table.rows(products[t.reference].images))
        items.captions.append(t.captions)
        items.target_views.append(table.rows(target.images))
        items.target_texts.append(list(texts))
        items.target_ids.append(ids[t.target])
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


@dataclass
class Text2ImageData:
    """Latents of product images and what their conditions are made of."""

    latents: torch.Tensor  # (N, 4, h, w), one row per distinct image
    rows: dict[str, int]
    feats: FeatureTable
    products: list[tuple[list[int], list[str]]]  # (image rows, texts)
    triplets: list[tuple[int, int, tuple[str, ...]]]  # (reference row, target row, captions)


def text2image_data(
    model: RetrievalModel, generator: Generator, data: DatasetSplit, cache: FeatureCache, progress: bool = True
) -> Text2ImageData:
    refs: dict[str, ImageRef] = {}
    for p in data.products:
        for r in p.images:
            refs.setdefault(str(r), r)
    ordered = list(refs.values())
    latents = encode_refs(generator, ordered, progress=progress, desc="text2image latents")
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


def inpaint_data(
    model: RetrievalModel,
    generator: Generator,
    data: DatasetSplit,
    cache: FeatureCache,
    progress: bool = True,
    batch_size: int = 64,
) -> InpaintData:
    samples = inpaint_samples(data, generator.task)
    if not samples:
        raise DataError(f"split {data.split!r}: no paired {generator.task} samples", path=str(data.root))
    targets, extras = [], []
    for i in tqdm(
        range(0, len(samples), batch_size), desc=f"{generator.task} inputs", disable=not progress, leave=False
    ):
        chunk = samples[i : i + batch_size]
        targets.append(encode_refs(generator, [s.person for s in chunk]))
        extras.append(sample_inputs(generator, chunk).extra)
    cloth = cache.features([s.cloth for s in samples], progress=progress) if generator.task == "tryon" else None
    return InpaintData(torch.cat(targets), torch.cat(extras), cloth, [s.text or "" for s in samples])


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
