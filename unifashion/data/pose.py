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


# COCO-18 indices used by the garment masks.
NECK, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW, L_WRIST = 1, 2, 3, 4, 5, 6, 7
R_HIP, R_KNEE, R_ANKLE, L_HIP, L_KNEE, L_ANKLE = 8, 9, 10, 11, 12, 13
GARMENTS = ("upper", "dress", "lower")


def garment_mask(keypoints: np.ndarray, width: int, height: int, garment: str = "upper") -> np.ndarray:
    """The region a garment of kind ``garment`` (``upper``: tops, shirts, jackets; ``dress``; ``lower``:
    skirts, trousers) may cover on a person, from the person's (18, 3) keypoints alone: bool (height, width).

    For a request without a mask (the service's and ``unifashion tryon``'s automatic mask): the torso
    between shoulders and hips, widened by a quarter of the shoulder width, the neck and the arms to the
    wrists for ``upper``; hips to ankles for ``lower``; both, to below the knees, for ``dress``. It is wider
    than a garment so the new one can be longer or looser than the old; a parsing-based mask is tighter."""
    from PIL import Image, ImageDraw

    if garment not in GARMENTS:
        raise DataError(f"garment: expected one of {', '.join(GARMENTS)}, got {garment!r}")
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.shape != (18, 3):
        raise DataError(f"keypoints: expected an (18, 3) array, got {kp.shape}")
    ok = kp[:, 2] > 0

    def have(*idx: int) -> bool:
        return all(ok[i] for i in idx)

    if not have(R_SHOULDER, L_SHOULDER, R_HIP, L_HIP):
        raise DataError("keypoints: an automatic mask needs both shoulders and both hips; give a mask instead")
    p = kp[:, :2]
    unit = max(float(np.linalg.norm(p[R_SHOULDER] - p[L_SHOULDER])), 1.0)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)

    def widened(points: list[np.ndarray], by: float) -> list[tuple[float, float]]:
        centre = np.mean(points, axis=0)
        out = []
        for q in points:
            d = q - centre
            n = float(np.linalg.norm(d))
            out.append(tuple((q + d / n * by) if n > 0 else q))
        return out

    def limb(*idx: int, thick: float) -> None:
        chain = [tuple(p[i]) for i in idx if ok[i]]
        if len(chain) >= 2:
            draw.line(chain, fill=255, width=max(1, round(thick)), joint="curve")
        for q in chain:
            r = thick / 2
            draw.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=255)

    hips = (p[R_HIP] + p[L_HIP]) / 2
    if garment in ("upper", "dress"):
        torso = [p[R_SHOULDER], p[L_SHOULDER], p[L_HIP], p[R_HIP]]
        draw.polygon(widened(torso, 0.25 * unit), fill=255)
        if ok[NECK]:
            r = 0.3 * unit
            draw.ellipse((p[NECK][0] - r, p[NECK][1] - r, p[NECK][0] + r, p[NECK][1] + r), fill=255)
        limb(R_SHOULDER, R_ELBOW, R_WRIST, thick=0.45 * unit)
        limb(L_SHOULDER, L_ELBOW, L_WRIST, thick=0.45 * unit)
    if garment in ("dress", "lower"):
        legs = []
        for hip, knee, ankle in ((R_HIP, R_KNEE, R_ANKLE), (L_HIP, L_KNEE, L_ANKLE)):
            if garment == "lower" and ok[ankle]:
                legs.append(p[ankle])
            elif ok[knee]:
                below = p[knee] + 0.3 * (p[ankle] - p[knee]) if ok[ankle] else p[knee] + 0.3 * (p[knee] - p[hip])
                legs.append(below)
        if len(legs) == 2:
            top = widened([p[R_HIP], p[L_HIP]], 0.3 * unit)
            bottom = widened([legs[1], legs[0]], 0.45 * unit)
            draw.polygon([top[0], top[1], *bottom], fill=255)
        else:  # no knees: a block one shoulder width below the hips
            draw.rectangle((hips[0] - unit, hips[1] - 0.2 * unit, hips[0] + unit, hips[1] + unit), fill=255)
        waist = widened([p[R_HIP], p[L_HIP]], 0.3 * unit)
        r = 0.25 * unit
        for q in waist:
            draw.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=255)
    return np.asarray(canvas) > 127
