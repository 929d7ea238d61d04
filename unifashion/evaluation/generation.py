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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from unifashion.checkpoint import HEAD_FOLDERS
from unifashion.data.synth.attributes import garment_colour
from unifashion.utils.errors import UniFashionError


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
    """(N, e) normalised text embeddings."""
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    return torch.cat([model.qformer.text_embedding(model.tokenize(list(c))).float() for c in chunks])


def itc_score(model, embeds: torch.Tensor, texts: Sequence[str]) -> float:
    """Mean Eq. 3 similarity (best cosine over the queries) of each image, given by its
    ``image_embeddings`` (N, Q, e), with its text, x100."""
    txt = text_embeddings(model, texts)  # (N, e)
    return round(100.0 * float(torch.einsum("nqe,ne->nq", embeds, txt).amax(dim=1).mean()), 3)


@dataclass
class CategoryReference:
    """Image embeddings of labelled real images; a new image gets its nearest one's category."""

    embeddings: torch.Tensor  # (M, Q, e)
    categories: list[str]

    def classify(self, embeds: torch.Tensor) -> list[str]:
        """The category of each image, given by its ``image_embeddings`` (N, Q, e)."""
        # Image-image similarity: mean over query pairs' best match.
        sims = torch.einsum("nqe,mpe->nmqp", embeds, self.embeddings).amax(dim=-1).mean(dim=-1)
        return [self.categories[int(j)] for j in sims.argmax(dim=1)]


def category_reference(model, products, limit: int = 600, hw: tuple[int, int] = (64, 64)) -> CategoryReference:
    from unifashion.pipelines.generation import fit_image

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
    # None: each image head's own (its DiffusionConfig.sampler / .sampling_steps).
    sampler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    # Samplers compared side by side: (name, steps).
    sampler_sweep: tuple[tuple[str, int], ...] = (("plms", 50), ("ddim", 20), ("dpm++", 20))
    # The text head's composed requests (reference image + guidance text) and their text-only twin.
    composed: bool = True
    batch_size: int = 32
    seed: int = 0
    bf16: bool = False
    samples_dir: str | None = None
    # The published FID's Inception-v3 weights (safetensors); adds fid_inception / kid_inception.
    inception_weights: str | None = None
    # A CLIP checkpoint (local folder or hub id); adds clip_score (the paper's CLIP-S, torchmetrics').
    clip_model: str | None = None


@dataclass(frozen=True)
class SamplingPlan:
    """How one image head samples in this run."""

    sampler: str
    steps: int
    guidance: float | None
    seed: int
    batch_size: int
    progress: bool = True

    @property
    def name(self) -> str:
        return f"{self.sampler}-{self.steps}"


def resolve_sampling(gen, cfg: GenerationEvalConfig, progress: bool = True) -> SamplingPlan:
    """The configured sampler and steps, or where they are None the head's own (``gen.config``,
    its :class:`~unifashion.config.DiffusionConfig`)."""
    return SamplingPlan(
        sampler=gen.config.sampler if cfg.sampler is None else cfg.sampler,
        steps=int(gen.config.sampling_steps if cfg.steps is None else cfg.steps),
        guidance=cfg.guidance_scale,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        progress=progress,
    )


@dataclass
class Scorers:
    """What generated images are measured with, built once per split."""

    model: Any  # the retrieval model: ITC agreement, category by the nearest training image
    networks: dict[str, nn.Module]  # FID/KID feature networks by name ("effnet", "inception")
    clip: Any | None = None  # ClipScorer: the paper's CLIP-S
    reference: CategoryReference | None = None  # labelled training images for the category


def build_scorers(model, train, cfg: GenerationEvalConfig) -> tuple[Scorers, Any]:
    """The scorers of a split and the feature cache of ``model``'s encoder (built in this order:
    the tiny encoder's random weights come from the global seed)."""
    from unifashion.backbones.feature_cache import FeatureCache

    tiny = model.config.vision if model.config.vision.kind == "tiny_cnn" else None
    networks: dict[str, nn.Module] = {"effnet": effnet_features(tiny)}
    if cfg.inception_weights:
        from unifashion.evaluation.inception import load_fid_inception

        networks["inception"] = MemoisedFeatures(load_fid_inception(cfg.inception_weights), 2048)
    clip = None
    if cfg.clip_model:
        from unifashion.evaluation.clip_score import ClipScorer

        clip = ClipScorer(cfg.clip_model)
    cache = FeatureCache(model.vision)
    reference = category_reference(model, train.products) if train.products else None
    return Scorers(model, networks, clip, reference), cache


