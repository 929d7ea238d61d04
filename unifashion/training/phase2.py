"""Phase 2: composed fine-tuning of the Q-Former on (reference, text, target) triplets (paper Eq. 10, 13).

L_cir = ITC(e_cls, Z_T) + ITC(e_cls, Z_C) + ITM(t, Z_T), where ``Z_C`` embeds
the target's caption from a pluggable source (ground truth by default;
generated captions once a captioner exists). With the heads of phase 1b
(Eq. 13), ITG of the target caption and q2I of the target image from Z_R
join it, through the frozen LLM and U-Net (see ``stages.Phase2Stage``).
"""

from __future__ import annotations

from unifashion.config import RetrievalTrainingConfig
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable, TripletItems
from unifashion.training.loop import LossLog, seed_everything, steps_for
from unifashion.training.runner import OptimConfig, StageRunner
from unifashion.training.stages import Phase2Stage


def train_phase2(
    model: RetrievalModel,
    items: TripletItems,
    table: FeatureTable,
    cfg: RetrievalTrainingConfig,
    log: LossLog,
    *,
    progress: bool = True,
    runner: StageRunner | None = None,
    resume: bool = False,
    **heads,
) -> dict[str, float]:
    """Train with L_cir (+ the ``heads`` terms, see ``Phase2Stage``) for ``cfg.phase2_epochs`` epochs;
    returns the last losses."""
    generator = seed_everything(cfg.seed + 1)
    batch, total = steps_for(len(items), cfg.batch_size, cfg.phase2_epochs)
    stage = Phase2Stage(model, items, table, cfg, batch, total, **heads)
    runner = runner or StageRunner(None, log, progress=progress)
    optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.warmup_ratio)
    return runner.run(stage, optim, generator, log_every=cfg.log_every, resume=resume)
