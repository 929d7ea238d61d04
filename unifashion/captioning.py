"""Captions for image files: load a checkpoint with a caption head and caption images in batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.data.records import ImageRef
from unifashion.models.captioner import Captioner, Decoding
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.loop import autocast
from unifashion.utils.errors import UniFashionError


def load_captioning_model(path: str | os.PathLike) -> tuple[RetrievalModel, Captioner]:
    """The Q-Former side and the caption head of checkpoint ``path``."""
    folder = Path(path)
    model = RetrievalModel.from_pretrained(folder)
    if not (folder / "captioner").is_dir():
        raise UniFashionError(
            f"{folder}: no caption head (captioner/); train one with `unifashion train captioning --model {folder} ...`"
        )
    return model, Captioner.from_pretrained(folder / "captioner")


@torch.no_grad()
def caption_images(
    model: RetrievalModel,
    captioner: Captioner,
    images: Sequence[str | os.PathLike | ImageRef],
    style: str = "description",
    decoding: Decoding | None = None,
    *,
    batch_size: int = 16,
    bf16: bool = True,
    cache: FeatureCache | None = None,
) -> list[str]:
    """One caption per image; unreadable images raise a :class:`DataError` naming the file."""
    refs = [im if isinstance(im, ImageRef) else ImageRef(os.fspath(im)) for im in images]
    for ref in refs:
        ref.verify()
    cache = cache or FeatureCache(model.vision)
    feats = cache.features(refs, progress=False)  # (N, T, C) float16
    out: list[str] = []
    for start in range(0, len(refs), batch_size):
        with autocast(bf16):
            queries = model.qformer.image_queries(feats[start : start + batch_size].float())  # (B, Q, d)
            out += captioner.generate(queries.float(), style, decoding)
    return out