def judged(scorers: Scorers, images: Sequence, asked: dict[str, Any]) -> dict[str, float]:
    """``images`` against what was ``asked`` (its ``colours``, ``categories`` and ``texts``):
    colour and category accuracy, and the text-image agreement: ``itc_score`` (ours),
    ``clip_score`` (CLIP-S) with a CLIP model. The images are embedded once for the category
    and ``itc_score``."""
    embeds = image_embeddings(scorers.model, images)  # (N, Q, e)
    r = {
        "colour_accuracy": colour_accuracy(images, asked["colours"]),
        "category_accuracy": round(accuracy(scorers.reference.classify(embeds), asked["categories"]), 2),
        "itc_score": itc_score(scorers.model, embeds, asked["texts"]),
    }
    if scorers.clip is not None:
        r["clip_score"] = scorers.clip(images, asked["texts"])
    return r


def fids(scorers: Scorers, real: Sequence, fake: Sequence) -> dict[str, float]:
    """FID and KID of ``fake`` against ``real`` under every feature network."""
    r = {}
    for name, net in scorers.networks.items():
        fk = fid_kid(real, fake, net)
        r[f"fid_{name}"] = fk["fid"]
        r[f"kid_{name}_x1000"] = fk["kid_x1000"]
        r[f"kid_{name}_std_x1000"] = fk["kid_std_x1000"]
    return r


def colour_accuracy(images: Sequence[np.ndarray], wanted: Sequence[str | None]) -> float:
    """Colour accuracy (%): the garment colour measured from the pixels against the one asked."""
    return round(accuracy([garment_colour(im) for im in images], wanted), 2)


def score_images(scorers: Scorers, images: list[np.ndarray], seconds: float, wanted: dict[str, Any]) -> dict:
    """Every figure of generated ``images`` against what was asked: ``wanted`` holds the ``real``
    images (for FID), the ``colours`` and ``categories`` asked for and the ``texts`` given."""
    r = {**judged(scorers, images, wanted), "seconds_per_image": round(seconds, 4)}
    r.update(fids(scorers, wanted["real"], images))
    return r


def _generate(gen, states, mask, extra, plan: SamplingPlan, desc: str) -> tuple[list[np.ndarray], float]:
    """Images (H, W, 3) uint8 from conditions (N, L, d) in batches; and the seconds per image."""
    from unifashion.models.generator import to_pixels

    out: list[np.ndarray] = []
    t0 = time.perf_counter()
    n = states.shape[0]
    for i in tqdm(range(0, n, plan.batch_size), desc=desc, disable=not plan.progress, leave=False):
        sl = slice(i, i + plan.batch_size)
        lat = gen.sample(
            states[sl],
            None if mask is None else mask[sl],
            None if extra is None else extra[sl],
            sampler=plan.sampler,
            steps=plan.steps,
            guidance_scale=plan.guidance,
            seed=plan.seed + i,
        )
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


