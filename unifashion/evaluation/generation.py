"""Generation metrics (paper Table 3) and ``unifashion eval generation``.

- FID and KID through torchmetrics with a pluggable feature network. Offline
  we use EfficientNet-Lite0's pooled head features and report them as
  ``fid_effnet`` / ``kid_effnet``: the same formulas as the published
  Inception FID, not comparable with its numbers.
- ``itc_score``: text-image agreement in the role of CLIP-S, by our own
  Q-Former (mean over pairs of the Eq. 3 similarity x 100; named as ours);
  ``clip_score``: the paper's CLIP-S itself (torchmetrics' CLIPScore) when a
  CLIP checkpoint is given (:mod:`unifashion.evaluation.clip_score`).
- Attribute accuracy on FashionSynth: the garment colour measured from the
  pixels (:func:`garment_colour`) and the category by the retrieval model
  (nearest training image), against what was asked. Both measurements are
  also run on the real images of the split: their accuracy there is the
  ceiling a generator can reach under them.
- Try-on: how much the person outside the mask changed (mean absolute pixel
  difference, 0-255) before and after pasting the person back, SSIM and
  L1 against the ground truth in the paired setting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from unifashion.data.synth.attributes import COLOURS
from unifashion.utils.errors import UniFashionError

_COLOUR_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32)  # (K, 3)


# ---------------------------------------------------------------------------
# garment colour from pixels


def _palette_labels(pixels: np.ndarray) -> np.ndarray:
    """Nearest palette colour of each pixel (P, 3), allowing for shading: each palette colour may be
    scaled by 0.75-1.15 (the renderer's light and folds) before the distance is taken."""
    p = pixels.astype(np.float32)
    scale = np.clip((p @ _PALETTE.T) / (_PALETTE * _PALETTE).sum(1), 0.75, 1.15)  # (P, K)
    dist = np.linalg.norm(p[:, None, :] - scale[..., None] * _PALETTE[None], axis=-1)
    return dist.argmin(axis=1)


def garment_colour(image: np.ndarray, mask: np.ndarray | None = None, threshold: float = 35.0) -> str | None:
    """The dominant palette colour of the garment in a uint8 (H, W, 3) image.

    Without ``mask``, the garment is whatever differs from the background by
    more than ``threshold`` (background = median of a 2-pixel frame); with
    ``mask`` (H, W), the pixels where it is > 0.5. None when under 2 % of the
    image is garment."""
    a = np.asarray(image, dtype=np.float32)
    if mask is None:
        frame = np.concatenate(
            [a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3), a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)]
        )
        fg = np.linalg.norm(a - np.median(frame, axis=0), axis=-1) > threshold
    else:
        fg = np.asarray(mask) > 0.5
    pixels = a[fg]
    if len(pixels) < 0.02 * a.shape[0] * a.shape[1]:
        return None
    return _COLOUR_NAMES[int(np.bincount(_palette_labels(pixels), minlength=len(_COLOUR_NAMES)).argmax())]


def accuracy(predicted: Sequence[str | None], wanted: Sequence[str]) -> float:
    """Share (%) of ``predicted`` equal to ``wanted`` (None counts as wrong)."""
    if len(predicted) != len(wanted):
        raise ValueError(f"accuracy: {len(predicted)} predictions for {len(wanted)} targets")
    if not wanted:
        return float("nan")
    return 100.0 * sum(p == w for p, w in zip(predicted, wanted, strict=True)) / len(wanted)


# ---------------------------------------------------------------------------
# FID / KID


class MemoisedFeatures(nn.Module):
    """Wraps a feature network for torchmetrics' FID/KID (uint8 images (B, 3, H, W) -> (B, C)) and
    remembers its output per batch content, so FID and KID of the same images, and a real set
    scored against several generated sets, cost one pass."""

    def __init__(self, net: nn.Module, num_features: int):
        super().__init__()
        self.net = net
        self.num_features = int(num_features)
        self._memo: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import hashlib

        arr = images.detach().cpu().to(torch.uint8)
        key = hashlib.sha1(arr.numpy().tobytes() + str(tuple(arr.shape)).encode()).hexdigest()
        if key not in self._memo:
            self._memo[key] = self.net(arr).float()
        return self._memo[key]


