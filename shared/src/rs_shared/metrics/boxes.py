"""Intersection over union of horizontal boxes and of oriented boxes / convex quadrilaterals.

Two geometries, each exact:

- **Horizontal boxes** (``xyxy``): the usual area formula. A box with ``x2 < x1`` or ``y2 < y1`` has zero area.
- **Polygons** (``quad``, and ``obb`` through its corners): the exact area of the intersection of two convex
  quadrilaterals, as mmcv's ``box_iou_rotated`` / ``box_iou_quadri`` and shapely's
  ``Polygon.intersection`` compute it for DOTA-style evaluation. The intersection of two convex polygons is
  the convex polygon spanned by the vertices of each that lie inside the other and the crossings of their
  edges; its area is the shoelace sum of those points in angular order.

Quadrilaterals are taken as the **convex hull of their four vertices**, whatever the vertex order. For the
convex quads of DOTA, refGeo and every oriented box this is the quad itself; for a non-convex (dart) or
self-intersecting ("bow-tie") vertex list the IoU is that of the hulls. Zero-area boxes have IoU 0 with
everything, including themselves.

The IoU of two boxes does not change when the whole image is rescaled, even by different factors along x
and y (areas all scale by ``sx · sy``). So two sets of normalised boxes of the same image are compared
directly, without the image size; comparing pixel with normalised boxes needs ``image_size``
(:func:`common_frame`).

Everything is vectorised over box pairs. Polygon pairs whose enclosing horizontal boxes do not overlap are
skipped (their IoU is 0), so large, sparse ``N × M`` matrices stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rs_shared.data.geometry import FRAME_SCALE, Boxes, sort_quad_vertices

HORIZONTAL_FORMATS = ("xyxy", "xywh")

_PAIR_CHUNK = 8192  # polygon pairs per vectorised batch (bounds temporary memory to a few tens of MB)
_BLOCK_ELEMENTS = 1 << 21  # N × M entries per block when scanning all pairs
_EPS = 1e-12  # boundary tolerance, in units of the pair's extent (coordinates are rescaled to O(1))


def box_iou(a: Boxes, b: Boxes) -> np.ndarray:
    """``(N, M)`` IoU between every box of ``a`` and every box of ``b``.

    Horizontal IoU when both are ``xyxy``/``xywh``; otherwise the exact polygon IoU of their quadrilaterals
    (oriented boxes become their four corners). To score oriented annotations as horizontal boxes (e.g.
    DOTA Task 2), convert them first with ``boxes.to("xyxy")``.
    """
    if a.fmt in HORIZONTAL_FORMATS and b.fmt in HORIZONTAL_FORMATS:
        return xyxy_iou(*common_frame(a, b, "xyxy"))
    return quad_iou(*common_frame(a, b, "quad"))


def common_frame(
    a: Boxes, b: Boxes, fmt: Literal["xyxy", "quad"], *, pixel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates of ``a`` and ``b`` as ``(N, k)`` arrays in format ``fmt`` and one shared frame.

    - Two sets of pixel boxes stay in pixels.
    - Two sets of normalised boxes (any of norm1/norm100/norm1000) become fractions of the image, which
      preserves IoU without knowing the image size — unless ``pixel=True``, which asks for pixels.
    - Otherwise the normalised side is converted to pixels with the ``image_size`` of either side.

    Raises ``ValueError`` when the two sets carry different image sizes (boxes of different images, or of
    the same image at two resolutions: map one onto the other with ``Boxes.resize``), or when pixels are
    needed and neither side says how large the image is.
    """
    if a.image_size is not None and b.image_size is not None and tuple(a.image_size) != tuple(b.image_size):
        raise ValueError(
            f"boxes of images of different sizes ({tuple(a.image_size)} vs {tuple(b.image_size)}) cannot be "
            "compared; map them onto one image first (Boxes.resize)"
        )
    if not pixel and a.frame != "pixel" and b.frame != "pixel":
        return tuple(box.to(fmt).data / FRAME_SCALE[box.frame] for box in (a, b))  # type: ignore[return-value]
    size = a.image_size if a.image_size is not None else b.image_size
    out = []
    for box in (a, b):
        if box.frame != "pixel":
            if size is None:
                raise ValueError(
                    f"cannot compare {a.frame} boxes with {b.frame} boxes in pixels: converting {box.frame} "
                    "boxes to pixels needs image_size=(width, height) on either Boxes"
                )
            box = Boxes(box.data, box.fmt, box.frame, tuple(size))
        out.append(box.to(fmt, "pixel").data)
    return out[0], out[1]


