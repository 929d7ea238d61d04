"""Phase 1a: retrieval pre-training of the Q-Former on image-caption pairs (paper Eq. 3-5).

L_cross = ITC(text, Z_I) + ITM(Z_C, Z_I); the vision encoder stays frozen
(its features come from the cache), everything in the Q-Former trains.
"""

from __future__ import annotations

from unifashion.config import RetrievalTrainingConfig
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable, PairItems
from unifashion.training.loop import LossLog, seed_everything, steps_for
from unifashion.training.runner import OptimConfig, StageRunner
from unifashion.training.stages import Phase1aStage


def train_phase1a(
    model: RetrievalModel,
    items: PairItems,
    table: FeatureTable,
    cfg: RetrievalTrainingConfig,
    log: LossLog,
    *,
    progress: bool = True,
    runner: StageRunner | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Train with ITC + ITM for ``cfg.phase1_epochs`` epochs; returns the last losses."""
    generator = seed_everything(cfg.seed)
    batch, total = steps_for(len(items), cfg.batch_size, cfg.phase1_epochs)
    stage = Phase1aStage(model, items, table, cfg, batch, total)
    runner = runner or StageRunner(None, log, progress=progress)
    optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.warmup_ratio)
    return runner.run(stage, optim, generator, log_every=cfg.log_every, resume=resume)
