"""Training inputs held in memory: frozen image features (computed once, cached on disk)
and the index lists that phase 1 (image-caption pairs) and phase 2 (triplets) sample from."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.data.records import DatasetSplit, ImageRef, Triplet, join_relative_captions
from unifashion.utils.errors import DataError


@dataclass
class FeatureTable:
    """Rows of frozen patch features (N, T, C) in float16, one per distinct image."""

    index: dict[str, int]
    feats: torch.Tensor

    @classmethod
    def build(cls, refs: list[ImageRef], cache: FeatureCache, progress: bool = True) -> FeatureTable:
        unique: dict[str, ImageRef] = {}
        for r in refs:
            unique.setdefault(str(r), r)
        feats = cache.features(list(unique.values()), progress=progress, desc="frozen image features")
        return cls({k: i for i, k in enumerate(unique)}, feats)

    def rows(self, refs: tuple[ImageRef, ...]) -> list[int]:
        return [self.index[str(r)] for r in refs]

    def batch(self, rows: list[int] | torch.Tensor) -> torch.Tensor:
        return self.feats[torch.as_tensor(rows, dtype=torch.long)].float()


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
