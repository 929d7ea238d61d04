"""Phase 2 of the paper: composed fine-tuning on (reference, text, target) triplets (Eq. 10, 13).

L_cir = ITC(e_cls, Z_T) + ITC(e_cls, Z_C) + ITM(t, Z_T) (Eq. 10, ``models.qformer.cir_loss``), where
``Z_C`` embeds the target's caption. With the frozen heads of phase 1b, Eq. 13 adds ITG of the
target caption and q2I of the target image, both from Z_R (``Phase2Stage.forward`` sums the terms);
each target text is answered to its own style's instruction (a title to the title one). Beyond the
paper, ``itg_image_rows`` adds ITG of the target's text from the target image alone (Eq. 6 again, the
path plain captioning takes), so that captions survive phase 2 (``benchmarks/phase2_levers.py``).
The LLM (with its LoRA), the U-Net and the VAE stay frozen; the Q-Former and both adapters train
(``itg_adapter=False``: the caption adapter stays frozen too).
"""

from __future__ import annotations

import torch
from torch import nn

from unifashion.backbones.feature_cache import FeatureTable
from unifashion.config import RetrievalTrainingConfig
from unifashion.models.generator import Generator, training_schedule
from unifashion.models.qformer import BIDIRECTIONAL, cir_loss
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import TripletItems, pick, training_query_text
from unifashion.training.loop import LossLog, epoch_batches, steps_for
from unifashion.training.runner import EpochStage, EpochStream, OptimConfig, StageRunner, device_of, run_stage
from unifashion.utils.distributed import Shard, shard_token_mean
from unifashion.utils.hardware import autocast


