"""Images from the image head: conditions from the Q-Former, spatial inputs of try-on and design,
and the loading of a checkpoint's heads. Training and evaluation use the same functions.

A checkpoint with an image head holds, beside the retrieval weights::

    vae/                      the AutoencoderKL shared by every task
    generator/ tryon/ design/ one head per task: generator.json, adapter.safetensors, unet/
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.checkpoint import HEAD_FOLDERS, VAE_FOLDER
from unifashion.data.pose import load_pose
from unifashion.data.records import ImageRef, TryOnSample
from unifashion.models.generator import Generator, from_pixels, pose_heatmaps, to_latent_grid, to_pixels
from unifashion.models.qformer import BIDIRECTIONAL
from unifashion.models.retrieval import RetrievalModel
from unifashion.utils.errors import DataError, UniFashionError
from unifashion.utils.hardware import autocast


def as_ref(image: str | os.PathLike | ImageRef) -> ImageRef:
    return image if isinstance(image, ImageRef) else ImageRef(os.fspath(image))


# ---------------------------------------------------------------------------
# pixels


def fit_image(image: Image.Image, hw: tuple[int, int], fill: int = 255) -> np.ndarray:
    """RGB uint8 (H, W, 3) of size ``hw``: padded to the target aspect with ``fill`` (nothing is
    cropped away), then resized with an area filter."""
    image = image.convert("RGB")
    h, w = hw
    iw, ih = image.size
    if abs(iw * h - ih * w) > max(iw, ih):  # another aspect ratio: pad, centred
        cw, ch = max(iw, round(ih * w / h)), max(ih, round(iw * h / w))
        canvas = Image.new("RGB", (cw, ch), (fill, fill, fill))
        canvas.paste(image, ((cw - iw) // 2, (ch - ih) // 2))
        image = canvas
    return np.asarray(image.resize((w, h), Image.Resampling.BOX if image.width >= w else Image.Resampling.BICUBIC))


def fit_mask(ref: ImageRef, hw: tuple[int, int]) -> np.ndarray:
    """A mask image (white = the region to paint) as float (H, W) in [0, 1]."""
    im = ref.open_raw().convert("L")
    return np.asarray(im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def load_pixels(refs: Sequence[ImageRef], hw: tuple[int, int], fill: int = 255) -> np.ndarray:
    return np.stack([fit_image(r.open(), hw, fill) for r in refs]) if refs else np.zeros((0, *hw, 3), np.uint8)


@torch.no_grad()
def encode_images(generator: Generator, pixels: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> scaled VAE latents (N, 4, h, w)."""
    chunks = [
        generator.encode_latents(from_pixels(pixels[i : i + batch_size]).to(generator.device))
        for i in range(0, len(pixels), batch_size)
    ]
    return torch.cat(chunks).cpu() if chunks else torch.zeros(0, generator.config.latent_channels, *generator.latent_hw)


def to_images(generator: Generator, latents: torch.Tensor, batch_size: int = 64) -> list[Image.Image]:
    out: list[Image.Image] = []
    for i in range(0, latents.shape[0], batch_size):
        out += [Image.fromarray(a) for a in to_pixels(generator.decode_latents(latents[i : i + batch_size]))]
    return out


# ---------------------------------------------------------------------------
# conditions: Q-Former outputs (B, N, d) and their mask (B, N)


