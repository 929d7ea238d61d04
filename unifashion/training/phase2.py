"""Phase 2: composed fine-tuning of the Q-Former on (reference, text, target) triplets (paper Eq. 10).

L_cir = ITC(e_cls, Z_T) + ITC(e_cls, Z_C) + ITM(t, Z_T), where ``Z_C`` embeds
the target's caption from a pluggable source (ground truth by default;
generated captions once a captioner exists).
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from unifashion.config import RetrievalTrainingConfig
from unifashion.models.qformer import cir_loss
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable, TripletItems, pick, training_query_text
from unifashion.training.loop import LossLog, PhaseOptimizer, autocast, epoch_batches, seed_everything


def train_phase2(
    model: RetrievalModel,
    items: TripletItems,
    table: FeatureTable,
    cfg: RetrievalTrainingConfig,
    log: LossLog,
    *,
    progress: bool = True,
) -> dict[str, float]:
    """Train with L_cir for ``cfg.phase2_epochs`` epochs; returns the last losses."""
    qf = model.qformer.train()
    generator = seed_everything(cfg.seed + 1)
    opt = PhaseOptimizer.plan(qf, len(items), cfg.phase2_epochs, cfg)
    batch, total = opt.batch_size, opt.total_steps
    bar = tqdm(total=total, desc="phase 2 (L_cir)", disable=not progress, leave=False)
    weights = tuple(cfg.cir_weights)
    last: dict[str, float] = {}
    step = 0
    while step < total:
        for idx in epoch_batches(len(items), batch, generator):
            if step >= total:
                break
            rows = idx.tolist()
            ref = table.batch([pick(items.reference_views[i], generator) for i in rows])
            tgt = table.batch([pick(items.target_views[i], generator) for i in rows])
            text = model.tokenize([training_query_text(items.captions[i], generator) for i in rows])
            caption = model.tokenize([pick(items.target_texts[i], generator) for i in rows])
            target_ids = torch.tensor([items.target_ids[i] for i in rows])
            with autocast(cfg.bf16):
                losses = cir_loss(qf, ref, text, tgt, caption, target_ids, generator, weights, cfg.itm_pairs,
                                  pair_itc_weight=cfg.phase2_pair_itc_weight)  # fmt: skip
            opt.step(losses.total)
            step += 1
            last = {
                "loss": losses.total.item(),
                "itc_target": float(losses.itc_target),
                "itc_caption": float(losses.itc_caption),
                "itm": float(losses.itm),
                "itc_pair": float(losses.itc_pair),
            }
            if step % cfg.log_every == 0 or step == total:
                log.write("phase2", step, step / opt.steps_per_epoch, opt.lr(), **last)
            bar.set_postfix(target=f"{last['itc_target']:.3f}", itm=f"{last['itm']:.3f}")
            bar.update()
    bar.close()
    qf.eval()
    return last
