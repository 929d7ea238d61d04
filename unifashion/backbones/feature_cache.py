"""On-disk cache of frozen image features, keyed by image content and encoder.

The vision encoder is frozen, so its features never change for a given image:
they are computed once and stored as float16 ``.npy`` files under
``$UNIFASHION_HOME/features/<encoder key>/``. The encoder key hashes the
encoder's weights and preprocessing settings (another preset or image size
is another key); the file name hashes the image's bytes (a renamed file hits,
an edited file misses). Later epochs and phases read the cache instead of
running the encoder; ``benchmarks/feature_cache.py`` measures the speed-up.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from unifashion.backbones.cache import cache_home
from unifashion.backbones.vision import VisionEncoder
from unifashion.config import to_dict
from unifashion.data.records import ImageRef
from unifashion.utils.io import atomic_write_bytes
from unifashion.utils.tables import write_once_table

ImageLike = ImageRef | str | os.PathLike | Image.Image


def encoder_key(encoder: VisionEncoder) -> str:
    """Hash of the encoder's weights and preprocessing config."""
    h = hashlib.sha256(json.dumps(to_dict(encoder.config), sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def content_key(image: ImageLike) -> str:
    """Hash of an image's content: file bytes, or pixels of an in-memory image."""
    if isinstance(image, Image.Image):
        h = hashlib.sha256(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
        return h.hexdigest()
    ref = image if isinstance(image, ImageRef) else ImageRef(os.fspath(image))
    return hashlib.sha256(ref.content_bytes()).hexdigest()


def _load_image(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    ref = image if isinstance(image, ImageRef) else ImageRef(os.fspath(image))
    return ref.open()


class FeatureCache:
    """Patch features (N, C) per image for one frozen encoder. With ``memmap``, the tables that
    training builds from it (:class:`FeatureTable`) are one memory-mapped file each instead of
    a copy in every process's RAM."""

    def __init__(
        self,
        encoder: VisionEncoder,
        root: str | os.PathLike | None = None,
        enabled: bool = True,
        memmap: bool = False,
    ):
        self.encoder = encoder
        self.key = encoder_key(encoder)
        self.dir = Path(root) if root else cache_home() / "features" / self.key
        self.enabled = enabled
        self.memmap = memmap
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def features(
        self, images: Sequence[ImageLike], *, batch_size: int = 32, progress: bool = False, desc: str = "image features"
    ) -> torch.Tensor:
        """(len(images), N, C) float16 features, from the cache where possible."""
        keys = [content_key(im) for im in images]
        out: list[np.ndarray | None] = [None] * len(images)
        missing: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            path = self._path(key)
            if self.enabled and path.exists():
                try:
                    out[i] = np.load(path, allow_pickle=False)
                    self.hits += 1
                    continue
                except (OSError, ValueError):
                    pass  # a damaged entry is recomputed and rewritten
            missing.setdefault(key, []).append(i)
        todo = list(missing.items())
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo, leave=False)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            pixels = self.encoder.preprocess([_load_image(images[idx[0]]) for _, idx in chunk])
            device = next(self.encoder.parameters()).device
            feats = self.encoder(pixels.to(device)).patch.to(torch.float16).cpu().numpy()
            for (key, idx), arr in zip(chunk, feats, strict=True):
                for i in idx:
                    out[i] = arr
                self.misses += len(idx)
                if self.enabled:
                    buf = io.BytesIO()
                    np.save(buf, arr, allow_pickle=False)
                    atomic_write_bytes(self._path(key), buf.getvalue())
            bar.update(len(chunk))
        bar.close()
        if not images:
            return torch.zeros(0, 0, self.encoder.feature_dim, dtype=torch.float16)
        return torch.from_numpy(np.stack(out))


@dataclass
class FeatureTable:
    """Rows of frozen patch features (N, T, C) in float16, one per distinct image."""

    index: dict[str, int]
    feats: torch.Tensor

    @classmethod
    def build(cls, refs: list[ImageRef], cache: FeatureCache, progress: bool = True) -> FeatureTable:
        unique: dict[str, ImageRef] = {}
        for r in refs:
            unique.setdefault(str(r), r)
        images = list(unique.values())
        if cache.memmap and images:
            feats = memmapped_features(images, cache, progress=progress)
        else:
            feats = cache.features(images, progress=progress, desc="frozen image features")
        return cls({k: i for i, k in enumerate(unique)}, feats)

    def rows(self, refs: tuple[ImageRef, ...]) -> list[int]:
        return [self.index[str(r)] for r in refs]

    def batch(self, rows: list[int] | torch.Tensor) -> torch.Tensor:
        return self.feats[torch.as_tensor(rows, dtype=torch.long)].float()


def table_path(images: Sequence[ImageLike], cache: FeatureCache) -> Path:
    """Where the memory-mapped table of ``images`` (in this order) lives for this encoder."""
    h = hashlib.sha256(cache.key.encode())
    for image in images:
        h.update(content_key(image).encode())
    return cache.dir / "tables" / f"{h.hexdigest()[:24]}.npy"


def memmapped_features(
    images: Sequence[ImageLike], cache: FeatureCache, *, progress: bool = False, chunk: int = 256
) -> torch.Tensor:
    """(len(images), N, C) float16 features as a read-only view of one ``.npy`` file, written once
    (by rank 0 of a distributed run, the others wait) chunk by chunk, never whole in RAM, and
    renamed into place when complete; every process then maps the same file. A later run with the
    same images and encoder finds the file and computes nothing."""
    return write_once_table(
        table_path(images, cache),
        len(images),
        lambda start, stop: cache.features(list(images[start:stop])).numpy(),
        chunk=chunk,
        progress=progress,
        desc="feature table",
    )