@torch.no_grad()
def text_condition(model: RetrievalModel, texts: Sequence[str], bf16: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Text only: the Q-Former text path's token outputs (Eq. 2's Z_C)."""
    batch = model.tokenize(list(texts))
    with autocast(bf16, model.qformer.device):
        states = model.qformer.text_states(batch)
    return states.float(), batch.attention_mask


@torch.no_grad()
def image_condition(model: RetrievalModel, feats: torch.Tensor, bf16: bool = True) -> tuple[torch.Tensor, None]:
    """Image only: Z_I, the query outputs over frozen features (B, N, C)."""
    with autocast(bf16, model.qformer.device):
        return model.qformer.image_queries(feats).float(), None


@torch.no_grad()
def composed_condition(
    model: RetrievalModel, feats: torch.Tensor, texts: Sequence[str], bf16: bool = True
) -> tuple[torch.Tensor, None]:
    """Image + text: Z_R (Eq. 9), the query outputs with the guidance text under the bidirectional mask."""
    batch = model.tokenize(list(texts))
    with autocast(bf16, model.qformer.device):
        queries, _ = model.qformer.joint(feats, batch, BIDIRECTIONAL)
    return queries.float(), None


def image_features(model: RetrievalModel, refs: Sequence[ImageRef], cache: FeatureCache | None = None) -> torch.Tensor:
    for r in refs:
        r.verify()
    return (cache or FeatureCache(model.vision)).features(list(refs)).float()


# ---------------------------------------------------------------------------
# try-on and design inputs


@dataclass
class InpaintInputs:
    """What the try-on / design U-Net reads beside the noisy latent, and what is needed to paste back."""

    extra: torch.Tensor  # (B, E, h, w): agnostic latent, mask, 18 pose maps (+ sketch or cloth latent)
    person_pixels: np.ndarray  # (B, H, W, 3): what is kept outside the mask
    agnostic_pixels: np.ndarray  # (B, H, W, 3)
    masks: np.ndarray  # (B, H, W) in [0, 1]; 1 = generated region


def agnostic_from(person: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A person with the masked region greyed out (when a dataset gives no agnostic image)."""
    m = mask[..., None] > 0.5
    return np.where(m, 128, person).astype(np.uint8)


def inpaint_inputs(
    generator: Generator,
    *,
    persons: Sequence[ImageRef],
    masks: Sequence[ImageRef],
    poses: Sequence[str | np.ndarray],
    agnostics: Sequence[ImageRef | None] | None = None,
    sketches: Sequence[ImageRef | None] | None = None,
    cloths: Sequence[ImageRef | None] | None = None,
    pose_format: str = "openpose",
) -> InpaintInputs:
    """Spatial inputs of ``generator`` (task ``tryon`` or ``design``) for a batch of persons; a
    try-on head that reads the cloth's latent (``generator.cloth_latent``) needs ``cloths``: each
    cloth image is padded to the person's frame and VAE-encoded."""
    if generator.task == "text2image":
        raise UniFashionError("inpaint_inputs: the text2image head takes no spatial inputs")
    if generator.cloth_latent and (cloths is None or len(cloths) != len(persons) or any(c is None for c in cloths)):
        raise UniFashionError("try-on: this head reads the cloth image as a spatial input; give one cloth per person")
    hw = generator.image_hw
    lhw = generator.latent_hw
    person_px, mask_px, agnostic_px, pose_maps, sketch_maps = [], [], [], [], []
    for i, ref in enumerate(persons):
        im = ref.open()
        person = fit_image(im, hw)
        mask = fit_mask(masks[i], hw)
        agn = agnostics[i] if agnostics is not None else None
        agnostic = fit_image(agn.open(), hw) if agn is not None else agnostic_from(person, mask)
        pose = poses[i]
        kp = pose if isinstance(pose, np.ndarray) else load_pose(pose, pose_format, im.width, im.height)
        person_px.append(person)
        mask_px.append(mask)
        agnostic_px.append(agnostic)
        pose_maps.append(pose_heatmaps(kp, (im.height, im.width), lhw))
        if generator.task == "design":
            sketch = sketches[i] if sketches is not None else None
            if sketch is None:
                raise DataError("design needs a garment sketch", path=str(ref))
            # Sketch lines are dark on white: 1 where a line is.
            arr = 1.0 - fit_image(sketch.open(), hw).mean(axis=-1) / 255.0
            sketch_maps.append(torch.from_numpy(arr.astype(np.float32))[None])
    agnostic_arr = np.stack(agnostic_px)
    mask_arr = np.stack(mask_px)
    parts = [
        encode_images(generator, agnostic_arr),
        to_latent_grid(torch.from_numpy(mask_arr)[:, None], lhw),
        torch.stack(pose_maps),
    ]
    if generator.task == "design":
        parts.append(to_latent_grid(torch.stack(sketch_maps), lhw))
    if generator.cloth_latent:
        parts.append(encode_images(generator, np.stack([fit_image(c.open(), hw) for c in cloths])))
    return InpaintInputs(torch.cat(parts, dim=1), np.stack(person_px), agnostic_arr, mask_arr)


