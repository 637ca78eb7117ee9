"""DOTA: oriented objects in ``labelTxt`` files, and the tiling of large scenes into overlapping patches.

On-disk layout (DOTA v1.0 / v1.5 / v2.0 and the many datasets that copy it)::

    <root>/images/<name>.png          .jpg, .jpeg, .tif, .tiff and .bmp are read too
    <root>/labelTxt/<name>.txt

A label file may start with two header lines, then holds one object per line::

    imagesource:GoogleEarth
    gsd:0.146343590398
    2753.0 2408.0 2861.0 2385.0 2888.0 2468.0 2805.0 2502.0 plane 0

- The eight numbers are the vertices ``x1 y1 … x4 y4`` of a quadrilateral in absolute pixels (continuous
  coordinates, see :mod:`.geometry`), clockwise on screen as DOTA annotates them. They are kept as written.
- The category is a hyphenated class name (``small-vehicle``) that must be in the reader's class list.
- ``difficult`` is 0 or 1; tiles made by the DOTA split rule use 2 for objects cut by the tile border (they
  are ignored in evaluation). Some DOTA-derived datasets omit the column: such 9-field lines read as 0.
- ``gsd`` (ground sample distance, metres per pixel) may be ``null`` or ``None``; either header may be absent,
  and headers must come before the first object.
- An empty label file is an image without objects.

Tiles are named ``{source}__{rate}__{x0}___{y0}`` (e.g. ``P0000__1__0___824``): the window's top-left corner
in the source image scaled by ``rate``.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .common import RecordDataset, as_array, atomic_path, image_size, read_image
from .errors import DataFormatError, Problems, check_exists
from .geometry import Boxes, clip_polygon, min_area_quad, polygon_area, sort_quad_vertices

if TYPE_CHECKING:
    import datasets

DOTA_V1_0 = (
    "plane", "baseball-diamond", "bridge", "ground-track-field", "small-vehicle", "large-vehicle", "ship",
    "tennis-court", "basketball-court", "storage-tank", "soccer-ball-field", "roundabout", "harbor",
    "swimming-pool", "helicopter",
)
DOTA_V1_5 = DOTA_V1_0 + ("container-crane",)
DOTA_V2_0 = DOTA_V1_5 + ("airport", "helipad")
CLASS_LISTS = {"DOTA-v1.0": DOTA_V1_0, "DOTA-v1.5": DOTA_V1_5, "DOTA-v2.0": DOTA_V2_0}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LINE_FORMAT = "x1 y1 x2 y2 x3 y3 x4 y4 category difficult"
MIN_AREA = 1e-6  # square pixels; polygons below this are reported as degenerate
_TILE_NAME = re.compile(r"(?P<source>.+)__(?P<rate>\d+(?:\.\d+)?)__(?P<x0>\d+)___(?P<y0>\d+)")


def _targets(boxes: Boxes, labels: tuple[str, ...], difficult: np.ndarray) -> dict[str, np.ndarray]:
    return {"boxes": boxes.data, "labels": np.array(labels, dtype=str), "difficult": difficult}


@dataclass(frozen=True, eq=False)
class DotaSample:
    """One DOTA image on disk and its objects.

    ``boxes``: ``N`` quadrilaterals (fmt ``"quad"``, frame ``"pixel"``, ``image_size`` of the image);
    ``labels[i]`` and ``difficult[i]`` (int64: 0, 1, or 2 for objects cut by a tile border) belong to box ``i``.
    """

    name: str
    image_path: Path
    boxes: Boxes
    labels: tuple[str, ...]
    difficult: np.ndarray
    imagesource: str | None = None
    gsd: float | None = None

    def load(self) -> dict[str, np.ndarray]:
        """``{"image": (H, W, 3) uint8, "boxes": (N, 8) float64, "labels": (N,) str, "difficult": (N,) int64}``."""
        image = as_array(read_image(self.image_path, self.name))
        return {"image": image, **_targets(self.boxes, self.labels, self.difficult)}

    def hbb(self) -> Boxes:
        """The horizontal boxes enclosing the quadrilaterals (``xyxy``, pixel)."""
        return self.boxes.to("xyxy")


@dataclass(frozen=True, eq=False)
class DotaImage:
    """An image held in memory with its objects, fields as in :class:`DotaSample`: what :func:`write_dota`
    writes and what :func:`tile_sample` tiles without touching the disk. ``image`` is ``(H, W, 3)`` uint8."""

    name: str
    image: np.ndarray
    boxes: Boxes
    labels: tuple[str, ...]
    difficult: np.ndarray
    imagesource: str | None = None
    gsd: float | None = None

    def load(self) -> dict[str, np.ndarray]:
        return {"image": self.image, **_targets(self.boxes, self.labels, self.difficult)}


@dataclass(frozen=True, eq=False, kw_only=True)
class DotaTile(DotaImage):
    """One window of a source image, cut by :func:`tile_sample` and named by :func:`tile_name`.

    ``x0, y0``: the window's top-left corner in the source image scaled by ``rate``; ``source_size``: the
    unscaled source ``(width, height)``. ``image`` is the crop (zero-padded to the full tile size when tiling
    with ``pad=True``) and ``boxes`` are quads in tile pixels.
    """

    source: str
    x0: int
    y0: int
    source_size: tuple[int, int]
    rate: float = 1.0

    def to_source(self, boxes: Boxes) -> Boxes:
        """Map boxes in this tile's frame (e.g. predictions) to pixels of the unscaled source image."""
        return _shift_to_source(boxes, self.x0, self.y0, self.rate, self.source_size)


