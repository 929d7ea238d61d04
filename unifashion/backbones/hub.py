"""Resolving ``paper``-preset weights from a local folder or a hub id.

Only safetensors are read: a checkpoint that ships nothing but pickles
(``*.bin``, ``*.pt``, ``*.ckpt``) is refused rather than unpickled;
``unifashion convert`` (``unifashion/backbones/convert.py``) turns such files
into safetensors without running code. A hub id may name a revision (a branch,
tag, commit or ``refs/pr/N``) after ``@``: ``Salesforce/blip2-itm-vit-g@refs/pr/5``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from unifashion.utils.errors import BackboneError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def split_hub_id(source: str) -> tuple[str, str | None]:
    """``("owner/name", revision or None)`` of a hub id ``owner/name[@revision]``."""
    repo, at, revision = source.partition("@")
    if at and not revision:
        raise BackboneError(f"{source}: '@' must be followed by a revision (branch, tag, commit or refs/pr/N)")
    return repo, (revision or None)


def resolve_source(source: str, *, allow_patterns: list[str] | None = None) -> Path:
    """A local folder for ``source``: the folder itself if it exists, else a
    snapshot of hub repo ``source`` (``owner/name`` or ``owner/name@revision``;
    only the files matching ``allow_patterns``). A hub that cannot be reached
    gives a clear error."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackboneError(f"{source}: expected a folder of config.json + safetensors, got a file")
        return path
    repo, revision = split_hub_id(source)
    if source.startswith((".", "/", "~")) or repo.count("/") != 1:
        raise BackboneError(f"{source}: no such folder (and it is not a hub id of the form owner/name[@revision])")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision, allow_patterns=allow_patterns))
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
            "unpickling can run arbitrary code. Convert them first: unifashion convert weights "
            f"{folder} OUT_FOLDER (reads tensors only, never code)."
        )
    raise BackboneError(f"{folder}: no *.safetensors weights found")


def _prefixed(folder: Path, prefix: str, read) -> dict:
    """``{name: read(file handle, name)}`` for every tensor of the checkpoint in ``folder`` whose
    name starts with ``prefix`` (names kept whole)."""
    out: dict = {}
    for file in safetensors_files(folder):
        with safe_open(os.fspath(file), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key.startswith(prefix):
                    out[key] = read(f, key)
    return out


def tensor_shapes(folder: Path, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the checkpoint in ``folder`` whose name starts with
    ``prefix`` (prefix kept), read from the safetensors headers: no weight is loaded."""
    return _prefixed(folder, prefix, lambda f, key: tuple(f.get_slice(key).get_shape()))


def load_prefixed_tensors(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in ``folder`` whose name starts with
    ``prefix``, with the prefix removed. Reads only those tensors."""
    return {k[len(prefix) :]: v for k, v in _prefixed(folder, prefix, lambda f, key: f.get_tensor(key)).items()}


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
