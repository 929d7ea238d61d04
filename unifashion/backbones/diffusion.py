"""Pretrained latent-diffusion parts for the ``paper`` preset.

A Stable Diffusion v1.x or Paint-by-Example folder (or hub id) with ``unet/``
and ``vae/`` subfolders; safetensors only. The ``mini`` and ``tiny`` presets
train their own U-Net and VAE (see ``unifashion/models/generator.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from unifashion.backbones import hub
from unifashion.utils.errors import BackboneError


def _component_folder(source: str, subfolder: str) -> Path:
    folder = hub.resolve_source(
        source, allow_patterns=[f"{subfolder}/*.json", f"{subfolder}/*.safetensors", "model_index.json"]
    )
    sub = folder / subfolder
    if not sub.is_dir():
        raise BackboneError(f"{folder}: no {subfolder}/ folder (expected a Stable Diffusion layout)")
    hub.safetensors_files(sub)  # clear error for pickle-only folders
    return folder


def load_unet(source: str, subfolder: str = "unet"):
    """``UNet2DConditionModel`` from ``source/unet`` (SD: 4 input channels;
    Paint-by-Example: 9 = latent + masked latent + mask)."""
    from diffusers import UNet2DConditionModel

    folder = _component_folder(source, subfolder)
    try:
        return UNet2DConditionModel.from_pretrained(os.fspath(folder), subfolder=subfolder, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{folder / subfolder}: cannot load a UNet2DConditionModel ({exc})") from None


def load_vae(source: str, subfolder: str = "vae"):
    """``AutoencoderKL`` from ``source/vae``."""
    from diffusers import AutoencoderKL

    folder = _component_folder(source, subfolder)
    try:
        return AutoencoderKL.from_pretrained(os.fspath(folder), subfolder=subfolder, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{folder / subfolder}: cannot load an AutoencoderKL ({exc})") from None


def _source_json(source: str, relative: str) -> dict | None:
    """The JSON file ``relative`` of ``source`` (a folder or hub id; only that file is fetched),
    None when the source has none."""
    path = hub.resolve_source(source, allow_patterns=[relative]) / relative
    return hub.read_json(path) if path.is_file() else None


def pipeline_class(source: str) -> str | None:
    """The ``_class_name`` of ``source``'s model_index.json (None without one)."""
    name = (_source_json(source, "model_index.json") or {}).get("_class_name")
    return name if isinstance(name, str) else None


# The fields of a diffusers scheduler_config.json that fix the forward process a U-Net was trained under.
SCHEDULE_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")


def read_schedule(source: str) -> dict | None:
    """The forward-process fields of ``source``'s ``scheduler/scheduler_config.json``
    (None when the source has no scheduler folder)."""
    data = _source_json(source, "scheduler/scheduler_config.json")
    return None if data is None else {k: data[k] for k in SCHEDULE_FIELDS if k in data}


def check_schedule(config) -> None:
    """A pretrained U-Net must be trained and sampled under the betas it was made with: each
    forward-process field of ``config`` (a ``DiffusionConfig`` with a ``source``) must equal the
    source's scheduler_config.json. A difference is an error naming the field and both values."""
    schedule = read_schedule(config.source)
    if schedule is None:
        return
    for name, value in schedule.items():
        ours = getattr(config, name)
        same = abs(float(ours) - float(value)) <= 1e-12 if isinstance(value, float) else ours == value
        if not same:
            raise BackboneError(
                f"diffusion.{name}: {config.source}/scheduler/scheduler_config.json has {value!r}, the config "
                f"{ours!r}; set diffusion.{name} = {json.dumps(value)} (the U-Net was trained under the source's "
                "noise schedule)"
            )
