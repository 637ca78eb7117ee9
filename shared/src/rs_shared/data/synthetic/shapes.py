"""What things look like in the synthetic aerial scenes: the object registry, object outlines and paint,
land-cover textures and the paint of features (roads, runways, water, tree crowns).

Geometry follows :mod:`rs_shared.data.geometry`: pixel coordinates, x right, y down, (0, 0) the top-left
corner of the top-left pixel, so pixel ``(row i, column j)`` has its centre at ``(j + 0.5, i + 0.5)``;
angles rotate +x towards +y (clockwise on screen). Object outlines are drawn in a local frame of unit
length: ``u`` along the object (its front at ``u = +0.5``), ``v`` across it.

Sizes are in metres and become pixels through the scene's ``object_scale`` (pixels per metre). Each
category's long-side range ``[0.98 · base, 1.02 · 1.3 · base]`` (small and large instances, ±2 % jitter)
is disjoint from every other category's: consecutive base lengths grow by a factor 1.36, so category is
readable from size as well as from shape (the prototype's weakest skill was category-from-shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

SIZE_RATIO = 1.3  # long side of a "large" instance over a "small" one
SIZE_JITTER = 0.02
COLOUR_JITTER = 0.10

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (190, 45, 40),
    "white": (232, 232, 226),
    "yellow": (226, 196, 52),
    "black": (38, 38, 42),
    "blue": (50, 100, 200),
    "grey": (128, 128, 130),
    "green": (60, 140, 70),
}


@dataclass(frozen=True)
class Category:
    """One object category: its words, its DOTA-v1.0 class, and how it is drawn.

    ``base_length`` is the long side of a small instance in metres; ``aspect`` is width / length.
    """

    key: str
    noun: str
    plural: str
    dota: str | None
    shape: str
    base_length: float
    aspect: float
    colours: tuple[str, ...]
    shadow: float  # shadow offset in units of the object's length (how tall it looks)


def _registry(*cats: Category) -> dict[str, Category]:
    return {c.key: c for c in cats}


# Ordered by size: base lengths 4.2 m · 1.36^i (see the module docstring).
CATEGORIES: dict[str, Category] = _registry(
    Category("car", "car", "cars", "small-vehicle", "rectangle", 4.20, 0.50,
             ("red", "white", "yellow", "black", "blue", "grey"), 0.12),
    Category("truck", "truck", "trucks", "large-vehicle", "cab_rectangle", 5.71, 0.38,
             ("red", "white", "yellow", "blue", "grey"), 0.15),
    Category("swimming_pool", "swimming pool", "swimming pools", "swimming-pool", "rounded_rectangle",
             7.77, 0.55, ("blue",), 0.0),
    Category("storage_tank", "storage tank", "storage tanks", "storage-tank", "disc", 10.57, 1.0,
             ("white", "grey", "red", "green"), 0.30),
    Category("building", "building", "buildings", None, "roof_rectangle", 14.37, 0.70,
             ("red", "white", "grey", "yellow", "black"), 0.30),
    Category("ship", "ship", "ships", "ship", "pentagon", 19.55, 0.30,
             ("white", "grey", "red", "black", "blue"), 0.10),
    Category("tennis_court", "tennis court", "tennis courts", "tennis-court", "lined_rectangle", 26.59, 0.50,
             ("green", "blue", "red"), 0.0),
    Category("plane", "plane", "planes", "plane", "plane", 36.16, 0.94,
             ("white", "grey", "black", "red", "yellow"), 0.08),
)

# Five consecutive sizes with five distinct outlines: the categories of the referring tiles.
REFERRING_CATEGORIES = ("storage_tank", "building", "ship", "tennis_court", "plane")


def length_range(category: str) -> tuple[float, float]:
    """The ``(min, max)`` long side in metres of any instance of ``category``."""
    b = CATEGORIES[category].base_length
    return b * (1 - SIZE_JITTER), b * SIZE_RATIO * (1 + SIZE_JITTER)


# --- outlines ---------------------------------------------------------------------------------------

def _mirror(upper: list[tuple[float, float]]) -> np.ndarray:
    """Close an outline given from the front (v = 0) along its v ≥ 0 side back to the rear axis."""
    pts = np.array(upper, dtype=np.float64)
    lower = pts[::-1] * [1, -1]
    keep = lower[:, 1] != 0  # vertices on the axis appear once
    return np.concatenate([pts, lower[keep]])


_PLANE = _mirror([(0.5, 0.0), (0.43, 0.045), (0.12, 0.05), (-0.12, 0.47), (-0.2, 0.47), (-0.1, 0.05),
                  (-0.34, 0.045), (-0.45, 0.19), (-0.5, 0.19), (-0.48, 0.0)])


@lru_cache(maxsize=64)
def outline(shape: str, aspect: float) -> np.ndarray:
    """``(K, 2)`` outline of unit length, front at ``u = +0.5``, width ``aspect`` (planes: wingspan)."""
    h = aspect / 2
    if shape in ("rectangle", "roof_rectangle", "lined_rectangle"):
        return np.array([(-0.5, -h), (0.5, -h), (0.5, h), (-0.5, h)])
    if shape == "cab_rectangle":
        c = 0.84 * h
        return np.array([(-0.5, -h), (0.22, -h), (0.22, -c), (0.5, -c), (0.5, c), (0.22, c), (0.22, h), (-0.5, h)])
    if shape == "rounded_rectangle":
        k = 0.3 * h
        return np.array([(-0.5 + k, -h), (0.5 - k, -h), (0.5, -h + k), (0.5, h - k), (0.5 - k, h), (-0.5 + k, h),
                         (-0.5, h - k), (-0.5, -h + k)])
    if shape == "disc":
        t = np.arange(16) * (2 * np.pi / 16)
        return 0.5 * np.stack([np.cos(t), np.sin(t)], axis=1)
    if shape == "pentagon":
        return np.array([(0.5, 0.0), (0.22, h), (-0.5, h), (-0.5, -h), (0.22, -h)])
    if shape == "plane":
        return _PLANE * [1, aspect / 0.94]
    raise ValueError(f"unknown shape {shape!r}")


CONVEX_SHAPES = frozenset({"rectangle", "roof_rectangle", "lined_rectangle", "rounded_rectangle", "disc", "pentagon"})


def place_outline(shape: str, aspect: float, length: float, angle: float, cx: float, cy: float) -> np.ndarray:
    """The outline scaled to ``length`` pixels, rotated by ``angle`` and centred on ``(cx, cy)``; float."""
    c, s = np.cos(angle) * length, np.sin(angle) * length
    return outline(shape, aspect) @ np.array([[c, s], [-s, c]]) + (cx, cy)


def local_coords(xs: np.ndarray, ys: np.ndarray, cx, cy, angle, length) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres ``(xs + 0.5, ys + 0.5)`` in their objects' unit-length frames ``(u, v)``; the pose
    (centre, angle, length in pixels) is a scalar or one value per pixel."""
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy
    c, s = np.cos(angle), np.sin(angle)
    return (dx * c + dy * s) / length, (-dx * s + dy * c) / length


