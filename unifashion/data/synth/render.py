"""Procedural drawing of FashionSynth garments, mannequins, masks, pose and sketches.

One geometry serves every picture of a garment: its parts (torso, sleeves,
skirt, trouser legs, neckline, collar, ...) are polygons built from a body
skeleton in OpenPose's 18-point order. A flat "product photo" skeleton gives the
catalogue images and the try-on cloth images; a person's pose gives the worn
garment, so the colours and pattern agree across all of them.

Images are drawn at twice their size and reduced (anti-aliasing), with a
pattern texture, lighting, folds, rim darkening, a soft drop shadow, and
rotation / scale / offset jitter, so that matching raw pixels is not enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from unifashion.data.synth.attributes import COLOURS

SS = 2  # supersampling factor

# OpenPose COCO-18 keypoint order.
KEYPOINTS = (
    "nose",
    "neck",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_eye",
    "l_eye",
    "r_ear",
    "l_ear",
)
K = {name: i for i, name in enumerate(KEYPOINTS)}

JACKET_HEM = {"cropped": 0.8, "hip": 1.12, "long": 1.55}  # hem position: 0 shoulders, 1 hips
POSES = ("arms_down", "arms_out", "hand_on_hip", "stride")
BODY_SHAPES = {"slim": (0.9, 0.92), "regular": (1.0, 1.0), "broad": (1.12, 1.08)}  # (shoulders, hips)
SKIN_TONES = ((226, 196, 170), (198, 156, 120), (150, 105, 75), (235, 214, 196))
HAIR_COLOURS = ((40, 30, 25), (90, 60, 35), (20, 20, 20), (160, 120, 70))

# Internal parse labels, mapped to each dataset's label set on writing.
LABELS = (
    "background",
    "hair",
    "face",
    "neck",
    "torso_skin",
    "r_arm",
    "l_arm",
    "r_leg",
    "l_leg",
    "r_shoe",
    "l_shoe",
    "upper",
    "dress",
    "coat",
    "pants",
    "skirt",
)
L = {name: i for i, name in enumerate(LABELS)}
# Internal labels -> CIHP's 20 classes (VITON-HD image-parse-v3): 0 background,
# 2 hair, 5 upper-clothes, 6 dress, 7 coat, 9 pants, 10 torso-skin, 12 skirt,
# 13 face, 14/15 left/right arm, 16/17 left/right leg, 18/19 left/right shoe.
TO_CIHP = np.array([0, 2, 13, 10, 10, 15, 14, 17, 16, 19, 18, 5, 6, 7, 9, 12], np.uint8)
# Internal labels -> ATR's 18 classes (Dress Code label_maps): 0 background,
# 2 hair, 4 upper_clothes, 5 skirt, 6 pants, 7 dress, 9/10 left/right shoe,
# 11 head, 12/13 left/right leg, 14/15 left/right arm (no skin-of-torso class).
TO_ATR = np.array([0, 2, 11, 11, 0, 15, 14, 13, 12, 10, 9, 4, 7, 4, 6, 5], np.uint8)
CIHP_NAMES = (
    "background",
    "hat",
    "hair",
    "glove",
    "sunglasses",
    "upper-clothes",
    "dress",
    "coat",
    "socks",
    "pants",
    "torso-skin",
    "scarf",
    "skirt",
    "face",
    "left-arm",
    "right-arm",
    "left-leg",
    "right-leg",
    "left-shoe",
    "right-shoe",
)
ATR_NAMES = (
    "background",
    "hat",
    "hair",
    "sunglasses",
    "upper_clothes",
    "skirt",
    "pants",
    "dress",
    "belt",
    "left_shoe",
    "right_shoe",
    "head",
    "left_leg",
    "right_leg",
    "left_arm",
    "right_arm",
    "bag",
    "scarf",
)

GARMENT_LABEL = {
    "dress": "dress",
    "shirt": "upper",
    "toptee": "upper",
    "jacket": "coat",
    "skirt": "skirt",
    "trousers": "pants",
}


# ---------------------------------------------------------------------------
# geometry


@dataclass
class Part:
    """Polygons of one garment part; ``kind`` decides how it is filled."""

    name: str
    polys: list[np.ndarray]
    kind: str = "cloth"  # cloth | inner (neck opening, jacket front) | detail (darker trim)
    outline: bool = True


@dataclass
class Garment:
    parts: list[Part] = field(default_factory=list)
    lines: list[np.ndarray] = field(default_factory=list)  # seams, plackets (sketch and shading)
    dots: list[tuple[np.ndarray, float]] = field(default_factory=list)  # buttons: (centre, radius)

    def transform(self, fn) -> Garment:
        return Garment(
            parts=[Part(p.name, [fn(q) for q in p.polys], p.kind, p.outline) for p in self.parts],
            lines=[fn(q) for q in self.lines],
            dots=[(fn(c[None])[0], r * _scale_of(fn)) for c, r in self.dots],
        )

    def points(self) -> np.ndarray:
        pts = [q for p in self.parts for q in p.polys]
        return np.concatenate(pts) if pts else np.zeros((0, 2))


def _scale_of(fn) -> float:
    a, b = fn(np.array([[0.0, 0.0]])), fn(np.array([[1.0, 0.0]]))
    return float(np.linalg.norm(b - a))


def _lerp(a, b, t):
    return np.asarray(a, float) + (np.asarray(b, float) - np.asarray(a, float)) * t


def _ellipse(centre, rx, ry, start=0.0, end=360.0, n=28) -> np.ndarray:
    t = np.radians(np.linspace(start, end, n))
    return np.stack([centre[0] + rx * np.cos(t), centre[1] + ry * np.sin(t)], axis=1)


def _chain(points: list[np.ndarray], widths: list[float]) -> np.ndarray:
    """Polygon around a polyline with a half-width at each point."""
    pts = np.asarray(points, float)
    left, right = [], []
    for i, (p, w) in enumerate(zip(pts, widths, strict=True)):
        if i == 0:
            d = pts[1] - pts[0]
        elif i == len(pts) - 1:
            d = pts[-1] - pts[-2]
        else:
            d = (pts[i + 1] - pts[i - 1]) / 2
        d = d / (np.linalg.norm(d) + 1e-9)
        n = np.array([-d[1], d[0]])
        left.append(p + n * w)
        right.append(p - n * w)
    return np.array(left + right[::-1])


def _point_along(chain: list[np.ndarray], t: float) -> tuple[list[np.ndarray], float]:
    """The prefix of ``chain`` up to fraction ``t`` of its length."""
    pts = [np.asarray(p, float) for p in chain]
    seg = [np.linalg.norm(pts[i + 1] - pts[i]) for i in range(len(pts) - 1)]
    total, goal = sum(seg), t * sum(seg)
    out, run = [pts[0]], 0.0
    for i, s in enumerate(seg):
        if run + s >= goal:
            out.append(_lerp(pts[i], pts[i + 1], (goal - run) / max(s, 1e-9)))
            return out, total
        run += s
        out.append(pts[i + 1])
    return out, total


def garment_geometry(attrs: dict[str, str], kp: np.ndarray, *, back: bool = False) -> Garment:
    """The parts of the garment ``attrs`` worn on skeleton ``kp`` (18 x 2).

    ``back``: seen from behind (no neckline cut, no buttons or placket).
    """
    cat = attrs["category"]
    g = Garment()
    s_r, s_l, neck = kp[K["r_shoulder"]], kp[K["l_shoulder"]], kp[K["neck"]]
    h_r, h_l = kp[K["r_hip"]], kp[K["l_hip"]]
    sw = float(np.linalg.norm(s_l - s_r))
    down = np.array([0.0, 1.0])
    side = (s_l - s_r) / (sw + 1e-9)  # towards the person's left

    def torso(hem_t: float, flare: float = 0.0, loose: float = 0.0) -> np.ndarray:
        """Bodice polygon from the shoulders to ``hem_t`` (0 shoulder line, 1 hips, >1 below)."""
        neck_r, neck_l = neck - side * 0.2 * sw, neck + side * 0.2 * sw
        sh_r, sh_l = s_r - side * 0.06 * sw + down * 0.03 * sw, s_l + side * 0.06 * sw + down * 0.03 * sw
        pit_r = _lerp(s_r, h_r, 0.33) - side * (0.02 - loose) * sw
        pit_l = _lerp(s_l, h_l, 0.33) + side * (0.02 - loose) * sw
        waist_r = _lerp(s_r, h_r, 0.62) + side * (0.06 - loose) * sw
        waist_l = _lerp(s_l, h_l, 0.62) - side * (0.06 - loose) * sw
        hem_r = _lerp(s_r, h_r, hem_t) - side * (0.02 + flare + loose) * sw
        hem_l = _lerp(s_l, h_l, hem_t) + side * (0.02 + flare + loose) * sw
        pts = [neck_r, sh_r, pit_r]
        if hem_t > 0.7:
            pts.append(waist_r)
        pts += [hem_r, hem_l]
        if hem_t > 0.7:
            pts.append(waist_l)
        pts += [pit_l, sh_l, neck_l]
        return np.array(pts)

    def sleeves(kind: str) -> list[np.ndarray]:
        if kind == "sleeveless":
            return []
        polys = []
        for sh, el, wr, sgn in (("r_shoulder", "r_elbow", "r_wrist", -1), ("l_shoulder", "l_elbow", "l_wrist", 1)):
            start = kp[K[sh]] + side * sgn * 0.02 * sw + down * 0.04 * sw
            chain = [start, kp[K[el]], kp[K[wr]]]
            t = 0.3 if kind == "short" else 0.97
            pts, _ = _point_along(chain, t)
            widths = np.linspace(0.2, 0.13 if kind == "long" else 0.17, len(pts)) * sw
            polys.append(_chain(pts, list(widths)))
        return polys

    def neckline(kind: str) -> np.ndarray:
        if back or kind == "crew":
            return _ellipse(neck + down * 0.0 * sw, 0.19 * sw, 0.11 * sw)
        if kind == "v-neck":
            return np.array([neck - side * 0.2 * sw, neck + side * 0.2 * sw, neck + down * 0.5 * sw])
        if kind == "scoop":
            return _ellipse(neck, 0.23 * sw, 0.3 * sw)
        if kind == "square":
            a, b = neck - side * 0.2 * sw - down * 0.05 * sw, neck + side * 0.2 * sw + down * 0.28 * sw
            return np.array([a, [b[0], a[1]], b, [a[0], b[1]]])
        raise ValueError(kind)

    if cat in ("toptee", "shirt", "jacket", "dress"):
        if cat == "dress":
            body = torso(0.62)
        elif cat == "jacket":
            hem_t = JACKET_HEM[attrs.get("length", "hip")]
            body = torso(hem_t, flare=0.02 + 0.04 * (hem_t > 1.3), loose=0.04)
        elif cat == "shirt":
            body = torso(1.12, loose=0.02)
        else:
            body = torso(1.08)
        sleeve_kind = attrs.get("sleeve", "long")
        g.parts.append(Part("torso", [body]))
        sl = sleeves(sleeve_kind)
        if sl:
            g.parts.append(Part("sleeves", sl))
        if cat in ("toptee", "dress"):
            g.parts.append(Part("neckline", [neckline(attrs["neckline"])], kind="inner"))
        elif cat == "shirt":
            g.parts.append(Part("neckline", [_ellipse(neck, 0.15 * sw, 0.09 * sw)], kind="inner"))
            collar_r = np.array(
                [neck - side * 0.17 * sw, neck + down * 0.16 * sw, neck - side * 0.28 * sw + down * 0.14 * sw]
            )
            collar_l = np.array(
                [neck + side * 0.17 * sw, neck + down * 0.16 * sw, neck + side * 0.28 * sw + down * 0.14 * sw]
            )
            g.parts.append(Part("collar", [collar_r, collar_l], kind="detail"))
            if not back:
                hem = _lerp(neck, _lerp(h_r, h_l, 0.5), 1.08)
                g.lines.append(np.array([neck + down * 0.16 * sw, hem]))
                for t in np.linspace(0.22, 0.9, 5):
                    g.dots.append((_lerp(neck + down * 0.16 * sw, hem, t) + side * 0.03 * sw, 0.025 * sw))
                if attrs.get("pocket") == "chest pocket":  # on the wearer's left chest
                    c = _lerp(neck, _lerp(s_l, h_l, 0.3), 0.75) + side * 0.02 * sw
                    a, b = c - side * 0.11 * sw - down * 0.1 * sw, c + side * 0.11 * sw + down * 0.12 * sw
                    g.parts.append(Part("pocket", [np.array([a, [b[0], a[1]], b, [a[0], b[1]]])], kind="detail"))
        else:  # jacket: open front with lapels
            hem = _lerp(neck, _lerp(h_r, h_l, 0.5), JACKET_HEM[attrs.get("length", "hip")])
            if not back:
                opening = np.array(
                    [
                        neck - side * 0.16 * sw,
                        neck + side * 0.16 * sw,
                        neck + side * 0.05 * sw + down * 0.75 * sw,
                        hem + side * 0.05 * sw,
                        hem - side * 0.05 * sw,
                        neck - side * 0.05 * sw + down * 0.75 * sw,
                    ]
                )
                g.parts.append(Part("front", [opening], kind="inner"))
                lapel_r = np.array(
                    [
                        neck - side * 0.16 * sw,
                        neck - side * 0.05 * sw + down * 0.75 * sw,
                        neck - side * 0.3 * sw + down * 0.25 * sw,
                    ]
                )
                lapel_l = np.array(
                    [
                        neck + side * 0.16 * sw,
                        neck + side * 0.05 * sw + down * 0.75 * sw,
                        neck + side * 0.3 * sw + down * 0.25 * sw,
                    ]
                )
                g.parts.append(Part("lapels", [lapel_r, lapel_l], kind="detail"))
                for t in (0.55, 0.78):
                    g.dots.append((_lerp(neck + down * 0.75 * sw, hem, t) - side * 0.09 * sw, 0.03 * sw))
            else:
                g.parts.append(Part("neckline", [_ellipse(neck, 0.16 * sw, 0.08 * sw)], kind="inner"))
        if cat == "dress":
            g.parts.append(Part("skirt", [_skirt(kp, attrs["length"], sw, side, start_t=0.6)]))
            g.lines.append(np.array([_lerp(s_r, h_r, 0.6), _lerp(s_l, h_l, 0.6)]))  # waist seam
    elif cat == "skirt":
        g.parts.append(Part("skirt", [_skirt(kp, attrs["length"], sw, side, start_t=0.86)]))
        g.lines.append(np.array([_lerp(s_r, h_r, 0.86), _lerp(s_l, h_l, 0.86)]))
    elif cat == "trousers":
        g.parts.extend(_trousers(kp, attrs["length"], sw, side))
    else:
        raise ValueError(f"unknown category {cat!r}")
    return g


def garment_sketch(attrs: dict[str, str], keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Line drawing (H, W) uint8, black on white, of garment ``attrs`` worn on
    ``keypoints`` (18 x 2+, pixels of the H x W image): outlines, seams, plackets."""
    kp = np.asarray(keypoints, float)[:, :2] * SS
    garment = garment_geometry(attrs, kp)
    sw = float(np.linalg.norm(kp[K["l_shoulder"]] - kp[K["r_shoulder"]]))
    sketch = Image.new("L", (width * SS, height * SS), 255)
    d = ImageDraw.Draw(sketch)
    lw = max(1, round(sw * 0.02))
    for p in garment.parts:
        for q in p.polys:
            d.line([tuple(x) for x in q] + [tuple(q[0])], fill=0, width=lw)
    for q in garment.lines:
        d.line([tuple(x) for x in q], fill=0, width=lw)
    return np.asarray(sketch.resize((width, height), Image.BILINEAR))


