"""Box coordinate conventions, made explicit, and the one place that converts between them.

Every box in rs-shared is a :class:`Boxes`: an ``(N, k)`` float64 array plus the three facts that papers
and code usually leave implicit.

``fmt`` — what the numbers are
    ``"xyxy"``  corners ``x1, y1, x2, y2`` of an axis-aligned (horizontal) box;
    ``"xywh"``  COCO ``x, y, w, h`` (top-left corner and size);
    ``"quad"``  four vertices ``x1, y1, …, x4, y4`` (DOTA ``labelTxt``, refGeo polygons);
    ``"obb"``   oriented box ``cx, cy, w, h, θ``.

``frame`` — which units
    ``"pixel"``    absolute pixels of the image the boxes belong to;
    ``"norm1"``    divided by the image width/height (0–1);
    ``"norm100"``  percent of the width/height (0–100, GeoChat/TEOChat text);
    ``"norm1000"`` per-mille of the width/height (0–1000, Qwen2-VL / many grounding VLMs).
    Pixel coordinates are continuous: (0, 0) is the top-left corner of the top-left pixel, x points
    right, y points down, and a box covering pixel columns 0..9 has ``x1 = 0, x2 = 10``.

``angle`` (oriented boxes only) — which angle convention
    θ rotates the box's ``w`` side from the image +x axis towards +y, i.e. **clockwise on screen**.
    ``"le90"``  radians, θ ∈ [-π/2, π/2) and w ≥ h (mmrotate ``le90``; the default);
    ``"le135"`` radians, θ ∈ [-π/4, 3π/4) and w ≥ h (mmrotate ``le135``);
    ``"oc"``    radians, θ ∈ (0, π/2], no order between w and h (OpenCV ≥ 4.5.1 ``minAreaRect``);
    ``"le90deg"`` the ``le90`` convention in degrees (RSCoVLM's ``cx,cy,w,h,angle`` text).

Oriented boxes exist only in the pixel frame: a normalised frame scales x and y differently, which does not
map a rectangle to a rectangle. Convert them to ``quad`` first (``boxes.to("quad")``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

BoxFormat = Literal["xyxy", "xywh", "quad", "obb"]
Frame = Literal["pixel", "norm1", "norm100", "norm1000"]
AngleConvention = Literal["le90", "le135", "oc", "le90deg"]

BOX_WIDTHS: dict[str, int] = {"xyxy": 4, "xywh": 4, "quad": 8, "obb": 5}
FRAME_SCALE: dict[str, float] = {"norm1": 1.0, "norm100": 100.0, "norm1000": 1000.0}
ANGLE_CONVENTIONS = ("le90", "le135", "oc", "le90deg")


@dataclass(frozen=True)
class Boxes:
    """``N`` boxes of one format, in one frame, for an image of ``image_size = (width, height)`` pixels.

    ``image_size`` is needed only to change frame (pixel ↔ normalised); ``angle`` only for ``fmt="obb"``.
    """

    data: np.ndarray
    fmt: BoxFormat
    frame: Frame = "pixel"
    image_size: tuple[int, int] | None = None
    angle: AngleConvention | None = None

    def __post_init__(self) -> None:
        if self.fmt not in BOX_WIDTHS:
            raise ValueError(f"unknown box format {self.fmt!r}; expected one of {sorted(BOX_WIDTHS)}")
        if self.frame != "pixel" and self.frame not in FRAME_SCALE:
            raise ValueError(f"unknown frame {self.frame!r}; expected pixel, norm1, norm100 or norm1000")
        data = np.asarray(self.data, dtype=np.float64)
        if data.size == 0:
            data = data.reshape(0, BOX_WIDTHS[self.fmt])
        if data.ndim != 2 or data.shape[1] != BOX_WIDTHS[self.fmt]:
            raise ValueError(f"{self.fmt} boxes need shape (N, {BOX_WIDTHS[self.fmt]}), got {data.shape}")
        object.__setattr__(self, "data", data)
        if self.fmt == "obb":
            if self.angle not in ANGLE_CONVENTIONS:
                raise ValueError(f"oriented boxes need angle= one of {ANGLE_CONVENTIONS}, got {self.angle!r}")
            if self.frame != "pixel":
                raise ValueError("oriented boxes exist only in the pixel frame; convert to 'quad' first")
        elif self.angle is not None:
            raise ValueError(f"angle= applies only to 'obb' boxes, not {self.fmt!r}")

    def __len__(self) -> int:
        return len(self.data)

    def to(
        self,
        fmt: BoxFormat | None = None,
        frame: Frame | None = None,
        angle: AngleConvention | None = None,
    ) -> Boxes:
        """The same boxes in another format, frame and/or angle convention."""
        fmt = fmt or self.fmt
        frame = frame or self.frame
        if fmt == "obb":
            angle = angle or (self.angle if self.fmt == "obb" else "le90")
        elif angle is not None:
            raise ValueError(f"angle= applies only to 'obb' boxes, not {fmt!r}")
        boxes = self
        if boxes.frame != "pixel" and (frame == "pixel" or fmt == "obb"):
            boxes = boxes._reframe("pixel")
        boxes = boxes._reformat(fmt, angle)
        if boxes.frame != frame:
            boxes = boxes._reframe(frame)
        return boxes

    def resize(self, new_size: tuple[int, int]) -> Boxes:
        """Pixel boxes of this image mapped onto the same image resized to ``new_size = (width, height)``."""
        if self.frame != "pixel":
            return Boxes(self.data, self.fmt, self.frame, tuple(new_size), self.angle)
        w0, h0 = _require_size(self)
        sx, sy = new_size[0] / w0, new_size[1] / h0
        if self.fmt == "obb":
            if not np.isclose(sx, sy):
                raise ValueError("a non-uniform resize does not keep oriented boxes rectangular; resize 'quad' boxes")
            data = self.data.copy()
            data[:, :4] *= sx
            return Boxes(data, "obb", "pixel", tuple(new_size), self.angle)
        return Boxes(_scale_xy(self.data, sx, sy), self.fmt, "pixel", tuple(new_size))

    def _reframe(self, frame: Frame) -> Boxes:
        w, h = _require_size(self)
        if self.fmt == "obb":
            raise ValueError("oriented boxes exist only in the pixel frame; convert to 'quad' first")
        data = self.data
        if self.frame != "pixel":
            s = FRAME_SCALE[self.frame]
            data = _scale_xy(data, w / s, h / s)
        if frame != "pixel":
            s = FRAME_SCALE[frame]
            data = _scale_xy(data, s / w, s / h)
        return Boxes(data, self.fmt, frame, self.image_size)

    def _reformat(self, fmt: BoxFormat, angle: AngleConvention | None) -> Boxes:
        if fmt == self.fmt and angle == self.angle:
            return self
        d = self.data
        # Every conversion goes through one hub: xyxy for horizontal targets, quad otherwise.
        if fmt in ("xyxy", "xywh"):
            hub = {"xyxy": lambda: d, "xywh": lambda: xywh_to_xyxy(d), "quad": lambda: quad_to_xyxy(d),
                   "obb": lambda: quad_to_xyxy(obb_to_quad(d, self.angle))}[self.fmt]()
            out = hub if fmt == "xyxy" else xyxy_to_xywh(hub)
        else:
            quad = {"xyxy": lambda: xyxy_to_quad(d), "xywh": lambda: xyxy_to_quad(xywh_to_xyxy(d)),
                    "quad": lambda: d, "obb": lambda: obb_to_quad(d, self.angle)}[self.fmt]()
            out = quad if fmt == "quad" else quad_to_obb(quad, angle)
        return Boxes(out, fmt, self.frame, self.image_size, angle if fmt == "obb" else None)


def _require_size(boxes: Boxes) -> tuple[int, int]:
    if boxes.image_size is None:
        raise ValueError("changing frame needs image_size=(width, height) on the Boxes")
    return boxes.image_size


def _scale_xy(data: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Scale interleaved ``x, y, x, y, …`` columns (xyxy, xywh and quad all interleave x and y)."""
    out = np.array(data, dtype=np.float64, copy=True)
    out[:, 0::2] *= sx
    out[:, 1::2] *= sy
    return out


