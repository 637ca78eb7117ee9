"""Pictures of annotations and predictions: masks, boxes, points and captions drawn on images.

Every ``draw_*`` function takes an image (a ``PIL.Image.Image``, or an ``(H, W, 3)`` / ``(H, W)`` uint8
array as returned by a record's ``load()``), never changes it, and returns a new RGB ``PIL.Image.Image``.
They compose: masks, then boxes and points, then :func:`draw_caption` last (it adds a panel below the
picture), then :func:`compose` to put panels side by side (prediction | ground truth), then
:func:`save_png`. Only PIL and numpy are used; the font is Pillow's built-in one, so no font files are
needed.

Colours
    :func:`palette` gives colour ``i`` to object ``i`` everywhere, so by default mask ``i``, box ``i`` and
    caption phrase ``i`` share a colour.

Small and large images
    Text a few pixels high cannot be read, so an image whose short side is under :data:`MIN_DISPLAY_SIDE`
    pixels is first enlarged by the smallest integer factor that reaches it, with nearest-neighbour
    resampling (pixels become sharp squares; nothing is interpolated): a 64 × 64 image is drawn on at
    256 × 256. See :func:`to_display`. Annotations are always given in the coordinates of the original
    image; the enlarged picture records that size in ``image.info[SOURCE_SIZE_KEY]``, so a chain of calls
    on a 64 × 64 image keeps reading 64 × 64 coordinates. Line widths and font sizes grow with the picture,
    so a 2000 × 2000 image gets visible lines and text too.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data.common import atomic_path
from .data.geometry import Boxes

Color = tuple[int, int, int]
ImageLike = Image.Image | np.ndarray

MIN_DISPLAY_SIDE = 256
"""Images with a shorter side than this many pixels are enlarged (by an integer factor) before drawing."""

SOURCE_SIZE_KEY = "rs_shared.viz.source_size"
"""``image.info`` key holding the ``(width, height)`` that annotation coordinates refer to."""

_TEXT_INK: Color = (20, 20, 20)
_CAPTION_BACKGROUND: Color = (255, 255, 255)
_GRID_BACKGROUND: Color = (210, 210, 210)

# Saturated, mutually distinct colours that stay visible on aerial imagery (no white, black or grey).
_TABLE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0),
    (128, 128, 0), (0, 0, 128), (250, 150, 190), (120, 255, 180),
)


def palette(n: int) -> list[Color]:
    """``n`` distinct RGB colours, the same on every call.

    The first ``len(_TABLE)`` (16) come from a fixed high-contrast table; after that the table repeats,
    each round with its hue nudged and its saturation/brightness changed so the colours stay distinct.
    """
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    return [_palette_color(i) for i in range(n)]


def _palette_color(i: int) -> Color:
    cycle, base = divmod(i, len(_TABLE))
    if cycle == 0:
        return _TABLE[base]
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in _TABLE[base]))
    h = (h + 0.08 * ((cycle * 0.6180339887) % 1.0 - 0.5)) % 1.0  # a different small shift each round
    s *= (1.0, 0.7)[(cycle // 3) % 2]
    v *= (1.0, 0.72, 0.86)[cycle % 3]
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def to_display(image: ImageLike) -> Image.Image:
    """A new RGB copy of ``image``, enlarged if its short side is under :data:`MIN_DISPLAY_SIDE` pixels.

    The factor is the smallest integer that brings the short side to at least that size, and resampling
    is nearest-neighbour, so every source pixel becomes a ``k × k`` square. The result's
    ``info[SOURCE_SIZE_KEY]`` keeps the size annotation coordinates refer to (the original size, or the
    one already recorded on ``image``). Every ``draw_*`` function starts with this.
    """
    im = _as_rgb(image)
    k = math.ceil(MIN_DISPLAY_SIDE / min(im.size)) if min(im.size) < MIN_DISPLAY_SIDE else 1
    out = im.resize((im.width * k, im.height * k), Image.Resampling.NEAREST) if k > 1 else im
    out.info[SOURCE_SIZE_KEY] = _source_size(im)
    return out


def draw_masks(
    image: ImageLike,
    masks: np.ndarray | Sequence[np.ndarray],
    colors: Sequence[Color] | None = None,
    alpha: float = 0.45,
    outline: bool = True,
) -> Image.Image:
    """Masks filled with translucent colour, each with a 1-pixel opaque outline of its boundary.

    ``masks`` is ``(N, H, W)`` or ``(H, W)`` (bool, or integers 0/1), or a list of ``(H, W)`` masks, at the
    size of the original image (or of the displayed one). Inside mask ``i`` a pixel becomes
    ``round((1 - alpha) * pixel + alpha * colors[i])``; with ``outline`` its boundary pixels (mask pixels
    with a 4-neighbour outside the mask or the image) become ``colors[i]``. Later masks are drawn over
    earlier ones. ``colors`` defaults to ``palette(N)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = to_display(image)
    stack = _display_masks(masks, _source_size(out), out.size)
    colors = _colors(colors, len(stack))
    pixels = np.asarray(out, dtype=np.float64)  # a new float array
    for mask, color in zip(stack, colors):
        c = np.asarray(color, dtype=np.float64)
        pixels[mask] = (1.0 - alpha) * pixels[mask] + alpha * c
        if outline:
            pixels[_boundary(mask)] = c
    return _with_source(Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)), out)