class EncoderFeatures(nn.Module):
    """One of our frozen image encoders as a feature network: uint8 images (B, 3, H, W) -> pooled
    features (B, C) (padded to a square with white, resized, normalised as the encoder wants)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.num_features = int(encoder.feature_dim)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        arrays = list(images.detach().cpu().to(torch.uint8).numpy().transpose(0, 2, 3, 1))
        return self.encoder.encode(arrays).pooled.float()


def effnet_features(vision_config=None) -> MemoisedFeatures:
    """The offline FID network: EfficientNet-Lite0 (ImageNet weights), pooled 1280-d head features;
    with a ``tiny_cnn`` config, that random encoder (for tests)."""
    from dataclasses import replace

    from unifashion.backbones.vision import load_vision_encoder
    from unifashion.config import VisionConfig

    cfg = vision_config or VisionConfig()
    if cfg.kind == "efficientnet_lite0":
        cfg = replace(cfg, feature_layer="head", feature_dim=1280, resize_mode="pad")
    encoder = load_vision_encoder(cfg)
    return MemoisedFeatures(EncoderFeatures(encoder), encoder.feature_dim)


def _as_uint8_batch(images: Sequence[np.ndarray | Image.Image]) -> torch.Tensor:
    arrs = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im, dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)


def fid_kid(
    real: Sequence[np.ndarray | Image.Image],
    fake: Sequence[np.ndarray | Image.Image],
    features: nn.Module,
    *,
    kid_subset: int = 100,
    kid_subsets: int = 50,
    batch_size: int = 64,
) -> dict[str, float]:
    """FID and KID (mean and std over subsets, x1000 as usually printed) between two image sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise UniFashionError(f"FID needs at least 2 images per set, got {len(real)} real and {len(fake)} generated")
    subset = min(kid_subset, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=features, normalize=False)
    kid = KernelInceptionDistance(feature=features, subsets=kid_subsets, subset_size=subset, normalize=False)
    for which, images in ((True, real), (False, fake)):
        for i in range(0, len(images), batch_size):
            batch = _as_uint8_batch(images[i : i + batch_size])
            fid.update(batch, real=which)
            kid.update(batch, real=which)  # same batch: the features come from the memo
    kid_mean, kid_std = kid.compute()
    return {
        "fid": round(float(fid.compute()), 4),
        "kid_x1000": round(1000 * float(kid_mean), 4),
        "kid_std_x1000": round(1000 * float(kid_std), 4),
        "n_real": len(real),
        "n_fake": len(fake),
    }


# ---------------------------------------------------------------------------
# text-image agreement and category by the retrieval model


@torch.no_grad()
def image_embeddings(model, images: Sequence[np.ndarray | Image.Image], batch_size: int = 64) -> torch.Tensor:
    """(N, Q, e) normalised query embeddings of images given as pixels."""
    out = []
    for i in range(0, len(images), batch_size):
        feats = model.vision.encode(list(images[i : i + batch_size])).patch
        out.append(model.qformer.image_embeddings(feats).float())
    return torch.cat(out)


