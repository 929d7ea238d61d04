"""``unifashion train retrieval``: phase 1a then phase 2 on one dataset, saved as a checkpoint folder."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.config import ModelConfig, RetrievalTrainingConfig, get_preset
from unifashion.data.formats import read_split
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable, pair_items, triplet_items
from unifashion.training.loop import LossLog, seed_everything
from unifashion.training.phase1 import train_phase1a
from unifashion.training.phase2 import train_phase2


def train_retrieval(
    data_root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str | ModelConfig = "mini",
    cfg: RetrievalTrainingConfig | None = None,
    fmt: str | None = None,
    split: str = "train",
    caption_source: dict[str, list[str]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the retrieval Q-Former on ``split`` of ``data_root`` and save it to ``out``.

    Phase 1a runs when the split has captioned products, phase 2 when it has
    labelled triplets. Losses stream to ``<out>.logs/`` while training and end
    up in ``<out>/logs/``.
    """
    cfg = cfg or RetrievalTrainingConfig()
    config = get_preset(preset) if isinstance(preset, str) else preset
    started = time.perf_counter()
    data = read_split(data_root, split, fmt)
    seed_everything(cfg.seed)  # fresh weights (tiny) are part of the run's seed
    model = RetrievalModel.build(config)
    cache = FeatureCache(model.vision)
    table = FeatureTable.build([r for p in data.products for r in p.images], cache, progress=progress)
    out = Path(out)
    live_logs = out.parent / f"{out.name}.logs"
    shutil.rmtree(live_logs, ignore_errors=True)
    log = LossLog(live_logs)
    summary: dict[str, Any] = {
        "data": str(data_root),
        "split": split,
        "products": len(data.products),
        "triplets": len(data.triplets),
    }
    feature_seconds = time.perf_counter() - started
    if cfg.phase1_epochs > 0 and any(p.captions for p in data.products):
        t0 = time.perf_counter()
        summary["phase1a"] = train_phase1a(model, pair_items(data, table), table, cfg, log, progress=progress)
        summary["phase1a"]["seconds"] = round(time.perf_counter() - t0, 1)
    if cfg.phase2_epochs > 0 and any(t.target for t in data.triplets):
        t0 = time.perf_counter()
        items = triplet_items(data, table, caption_source)
        summary["phase2"] = train_phase2(model, items, table, cfg, log, progress=progress)
        summary["phase2"]["seconds"] = round(time.perf_counter() - t0, 1)
    summary["feature_seconds"] = round(feature_seconds, 1)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    training = {"retrieval": dataclasses.asdict(cfg), "summary": summary}
    model.save_pretrained(out, extra={"training": training})
    if live_logs.exists():
        shutil.copytree(live_logs, out / "logs", dirs_exist_ok=True)
        shutil.rmtree(live_logs, ignore_errors=True)
    return summary
