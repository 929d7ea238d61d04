"""Write-once tables of rows on disk, memory-mapped by every process that reads them.

Training holds large per-image arrays (frozen features, VAE latents, try-on inputs) that never
change during a run. Kept in RAM they cost their size once per process; here each is one ``.npy``
file, computed chunk by chunk (never whole in memory) by one process (rank 0 of a distributed run;
the others wait), renamed into place only when complete, then mapped read-only by every process.
The caller names the file by a hash of everything its rows depend on, so an existing file is
used as it is: a resumed run, or a later stage reading the same rows, computes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unifashion.utils.errors import DataError


def is_writer() -> bool:
    """The process that writes shared files: rank 0 of a distributed run, or the only process."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Every process of a distributed run waits here for the others (nothing without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def state_key(module: torch.nn.Module, **settings) -> str:
    """Hash of a module's weights (names and bytes) and of JSON-able ``settings``: what a table of
    rows computed by a frozen module is named by."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def write_once_table(
    path: str | os.PathLike,
    n: int,
    rows: Callable[[int, int], np.ndarray],
    *,
    chunk: int = 256,
    progress: bool = False,
    desc: str = "table",
) -> torch.Tensor:
    """The (n, ...) table at ``path`` as a read-only tensor over a memory map. When the file is
    missing, the writer fills it with ``rows(start, stop)`` (an array of ``stop - start`` rows,
    every call the same trailing shape and dtype), ``chunk`` rows at a time. ``n`` must be > 0."""
    path = Path(path)
    if n <= 0:
        raise ValueError(f"{path}: a table needs at least one row")
    if not path.is_file() and is_writer():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            array = None
            for start in tqdm(range(0, n, chunk), desc=desc, disable=not progress, leave=False):
                part = np.asarray(rows(start, min(start + chunk, n)))
                if array is None:
                    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=part.dtype, shape=(n, *part.shape[1:]))
                if part.shape[1:] != array.shape[1:] or part.dtype != array.dtype:
                    raise ValueError(
                        f"{path}: rows {start}+ are {part.dtype} {part.shape[1:]}, "
                        f"the first were {array.dtype} {array.shape[1:]}"
                    )
                array[start : start + len(part)] = part
            array.flush()
            del array
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    barrier()
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable table ({exc}); delete it to rebuild", path=str(path)) from None
    if array.shape[0] != n:
        raise DataError(f"holds {array.shape[0]} rows where {n} were expected; delete it to rebuild", path=str(path))
    with warnings.catch_warnings():  # read-only on purpose: readers copy rows out by indexing
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)