# --- reading ----------------------------------------------------------------------------------------

def read_dota(root: str | os.PathLike, classes: Sequence[str] = DOTA_V1_0,
              problems: Problems | None = None) -> list[DotaSample]:
    """Read every ``labelTxt/<name>.txt`` of ``root`` with its image, sorted by name.

    Reported problems: a missing directory, an image without a label file or a label file without an image,
    a line that is not ``x1 y1 … x4 y4 category [difficult]`` (with 8 finite numbers, a category from
    ``classes`` and a flag 0/1/2), a polygon of zero area, a malformed header. In non-strict mode a broken
    line drops that object and a missing counterpart drops that image.
    """
    problems = Problems() if problems is None else problems
    root = Path(root)
    image_dir, label_dir = root / "images", root / "labelTxt"
    found = [check_exists(image_dir, "image directory 'images/'", problems),
             check_exists(label_dir, "label directory 'labelTxt/'", problems)]
    if not all(found):
        return []
    images = _index_images(image_dir, problems)
    labels = {p.stem: p for p in label_dir.iterdir() if p.suffix == ".txt" and p.is_file()}
    for name in sorted(images.keys() - labels.keys()):
        problems.add(images[name], f"image has no label file; expected labelTxt/{name}.txt")
    samples = []
    for name in sorted(labels):
        if name not in images:
            problems.add(labels[name], f"label file has no image; expected images/{name}.png "
                                       f"(or {', '.join(IMAGE_EXTENSIONS[1:])})")
            continue
        parsed = _read_label_file(labels[name], tuple(classes), problems)
        try:
            size = image_size(images[name], name)
        except DataFormatError as e:
            problems.add(e.file, e.message, e.record)
            continue
        if parsed is not None:
            quads, names, flags, header = parsed
            samples.append(DotaSample(name, images[name], Boxes(np.reshape(quads, (-1, 8)), "quad", "pixel", size),
                                      tuple(names), np.array(flags, dtype=np.int64), **header))
    return samples


def read_dota_images(root: str | os.PathLike, problems: Problems | None = None) -> list[DotaSample]:
    """The images of an unlabelled DOTA split (the official test set ships ``images/`` only), sorted by
    name, as samples without objects: inputs for inference and :func:`tile_sample`, not ground truth."""
    problems = Problems() if problems is None else problems
    image_dir = Path(root) / "images"
    if not check_exists(image_dir, "image directory 'images/'", problems):
        return []
    samples = []
    for name, path in sorted(_index_images(image_dir, problems).items()):
        try:
            size = image_size(path, name)
        except DataFormatError as e:
            problems.add(e.file, e.message, e.record)
            continue
        samples.append(DotaSample(name, path, Boxes(np.zeros((0, 8)), "quad", "pixel", size), (),
                                  np.zeros(0, dtype=np.int64)))
    return samples


