"""CLIP-S (paper Table 3): torchmetrics' ``CLIPScore`` on a CLIP checkpoint the user provides.

The paper reports "the CLIP Score provided in TorchMetrics": the mean over
image-text pairs of 100 x the cosine of CLIP's projected image and text
embeddings, floored at 0. Nothing can be downloaded at run time, so the
checkpoint is a local folder (or a hub id where a hub is reachable), e.g. a
copy of ``openai/clip-vit-large-patch14``: ``config.json``, safetensors
weights and the processor files. Pickle-only checkpoints are refused.

Two adapters make torchmetrics work with the transformers release we pin:
``get_image_features`` / ``get_text_features`` return a model output there
(the projected embedding is its ``pooler_output``), and texts longer than the
text tower's positions are truncated by the tokenizer (torchmetrics would cut
the token ids and lose the end-of-text token CLIP pools from).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from unifashion.backbones.hub import read_json, resolve_source, safetensors_files
from unifashion.utils.errors import BackboneError

# What CLIPProcessor reads, each as one of the names transformers releases have written.
PROCESSOR_FILES = {
    "image processor": ("preprocessor_config.json", "processor_config.json"),
    "tokenizer": ("tokenizer.json", "vocab.json"),
}


class _Features(nn.Module):
    """A ``CLIPModel`` whose ``get_*_features`` return the projected embeddings as tensors."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    @property
    def config(self):
        return self.clip.config

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        return out if torch.is_tensor(out) else out.pooler_output

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.clip.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._tensor(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


class _Processor:
    """A ``CLIPProcessor`` that truncates texts to the text tower's length."""

    def __init__(self, processor, max_length: int):
        self.processor = processor
        self.max_length = max_length

    def __call__(self, text=None, images=None, **kwargs):
        if text is not None:
            kwargs.update(truncation=True, max_length=self.max_length)
        return self.processor(text=text, images=images, **kwargs)


def load_clip(source: str) -> tuple[nn.Module, object]:
    """(model, processor) of the CLIP checkpoint ``source`` in the form torchmetrics calls."""
    from transformers import CLIPModel, CLIPProcessor

    folder = resolve_source(source, allow_patterns=["*.json", "*.txt", "*.safetensors"])
    config = read_json(folder / "config.json")
    if config.get("model_type") != "clip":
        raise BackboneError(
            f"{folder / 'config.json'}: model_type {config.get('model_type')!r}; CLIP-S needs a CLIP checkpoint "
            "(model_type 'clip', e.g. openai/clip-vit-large-patch14)"
        )
    safetensors_files(folder)  # refuses pickle-only folders with a clear message
    for part, names in PROCESSOR_FILES.items():
        if not any((folder / name).is_file() for name in names):
            raise BackboneError(f"{folder}: no {' or '.join(names)} (CLIP's {part}, needed for CLIP-S)")
    model = CLIPModel.from_pretrained(str(folder), use_safetensors=True).eval()
    processor = CLIPProcessor.from_pretrained(str(folder))
    return _Features(model), _Processor(processor, int(model.config.text_config.max_position_embeddings))


class ClipScorer:
    """``scorer(images, texts)`` -> CLIP-S of the pairs, on the CPU or ``device``."""

    def __init__(self, source: str, device: str | torch.device = "cpu", batch_size: int = 64):
        self.model, self.processor = load_clip(source)
        self.model.to(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray | Image.Image], texts: Sequence[str]) -> float:
        from torchmetrics.multimodal import CLIPScore

        if len(images) != len(texts):
            raise ValueError(f"CLIP-S: {len(images)} images but {len(texts)} texts")
        if not images:
            raise ValueError("CLIP-S: no image-text pairs")
        metric = CLIPScore(model_name_or_path=lambda: (self.model, self.processor))
        device = next(self.model.parameters()).device
        for i in range(0, len(images), self.batch_size):
            chunk = [
                torch.from_numpy(np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im).copy())
                .permute(2, 0, 1)
                .to(device)
                for im in images[i : i + self.batch_size]
            ]
            metric.update(chunk, list(texts[i : i + self.batch_size]))
        return round(float(metric.compute()), 3)
