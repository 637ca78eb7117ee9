"""Procedural top-down aerial scenes with complete ground truth.

A :class:`Scene` is an RGB image plus everything that is in it: the scene class, the land cover, every
object (category, colour name, size label, integer polygon, oriented box, difficult flag) and boolean
layers of the surfaces (water, road, runway, pier, parking, tree) and of the shadows the objects cast.
Everything is deterministic in the seed: ``np.random.default_rng(seed)`` is the only source of
randomness, split into three streams (layout, background texture, object paint).

Ground truth and pixels agree bit-exactly: instance masks come from
:func:`rs_shared.data.masks.polygons_to_mask` (the rasteriser every reader uses) applied to the stored
polygons, and the renderer paints each object on exactly those pixels, last, over the background.

Units. ``object_scale`` is pixels per metre (1 / ground sampling distance). Object sizes are metric (see
:mod:`.shapes`); linear features (roads, runways, rivers) are metric too but clamped to a fraction of
the image, so they stay visible in small tiles. Defaults: ``min(3.0, min(W, H) / 64)`` — a 64 px tile is
zoomed out to 1 px/m (a car is 4–6 px, a plane 35–48 px), and from 192 px on it is DOTA-like 3 px/m
(small vehicles 12–17 px, planes 107–144 px).

Objects never overlap (a one-pixel gap separates them) and lie inside the image. In images whose short
side is at least 512 px (DOTA-size), convex objects may be cut by the border: their polygon is clipped
to the image and they are marked ``difficult``; objects under 16 pixels are also ``difficult``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..geometry import Boxes, BoxFormat, Frame, clip_polygon, normalize_obb, obb_to_quad, polygon_area
from ..masks import polygons_to_mask
from . import shapes
from .language import MAX_OBJECTS, ReferringExpression, referring_expression
from .layouts import LAYOUTS
from .shapes import CATEGORIES, COLOUR_JITTER, COLOURS, CONVEX_SHAPES, REFERRING_CATEGORIES, SIZE_JITTER, SIZE_RATIO

SCENE_CLASSES = ("airport", "harbor", "parking_lot", "storage_tanks", "dense_residential", "farmland",
                 "forest", "river", "beach", "sports_field", "freeway")
OBJECT_SCENE_CLASSES = ("airport", "harbor", "parking_lot", "storage_tanks", "dense_residential",
                        "sports_field", "freeway")  # the classes whose scenes always contain objects
MIXED = "mixed"  # scene class of the referring tiles: a plain background with objects of several categories
LAND_COVERS = ("grass", "soil", "sand", "concrete", "asphalt", "forest", "farmland")
SURFACE_LAYERS = ("water", "road", "runway", "pier", "parking", "tree")
LAYERS = (*SURFACE_LAYERS, "shadow")
PARTIAL_MIN_SIZE = 512  # images at least this large (short side) may cut objects at the border
DIFFICULT_AREA = 16
MIN_CONTRAST = 60.0  # preferred RGB distance between an object's colour and the ground under it
REFERRING_SCALE = 0.6  # pixels per metre of a 64 px referring tile (objects 6-29 px long)
AMBIGUOUS_FRACTION = 0.8  # referring tiles whose target's category appears 2-3 times


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One object. ``polygon`` is ``(K, 2)`` int64 pixel vertices (x, y). ``obb`` is its oriented box
    ``(cx, cy, w, h, θ)`` in the pixel frame, ``le90`` radians: the object's rectangle before its vertices
    were rounded (so within half a pixel of ``polygon``), or for an object cut by the image border the
    minimum-area rectangle of the visible polygon. ``rgb`` is the jittered colour the body is painted in."""

    category: str
    colour: str
    size: str  # "small" or "large" within the category
    polygon: np.ndarray
    obb: np.ndarray
    difficult: bool
    rgb: tuple[int, int, int]

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.obb[0]), float(self.obb[1])

    def mask(self, height: int, width: int) -> np.ndarray:
        """``(height, width)`` bool mask, rasterised like every reader does."""
        return polygons_to_mask([self.polygon], height, width)


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene: ``image`` ``(H, W, 3)`` uint8 and its ground truth.

    ``layers`` maps each name in :data:`LAYERS` to an ``(H, W)`` bool array. Surface layers are the
    visible surface under the objects and exclude each other (a bridge is road, not water); ``shadow``
    marks the shadows cast by objects. ``object_scale`` is in pixels per metre.
    """

    image: np.ndarray
    scene_class: str
    land_cover: str
    objects: list[SceneObject]
    layers: dict[str, np.ndarray]
    seed: int
    object_scale: float

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.image.shape[1], self.image.shape[0]

    def instance_masks(self) -> np.ndarray:
        """``(N, H, W)`` bool, one mask per object, in the order of :attr:`objects`."""
        h, w = self.image.shape[:2]
        if not self.objects:
            return np.zeros((0, h, w), bool)
        return np.stack([o.mask(h, w) for o in self.objects])

    def boxes(self, fmt: BoxFormat = "obb", frame: Frame = "pixel") -> Boxes:
        """Object boxes. ``obb``/``quad``: the oriented box (quad = its corners); ``xyxy``/``xywh``: the
        polygon's horizontal extent (as COCO and DOTA derive horizontal boxes)."""
        size = self.size
        if fmt in ("obb", "quad"):
            obb = np.array([o.obb for o in self.objects]).reshape(-1, 5)
            if fmt == "obb":  # oriented boxes exist only in the pixel frame; other frames raise
                return Boxes(obb, "obb", "pixel", size, "le90").to(frame=frame)
            return Boxes(obb_to_quad(obb), "quad", "pixel", size).to(frame=frame)
        xyxy = np.array([[*o.polygon.min(0), *o.polygon.max(0)] for o in self.objects]).reshape(-1, 4)
        return Boxes(xyxy, "xyxy", "pixel", size).to(fmt, frame)


