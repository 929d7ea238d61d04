"""Pixels stored in HDF5 files (the FashionGen release): rows of an (N, H, W, 3) uint8 dataset.

An :class:`~unifashion.data.records.ImageRef` with a ``key`` points at one such row; this module
reads it, so the generic record type needs no reader of a particular format.
"""

from __future__ import annotations

import functools
import os

import numpy as np


@functools.lru_cache(maxsize=8)
def _open_h5(path: str, pid: int):
    import h5py

    return h5py.File(path, "r")


def read_h5_image(path: str, key: str, index: int) -> np.ndarray:
    """One stored image row; file handles are kept open per process."""
    f = _open_h5(path, os.getpid())
    return np.asarray(f[key][index], dtype=np.uint8)