def sample_inputs(generator: Generator, samples: Sequence[TryOnSample]) -> InpaintInputs:
    """:func:`inpaint_inputs` of dataset samples (agnostic image, agnostic mask, pose, sketch)."""
    for s in samples:
        missing = [k for k in ("agnostic_mask", "pose") if getattr(s, k) is None]
        if generator.task == "design" and s.sketch is None:
            missing.append("sketch")
        if missing:
            raise DataError(f"try-on sample {s.id}: no {', '.join(missing)}", path=str(s.person))
    formats = {s.pose_format for s in samples}
    if len(formats) > 1:
        raise DataError(f"one batch mixes pose formats {sorted(formats)}")
    return inpaint_inputs(
        generator,
        persons=[s.person for s in samples],
        masks=[s.agnostic_mask for s in samples],
        poses=[s.pose for s in samples],
        agnostics=[s.agnostic for s in samples],
        sketches=[s.sketch for s in samples],
        cloths=[s.cloth for s in samples],
        pose_format=formats.pop() if formats else "openpose",
    )


def paste_back(generated: np.ndarray, person: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Generated pixels where the mask is over 0.5, the given person elsewhere (uint8 (B, H, W, 3)):
    a hard cut, so nothing outside the mask changes. (Not the agnostic image: resized, its grey
    region bleeds a pixel past the mask.)"""
    inside = (np.asarray(masks) > 0.5)[..., None]
    return np.where(inside, generated, person).astype(np.uint8)


# ---------------------------------------------------------------------------
# checkpoints


def load_image_head(path: str | os.PathLike, task: str = "text2image") -> Generator:
    """Head ``task`` of checkpoint ``path`` (with the shared VAE)."""
    folder = Path(path)
    sub = folder / HEAD_FOLDERS[task]
    if not sub.is_dir():
        raise UniFashionError(
            f"{folder}: no {task} head ({HEAD_FOLDERS[task]}/); train one with "
            f"`unifashion train generation --model {folder} --tasks {task} ...`"
        )
    return Generator.from_pretrained(sub, vae_folder=folder / VAE_FOLDER)


def load_generation_model(path: str | os.PathLike, task: str = "text2image") -> tuple[RetrievalModel, Generator]:
    return RetrievalModel.from_pretrained(path), load_image_head(path, task)


# ---------------------------------------------------------------------------
# user-facing calls


def generate_images(
    model: RetrievalModel,
    generator: Generator,
    *,
    texts: Sequence[str] | None = None,
    images: Sequence[str | os.PathLike | ImageRef] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    bf16: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> list[Image.Image]:
    """Guided generation: from texts (text only), reference images (image only), or both
    (composed: "this garment, but ..."; one text per image). ``on_step(done, total)``: progress."""
    if generator.task != "text2image":
        raise UniFashionError(f"generate: expected a text2image head, got a {generator.task} head")
    if not texts and not images:
        raise UniFashionError("generate: give a text, a reference image, or both")
    if texts and images and len(texts) != len(images):
        raise UniFashionError(f"generate: {len(texts)} texts for {len(images)} images (one text per image)")
    if images:
        feats = image_features(model, [as_ref(i) for i in images])
        states, mask = composed_condition(model, feats, texts, bf16) if texts else image_condition(model, feats, bf16)
    else:
        states, mask = text_condition(model, list(texts), bf16)
    latents = generator.sample(
        states, mask, sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed, on_step=on_step
    )
    return to_images(generator, latents)


def inpaint_images(
    model: RetrievalModel,
    generator: Generator,
    inputs: InpaintInputs,
    *,
    cloths: Sequence[str | os.PathLike | ImageRef] | None = None,
    texts: Sequence[str] | None = None,
    paste: bool = True,
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    bf16: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> list[Image.Image]:
    """Try-on (condition: the cloth images' queries) or design (condition: the texts) on prepared
    person inputs; with ``paste`` the person outside the mask is kept pixel for pixel."""
    if generator.task == "tryon":
        if not cloths:
            raise UniFashionError("try-on: give the cloth image")
        states, mask = image_condition(model, image_features(model, [as_ref(c) for c in cloths]), bf16)
    elif generator.task == "design":
        if not texts:
            raise UniFashionError("design: give the text describing the garment")
        states, mask = text_condition(model, list(texts), bf16)
    else:
        raise UniFashionError("inpaint_images: expected a tryon or design head")
    latents = generator.sample(
        states,
        mask,
        inputs.extra,
        sampler=sampler,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        on_step=on_step,
    )
    raw = to_pixels(generator.decode_latents(latents))
    if paste:
        raw = paste_back(raw, inputs.person_pixels, inputs.masks)
    return [Image.fromarray(a) for a in raw]
