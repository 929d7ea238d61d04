"""Pretrained latent-diffusion parts for the ``paper`` preset.

A Stable Diffusion v1.x or Paint-by-Example folder (or hub id) with ``unet/``
and ``vae/`` subfolders; safetensors only. The ``mini`` and ``tiny`` presets
train their own U-Net and VAE (see ``unifashion/models/generator.py``).
"""

from __future__ import annotations

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