class Phase2Stage(EpochStage, nn.Module):
    """L_cir on (reference, text, target) triplets (Eq. 10), plus, when the heads are given (Eq. 13),
    ITG of the target's caption and q2I of the target image, both from Z_R through the frozen LLM /
    U-Net. Trains the Q-Former and the adapters f_theta and f_zeta."""

    name = "phase2"

    def __init__(
        self,
        model: RetrievalModel,
        items: TripletItems,
        table: FeatureTable,
        cfg: RetrievalTrainingConfig,
        batch_size: int,
        total_steps: int,
        *,
        captioner=None,
        image_head: Generator | None = None,
        latents: torch.Tensor | None = None,
        latent_rows: dict[str, int] | None = None,
        itg_rows: int = 8,
        q2i_rows: int = 16,
        itg_weight: float = 1.0,
        q2i_weight: float = 1.0,
        itg_adapter: bool = True,
        itg_image_rows: int = 0,
    ):
        nn.Module.__init__(self)
        self.qformer = model.qformer
        self.tokenize = model.tokenize
        self.items, self.table, self.cfg = items, table, cfg
        self.total_steps = total_steps
        self.stream = EpochStream(lambda g: epoch_batches(len(items), batch_size, g))
        self.captioner = captioner
        self.image_head = image_head
        if captioner is not None:
            captioner.set_trainable(adapter=itg_adapter, lora=False)
        if image_head is not None:
            image_head.unet.requires_grad_(False)
            image_head.vae.requires_grad_(False)
            image_head.null_condition.requires_grad_(False)
            self.schedule = training_schedule(image_head.config)
        self.latents = latents
        # feature-table row of a target image -> its row in ``latents``
        self.latent_of = {table.index[key]: r for key, r in (latent_rows or {}).items() if key in table.index}
        self.itg_rows, self.q2i_rows = itg_rows, q2i_rows
        self.itg_weight, self.q2i_weight = itg_weight, q2i_weight
        self.itg_image_rows = itg_image_rows if captioner is not None else 0

    def train(self, mode: bool = True):
        """The frozen LLM, U-Net and VAE stay in eval mode (no dropout in what does not train)."""
        super().train(mode)
        if self.captioner is not None:
            self.captioner.llm.eval()
        if self.image_head is not None:
            self.image_head.unet.eval()
            self.image_head.vae.eval()
        return self

    def forward(self, rows: list[int], generator: torch.Generator, shard: Shard) -> dict[str, torch.Tensor]:
        qf, items, table = self.qformer, self.items, self.table
        ref_views = [pick(items.reference_views[i], generator) for i in rows]
        tgt_views = [pick(items.target_views[i], generator) for i in rows]
        queries = [training_query_text(items.captions[i], generator) for i in rows]
        captions = [pick(items.target_texts[i], generator) for i in rows]
        ref, tgt = table.batch(ref_views).to(device_of(qf)), table.batch(tgt_views).to(device_of(qf))
        text, caption = self.tokenize(queries), self.tokenize(captions)
        target_ids = torch.tensor([items.target_ids[i] for i in rows], device=device_of(qf))
        with autocast(self.cfg.bf16, device_of(qf)):
            losses = cir_loss(
                qf,
                ref,
                text,
                tgt,
                caption,
                target_ids,
                generator,
                tuple(self.cfg.cir_weights),
                self.cfg.itm_pairs,
                pair_itc_weight=self.cfg.phase2_pair_itc_weight,
                shard=shard,
            )
        out = {
            "itc_target": losses.itc_target,
            "itc_caption": losses.itc_caption,
            "itm": losses.itm,
            "itc_pair": losses.itc_pair,
        }
        total = losses.total
        if self.captioner is not None:  # from Z_R (Eq. 13)
            itg = self._itg(lambda s: qf.joint(ref[s], text[s], BIDIRECTIONAL)[0], self.itg_rows, rows, captions, shard)
            total = total + self.itg_weight * itg
            out["itg"] = itg.detach()
        if self.itg_image_rows > 0:  # from the target image alone (Eq. 6)
            itg_image = self._itg(lambda s: qf.image_queries(tgt[s]), self.itg_image_rows, rows, captions, shard)
            total = total + self.itg_weight * itg_image
            out["itg_image"] = itg_image.detach()
        if self.image_head is not None and self.latents is not None:
            n = min(self.q2i_rows, len(rows)) // shard.world * shard.world
            latents = self.latents[[self.latent_of[v] for v in tgt_views[:n]]].to(device_of(qf))
            with autocast(self.cfg.bf16, device_of(qf)):
                z_r, _ = qf.joint(ref[:n], text[:n], BIDIRECTIONAL)
                q2i = self.image_head.q2i_loss(latents, z_r.float(), None, None, self.schedule, generator, shard=shard)
            total = total + self.q2i_weight * q2i
            out["q2i"] = q2i.detach()
        out["loss"] = total
        return out

    def _itg(self, queries_of, count: int, rows: list[int], captions: list[str], shard: Shard) -> torch.Tensor:
        """ITG of the target texts of the batch's first ``count`` rows (this process's share ``s`` of
        them, with query outputs ``queries_of(s)``), each in its own style: the batch's token mean."""
        sub = slice(*shard.bounds(min(count, len(rows)) // shard.world * shard.world))
        with autocast(self.cfg.bf16, device_of(self.qformer)):
            queries = queries_of(sub)
            styles = [self.items.caption_style(i, c) for i, c in zip(rows[sub], captions[sub], strict=True)]
            total, tokens = self.captioner.itg_token_loss(queries, styles, captions[sub])
        return shard_token_mean(total, tokens, shard)


def trained_modules(model: RetrievalModel, captioner=None, image_head: Generator | None = None) -> list[nn.Module]:
    """What phase 2 can change: the Q-Former and the adapters of the heads it is given."""
    modules: list[nn.Module] = [model.qformer]
    if captioner is not None:
        modules.append(captioner.text_adapter)
    if image_head is not None:
        modules.append(image_head.image_adapter)
    return modules


def weights_of(modules: list[nn.Module]) -> list[dict[str, torch.Tensor]]:
    """A copy of every tensor of ``modules``' state."""
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def blend_weights(modules: list[nn.Module], before: list[dict[str, torch.Tensor]], keep: float) -> None:
    """Weight-space ensembling of phase 2 with the model it started from (WiSE-FT, Wortsman et al.,
    2022), in place: every floating tensor of ``modules`` becomes ``before + keep * (now - before)``
    (``keep`` 1: as trained; 0: as before)."""
    with torch.no_grad():
        for module, start in zip(modules, before, strict=True):
            for name, now in module.state_dict().items():
                if now.is_floating_point():
                    now.copy_(torch.lerp(start[name].to(now), now, keep))


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
    batch, total = steps_for(len(items), cfg.batch_size, cfg.phase2_epochs)
    optim = OptimConfig.of(cfg, lr=cfg.phase2_lr)
    return run_stage(
        lambda: Phase2Stage(model, items, table, cfg, batch, total, **heads),
        optim,
        seed=cfg.seed + 1,
        log_every=cfg.log_every,
        log=log,
        runner=runner,
        progress=progress,
        resume=resume,
    )