def _leg_chain(kp: np.ndarray, side: str) -> list[np.ndarray]:
    return [kp[K[f"{side}_hip"]], kp[K[f"{side}_knee"]], kp[K[f"{side}_ankle"]]]


def _hem_fraction(length: str) -> float:
    """How far down the leg (hip 0 -> ankle 1) a hem of ``length`` reaches."""
    return {"mini": 0.22, "knee": 0.5, "midi": 0.74, "maxi": 0.97, "shorts": 0.26, "cropped": 0.76, "full": 0.98}[
        length
    ]


def _skirt(kp: np.ndarray, length: str, sw: float, side: np.ndarray, start_t: float) -> np.ndarray:
    s_r, s_l, h_r, h_l = kp[K["r_shoulder"]], kp[K["l_shoulder"]], kp[K["r_hip"]], kp[K["l_hip"]]
    t = _hem_fraction(length)
    hem_r = _point_along(_leg_chain(kp, "r"), t)[0][-1]
    hem_l = _point_along(_leg_chain(kp, "l"), t)[0][-1]
    hem_y = max(hem_r[1], hem_l[1])
    hem_c = (hem_r + hem_l) / 2
    flare = (0.28 + 0.45 * t) * sw
    waist_r = _lerp(s_r, h_r, start_t) + side * 0.05 * sw
    waist_l = _lerp(s_l, h_l, start_t) - side * 0.05 * sw
    hip_r, hip_l = h_r - side * 0.12 * sw, h_l + side * 0.12 * sw
    pts = [waist_r]
    if start_t < 0.95:
        pts.append(hip_r)
    pts += [np.array([hem_c[0], hem_y]) - side * flare, np.array([hem_c[0], hem_y]) + side * flare]
    if start_t < 0.95:
        pts.append(hip_l)
    pts.append(waist_l)
    return np.array(pts)


