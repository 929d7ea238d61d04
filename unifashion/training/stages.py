"""The training stages of the paper's two phases, each an ``nn.Module`` run by :class:`StageRunner`.

=========================  ===========================================  ==========================================
stage                      trains                                       loss
=========================  ===========================================  ==========================================
``phase1a``                Q-Former + queries                           ITC + ITM (Eq. 3-5)
``phase1b_caption``        caption adapter f_theta + LoRA               ITG (Eq. 6)
``phase1b_vae``            the VAE (``mini``; ``paper`` loads SD's)     L1 + KL
``phase1b_<task>``         image adapter f_zeta + U-Net (+ null cond.)  q2I (Eq. 7)
``phase2``                 Q-Former + both adapters                     L_cir (+ ITG + q2I through frozen heads)
=========================  ===========================================  ==========================================

Every stage draws its global batch from the runner's generator
(``next_batch``) and computes the loss of its process's shard in ``forward``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unifashion.config import CaptionTrainingConfig, GenerationTrainingConfig, RetrievalTrainingConfig
from unifashion.models.generator import Generator, from_pixels, training_schedule
from unifashion.models.qformer import BIDIRECTIONAL, cir_loss, itc_loss, itm_loss
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable, PairItems, TripletItems, pick, training_query_text
from unifashion.training.loop import autocast, epoch_batches, grouped_epoch_batches
from unifashion.training.runner import EpochStream, StageBase
from unifashion.utils.distributed import Shard, gather_rows


def _device(module: nn.Module) -> torch.device:
    """Where ``module``'s weights are (batches are drawn on the CPU and moved there)."""
    return next(module.parameters()).device


class EpochStage(StageBase):
    """A stage whose global batches are rows of shuffled epochs (``self.stream``), resumable mid-epoch."""

    stream: EpochStream

    def next_batch(self, generator: torch.Generator) -> list[int]:
        return self.stream.next(generator)

    def state(self):
        return {}, self.stream.state()

    def load_state(self, tensors, meta) -> None:
        self.stream.load_state(meta)


# ---------------------------------------------------------------------------
# phase 1a


class Phase1aStage(EpochStage, nn.Module):
    """ITC + ITM on image-caption pairs; the whole Q-Former trains, the vision encoder is frozen
    (its cached features are the input)."""

    name = "phase1a"

    def __init__(self, model: RetrievalModel, items: PairItems, table: FeatureTable, cfg: RetrievalTrainingConfig,
                 batch_size: int, total_steps: int):  # fmt: skip
        nn.Module.__init__(self)
        self.qformer = model.qformer
        self.tokenize = model.tokenize
        self.items, self.table, self.cfg = items, table, cfg
        self.total_steps = total_steps
        share = cfg.category_batches
        self.stream = EpochStream(
            lambda g: (
                grouped_epoch_batches(items.categories, batch_size, g, share)
                if share > 0
                else epoch_batches(len(items), batch_size, g)
            )
        )

    def forward(self, rows: list[int], generator: torch.Generator, shard: Shard) -> dict[str, torch.Tensor]:
        qf, items = self.qformer, self.items
        views = [pick(items.views[i], generator) for i in rows]
        texts = [pick(items.texts[i], generator) for i in rows]
        feats = self.table.batch(views).to(_device(qf))  # (B, N, C), the whole batch: ITM draws from all of it
        text = self.tokenize(texts)
        ids = torch.tensor(rows, device=_device(qf))
        lo, hi = shard.bounds(len(rows))
        with autocast(self.cfg.bf16):
            image_embeds = gather_rows(qf.image_embeddings(feats[lo:hi]), shard)  # (B, Q, e)
            text_embeds = gather_rows(qf.text_embedding(text[lo:hi]), shard)  # (B, e)
            loss_itc, sim = itc_loss(image_embeds, text_embeds, qf.temperature(), ids)
            loss_itm = itm_loss(qf, feats, text, sim.float(), ids, generator, self.cfg.itm_pairs, shard)
            loss = loss_itc + self.cfg.itm_weight * loss_itm
        return {"loss": loss, "itc": loss_itc.detach(), "itm": loss_itm.detach(), "temp": qf.temperature().detach()}


# ---------------------------------------------------------------------------
# phase 1b: the caption head