def default_object_scale(size: tuple[int, int]) -> float:
    """Pixels per metre used when ``object_scale`` is not given (see the module docstring)."""
    return min(3.0, min(size) / 64)


def make_scene(seed: int, size: tuple[int, int] = (64, 64), scene_class: str | None = None,
               object_scale: float | None = None, max_objects: int = 80) -> Scene:
    """A scene of ``scene_class`` (random among :data:`SCENE_CLASSES` when None) of ``size = (W, H)``.

    ``max_objects`` caps the object count (dense classes such as parking lots fill up to it in large
    images).
    """
    return _build(seed, size, scene_class, object_scale, max_objects).finish()


def referring_object_scale(size: tuple[int, int]) -> float:
    """Pixels per metre of referring tiles when ``object_scale`` is not given: :data:`REFERRING_SCALE` at 64 px."""
    return REFERRING_SCALE * min(size) / 64


def make_referring_scene(seed: int, size: tuple[int, int] = (64, 64), object_scale: float | None = None,
                         kinds: Sequence[str] | None = None) -> tuple[Scene, ReferringExpression]:
    """A referring-segmentation sample: a mixed tile and an expression that identifies one object.

    Follows the prototype's statistics: 3–6 objects of :data:`~.shapes.REFERRING_CATEGORIES`; in 80 %
    of tiles the target's category appears 2–3 times (the rest are mostly other categories), otherwise
    once. ``object_scale`` defaults to ``0.6 · min(size) / 64`` px/m, so a tile looks the same at any
    size. ``kinds`` restricts the expression kinds (e.g. ``("category", "colour")`` for a quick check);
    layouts are redrawn until an allowed kind identifies the target. The mask is
    ``scene.objects[expr.target].mask(h, w)``.
    """
    rng = np.random.default_rng(seed)
    scale = object_scale or referring_object_scale(size)
    cats = REFERRING_CATEGORIES
    target_cat = cats[int(rng.integers(len(cats)))]
    n_same = int(rng.integers(2, 4)) if rng.random() < AMBIGUOUS_FRACTION else 1
    others = [c for c in cats if c != target_cat]
    for _ in range(200):
        n_total = int(rng.integers(max(3, n_same + 1), 7))
        chosen = [target_cat] * n_same + [others[int(k)] for k in rng.integers(len(others), size=n_total - n_same)]
        scene = _mixed_scene(rng.spawn(1)[0], seed, size, chosen, scale)
        same = [i for i, o in enumerate(scene.objects) if o.category == target_cat]
        if len(same) != n_same or len(scene.objects) < 3:
            continue
        expr = referring_expression(scene, same[int(rng.integers(n_same))], rng, kinds)
        if expr is not None:
            return scene, expr
    raise RuntimeError(f"no referring sample for seed {seed} at size {size} after 200 layouts; "
                       "objects may be too large for the image (lower object_scale) or kinds too narrow")