def _trousers(kp: np.ndarray, length: str, sw: float, side: np.ndarray) -> list[Part]:
    s_r, s_l, h_r, h_l = kp[K["r_shoulder"]], kp[K["l_shoulder"]], kp[K["r_hip"]], kp[K["l_hip"]]
    waist_r = _lerp(s_r, h_r, 0.86) + side * 0.02 * sw
    waist_l = _lerp(s_l, h_l, 0.86) - side * 0.02 * sw
    mid = (h_r + h_l) / 2
    crotch = mid + np.array([0.0, 0.3 * sw])
    pelvis = np.array([waist_r, waist_l, h_l + side * 0.14 * sw, crotch, h_r - side * 0.14 * sw])
    t = _hem_fraction(length)
    legs = []
    for s in ("r", "l"):
        pts, _ = _point_along(_leg_chain(kp, s), t)
        widths = list(np.linspace(0.27, 0.16 if length == "full" else 0.2, len(pts)) * sw)
        legs.append(_chain(pts, widths))
    band = np.array([waist_r, waist_l, waist_l + np.array([0, 0.07 * sw]), waist_r + np.array([0, 0.07 * sw])])
    return [Part("pelvis", [pelvis]), Part("legs", legs), Part("waistband", [band], kind="detail")]


# ---------------------------------------------------------------------------
# skeletons