class CaptionStage(EpochStage, nn.Module):
    """ITG on (Z_I, instruction of a style, caption of that style): adapter + LoRA train."""

    name = "phase1b_caption"

    def __init__(self, captioner, items, table, cfg: CaptionTrainingConfig, batch_size: int, total_steps: int):
        nn.Module.__init__(self)
        self.captioner = captioner
        self.items, self.table, self.cfg = items, table, cfg
        self.total_steps = total_steps
        self.stream = EpochStream(lambda g: epoch_batches(len(items), batch_size, g))

    def forward(self, rows: list[int], generator: torch.Generator, shard: Shard) -> dict[str, torch.Tensor]:
        items = self.items
        styles = [pick(sorted(items.texts[i]), generator) for i in rows]
        answers = [pick(items.texts[i][s], generator) for i, s in zip(rows, styles, strict=True)]
        queries = self.table.batch([pick(items.views[i], generator) for i in rows]).to(_device(self.captioner))
        lo, hi = shard.bounds(len(rows))
        with autocast(self.cfg.bf16):
            loss = self.captioner.itg_loss(queries[lo:hi], styles[lo:hi], answers[lo:hi])
        return {"loss": loss, "itg": loss.detach()}


# ---------------------------------------------------------------------------
# phase 1b: the VAE and the U-Net heads