def _build(seed: int, size: tuple[int, int], scene_class: str | None, object_scale: float | None,
           max_objects: int) -> _Builder:
    if not 0 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must be in [0, {MAX_OBJECTS}], got {max_objects}")
    b = _Builder(seed, size, object_scale or default_object_scale(size), max_objects)
    if scene_class is None:
        scene_class = SCENE_CLASSES[int(b.rng.integers(len(SCENE_CLASSES)))]
    if scene_class not in LAYOUTS:
        raise ValueError(f"unknown scene class {scene_class!r}; expected one of {SCENE_CLASSES}")
    b.scene_class = scene_class
    LAYOUTS[scene_class](b)
    return b


def _mixed_scene(rng: np.random.Generator, seed: int, size: tuple[int, int], categories: Sequence[str],
                 object_scale: float) -> Scene:
    """A plain tile (grass, soil, sand or concrete, sometimes a road) with one object per entry of
    ``categories``, placed at random; objects that find no free spot are left out."""
    b = _Builder(rng, size, object_scale, len(categories))
    b.scene_class, b.land = MIXED, b.choice(["grass", "soil", "sand", "concrete"])
    if b.rng.random() < 0.5:
        b.road(b.rng.uniform(-np.pi, np.pi), *b.point(0.3), b.clamp(8, 0.08, 0.14), 2)
    b.bushes(b.rng.integers(0, 4))
    order = sorted(categories, key=lambda c: -CATEGORIES[c].base_length)  # big ones first pack best
    for cat in order:
        b.scatter(cat, 1, tries=40)
    b.seed = seed
    return b.finish()


