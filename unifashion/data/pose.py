"""Pose keypoints of try-on samples as (18, 3) arrays: x, y in pixels, confidence.

Two on-disk forms exist: OpenPose JSON (VITON-HD; 18 COCO points or 25
BODY_25 points, pixel coordinates) and Dress Code JSON (18 points as
``[x, y, score, id]`` in a 384 x 512 frame whatever the image size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unifashion.data.records import read_json_file
from unifashion.utils.errors import DataError

# BODY_25 index of each COCO-18 point (BODY_25 adds mid-hip at 8 and feet points).
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)


def read_openpose(path: str | Path) -> np.ndarray:
    """(18, 3) keypoints from an OpenPose JSON file (first person)."""
    data = read_json_file(Path(path))
    try:
        flat = data["people"][0]["pose_keypoints_2d"]
    except (KeyError, IndexError, TypeError):
        raise DataError("expected OpenPose JSON: people[0].pose_keypoints_2d", path=str(path)) from None
    arr = np.asarray(flat, dtype=np.float32)
    if arr.size == 54:
        return arr.reshape(18, 3)
    if arr.size == 75:
        return arr.reshape(25, 3)[list(BODY25_TO_COCO18)]
    raise DataError(f"pose_keypoints_2d: expected 54 (COCO-18) or 75 (BODY_25) numbers, got {arr.size}", path=str(path))


def read_dresscode_keypoints(path: str | Path, width: int, height: int) -> np.ndarray:
    """(18, 3) keypoints of a Dress Code file, scaled from 384 x 512 to ``width`` x ``height``."""
    data = read_json_file(Path(path))
    try:
        arr = np.asarray(data["keypoints"], dtype=np.float32).reshape(-1, 4)
    except (KeyError, TypeError, ValueError):
        raise DataError(
            "expected Dress Code keypoints: {'keypoints': [[x, y, score, id], ...]}", path=str(path)
        ) from None
    if arr.shape[0] != 18:
        raise DataError(f"keypoints: expected 18 points, got {arr.shape[0]}", path=str(path))
    out = arr[:, :3].copy()
    out[:, 0] *= width / 384.0
    out[:, 1] *= height / 512.0
    missing = (arr[:, 0] <= 1) & (arr[:, 1] <= 1)
    out[missing] = 0
    return out


def load_pose(path: str | Path, fmt: str, width: int, height: int) -> np.ndarray:
    if fmt == "openpose":
        return read_openpose(path)
    if fmt == "dresscode":
        return read_dresscode_keypoints(path, width, height)
    raise DataError(f"pose_format: expected 'openpose' or 'dresscode', got {fmt!r}", path=str(path))