# --- horizontal boxes -------------------------------------------------------------------------------

def xywh_to_xyxy(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    return np.concatenate([d[:, :2], d[:, :2] + d[:, 2:4]], axis=1)


def xyxy_to_xywh(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    return np.concatenate([d[:, :2], d[:, 2:4] - d[:, :2]], axis=1)


def xyxy_to_quad(d: np.ndarray) -> np.ndarray:
    """Corners clockwise on screen from the top-left: TL, TR, BR, BL."""
    x1, y1, x2, y2 = np.asarray(d, dtype=np.float64).T
    return np.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=1)


def quad_to_xyxy(d: np.ndarray) -> np.ndarray:
    """The horizontal box enclosing each quadrilateral."""
    pts = np.asarray(d, dtype=np.float64).reshape(-1, 4, 2)
    return np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)


# --- oriented boxes ---------------------------------------------------------------------------------

def _to_radians(theta: np.ndarray, angle: str) -> np.ndarray:
    return np.deg2rad(theta) if angle == "le90deg" else theta


def obb_to_quad(d: np.ndarray, angle: AngleConvention = "le90") -> np.ndarray:
    """Corners of ``cx, cy, w, h, θ`` boxes; for θ = 0 the order is TL, TR, BR, BL (clockwise on screen)."""
    d = np.asarray(d, dtype=np.float64)
    cx, cy, w, h = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
    t = _to_radians(d[:, 4], angle)
    cos, sin = np.cos(t), np.sin(t)
    local = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])  # in units of (w, h)
    dx = local[None, :, 0] * w[:, None]
    dy = local[None, :, 1] * h[:, None]
    xs = cx[:, None] + dx * cos[:, None] - dy * sin[:, None]
    ys = cy[:, None] + dx * sin[:, None] + dy * cos[:, None]
    return np.stack([xs, ys], axis=2).reshape(-1, 8)


