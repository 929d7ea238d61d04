"""Resolving ``paper``-preset weights from a local folder or a hub id.

Only safetensors are read: a checkpoint that ships nothing but pickles
(``*.bin``, ``*.pt``, ``*.ckpt``) is refused rather than unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from unifashion.utils.errors import BackboneError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_source(source: str, *, allow_patterns: list[str] | None = None) -> Path:
    """A local folder for ``source``: the folder itself if it exists, else a
    snapshot of hub repo ``source`` (only the files matching
    ``allow_patterns``). A hub that cannot be reached gives a clear error."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackboneError(f"{source}: expected a folder of config.json + safetensors, got a file")
        return path
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise BackboneError(f"{source}: no such folder (and it is not a hub id of the form owner/name)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, allow_patterns=allow_patterns))
    except Exception as exc:  # the hub library raises many types; all mean "not available"
        raise BackboneError(
            f"{source}: not a local folder, and the hub could not provide it ({type(exc).__name__}: {exc}). "
            "Download it where a hub is reachable and pass the local folder instead."
        ) from exc


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackboneError(f"{path}: missing (expected a transformers/diffusers config.json)") from None
    except ValueError as exc:
        raise BackboneError(f"{path}: not valid JSON ({exc})") from None


def safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (sharded or not)."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise BackboneError(
            f"{folder}: holds only pickle weights ({', '.join(sorted(pickles))}); they are not loaded because "
            "unpickling can run arbitrary code. Convert them to safetensors first."
        )
    raise BackboneError(f"{folder}: no *.safetensors weights found")


def load_prefixed_tensors(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in ``folder`` whose name starts with
    ``prefix``, with the prefix removed. Reads only those tensors."""
    out: dict[str, torch.Tensor] = {}
    for file in safetensors_files(folder):
        with safe_open(os.fspath(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key.startswith(prefix):
                    out[key[len(prefix) :]] = f.get_tensor(key)
    return out


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str) -> None:
    """Load ``state`` into ``module``; a missing or unexpected tensor is an
    error naming the first few keys."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise BackboneError(
            f"{what}: weights do not match the model (missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]})"
        )