# --- object paint -----------------------------------------------------------------------------------

_GLASS = np.array([40, 46, 58], dtype=np.float32)
_LINE = np.array([238, 238, 232], dtype=np.float32)


def paint_object(shape: str, aspect: float, rgb: np.ndarray, u: np.ndarray, v: np.ndarray, length_px: np.ndarray,
                 variant: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3)`` float colours of ``n`` object pixels of one category, given per pixel: the object's
    colour ``rgb`` ``(n, 3)``, local coordinates ``u, v``, the object's length in pixels and a random
    per-object ``variant`` flag (buildings: gable or flat roof).

    The body is ``rgb`` shaded by at most ±25 % with a few markings (windows, roof ridge, court lines);
    objects under 10 px get no markings, so the named colour stays the dominant colour of every mask.
    """
    t = 1.0 / length_px  # marking lines one pixel wide
    h = aspect / 2
    au, av = np.abs(u), np.abs(v)
    detail = length_px >= 10
    over: list[tuple[np.ndarray, np.ndarray]] = []  # (where, colour) of the markings
    if shape == "rectangle":  # car
        f = 1 - 0.2 * (av / h) ** 4
        windows = (((u > 0.1) & (u < 0.3)) | ((u > -0.4) & (u < -0.28))) & (av < 0.8 * h)
        over.append((detail & windows, _GLASS))
    elif shape == "cab_rectangle":  # truck
        f = np.where(u > 0.22, 0.85, 1.0 + 0.05 * np.sin(u * 60))
        f = np.where((u > 0.19) & (u < 0.25), 0.5, f)
        over.append((detail & (u > 0.4) & (av < 0.7 * h), _GLASS))
    elif shape == "roof_rectangle":  # building: a gable roof lit on one side, or a flat roof with a parapet
        gable = np.where(av < t / 2, 0.7, np.where(v < 0, 1.08, 0.82))
        flat = np.where((au > 0.5 - t) | (av > h - t), 0.8, 1.0)
        f = np.where(variant, gable, flat)
    elif shape == "disc":  # storage tank
        r = np.hypot(u, v) * 2
        f = 1 + 0.12 * (u - v) - np.where(r > 1 - 2 * t, 0.22, 0.0) - np.where(r < 0.15, 0.12, 0.0)
    elif shape == "pentagon":  # ship, with a superstructure contrasting with the hull
        f = np.where((av < 0.6 * h) & (u < 0.3), 1.08, 0.95)
        cabin = np.where(rgb.mean(1, keepdims=True) < 150, np.float32(220), np.float32(92)) * np.ones(3, np.float32)
        over.append((detail & (u > -0.42) & (u < -0.15) & (av < 0.55 * h), cabin))
    elif shape == "lined_rectangle":  # tennis court: a 36 × 18 m pad around a 23.8 × 11 m court
        aw = av * (0.5 / aspect)
        court = (au < 0.331) & (aw < 0.153)
        f = np.where(court, 0.82, 1.0)
        line = court & ((au > 0.331 - t) | (aw > 0.153 - t) | (np.abs(aw - 0.114) < t / 2)
                        | ((np.abs(au - 0.178) < t / 2) & (aw < 0.114)) | ((aw < t / 2) & (au < 0.178)))
        over += [(line, _LINE), (court & (au < t / 2), np.array([70, 70, 70], np.float32))]
    elif shape == "rounded_rectangle":  # swimming pool, with a light coping
        f = 1.1 - 0.2 * np.maximum(0, 1 - np.maximum(au / 0.5, av / h))
        over.append(((length_px >= 12) & ((au > 0.5 - t) | (av > h - t)), np.array([225, 225, 218], np.float32)))
    elif shape == "plane":  # with engines and cockpit windows
        f = np.where(av < 0.055, 1.08, 0.94)
        engines = (np.hypot(u - 0.03, av - 0.19) < 0.035) | ((u > 0.43) & (av < 0.03))
        over.append(((length_px >= 16) & engines, _GLASS))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    out = rgb * f[:, None].astype(np.float32)
    for where, colour in over:
        out[where] = colour[where] if colour.ndim == 2 else colour
    out *= 1 + 0.03 * rng.standard_normal((len(u), 1), dtype=np.float32)
    return out


# --- textures ---------------------------------------------------------------------------------------

LAND_COLOURS: dict[str, tuple[int, int, int]] = {
    "grass": (86, 120, 56),
    "soil": (138, 110, 82),
    "sand": (208, 190, 148),
    "concrete": (160, 160, 154),
    "asphalt": (92, 92, 95),
    "water": (38, 72, 96),
    "forest": (44, 74, 40),
    "farmland": (132, 136, 74),  # mean of the crop palette
}
_CROPS = np.array([(78, 118, 48), (104, 140, 58), (150, 150, 70), (192, 172, 102), (134, 104, 72),
                   (160, 128, 90), (66, 100, 44)], dtype=np.float32)


def colour_field(shade: np.ndarray, rgb) -> np.ndarray:
    """``(h, w, 3)`` float32 image ``shade[..., None] * rgb``, built one channel at a time (numpy
    broadcasting over a trailing axis of 3 is several times slower)."""
    out = np.empty((*shade.shape, 3), np.float32)
    for c in range(3):
        np.multiply(shade, np.float32(rgb[c]), out=out[..., c])
    return out


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """``(h, w)`` float32 Gaussian field smooth over ``cell`` pixels (bilinear upsampling of a coarse grid)."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    g = rng.standard_normal((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(g).resize((w, h), Image.Resampling.BILINEAR))


