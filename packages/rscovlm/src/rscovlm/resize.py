"""Dynamic resolution: the factor-28 ``smart_resize``, random resizing and scalable boxes (spec §3).

Every image is resized once, as a whole, to a frame whose sides are multiples of 28 (ViT patch 14 × merge 2)
and whose area lies in ``[min_pixels, max_pixels]``. Box coordinates written in prompts and answers are
**absolute integer pixels of that resized frame** (§3.3); :class:`ResizedFrame` maps them between the
original image and the resized one.

Conventions: :func:`smart_resize` takes and returns ``(height, width)`` like Qwen's own helper; every other
size in this package is ``(width, height)`` like ``PIL.Image.size``. Coordinates are flat ``x, y, x, y, …``
sequences (an HBB ``x1,y1,x2,y2`` or a polygon ``x1,y1,…,x4,y4``) or arrays whose last axis is such a list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGE_FACTOR = 28  # patch 14 × spatial merge 2
PATCH_SIZE = 14
MERGE_SIZE = 2
MAX_ASPECT_RATIO = 200
PAPER_MIN_PIXELS = 64 * 28 * 28  # 50,176 = 224² (§1)
PAPER_MAX_PIXELS = 1296 * 28 * 28  # 1,016,064 = 1008² (§1)
QWEN_MIN_PIXELS = 4 * 28 * 28  # qwen_vl_utils defaults: 3,136 …
QWEN_MAX_PIXELS = 16384 * 28 * 28  # … and 12,845,056


def smart_resize(height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = PAPER_MIN_PIXELS,
                 max_pixels: int = PAPER_MAX_PIXELS) -> tuple[int, int]:
    """``(height, width)`` of the resized frame (§3.1): both multiples of ``factor``, area in
    ``[min_pixels, max_pixels]``, aspect ratio kept as far as the rounding allows.

    Rounding follows ``qwen_vl_utils`` (the official training path): ``max(f, round(side / f) · f)`` with
    Python's half-to-even ``round``; above the cap both sides are floored after scaling by
    ``β = sqrt(H·W / max_pixels)``, below the floor both are ceiled after scaling by ``sqrt(min_pixels / (H·W))``.
    One guard is added: a floored side is never below ``factor`` (the official helper returns 0 there, for
    aspect ratios near 200 with a small cap, and the ViT then fails). Raises ``ValueError`` for a
    non-positive side or an aspect ratio above 200.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image sides must be positive, got height={height}, width={width}")
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} exceeds max_pixels {max_pixels}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} of a {width}×{height} "
                         f"image exceeds {MAX_ASPECT_RATIO}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class ResizedFrame:
    """An image of size ``original`` shown to the ViT at size ``resized`` (both ``(width, height)``)."""

    original: tuple[int, int]
    resized: tuple[int, int]

    def __post_init__(self) -> None:
        if min(*self.original, *self.resized) <= 0:
            raise ValueError(f"frame sizes must be positive, got original={self.original}, resized={self.resized}")

    def grid_thw(self, patch_size: int = PATCH_SIZE) -> tuple[int, int, int]:
        """The ViT patch grid ``(t, h, w) = (1, H_r / 14, W_r / 14)`` of one still image."""
        return 1, self.resized[1] // patch_size, self.resized[0] // patch_size

    def num_image_tokens(self, patch_size: int = PATCH_SIZE, merge_size: int = MERGE_SIZE) -> int:
        """LLM tokens of the image: ``t·h·w / merge²`` (= ``H_r·W_r / 784`` for the defaults)."""
        t, h, w = self.grid_thw(patch_size)
        return t * h * w // merge_size ** 2

    def to_resized(self, coords: Sequence[float] | np.ndarray) -> list[int] | np.ndarray:
        """Original-frame coordinates → integer coordinates of the resized frame (§3.3, training targets):
        ``int(x · W_r / W_o)``, ``int(y · H_r / H_o)`` (truncation toward zero, as Python ``int``)."""
        scaled = _scale_xy(coords, self.resized, self.original)
        if isinstance(coords, np.ndarray):
            return np.trunc(scaled).astype(np.int64)
        return [int(v) for v in scaled]

    def to_original(self, coords: Sequence[float] | np.ndarray) -> list[float] | np.ndarray:
        """Resized-frame coordinates (e.g. a prediction) → float coordinates of the original image:
        ``x · W_o / W_r``, ``y · H_o / H_r`` (§3.3)."""
        scaled = _scale_xy(coords, self.original, self.resized)
        return scaled if isinstance(coords, np.ndarray) else [float(v) for v in scaled]