def quad_to_obb(d: np.ndarray, angle: AngleConvention = "le90") -> np.ndarray:
    """Minimum-area rectangle of each quadrilateral, as ``cx, cy, w, h, θ`` in the ``angle`` convention.

    The minimum-area rectangle has a side on an edge of the convex hull, and the hull's edges are among
    the six segments between the four points, so trying those six directions is exact.
    """
    pts = np.asarray(d, dtype=np.float64).reshape(-1, 4, 2)
    pairs = np.array([(0, 1), (1, 2), (2, 3), (3, 0), (0, 2), (1, 3)])
    edge = pts[:, pairs[:, 1]] - pts[:, pairs[:, 0]]                       # (N, 6, 2)
    theta = np.arctan2(edge[..., 1], edge[..., 0])                          # (N, 6)
    cos, sin = np.cos(theta), np.sin(theta)
    # Coordinates of the points in each candidate's rotated frame: u along the edge, v across it.
    u = pts[:, None, :, 0] * cos[..., None] + pts[:, None, :, 1] * sin[..., None]   # (N, 6, 4)
    v = -pts[:, None, :, 0] * sin[..., None] + pts[:, None, :, 1] * cos[..., None]
    w = u.max(-1) - u.min(-1)
    h = v.max(-1) - v.min(-1)
    best = np.argmin(w * h + 1e-9 * np.arange(6), axis=1)  # stable choice among equal areas
    rows = np.arange(len(pts))
    t, ww, hh = theta[rows, best], w[rows, best], h[rows, best]
    uc = (u.max(-1) + u.min(-1))[rows, best] / 2
    vc = (v.max(-1) + v.min(-1))[rows, best] / 2
    cx = uc * np.cos(t) - vc * np.sin(t)
    cy = uc * np.sin(t) + vc * np.cos(t)
    return normalize_obb(np.stack([cx, cy, ww, hh, t], axis=1), "le90", angle)


def normalize_obb(d: np.ndarray, src: AngleConvention, dst: AngleConvention | None = None) -> np.ndarray:
    """Re-express ``cx, cy, w, h, θ`` boxes given in ``src`` in the ``dst`` convention (default: ``src``).

    The same rectangle is described by (w, h, θ), (w, h, θ + π) and (h, w, θ + π/2); each convention
    picks one of them.
    """
    dst = dst or src
    out = np.array(d, dtype=np.float64, copy=True)
    w, h = out[:, 2].copy(), out[:, 3].copy()
    t = _to_radians(out[:, 4], src)
    if dst == "oc":
        t = _wrap(t, 0.0)  # [0, π)
        swap = t > np.pi / 2
        t = np.where(swap, t - np.pi / 2, t)
        zero = t <= 0  # (0, π/2]: θ = 0 is written as θ = π/2 with w and h exchanged
        t = np.where(zero, np.pi / 2, t)
        swap ^= zero
    else:
        swap = w < h
        t = np.where(swap, t + np.pi / 2, t)
        t = _wrap(t, -np.pi / 4 if dst == "le135" else -np.pi / 2)
    out[:, 2] = np.where(swap, h, w)
    out[:, 3] = np.where(swap, w, h)
    out[:, 4] = np.rad2deg(t) if dst == "le90deg" else t
    return out