def rotated_coords(h: int, w: int, angle: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in a frame centred at ``(cx, cy)`` whose ``u`` axis points along ``angle``."""
    x = (np.arange(w, dtype=np.float32) + 0.5 - cx)[None, :]
    y = (np.arange(h, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * c + y * s, -x * s + y * c


def land_texture(kind: str, rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """``(h, w, 3)`` float32 texture of a land cover; ``scale`` is pixels per metre."""
    if kind == "farmland":
        return _farmland(rng, h, w)
    base = np.array(LAND_COLOURS[kind], np.float32) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    patches = smooth_noise(rng, h, w, max(6.0, 40 * scale))
    fine = smooth_noise(rng, h, w, max(1.5, {"forest": 4.0, "grass": 3.0}.get(kind, 8.0) * scale))
    amp = {"grass": (0.08, 0.06), "soil": (0.07, 0.04), "sand": (0.04, 0.03), "concrete": (0.05, 0.02),
           "asphalt": (0.05, 0.03), "forest": (0.06, 0.2)}[kind]
    shade = 1 + amp[0] * patches + amp[1] * fine
    if kind == "forest":  # dark gaps between crowns
        shade -= 0.35 * (fine < -0.9)
    img = colour_field(shade, base)
    if kind in ("grass", "soil"):  # dry or lush patches shift the hue
        tint = smooth_noise(rng, h, w, max(6.0, 60 * scale))
        for c, k in enumerate((10.0, 6.0, -4.0)):
            img[..., c] += k * tint
    return img


def _farmland(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A patchwork of fields on a rotated grid, each with crop rows, separated by dark tracks."""
    s = min(h, w)
    u, v = rotated_coords(h, w, rng.uniform(-0.3, 0.3) + rng.choice([0.0, np.pi / 2]), w / 2, h / 2)
    reach = float(np.hypot(h, w)) / 2 + 1

    def edges():
        widths = rng.uniform(0.25, 0.6, 16) * s
        e = np.cumsum(widths) - reach - rng.uniform(0, widths[0])
        return e[e < reach]

    eu, ev = edges(), edges()
    iu, iv = np.searchsorted(eu, u), np.searchsorted(ev, v)
    fid = iu * (len(ev) + 1) + iv
    n = (len(eu) + 1) * (len(ev) + 1)
    colour = _CROPS[rng.integers(len(_CROPS), size=n)] * rng.uniform(0.92, 1.08, (n, 1)).astype(np.float32)
    period = rng.uniform(2.0, 5.0, n).astype(np.float32)
    along = rng.random(n) < 0.5
    phase = np.where(along[fid], u, v) / period[fid]
    shade = 1 + 0.07 * np.sin(2 * np.pi * phase) + 0.04 * smooth_noise(rng, h, w, max(4.0, s / 8))
    img = colour[fid]
    for c in range(3):
        img[..., c] *= shade
    du = np.min(np.abs(u[..., None] - eu), axis=-1) if len(eu) else np.full_like(u, np.inf)
    dv = np.min(np.abs(v[..., None] - ev), axis=-1) if len(ev) else np.full_like(v, np.inf)
    track = np.minimum(du, dv) < max(0.6, s / 200)
    img[track] = np.array([112, 96, 74], np.float32)
    return img


# --- features ---------------------------------------------------------------------------------------

def fill(img: np.ndarray, mask: np.ndarray, rgb, rng: np.random.Generator, amp: float = 0.04) -> None:
    """Paint ``mask`` with ``rgb`` and a little brightness noise (in place)."""
    n = int(mask.sum())
    if n:
        img[mask] = np.asarray(rgb, np.float32) * (1 + amp * rng.standard_normal((n, 1), dtype=np.float32))


def paint_water(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    h, w = mask.shape
    base = np.array(LAND_COLOURS["water"], np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    depth = smooth_noise(rng, h, w, max(8.0, 80 * scale))
    ripple = smooth_noise(rng, h, w, max(1.5, 3 * scale))
    img[mask] = colour_field(1 + 0.1 * depth + 0.03 * ripple, base)[mask]


def paint_road(img: np.ndarray, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, width: float,
               lanes: int, scale: float) -> None:
    """An asphalt road of ``width`` pixels centred on ``v = 0``.

    Two lanes get a dashed centre line; more lanes get two carriageways separated by a median strip,
    dashed lane lines and solid edge lines.
    """
    road = np.abs(v) < width / 2
    fill(img, road, np.array(LAND_COLOURS["asphalt"]) * rng.uniform(0.85, 1.15), rng, 0.05)
    line = max(0.6, 0.15 * scale)
    dash = (np.mod(u, max(6.0, 12 * scale)) < max(3.0, 6 * scale))
    white = np.array([225, 225, 218], np.float32)
    if lanes <= 2:
        fill(img, road & (np.abs(v) < line) & dash, white, rng)
        return
    lane_w = width / (lanes + 1)  # the median takes one lane width
    fill(img, road & (np.abs(v) < lane_w / 2), (120, 124, 110), rng)
    for k in range(1, lanes // 2):
        fill(img, road & (np.abs(np.abs(v) - lane_w / 2 - k * lane_w) < line) & dash, white, rng)
    fill(img, road & (np.abs(np.abs(v) - width / 2 + line * 1.5) < line), white, rng)


def paint_runway(img: np.ndarray, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, width: float,
                 end: float | None, scale: float) -> None:
    """A runway along ``u`` with edge lines, dashed centre line and, when ``end`` is given, threshold
    stripes where it ends at ``u = end`` (it extends towards +u)."""
    runway = np.abs(v) < width / 2
    if end is not None:
        runway &= u > end
    fill(img, runway, np.array([104, 104, 106]) * rng.uniform(0.85, 1.15), rng, 0.04)
    line = max(0.8, 0.5 * scale)
    white = np.array([236, 236, 230], np.float32)
    fill(img, runway & (np.abs(np.abs(v) - width / 2 + 2 * line) < line), white, rng)
    dash = np.mod(u, max(8.0, 50 * scale)) < max(4.0, 30 * scale)
    fill(img, runway & (np.abs(v) < line) & dash, white, rng)
    if end is not None:
        keys = (u > end + 2 * line) & (u < end + max(4.0, 30 * scale)) & (np.abs(v) < width / 2 - 4 * line)
        fill(img, runway & keys & (np.mod(v, max(2.0, 3.6 * scale)) < max(1.0, 1.8 * scale)), white, rng)


def paint_blobs(img: np.ndarray, rng: np.random.Generator, centres: np.ndarray, radii: np.ndarray, rgb,
                shadow: tuple[float, float]) -> None:
    """Round blobs (tree crowns, bushes, beach umbrellas) of ``radii`` pixels casting a shadow offset by
    ``shadow`` radii."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), bool)
    dark = np.zeros((h, w), bool)
    for (cx, cy), r in zip(centres, radii, strict=True):
        x0, x1 = max(0, int(cx - r - 3)), min(w, int(cx + r + 4))
        y0, y1 = max(0, int(cy - r - 3)), min(h, int(cy + r + 4))
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1) + 0.5 - cx
        ys = (np.arange(y0, y1) + 0.5 - cy)[:, None]
        mask[y0:y1, x0:x1] |= xs ** 2 + ys ** 2 < r * r
        dark[y0:y1, x0:x1] |= (xs - shadow[0] * r) ** 2 + (ys - shadow[1] * r) ** 2 < r * r
    img[dark & ~mask] *= 0.6
    n = int(mask.sum())
    if n:
        rgb = np.asarray(rgb, np.float32)
        img[mask] = rgb * (1 + 0.12 * rng.standard_normal((n, 1), dtype=np.float32))
