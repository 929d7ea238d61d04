"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def copy_entries(source: str | os.PathLike, dest: str | os.PathLike, *, skip: set[str] = frozenset()) -> None:
    """Copy every entry of folder ``source`` into ``dest`` except those named in ``skip`` and hidden ones."""
    dest = Path(dest)
    for entry in sorted(Path(source).iterdir()):
        if entry.name in skip or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name)
        else:
            shutil.copy2(entry, dest / entry.name)


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one system call (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
    ``renamex_np(RENAME_SWAP)``): at every instant each name holds one whole folder. False where
    the system or the file system has no such call (nothing was changed then)."""
    a, b = os.fsencode(a), os.fsencode(b)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        result = libc.renameat2(at_fdcwd, a, at_fdcwd, b, rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        result = libc.renamex_np(a, b, rename_swap)
    else:
        return False
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # e.g. a file system without the exchange
    raise OSError(err, os.strerror(err), os.fsdecode(a), None, os.fsdecode(b))


def _previous_copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.old/previous"))


def recover_directory(path: str | os.PathLike) -> bool:
    """Put back the folder that a replace without the exchange call (:func:`atomic_directory` on a
    system without one) had moved aside when it was killed before the new folder took its place.
    True when something was put back."""
    path = Path(path)
    if path.exists():
        return False
    for previous in _previous_copies(path):
        os.rename(previous, path)
        shutil.rmtree(previous.parent, ignore_errors=True)
        return True
    return False


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a scratch folder beside ``path``; on success it takes ``path``'s
    place, on failure it is removed and ``path`` is untouched.

    An existing ``path`` is swapped with the new folder in one system call
    (:func:`exchange_paths`), so a kill at any instant leaves the old folder or
    the new one at ``path``, never neither. Where the system has no such call,
    the old folder is moved aside first and the new one renamed into place; a
    kill between the two leaves the old one aside, and the next write of
    ``path`` (or :func:`recover_directory`) puts it back.

    With ``replace=False`` an existing ``path`` wins (another process finished
    first): the scratch folder is dropped and ``path`` is left as it is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if exchange_paths(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # the previous folder, now under the scratch name
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.rename(path, old / "previous")
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old / "previous", path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        try:
            os.rename(tmp, path)
        except OSError:
            # Lost a race with another writer of the same folder.
            if not path.exists() or replace:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
