"""The checkpoint folder: its names, its ``config.json``, the refusal of pickles, and adding a head.

A checkpoint folder::

    config.json  qformer.safetensors  tokenizer/      the retrieval part (always)
    captioner/                                        caption head      (phase 1b, ITG)
    vae/  generator/  tryon/  design/                 image heads       (phase 1b, q2I)
    logs/  training_config.json                       how it was trained

Every writer and reader of such a folder takes the names from here. This module is a leaf: it knows
the layout, not the models (heads are written through their own ``save_pretrained``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from unifashion.utils.errors import ConfigError, PickleCheckpointError, UniFashionError
from unifashion.utils.io import atomic_directory, atomic_write_json, copy_entries

MODEL_TYPE = "unifashion"
CONFIG_FILE = "config.json"
QFORMER_WEIGHTS = "qformer.safetensors"
TOKENIZER_FOLDER = "tokenizer"
CAPTION_FOLDER = "captioner"
VAE_FOLDER = "vae"
LOGS_FOLDER = "logs"
# The image head of each task.
HEAD_FOLDERS = {"text2image": "generator", "tryon": "tryon", "design": "design"}
# Every task a checkpoint can serve, in the order ``UniFashion.heads`` lists them.
TASKS: tuple[str, ...] = ("retrieval", "captioning", "text2image", "tryon", "design")
# Written by RetrievalModel.save_pretrained.
RETRIEVAL_ENTRIES = (CONFIG_FILE, QFORMER_WEIGHTS, TOKENIZER_FOLDER)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def refuse_pickles(folder: Path) -> None:
    """Raise :class:`PickleCheckpointError` naming the first pickle-format file anywhere under ``folder``."""
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())
    if found:
        names = ", ".join(str(p.relative_to(folder)) for p in found[:5])
        raise PickleCheckpointError(
            f"{folder}: holds pickle-format files ({names}); UniFashion checkpoints are safetensors only "
            "and pickle files are never loaded (they can run code). Remove them or convert them to safetensors."
        )


def read_checkpoint_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, with clear errors; pickle-only folders are refused."""
    if not folder.is_dir():
        raise UniFashionError(f"{folder}: no such checkpoint folder")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not any(folder.glob("*.safetensors")):
        raise UniFashionError(
            f"{folder}: holds pickle files ({', '.join(pickles)}) and no safetensors; they are not loaded"
        )
    path = folder / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UniFashionError(f"{path}: missing (a checkpoint folder has config.json + safetensors)") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("model_type") != MODEL_TYPE or "config" not in meta:
        raise ConfigError(f"{path}: not a UniFashion checkpoint (model_type {meta.get('model_type')!r})")
    return meta


def write_heads(folder: Path, *, captioner=None, vae=None, image_heads: dict[str, Any] | None = None) -> set[str]:
    """Write the given heads into ``folder`` (replacing those there); returns the entries written.
    One VAE serves every image head."""
    written: set[str] = set()
    if captioner is not None:
        shutil.rmtree(folder / CAPTION_FOLDER, ignore_errors=True)
        captioner.save_pretrained(folder / CAPTION_FOLDER)
        written.add(CAPTION_FOLDER)
    if vae is not None:
        shutil.rmtree(folder / VAE_FOLDER, ignore_errors=True)
        vae.save_pretrained(os.fspath(folder / VAE_FOLDER), safe_serialization=True)
        written.add(VAE_FOLDER)
    for task, head in (image_heads or {}).items():
        shutil.rmtree(folder / HEAD_FOLDERS[task], ignore_errors=True)
        head.save_pretrained(folder / HEAD_FOLDERS[task], with_vae=False)
        written.add(HEAD_FOLDERS[task])
    return written


