"""Phase 1b of the image head: the VAE first, then the U-Nets on q2I (Eq. 7), Q-Former frozen.

1. ``train_vae``: an ``AutoencoderKL`` on product and person images (L1 +
   a small KL term, as Stable Diffusion's first stage without its GAN); its
   latents are then scaled to unit variance. A latent model is only as good
   as its VAE, so the summary reports how often a reconstruction keeps the
   garment's colour.
2. Every training image is encoded once (``LatentTable``); the frozen
   Q-Former's outputs are computed per batch (cheap next to the U-Net).
3. ``train_head``: ``image_adapter`` + U-Net (+ null condition) of one task:

   - ``text2image``: batches of text-only (caption), image-only (Z_I of the
     same image) and composed (Z_R of a triplet's reference + its guidance
     text -> the target) conditions, in the shares of ``condition_mix``;
   - ``tryon``: paired samples; the person is the target, the cloth's Z_I
     the condition, agnostic latent + mask + pose the spatial input;
   - ``design``: the same with the sample's text as condition and the sketch
     as one more spatial input.

``unifashion train generation --model MODEL --data DIR --out MODEL2`` adds
``vae/`` and the heads to a checkpoint (atomically; ``--tasks`` picks heads).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.config import GenerationTrainingConfig
from unifashion.data.formats import read_split
from unifashion.data.records import DatasetSplit, ImageRef
from unifashion.generation import (
    HEAD_FOLDERS,
    composed_condition,
    encode_images,
    image_condition,
    load_pixels,
    sample_inputs,
    text_condition,
)
from unifashion.models.generator import Generator, build_vae, check_task, from_pixels
from unifashion.models.retrieval import RetrievalModel
from unifashion.training.data import FeatureTable, pick, product_texts, training_query_text
from unifashion.training.loop import LossLog, extended_checkpoint, seed_everything
from unifashion.training.runner import OptimConfig, StageRunner
from unifashion.training.stages import UNetStage, VaeStage
from unifashion.utils.errors import ConfigError, DataError


def product_hw(cfg_size: int) -> tuple[int, int]:
    return (cfg_size, cfg_size)


def person_hw(cfg_size: int) -> tuple[int, int]:
    """Persons are 4:3 (height:width), as in VITON-HD and Dress Code."""
    return (cfg_size, cfg_size * 3 // 4)


# ---------------------------------------------------------------------------
# the VAE


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
    generator = seed_everything(cfg.seed)
    runner = runner or StageRunner(None, log, progress=progress)
    optim = OptimConfig(cfg.vae_lr, 0.0, cfg.warmup_ratio, clip_norm=1.0)
    last = runner.run(VaeStage(vae, pools, cfg), optim, generator, log_every=cfg.log_every, resume=resume)
    vae.eval()
    return last


@torch.no_grad()
def latent_scale(vae: torch.nn.Module, pixels: np.ndarray, batch_size: int = 64) -> float:
    """1 / std of the VAE's latents (SD's ``scaling_factor``) on ``pixels``."""
    chunks = [vae.encode(from_pixels(pixels[i : i + batch_size])).latent_dist.mean
              for i in range(0, len(pixels), batch_size)]  # fmt: skip
    return float(1.0 / torch.cat(chunks).std().clamp(min=1e-6))


@torch.no_grad()
def vae_colour_fidelity(vae: torch.nn.Module, pixels: np.ndarray, batch_size: int = 64) -> dict[str, float]:
    """Share of images whose measured garment colour survives a VAE round trip, and the mean
    absolute pixel error (0-255)."""
    from unifashion.evaluation.generation import garment_colour

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
# the U-Net heads


@dataclass
class Text2ImageData:
    """Latents of product images and what their conditions are made of."""

    latents: torch.Tensor  # (N, 4, h, w), one row per distinct image
    rows: dict[str, int]
    feats: FeatureTable
    products: list[tuple[list[int], list[str]]]  # (image rows, texts)
    triplets: list[tuple[int, int, tuple[str, ...]]]  # (reference row, target row, captions)


def text2image_data(
    model: RetrievalModel, generator: Generator, data: DatasetSplit, cache: FeatureCache, progress: bool = True
) -> Text2ImageData:
    refs: dict[str, ImageRef] = {}
    for p in data.products:
        for r in p.images:
            refs.setdefault(str(r), r)
    ordered = list(refs.values())
    pixels = load_pixels(ordered, generator.image_hw)
    latents = encode_images(generator, pixels)
    rows = {str(r): i for i, r in enumerate(ordered)}
    feats = FeatureTable.build(ordered, cache, progress=progress)
    products = [([rows[str(r)] for r in p.images], product_texts(p)) for p in data.products if product_texts(p)]
    by_id = data.product_map()
    triplets = [
        (rows[str(by_id[t.reference].images[0])], rows[str(by_id[t.target].images[0])], t.captions)
        for t in data.triplets
        if t.target and t.reference in by_id and t.target in by_id and t.captions
    ]
    if not products:
        raise DataError(f"split {data.split!r}: no product with a caption", path=str(data.root))
    return Text2ImageData(latents, rows, feats, products, triplets)


def text2image_batch(
    model: RetrievalModel, data: Text2ImageData, kind: str, batch: int, gen: torch.Generator, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(target latents, Q-Former states, their mask) of one batch of condition ``kind``."""
    if kind == "composed":
        idx = torch.randint(0, len(data.triplets), (batch,), generator=gen).tolist()
        trip = [data.triplets[i] for i in idx]
        texts = [training_query_text(t[2], gen) for t in trip]
        states, mask = composed_condition(model, data.feats.batch([t[0] for t in trip]), texts, bf16)
        return data.latents[[t[1] for t in trip]], states, mask
    idx = torch.randint(0, len(data.products), (batch,), generator=gen).tolist()
    rows = [pick(data.products[i][0], gen) for i in idx]
    if kind == "image":
        states, mask = image_condition(model, data.feats.batch(rows), bf16)
    else:
        states, mask = text_condition(model, [pick(data.products[i][1], gen) for i in idx], bf16)
    return data.latents[rows], states, mask