@torch.no_grad()
def text_embeddings(model, texts: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    return torch.cat([model.qformer.text_embedding(model.tokenize(list(texts[i : i + batch_size]))).float()
                      for i in range(0, len(texts), batch_size)])  # fmt: skip


def itc_score(model, images: Sequence, texts: Sequence[str]) -> float:
    """Mean Eq. 3 similarity (best cosine over the queries) of each image with its text, x100."""
    img = image_embeddings(model, images)  # (N, Q, e)
    txt = text_embeddings(model, texts)  # (N, e)
    return round(100.0 * float(torch.einsum("nqe,ne->nq", img, txt).amax(dim=1).mean()), 3)


@dataclass
class CategoryReference:
    """Image embeddings of labelled real images; a new image gets its nearest one's category."""

    embeddings: torch.Tensor  # (M, Q, e)
    categories: list[str]

    def classify(self, model, images: Sequence) -> list[str]:
        emb = image_embeddings(model, images)  # (N, Q, e)
        # Image-image similarity: mean over query pairs' best match.
        sims = torch.einsum("nqe,mpe->nmqp", emb, self.embeddings).amax(dim=-1).mean(dim=-1)
        return [self.categories[int(j)] for j in sims.argmax(dim=1)]


def category_reference(model, products, limit: int = 600, hw: tuple[int, int] = (64, 64)) -> CategoryReference:
    from unifashion.generation import fit_image

    chosen = products[:: max(1, len(products) // limit)][:limit]
    images = [fit_image(p.images[0].open(), hw) for p in chosen]
    return CategoryReference(image_embeddings(model, images), [p.category for p in chosen])


# ---------------------------------------------------------------------------
# try-on measurements


def outside_mask_change(output: np.ndarray, person: np.ndarray, masks: np.ndarray, margin: float = 0.5) -> float:
    """Mean absolute pixel difference (0-255) between ``output`` and ``person`` (B, H, W, 3) where the
    mask (B, H, W) is below ``margin``."""
    keep = np.asarray(masks) < margin
    if not keep.any():
        return float("nan")
    diff = np.abs(output.astype(np.float32) - person.astype(np.float32)).mean(axis=-1)
    return float(diff[keep].mean())


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (torchmetrics, 11 x 11 Gaussian window) between two uint8 image batches."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255
    return float(structural_similarity_index_measure(x, y, data_range=1.0))


# ---------------------------------------------------------------------------
# the evaluation run


@dataclass
class GenerationEvalConfig:
    limit: int = 300  # prompts (and try-on samples) per setting
    sampler: str = "dpm++"
    steps: int = 20
    guidance_scale: float | None = None
    # Samplers compared side by side: (name, steps).
    sampler_sweep: tuple[tuple[str, int], ...] = (("plms", 50), ("ddim", 20), ("dpm++", 20))
    batch_size: int = 32
    seed: int = 0
    bf16: bool = False
    samples_dir: str | None = None
    # The published FID's Inception-v3 weights (safetensors); adds fid_inception / kid_inception.
    inception_weights: str | None = None
    # A CLIP checkpoint (local folder or hub id); adds clip_score (the paper's CLIP-S, torchmetrics').
    clip_model: str | None = None


def _generate(
    gen, states, mask, extra, *, sampler, steps, guidance, seed, batch_size, progress, desc
) -> tuple[list[np.ndarray], float]:
    from unifashion.models.generator import to_pixels

    out: list[np.ndarray] = []
    t0 = time.perf_counter()
    n = states.shape[0]
    for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        sl = slice(i, i + batch_size)
        lat = gen.sample(states[sl], None if mask is None else mask[sl], None if extra is None else extra[sl],
                         sampler=sampler, steps=steps, guidance_scale=guidance, seed=seed + i)  # fmt: skip
        out += list(to_pixels(gen.decode_latents(lat)))
    return out, (time.perf_counter() - t0) / max(1, n)


def _pad_states(chunks: list[tuple[torch.Tensor, torch.Tensor | None]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate condition batches of different lengths (padding with masked zeros)."""
    n = max(s.shape[1] for s, _ in chunks)
    states, masks = [], []
    for s, m in chunks:
        m = torch.ones(s.shape[:2], dtype=torch.long) if m is None else m
        pad = n - s.shape[1]
        states.append(torch.nn.functional.pad(s, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(m, (0, pad)))
    return torch.cat(states), torch.cat(masks)


def _grid(path: Path, rows: list[tuple[str, list[np.ndarray]]], cell: int = 96) -> None:
    """A PNG sheet: one row per item, a caption on the left."""
    from PIL import ImageDraw

    if not rows:
        return
    cols = max(len(r[1]) for r in rows)
    label_w = 260
    sheet = Image.new("RGB", (label_w + cols * cell, len(rows) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        words, line, lines = label.split(), "", []
        for w in words:
            if len(line) + len(w) > 38:
                lines.append(line)
                line = ""
            line += w + " "
        lines.append(line)
        draw.multiline_text((4, r * cell + 4), "\n".join(lines[:6]), fill=(0, 0, 0))
        for c, im in enumerate(images):
            pic = Image.fromarray(im)
            pic.thumbnail((cell, cell))
            sheet.paste(pic, (label_w + c * cell, r * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def evaluate_generation_split(model_path: str | os.PathLike, data_root, split: str, cfg: GenerationEvalConfig,
                              fmt: str | None = None, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    from unifashion.backbones.feature_cache import FeatureCache
    from unifashion.data.formats import read_split
    from unifashion.generation import (
        composed_condition,
        fit_image,
        image_features,
        load_image_head,
        paste_back,
        sample_inputs,
        text_condition,
    )
    from unifashion.models.retrieval import RetrievalModel

    folder = Path(model_path)
    model = RetrievalModel.from_pretrained(folder).eval()
    data = read_split(data_root, split, fmt)
    train = read_split(data_root, "train", fmt)
    networks = {"effnet": effnet_features(model.config.vision if model.config.vision.kind == "tiny_cnn" else None)}
    if cfg.inception_weights:
        from unifashion.evaluation.inception import load_fid_inception

        networks["inception"] = MemoisedFeatures(load_fid_inception(cfg.inception_weights), 2048)
    clip_s = None
    if cfg.clip_model:
        from unifashion.evaluation.clip_score import ClipScorer

        clip_s = ClipScorer(cfg.clip_model)

    def agreement(images, texts) -> dict[str, float]:
        r = {"itc_score": itc_score(model, images, texts)}
        if clip_s is not None:
            r["clip_score"] = clip_s(images, texts)
        return r

    def fids(real_set, fake_set) -> dict[str, float]:
        r = {}
        for name, net in networks.items():
            fk = fid_kid(real_set, fake_set, net)
            r.update(
                {
                    f"fid_{name}": fk["fid"],
                    f"kid_{name}_x1000": fk["kid_x1000"],
                    f"kid_{name}_std_x1000": fk["kid_std_x1000"],
                }
            )
        return r

    cache = FeatureCache(model.vision)
    reference = category_reference(model, train.products) if train.products else None
    by_id = {**train.product_map(), **data.product_map()}
    out: dict[str, Any] = {"split": split, "limit": cfg.limit}
    samples_dir = Path(cfg.samples_dir) / split if cfg.samples_dir else None
    common = {"guidance": cfg.guidance_scale, "seed": cfg.seed, "batch_size": cfg.batch_size, "progress": progress}

    has_products = len([p for p in data.products if p.captions]) >= 2 and reference is not None
    if (folder / "generator").is_dir() and not has_products:
        out["text"] = {"skipped": f"split {split!r} has fewer than 2 captioned products (or train has none)"}
    if (folder / "generator").is_dir() and has_products:
        gen = load_image_head(folder, "text2image")
        hw = gen.image_hw
        products = [p for p in data.products if p.captions and p.attributes.get("colour")][: cfg.limit]
        if not products:
            products = [p for p in data.products if p.captions][: cfg.limit]
        prompts = [p.captions[0] for p in products]
        real = [fit_image(p.images[0].open(), hw) for p in products]
        colours = [p.attributes.get("colour") for p in products]
        cats = [p.category for p in products]
        ceiling = {"colour_accuracy": round(accuracy([garment_colour(r) for r in real], colours), 2),
                   "category_accuracy": round(accuracy(reference.classify(model, real), cats), 2)}  # fmt: skip
        states, mask = _pad_states([text_condition(model, prompts[i : i + 64]) for i in range(0, len(prompts), 64)])

        def score(images: list[np.ndarray], seconds: float, real_set, colours_wanted, cats_wanted, texts) -> dict:
            r = {"colour_accuracy": round(accuracy([garment_colour(im) for im in images], colours_wanted), 2),
                 "category_accuracy": round(accuracy(reference.classify(model, images), cats_wanted), 2),
                 **agreement(images, texts), "seconds_per_image": round(seconds, 4)}  # fmt: skip
            r.update(fids(real_set, images))
            return r

        text_images, sec = _generate(gen, states, mask, None, sampler=cfg.sampler, steps=cfg.steps,
                                     desc=f"text -> image ({cfg.sampler}-{cfg.steps})", **common)  # fmt: skip
        out["text"] = {"sampler": cfg.sampler, "steps": cfg.steps, "n": len(prompts),
                       **score(text_images, sec, real, colours, cats, prompts)}  # fmt: skip
        out["real_images"] = {**ceiling, **agreement(real, prompts)}
        sweep = {}
        for name, steps in cfg.sampler_sweep:
            if (name, steps) == (cfg.sampler, cfg.steps):
                sweep[f"{name}-{steps}"] = {
                    k: v
                    for k, v in out["text"].items()
                    if k.startswith(("fid_", "kid_")) or k in ("colour_accuracy", "seconds_per_image")
                }
                continue
            images, sec = _generate(
                gen, states, mask, None, sampler=name, steps=steps, desc=f"text -> image ({name}-{steps})", **common
            )
            sweep[f"{name}-{steps}"] = {**fids(real, images), "colour_accuracy": round(accuracy([garment_colour(im) for im in images], colours), 2),
                                        "seconds_per_image": round(sec, 4)}  # fmt: skip
        out["samplers"] = sweep

        trips = [t for t in data.triplets if t.target in by_id and t.reference in by_id and t.captions][: cfg.limit]
        if trips:
            refs = [by_id[t.reference].images[0] for t in trips]
            texts = [t.query_text() for t in trips]
            feats = image_features(model, refs, cache)
            cstates, cmask = _pad_states(
                [composed_condition(model, feats[i : i + 64], texts[i : i + 64]) for i in range(0, len(trips), 64)]
            )
            comp_images, sec = _generate(
                gen, cstates, cmask, None, sampler=cfg.sampler, steps=cfg.steps, desc="composed -> image", **common
            )
            targets = [by_id[t.target] for t in trips]
            real_t = [fit_image(p.images[0].open(), hw) for p in targets]
            out["composed"] = {"n": len(trips), **score(comp_images, sec, real_t, [p.attributes.get("colour") for p in targets],
                                                        [p.category for p in targets], [t.query_text() for t in trips])}  # fmt: skip
            # The same requests as text only (the target's own caption is not given: the guidance text alone).
            tstates, tmask = _pad_states([text_condition(model, texts[i : i + 64]) for i in range(0, len(texts), 64)])
            tonly, sec = _generate(
                gen, tstates, tmask, None, sampler=cfg.sampler, steps=cfg.steps, desc="guidance text only", **common
            )
            out["composed_text_only"] = {"n": len(trips), **score(tonly, sec, real_t, [p.attributes.get("colour") for p in targets],
                                                                  [p.category for p in targets], texts)}  # fmt: skip
            if samples_dir:
                ref_px = [fit_image(r.open(), hw) for r in refs[:12]]
                _grid(
                    samples_dir / "composed.png",
                    [(texts[i], [ref_px[i], comp_images[i], real_t[i]]) for i in range(len(ref_px))],
                )
        if samples_dir:
            _grid(
                samples_dir / "text.png",
                [(prompts[i], [text_images[i], real[i]]) for i in range(min(16, len(prompts)))],
            )

    for task in ("tryon", "design"):
        if not (folder / task).is_dir():
            continue
        gen = load_image_head(folder, task)
        samples = [s for s in data.tryon if s.agnostic_mask is not None and s.pose is not None]
        if task == "design":
            samples = [s for s in samples if s.text and s.sketch is not None]
        res: dict[str, Any] = {}
        for setting, paired in (("paired", True), ("unpaired", False)):
            chosen = [s for s in samples if s.paired == paired][: cfg.limit]
            if len(chosen) < 2:
                continue
            inputs = [sample_inputs(gen, chosen[i : i + 64]) for i in range(0, len(chosen), 64)]
            extra = torch.cat([x.extra for x in inputs])
            masks = np.concatenate([x.masks for x in inputs])
            persons = np.stack([fit_image(s.person.open(), gen.image_hw) for s in chosen])
            if task == "tryon":
                feats = image_features(model, [s.cloth for s in chosen], cache)
                from unifashion.generation import image_condition

                states, mask = image_condition(model, feats)
            else:
                states, mask = _pad_states(
                    [text_condition(model, [s.text for s in chosen[i : i + 64]]) for i in range(0, len(chosen), 64)]
                )
            raw, sec = _generate(
                gen, states, mask, extra, sampler=cfg.sampler, steps=cfg.steps, desc=f"{task} ({setting})", **common
            )
            raw = np.stack(raw)
            pasted = paste_back(raw, persons, masks)
            wanted = [by_id[s.cloth_id].attributes.get("colour") if s.cloth_id in by_id else None for s in chosen]
            r = {
                "n": len(chosen),
                "outside_mask_change_raw": round(outside_mask_change(raw, persons, masks), 3),
                "outside_mask_change_pasted": round(outside_mask_change(pasted, persons, masks), 3),
                "colour_accuracy": round(accuracy([garment_colour(im, m) for im, m in zip(pasted, masks, strict=True)], wanted), 2),
                "colour_accuracy_real": round(accuracy([garment_colour(im, m) for im, m in zip(persons, masks, strict=True)],
                                                       [by_id[s.cloth_id].attributes.get("colour") if s.paired and s.cloth_id in by_id else None for s in chosen]), 2)
                if paired else None,
                "seconds_per_image": round(sec, 4),
            }  # fmt: skip
            r.update(fids(list(persons), list(pasted)))
            if task == "design" and clip_s is not None:
                design_texts = [s.text for s in chosen]
                r["clip_score"] = clip_s(list(pasted), design_texts)
                if paired:
                    r["clip_score_real"] = clip_s(list(persons), design_texts)
            if paired:
                r["ssim"] = round(ssim(pasted, persons), 4)
                r["l1"] = round(float(np.abs(pasted.astype(np.float32) - persons).mean()), 3)
            res[setting] = r
            if samples_dir:
                cloth_px = [fit_image(s.cloth.open(), gen.image_hw) for s in chosen[:12]]
                _grid(samples_dir / f"{task}_{setting}.png",
                      [(s.text or s.id, [persons[i], cloth_px[i], pasted[i]]) for i, s in enumerate(chosen[:12])])  # fmt: skip
        out[task] = res
    if len(out) == 2:
        raise UniFashionError(f"{folder}: no image head (generator/, tryon/ or design/); train one first")
    return out


def evaluate_generation(model_path, data_root, splits: Sequence[str], cfg: GenerationEvalConfig | None = None,
                        fmt: str | None = None, json_path: str | os.PathLike | None = None, progress: bool = True) -> dict:  # fmt: skip
    from unifashion.utils.io import atomic_write_json

    cfg = cfg or GenerationEvalConfig()
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    nets = "efficientnet-lite0 (fid_effnet)" + (", FID Inception-v3 (fid_inception)" if cfg.inception_weights else "")
    result = {"model": str(model_path), "data": str(data_root), "feature_networks": nets, "clip_model": cfg.clip_model,
              "splits": {s: evaluate_generation_split(model_path, data_root, s, cfg, fmt, progress) for s in splits}}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - started, 1)
    if json_path:
        atomic_write_json(Path(json_path), result)
    return result