def _index_images(image_dir: Path, problems: Problems) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            if path.stem in images:
                problems.add(path, f"two images named {path.stem!r}: {images[path.stem].name} and {path.name}")
            images[path.stem] = path
    return images


def _read_label_file(path: Path, classes: tuple[str, ...], problems: Problems
                     ) -> tuple[list[list[float]], list[str], list[int], dict[str, Any]] | None:
    """``(quads, labels, flags, header)`` of one label file, or ``None`` if it is not text."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        problems.add(path, f"not UTF-8 text: {e}")
        return None
    header: dict[str, Any] = {"imagesource": None, "gsd": None}
    quads, labels, flags = [], [], []
    in_header = True
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        key, colon, value = line.partition(":")
        if colon and key in header:
            if not in_header:
                problems.add(path, f"header '{key}:' after the first object; headers come first", f"line {lineno}")
            elif key == "imagesource":
                header["imagesource"] = value.strip() or None
            else:
                header["gsd"] = _parse_gsd(value.strip(), path, lineno, problems)
            continue
        in_header = False
        parsed = _parse_object(line, classes, path, lineno, problems)
        if parsed is not None:
            quads.append(parsed[0])
            labels.append(parsed[1])
            flags.append(parsed[2])
    return quads, labels, flags, header


def _parse_gsd(value: str, path: Path, lineno: int, problems: Problems) -> float | None:
    if value.lower() in ("null", "none"):
        return None
    gsd = _to_float(value)
    if gsd is None or not math.isfinite(gsd) or gsd <= 0:
        problems.add(path, f"gsd must be a positive number, 'null' or 'None', got {value!r}", f"line {lineno}")
        return None
    return gsd


def _parse_object(line: str, classes: tuple[str, ...], path: Path, lineno: int,
                  problems: Problems) -> tuple[list[float], str, int] | None:
    """``(8 coordinates, category, difficult)`` of one object line, or ``None`` after reporting it."""
    record = f"line {lineno}"
    fields = line.split()
    # The category is the last field that is not a number: coordinates before it, the flag after it.
    cat = max((i for i, f in enumerate(fields) if _to_float(f) is None), default=None)
    if cat is None:
        problems.add(path, f"no category name; expected '{LINE_FORMAT}', got {line!r}", record)
        return None
    category, coords, tail = fields[cat], fields[:cat], fields[cat + 1:]
    if len(coords) != 8:
        problems.add(path, f"expected 8 coordinates before the category ('{LINE_FORMAT}'), "
                           f"got {len(coords)} fields before {category!r}", record)
        return None
    values = [_to_float(c) for c in coords]
    for i, (text, v) in enumerate(zip(coords, values, strict=True)):
        if v is None or not math.isfinite(v):
            problems.add(path, f"coordinate {'xy'[i % 2]}{i // 2 + 1} must be a finite number, got {text!r}", record)
            return None
    if len(tail) > 1:
        problems.add(path, f"expected only the difficult flag after the category, got {' '.join(tail)!r}", record)
        return None
    flag = tail[0] if tail else "0"
    if flag not in ("0", "1", "2"):
        problems.add(path, f"difficult flag must be 0, 1 or 2, got {flag!r}", record)
        return None
    if category not in classes:
        problems.add(path, f"unknown class {category!r}; expected one of {_describe(classes)}", record)
        return None
    if polygon_area(np.reshape(values, (4, 2))) < MIN_AREA:
        problems.add(path, f"degenerate polygon (zero area): {' '.join(coords)}", record)
        return None
    return values, category, int(flag)


def _to_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _describe(classes: tuple[str, ...]) -> str:
    for name, known in CLASS_LISTS.items():
        if classes == known:
            return f"{name} classes"
    return ", ".join(classes)


# --- writing ----------------------------------------------------------------------------------------

def write_dota(root: str | os.PathLike, samples: Iterable[DotaImage]) -> None:
    """Write ``samples`` in the DOTA layout: ``images/<name>.png`` (lossless) and ``labelTxt/<name>.txt``.

    Header lines are written for the ``imagesource`` / ``gsd`` values that are set. Numbers are written as
    Python's shortest round-tripping float text (``12.0``, ``0.1``), so :func:`read_dota` gives back the
    same arrays. Each file is written to a temporary name and renamed.
    """
    root = Path(root)
    for sub in ("images", "labelTxt"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for sample in samples:
        text = _label_text(sample)
        image = Image.fromarray(np.asarray(sample.image))
        with atomic_path(root / "images" / f"{sample.name}.png") as tmp:
            image.save(tmp, format="PNG")
        with atomic_path(root / "labelTxt" / f"{sample.name}.txt") as tmp:
            tmp.write_text(text, encoding="utf-8")


def write_tiles(root: str | os.PathLike, tiles: Iterable[DotaTile]) -> None:
    """Write tiles from :func:`tile_sample` as a DOTA dataset; tile names carry their source and origin."""
    write_dota(root, tiles)


def _label_text(sample: DotaImage) -> str:
    name, image = sample.name, np.asarray(sample.image)
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"sample name {name!r} must be a non-empty file stem")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    quads = sample.boxes.to("quad", "pixel").data
    flags = np.asarray(sample.difficult)
    if not len(quads) == len(sample.labels) == len(flags):
        raise ValueError(f"{name}: {len(quads)} boxes, {len(sample.labels)} labels, {len(flags)} difficult flags")
    lines = []
    if sample.imagesource is not None:
        if "\n" in sample.imagesource:
            raise ValueError(f"{name}: imagesource must be one line")
        lines.append(f"imagesource:{sample.imagesource}")
    if sample.gsd is not None:
        lines.append(f"gsd:{float(sample.gsd)!r}")
    for quad, label, flag in zip(quads, sample.labels, flags, strict=True):
        if not label or label.split() != [label] or int(flag) not in (0, 1, 2):
            raise ValueError(f"{name}: object ({label!r}, difficult {flag}) needs a one-word label and flag 0/1/2")
        lines.append(" ".join(repr(float(v)) for v in quad) + f" {label} {int(flag)}")
    return "".join(line + "\n" for line in lines)


# --- tiling -----------------------------------------------------------------------------------------

def tile_origins(width: int, height: int, size: int = 1024, gap: int = 200) -> list[tuple[int, int]]:
    """Top-left corners ``(x0, y0)`` of the DOTA split windows over a ``width × height`` image, row by row.

    Along each axis the windows start at 0, stride, 2·stride, … (stride = ``size - gap``) while they end
    inside the image; the last one is shifted back to end at the border, ``max(length - size, 0)``.
    """
    if not 0 <= gap < size:
        raise ValueError(f"need 0 <= gap < size, got gap={gap}, size={size}")

    def starts(length: int) -> list[int]:
        out, start = [], 0
        while start + size < length:
            out.append(start)
            start += size - gap
        return [*out, max(length - size, 0)]

    return [(x0, y0) for y0 in starts(height) for x0 in starts(width)]


def tile_sample(sample: DotaSample | DotaImage, image: np.ndarray | None = None, size: int = 1024, gap: int = 200,
                iof_thr: float = 0.7, pad: bool = True, rate: float = 1.0) -> list[DotaTile]:
    """Cut a sample into the overlapping windows of :func:`tile_origins`, with the DOTA split rule.

    ``image`` (``(H, W, 3)`` uint8) saves re-reading a :class:`DotaSample`'s image. With ``rate != 1`` the
    image is first resized (bilinear) by that factor, as for multi-scale DOTA training.
    ``pad=True`` zero-pads border windows to ``size × size``. For each object and window,
    iof = area(object ∩ window) / area(object):

    - iof = 1 (within 1e-6): kept unchanged, shifted to tile coordinates;
    - iof ≥ ``iof_thr``: the clipped polygon, with the object's difficult flag;
    - 0 < iof < ``iof_thr``: the clipped polygon with difficult 2 (ignored in evaluation);
    - iof = 0, or an object of zero area: dropped.

    A clipped polygon that is not a quadrilateral becomes the minimum-area rectangle of its vertices
    (:func:`min_area_quad`) with its vertices clamped into the window; clipped quads are ordered clockwise
    from the top-most vertex (:func:`.geometry.sort_quad_vertices`).
    """
    if image is None:
        image = sample.image if isinstance(sample, DotaImage) else sample.load()["image"]
    image = np.asarray(image)
    source_size = (image.shape[1], image.shape[0])
    if sample.boxes.image_size is not None and tuple(sample.boxes.image_size) != source_size:
        raise ValueError(f"{sample.name}: image is {source_size} but the boxes are for {sample.boxes.image_size}")
    quads = sample.boxes.to("quad", "pixel").data.reshape(-1, 4, 2)
    if rate != 1:
        scaled = (round(source_size[0] * rate), round(source_size[1] * rate))
        image = np.asarray(Image.fromarray(image).resize(scaled, Image.Resampling.BILINEAR))
        quads = quads * rate
    height, width = image.shape[:2]
    gsd = None if sample.gsd is None else sample.gsd / rate
    tiles = []
    for x0, y0 in tile_origins(width, height, size, gap):
        crop = image[y0:y0 + size, x0:x0 + size]
        tile = np.zeros((size, size, *image.shape[2:]), image.dtype) if pad else np.empty_like(crop)
        tile[:crop.shape[0], :crop.shape[1]] = crop
        window = (x0, y0, x0 + tile.shape[1], y0 + tile.shape[0])
        keep, kept_quads, flags = _objects_in_window(quads, np.asarray(sample.difficult), window, iof_thr)
        boxes = Boxes(kept_quads, "quad", "pixel", (tile.shape[1], tile.shape[0]))
        tiles.append(DotaTile(
            tile_name(sample.name, rate, x0, y0), tile, boxes, tuple(sample.labels[i] for i in keep), flags,
            sample.imagesource, gsd,
            source=sample.name, x0=x0, y0=y0, source_size=source_size, rate=rate))
    return tiles


def _objects_in_window(quads: np.ndarray, difficult: np.ndarray, window: tuple[int, int, int, int],
                       iof_thr: float) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Indices, ``(K, 8)`` tile-frame quads and flags of the objects ``(N, 4, 2)`` kept in ``window``."""
    wx0, wy0, wx1, wy1 = window
    lo, hi = quads.min(axis=1), quads.max(axis=1)
    x, y = quads[..., 0], quads[..., 1]
    areas = 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - y * np.roll(x, -1, axis=1), axis=1))
    overlaps = (lo[:, 0] < wx1) & (hi[:, 0] > wx0) & (lo[:, 1] < wy1) & (hi[:, 1] > wy0) & (areas > 0)
    inside = (lo[:, 0] >= wx0) & (hi[:, 0] <= wx1) & (lo[:, 1] >= wy0) & (hi[:, 1] <= wy1)
    keep, out, flags = [], [], []
    for i in np.flatnonzero(overlaps):
        quad, flag = quads[i], int(difficult[i])
        if not inside[i]:
            part = clip_polygon(quad, wx0, wy0, wx1, wy1)
            part = part[np.abs(part - np.roll(part, 1, axis=0)).max(axis=1, initial=0) > 1e-9]  # drop repeats
            iof = polygon_area(part) / areas[i] if len(part) >= 3 else 0.0
            if iof <= 0:
                continue
            if iof < 1 - 1e-6:
                if len(part) != 4:
                    part = np.clip(min_area_quad(part), (wx0, wy0), (wx1, wy1))
                quad = sort_quad_vertices(part).reshape(4, 2)
                flag = flag if iof >= iof_thr else 2
        keep.append(int(i))
        out.append((quad - (wx0, wy0)).reshape(8))
        flags.append(flag)
    return keep, np.reshape(out, (-1, 8)), np.array(flags, dtype=np.int64)


