"""The image head (paper 3.1.2, Eq. 7 and 12): a latent-diffusion U-Net conditioned on the Q-Former.

Read top to bottom:

1. the parts: a VAE (``AutoencoderKL``) that maps pixels to a small latent
   grid, a ``UNet2DConditionModel`` that predicts noise in that grid, and the
   ``image_adapter`` (f_zeta) that maps Q-Former outputs to the U-Net's
   cross-attention width;
2. the conditions, all sequences of Q-Former outputs (B, N, d): text only
   (the text path's token outputs), image only (Z_I, the 32 query outputs)
   and composed (Z_R of Eq. 9: reference image + guidance text);
3. the loss (Eq. 7): noise prediction, with the condition replaced by a
   learned null condition at a fixed rate so that classifier-free guidance
   works at sampling time;
4. the samplers: PLMS (the paper's), DDIM and DPM-Solver++, each a diffusers
   scheduler driven by the one loop in :meth:`Generator.sample`.

Three tasks share this class, they differ only in what the U-Net reads
besides the noisy latent (``Generator.extra_channels``):

- ``text2image``: nothing (guided generation and editing);
- ``tryon``: the agnostic person's latent, the inpainting mask and 18 pose
  heatmaps (Paint-by-Example style; the garment enters through the
  Q-Former queries of the cloth image), and with ``cloth_latent`` also the
  cloth image's own latent (CatVTON's point: the garment's colours and
  pattern, which 32 query tokens carry only coarsely, reach the U-Net at
  every position);
- ``design``: the same plus the garment sketch (MGD style; the text
  describing the garment is the condition).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unifashion.checkpoint import VAE_FOLDER
from unifashion.config import DiffusionConfig
from unifashion.models.adapters import QueryAdapter
from unifashion.utils.errors import ConfigError, UniFashionError
from unifashion.utils.io import atomic_write_json

Task = Literal["text2image", "tryon", "design"]
TASKS: tuple[str, ...] = ("text2image", "tryon", "design")
SAMPLERS: tuple[str, ...] = ("plms", "ddim", "dpm++")
POSE_POINTS = 18  # COCO-18 keypoints, one heatmap each


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    return task


def extra_channels(task: str, latent_channels: int, cloth_latent: bool = False) -> int:
    """Channels the U-Net reads beside the noisy latent, in this order: agnostic latent, mask,
    pose heatmaps, then the sketch (design) or the cloth latent (try-on with ``cloth_latent``)."""
    check_task(task)
    if cloth_latent and task != "tryon":
        raise ConfigError(f"cloth_latent: only the tryon head reads the cloth's latent, not {task}")
    if task == "text2image":
        return 0
    inpaint = latent_channels + 1 + POSE_POINTS  # agnostic latent + mask + pose heatmaps
    if task == "design":
        return inpaint + 1  # + sketch
    return inpaint + (latent_channels if cloth_latent else 0)


def _groups(channels: tuple[int, ...], per_group: int) -> int:
    """GroupNorm's group count: at least ``per_group`` channels in each group (as Stable
    Diffusion's VAE, 128 / 32), at most 32 groups, dividing every block width. One channel per
    group would be instance normalisation, which removes each image's mean colour: a VAE built
    that way reconstructs every garment in one average colour."""
    g = math.gcd(*channels)
    limit = max(1, min(32, min(channels) // per_group))
    return max(d for d in range(1, limit + 1) if g % d == 0)


def build_vae(cfg: DiffusionConfig) -> nn.Module:
    """A fresh ``AutoencoderKL``; each block after the first halves the resolution."""
    from diffusers import AutoencoderKL

    n = len(cfg.vae_block_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_block_channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=_groups(tuple(cfg.vae_block_channels), 4),
        sample_size=cfg.image_size,
    )


def build_unet(cfg: DiffusionConfig, in_channels: int) -> nn.Module:
    """A fresh ``UNet2DConditionModel``: cross-attention in every block but the lowest-resolution one."""
    from diffusers import UNet2DConditionModel

    channels = tuple(cfg.unet_block_channels)
    n = len(channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    # diffusers' ``attention_head_dim`` is the number of heads per block (a historical name).
    heads = tuple(max(1, c // cfg.attention_head_dim) for c in channels)
    return UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (len(cfg.vae_block_channels) - 1),
        in_channels=cfg.latent_channels + in_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=heads,
        norm_num_groups=_groups(channels, 8),
    )


def widen_conv_in(unet: nn.Module, in_channels: int) -> nn.Module:
    """``unet`` reading ``in_channels``: existing input channels keep their weights, new ones
    start at zero (so the output is unchanged until training moves them). A pretrained
    inpainting U-Net (9 channels: latent, masked latent, mask) keeps all of its channels."""
    conv = unet.conv_in
    old = conv.in_channels
    if old == in_channels:
        return unet
    if old > in_channels:
        raise ConfigError(f"U-Net reads {old} input channels; this task gives only {in_channels}")
    wider = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, :old] = conv.weight
        wider.bias.copy_(conv.bias)
    unet.conv_in = wider
    unet.register_to_config(in_channels=in_channels)
    return unet


# Pretrained inpainting pipelines whose U-Net input order and mask polarity differ from ours.
# (StableVITON is no diffusers pipeline; ``convert ldm --pipeline StableVITON`` names its U-Net so.)
PIPELINE_LAYOUTS = {
    "PaintByExamplePipeline": "paint_by_example",
    "StableDiffusionInpaintPipeline": "sd_inpainting",
    "StableVITON": "stableviton",
}


def inserted_channels(layout: str, latent_channels: int) -> int:
    """Channels a layout puts in for inputs we do not have: StableVITON's DensePose latent."""
    return latent_channels if layout == "stableviton" else 0


