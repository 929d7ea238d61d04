"""Captions for images: a checkpoint's caption head on the query outputs Z_I of the images, in batches."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.checkpoint import CAPTION_FOLDER
from unifashion.data.records import ImageRef
from unifashion.models.captioner import Captioner, Decoding
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.retrieval import image_queries
from unifashion.utils.errors import UniFashionError
from unifashion.utils.hardware import autocast

# Rows decoded together; a row leaves the batch when it has written its end token (Decoding.prune).
# On a trained `small` head's 205 val products (benchmarks/caption_generation.py --model ... --data
# ... --max-items 205, 2 cores, fp32) pruning made batch 32 1.25x faster and batch 64 1.27x, batch
# 128 1.38x, each caption the same; 64 keeps the KV cache of a 7B caption head's batch small.
CAPTION_BATCH = 64


def load_captioning_model(path: str | os.PathLike) -> tuple[RetrievalModel, Captioner]:
    """The Q-Former side and the caption head of checkpoint ``path``."""
    folder = Path(path)
    model = RetrievalModel.from_pretrained(folder)
    if not (folder / CAPTION_FOLDER).is_dir():
        raise UniFashionError(
            f"{folder}: no caption head (captioner/); train one with `unifashion train captioning --model {folder} ...`"
        )
    return model, Captioner.from_pretrained(folder / CAPTION_FOLDER)


@torch.no_grad()
def generate_captions(
    captioner: Captioner,
    queries: torch.Tensor,
    style: str,
    decoding: Decoding | None = None,
    *,
    batch_size: int = CAPTION_BATCH,
    bf16: bool = True,
    progress: bool = True,
) -> list[str]:
    """One caption of ``style`` per row of ``queries`` (N, Q, d), in batches."""
    out: list[str] = []
    n = queries.shape[0]
    for start in tqdm(range(0, n, batch_size), desc=f"captions ({style})", disable=not progress, leave=False):
        device = next(captioner.parameters()).device
        with autocast(bf16, device):
            out += captioner.generate(queries[start : start + batch_size].to(device, torch.float32), style, decoding)
    return out


def caption_images(
    model: RetrievalModel,
    captioner: Captioner,
    images: Sequence[str | os.PathLike | ImageRef],
    style: str = "description",
    decoding: Decoding | None = None,
    *,
    batch_size: int = CAPTION_BATCH,
    bf16: bool = True,
    cache: FeatureCache | None = None,
) -> list[str]:
    """One caption per image (the same path as the evaluation); unreadable images raise a
    :class:`DataError` naming the file."""
    refs = [im if isinstance(im, ImageRef) else ImageRef(os.fspath(im)) for im in images]
    for ref in refs:
        ref.verify()
    table = image_queries(model, refs, cache or FeatureCache(model.vision), bf16=bf16, progress=False)
    queries = table.batch(table.rows(tuple(refs)))  # (N, Q, d)
    return generate_captions(captioner, queries, style, decoding, batch_size=batch_size, bf16=bf16, progress=False)