@dataclass
class InpaintData:
    targets: torch.Tensor  # (N, 4, h, w) person latents
    extra: torch.Tensor  # (N, E, h, w)
    cloth_feats: torch.Tensor | None  # (N, T, C) try-on condition
    texts: list[str]  # design condition


def inpaint_data(
    model: RetrievalModel, generator: Generator, data: DatasetSplit, cache: FeatureCache, progress: bool = True,
    batch_size: int = 64,
) -> InpaintData:  # fmt: skip
    samples = [s for s in data.tryon if s.paired]
    if generator.task == "design":
        samples = [s for s in samples if s.text and s.sketch is not None]
    if not samples:
        raise DataError(f"split {data.split!r}: no paired {generator.task} samples", path=str(data.root))
    targets, extras = [], []
    for i in tqdm(
        range(0, len(samples), batch_size), desc=f"{generator.task} inputs", disable=not progress, leave=False
    ):
        chunk = samples[i : i + batch_size]
        targets.append(encode_images(generator, load_pixels([s.person for s in chunk], generator.image_hw)))
        extras.append(sample_inputs(generator, chunk).extra)
    cloth = cache.features([s.cloth for s in samples], progress=progress) if generator.task == "tryon" else None
    return InpaintData(torch.cat(targets), torch.cat(extras), cloth, [s.text or "" for s in samples])