def _text_states(model, texts: Sequence[str], chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Text conditions (N, L, d) and their mask (N, L), encoded ``chunk`` texts at a time."""
    from unifashion.pipelines.generation import text_condition

    return _pad_states([text_condition(model, texts[i : i + chunk]) for i in range(0, len(texts), chunk)])


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


# -- text -> image: prompts, the sampler sweep, the real-image ceiling


def text_prompt_products(products: Sequence, limit: int) -> list:
    """The products whose first caption is a prompt: those with a colour label when any has one."""
    chosen = [p for p in products if p.captions and p.attributes.get("colour")][:limit]
    return chosen or [p for p in products if p.captions][:limit]


def asked_of(products: Sequence, texts: Sequence[str], hw: tuple[int, int]) -> dict[str, Any]:
    """What a request for ``products`` asks: their real images (H, W, 3), colours, categories, texts."""
    from unifashion.pipelines.generation import fit_image

    return {
        "real": [fit_image(p.images[0].open(), hw) for p in products],
        "colours": [p.attributes.get("colour") for p in products],
        "categories": [p.category for p in products],
        "texts": list(texts),
    }


def real_image_ceiling(scorers: Scorers, asked: dict[str, Any]) -> dict[str, float]:
    """The measurements on the real images: the best a generator can score under them."""
    return judged(scorers, asked["real"], asked)


def sweep_samplers(gen, states, mask, plan: SamplingPlan, sweep, text_result: dict, scorers: Scorers, asked) -> dict:
    """FID, colour accuracy and speed of each (sampler, steps) of ``sweep`` on the same prompts;
    the run's own sampler is not sampled twice (its figures come from ``text_result``)."""
    out = {}
    for name, steps in sweep:
        if (name, steps) == (plan.sampler, plan.steps):
            out[plan.name] = {
                k: v
                for k, v in text_result.items()
                if k.startswith(("fid_", "kid_")) or k in ("colour_accuracy", "seconds_per_image")
            }
            continue
        other = replace(plan, sampler=name, steps=steps)
        images, sec = _generate(gen, states, mask, None, other, desc=f"text -> image ({other.name})")
        out[other.name] = {
            **fids(scorers, asked["real"], images),
            "colour_accuracy": colour_accuracy(images, asked["colours"]),
            "seconds_per_image": round(sec, 4),
        }
    return out


def evaluate_text_to_image(gen, plan: SamplingPlan, products: Sequence, scorers: Scorers, sweep) -> tuple[dict, list]:
    """``text`` (with the sampler used), ``real_images`` (the ceiling) and ``samplers`` (the sweep);
    and the rows of the text sample sheet."""
    asked = asked_of(products, [p.captions[0] for p in products], gen.image_hw)
    states, mask = _text_states(scorers.model, asked["texts"])  # (N, L, d), (N, L)
    images, sec = _generate(gen, states, mask, None, plan, desc=f"text -> image ({plan.name})")
    text = {
        "sampler": plan.sampler,
        "steps": plan.steps,
        "n": len(products),
        **score_images(scorers, images, sec, asked),
    }
    out = {"text": text, "real_images": real_image_ceiling(scorers, asked)}
    out["samplers"] = sweep_samplers(gen, states, mask, plan, sweep, text, scorers, asked)
    return out, [(asked["texts"][i], [images[i], asked["real"][i]]) for i in range(min(16, len(products)))]


# -- composed (reference image + guidance text) -> image, and the guidance text alone


def evaluate_composed(gen, plan: SamplingPlan, trips: Sequence, by_id: dict, scorers: Scorers, cache, samples_dir):
    """``composed``: images from the reference's features and the guidance text (Eq. 9 query);
    ``composed_text_only``: the same requests as text only (the guidance text alone, not the
    target's caption). Both are scored against the targets."""
    from unifashion.pipelines.generation import composed_condition, fit_image, image_features

    refs = [by_id[t.reference].images[0] for t in trips]
    texts = [t.query_text() for t in trips]
    feats = image_features(scorers.model, refs, cache)
    chunks = [composed_condition(scorers.model, feats[i : i + 64], texts[i : i + 64]) for i in range(0, len(trips), 64)]
    states, mask = _pad_states(chunks)  # (T, L, d), (T, L)
    asked = asked_of([by_id[t.target] for t in trips], texts, gen.image_hw)
    composed, sec = _generate(gen, states, mask, None, plan, desc="composed -> image")
    out = {"composed": {"n": len(trips), **score_images(scorers, composed, sec, asked)}}
    tstates, tmask = _text_states(scorers.model, texts)
    text_only, sec = _generate(gen, tstates, tmask, None, plan, desc="guidance text only")
    out["composed_text_only"] = {"n": len(trips), **score_images(scorers, text_only, sec, asked)}
    if samples_dir:
        ref_px = [fit_image(r.open(), gen.image_hw) for r in refs[:12]]
        rows = [(texts[i], [ref_px[i], composed[i], asked["real"][i]]) for i in range(len(ref_px))]
        _grid(samples_dir / "composed.png", rows)
    return out


def evaluate_text_head(folder: Path, data, by_id: dict, scorers: Scorers, cache, cfg, progress, samples_dir) -> dict:
    """Everything the text2image head is scored on: text prompts, their samplers, composed requests."""
    from unifashion.pipelines.generation import load_image_head

    gen = load_image_head(folder, "text2image")
    plan = resolve_sampling(gen, cfg, progress)
    products = text_prompt_products(data.products, cfg.limit)
    out, text_rows = evaluate_text_to_image(gen, plan, products, scorers, cfg.sampler_sweep)
    trips = [t for t in data.triplets if t.target in by_id and t.reference in by_id and t.captions][: cfg.limit]
    if trips and cfg.composed:
        out.update(evaluate_composed(gen, plan, trips, by_id, scorers, cache, samples_dir))
    if samples_dir:
        _grid(samples_dir / "text.png", text_rows)
    return out


# -- try-on and design: per setting (paired, unpaired)


def person_samples(data, task: str) -> list:
    """The split's try-on samples a ``task`` head can take (design also needs a text and a sketch)."""
    samples = [s for s in data.tryon if s.agnostic_mask is not None and s.pose is not None]
    if task == "design":
        samples = [s for s in samples if s.text and s.sketch is not None]
    return samples


def person_condition(task: str, model, chosen: Sequence, cache) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Try-on: the garment image's query tokens; design: the garment text."""
    from unifashion.pipelines.generation import image_condition, image_features

    if task == "tryon":
        return image_condition(model, image_features(model, [s.cloth for s in chosen], cache))
    return _text_states(model, [s.text for s in chosen])


def _masked_colour_accuracy(images: np.ndarray, masks: np.ndarray, wanted: Sequence[str | None]) -> float:
    """Colour accuracy (%) with the colour measured inside each garment mask."""
    return round(accuracy([garment_colour(im, m) for im, m in zip(images, masks, strict=True)], wanted), 2)


def person_figures(paired: bool, chosen: Sequence, raw, pasted, persons, masks, by_id: dict) -> dict:
    """The figures of one try-on/design setting from generated (``raw``, then ``pasted`` back onto
    the person) and real ``persons`` (B, H, W, 3) under garment ``masks`` (B, H, W)."""
    wanted = [by_id[s.cloth_id].attributes.get("colour") if s.cloth_id in by_id else None for s in chosen]
    real_wanted = [
        by_id[s.cloth_id].attributes.get("colour") if s.paired and s.cloth_id in by_id else None for s in chosen
    ]
    return {
        "n": len(chosen),
        "outside_mask_change_raw": round(outside_mask_change(raw, persons, masks), 3),
        "outside_mask_change_pasted": round(outside_mask_change(pasted, persons, masks), 3),
        "colour_accuracy": _masked_colour_accuracy(pasted, masks, wanted),
        "colour_accuracy_real": _masked_colour_accuracy(persons, masks, real_wanted) if paired else None,
    }


def evaluate_person_setting(task, gen, plan, chosen, paired: bool, by_id, scorers, cache, samples_dir) -> dict:
    """One setting (paired or unpaired) of a try-on/design head: generate, paste the person back, measure."""
    from unifashion.pipelines.generation import fit_image, paste_back, sample_inputs

    setting = "paired" if paired else "unpaired"
    inputs = [sample_inputs(gen, chosen[i : i + 64]) for i in range(0, len(chosen), 64)]
    extra = torch.cat([x.extra for x in inputs])
    masks = np.concatenate([x.masks for x in inputs])  # (B, H, W)
    persons = np.stack([fit_image(s.person.open(), gen.image_hw) for s in chosen])  # (B, H, W, 3)
    states, mask = person_condition(task, scorers.model, chosen, cache)
    raw, sec = _generate(gen, states, mask, extra, plan, desc=f"{task} ({setting})")
    raw = np.stack(raw)
    pasted = paste_back(raw, persons, masks)
    r = person_figures(paired, chosen, raw, pasted, persons, masks, by_id)
    r["seconds_per_image"] = round(sec, 4)
    r.update(fids(scorers, list(persons), list(pasted)))
    if task == "design" and scorers.clip is not None:
        design_texts = [s.text for s in chosen]
        r["clip_score"] = scorers.clip(list(pasted), design_texts)
        if paired:
            r["clip_score_real"] = scorers.clip(list(persons), design_texts)
    if paired:
        r["ssim"] = round(ssim(pasted, persons), 4)
        r["l1"] = round(float(np.abs(pasted.astype(np.float32) - persons).mean()), 3)
    if samples_dir:
        cloth_px = [fit_image(s.cloth.open(), gen.image_hw) for s in chosen[:12]]
        rows = [(s.text or s.id, [persons[i], cloth_px[i], pasted[i]]) for i, s in enumerate(chosen[:12])]
        _grid(samples_dir / f"{task}_{setting}.png", rows)
    return r


def evaluate_person_head(task, folder: Path, data, by_id, scorers, cache, cfg, progress, samples_dir) -> dict:
    """A try-on or design head in the paired and unpaired settings (each with at least 2 samples)."""
    from unifashion.pipelines.generation import load_image_head

    gen = load_image_head(folder, task)
    plan = resolve_sampling(gen, cfg, progress)
    samples = person_samples(data, task)
    res: dict[str, Any] = {}
    for setting, paired in (("paired", True), ("unpaired", False)):
        chosen = [s for s in samples if s.paired == paired][: cfg.limit]
        if len(chosen) >= 2:
            res[setting] = evaluate_person_setting(task, gen, plan, chosen, paired, by_id, scorers, cache, samples_dir)
    return res


def evaluate_generation_split(
    model_path: str | os.PathLike,
    data_root,
    split: str,
    cfg: GenerationEvalConfig,
    fmt: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Every generation figure of one split, for each image head the checkpoint has."""
    from unifashion.data.formats import read_split
    from unifashion.models.retrieval import RetrievalModel

    folder = Path(model_path)
    model = RetrievalModel.from_pretrained(folder).eval()
    data = read_split(data_root, split, fmt)
    train = read_split(data_root, "train", fmt)
    scorers, cache = build_scorers(model, train, cfg)
    by_id = {**train.product_map(), **data.product_map()}
    samples_dir = Path(cfg.samples_dir) / split if cfg.samples_dir else None
    out: dict[str, Any] = {"split": split, "limit": cfg.limit}
    if (folder / HEAD_FOLDERS["text2image"]).is_dir():
        if len([p for p in data.products if p.captions]) >= 2 and scorers.reference is not None:
            out.update(evaluate_text_head(folder, data, by_id, scorers, cache, cfg, progress, samples_dir))
        else:
            out["text"] = {"skipped": f"split {split!r} has fewer than 2 captioned products (or train has none)"}
    for task in ("tryon", "design"):
        if (folder / task).is_dir():
            out[task] = evaluate_person_head(task, folder, data, by_id, scorers, cache, cfg, progress, samples_dir)
    if len(out) == 2:
        raise UniFashionError(f"{folder}: no image head (generator/, tryon/ or design/); train one first")
    return out


def evaluate_generation(
    model_path,
    data_root,
    splits: Sequence[str],
    cfg: GenerationEvalConfig | None = None,
    fmt: str | None = None,
    json_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    from unifashion.utils.io import atomic_write_json

    cfg = cfg or GenerationEvalConfig()
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    nets = "efficientnet-lite0 (fid_effnet)" + (", FID Inception-v3 (fid_inception)" if cfg.inception_weights else "")
    result = {
        "model": str(model_path),
        "data": str(data_root),
        "feature_networks": nets,
        "clip_model": cfg.clip_model,
        "splits": {s: evaluate_generation_split(model_path, data_root, s, cfg, fmt, progress) for s in splits},
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    if json_path:
        atomic_write_json(Path(json_path), result)
    return result
