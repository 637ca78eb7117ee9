"""Instance masks: polygons, COCO RLE and binary arrays, with validation that names the bad record.

Conventions (the same as :mod:`rs_shared.data.geometry`): polygon vertices are continuous pixel
coordinates, (0, 0) the top-left corner of the image; binary masks are ``(H, W)`` ``bool`` arrays.
Rasterisation is pycocotools' (the one the COCO/REFER/GLaMM evaluation code uses), so a 10 × 10 square
with corners (0, 0) and (10, 10) covers exactly 100 pixels. The synthetic generator draws its ground truth
with the same function, which is why its masks read back bit-exact.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from pycocotools import mask as coco_mask

from .errors import Problems

Polygon = np.ndarray  # (K, 2) float vertices in pixels


def polygons_to_mask(parts: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Union of the filled polygons ``parts`` (each ``(K, 2)``) as an ``(H, W)`` bool mask.

    Parts with fewer than 3 vertices enclose no area and add nothing.
    """
    flat = [np.asarray(p, dtype=np.float64).reshape(-1).tolist() for p in parts if len(p) >= 3]
    if not flat:
        return np.zeros((height, width), dtype=bool)
    rles = coco_mask.frPyObjects(flat, height, width)
    return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def mask_to_rle(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a binary mask, JSON-serialisable (``counts`` is a str)."""
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode a COCO RLE (compressed ``str``/``bytes`` counts or an uncompressed ``list``) to a bool mask."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        rle = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    elif isinstance(counts, str):
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
    return coco_mask.decode(rle).astype(bool)


def mask_bbox(mask: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` pixel box of a binary mask (continuous coordinates); zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


# --- validation of what annotation files contain ------------------------------------------------------

def parse_point_polygons(
    value: object, file: str | os.PathLike, record: object, problems: Problems
) -> list[Polygon] | None:
    """GeoPixelD nesting: a list of parts, each a list of ``[x, y]`` vertices (≥ 1 vertex).

    Returns the parts as ``(K, 2)`` arrays, or ``None`` after reporting what is wrong.
    """
    if not isinstance(value, list):
        problems.add(file, f"polygon must be a list of parts, got {type(value).__name__}", record)
        return None
    parts = []
    for j, part in enumerate(value):
        if not isinstance(part, list) or not part:
            problems.add(file, f"polygon part {j} must be a non-empty list of [x, y] vertices", record)
            return None
        for v in part:
            if not (isinstance(v, list | tuple) and len(v) == 2 and all(_is_number(c) for c in v)):
                problems.add(file, f"polygon part {j}: vertex {v!r} must be [x, y] (2 numbers)", record)
                return None
        parts.append(np.asarray(part, dtype=np.float64))
    return parts


def parse_coco_segmentation(
    seg: object, height: int, width: int, file: str | os.PathLike, record: object, problems: Problems
) -> list[Polygon] | dict | None:
    """A COCO ``segmentation``: a list of flat ``[x1, y1, x2, y2, …]`` polygons or one RLE dict.

    Polygons need an even number of ≥ 6 coordinates (3 vertices); an RLE needs ``size == [height, width]``.
    Returns parts as ``(K, 2)`` arrays, or the RLE dict, or ``None`` after reporting the problem.
    """
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if size is None or counts is None or not isinstance(counts, str | bytes | list):
            problems.add(file, "RLE segmentation needs 'size' [h, w] and 'counts' (str or list)", record)
            return None
        if [int(v) for v in size] != [height, width]:
            problems.add(file, f"RLE size {list(size)} does not match the image size [{height}, {width}]", record)
            return None
        return seg
    if not isinstance(seg, list) or not seg:
        problems.add(file, "segmentation must be a non-empty list of polygons or an RLE dict", record)
        return None
    parts = []
    for j, poly in enumerate(seg):
        if not isinstance(poly, list) or not all(_is_number(c) for c in poly):
            problems.add(file, f"polygon {j} must be a flat list of numbers [x1, y1, x2, y2, ...]", record)
            return None
        if len(poly) < 6 or len(poly) % 2:
            problems.add(file, f"polygon {j} has {len(poly)} coordinates; expected an even number >= 6", record)
            return None
        parts.append(np.asarray(poly, dtype=np.float64).reshape(-1, 2))
    return parts


def segmentation_to_mask(seg: list[Polygon] | dict, height: int, width: int) -> np.ndarray:
    """Binary mask of a validated segmentation (output of :func:`parse_coco_segmentation`)."""
    if isinstance(seg, dict):
        return rle_to_mask(seg)
    return polygons_to_mask(seg, height, width)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v)
