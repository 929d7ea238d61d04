"""Phase 1 of the paper (Eq. 8): the stages that train each part, and one function to run each.

=========================  ===========================================  =====================================
stage                      trains                                       loss
=========================  ===========================================  =====================================
``phase1a``                Q-Former + queries                           ITC + ITM (Eq. 3-5): ``Phase1aStage``
``phase1b_caption``        caption adapter f_theta + LoRA               ITG (Eq. 6, 11): ``CaptionStage``
``phase1b_vae``            the VAE (``mini``; ``paper`` loads SD's)     L1 + KL: ``VaeStage``
``phase1b_<task>``         image adapter f_zeta + U-Net (+ null cond.)  q2I (Eq. 7, 12): ``UNetStage``
=========================  ===========================================  =====================================

Eq. 8's sum L_cross + L_ITG + L_q2I is trained stage by stage (the official recipe): phase 1a on
its own, then with the Q-Former frozen the caption head and the image heads, whose query outputs
are computed once. Every stage draws its global batch from the runner's generator (``next_batch``)
and computes the loss of its process's shard in ``forward``; ``training/pipeline.py`` runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unifashion.backbones.feature_cache import FeatureTable
from unifashion.backbones.hub import load_state_strict
from unifashion.checkpoint import HEAD_FOLDERS, VAE_FOLDER
from unifashion.config import CaptionTrainingConfig, GenerationTrainingConfig, LLMConfig, RetrievalTrainingConfig
from unifashion.data.synth.attributes import garment_colour
from unifashion.models.captioner import Captioner, check_style
from unifashion.models.generator import Generator, from_pixels, training_schedule, widen_conv_in
from unifashion.models.qformer import itc_loss, itm_loss
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.retrieval import QueryTable
from unifashion.training.data import CaptionItems, InpaintData, PairItems, Text2ImageData, head_batches, pick
from unifashion.training.loop import LossLog, epoch_batches, grouped_epoch_batches, steps_for
from unifashion.training.runner import (
    EpochStage,
    EpochStream,
    OptimConfig,
    StageBase,
    StageRunner,
    device_of,
    run_stage,
)
from unifashion.training.sharded import transformer_blocks
from unifashion.utils.distributed import Shard, gather_rows, shard_token_mean
from unifashion.utils.errors import ConfigError
from unifashion.utils.hardware import autocast

# ---------------------------------------------------------------------------
# phase 1a: retrieval pre-training


class Phase1aStage(EpochStage, nn.Module):
    """ITC + ITM on image-caption pairs; the whole Q-Former trains, the vision encoder is frozen
    (its cached features are the input)."""

    name = "phase1a"

    def __init__(
        self,
        model: RetrievalModel,
        items: PairItems,
        table: FeatureTable,
        cfg: RetrievalTrainingConfig,
        batch_size: int,
        total_steps: int,
    ):
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
        feats = self.table.batch(views).to(device_of(qf))  # (B, N, C), the whole batch: ITM draws from all of it
        text = self.tokenize(texts)
        ids = torch.tensor(rows, device=device_of(qf))
        lo, hi = shard.bounds(len(rows))
        with autocast(self.cfg.bf16, ids.device):
            image_embeds = gather_rows(qf.image_embeddings(feats[lo:hi]), shard)  # (B, Q, e)
            text_embeds = gather_rows(qf.text_embedding(text[lo:hi]), shard)  # (B, e)
            loss_itc, sim = itc_loss(image_embeds, text_embeds, qf.temperature(), ids)
            loss_itm = itm_loss(qf, feats, text, sim.float(), ids, generator, self.cfg.itm_pairs, shard)
            loss = loss_itc + self.cfg.itm_weight * loss_itm
        return {"loss": loss, "itc": loss_itc.detach(), "itm": loss_itm.detach(), "temp": qf.temperature().detach()}


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
    batch, total = steps_for(len(items), cfg.batch_size, cfg.phase1_epochs)
    optim = OptimConfig.of(cfg)
    return run_stage(
        lambda: Phase1aStage(model, items, table, cfg, batch, total),
        optim,
        seed=cfg.seed,
        log_every=cfg.log_every,
        log=log,
        runner=runner,
        progress=progress,
        resume=resume,
    )


# ---------------------------------------------------------------------------
# phase 1b: the caption head (Q-Former frozen)


class CaptionStage(EpochStage, nn.Module):
    """ITG on (Z_I, instruction of a style, caption of that style): adapter + LoRA train."""

    name = "phase1b_caption"

    def __init__(self, captioner, items, table, cfg: CaptionTrainingConfig, batch_size: int, total_steps: int):
        nn.Module.__init__(self)
        self.captioner = captioner
        self.items, self.table, self.cfg = items, table, cfg
        self.total_steps = total_steps
        self.stream = EpochStream(lambda g: epoch_batches(len(items), batch_size, g))
        self.fsdp_units = tuple(transformer_blocks(captioner.llm)) if cfg.fsdp else ()

    def forward(self, rows: list[int], generator: torch.Generator, shard: Shard) -> dict[str, torch.Tensor]:
        items = self.items
        styles = [pick(sorted(items.texts[i]), generator) for i in rows]
        answers = [pick(items.texts[i][s], generator) for i, s in zip(rows, styles, strict=True)]
        queries = self.table.batch([pick(items.views[i], generator) for i in rows]).to(device_of(self.captioner))
        lo, hi = shard.bounds(len(rows))
        with autocast(self.cfg.bf16, queries.device):
            total, tokens = self.captioner.itg_token_loss(queries[lo:hi], styles[lo:hi], answers[lo:hi])
        loss = shard_token_mean(total, tokens, shard)
        return {"loss": loss, "itg": loss.detach()}


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
    batch, total = steps_for(len(items), cfg.batch_size, cfg.epochs)
    optim = OptimConfig.of(cfg)
    last = run_stage(
        lambda: CaptionStage(captioner, items, table, cfg, batch, total),
        optim,
        seed=cfg.seed + 2,
        log_every=cfg.log_every,
        log=log,
        runner=runner,
        progress=progress,
        resume=resume,
    )
    captioner.eval()
    return last


def with_lora(llm: LLMConfig, rank: int | None, alpha: int | None) -> LLMConfig:
    """``llm`` with another LoRA rank / alpha (alpha follows the rank at 2x unless given)."""
    if rank is None and alpha is None:
        return llm
    rank = rank or llm.lora_rank
    return replace(llm, lora_rank=rank, lora_alpha=alpha or 2 * rank)


# ---------------------------------------------------------------------------
# phase 1b: the VAE (mini trains its own; paper loads Stable Diffusion's)


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
        x = x.to(device_of(self.vae))
        with autocast(self.cfg.bf16, x.device):
            posterior = self.vae.encode(x[lo:hi]).latent_dist
            noise = torch.randn((x.shape[0], *posterior.mean.shape[1:]), generator=generator)  # the whole batch's
            z = posterior.mean + posterior.std * noise[lo:hi].to(posterior.mean.device)
            recon = self.vae.decode(z).sample
        rec = F.l1_loss(recon.float(), x[lo:hi].to(recon.device))
        kl = posterior.kl().mean() / x[0].numel()
        return {"loss": rec + self.cfg.vae_kl_weight * kl, "l1": rec.detach(), "kl": kl.detach()}


def train_vae(
    vae: torch.nn.Module,
    pools: list[np.ndarray],
    cfg: GenerationTrainingConfig,
    log: LossLog,
    *,
    progress: bool = True,
    runner: StageRunner | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """``cfg.vae_steps`` steps on batches drawn from ``pools`` (uint8 (N, H, W, 3) arrays, one
    image size each; a pool is picked in proportion to its size), on random ``cfg.vae_crop`` crops."""
    optim = OptimConfig(cfg.vae_lr, 0.0, cfg.warmup_ratio, clip_norm=1.0, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)
    last = run_stage(
        lambda: VaeStage(vae, pools, cfg),
        optim,
        seed=cfg.seed,
        log_every=cfg.log_every,
        log=log,
        runner=runner,
        progress=progress,
        resume=resume,
    )
    vae.eval()
    return last


@torch.no_grad()
def latent_scale(vae: torch.nn.Module, pixels: np.ndarray, batch_size: int = 64) -> float:
    """1 / std of the VAE's latents (SD's ``scaling_factor``) on ``pixels``."""
    chunks = [
        vae.encode(from_pixels(pixels[i : i + batch_size])).latent_dist.mean for i in range(0, len(pixels), batch_size)
    ]
    return float(1.0 / torch.cat(chunks).std().clamp(min=1e-6))


@torch.no_grad()
def vae_colour_fidelity(vae: torch.nn.Module, pixels: np.ndarray, batch_size: int = 64) -> dict[str, float]:
    """Share of images whose measured garment colour survives a VAE round trip, and the mean
    absolute pixel error (0-255)."""
    kept, total, err = 0, 0, 0.0
    for i in range(0, len(pixels), batch_size):
        x = from_pixels(pixels[i : i + batch_size])
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        rec = ((recon + 1) * 127.5).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        err += float(np.abs(rec.astype(np.float32) - pixels[i : i + batch_size]).mean()) * len(x)
        for a, b in zip(pixels[i : i + batch_size], rec, strict=True):
            ca = garment_colour(a)
            if ca is not None:
                kept += ca == garment_colour(b)
                total += 1
    return {
        "colour_kept": round(100.0 * kept / max(1, total), 2),
        "mean_abs_error": round(err / max(1, len(pixels)), 3),
    }


# ---------------------------------------------------------------------------
# phase 1b: the U-Net heads (Q-Former and VAE frozen)


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
        latents, states, mask, extra, kind = (
            x.to(device_of(self.trainable)) if torch.is_tensor(x) else x for x in batch
        )
        with autocast(self.cfg.bf16, latents.device):
            loss = self.generator.q2i_loss(
                latents,
                states,
                mask,
                extra,
                self.schedule,
                generator,
                noisy_share=self.cfg.noisy_share,
                noise_offset=self.cfg.noise_offset,
                min_snr_gamma=self.cfg.min_snr_gamma,
                shard=shard,
            )
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


def train_head(
    model: RetrievalModel,
    generator: Generator,
    data: Text2ImageData | InpaintData,
    steps: int,
    cfg: GenerationTrainingConfig,
    log: LossLog,
    *,
    progress: bool = True,
    runner: StageRunner | None = None,
    resume: bool = False,
    stage: Callable[..., UNetStage] = UNetStage,
) -> dict[str, float]:
    """``steps`` of q2I (Eq. 7) on ``image_adapter`` + U-Net + null condition; VAE and Q-Former frozen.
    The weights end as their exponential moving average (``cfg.ema_decay``; 0 turns it off).
    ``stage`` builds the stage from UNetStage's arguments (a subclass that also measures on the way:
    ``benchmarks/head_levers.py``)."""
    model.eval()
    optim = OptimConfig.of(cfg, clip_norm=1.0)
    # The runner leaves the stage in eval mode (the VAE and U-Net with it).
    return run_stage(
        lambda: stage(generator, head_batches(model, generator, data, cfg), cfg, steps),
        optim,
        seed=cfg.seed,
        log_every=cfg.log_every,
        log=log,
        runner=runner,
        progress=progress,
        resume=resume,
    )


def inpaint_start(source: Path, task: str, cfg: GenerationTrainingConfig) -> Path | None:
    """The text2image head a fresh ``task`` head starts from (``cfg.inpaint_init``), or None."""
    folder = source / HEAD_FOLDERS["text2image"]
    if task == "text2image" or cfg.continue_heads or cfg.inpaint_init != "text2image" or not folder.is_dir():
        return None
    return folder


def start_from_text2image(head: Generator, text2image: Generator) -> None:
    """``head`` (try-on or design) takes the weights of a trained ``text2image`` head: the U-Net with
    its first convolution widened by zero weights for the spatial inputs (so it starts as the
    text2image model, ignoring them), the image adapter and the null condition."""
    theirs, ours = text2image.config, head.config
    if text2image.spec.condition_dim != head.spec.condition_dim or theirs.prediction_type != ours.prediction_type:
        raise ConfigError(
            f"inpaint_init: the text2image head reads {text2image.spec.condition_dim}-wide states and predicts "
            f"{theirs.prediction_type}; this {head.task} head reads {head.spec.condition_dim} and predicts "
            f"{ours.prediction_type}"
        )
    state = widen_conv_in(text2image.unet, head.unet.config.in_channels).state_dict()
    own = head.unet.state_dict()
    shapes = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if shapes:
        raise ConfigError(f"inpaint_init: the text2image U-Net differs from the {head.task} U-Net at {shapes[:3]}")
    load_state_strict(head.unet, state, what=f"inpaint_init: the text2image U-Net as the {head.task} U-Net")
    head.image_adapter.load_state_dict(text2image.image_adapter.state_dict())
    with torch.no_grad():
        head.null_condition.copy_(text2image.null_condition)


def head_to_train(
    source: Path,
    task: str,
    dcfg,
    condition_dim: int,
    hw: tuple[int, int],
    vae: torch.nn.Module,
    latent_scale: float,
    cfg: GenerationTrainingConfig,
) -> Generator:
    """A fresh head for ``task`` on ``vae``, or with ``cfg.continue_heads`` the head of checkpoint
    ``source`` (which must have been trained on that same VAE: the checkpoint's own)."""
    if not cfg.continue_heads:
        beside = task == "tryon" and cfg.tryon_cloth_beside
        cloth_latent = (task == "tryon" and cfg.tryon_cloth_latent) or beside
        head = Generator.build(
            dcfg,
            task,
            condition_dim,
            hw,
            vae=vae,
            latent_scale=latent_scale,
            cloth_latent=cloth_latent,
            cloth_beside=beside,
        )
        start = inpaint_start(source, task, cfg)
        if start is not None:
            start_from_text2image(head, Generator.from_pretrained(start, vae_folder=source / VAE_FOLDER))
        return head
    folder = source / HEAD_FOLDERS[task]
    if not folder.is_dir():
        raise ConfigError(f"continue_heads: {source} has no {task} head ({HEAD_FOLDERS[task]}/) to continue")
    head = Generator.from_pretrained(folder, vae_folder=source / VAE_FOLDER)
    if head.spec.task != task or head.spec.condition_dim != condition_dim:
        raise ConfigError(
            f"continue_heads: {folder} is a {head.spec.task} head on {head.spec.condition_dim}-wide states; "
            f"expected {task} on {condition_dim}"
        )
    head.vae = vae
    return head.train()
