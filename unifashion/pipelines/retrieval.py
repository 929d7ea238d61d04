"""Frozen image features -> Q-Former outputs, in batches: the one home of that step.

- ``image_queries``: the query outputs Z_I (N, Q, d) of Eq. 2, the input of the caption head;
- ``encode_images``: their normalised ITC projections (N, Q, e), what an image is matched by (Eq. 3);
- ``encode_texts``: the text path's normalised embedding (N, e);
- ``encode_composed``: Eq. 9's e_cls over a reference image and a modification text (N, e);
- ``itm_scores``: the match head's log-odds for (image, text) pairs (Eq. 4).

Evaluation, the catalog, the service and the caption pipeline all go through these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.data.records import ImageRef
from unifashion.models.retrieval import RetrievalModel
from unifashion.utils.hardware import autocast


def _in_batches(
    fn,
    n: int,
    batch_size: int,
    bf16: bool,
    empty: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    desc: str | None = None,
) -> torch.Tensor:
    """``fn(start, stop)`` over ``range(n)`` in batches, under autocast for the model's ``device``,
    concatenated in ``dtype`` on the CPU."""
    out = []
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        with autocast(bf16, device):
            out.append(fn(start, min(n, start + batch_size)).to("cpu", dtype))
    return torch.cat(out) if out else empty


def _table_rows(table: FeatureTable, start: int, stop: int) -> torch.Tensor:
    return table.batch(list(range(start, stop)))  # (B, T, C)


@dataclass
class QueryTable:
    """Frozen Q-Former query outputs Z_I (N, Q, d) in float16, one row per distinct image."""

    index: dict[str, int]
    queries: torch.Tensor

    @classmethod
    @torch.no_grad()
    def build(
        cls, model: RetrievalModel, table: FeatureTable, batch_size: int = 128, bf16: bool = True, progress: bool = True
    ) -> QueryTable:
        qf = model.qformer.eval()
        empty = torch.zeros(0, qf.num_queries, qf.config.hidden_size, dtype=torch.float16)
        queries = _in_batches(
            lambda a, b: qf.image_queries(_table_rows(table, a, b)),
            table.feats.shape[0],
            batch_size,
            bf16,
            empty,
            device=qf.device,
            dtype=torch.float16,
            progress=progress,
            desc="Q-Former queries",
        )
        return cls(dict(table.index), queries)

    def rows(self, refs: tuple[ImageRef, ...]) -> list[int]:
        return [self.index[str(r)] for r in refs]

    def batch(self, rows: list[int]) -> torch.Tensor:
        return self.queries[torch.as_tensor(rows, dtype=torch.long)].float()


def image_queries(
    model: RetrievalModel, refs: list[ImageRef], cache: FeatureCache, *, bf16: bool = True, progress: bool = True
) -> QueryTable:
    """Z_I of every image in ``refs`` (frozen features from the on-disk cache)."""
    return QueryTable.build(model, FeatureTable.build(refs, cache, progress=progress), bf16=bf16, progress=progress)


@dataclass
class EncodedImages:
    table: FeatureTable
    embeds: torch.Tensor  # (M, Q, e) normalised query projections
    vectors: torch.Tensor  # (M, e) their normalised mean: one vector per image (image-only baseline)


@torch.no_grad()
def encode_images(
    model: RetrievalModel, table: FeatureTable, batch_size: int = 128, bf16: bool = True, progress: bool = False
) -> EncodedImages:
    qf = model.qformer.eval()
    empty = torch.zeros(0, qf.num_queries, qf.config.embed_dim)
    embeds = _in_batches(
        lambda a, b: qf.image_embeddings(_table_rows(table, a, b)),
        table.feats.shape[0],
        batch_size,
        bf16,
        empty,
        device=qf.device,
        progress=progress,
        desc="image embeddings",
    )
    return EncodedImages(table, embeds, F.normalize(embeds.mean(dim=1), dim=-1))


@torch.no_grad()
def encode_texts(model: RetrievalModel, texts: list[str], batch_size: int = 128, bf16: bool = True) -> torch.Tensor:
    qf = model.qformer
    return _in_batches(
        lambda a, b: qf.text_embedding(model.tokenize(texts[a:b])),
        len(texts),
        batch_size,
        bf16,
        torch.zeros(0, qf.config.embed_dim),
        device=qf.device,
    )


@torch.no_grad()
def encode_composed(
    model: RetrievalModel, feats: torch.Tensor, texts: list[str], batch_size: int = 64, bf16: bool = True
) -> torch.Tensor:
    qf = model.qformer
    return _in_batches(
        lambda a, b: qf.composed_embedding(feats[a:b].float(), model.tokenize(texts[a:b])),
        len(texts),
        batch_size,
        bf16,
        torch.zeros(0, qf.config.embed_dim),
        device=qf.device,
    )


@torch.no_grad()
def itm_scores(
    model: RetrievalModel,
    feats: torch.Tensor,
    texts: list[str],
    batch_size: int = 64,
    bf16: bool = True,
    by_length: bool = True,
) -> np.ndarray:
    """ITM log-odds of a match, log p(match) - log p(no match), for each (image features, text) pair.

    With ``by_length`` (off only to measure it), pairs are batched in order of their texts' token
    counts, so a batch pads its texts to about their own length rather than to the longest of a
    random draw; the scores come back in the order given."""
    if not texts:
        return np.zeros(0, dtype=np.float32)
    if by_length:
        order = np.argsort(model.tokenize(texts).attention_mask.sum(dim=1).cpu().numpy(), kind="stable")
    else:
        order = np.arange(len(texts))
    ordered_texts = [texts[i] for i in order]
    feats = feats[torch.as_tensor(order)]
    logits = _in_batches(
        lambda a, b: model.qformer.itm_logits(feats[a:b].float(), model.tokenize(ordered_texts[a:b])),
        len(texts),
        batch_size,
        bf16,
        torch.zeros(0, 2),
        device=model.qformer.device,
    )
    out = np.empty(len(texts), dtype=np.float32)
    out[order] = (logits[:, 1] - logits[:, 0]).numpy()
    return out