def _wrap(t: np.ndarray, low: float) -> np.ndarray:
    """Wrap angles into ``[low, low + π)``, snapping values within 1e-9 of the upper end to ``low``."""
    t = np.mod(t - low, np.pi)
    t = np.where(np.isclose(t, np.pi, rtol=0, atol=1e-9), 0.0, t)
    return t + low


# --- vertex order -----------------------------------------------------------------------------------

def sort_quad_vertices(d: np.ndarray, clockwise: bool = True) -> np.ndarray:
    """Order each quad's vertices around their mean, starting at the top-most (then left-most) vertex.

    ``clockwise=True`` is clockwise on screen (y down), as DOTA annotates; ``False`` is counter-clockwise,
    which is what refGeo's polygon code produces.
    """
    pts = np.asarray(d, dtype=np.float64).reshape(-1, 4, 2)
    centre = pts.mean(axis=1, keepdims=True)
    ang = np.arctan2(pts[..., 1] - centre[..., 1], pts[..., 0] - centre[..., 0])
    order = np.argsort(ang if clockwise else -ang, axis=1, kind="stable")
    pts = np.take_along_axis(pts, order[..., None], axis=1)
    start = np.lexsort((pts[..., 0], pts[..., 1]), axis=-1)[:, 0]  # smallest (y, x)
    idx = (start[:, None] + np.arange(4)[None]) % 4
    return np.take_along_axis(pts, idx[..., None], axis=1).reshape(-1, 8)


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of one simple polygon given as ``(K, 2)`` vertices."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def clip_polygon(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Intersection of a polygon ``(K, 2)`` with the rectangle ``[x0, x1] × [y0, y1]`` (Sutherland–Hodgman).

    Exact for convex polygons (every box and quad in these datasets); returns ``(0, 2)`` when they do
    not overlap.
    """
    poly = [tuple(p) for p in np.asarray(points, dtype=np.float64).reshape(-1, 2)]
    for axis, bound, sign in ((0, x0, 1), (0, x1, -1), (1, y0, 1), (1, y1, -1)):
        if not poly:
            break
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cur_in, prev_in = sign * (cur[axis] - bound) >= 0, sign * (prev[axis] - bound) >= 0
            if cur_in != prev_in:
                out.append(_cross(prev, cur, axis, bound))
            if cur_in:
                out.append(cur)
        poly = out
    return np.array(poly, dtype=np.float64).reshape(-1, 2)


def _cross(a: tuple, b: tuple, axis: int, bound: float) -> tuple[float, float]:
    t = (bound - a[axis]) / (b[axis] - a[axis])
    p = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
    p[axis] = bound
    return (p[0], p[1])


def min_area_quad(points: np.ndarray) -> np.ndarray:
    """The minimum-area rectangle enclosing ``points`` ``(K, 2)``, as ``(4, 2)`` corners clockwise on screen
    from the top-most (then left-most) one.

    A minimum-area enclosing rectangle has a side along an edge of the convex hull (Freeman & Shapira, 1975),
    so each hull edge direction is tried.
    """
    hull = _convex_hull(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    if not len(hull):
        raise ValueError("min_area_quad needs at least one point")
    edges = np.roll(hull, -1, axis=0) - hull
    theta = np.arctan2(edges[:, 1], edges[:, 0])
    along = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (E, 2) unit edge directions
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    u, v = hull @ along.T, hull @ across.T  # (K, E) coordinates in each edge's frame
    best = int(np.argmin((u.max(0) - u.min(0)) * (v.max(0) - v.min(0))))
    (u0, u1), (v0, v1) = (u[:, best].min(), u[:, best].max()), (v[:, best].min(), v[:, best].max())
    corners = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    xy = corners[:, :1] * along[best] + corners[:, 1:] * across[best]
    return sort_quad_vertices(xy.reshape(1, 8)).reshape(4, 2)


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices (monotone chain), without repeats or collinear points."""
    pts = np.unique(points, axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in seq:
            while len(chain) >= 2 and ((chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1])
                                       - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]

    return np.array(half(pts) + half(pts[::-1]))