def draw_boxes(
    image: ImageLike,
    boxes: Boxes,
    labels: Sequence[str] | None = None,
    colors: Sequence[Color] | None = None,
    width: int | None = None,
) -> Image.Image:
    """Boxes of any :class:`~rs_shared.data.geometry.Boxes` format and frame drawn as outlines.

    Normalised boxes are placed using ``boxes.image_size`` or, when that is None, the original image's
    size; pixel boxes whose ``image_size`` differs from the image are scaled onto it. Oriented boxes
    (``quad``, ``obb``) are drawn as polygons whose first edge (vertex 1 → 2) is drawn twice as thick and
    whose first vertex carries a dot, so the orientation and vertex order are visible. Each label is
    written on a tag in the box colour next to the first vertex, kept inside the picture. ``width`` is
    the line width in displayed pixels (default: grows with the picture, at least 2).
    """
    out = to_display(image)
    quads = _display_quads(boxes, _source_size(out), out.size)
    colors = _colors(colors, len(quads))
    if labels is not None and len(labels) != len(quads):
        raise ValueError(f"got {len(labels)} labels for {len(quads)} boxes")
    width = width or _line_width(out.size)
    oriented = boxes.fmt in ("quad", "obb")
    dot = 2 * width
    draw = ImageDraw.Draw(out)
    for quad, color in zip(quads, colors):
        pts = [(float(x), float(y)) for x, y in quad]
        draw.line([*pts, pts[0], pts[1]], fill=color, width=width, joint="curve")
        if oriented:
            draw.line(pts[:2], fill=color, width=2 * width)
            (x, y) = pts[0]
            draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=color, outline=_ink(color))
    if labels is not None:
        font = _font(_label_font_px(out.size))
        for quad, color, text in zip(quads, colors, labels):
            _draw_tag(draw, str(text), quad[0], color, font, out.size, lift=dot if oriented else 0)
    return out