class _Builder:
    """Mutable state while a scene is laid out: layers, background painters, placed objects."""

    def __init__(self, seed: int | np.random.Generator, size: tuple[int, int], scale: float, max_objects: int):
        root = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.rng, self.tex_rng, self.paint_rng = root.spawn(3)
        self.seed = -1 if isinstance(seed, np.random.Generator) else int(seed)
        self.w, self.h = int(size[0]), int(size[1])
        if self.w < 8 or self.h < 8:
            raise ValueError(f"scene size must be at least 8 × 8 pixels, got {size}")
        self.s = min(self.w, self.h)
        self.scale = float(scale)
        self.max_objects = max_objects
        self.partial = self.s >= PARTIAL_MIN_SIZE
        self.scene_class, self.land = MIXED, "grass"
        self.layers = {k: np.zeros((self.h, self.w), bool) for k in LAYERS}
        self.ops: list[Callable[[np.ndarray, np.random.Generator], None]] = []
        self.background: np.ndarray | None = None
        self.objects: list[_Placed] = []
        self.occupied = np.zeros((self.h, self.w), bool)

    # --- helpers for layouts -------------------------------------------------------------------------
    def choice(self, options: Sequence, p: Sequence[float] | None = None):
        k = self.rng.integers(len(options)) if p is None else self.rng.choice(len(options), p=p)
        return options[int(k)]

    def point(self, spread: float = 0.5) -> tuple[float, float]:
        """A random point within ``spread`` · size of the image centre."""
        return (self.w / 2 + self.rng.uniform(-spread, spread) * self.w,
                self.h / 2 + self.rng.uniform(-spread, spread) * self.h)

    def clamp(self, metres: float, lo: float, hi: float) -> float:
        """``metres`` in pixels, kept within ``[lo, hi]`` times the image's short side."""
        return float(np.clip(metres * self.scale, lo * self.s, hi * self.s))

    def axis_angle(self, p_axis: float = 0.6) -> float:
        """Near-horizontal or near-vertical with probability ``p_axis`` (as built things mostly are), else any."""
        if self.rng.random() < p_axis:
            return self.rng.integers(2) * np.pi / 2 + self.rng.normal(0, 0.04)
        return self.rng.uniform(-np.pi / 2, np.pi / 2)

    def coords(self, angle: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
        """Every pixel in the frame centred at ``(cx, cy)`` whose ``u`` axis points along ``angle``."""
        return shapes.rotated_coords(self.h, self.w, angle, cx, cy)

    def surface(self, layer: str | None, mask: np.ndarray, painter: Callable | None = None) -> None:
        """Make ``mask`` the visible surface ``layer`` (None: plain ground) and queue its painter."""
        if self.background is not None:
            raise RuntimeError("surfaces must be added before objects are placed")
        for k in SURFACE_LAYERS:
            self.layers[k] &= ~mask
        if layer is not None:
            self.layers[layer] |= mask
        if painter is not None:
            self.ops.append(painter)

    def road(self, angle: float, cx: float, cy: float, width: float, lanes: int):
        """A straight road of ``width`` pixels through ``(cx, cy)``; returns its frame ``u, v`` and mask."""
        u, v = self.coords(angle, cx, cy)
        mask = np.abs(v) < width / 2
        self.surface("road", mask, lambda img, rng: shapes.paint_road(img, rng, u, v, width, lanes, self.scale))
        return u, v, mask

    def paved(self, mask: np.ndarray, kind: str, layer: str | None) -> None:
        rgb = shapes.LAND_COLOURS[kind]
        self.surface(layer, mask, lambda img, rng: shapes.fill(img, mask, np.array(rgb) * rng.uniform(0.9, 1.1), rng))

    def water(self, mask: np.ndarray) -> None:
        self.surface("water", mask, lambda img, rng: shapes.paint_water(img, mask, rng, self.scale))

    def bushes(self, n: int, region: np.ndarray | None = None) -> None:
        """``n`` tree crowns or bushes (1.5–4 m) with shadows, at random points (inside ``region`` if given)."""
        if n <= 0:
            return
        pts = np.stack([self.rng.uniform(0, self.w, n), self.rng.uniform(0, self.h, n)], axis=1)
        if region is not None:
            pts = pts[region[pts[:, 1].astype(int), pts[:, 0].astype(int)]]
        radii = np.maximum(0.8, self.rng.uniform(1.5, 4, len(pts)) * self.scale)
        mask = np.zeros((self.h, self.w), bool)
        for (cx, cy), r in zip(pts, radii, strict=True):
            x0, x1 = max(0, int(cx - r)), min(self.w, int(cx + r) + 1)
            y0, y1 = max(0, int(cy - r)), min(self.h, int(cy + r) + 1)
            xs, ys = np.arange(x0, x1) + 0.5 - cx, (np.arange(y0, y1) + 0.5 - cy)[:, None]
            mask[y0:y1, x0:x1] |= xs ** 2 + ys ** 2 < r * r
        rgb = np.array(shapes.LAND_COLOURS["forest"]) * self.rng.uniform(0.8, 1.2)
        self.surface("tree", mask, lambda img, rng: shapes.paint_blobs(img, rng, pts, radii, rgb, (0.4, 0.5)))

    # --- objects -----------------------------------------------------------------------------------
    def scatter(self, category: str, n: int, region: np.ndarray | None = None, tries: int = 20, **kw) -> int:
        """Try to place ``n`` objects at random points (``tries`` attempts each); returns how many fit."""
        placed = 0
        for _ in range(n):
            placed += any(self.place(category, None, None, region=region, **kw) for _ in range(tries))
        return placed

    def place(self, category: str, cx: float | None, cy: float | None, angle: float | None = None,
              size: str | None = None, colour: str | None = None, region: np.ndarray | None = None) -> bool:
        """Place one object centred at ``(cx, cy)`` (None: a random point) if it fits: free, inside
        ``region`` and inside the image. Returns whether it was placed."""
        if len(self.objects) >= self.max_objects:
            return False
        cat, rng = CATEGORIES[category], self.rng
        size = size or ("small" if rng.random() < 0.5 else "large")
        length = (cat.base_length * (SIZE_RATIO if size == "large" else 1.0) * self.scale
                  * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER))
        if cx is None or cy is None:  # a free pixel, far enough from the border for the object to fit
            r = 0 if self.partial else int(min(length / 2, self.w / 2 - 1, self.h / 2 - 1))
            free = np.flatnonzero(~self.occupied[r:self.h - r, r:self.w - r])
            if not len(free):
                return False
            k = int(free[rng.integers(len(free))])
            cy, cx = r + k // (self.w - 2 * r) + rng.random(), r + k % (self.w - 2 * r) + rng.random()
        inside = 0 <= cx < self.w and 0 <= cy < self.h
        if inside and self.occupied[int(cy), int(cx)] or not inside and (region is not None or not self.partial):
            return False
        if region is not None and not region[int(cy), int(cx)]:
            return False
        if self.background is None:
            self._render_background()
        angle = rng.uniform(-np.pi, np.pi) if angle is None else angle
        poly = np.round(shapes.place_outline(cat.shape, cat.aspect, length, angle, cx, cy))
        (x0, y0), (x1, y1) = poly.min(0).astype(int), poly.max(0).astype(int)
        clipped = x0 < 0 or y0 < 0 or x1 > self.w or y1 > self.h
        if clipped:
            if not self.partial or cat.shape not in CONVEX_SHAPES:
                return False
            full = polygon_area(poly)
            poly = np.round(clip_polygon(poly, 0, 0, self.w, self.h))
            poly = poly[np.any(poly != np.roll(poly, 1, axis=0), axis=1)]
            if len(poly) < 3 or polygon_area(poly) < 0.3 * full:
                return False
            (x0, y0), (x1, y1) = poly.min(0).astype(int), poly.max(0).astype(int)
        if x1 <= x0 or y1 <= y0:
            return False
        if x1 * y1 > 1 << 14:
            # Far from the origin, test the translated crop first (cheap); pycocotools' exact mask depends on
            # the absolute coordinates (a translated polygon can differ by a pixel), hence the second pass.
            quick = polygons_to_mask([poly - [x0, y0]], y1 - y0, x1 - x0)
            if not self._fits(quick, x0, y0, region):
                return False
        mask = polygons_to_mask([poly], y1, x1)[y0:y1, x0:x1]
        area = int(mask.sum())
        if area < 3 or not self._fits(mask, x0, y0, region):
            return False
        ground = self.background[min(max(int(cy), 0), self.h - 1), min(max(int(cx), 0), self.w - 1)]
        colour = colour or self.pick_colour(cat.colours, ground)
        rgb = np.clip(np.array(COLOURS[colour]) * rng.uniform(1 - COLOUR_JITTER, 1 + COLOUR_JITTER)
                      * rng.uniform(0.96, 1.04, 3), 0, 255)  # brightness ±10 %, hue barely
        # The oriented box is the object's rectangle before its vertices were rounded to integers (within
        # half a pixel of the polygon); a clipped object gets the minimum-area rectangle of what is visible.
        obb = min_area_rect(poly) if clipped else np.array([cx, cy, length, length * cat.aspect, angle])
        difficult = clipped or area < DIFFICULT_AREA
        self.objects.append(_Placed(category, colour, size, poly.astype(np.int64), obb, difficult,
                                    tuple(int(c) for c in np.round(rgb)), cx, cy, angle, length, x0, y0, mask))
        self._occupy(mask, x0, y0)
        return True

    def _fits(self, mask: np.ndarray, x0: int, y0: int, region: np.ndarray | None) -> bool:
        y1, x1 = y0 + mask.shape[0], x0 + mask.shape[1]
        if (mask & self.occupied[y0:y1, x0:x1]).any():
            return False
        return region is None or not (mask & ~region[y0:y1, x0:x1]).any()

    def pick_colour(self, allowed: tuple[str, ...], ground: np.ndarray) -> str:
        """A random colour among ``allowed`` that stands out from ``ground`` (RGB), else the farthest."""
        dist = np.sqrt(((_rgb_table(allowed) - ground) ** 2).sum(1))
        ok = [c for c, d in zip(allowed, dist, strict=True) if d >= MIN_CONTRAST]
        return self.choice(ok) if ok else allowed[int(np.argmax(dist))]

    def _occupy(self, mask: np.ndarray, x0: int, y0: int) -> None:
        """Mark ``mask`` (at ``x0, y0``) and a one-pixel ring around it as taken."""
        h, w = mask.shape
        pad = np.zeros((h + 2, w + 2), bool)
        for dy, dx in ((1, 1), (0, 1), (2, 1), (1, 0), (1, 2)):
            pad[dy:dy + h, dx:dx + w] |= mask
        ya, xa = max(0, y0 - 1), max(0, x0 - 1)
        yb, xb = min(self.h, y0 + h + 1), min(self.w, x0 + w + 1)
        self.occupied[ya:yb, xa:xb] |= pad[ya - y0 + 1:yb - y0 + 1, xa - x0 + 1:xb - x0 + 1]

    # --- rendering ---------------------------------------------------------------------------------
    def _render_background(self) -> None:
        rng = self.tex_rng
        img = shapes.land_texture(self.land, rng, self.h, self.w, self.scale)
        for op in self.ops:
            op(img, rng)
        light = rng.uniform(0.85, 1.15) * rng.uniform(0.97, 1.03, 3)
        grain = 3.0 * rng.standard_normal((self.h, self.w), dtype=np.float32)
        for c in range(3):  # per channel: broadcasting over a trailing axis of 3 is slow
            img[..., c] *= np.float32(light[c])
            img[..., c] += grain
        self.background = img

    def finish(self, paint_objects: bool = True) -> Scene:
        """Cast the objects' shadows, paint the objects on their masks and freeze the scene.

        ``paint_objects=False`` leaves the background untouched (tests compare it with the scene)."""
        if self.background is None:
            self._render_background()
        img = self.background.copy() if paint_objects else self.background
        sun = self.tex_rng.uniform(-np.pi, np.pi)
        shadow, covered = self.layers["shadow"], np.zeros((self.h, self.w), bool)
        for o in self.objects:
            off = CATEGORIES[o.category].shadow * o.length
            _or_into(shadow, o.mask, o.x0 + int(round(off * np.cos(sun))), o.y0 + int(round(off * np.sin(sun))))
            _or_into(covered, o.mask, o.x0, o.y0)
        shadow &= ~covered
        if paint_objects and self.objects:
            img[shadow] *= 0.55
            self._paint_objects(img)
        image = np.clip(np.round(img), 0, 255).astype(np.uint8)
        obbs = normalize_obb(np.array([o.obb for o in self.objects]).reshape(-1, 5), "le90")
        objects = [SceneObject(o.category, o.colour, o.size, o.polygon, obb, o.difficult, o.rgb)
                   for o, obb in zip(self.objects, obbs, strict=True)]
        return Scene(image, self.scene_class, self.land, objects, self.layers, self.seed, self.scale)


    def _paint_objects(self, img: np.ndarray) -> None:
        """Paint every object on its mask: all pixels at once, one call per category."""
        objs = self.objects
        pixels = [np.nonzero(o.mask) for o in objs]
        k = np.repeat(np.arange(len(objs)), [len(p[0]) for p in pixels])
        ys = np.concatenate([p[0] + o.y0 for p, o in zip(pixels, objs, strict=True)])
        xs = np.concatenate([p[1] + o.x0 for p, o in zip(pixels, objs, strict=True)])
        pose = np.array([(o.cx, o.cy, o.angle, o.length) for o in objs])[k]
        u, v = shapes.local_coords(xs, ys, pose[:, 0], pose[:, 1], pose[:, 2], pose[:, 3])
        rgb = np.array([o.rgb for o in objs], np.float32)[k]
        variant = (self.paint_rng.random(len(objs)) < 0.6)[k]
        cat_of = np.array([o.category for o in objs])
        out = np.empty((len(k), 3), np.float32)
        for name in sorted(set(cat_of)):
            sel = (cat_of == name)[k]
            cat = CATEGORIES[name]
            out[sel] = shapes.paint_object(cat.shape, cat.aspect, rgb[sel], u[sel], v[sel], pose[sel, 3], variant[sel],
                                           self.paint_rng)
        img[ys, xs] = out