def flat_skeleton(category: str) -> np.ndarray:
    """The skeleton of a flat-lay product photo (arms spread, legs apart), unit scale."""
    kp = np.zeros((18, 2))
    cx = 0.0
    kp[K["neck"]] = (cx, 0.0)
    kp[K["r_shoulder"]], kp[K["l_shoulder"]] = (cx - 0.5, 0.04), (cx + 0.5, 0.04)
    arm = 0.62 if category in ("jacket", "shirt") else 0.55
    ang = math.radians(38)
    for s, sgn in (("r", -1), ("l", 1)):
        sh = kp[K[f"{s}_shoulder"]]
        kp[K[f"{s}_elbow"]] = sh + np.array([sgn * math.sin(ang), math.cos(ang)]) * arm
        kp[K[f"{s}_wrist"]] = kp[K[f"{s}_elbow"]] + np.array([sgn * math.sin(ang * 0.8), math.cos(ang * 0.8)]) * arm
    kp[K["r_hip"]], kp[K["l_hip"]] = (cx - 0.38, 1.15), (cx + 0.38, 1.15)
    spread = 0.12 if category == "trousers" else 0.0
    kp[K["r_knee"]], kp[K["l_knee"]] = (cx - 0.33 - spread, 1.95), (cx + 0.33 + spread, 1.95)
    kp[K["r_ankle"]], kp[K["l_ankle"]] = (cx - 0.3 - 2 * spread, 2.75), (cx + 0.3 + 2 * spread, 2.75)
    kp[K["nose"]] = (cx, -0.3)
    return kp