def tile_name(source: str, rate: float, x0: int, y0: int) -> str:
    """``{source}__{rate}__{x0}___{y0}``, the rate written like the DOTA tools (``1``, ``0.5``, ``1.5``)."""
    rate_text = str(int(rate)) if float(rate).is_integer() else repr(float(rate))
    return f"{source}__{rate_text}__{x0}___{y0}"


def parse_tile_name(name: str) -> tuple[str, float, int, int]:
    """``(source, rate, x0, y0)`` of a tile name ``{source}__{rate}__{x0}___{y0}``."""
    match = _TILE_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"{name!r} is not a DOTA tile name '<source>__<rate>__<x0>___<y0>'")
    return match["source"], float(match["rate"]), int(match["x0"]), int(match["y0"])


def tile_to_source(boxes: Boxes, tile: str, source_size: tuple[int, int] | None = None) -> Boxes:
    """Map boxes in the frame of the tile named ``tile`` (e.g. predictions on a tile read from disk) to pixels
    of its unscaled source image, ready for merging."""
    _, rate, x0, y0 = parse_tile_name(tile)
    return _shift_to_source(boxes, x0, y0, rate, source_size)


def _shift_to_source(boxes: Boxes, x0: int, y0: int, rate: float, source_size: tuple[int, int] | None) -> Boxes:
    boxes = boxes.to(frame="pixel")
    data = boxes.data.copy()
    xy = data if boxes.fmt in ("quad", "xyxy") else data[:, :2]  # xywh and obb: only the anchor moves
    xy[:, 0::2] += x0
    xy[:, 1::2] += y0
    if boxes.fmt == "obb":
        data[:, :4] /= rate
    else:
        data /= rate
    return Boxes(data, boxes.fmt, "pixel", source_size, boxes.angle)