def head_batches(model: RetrievalModel, generator: Generator, data: Text2ImageData | InpaintData,
                 cfg: GenerationTrainingConfig):  # fmt: skip
    """A function drawing one global batch (latents, states, mask, spatial input, kind) of ``generator``'s task."""
    kinds = ("text", "image", "composed")
    mix = torch.tensor(cfg.condition_mix, dtype=torch.float)
    if isinstance(data, Text2ImageData) and not data.triplets:
        mix[2] = 0.0

    @torch.no_grad()
    def draw(gen: torch.Generator):
        if isinstance(data, Text2ImageData):
            kind = kinds[int(torch.multinomial(mix, 1, generator=gen))]
            latents, states, mask = text2image_batch(model, data, kind, cfg.batch_size, gen, cfg.bf16)
            return latents, states, mask, None, kind
        idx = torch.randint(0, data.targets.shape[0], (min(cfg.batch_size, data.targets.shape[0]),), generator=gen)
        if data.cloth_feats is not None:
            states, mask = image_condition(model, data.cloth_feats[idx].float(), cfg.bf16)
        else:
            states, mask = text_condition(model, [data.texts[i] for i in idx.tolist()], cfg.bf16)
        return data.targets[idx], states.detach(), mask, data.extra[idx], generator.task

    return draw


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
) -> dict[str, float]:
    """``steps`` of q2I (Eq. 7) on ``image_adapter`` + U-Net + null condition; VAE and Q-Former frozen.
    The weights end as their exponential moving average (``cfg.ema_decay``; 0 turns it off)."""
    gen = seed_everything(cfg.seed)
    model.eval()
    stage = UNetStage(generator, head_batches(model, generator, data, cfg), cfg, steps)
    runner = runner or StageRunner(None, log, progress=progress)
    optim = OptimConfig(cfg.lr, cfg.weight_decay, cfg.warmup_ratio, clip_norm=1.0)
    last = runner.run(stage, optim, gen, log_every=cfg.log_every, resume=resume)
    stage.eval()
    return last


# ---------------------------------------------------------------------------
# the command