def person_skeleton(pose: str, body: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """18 OpenPose keypoints (pixels) of a standing mannequin in ``pose``."""
    ws, hs = BODY_SHAPES[body]
    cx = w / 2 + rng.uniform(-0.03, 0.03) * w
    u = h  # body unit
    kp = np.zeros((18, 2))
    kp[K["nose"]] = (cx, 0.105 * u)
    kp[K["r_eye"]], kp[K["l_eye"]] = (cx - 0.018 * u, 0.092 * u), (cx + 0.018 * u, 0.092 * u)
    kp[K["r_ear"]], kp[K["l_ear"]] = (cx - 0.042 * u, 0.1 * u), (cx + 0.042 * u, 0.1 * u)
    kp[K["neck"]] = (cx, 0.19 * u)
    half_sh = 0.105 * u * ws
    kp[K["r_shoulder"]], kp[K["l_shoulder"]] = (cx - half_sh, 0.205 * u), (cx + half_sh, 0.205 * u)
    half_hip = 0.07 * u * hs
    kp[K["r_hip"]], kp[K["l_hip"]] = (cx - half_hip, 0.5 * u), (cx + half_hip, 0.5 * u)
    upper, fore = 0.15 * u, 0.14 * u
    arm_angles = {
        "arms_down": ((8, 4), (8, 4)),
        "arms_out": ((28, 18), (28, 18)),
        "hand_on_hip": ((30, -75), (8, 4)),
        "stride": ((14, 8), (4, -4)),
    }[pose]
    for (s, sgn), (a_upper, a_fore) in zip((("r", -1), ("l", 1)), arm_angles, strict=True):
        sh = kp[K[f"{s}_shoulder"]]
        a1, a2 = math.radians(a_upper + rng.uniform(-3, 3)), math.radians(a_fore + rng.uniform(-3, 3))
        kp[K[f"{s}_elbow"]] = sh + np.array([sgn * math.sin(a1), math.cos(a1)]) * upper
        kp[K[f"{s}_wrist"]] = kp[K[f"{s}_elbow"]] + np.array([sgn * math.sin(a2), math.cos(a2)]) * fore
    stance = {"arms_down": 0.015, "arms_out": 0.03, "hand_on_hip": 0.025, "stride": 0.05}[pose] * u
    for s, sgn in (("r", -1), ("l", 1)):
        hip = kp[K[f"{s}_hip"]]
        kp[K[f"{s}_knee"]] = hip + np.array([sgn * stance * 0.5, 0.21 * u])
        kp[K[f"{s}_ankle"]] = hip + np.array([sgn * stance, 0.42 * u])
    return kp


# ---------------------------------------------------------------------------
# texture, shading and rasterising


def _polys_mask(polys: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Boolean mask (H, W) of the union of ``polys`` (pixel coordinates)."""
    h, w = size
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    for q in polys:
        if len(q) >= 3:
            d.polygon([tuple(p) for p in q], fill=255)
    return np.asarray(im) > 127


def pattern_texture(
    attrs: dict[str, str], size: tuple[int, int], unit: float, seed: int, angle: float = 0.0
) -> np.ndarray:
    """Float RGB (H, W, 3) of the garment cloth; ``unit`` = pixels per shoulder width,
    so a pattern has the same scale on a product photo and on a person."""
    h, w = size
    base = np.array(COLOURS[attrs["colour"]], dtype=np.float32)
    tex = np.broadcast_to(base, (h, w, 3)).copy()
    pattern = attrs["pattern"]
    if pattern == "solid":
        return tex
    pc = np.array(COLOURS[attrs["pattern_colour"]], dtype=np.float32)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = xx * ca + yy * sa, -xx * sa + yy * ca
    # The base colour always covers most of the cloth ("red with white stripes"
    # is mostly red), so colour and pattern colour are never interchangeable.
    period = unit * rng.uniform(0.16, 0.24)
    if pattern == "stripes":
        along = v if rng.random() < 0.5 else u
        m = (along % period) < period * rng.uniform(0.2, 0.3)
    elif pattern == "checks":
        width = period * rng.uniform(0.18, 0.26)
        a = ((u % period) < width).astype(np.float32)
        b = ((v % period) < width).astype(np.float32)
        alpha = np.clip(0.6 * a + 0.6 * b, 0, 1)[..., None]
        return tex * (1 - alpha) + pc * alpha
    elif pattern == "polka dots":
        row = np.floor(v / period)
        uu = (u + (row % 2) * period / 2) % period - period / 2
        vv = v % period - period / 2
        m = uu**2 + vv**2 < (period * rng.uniform(0.18, 0.25)) ** 2
    elif pattern == "floral":
        m = np.zeros((h, w), bool)
        centre_col = (
            np.array((250, 230, 90), np.float32)
            if attrs["pattern_colour"] != "yellow"
            else np.array((250, 250, 250), np.float32)
        )
        centres = np.zeros((h, w), bool)
        step = period * 1.25
        for gy in np.arange(-step, h + step, step):
            for gx in np.arange(-step, w + step, step):
                cx, cy = gx + rng.uniform(-0.3, 0.3) * step, gy + rng.uniform(-0.3, 0.3) * step
                r = step * rng.uniform(0.17, 0.23)
                rot = rng.uniform(0, 2 * math.pi)
                for k in range(5):
                    px = cx + math.cos(rot + k * 2 * math.pi / 5) * r
                    py = cy + math.sin(rot + k * 2 * math.pi / 5) * r
                    x0, x1 = int(max(px - r, 0)), int(min(px + r + 1, w))
                    y0, y1 = int(max(py - r, 0)), int(min(py + r + 1, h))
                    if x0 < x1 and y0 < y1:
                        m[y0:y1, x0:x1] |= (xx[y0:y1, x0:x1] - px) ** 2 + (yy[y0:y1, x0:x1] - py) ** 2 < (r * 0.62) ** 2
                x0, x1 = int(max(cx - r, 0)), int(min(cx + r + 1, w))
                y0, y1 = int(max(cy - r, 0)), int(min(cy + r + 1, h))
                if x0 < x1 and y0 < y1:
                    centres[y0:y1, x0:x1] |= (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 < (
                        r * 0.42
                    ) ** 2
        tex[m] = pc
        tex[centres] = centre_col
        return tex
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    tex[m] = pc
    return tex


def shading(mask: np.ndarray, unit: float, rng: np.random.Generator, light: float) -> np.ndarray:
    """Multiplicative light (H, W): a soft gradient, vertical folds, darker rims."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = 1.0 + 0.09 * ((xx / w - 0.5) * math.cos(light) + (yy / h - 0.5) * math.sin(light)) * 2
    folds = np.ones((h, w), np.float32)
    for _ in range(rng.integers(2, 5)):
        period = unit * rng.uniform(0.25, 0.5)
        phase = rng.uniform(0, 2 * math.pi)
        tilt = rng.uniform(-0.15, 0.15)
        strength = rng.uniform(0.04, 0.09)
        wave = np.sin(2 * math.pi * (xx + tilt * yy) / period + phase)
        folds -= strength * np.clip(wave, 0, 1) ** 3 * (0.4 + 0.6 * yy / h)
    soft = (
        np.asarray(
            Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(float(unit * 0.05))),
            np.float32,
        )
        / 255
    )
    rim = 0.82 + 0.18 * np.clip(soft * 1.6 - 0.3, 0, 1)
    return grad * folds * rim


def draw_garment(
    canvas: np.ndarray,
    garment: Garment,
    attrs: dict[str, str],
    *,
    unit: float,
    seed: int,
    rng: np.random.Generator,
    inner_rgb: np.ndarray | None,
    labels: np.ndarray | None = None,
    label: int | None = None,
    angle: float = 0.0,
) -> np.ndarray:
    """Paint ``garment`` onto float ``canvas`` (H, W, 3) in place; returns its mask.

    ``inner_rgb``: what shows through openings (the garment's inside on a
    product photo, skin or an under-layer on a person); ``None`` leaves the
    canvas there. ``labels``/``label``: a parse map to mark the garment in.
    """
    h, w = canvas.shape[:2]
    cloth = _polys_mask([q for p in garment.parts if p.kind in ("cloth", "detail") for q in p.polys], (h, w))
    inner = _polys_mask([q for p in garment.parts if p.kind == "inner" for q in p.polys], (h, w))
    detail = _polys_mask([q for p in garment.parts if p.kind == "detail" for q in p.polys], (h, w))
    tex = pattern_texture(attrs, (h, w), unit, seed, angle)
    shade = shading(cloth, unit, rng, light=rng.uniform(0, 2 * math.pi))
    rgb = tex * shade[..., None]
    rgb[detail] *= 0.86  # collars, lapels and bands read as separate pieces
    body = cloth & ~inner
    canvas[body] = rgb[body]
    if inner_rgb is not None:
        canvas[cloth & inner] = inner_rgb
    im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    line_w = max(1, round(unit * 0.02))
    dark = tuple(int(c * 0.6) for c in COLOURS[attrs["colour"]])
    for q in garment.lines:
        d.line([tuple(p) for p in q], fill=dark, width=line_w)
    for c, r in garment.dots:
        d.ellipse(
            [c[0] - r, c[1] - r, c[0] + r, c[1] + r],
            fill=(235, 235, 225) if attrs["colour"] != "white" else (60, 60, 60),
        )
    canvas[...] = np.asarray(im, np.float32)
    mask = body if inner_rgb is None else cloth
    if labels is not None and label is not None:
        labels[mask] = label
    return mask


def _downsample(arr: np.ndarray) -> np.ndarray:
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return np.asarray(im.resize((arr.shape[1] // SS, arr.shape[0] // SS), Image.LANCZOS))


def _downsample_mask(mask: np.ndarray) -> np.ndarray:
    im = Image.fromarray((mask * 255).astype(np.uint8))
    return np.asarray(im.resize((mask.shape[1] // SS, mask.shape[0] // SS), Image.BILINEAR)) > 127


def _downsample_labels(labels: np.ndarray) -> np.ndarray:
    return labels[SS // 2 :: SS, SS // 2 :: SS]


# ---------------------------------------------------------------------------
# pictures


def _fit(
    garment: Garment, size: tuple[int, int], *, fill: float, scale: float, angle: float, offset: tuple[float, float]
):
    """A similarity transform that places ``garment`` in a canvas of ``size``."""
    pts = garment.points()
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    h, w = size
    s = min(w * fill / (hi[0] - lo[0]), h * fill / (hi[1] - lo[1])) * scale
    ca, sa = math.cos(angle), math.sin(angle)
    rot = np.array([[ca, -sa], [sa, ca]])
    target = np.array([w / 2 + offset[0] * w, h / 2 + offset[1] * h])

    def fn(q: np.ndarray) -> np.ndarray:
        return ((np.asarray(q, float) - centre) * s) @ rot.T + target

    return fn, s


def render_product(attrs: dict[str, str], size: int, seed: int, view: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A catalogue photo (S, S, 3) uint8 and its garment mask (S, S) bool.

    View 0 is the front; view 1 the back (plain neckline, no buttons), with
    its own jitter and light.
    """
    rng = np.random.default_rng([seed, view, 11])
    S = size * SS
    kp = flat_skeleton(attrs["category"])
    g = garment_geometry(attrs, kp, back=view == 1)
    angle = math.radians(rng.uniform(-7, 7))
    fn, scale = _fit(
        g,
        (S, S),
        fill=0.86,
        scale=rng.uniform(0.86, 1.02),
        angle=angle,
        offset=(rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)),
    )
    g = g.transform(fn)
    unit = scale  # pixels per shoulder width (skeleton shoulders are 1 apart)
    tone = rng.uniform(222, 248)
    tint = rng.uniform(-6, 6, size=3)
    canvas = np.broadcast_to(np.array([tone, tone, tone]) + tint, (S, S, 3)).astype(np.float32).copy()
    yy = np.linspace(0, 1, S, dtype=np.float32)[:, None, None]
    canvas *= 1.0 - 0.06 * yy  # studio backdrop falls off towards the floor
    # Soft drop shadow of the silhouette.
    sil = _polys_mask([q for p in g.parts for q in p.polys], (S, S))
    shadow = Image.fromarray((sil * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(float(unit * 0.08)))
    shadow = np.roll(np.asarray(shadow, np.float32) / 255, (round(unit * 0.05), round(unit * 0.04)), axis=(0, 1))
    canvas *= 1.0 - 0.22 * shadow[..., None]
    inside = np.array(COLOURS[attrs["colour"]], np.float32) * 0.62
    mask = draw_garment(canvas, g, attrs, unit=unit, seed=seed, rng=rng, inner_rgb=inside, angle=angle)
    return _downsample(canvas), _downsample_mask(mask)


def render_cloth(attrs: dict[str, str], height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The try-on cloth image: the flat garment, centred on white, no jitter.
    Returns RGB (H, W, 3) uint8 and the cloth mask (H, W) bool."""
    rng = np.random.default_rng([seed, 5, 13])
    H, W = height * SS, width * SS
    g = garment_geometry(attrs, flat_skeleton(attrs["category"]))
    fn, unit = _fit(g, (H, W), fill=0.8, scale=1.0, angle=0.0, offset=(0.0, 0.0))
    g = g.transform(fn)
    canvas = np.full((H, W, 3), 250.0, np.float32)
    inside = np.array(COLOURS[attrs["colour"]], np.float32) * 0.62
    mask = draw_garment(canvas, g, attrs, unit=unit, seed=seed, rng=rng, inner_rgb=inside)
    return _downsample(canvas), _downsample_mask(mask)


NEUTRAL_TOP = {"category": "toptee", "colour": "white", "pattern": "solid", "sleeve": "short", "neckline": "crew"}
NEUTRAL_BOTTOM = {"category": "trousers", "colour": "grey", "pattern": "solid", "length": "full"}


@dataclass
class PersonRender:
    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8 internal labels (LABELS)
    keypoints: np.ndarray  # (18, 3): x, y, confidence
    garment_mask: np.ndarray  # (H, W) bool: the garment being tried on / designed
    agnostic_mask: np.ndarray  # (H, W) bool: region to repaint
    agnostic: np.ndarray  # (H, W, 3) uint8: person with that region greyed out
    sketch: np.ndarray  # (H, W) uint8: garment line drawing, black on white


def render_person(
    attrs: dict[str, str], height: int, width: int, seed: int, pose: str, body: str, garment_seed: int
) -> PersonRender:
    """A mannequin in ``pose`` wearing garment ``attrs`` (drawn with
    ``garment_seed`` so its pattern matches the product photos)."""
    rng = np.random.default_rng([seed, 17])
    H, W = height * SS, width * SS
    kp = person_skeleton(pose, body, H, W, rng)
    sw = float(np.linalg.norm(kp[K["l_shoulder"]] - kp[K["r_shoulder"]]))
    unit = sw
    tone = rng.uniform(232, 250)
    canvas = np.full((H, W, 3), tone, np.float32)
    labels = np.zeros((H, W), np.uint8)
    skin = np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float32)
    hair = np.array(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], np.float32)

    def paint(polys, rgb, label):
        m = _polys_mask(polys, (H, W))
        canvas[m] = rgb
        labels[m] = L[label]
        return m

    # Body: legs, torso, neck, head, hair, shoes; arms come after the clothes' bodies.
    for s in ("r", "l"):
        paint([_chain(_leg_chain(kp, s), [0.16 * sw, 0.12 * sw, 0.08 * sw])], skin * 0.97, f"{s}_leg")
    paint([np.array([kp[K["r_shoulder"]], kp[K["l_shoulder"]], kp[K["l_hip"]], kp[K["r_hip"]]])], skin, "torso_skin")
    neck = kp[K["neck"]]
    paint(
        [
            np.array(
                [
                    neck + (-0.09 * sw, -0.12 * sw),
                    neck + (0.09 * sw, -0.12 * sw),
                    neck + (0.09 * sw, 0.02 * sw),
                    neck + (-0.09 * sw, 0.02 * sw),
                ]
            )
        ],
        skin * 0.93,
        "neck",
    )
    head_c = kp[K["nose"]] + (0, -0.01 * H)
    paint([_ellipse(head_c, 0.2 * sw, 0.26 * sw)], skin, "face")
    paint([_ellipse(head_c + (0, -0.1 * sw), 0.22 * sw, 0.2 * sw, 180, 360)], hair, "hair")
    for s in ("r", "l"):
        a = kp[K[f"{s}_ankle"]]
        paint([_ellipse(a + (0, 0.03 * sw), 0.11 * sw, 0.06 * sw)], np.array((45, 40, 38), np.float32), f"{s}_shoe")

    cat = attrs["category"]
    target_label = L[GARMENT_LABEL[cat]]
    layers = []
    if cat in ("shirt", "toptee", "jacket"):
        layers.append((NEUTRAL_BOTTOM, L["pants"], seed + 1))
    if cat in ("skirt", "trousers"):
        layers.append((NEUTRAL_TOP, L["upper"], seed + 2))
    if cat == "jacket":
        layers.append((NEUTRAL_TOP, L["upper"], seed + 3))
    under_rgb = {}
    for other, lab, s in layers:
        g = garment_geometry(other, kp)
        body_parts = Garment([p for p in g.parts if p.name != "sleeves"], g.lines, g.dots)
        draw_garment(
            canvas, body_parts, other, unit=unit, seed=s, rng=rng, inner_rgb=skin * 0.93, labels=labels, label=lab
        )
        under_rgb[lab] = np.array(COLOURS[other["colour"]], np.float32)

    garment = garment_geometry(attrs, kp)
    sleeves = [p for p in garment.parts if p.name == "sleeves"]
    body_parts = Garment([p for p in garment.parts if p.name != "sleeves"], garment.lines, garment.dots)
    inner = under_rgb.get(L["upper"], skin * 0.93) if cat == "jacket" else skin * 0.93
    inner_labels = L["upper"] if cat == "jacket" else L["neck"]
    openings = _polys_mask([q for p in body_parts.parts if p.kind == "inner" for q in p.polys], (H, W))
    gmask = draw_garment(
        canvas,
        body_parts,
        attrs,
        unit=unit,
        seed=garment_seed,
        rng=rng,
        inner_rgb=inner,
        labels=labels,
        label=target_label,
    )
    labels[openings & gmask] = inner_labels
    gmask &= ~openings
    # Arms over the clothes' bodies, sleeves over the arms.
    for s in ("r", "l"):
        chain = [kp[K[f"{s}_shoulder"]], kp[K[f"{s}_elbow"]], kp[K[f"{s}_wrist"]]]
        paint(
            [_chain(chain, [0.11 * sw, 0.085 * sw, 0.065 * sw]), _ellipse(kp[K[f"{s}_wrist"]], 0.075 * sw, 0.075 * sw)],
            skin,
            f"{s}_arm",
        )
    for other, lab, s in layers:
        if other is NEUTRAL_TOP and cat != "jacket":
            g = garment_geometry(other, kp)
            sl = Garment([p for p in g.parts if p.name == "sleeves"])
            if sl.parts:
                draw_garment(canvas, sl, other, unit=unit, seed=s, rng=rng, inner_rgb=None, labels=labels, label=lab)
    if sleeves:
        m = draw_garment(
            canvas,
            Garment(sleeves),
            attrs,
            unit=unit,
            seed=garment_seed,
            rng=rng,
            inner_rgb=None,
            labels=labels,
            label=target_label,
        )
        gmask |= m

    # Inpainting region: the garment and the skin it may cover, widened.
    if cat in ("shirt", "toptee", "jacket"):
        region = np.isin(labels, [target_label, L["r_arm"], L["l_arm"], L["torso_skin"], L["neck"]])
        if cat == "jacket":
            region |= labels == L["upper"]
    elif cat == "dress":
        region = np.isin(
            labels, [target_label, L["r_arm"], L["l_arm"], L["torso_skin"], L["neck"], L["r_leg"], L["l_leg"]]
        )
    else:
        region = np.isin(labels, [target_label, L["r_leg"], L["l_leg"]])
    region_im = Image.fromarray((region * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(2 * round(0.04 * sw) + 1))
    region = np.asarray(region_im) > 127
    region &= ~np.isin(labels, [L["face"], L["hair"], L["r_shoe"], L["l_shoe"]])

    image = _downsample(canvas)
    agn_mask = _downsample_mask(region)
    agnostic = image.copy()
    agnostic[agn_mask] = 128
    conf = np.ones((18, 1))
    keypoints = np.concatenate([kp / SS, conf], axis=1)
    sk = garment_sketch(attrs, keypoints, height, width)
    return PersonRender(
        image=image,
        labels=_downsample_labels(labels),
        keypoints=keypoints,
        garment_mask=_downsample_mask(gmask),
        agnostic_mask=agn_mask,
        agnostic=agnostic,
        sketch=sk,
    )