class EMA:
    """Exponential moving average of a module's trainable weights (what sampling uses)."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in module.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        for k, p in module.named_parameters():
            if k in self.shadow:
                p.copy_(self.shadow[k])

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {f"ema.{k}": v for k, v in self.shadow.items()}, {"ema_updates": self.updates}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.shadow = {k: tensors[f"ema.{k}"].clone() for k in self.shadow}
        self.updates = int(meta["ema_updates"])


class VaeStage(StageBase, nn.Module):
    """The VAE on random crops of images drawn from ``pools`` (uint8 (N, H, W, 3) arrays, one image
    size each; a pool is picked in proportion to its size): L1 + a small KL term."""

    name = "phase1b_vae"

    def __init__(self, vae: nn.Module, pools: list[np.ndarray], cfg: GenerationTrainingConfig):
        nn.Module.__init__(self)
        self.vae = vae
        self.pools = [p for p in pools if len(p)]
        self.sizes = torch.tensor([len(p) for p in self.pools], dtype=torch.float)
        self.cfg = cfg
        self.total_steps = cfg.vae_steps

    def next_batch(self, generator: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        pool = self.pools[int(torch.multinomial(self.sizes, 1, generator=generator))]
        idx = torch.randint(0, len(pool), (min(cfg.vae_batch_size, len(pool)),), generator=generator).numpy()
        x = from_pixels(pool[idx])
        c = cfg.vae_crop
        if c and c < min(x.shape[-2:]):
            top = int(torch.randint(0, x.shape[-2] - c + 1, (1,), generator=generator))
            left = int(torch.randint(0, x.shape[-1] - c + 1, (1,), generator=generator))
            x = x[..., top : top + c, left : left + c]
        if torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(-1)
        return x

    def forward(self, x: torch.Tensor, generator: torch.Generator, shard: Shard) -> dict[str, torch.Tensor]:
        lo, hi = shard.bounds(x.shape[0])
        x = x.to(_device(self.vae))
        with autocast(self.cfg.bf16):
            posterior = self.vae.encode(x[lo:hi]).latent_dist
            noise = torch.randn((x.shape[0], *posterior.mean.shape[1:]), generator=generator)  # the whole batch's
            z = posterior.mean + posterior.std * noise[lo:hi].to(posterior.mean.device)
            recon = self.vae.decode(z).sample
        rec = F.l1_loss(recon.float(), x[lo:hi].to(recon.device))
        kl = posterior.kl().mean() / x[0].numel()
        return {"loss": rec + self.cfg.vae_kl_weight * kl, "l1": rec.detach(), "kl": kl.detach()}


class UNetStage(StageBase, nn.Module):
    """q2I (Eq. 7) on ``image_adapter`` + U-Net + null condition of one head; VAE and Q-Former frozen.
    ``draw(generator)`` gives a global batch (target latents, Q-Former states, their mask, the
    spatial input or None, the kind of condition). The weights end as their EMA."""

    def __init__(self, generator: Generator, draw, cfg: GenerationTrainingConfig, total_steps: int):
        nn.Module.__init__(self)
        self.generator = generator
        generator.vae.requires_grad_(False).eval()
        self.trainable = nn.ModuleDict({"adapter": generator.image_adapter, "unet": generator.unet})
        self.trainable.register_parameter("null_condition", generator.null_condition)
        self.name = f"phase1b_{generator.task}"
        self.draw, self.cfg = draw, cfg
        self.total_steps = total_steps
        self.schedule = training_schedule(generator.config)
        self.ema = EMA(self.trainable, cfg.ema_decay) if cfg.ema_decay > 0 else None

    def next_batch(self, generator: torch.Generator):
        return self.draw(generator)

    def train(self, mode: bool = True):
        super().train(mode)
        self.generator.vae.eval()
        return self

    def forward(self, batch, generator: torch.Generator, shard: Shard) -> dict[str, torch.Tensor]:
        latents, states, mask, extra, kind = (x.to(_device(self.trainable)) if torch.is_tensor(x) else x for x in batch)
        with autocast(self.cfg.bf16):
            loss = self.generator.q2i_loss(latents, states, mask, extra, self.schedule, generator,
                                           noisy_share=self.cfg.noisy_share,
                                           noise_offset=self.cfg.noise_offset, shard=shard)  # fmt: skip
        return {"loss": loss, f"q2i_{kind}": loss.detach()}

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.trainable)

    def state(self):
        return self.ema.state() if self.ema is not None else ({}, {})

    def load_state(self, tensors, meta) -> None:
        if self.ema is not None:
            self.ema.load_state(tensors, meta)

    def finish(self) -> None:
        if self.ema is not None:
            self.ema.copy_to(self.trainable)


# ---------------------------------------------------------------------------
# phase 2


class Phase2Stage(EpochStage, nn.Module):
    """L_cir on (reference, text, target) triplets (Eq. 10), plus, when the heads are given (Eq. 13),
    ITG of the target's caption and q2I of the target image, both from Z_R through the frozen LLM /
    U-Net. Trains the Q-Former and the adapters f_theta and f_zeta."""

    name = "phase2"

    def __init__(self, model: RetrievalModel, items: TripletItems, table: FeatureTable, cfg: RetrievalTrainingConfig,
                 batch_size: int, total_steps: int, *, captioner=None, image_head: Generator | None = None,
                 latents: torch.Tensor | None = None, latent_rows: dict[str, int] | None = None,
                 itg_rows: int = 8, q2i_rows: int = 16, itg_weight: float = 1.0, q2i_weight: float = 1.0):  # fmt: skip
        nn.Module.__init__(self)
        self.qformer = model.qformer
        self.tokenize = model.tokenize
        self.items, self.table, self.cfg = items, table, cfg
        self.total_steps = total_steps
        self.stream = EpochStream(lambda g: epoch_batches(len(items), batch_size, g))
        self.captioner = captioner
        self.image_head = image_head
        if captioner is not None:
            captioner.set_trainable(adapter=True, lora=False)
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
        ref, tgt = table.batch(ref_views).to(_device(qf)), table.batch(tgt_views).to(_device(qf))
        text, caption = self.tokenize(queries), self.tokenize(captions)
        target_ids = torch.tensor([items.target_ids[i] for i in rows], device=_device(qf))
        with autocast(self.cfg.bf16):
            losses = cir_loss(qf, ref, text, tgt, caption, target_ids, generator, tuple(self.cfg.cir_weights),
                              self.cfg.itm_pairs, pair_itc_weight=self.cfg.phase2_pair_itc_weight, shard=shard)  # fmt: skip
        out = {"itc_target": losses.itc_target, "itc_caption": losses.itc_caption, "itm": losses.itm,
               "itc_pair": losses.itc_pair}  # fmt: skip
        total = losses.total
        if self.captioner is not None:
            k = shard.bounds(min(self.itg_rows, len(rows)) // shard.world * shard.world)
            sub = slice(*k)
            with autocast(self.cfg.bf16):
                z_r, _ = qf.joint(ref[sub], text[sub], BIDIRECTIONAL)
                itg = self.captioner.itg_loss(z_r, ["description"] * z_r.shape[0], captions[sub])
            total = total + self.itg_weight * itg
            out["itg"] = itg.detach()
        if self.image_head is not None and self.latents is not None:
            n = min(self.q2i_rows, len(rows)) // shard.world * shard.world
            latents = self.latents[[self.latent_of[v] for v in tgt_views[:n]]].to(_device(qf))
            with autocast(self.cfg.bf16):
                z_r, _ = qf.joint(ref[:n], text[:n], BIDIRECTIONAL)
                q2i = self.image_head.q2i_loss(latents, z_r.float(), None, None, self.schedule, generator,
                                               shard=shard)  # fmt: skip
            total = total + self.q2i_weight * q2i
            out["q2i"] = q2i.detach()
        out["loss"] = total
        return out
