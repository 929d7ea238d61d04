"""Phase 1b of the caption head: train ``text_adapter`` (f_theta) and the LLM's LoRA on ITG (Eq. 6).

The Q-Former and the vision encoder are frozen in this phase, so the query
outputs ``Z_I`` (B, 32, d) of every training image are computed once
(:class:`QueryTable`) and each step runs the LLM only.

``unifashion train captioning --model RETRIEVAL --data DIR --out MODEL``
writes a checkpoint with the retrieval weights and a ``captioner/`` folder.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.config import CaptionTrainingConfig, LLMConfig
from unifashion.data.captions import style_texts
from unifashion.data.formats import read_split
from unifashion.data.records import DatasetSplit, ImageRef
from unifashion.models.captioner import Captioner, check_style
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable
from unifashion.training.loop import LossLog, autocast, extended_checkpoint, seed_everything, steps_for
from unifashion.training.runner import OptimConfig, StageRunner
from unifashion.training.stages import CaptionStage
from unifashion.utils.errors import DataError


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
        n = table.feats.shape[0]
        chunks = []
        for start in tqdm(range(0, n, batch_size), desc="Q-Former queries", disable=not progress, leave=False):
            with autocast(bf16):
                rows = list(range(start, min(n, start + batch_size)))
                chunks.append(qf.image_queries(table.batch(rows)).to(torch.float16))
        d = qf.config.hidden_size
        queries = torch.cat(chunks) if chunks else torch.zeros(0, qf.num_queries, d, dtype=torch.float16)
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


def train_phase1b_captioner(
    captioner: Captioner,
    items: CaptionItems,
    table: QueryTable,
    cfg: CaptionTrainingConfig,
    log: LossLog,
    *,
    progress: bool = True,
    runner: StageRunner | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """ITG on (Z_I, instruction of a style, caption of that style); only the adapter and LoRA train."""
    for s in cfg.styles:
        check_style(s, captioner.styles)
    captioner.set_trainable(adapter=True, lora=True)
    generator = seed_everything(cfg.seed + 2)
    batch, total = steps_for(len(items), cfg.batch_size, cfg.epochs)
    stage = CaptionStage(captioner, items, table, cfg, batch, total)
    runner = runner or StageRunner(None, log, progress=progress)
    optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.warmup_ratio)
    last = runner.run(stage, optim, generator, log_every=cfg.log_every, resume=resume)
    captioner.eval()
    return last


def train_captioning(
    model_path: str | os.PathLike,
    data_root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    cfg: CaptionTrainingConfig | None = None,
    llm: LLMConfig | None = None,
    fmt: str | None = None,
    split: str = "train",
    progress: bool = True,
) -> dict[str, Any]:
    """Add a caption head to the retrieval checkpoint ``model_path``; write the result to ``out``.

    ``out`` may be ``model_path`` itself; it is replaced in one rename at the
    end, so a crash leaves what was there before."""
    cfg = cfg or CaptionTrainingConfig()
    started = time.perf_counter()
    model = RetrievalModel.from_pretrained(model_path)
    llm = llm or model.config.llm
    data = read_split(data_root, split, fmt)
    table = image_queries(model, [r for p in data.products for r in p.images], FeatureCache(model.vision),
                          bf16=cfg.bf16, progress=progress)  # fmt: skip
    items = caption_items(data, table, cfg.styles)
    captioner = Captioner.build(llm, model.config.qformer.hidden_size)
    out = Path(out)
    live_logs = out.parent / f"{out.name}.logs"
    shutil.rmtree(live_logs, ignore_errors=True)
    prepared = time.perf_counter() - started
    t0 = time.perf_counter()
    last = train_phase1b_captioner(captioner, items, table, cfg, LossLog(live_logs), progress=progress)
    summary = {
        "data": str(data_root),
        "split": split,
        "products": len(items),
        "last": last,
        "trainable_parameters": sum(p.numel() for p in captioner.parameters() if p.requires_grad),
        "prepare_seconds": round(prepared, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    save_with_captioner(model_path, out, captioner, {"captioning": dataclasses.asdict(cfg), "summary": summary},
                        live_logs)  # fmt: skip
    return summary


def save_with_captioner(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    captioner: Captioner,
    training: dict[str, Any],
    logs: Path | None = None,
) -> Path:
    """The retrieval checkpoint ``model_path`` + ``captioner/``, written atomically to ``out``."""
    with extended_checkpoint(model_path, out, replaced={"captioner"}, logs=logs) as (tmp, meta):
        captioner.save_pretrained(tmp / "captioner")
        meta["heads"] = sorted(set(meta.get("heads", [])) | {"captioning"})
        meta["config"]["llm"] = dataclasses.asdict(captioner.config)
        meta.setdefault("training", {})["captioning"] = training
    return Path(out)


def with_lora(llm: LLMConfig, rank: int | None, alpha: int | None) -> LLMConfig:
    """``llm`` with another LoRA rank / alpha (alpha follows the rank at 2x unless given)."""
    if rank is None and alpha is None:
        return llm
    rank = rank or llm.lora_rank
    return replace(llm, lora_rank=rank, lora_alpha=alpha or 2 * rank)