def resolve_input_layout(cfg: DiffusionConfig, pretrained_in_channels: int) -> str:
    """The input layout of a pretrained U-Net (see ``DiffusionConfig.input_layout``)."""
    if cfg.input_layout != "auto":
        return cfg.input_layout
    if pretrained_in_channels == cfg.latent_channels:
        return "concat"
    from unifashion.backbones.diffusion import pipeline_class

    name = pipeline_class(cfg.source)
    if name in PIPELINE_LAYOUTS:
        return PIPELINE_LAYOUTS[name]
    raise ConfigError(
        f"diffusion.input_layout: the U-Net of {cfg.source} reads {pretrained_in_channels} channels and its "
        f"model_index.json names {name or 'no pipeline'}; set 'paint_by_example' (masked latent, mask 1 = keep), "
        "'sd_inpainting' (mask 1 = paint, masked latent), 'stableviton' (masked latent, mask 1 = keep, DensePose "
        "latent) or 'concat' (masked latent, mask 1 = paint)"
    )


def arrange_extra(extra: torch.Tensor, layout: str, latent_channels: int) -> torch.Tensor:
    """Our extra channels ``[agnostic latent, mask (1 = paint), rest]`` in the order and mask
    polarity the U-Net of ``layout`` was trained with."""
    if layout == "concat":
        return extra
    agnostic = extra[:, :latent_channels]
    mask = extra[:, latent_channels : latent_channels + 1]
    rest = extra[:, latent_channels + 1 :]
    if layout == "paint_by_example":
        return torch.cat([agnostic, 1 - mask, rest], dim=1)
    if layout == "sd_inpainting":
        return torch.cat([mask, agnostic, rest], dim=1)
    if layout == "stableviton":  # no DensePose here: its latent's channels read zeros
        densepose = torch.zeros_like(agnostic)
        return torch.cat([agnostic, 1 - mask, densepose, rest], dim=1)
    raise ConfigError(f"input_layout: unknown layout {layout!r}")


TERMINAL_ALPHA_BAR = 2.0**-24  # the last step's alpha_bar under zero_terminal_snr (diffusers keeps the same)