def draw_points(
    image: ImageLike,
    points: np.ndarray | Sequence[Sequence[float]],
    colors: Sequence[Color] | None = None,
    radius: int | None = None,
) -> Image.Image:
    """Points ``(N, 2)`` as ``x, y`` pixel coordinates of the original image, drawn as filled dots with a
    contrasting ring (``radius`` in displayed pixels; default grows with the picture)."""
    out = to_display(image)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("points must have finite coordinates")
    (sw, sh), (dw, dh) = _source_size(out), out.size
    pts = pts * np.array([dw / sw, dh / sh])
    colors = _colors(colors, len(pts))
    r = radius or 2 * _line_width(out.size) + 2
    draw = ImageDraw.Draw(out)
    for (x, y), color in zip(pts, colors):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=color, outline=_ink(color), width=max(1, r // 3))
    return out


def draw_caption(
    image: ImageLike,
    text: str,
    phrases: Sequence[str] | None = None,
    colors: Sequence[Color] | None = None,
) -> Image.Image:
    """The picture with a white panel below it holding ``text``, wrapped to the picture's width.

    ``phrases`` are substrings of ``text`` (e.g. the grounded phrases of a GCG caption), found in order:
    phrase ``i`` is looked for after the end of phrase ``i - 1`` first, so repeated wording is matched
    in sequence. Each is highlighted with ``colors[i]`` (default ``palette(N)``, the default mask colours).
    A phrase that does not occur in ``text`` raises ``ValueError``. Draw the caption last: the result is
    taller than the picture.
    """
    picture = to_display(image)
    phrases = list(phrases or [])
    colors = _colors(colors, len(phrases))
    font = _font(max(14, round(picture.width / 45)))
    margin = max(4, font.size // 2)
    lines = _wrap(text, _phrase_owners(text, phrases), font, picture.width - 2 * margin)
    ascent, descent = font.getmetrics()
    line_height = ascent + descent + max(2, font.size // 5)
    out = Image.new("RGB", (picture.width, picture.height + 2 * margin + len(lines) * line_height),
                    _CAPTION_BACKGROUND)
    out.paste(picture, (0, 0))
    draw = ImageDraw.Draw(out)
    y = picture.height + margin
    for line in lines:
        x = float(margin)
        for run, owner in line:
            run_width = font.getlength(run)
            ink = _TEXT_INK
            if owner is not None:
                draw.rectangle((x, y, x + run_width, y + ascent + descent), fill=colors[owner])
                ink = _ink(colors[owner])
            draw.text((x, y), run, fill=ink, font=font)
            x += run_width
        y += line_height
    return out


def compose(images: Sequence[ImageLike], ncols: int | None = None, pad: int = 8) -> Image.Image:
    """Images laid out in a grid of ``ncols`` columns (default: one row), ``pad`` pixels apart and from
    the border, on a light grey background. Every cell has the largest width and height among the
    images; images fill the grid row by row, each at the top of its cell and centred across it."""
    panels = [_as_rgb(im) for im in images]
    if not panels:
        raise ValueError("compose needs at least one image")
    ncols = ncols or len(panels)
    if ncols < 1 or pad < 0:
        raise ValueError(f"need ncols >= 1 and pad >= 0, got ncols={ncols}, pad={pad}")
    nrows = math.ceil(len(panels) / ncols)
    cell_w = max(p.width for p in panels)
    cell_h = max(p.height for p in panels)
    out = Image.new("RGB", (ncols * cell_w + (ncols + 1) * pad, nrows * cell_h + (nrows + 1) * pad),
                    _GRID_BACKGROUND)
    for k, panel in enumerate(panels):
        row, col = divmod(k, ncols)
        out.paste(panel, (pad + col * (cell_w + pad) + (cell_w - panel.width) // 2,
                          pad + row * (cell_h + pad)))
    return out


def save_png(image: ImageLike, path: str | os.PathLike) -> Path:
    """Write ``image`` as a PNG at ``path`` (parent folders created; written atomically); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _as_rgb(image).save(tmp, format="PNG")
    return path


# --- inputs -----------------------------------------------------------------------------------------

def _as_rgb(image: ImageLike) -> Image.Image:
    """A new RGB PIL image from a PIL image or an ``(H, W)`` / ``(H, W, 3)`` uint8 array."""
    if isinstance(image, Image.Image):
        out = image.convert("RGB")  # always a new image; keeps image.info
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"image arrays must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}")
        out = Image.fromarray(image).convert("RGB")
    else:
        raise TypeError(f"expected a PIL image or a uint8 array, got {type(image).__name__}")
    if min(out.size) == 0:
        raise ValueError(f"cannot draw on an empty image of size {out.size}")
    return out


def _source_size(image: Image.Image) -> tuple[int, int]:
    return tuple(image.info.get(SOURCE_SIZE_KEY, image.size))


def _with_source(new: Image.Image, like: Image.Image) -> Image.Image:
    new.info[SOURCE_SIZE_KEY] = _source_size(like)
    return new


def _colors(colors: Sequence[Color] | None, n: int) -> list[Color]:
    if colors is None:
        return palette(n)
    if len(colors) < n:
        raise ValueError(f"got {len(colors)} colours for {n} objects")
    return [tuple(int(c) for c in color) for color in colors[:n]]


def _display_masks(masks: np.ndarray | Sequence[np.ndarray], source: tuple[int, int],
                   display: tuple[int, int]) -> np.ndarray:
    """``(N, H, W)`` bool masks at the display size, from masks at the source or display size."""
    try:
        stack = np.asarray(masks)
    except ValueError:
        raise ValueError("masks in a list must all have the same (H, W) shape") from None
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (H, W), got shape {stack.shape}")
    if stack.dtype != bool:
        if stack.size and not (np.issubdtype(stack.dtype, np.integer) and np.isin(stack, (0, 1)).all()):
            raise ValueError(f"masks must be bool or 0/1 integers (threshold probabilities first), got {stack.dtype}")
        stack = stack.astype(bool)
    h, w = stack.shape[1:]
    if (w, h) == display:
        return stack
    if (w, h) != source:
        raise ValueError(f"masks are {w}x{h} (WxH) but the image is {source[0]}x{source[1]}")
    rows = np.arange(display[1]) * h // display[1]
    cols = np.arange(display[0]) * w // display[0]
    return stack[:, rows][:, :, cols]


def _display_quads(boxes: Boxes, source: tuple[int, int], display: tuple[int, int]) -> np.ndarray:
    """``(N, 4, 2)`` pixel vertices of the boxes on the displayed picture."""
    if boxes.image_size is None:
        boxes = dataclasses.replace(boxes, image_size=source)
    quads = boxes.to(fmt="quad", frame="pixel").resize(display).data.reshape(-1, 4, 2)
    bad = np.flatnonzero(~np.isfinite(quads).all(axis=(1, 2)))
    if bad.size:
        raise ValueError(f"box {int(bad[0])} has non-finite coordinates")
    return quads


# --- drawing helpers --------------------------------------------------------------------------------

def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (outside the image counts as outside)."""
    p = np.pad(mask, 1)
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~interior


def _line_width(size: tuple[int, int]) -> int:
    return max(2, round(min(size) / 250))


def _label_font_px(size: tuple[int, int]) -> int:
    return max(14, round(max(size) / 60))


@lru_cache(maxsize=16)
def _font(px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def _ink(color: Color) -> Color:
    """Black or white, whichever reads better on ``color``."""
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luma > 150 else (255, 255, 255)


def _draw_tag(draw: ImageDraw.ImageDraw, text: str, anchor: np.ndarray, color: Color,
              font: ImageFont.FreeTypeFont, size: tuple[int, int], lift: float) -> None:
    """A filled tag with ``text`` just above ``anchor`` (below it when there is no room), inside the picture."""
    left, top, right, bottom = font.getbbox(text)
    pad = max(2, font.size // 6)
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x, y = float(anchor[0]), float(anchor[1]) - lift - h
    if y < 0:
        y = float(anchor[1]) + lift
    x = min(max(x, 0.0), max(size[0] - w, 0))
    y = min(max(y, 0.0), max(size[1] - h, 0))
    draw.rectangle((x, y, x + w - 1, y + h - 1), fill=color)
    draw.text((x + pad - left, y + pad - top), text, fill=_ink(color), font=font)


def _phrase_owners(text: str, phrases: Sequence[str]) -> list[int | None]:
    """For each character of ``text``, the index of the phrase covering it (or None)."""
    owners: list[int | None] = [None] * len(text)
    start = 0
    for i, phrase in enumerate(phrases):
        at = text.find(phrase, start) if phrase else -1
        if at < 0 and phrase:
            at = text.find(phrase)
        if at < 0:
            raise ValueError(f"phrase {i} {phrase!r} does not occur in the caption {text!r}")
        owners[at:at + len(phrase)] = [i] * len(phrase)
        start = at + len(phrase)
    return owners


def _wrap(text: str, owners: list[int | None], font: ImageFont.FreeTypeFont,
          max_width: float) -> list[list[tuple[str, int | None]]]:
    """Greedy word wrap. Each line is a list of ``(run, phrase index or None)`` to draw left to right;
    runs of whitespace become one space; words wider than a line are broken between characters;
    newlines in ``text`` start a new line."""
    lines: list[list[tuple[str, int | None]]] = []
    line: list[tuple[str, int | None]] = []
    x = 0.0
    space = font.getlength(" ")

    def add(chars: str, owner: int | None) -> None:
        if line and line[-1][1] == owner:
            line[-1] = (line[-1][0] + chars, owner)
        else:
            line.append((chars, owner))

    end = 0
    for word in re.finditer(r"\S+", text):
        newlines = text.count("\n", end, word.start())
        if newlines:
            lines.append(line)
            lines.extend([] for _ in range(newlines - 1))
            line, x = [], 0.0
        end = word.end()
        word_width = font.getlength(word.group())
        if line and x + space + word_width > max_width:
            lines.append(line)
            line, x = [], 0.0
        if line:
            add(" ", owners[word.start() - 1])
            x += space
        for j in range(word.start(), word.end()):
            char_width = font.getlength(text[j])
            if word_width > max_width and line and x + char_width > max_width:
                lines.append(line)
                line, x = [], 0.0
            add(text[j], owners[j])
            x += char_width
    lines.append(line)
    return lines