def train_generation(
    model_path: str | os.PathLike,
    data_root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    cfg: GenerationTrainingConfig | None = None,
    fmt: str | None = None,
    split: str = "train",
    progress: bool = True,
) -> dict[str, Any]:
    """Train the VAE (unless the checkpoint has one and ``cfg.reuse_vae``) and the heads of
    ``cfg.tasks``; write checkpoint + heads to ``out`` in one rename (``out`` may be ``model_path``)."""
    cfg = cfg or GenerationTrainingConfig()
    for t in cfg.tasks:
        check_task(t)
    started = time.perf_counter()
    source = Path(model_path)
    model = RetrievalModel.from_pretrained(source)
    dcfg = model.config.diffusion
    data = read_split(data_root, split, fmt)
    cache = FeatureCache(model.vision)
    out = Path(out)
    live_logs = out.parent / f"{out.name}.logs"
    shutil.rmtree(live_logs, ignore_errors=True)
    log = LossLog(live_logs)
    summary: dict[str, Any] = {"data": str(data_root), "split": split, "heads": {}}

    from diffusers import AutoencoderKL

    p_hw, s_hw = product_hw(dcfg.image_size), person_hw(dcfg.image_size)
    product_refs = list({str(r): r for p in data.products for r in p.images}.values())
    person_refs = list({str(s.person): s.person for s in data.tryon}.values())
    if dcfg.source:  # paper: Stable Diffusion's VAE, nothing to train
        from unifashion.backbones.diffusion import load_vae

        vae = load_vae(dcfg.source).eval()
        scale = float(vae.config.scaling_factor)
        summary["vae"] = {"pretrained": dcfg.source}
    elif cfg.continue_heads and not (cfg.reuse_vae and (source / "vae").is_dir()):
        raise ConfigError(
            f"continue_heads: the heads of {source} were trained on its vae/, so they continue only with that VAE "
            "(it has none, or reuse_vae is off)"
        )
    elif cfg.reuse_vae and (source / "vae").is_dir():
        vae = AutoencoderKL.from_pretrained(os.fspath(source / "vae"), use_safetensors=True).eval()
        scale = float(vae.config.scaling_factor)
        summary["vae"] = {"reused": str(source / "vae")}
    else:
        t0 = time.perf_counter()
        pools = [load_pixels(product_refs, p_hw), load_pixels(person_refs, s_hw)]
        vae = build_vae(dcfg)
        last = train_vae(vae, pools, cfg, log, progress=progress)
        probe = pools[0][:: max(1, len(pools[0]) // 1000)]
        scale = latent_scale(vae, probe)
        vae.register_to_config(scaling_factor=scale)
        summary["vae"] = {"last": last, "seconds": round(time.perf_counter() - t0, 1), "latent_scale": scale,
                          "train_fidelity": vae_colour_fidelity(vae, probe[:500])}  # fmt: skip
    heads: dict[str, Generator] = {}
    d = model.config.qformer.hidden_size
    for task in cfg.tasks:
        t0 = time.perf_counter()
        hw = p_hw if task == "text2image" else s_hw
        generator = head_to_train(source, task, dcfg, d, hw, vae, scale, cfg)
        if task == "text2image":
            prepared = text2image_data(model, generator, data, cache, progress)
            steps = cfg.steps
        else:
            prepared = inpaint_data(model, generator, data, cache, progress)
            steps = cfg.tryon_steps if task == "tryon" else cfg.design_steps
        t1 = time.perf_counter()
        last = train_head(model, generator, prepared, steps, cfg, log, progress=progress)
        heads[task] = generator
        continued = {"continued_from": str(source / HEAD_FOLDERS[task])} if cfg.continue_heads else {}
        summary["heads"][task] = {**continued, "steps": steps, "last": last, "prepare_seconds": round(t1 - t0, 1),
                                  "seconds": round(time.perf_counter() - t1, 1),
                                  "unet_parameters": sum(p.numel() for p in generator.unet.parameters())}  # fmt: skip
    summary["seconds"] = round(time.perf_counter() - started, 1)
    save_with_image_heads(
        source, out, vae, heads, {"generation": dataclasses.asdict(cfg), "summary": summary}, live_logs
    )
    return summary


def head_to_train(source: Path, task: str, dcfg, condition_dim: int, hw: tuple[int, int], vae: torch.nn.Module,
                  latent_scale: float, cfg: GenerationTrainingConfig) -> Generator:  # fmt: skip
    """A fresh head for ``task`` on ``vae``, or with ``cfg.continue_heads`` the head of checkpoint
    ``source`` (which must have been trained on that same VAE: the checkpoint's own)."""
    if not cfg.continue_heads:
        return Generator.build(dcfg, task, condition_dim, hw, vae=vae, latent_scale=latent_scale)
    folder = source / HEAD_FOLDERS[task]
    if not folder.is_dir():
        raise ConfigError(f"continue_heads: {source} has no {task} head ({HEAD_FOLDERS[task]}/) to continue")
    head = Generator.from_pretrained(folder, vae_folder=source / "vae")
    if head.spec.task != task or head.spec.condition_dim != condition_dim:
        raise ConfigError(
            f"continue_heads: {folder} is a {head.spec.task} head on {head.spec.condition_dim}-wide states; "
            f"expected {task} on {condition_dim}"
        )
    head.vae = vae
    return head.train()


def save_with_image_heads(
    model_path: Path,
    out: Path,
    vae: torch.nn.Module,
    heads: dict[str, Generator],
    training: dict[str, Any],
    logs: Path | None = None,
) -> Path:
    """Checkpoint ``model_path`` + ``vae/`` + the heads, written atomically to ``out``
    (heads of other tasks already in ``model_path`` are kept)."""
    replaced = {"vae", *(HEAD_FOLDERS[t] for t in heads)}
    with extended_checkpoint(model_path, out, replaced=replaced, logs=logs) as (tmp, meta):
        vae.save_pretrained(os.fspath(tmp / "vae"), safe_serialization=True)
        for task, head in heads.items():
            head.save_pretrained(tmp / HEAD_FOLDERS[task], with_vae=False)
        meta["heads"] = sorted(set(meta.get("heads", [])) | {"generation", *(f"generation:{t}" for t in heads)})
        meta.setdefault("training", {})["generation"] = training
    return out