def schedule_betas(cfg: DiffusionConfig) -> list[float] | None:
    """The betas of ``cfg.beta_schedule`` rescaled to zero terminal SNR (None without ``zero_terminal_snr``):
    sqrt(alpha_bar) is shifted and scaled so that it ends at 0 (Lin et al., 2024, Algorithm 1), then
    the last alpha_bar is raised to ``TERMINAL_ALPHA_BAR`` so that every sampler's division by
    alpha_bar stays finite. Every scheduler gets these as ``trained_betas``."""
    if not cfg.zero_terminal_snr:
        return None
    if cfg.prediction_type != "v_prediction":
        raise ConfigError("zero_terminal_snr: needs prediction_type 'v_prediction' (noise is unpredictable at SNR 0)")
    from diffusers import DDPMScheduler

    base = DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
    )
    root = base.alphas_cumprod.double().sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alpha_bar = root**2
    alpha_bar[-1] = TERMINAL_ALPHA_BAR
    betas = 1 - alpha_bar / torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return betas.tolist()


def _schedule_fields(cfg: DiffusionConfig) -> dict:
    betas = schedule_betas(cfg)
    return {
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_schedule": cfg.beta_schedule,
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "prediction_type": cfg.prediction_type,
        **({"trained_betas": betas} if betas is not None else {}),
    }


def training_schedule(cfg: DiffusionConfig):
    """The forward (noising) process of training: DDPM with the preset's beta schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_schedule_fields(cfg))


def make_sampler(name: str, cfg: DiffusionConfig):
    """A diffusers scheduler for sampler ``name``, in Stable Diffusion's configuration.

    Steps are "leading" (the first at t = 951 of 1000 for 20 steps, as in SD).
    Starting at the very last step ("trailing") is ill-conditioned on a cosine
    schedule: alpha_bar there is ~1e-8, so the first update multiplies the noise
    prediction's error by ~1e4 (on FashionSynth it drew garments in the wrong
    colour; see README). ``clip_range`` > 0 clips (DDIM) or thresholds
    (DPM-Solver++) the predicted x_0; latents are scaled to unit variance."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    common = {**_schedule_fields(cfg), "timestep_spacing": cfg.timestep_spacing, "steps_offset": 1}
    clip = cfg.clip_range > 0
    if name == "plms":
        return PNDMScheduler(**common, skip_prk_steps=True, set_alpha_to_one=False)
    if name == "ddim":
        return DDIMScheduler(
            **common, clip_sample=clip, clip_sample_range=cfg.clip_range or 1.0, set_alpha_to_one=False
        )
    if name == "dpm++":
        return DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            thresholding=clip,
            sample_max_value=cfg.clip_range or 1.0,
            lambda_min_clipped=-5.1,  # diffusers' advice for cosine schedules
        )
    raise ConfigError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {name!r}")


# ---------------------------------------------------------------------------
# spatial inputs of try-on and design


def pose_heatmaps(
    keypoints: np.ndarray, image_hw: tuple[int, int], out_hw: tuple[int, int], sigma: float = 1.0
) -> torch.Tensor:
    """(18, h, w) Gaussian heatmaps at latent resolution from (18, 3) keypoints
    (x, y in pixels of an ``image_hw`` image, confidence); missing points (confidence 0) stay empty."""
    h, w = out_hw
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    maps = torch.zeros(POSE_POINTS, h, w)
    sy, sx = h / image_hw[0], w / image_hw[1]
    for k, (x, y, conf) in enumerate(np.asarray(keypoints, dtype=np.float32)[:POSE_POINTS]):
        if conf <= 0:
            continue
        cx, cy = x * sx - 0.5, y * sy - 0.5  # pixel centres
        maps[k] = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return maps