@dataclass(eq=False)
class _Placed:
    """An object while the scene is built: its ground truth, its pose and its exact mask crop at (x0, y0)."""

    category: str
    colour: str
    size: str
    polygon: np.ndarray
    obb: np.ndarray  # raw (cx, cy, w, h, θ), normalised to le90 when the scene is frozen
    difficult: bool
    rgb: tuple[int, int, int]
    cx: float
    cy: float
    angle: float
    length: float
    x0: int
    y0: int
    mask: np.ndarray


@lru_cache(maxsize=32)
def _rgb_table(names: tuple[str, ...]) -> np.ndarray:
    return np.array([COLOURS[c] for c in names], np.float64)


def _or_into(target: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    """``target |= mask`` placed with its top-left pixel at ``(x0, y0)``, cut to ``target``."""
    h, w = mask.shape
    ya, xa, yb, xb = max(0, y0), max(0, x0), min(target.shape[0], y0 + h), min(target.shape[1], x0 + w)
    if ya < yb and xa < xb:
        target[ya:yb, xa:xb] |= mask[ya - y0:yb - y0, xa - x0:xb - x0]


def min_area_rect(polygon: np.ndarray) -> np.ndarray:
    """Minimum-area rectangle ``(cx, cy, w, h, θ)`` of a ``(K, 2)`` polygon (θ unnormalised, radians).

    The optimal rectangle has a side on a convex-hull edge; every hull edge joins two vertices, so trying
    the direction of every vertex pair is exact.
    """
    p = np.asarray(polygon, np.float64)
    i, j = _pairs(len(p))
    e = p[j] - p[i]
    norm = np.hypot(e[:, 0], e[:, 1])
    d = e[norm > 0] / norm[norm > 0, None]            # unit directions (M, 2)
    u, v = d @ p.T, (d[:, ::-1] * [-1, 1]) @ p.T      # coordinates along and across each direction
    lo_u, hi_u, lo_v, hi_v = u.min(1), u.max(1), v.min(1), v.max(1)
    area = (hi_u - lo_u) * (hi_v - lo_v)
    k = int(np.argmin(area + 1e-9 * np.arange(len(area))))
    uc, vc, (c, s) = (hi_u[k] + lo_u[k]) / 2, (hi_v[k] + lo_v[k]) / 2, d[k]
    return np.array([uc * c - vc * s, uc * s + vc * c, hi_u[k] - lo_u[k], hi_v[k] - lo_v[k], np.arctan2(s, c)])


@lru_cache(maxsize=64)
def _pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(k, 1)