# --- datasets and checks ----------------------------------------------------------------------------

class DotaDataset(RecordDataset):
    """Torch dataset over :func:`read_dota`; items are :meth:`DotaSample.load` dicts passed to ``transform``."""

    def __init__(self, root: str | os.PathLike, classes: Sequence[str] = DOTA_V1_0,
                 transform: Callable[[dict], Any] | None = None, problems: Problems | None = None):
        self.classes = tuple(classes)
        super().__init__(read_dota(root, self.classes, problems), transform)


def to_hf_dataset(samples: Sequence[DotaSample | DotaImage]) -> datasets.Dataset:
    """Samples as a Hugging Face dataset.

    Columns: ``name``, ``image`` (``datasets.Image``: referenced by path for :class:`DotaSample`, encoded
    as PNG for in-memory samples), ``boxes`` (lists of 8 floats, pixel quads), ``labels``, ``difficult``,
    ``imagesource`` and ``gsd`` (null when absent).
    """
    import datasets

    features = datasets.Features({
        "name": datasets.Value("string"),
        "image": datasets.Image(),
        "boxes": datasets.List(datasets.List(datasets.Value("float64"), length=8)),
        "labels": datasets.List(datasets.Value("string")),
        "difficult": datasets.List(datasets.Value("int64")),
        "imagesource": datasets.Value("string"),
        "gsd": datasets.Value("float64"),
    })
    return datasets.Dataset.from_dict({
        "name": [s.name for s in samples],
        "image": [str(s.image_path) if isinstance(s, DotaSample) else s.image for s in samples],
        "boxes": [s.boxes.to("quad", "pixel").data.tolist() for s in samples],
        "labels": [list(s.labels) for s in samples],
        "difficult": [np.asarray(s.difficult).tolist() for s in samples],
        "imagesource": [s.imagesource for s in samples],
        "gsd": [s.gsd for s in samples],
    }, features=features)


def detect(root: str | os.PathLike) -> bool:
    """Whether ``root`` has the DOTA layout: ``images/`` and ``labelTxt/`` directories."""
    root = Path(root)
    return (root / "images").is_dir() and (root / "labelTxt").is_dir()


def check(root: str | os.PathLike, problems: Problems) -> dict[str, Any]:
    """Read ``root`` against the DOTA-v2.0 classes (a superset of v1.0 and v1.5), reporting problems.

    Returns counts: ``images``, ``objects``, ``difficult`` (flag 1), ``cut`` (flag 2), ``objects_per_class``,
    and ``classes``: the first of DOTA-v1.0 / v1.5 / v2.0 that covers every category found.
    """
    samples = read_dota(root, DOTA_V2_0, problems)
    per_class = Counter(label for s in samples for label in s.labels)
    flags = Counter(int(f) for s in samples for f in s.difficult)
    return {
        "format": "dota",
        "images": len(samples),
        "objects": sum(per_class.values()),
        "difficult": flags[1],
        "cut": flags[2],
        "objects_per_class": dict(sorted(per_class.items())),
        "classes": next(name for name, known in CLASS_LISTS.items() if per_class.keys() <= set(known)),
    }
