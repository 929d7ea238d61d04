"""Phase 1a: retrieval pre-training of the Q-Former on image-caption pairs (paper Eq. 3-5).

L_cross = ITC(text, Z_I) + ITM(Z_C, Z_I); the vision encoder stays frozen
(its features come from the cache), everything in the Q-Former trains.
"""

from __future__ import annotations

from tqdm import tqdm

from unifashion.config import RetrievalTrainingConfig
from unifashion.models.qformer import itc_loss, itm_loss
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable, PairItems, pick
from unifashion.training.loop import (
    LossLog,
    PhaseOptimizer,
    autocast,
    epoch_batches,
    grouped_epoch_batches,
    seed_everything,
)


def train_phase1a(
    model: RetrievalModel,
    items: PairItems,
    table: FeatureTable,
    cfg: RetrievalTrainingConfig,
    log: LossLog,
    *,
    progress: bool = True,
) -> dict[str, float]:
    """Train with ITC + ITM for ``cfg.phase1_epochs`` epochs; returns the last losses."""
    qf = model.qformer.train()
    generator = seed_everything(cfg.seed)
    opt = PhaseOptimizer.plan(qf, len(items), cfg.phase1_epochs, cfg)
    batch, total = opt.batch_size, opt.total_steps
    bar = tqdm(total=total, desc="phase 1a (ITC + ITM)", disable=not progress, leave=False)
    last: dict[str, float] = {}
    step = 0
    while step < total:
        if cfg.category_batches > 0:
            batches = grouped_epoch_batches(items.categories, batch, generator, cfg.category_batches)
        else:
            batches = epoch_batches(len(items), batch, generator)
        for idx in batches:
            if step >= total:
                break
            views = [pick(items.views[i], generator) for i in idx.tolist()]
            texts = [pick(items.texts[i], generator) for i in idx.tolist()]
            feats = table.batch(views)  # (B, N, C)
            text = model.tokenize(texts)
            with autocast(cfg.bf16):
                image_embeds = qf.image_embeddings(feats)  # (B, Q, e)
                text_embeds = qf.text_embedding(text)  # (B, e)
                loss_itc, sim = itc_loss(image_embeds, text_embeds, qf.temperature(), idx)
                loss_itm = itm_loss(qf, feats, text, sim.float(), idx, generator, cfg.itm_pairs)
                loss = loss_itc + cfg.itm_weight * loss_itm
            opt.step(loss)
            step += 1
            last = {"loss": loss.item(), "itc": loss_itc.item(), "itm": loss_itm.item()}
            if step % cfg.log_every == 0 or step == total:
                log.write(
                    "phase1a",
                    step,
                    step / opt.steps_per_epoch,
                    opt.lr(),
                    **last,
                    temp=qf.temperature().item(),
                )
            bar.set_postfix(itc=f"{last['itc']:.3f}", itm=f"{last['itm']:.3f}")
            bar.update()
    bar.close()
    qf.eval()
    return last