def to_latent_grid(maps: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """A (B, C, H, W) pixel map in [0, 1] (mask, sketch) averaged down to the latent grid."""
    return F.adaptive_avg_pool2d(maps.float(), latent_hw)


# ---------------------------------------------------------------------------
# the head


@dataclass(frozen=True)
class GeneratorSpec:
    """What ``generator.json`` records beside the weights."""

    task: str
    condition_dim: int  # width of the Q-Former outputs (d)
    image_height: int
    image_width: int
    latent_scale: float  # multiplies VAE latents to unit variance (SD's ``scaling_factor``)
    cloth_latent: bool = False  # try-on: the cloth image's latent is a spatial input too
    input_layout: str = "concat"  # how the U-Net reads the extra channels (see DiffusionConfig.input_layout)
    # text2image through a pretrained inpainting U-Net: its masked-image and mask channels get a
    # blank (grey) image's latent and "paint everywhere".
    blank_inpaint: bool = False
    # try-on: that latent sits beside the person's (the U-Net input is [person | cloth], twice as
    # wide) instead of in extra channels
    cloth_beside: bool = False


class Generator(nn.Module):
    """``image_adapter`` (f_zeta) + null condition + U-Net + VAE, with the sampling loop."""

    def __init__(self, config: DiffusionConfig, spec: GeneratorSpec, vae: nn.Module, unet: nn.Module):
        super().__init__()
        check_task(spec.task)
        self.config = config
        self.spec = spec
        self.vae = vae
        self.unet = unet
        self.image_adapter = QueryAdapter(spec.condition_dim, config.cross_attention_dim)
        # Classifier-free guidance's "no condition" (Paint-by-Example keeps a learned one too).
        self.null_condition = nn.Parameter(torch.randn(1, 1, config.cross_attention_dim) * 0.02)

    @classmethod
    def build(
        cls,
        config: DiffusionConfig,
        task: str,
        condition_dim: int,
        image_hw: tuple[int, int] | None = None,
        vae: nn.Module | None = None,
        latent_scale: float = 1.0,
        cloth_latent: bool = False,
        cloth_beside: bool = False,
    ) -> Generator:
        """A head for ``task``; with ``config.source`` (the ``paper`` preset) the U-Net and VAE
        are Stable Diffusion / Paint-by-Example weights, the U-Net's first convolution widened
        with zero weights for the extra channels (MGD's way: the pretrained model is unchanged
        at the start)."""
        hw = image_hw or (config.image_size, config.image_size)
        if cloth_beside and not cloth_latent:
            raise ConfigError("cloth_beside: needs cloth_latent (the cloth's latent is what sits beside the person)")
        # Beside the person, the cloth's latent takes no input channels of its own.
        in_extra = extra_channels(task, config.latent_channels, cloth_latent and not cloth_beside)
        if config.source:
            from unifashion.backbones.diffusion import check_schedule, load_unet, load_vae

            check_schedule(config)
            vae = vae if vae is not None else load_vae(config.vae_source or config.source)
            latent_scale = float(vae.config.scaling_factor)
            unet = load_unet(config.source)
            pretrained_in = int(unet.config.in_channels)
            layout = resolve_input_layout(config, pretrained_in)
            blank = task == "text2image" and pretrained_in == 2 * config.latent_channels + 1
            if blank:  # an inpainting U-Net draws a whole image when everything is masked
                in_extra = config.latent_channels + 1
            in_extra += inserted_channels(layout, config.latent_channels)
            unet = widen_conv_in(unet, config.latent_channels + in_extra)
        else:
            vae = vae if vae is not None else build_vae(config)
            unet = build_unet(config, in_extra)
            layout, blank = "concat", False
        spec = GeneratorSpec(
            check_task(task),
            condition_dim,
            hw[0],
            hw[1],
            float(latent_scale),
            cloth_latent,
            layout,
            blank,
            cloth_beside,
        )
        return cls(config, spec, vae, unet)

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def cloth_latent(self) -> bool:
        return self.spec.cloth_latent

    @property
    def image_hw(self) -> tuple[int, int]:
        return (self.spec.image_height, self.spec.image_width)

    @property
    def latent_hw(self) -> tuple[int, int]:
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (self.spec.image_height // f, self.spec.image_width // f)

    @property
    def device(self) -> torch.device:
        return self.null_condition.device

    # -- pixels <-> latents --------------------------------------------------

    @torch.no_grad()
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, h, w) (the posterior mean)."""
        return self.vae.encode(images).latent_dist.mean * self.spec.latent_scale

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) in [-1, 1]."""
        return self.vae.decode(latents / self.spec.latent_scale).sample.clamp(-1, 1)

    # -- conditions ----------------------------------------------------------

    def condition(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-Former outputs (B, N, d) -> cross-attention states (B, N, c) and their mask (B, N)."""
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        return self.image_adapter(states), mask

    def drop_condition(
        self, cond: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows where ``keep`` (B,) is False get the null condition (one token, the rest masked)."""
        null = self.null_condition.to(cond.dtype).expand(cond.shape[0], cond.shape[1], -1)
        drop = ~keep.view(-1, 1, 1)
        cond = torch.where(drop, null, cond)
        null_mask = torch.zeros_like(mask)
        null_mask[:, 0] = 1
        mask = torch.where(drop.view(-1, 1), null_mask, mask)
        return cond, mask

    def predict_noise(
        self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor | None
    ) -> torch.Tensor:
        if self.spec.blank_inpaint and extra is None:
            extra = self.blank_extra(noisy)
        if self.spec.cloth_beside:
            return self._predict_beside(noisy, t, cond, mask, extra)
        if extra is not None:
            extra = arrange_extra(extra.to(noisy.dtype), self.spec.input_layout, self.config.latent_channels)
        x = noisy if extra is None else torch.cat([noisy, extra], dim=1)
        return self.unet(x, t, encoder_hidden_states=cond, encoder_attention_mask=mask).sample

    def _predict_beside(
        self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor
    ) -> torch.Tensor:
        """[person | cloth] side by side (CatVTON): the left half is the person's noisy latent and
        inputs, the right half the clean cloth latent in both the latent and the masked-image slots,
        mask 0 (keep), no pose; the prediction is the left half's. ``extra`` is ours: agnostic
        latent, mask, pose heatmaps, cloth latent; (B, C, h, w) -> (B, 4, h, w)."""
        c = self.config.latent_channels
        person, cloth = extra[:, :-c].to(noisy.dtype), extra[:, -c:].to(noisy.dtype)
        beside = torch.cat([cloth, torch.zeros_like(person[:, c:])], dim=1)  # ours: mask 0 = keep, no pose
        left = torch.cat([noisy, arrange_extra(person, self.spec.input_layout, c)], dim=1)
        right = torch.cat([cloth, arrange_extra(beside, self.spec.input_layout, c)], dim=1)
        x = torch.cat([left, right], dim=3)  # (B, C, h, 2w)
        out = self.unet(x, t, encoder_hidden_states=cond, encoder_attention_mask=mask).sample
        return out[..., : noisy.shape[-1]]

    @torch.no_grad()
    def blank_extra(self, noisy: torch.Tensor) -> torch.Tensor:
        """Inpainting inputs that mask everything: a grey image's latent (the masked image of a
        full mask) and mask 1 (paint) everywhere, in our order; (B, latent + 1, h, w)."""
        b, _, h, w = noisy.shape
        key = (h, w, noisy.device, noisy.dtype)
        if getattr(self, "_blank", None) is None or self._blank[0] != key:
            grey = torch.zeros(1, 3, h * self._vae_factor, w * self._vae_factor, device=noisy.device)
            latent = self.encode_latents(grey.to(next(self.vae.parameters()).dtype)).to(noisy.dtype)
            self._blank = (key, latent)
        latent = self._blank[1].expand(b, -1, -1, -1)
        return torch.cat([latent, torch.ones(b, 1, h, w, device=noisy.device, dtype=noisy.dtype)], dim=1)

    @property
    def _vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -- training (Eq. 7) ----------------------------------------------------

    def q2i_loss(
        self,
        latents: torch.Tensor,
        states: torch.Tensor,
        states_mask: torch.Tensor | None,
        extra: torch.Tensor | None,
        schedule,
        generator: torch.Generator | None = None,
        drop_rate: float | None = None,
        noisy_share: float = 0.0,
        noise_offset: float = 0.0,
        min_snr_gamma: float = 0.0,
        shard=None,
    ) -> torch.Tensor:
        """E ||eps - eps_theta(x_t, t, f_zeta(Z))||^2 on clean latents (B, 4, h, w) (with
        ``prediction_type`` "v_prediction" the target is v instead of eps); the condition is dropped
        for a ``drop_rate`` share of the rows (classifier-free guidance).

        t is uniform over the schedule, except for a ``noisy_share`` of the rows drawn from its
        noisiest fifth: only there is x_t too noisy to show the garment, so only there does the
        model have to read the condition (what colour, which garment), and uniform sampling
        gives those steps a tenth of the updates.

        ``noise_offset`` adds one Gaussian value per row and channel, the same at every position, to
        the noise ("offset noise"). Without it the mean of x_t keeps the garment's colour up to the
        noisiest steps (the mean of h x w noise values has 1 / sqrt(h w) of their spread), so the
        model learns to read the colour there from x_t; at sampling time x_T is pure noise and the
        colour then follows the random mean of the seed instead of the condition.

        ``min_snr_gamma`` > 0 weights each row by min(SNR(t), gamma) / SNR(t) (Min-SNR-gamma, Hang et
        al. 2023, in its noise-prediction form): the nearly clean steps, whose loss is small and
        whose gradients pull against the noisy ones, count less.

        With a ``shard`` (:class:`unifashion.utils.distributed.Shard`) the random draws cover the
        whole batch, and only this process's rows go through the U-Net."""
        b = latents.shape[0]
        steps = schedule.config.num_train_timesteps
        drop_rate = self.config.condition_dropout if drop_rate is None else drop_rate
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype)
        if noise_offset > 0:
            noise = noise + noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
        noise = noise.to(latents.device)
        t = torch.randint(0, steps, (b,), generator=generator)
        noisy = torch.rand(b, generator=generator) < noisy_share
        t = torch.where(noisy, torch.randint(int(0.8 * steps), steps, (b,), generator=generator), t).to(latents.device)
        x_t = schedule.add_noise(latents, noise, t)
        cond, mask = self.condition(states, states_mask)
        keep = torch.rand(b, generator=generator).to(latents.device) >= drop_rate
        if shard is not None and shard.world > 1:
            lo, hi = shard.bounds(b)
            x_t, t, noise, keep, cond = x_t[lo:hi], t[lo:hi], noise[lo:hi], keep[lo:hi], cond[lo:hi]
            mask = None if mask is None else mask[lo:hi]
            extra = None if extra is None else extra[lo:hi]
        cond, mask = self.drop_condition(cond, mask, keep)
        pred = self.predict_noise(x_t, t, cond, mask, extra).float()
        v = self.config.prediction_type == "v_prediction"
        target = schedule.get_velocity(latents, noise, t) if v else noise
        if min_snr_gamma <= 0:
            return F.mse_loss(pred, target.float())
        per_row = (pred - target.float()).pow(2).flatten(1).mean(dim=1)
        alpha_bar = schedule.alphas_cumprod.to(per_row.device)[t]
        snr = alpha_bar / (1 - alpha_bar)
        # The v-loss is the noise loss times (SNR + 1) / SNR: min(SNR, gamma) / SNR of the noise loss
        # is min(SNR, gamma) / (SNR + 1) of the v-loss.
        return (per_row * snr.clamp(max=min_snr_gamma) / (snr + 1 if v else snr)).mean()

    # -- sampling ------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        states: torch.Tensor,
        states_mask: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        scheduler=None,
        on_step: Callable[[int, int], None] | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Latents (B, 4, h, w) from Q-Former outputs (B, N, d) by ``sampler`` in ``steps`` steps with
        classifier-free guidance; the same seed and inputs give the same latents. ``scheduler``:
        any diffusers scheduler instead of ``sampler`` (to try another one). ``on_step(done, total)``
        is called after each denoising step (progress bars, job status). ``noise``: the starting
        Gaussian latents (B, 4, h, w) instead of ones drawn from the seed."""
        cfg = self.config
        scheduler = scheduler if scheduler is not None else make_sampler(sampler or cfg.sampler, cfg)
        scheduler.set_timesteps(int(steps or cfg.sampling_steps))
        scale = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        b = states.shape[0]
        cond, mask = self.condition(states, states_mask)
        null, null_mask = self.drop_condition(cond, mask, torch.zeros(b, dtype=torch.bool, device=cond.device))
        both, both_mask = torch.cat([null, cond]), torch.cat([null_mask, mask])
        extra2 = None if extra is None else torch.cat([extra, extra])
        generator = generator or torch.Generator().manual_seed(seed)
        h, w = self.latent_hw
        shape = (b, cfg.latent_channels, h, w)
        if noise is None:
            noise = torch.randn(shape, generator=generator)
        elif tuple(noise.shape) != shape:
            raise ConfigError(f"noise: expected shape {shape}, got {tuple(noise.shape)}")
        latents = noise.to(self.device, torch.float32) * scheduler.init_noise_sigma
        total = len(scheduler.timesteps)
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            eps_uncond, eps_cond = self.predict_noise(x, t, both, both_mask, extra2).float().chunk(2)
            eps = eps_uncond + scale * (eps_cond - eps_uncond)  # classifier-free guidance
            latents = scheduler.step(eps, t, latents).prev_sample
            if on_step is not None:
                on_step(i + 1, total)
        return latents

    # -- persistence ---------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike, *, with_vae: bool = True) -> Path:
        """``folder/{generator.json, adapter.safetensors, unet/}`` (+ ``vae/`` unless it is shared)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {f"image_adapter.{k}": v for k, v in self.image_adapter.state_dict().items()}
        state["null_condition"] = self.null_condition.detach()
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state.items()}, os.fspath(folder / "adapter.safetensors")
        )
        self.unet.save_pretrained(os.fspath(folder / "unet"), safe_serialization=True)
        if with_vae:
            self.vae.save_pretrained(os.fspath(folder / VAE_FOLDER), safe_serialization=True)
        atomic_write_json(folder / "generator.json", {"spec": asdict(self.spec), "diffusion": asdict(self.config)})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, vae_folder: str | os.PathLike | None = None) -> Generator:
        """A head saved by :meth:`save_pretrained`; ``vae_folder`` when the VAE is shared (a model's ``vae/``)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from safetensors.torch import load_file

        from unifashion.backbones.hub import load_state_strict
        from unifashion.config import from_dict

        folder = Path(folder)
        meta_path = folder / "generator.json"
        if not meta_path.is_file():
            raise UniFashionError(f"{folder}: no generator.json (not a UniFashion image head)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            spec = GeneratorSpec(**meta["spec"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{meta_path}: unreadable ({exc})") from None
        config = from_dict(DiffusionConfig, meta.get("diffusion", {}), where=f"{meta_path}: diffusion")
        vae_dir = Path(vae_folder) if vae_folder is not None else folder / VAE_FOLDER
        if not (folder / "adapter.safetensors").is_file():
            raise UniFashionError(f"{folder}: no adapter.safetensors (image_adapter and null condition)")
        for sub in (vae_dir, folder / "unet"):
            if not any(sub.glob("*.safetensors")):
                raise UniFashionError(f"{sub}: no safetensors weights")
        vae = AutoencoderKL.from_pretrained(os.fspath(vae_dir), use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(os.fspath(folder / "unet"), use_safetensors=True)
        head = cls(config, spec, vae, unet)
        state = load_file(os.fspath(folder / "adapter.safetensors"))
        null = state.pop("null_condition", None)
        if null is None:
            raise UniFashionError(f"{folder / 'adapter.safetensors'}: no null_condition")
        head.null_condition.data.copy_(null)
        adapter = {k.removeprefix("image_adapter."): v for k, v in state.items()}
        load_state_strict(head.image_adapter, adapter, what=str(folder / "adapter.safetensors"))
        return head.eval()


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """Images (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def from_pixels(arrays: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> (B, 3, H, W) in [-1, 1]."""
    arr = torch.as_tensor(np.stack(list(arrays)) if isinstance(arrays, list) else arrays)
    return arr.permute(0, 3, 1, 2).float() / 127.5 - 1.0