def head_names(captioner: bool, image_tasks=None) -> set[str]:
    """The ``heads`` entries of ``config.json`` that a caption head and an image part add
    (``image_tasks``: the image heads' tasks; an empty list: a VAE alone; ``None``: no image part)."""
    names = {"captioning"} if captioner else set()
    if image_tasks is not None:
        names |= {"generation", *(f"generation:{t}" for t in image_tasks)}
    return names


@contextlib.contextmanager
def extended_checkpoint(
    source: str | os.PathLike, out: str | os.PathLike, *, replaced: set[str], logs: Path | None = None
) -> Iterator[tuple[Path, dict]]:
    """Add a head to checkpoint ``source``, written atomically to ``out`` (which may be ``source``).

    Yields a scratch folder holding a copy of ``source`` without the entries named in ``replaced``,
    and its parsed ``config.json``; the caller writes the new parts there and updates the dict. On
    exit the training ``logs`` folder is merged into ``logs/``, ``config.json`` is written, the
    scratch folder takes ``out``'s place in one rename, and the live logs are removed."""
    source = Path(source)
    meta = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    with atomic_directory(out) as tmp:
        copy_entries(source, tmp, skip=replaced)
        yield tmp, meta
        if logs is not None and logs.exists():
            shutil.copytree(logs, tmp / LOGS_FOLDER, dirs_exist_ok=True)
        atomic_write_json(tmp / CONFIG_FILE, meta)
    if logs is not None:
        shutil.rmtree(logs, ignore_errors=True)


def add_heads(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    qformer=None,
    captioner=None,
    vae=None,
    image_heads: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    logs: Path | None = None,
) -> Path:
    """Checkpoint ``source`` with the given parts added or replaced, written atomically to ``out``
    (which may be ``source``); other heads of ``source`` are kept. ``qformer``: a Q-Former module whose
    weights replace the checkpoint's (phase 2). ``training`` is merged into ``config.json``'s
    ``training`` entry; a caption head also records its LLM config."""
    image_heads = dict(image_heads or {})
    replaced = {CAPTION_FOLDER} if captioner is not None else set()
    if qformer is not None:
        replaced.add(QFORMER_WEIGHTS)
    if vae is not None:
        replaced.add(VAE_FOLDER)
    replaced |= {HEAD_FOLDERS[t] for t in image_heads}
    with extended_checkpoint(source, out, replaced=replaced, logs=logs) as (tmp, meta):
        if qformer is not None:
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in qformer.state_dict().items()}
            save_file(state, os.fspath(tmp / QFORMER_WEIGHTS))
        write_heads(tmp, captioner=captioner, vae=vae, image_heads=image_heads)
        added = head_names(captioner is not None, image_heads if vae is not None or image_heads else None)
        meta["heads"] = sorted(set(meta.get("heads", [])) | added)
        if captioner is not None:
            meta["config"]["llm"] = dataclasses.asdict(captioner.config)
        meta.setdefault("training", {}).update(training or {})
    return Path(out)


def without_heads(source: str | os.PathLike, out: str | os.PathLike, tasks) -> Path:
    """A copy of checkpoint ``source`` without the heads of ``tasks`` (``captioning`` and image tasks),
    and without its training logs, written atomically to ``out``; the VAE goes with the last image head."""
    source, tasks = Path(source), set(tasks)
    meta = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    have = {t for t in HEAD_FOLDERS if (source / HEAD_FOLDERS[t]).is_dir()}
    drop = {LOGS_FOLDER, *(HEAD_FOLDERS[t] for t in tasks & have)}
    gone = {f"generation:{t}" for t in tasks}
    if "captioning" in tasks:
        drop.add(CAPTION_FOLDER)
        gone.add("captioning")
    if not have - tasks:
        drop.add(VAE_FOLDER)
        gone.add("generation")
    meta["heads"] = [h for h in meta.get("heads", []) if h not in gone]
    with atomic_directory(out) as tmp:
        copy_entries(source, tmp, skip=drop | {CONFIG_FILE})
        atomic_write_json(tmp / CONFIG_FILE, meta)
    return Path(out)