def plan_resize(width: int, height: int, min_pixels: int = PAPER_MIN_PIXELS, max_pixels: int = PAPER_MAX_PIXELS,
                factor: int = IMAGE_FACTOR) -> ResizedFrame:
    """The :class:`ResizedFrame` of a ``width × height`` image under :func:`smart_resize`."""
    h, w = smart_resize(height, width, factor, min_pixels, max_pixels)
    return ResizedFrame((width, height), (w, h))


def random_resize(width: int, height: int, rng: np.random.Generator, min_pixels: int = PAPER_MIN_PIXELS,
                  max_pixels: int = PAPER_MAX_PIXELS, area_as_linear: bool = True,
                  factor: int = IMAGE_FACTOR) -> ResizedFrame:
    """A random training frame for a ``width × height`` image (§3.4, detection and grounding samples).

    Draws ``s ~ U(min_pixels / P, max_pixels / P)`` with ``P = H·W`` and resizes to
    ``smart_resize(int(H·s'), int(W·s'))``. With ``area_as_linear=True`` (official parity, pitfall §9.2)
    ``s' = s``: the area ratio is used as a linear scale, so draws pile up at the pixel cap (≈45 % for a
    512² patch). ``False`` uses ``s' = sqrt(s)``, making the drawn area uniform in ``[min, max]``.
    """
    pixels = width * height
    s = float(rng.uniform(min_pixels / pixels, max_pixels / pixels))
    scale = s if area_as_linear else math.sqrt(s)
    h = max(1, int(height * scale))
    w = max(1, int(width * scale))
    rh, rw = smart_resize(h, w, factor, min_pixels, max_pixels)
    return ResizedFrame((width, height), (rw, rh))


def resize_image(image: Image.Image | np.ndarray, frame: ResizedFrame) -> Image.Image:
    """The RGB image resized (PIL bicubic, as ``qwen_vl_utils.fetch_image``) to ``frame.resized``.
    ``image`` is a PIL image or an ``(H, W, 3)`` uint8 array of size ``frame.original``."""
    pil = Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image
    if pil.size != tuple(frame.original):
        raise ValueError(f"image is {pil.size[0]}×{pil.size[1]} but the frame expects "
                         f"{frame.original[0]}×{frame.original[1]}")
    pil = pil.convert("RGB")
    if pil.size == tuple(frame.resized):
        return pil
    return pil.resize(frame.resized, Image.Resampling.BICUBIC)


def _scale_xy(coords: Sequence[float] | np.ndarray, numerator: tuple[int, int],
              denominator: tuple[int, int]) -> np.ndarray:
    """``x · num_w / den_w`` and ``y · num_h / den_h``, multiplying before dividing as the official code does
    (``400 · 812 / 800`` is exactly 406, while ``400 · (812 / 800)`` truncates to 405)."""
    values = np.asarray(coords, dtype=np.float64)
    if values.ndim == 0 or values.shape[-1] % 2:
        raise ValueError(f"coordinates must be x, y pairs along the last axis, got shape {values.shape}")
    pairs = values.shape[-1] // 2
    num = np.tile(np.asarray(numerator, np.float64), pairs)
    den = np.tile(np.asarray(denominator, np.float64), pairs)
    return values * num / den


__all__ = [
    "IMAGE_FACTOR", "MAX_ASPECT_RATIO", "MERGE_SIZE", "PAPER_MAX_PIXELS", "PAPER_MIN_PIXELS", "PATCH_SIZE",
    "QWEN_MAX_PIXELS", "QWEN_MIN_PIXELS", "ResizedFrame", "plan_resize", "random_resize", "resize_image",
    "smart_resize",
]