# --- horizontal boxes -------------------------------------------------------------------------------

def xyxy_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of horizontal boxes ``a (N, 4)`` and ``b (M, 4)``, ``x1, y1, x2, y2`` in one frame."""
    a, b = _as_boxes(a, 4), _as_boxes(b, 4)
    out = np.zeros((len(a), len(b)))
    for rows in _row_blocks(len(a), len(b)):
        out[rows] = _xyxy_iou(a[rows, None, :], b[None, :, :])
    return out


def xyxy_iou_pairs(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """``(P,)`` IoU of the horizontal boxes ``a[ia[k]]`` and ``b[ib[k]]`` (``x1, y1, x2, y2``, one frame)."""
    return _xyxy_iou(_as_boxes(a, 4)[ia], _as_boxes(b, 4)[ib])


def _xyxy_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcasting arrays of boxes ``(..., 4)``."""
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    union = _xyxy_area(a) + _xyxy_area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _xyxy_area(d: np.ndarray) -> np.ndarray:
    return np.clip(d[..., 2] - d[..., 0], 0, None) * np.clip(d[..., 3] - d[..., 1], 0, None)


# --- convex quadrilaterals --------------------------------------------------------------------------

def quad_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` exact IoU of quadrilaterals ``a (N, 8)`` and ``b (M, 8)`` (``x1, y1, …, x4, y4``, one frame)."""
    pa, pb = _ConvexQuads.of(a), _ConvexQuads.of(b)
    out = np.zeros((len(pa.xyxy), len(pb.xyxy)))
    for rows in _row_blocks(len(pa.xyxy), len(pb.xyxy)):
        i, j = np.nonzero(_overlap(pa.xyxy[rows, None, :], pb.xyxy[None, :, :]))
        out[i + rows.start, j] = _polygon_iou(pa, pb, i + rows.start, j)
    return out


def quad_iou_pairs(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """``(P,)`` exact IoU of the quadrilaterals ``a[ia[k]]`` and ``b[ib[k]]`` (``(N, 8)`` and ``(M, 8)``)."""
    pa, pb = _ConvexQuads.of(a), _ConvexQuads.of(b)
    ia, ib = np.asarray(ia, dtype=np.intp), np.asarray(ib, dtype=np.intp)
    out = np.zeros(len(ia))
    k = np.flatnonzero(_overlap(pa.xyxy[ia], pb.xyxy[ib]))
    out[k] = _polygon_iou(pa, pb, ia[k], ib[k])
    return out


@dataclass(frozen=True)
class _ConvexQuads:
    """Quads as convex hulls: ``(N, 4, 2)`` vertices in ascending angle (positive shoelace area), the
    reflex vertex of a dart replaced by a copy of its predecessor; their areas and enclosing boxes."""

    points: np.ndarray
    area: np.ndarray
    xyxy: np.ndarray

    @classmethod
    def of(cls, quads: np.ndarray) -> _ConvexQuads:
        q = _as_boxes(quads, 8)
        if not len(q):
            return cls(np.zeros((0, 4, 2)), np.zeros(0), np.zeros((0, 4)))
        p = sort_quad_vertices(q, clockwise=True).reshape(-1, 4, 2)  # ascending atan2: counter-clockwise in x, y
        turn = _cross(p - np.roll(p, 1, axis=1), np.roll(p, -1, axis=1) - p)  # < 0 at a reflex vertex
        rows, worst = np.arange(len(p)), turn.argmin(axis=1)
        dart = turn[rows, worst] < 0
        p[rows[dart], worst[dart]] = np.roll(p, 1, axis=1)[rows[dart], worst[dart]]
        centred = p - p.mean(axis=1, keepdims=True)  # shoelace about the centre keeps far-off boxes precise
        area = np.clip(0.5 * _cross(centred, np.roll(centred, -1, axis=1)).sum(axis=1), 0, None)
        return cls(p, area, np.concatenate([p.min(axis=1), p.max(axis=1)], axis=1))


def _polygon_iou(pa: _ConvexQuads, pb: _ConvexQuads, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    out = np.zeros(len(ia))
    for s in range(0, len(ia), _PAIR_CHUNK):
        i, j = ia[s:s + _PAIR_CHUNK], ib[s:s + _PAIR_CHUNK]
        area_a, area_b = pa.area[i], pb.area[j]
        inter = np.minimum(_intersection_area(pa.points[i], pb.points[j]), np.minimum(area_a, area_b))
        inter = np.where((area_a > 0) & (area_b > 0), inter, 0.0)
        union = area_a + area_b - inter
        out[s:s + _PAIR_CHUNK] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def _intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(P,)`` areas of the intersections of convex, counter-clockwise polygons ``a[k]`` and ``b[k]``
    (``(P, K, 2)`` each; repeated vertices allowed)."""
    # Work in pair-local coordinates of size O(1), so that one absolute tolerance fits every scale.
    lo = np.minimum(a.min(axis=1), b.min(axis=1))
    hi = np.maximum(a.max(axis=1), b.max(axis=1))
    scale = (hi - lo).max(axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    origin = ((lo + hi) / 2)[:, None, :]
    a = (a - origin) / scale[:, None, None]
    b = (b - origin) / scale[:, None, None]
    ea, eb = np.roll(a, -1, axis=1) - a, np.roll(b, -1, axis=1) - b  # edge k runs from vertex k to k + 1

    # Crossings of edge i of a with edge j of b: a_i + t·ea_i = b_j + u·eb_j with t, u in [0, 1].
    d = b[:, None, :, :] - a[:, :, None, :]  # (P, Ka, Kb, 2)
    den = _cross(ea[:, :, None, :], eb[:, None, :, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = _cross(d, eb[:, None, :, :]) / den
        u = _cross(d, ea[:, :, None, :]) / den
    crosses = (den != 0) & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    crossing = a[:, :, None, :] + np.where(crosses, t, 0.0)[..., None] * ea[:, :, None, :]

    points = np.concatenate([a, b, crossing.reshape(len(a), -1, 2)], axis=1)
    valid = np.concatenate([_inside(a, b, eb), _inside(b, a, ea), crosses.reshape(len(a), -1)], axis=1)
    count = valid.sum(axis=1)
    points = np.where(valid[..., None], points, 0.0)
    centre = points.sum(axis=1) / np.maximum(count, 1)[:, None]
    rel = points - centre[:, None, :]
    angle = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)  # invalid points sort last
    order = np.argsort(angle, axis=1)
    rel = np.take_along_axis(rel, order[..., None], axis=1)
    # Invalid slots repeat the first point, so they add nothing to the shoelace sum.
    rel = np.where(np.take_along_axis(valid, order, axis=1)[..., None], rel, rel[:, :1, :])
    area = 0.5 * _cross(rel, np.roll(rel, -1, axis=1)).sum(axis=1)
    return np.where(count >= 3, np.clip(area, 0, None), 0.0) * scale**2


def _inside(points: np.ndarray, poly: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``(P, K)``: whether each point lies in the convex counter-clockwise polygon (boundary included)."""
    offset = points[:, :, None, :] - poly[:, None, :, :]  # (P, K, Kpoly, 2)
    side = _cross(edges[:, None, :, :], offset)  # ≥ 0 on the inner side of each edge
    length = np.hypot(edges[..., 0], edges[..., 1])[:, None, :]
    return (side >= -_EPS * length).all(axis=2)


# --- helpers ----------------------------------------------------------------------------------------

def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether enclosing boxes ``x1, y1, x2, y2`` overlap with positive area (broadcasting)."""
    return ((np.minimum(a[..., 2], b[..., 2]) > np.maximum(a[..., 0], b[..., 0]))
            & (np.minimum(a[..., 3], b[..., 3]) > np.maximum(a[..., 1], b[..., 1])))


def _row_blocks(n: int, m: int) -> Iterator[slice]:
    """Slices of ``range(n)`` whose ``rows × m`` pairs fit in one block."""
    step = max(1, _BLOCK_ELEMENTS // max(m, 1))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _as_boxes(d: np.ndarray, width: int) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    if d.size == 0:
        d = d.reshape(0, width)
    if d.ndim != 2 or d.shape[1] != width:
        raise ValueError(f"expected boxes of shape (N, {width}), got {d.shape}")
    return d
