"""GeoPixelD-style grounded conversation generation (GCG): captions with grounded phrases and their masks.

Caption markup
    A grounded caption marks each grounded phrase as ``<p> phrase </p> [SEG]``; the ``k``-th ``[SEG]`` token
    owns the ``k``-th mask. Instance phrases carry numeric suffixes ("tennis court-1"); a *group* phrase
    ("the cars") owns one mask made of several polygon parts. :func:`clean_caption` is the single
    definition of GLaMM's caption cleaning (used for ground truth here and for predictions by
    ``rs_shared.metrics``).

On-disk layout (GeoPixel release)::

    <root>/GeoPixelD.json            index: [{"id": int,
                                             "conversations": [{"from": "human", "value": <instruction>},
                                                               {"from": "bot", "value": <grounded caption>}],
                                             "image": <png path>,
                                             "polygons": <per-tile json path>}, ...]
    <root>/<split>/<tile>.png        an iSAID tile (800 × 800, or a whole smaller image)
    <root>/<split>/<tile>.json       {"id", "img": <png path>, "gcg_description": <grounded caption>,
                                      "polygons": [phrase k → [part → [[x, y], ...]]],
                                      "regions": [{"box": [x1, y1, x2, y2], "gcg_description": <grounded
                                                   caption of the box>, "polygons": [...]}, ...]}   (optional)

``regions`` is not part of the GeoPixel release (its captions are holistic: one per tile, no boxes). It holds
box-conditioned captions, as the synthetic generator writes them for CLV-Net's box prompt: per region an ``xyxy``
pixel box and the grounded caption of the objects in it, with one polygon entry per ``[SEG]`` like the tile's own.
Readers expose them as :attr:`GCGSample.regions` (:meth:`GCGSample.region` is the tile seen through one region).

An index record may carry ``"segmentation"`` (one COCO RLE per ``[SEG]``) instead of ``"polygons"``.
In a conversation, ``from`` is ``human``/``user`` for the instruction; any other value is the assistant.
Relative paths are resolved against the directory of the JSON file that contains them (the index's
directory for ``image``/``polygons``, the tile file's directory for ``img``); absolute paths are kept.
Polygon vertices are integer pixel coordinates in the continuous convention of
:mod:`rs_shared.data.masks`; every part of a phrase is filled into one binary mask with pycocotools
(the rasterisation of the GCG evaluation ground truth).

This module reads the layout; :mod:`rs_shared.data.gcg_writer` writes it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .common import RecordDataset, as_array, image_size, read_image, read_json, require_keys
from .errors import DataFormatError, Problems, check_exists
from .geometry import Boxes
from .manifest import MANIFEST
from .masks import (
    Polygon,
    mask_bbox,
    mask_to_rle,
    parse_coco_segmentation,
    parse_point_polygons,
    segmentation_to_mask,
)

INDEX_NAME = "GeoPixelD.json"
SEG_TOKEN = "[SEG]"
GEOPIXEL_GCG_INSTRUCTION = (
    "Could you perform an in-depth analysis of this photo, including interleaved segmentation masks to map "
    "each part of your answer to specific image object?"
)
"""The GCG instruction of GeoPixel's released training sample; used for tiles read without an index."""

VERTEX_TOLERANCE = 1.0
"""Polygon vertices may lie up to this many pixels outside the image before they are reported."""

_HUMAN_ROLES = ("human", "user")
_TAG = re.compile(r"<.*?>")
_PHRASE = re.compile(r"<p>(.*?)</p>")
_SEG_AFTER = re.compile(r"\s*\[SEG\]")
_TILE_SUFFIX = re.compile(r"^(?P<source>.+)_(?P<y0>\d+)_(?P<y1>\d+)_(?P<x0>\d+)_(?P<x1>\d+)$")

Segmentation = list[Polygon] | dict
"""One phrase's segmentation: its polygon parts (each ``(K, 2)``) or a COCO RLE dict."""


# --- caption markup ------------------------------------------------------------------------------------

def _drop_newlines(text: str) -> str:
    # GLaMM's first step: newlines are deleted (not replaced by a space), then one pass over double spaces.
    return text.replace("\n", "").replace("  ", " ")


def clean_caption(text: str) -> str:
    """Plain caption of a grounded caption, by GLaMM's GCG cleaning rule (``eval/gcg``), step for step.

    Delete newlines (words on either side are joined), replace double spaces once, remove every ``<…>``
    tag (non-greedy), remove ``[SEG]``, collapse whitespace, strip single quotes, then strip spaces.
    Double quotes are kept, as in GLaMM. ``"The <p> car </p> [SEG] is red."`` → ``"The car is red."``
    """
    text = _TAG.sub("", _drop_newlines(text)).replace(SEG_TOKEN, "")
    return " ".join(text.split()).strip("'").strip()


@dataclass(frozen=True)
class GroundedCaption:
    """A caption in ``<p> phrase </p> [SEG]`` markup, its cleaned text and its phrases in order."""

    markup: str
    caption: str
    phrases: tuple[str, ...]

    @property
    def num_seg(self) -> int:
        """Number of ``[SEG]`` tokens, i.e. of masks the caption asks for."""
        return self.markup.count(SEG_TOKEN)

    def grounding_problem(self) -> str | None:
        """What is wrong with the phrase/``[SEG]`` pairing, or ``None`` when every phrase is followed by
        ``[SEG]`` and there is no other ``[SEG]``."""
        if self.num_seg != len(self.phrases):
            return (f"caption has {self.num_seg} {SEG_TOKEN} tokens but {len(self.phrases)} <p>...</p> phrases; "
                    f"each phrase must be followed by exactly one {SEG_TOKEN}")
        text = _drop_newlines(self.markup)
        for k, match in enumerate(_PHRASE.finditer(text)):
            if not _SEG_AFTER.match(text, match.end()):
                return f"phrase {k} ({match.group(1).strip()!r}) is not followed by {SEG_TOKEN}"
        return None


def parse_grounded_caption(text: str) -> GroundedCaption:
    """Split grounded-caption markup into the cleaned caption (:func:`clean_caption`) and the stripped
    contents of each ``<p>…</p>`` in order. Never raises; check :meth:`GroundedCaption.grounding_problem`."""
    phrases = tuple(p.strip() for p in _PHRASE.findall(_drop_newlines(text)))
    return GroundedCaption(markup=text, caption=clean_caption(text), phrases=phrases)


# --- tile names ----------------------------------------------------------------------------------------

class TileName(NamedTuple):
    """Source image and pixel window of an iSAID-devkit tile; the window is ``None`` for a whole image."""

    source: str
    x0: int | None
    y0: int | None
    x1: int | None
    y1: int | None


def parse_tile_name(name: str) -> TileName:
    """Parse a tile stem ``{source}_{y0}_{y1}_{x0}_{x1}`` (rows ``y0:y1``, columns ``x0:x1``).

    ``"P0224_0_800_600_1400"`` → ``TileName("P0224", x0=600, y0=0, x1=1400, y1=800)``. A name without the
    four-number suffix is a whole image (copied untiled because a side is ≤ 800 px).
    """
    match = _TILE_SUFFIX.match(name)
    if match is None:
        return TileName(name, None, None, None, None)
    y0, y1, x0, x1 = (int(match[k]) for k in ("y0", "y1", "x0", "x1"))
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"tile name {name!r}: expected {{source}}_{{y0}}_{{y1}}_{{x0}}_{{x1}} with y0 < y1, x0 < x1")
    return TileName(match["source"], x0, y0, x1, y1)


def tile_name(source: str, x0: int, y0: int, x1: int, y1: int) -> str:
    """Stem of the tile covering columns ``x0:x1`` and rows ``y0:y1`` of ``source`` (iSAID devkit order)."""
    return f"{source}_{y0}_{y1}_{x0}_{x1}"


# --- records -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GCGRegion:
    """A box-conditioned caption of a tile: the prompt ``box`` ``(x1, y1, x2, y2)`` in pixels and the grounded
    caption of the objects in it, with one segmentation per phrase (as :attr:`GCGSample.masks`)."""

    box: tuple[float, float, float, float]
    caption: GroundedCaption
    masks: tuple[Segmentation, ...]


@dataclass(frozen=True)
class GCGSample:
    """One tile: instruction, grounded caption and one segmentation per phrase (``[SEG]``).

    ``image_size`` is ``(width, height)``. ``masks[k]`` is the ``k``-th phrase's polygon parts (``(K, 2)``
    pixel vertices) or COCO RLE dict. ``regions`` are the tile's box-conditioned captions (none in GeoPixelD);
    ``box`` is the prompt box the caption belongs to (``None`` for the tile's holistic caption).
    """

    id: int | str
    image_path: Path
    instruction: str
    caption: GroundedCaption
    masks: tuple[Segmentation, ...]
    image_size: tuple[int, int]
    regions: tuple[GCGRegion, ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def name(self) -> str:
        """Tile name (the image file's stem)."""
        return self.image_path.stem

    def phrase_masks(self) -> np.ndarray:
        """``(N, H, W)`` bool masks, one per phrase; the parts of a group phrase are united."""
        width, height = self.image_size
        if not self.masks:
            return np.zeros((0, height, width), dtype=bool)
        return np.stack([segmentation_to_mask(m, height, width) for m in self.masks])

    def phrase_boxes(self) -> Boxes:
        """Tight ``xyxy`` pixel box of each phrase's mask, ``(N, 4)``; zeros for an empty mask."""
        data = np.array([mask_bbox(m) for m in self.phrase_masks()]).reshape(-1, 4)
        return Boxes(data, "xyxy", "pixel", self.image_size)

    def union_box(self) -> Boxes:
        """The box enclosing every non-empty phrase mask, ``(1, 4)`` xyxy pixels (CLV-Net's evaluation box
        prompt); ``(0, 4)`` when there is no non-empty mask."""
        boxes = self.phrase_boxes().data
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        data = np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])[None] if len(boxes) else np.zeros((0, 4))
        return Boxes(data, "xyxy", "pixel", self.image_size)

    def region(self, k: int) -> GCGSample:
        """The tile with the caption, masks and ``box`` of its ``k``-th region (and no regions of its own)."""
        if not 0 <= k < len(self.regions):
            raise IndexError(f"tile {self.name} (id {self.id}) has {len(self.regions)} regions, asked for region {k}")
        r = self.regions[k]
        return dataclasses.replace(self, caption=r.caption, masks=r.masks, regions=(), box=r.box)

    def load(self) -> dict[str, Any]:
        """``{"image": (H, W, 3) uint8, "masks": (N, H, W) bool, "phrases": list[str], "caption": str,
        "markup": str, "instruction": str, "box": (4,) float64 xyxy pixels or None}``."""
        image = as_array(read_image(self.image_path, self.id))
        if image.shape[1::-1] != self.image_size:
            raise DataFormatError(self.image_path, f"image is {image.shape[1]}x{image.shape[0]}, expected "
                                  f"{self.image_size[0]}x{self.image_size[1]} (changed since it was indexed)", self.id)
        return {"image": image, "masks": self.phrase_masks(), "phrases": list(self.caption.phrases),
                "caption": self.caption.caption, "markup": self.caption.markup, "instruction": self.instruction,
                "box": None if self.box is None else np.array(self.box, dtype=np.float64)}


class GCGDataset(RecordDataset):
    """Torch dataset over a GeoPixelD index (``GeoPixelD.json``, or a directory holding it) or a directory
    of per-tile files; items are :meth:`GCGSample.load` dicts passed through ``transform``."""

    def __init__(self, path: str | os.PathLike, transform: Callable[[dict], Any] | None = None):
        path = Path(path)
        if path.is_dir() and (path / INDEX_NAME).is_file():
            path = path / INDEX_NAME
        samples = read_tiles(path) if path.is_dir() else read_geopixeld(path)
        super().__init__(samples, transform)


# --- reading -------------------------------------------------------------------------------------------

def read_geopixeld(index_json: str | os.PathLike, problems: Problems | None = None) -> list[GCGSample]:
    """Read and validate a ``GeoPixelD.json`` index and the per-tile polygon files it references."""
    problems = Problems() if problems is None else problems
    index_json = Path(index_json)
    records = _read_json(index_json, problems)
    if records is None:
        return []
    if not isinstance(records, list):
        problems.add(index_json, f"expected a list of records, got {type(records).__name__}")
        return []
    samples = (_index_record(rec, i, index_json, problems) for i, rec in enumerate(records))
    return [s for s in samples if s is not None]


def read_tiles(directory: str | os.PathLike, problems: Problems | None = None) -> list[GCGSample]:
    """Read every per-tile ``*.json`` in ``directory`` (sorted; ``GeoPixelD.json`` and ``manifest.json``
    are skipped). The instruction is :data:`GEOPIXEL_GCG_INSTRUCTION`."""
    problems = Problems() if problems is None else problems
    directory = Path(directory)
    if not directory.is_dir():
        problems.add(directory, "missing directory of per-tile GeoPixelD files")
        return []
    paths = [p for p in sorted(directory.glob("*.json")) if p.name not in (INDEX_NAME, MANIFEST)]
    samples = (_tile_file(path, problems) for path in paths)
    return [s for s in samples if s is not None]


def _index_record(rec: object, i: int, index_json: Path, problems: Problems) -> GCGSample | None:
    if not require_keys(rec, {"id": int, "conversations": list, "image": str}, index_json, i, problems):
        return None
    record = f"{i} (id {rec['id']})"
    turns = _conversation(rec["conversations"], index_json, record, problems)
    if turns is None:
        return None
    caption = _grounded(turns[1], index_json, record, problems)
    image_path = _resolve(rec["image"], index_json)
    size = _image(image_path, index_json, record, problems) if caption else None
    if size is None:
        return None
    if isinstance(rec.get("polygons"), str):
        polygons_file = _resolve(rec["polygons"], index_json)
        tile = _read_json(polygons_file, problems, rec["id"])
        if tile is None or not require_keys(tile, {"polygons": list}, polygons_file, rec["id"], problems):
            return None
        masks = _phrase_polygons(tile["polygons"], caption.num_seg, size, polygons_file, rec["id"], problems)
        regions = _regions(tile, size, polygons_file, rec["id"], problems)
        if regions is None:
            return None
    elif isinstance(rec.get("segmentation"), list):
        masks = _phrase_rles(rec["segmentation"], caption.num_seg, size, index_json, record, problems)
        regions = ()
    else:
        problems.add(index_json, "needs 'polygons' (path of the per-tile JSON) or 'segmentation' "
                     "(a list of COCO RLEs, one per [SEG])", record)
        return None
    if masks is None:
        return None
    return GCGSample(rec["id"], image_path, turns[0], caption, masks, size, regions)


def _tile_file(path: Path, problems: Problems) -> GCGSample | None:
    tile = _read_json(path, problems)
    keys = {"id": (int, str), "img": str, "gcg_description": str, "polygons": list}
    if tile is None or not require_keys(tile, keys, path, None, problems):
        return None
    record = tile["id"]
    caption = _grounded(tile["gcg_description"], path, record, problems)
    image_path = _resolve(tile["img"], path)
    size = _image(image_path, path, record, problems) if caption else None
    if size is None:
        return None
    masks = _phrase_polygons(tile["polygons"], caption.num_seg, size, path, record, problems)
    regions = _regions(tile, size, path, record, problems)
    if masks is None or regions is None:
        return None
    return GCGSample(record, image_path, GEOPIXEL_GCG_INSTRUCTION, caption, masks, size, regions)


def _conversation(turns: list, file: Path, record: object, problems: Problems) -> tuple[str, str] | None:
    """``(instruction, grounded caption)`` of a two-turn human → assistant conversation."""
    ok = len(turns) == 2 and all(
        isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str) for t in turns)
    if not ok or turns[0]["from"] not in _HUMAN_ROLES or turns[1]["from"] in _HUMAN_ROLES:
        problems.add(file, "'conversations' must be two turns {'from', 'value'}: a human/user instruction, "
                     "then the assistant's grounded caption", record)
        return None
    return turns[0]["value"], turns[1]["value"]


def _grounded(markup: str, file: Path, record: object, problems: Problems) -> GroundedCaption | None:
    caption = parse_grounded_caption(markup)
    problem = caption.grounding_problem()
    if problem is not None:
        problems.add(file, problem, record)
        return None
    return caption


def _phrase_polygons(value: list, num_seg: int, size: tuple[int, int], file: Path, record: object,
                     problems: Problems) -> tuple[list[Polygon], ...] | None:
    """Validate ``polygons[k]`` (parts of ``[x, y]`` vertices), one entry per ``[SEG]``, within the image."""
    if len(value) != num_seg:
        problems.add(file, f"has {len(value)} polygon entries but the caption has {num_seg} {SEG_TOKEN} tokens "
                     "(one entry per [SEG] expected)", record)
        return None
    width, height = size
    masks = []
    for k, entry in enumerate(value):
        parts = parse_point_polygons(entry, file, f"{record}, phrase {k}", problems)
        if parts is None:
            return None
        for j, part in enumerate(parts):
            outside = ((part < -VERTEX_TOLERANCE) | (part > np.array([width, height]) + VERTEX_TOLERANCE)).any(1)
            if outside.any():
                vertex = part[outside][0].tolist()
                problems.add(file, f"polygon part {j}: vertex {vertex} lies outside the {width}x{height} image "
                             f"(tolerance {VERTEX_TOLERANCE:g} px)", f"{record}, phrase {k}")
                return None
        masks.append(parts)
    return tuple(masks)


def _regions(tile: dict, size: tuple[int, int], file: Path, record: object,
             problems: Problems) -> tuple[GCGRegion, ...] | None:
    """Validate the optional ``regions`` of a per-tile file: each ``{"box": [x1, y1, x2, y2]`` (pixels, inside the
    image, x1 < x2, y1 < y2), ``"gcg_description"``, ``"polygons"`` (one entry per ``[SEG]``)``}``."""
    value = tile.get("regions", [])
    if not isinstance(value, list):
        problems.add(file, f"field 'regions' must be a list, got {type(value).__name__}", record)
        return None
    width, height = size
    regions = []
    for k, region in enumerate(value):
        where = f"{record}, region {k}"
        if not require_keys(region, {"box": list, "gcg_description": str, "polygons": list}, file, where, problems):
            return None
        box = region["box"]
        if not (len(box) == 4 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
                and 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            problems.add(file, f"'box' must be [x1, y1, x2, y2] pixels with 0 <= x1 < x2 <= {width} and "
                         f"0 <= y1 < y2 <= {height}, got {box!r}", where)
            return None
        caption = _grounded(region["gcg_description"], file, where, problems)
        masks = None if caption is None else _phrase_polygons(region["polygons"], caption.num_seg, size, file, where,
                                                                problems)
        if masks is None:
            return None
        regions.append(GCGRegion(tuple(float(v) for v in box), caption, masks))
    return tuple(regions)


def _phrase_rles(value: list, num_seg: int, size: tuple[int, int], file: Path, record: object,
                 problems: Problems) -> tuple[dict, ...] | None:
    """Validate ``segmentation[k]``: one COCO RLE per ``[SEG]``, sized like the image."""
    if len(value) != num_seg:
        problems.add(file, f"has {len(value)} segmentation entries but the caption has {num_seg} {SEG_TOKEN} "
                     "tokens (one RLE per [SEG] expected)", record)
        return None
    width, height = size
    rles = []
    for k, seg in enumerate(value):
        if not isinstance(seg, dict):
            problems.add(file, f"segmentation {k} must be a COCO RLE dict, got {type(seg).__name__}", record)
            return None
        rle = parse_coco_segmentation(seg, height, width, file, f"{record}, phrase {k}", problems)
        if rle is None:
            return None
        rles.append(rle)
    return tuple(rles)


def _resolve(path: str, json_file: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else json_file.parent / p


def _read_json(path: Path, problems: Problems, record: object | None = None) -> Any | None:
    try:
        return read_json(path)
    except DataFormatError as e:
        problems.add(e.file, e.message, record)
        return None


def _image(path: Path, file: Path, record: object, problems: Problems) -> tuple[int, int] | None:
    """``(width, height)`` of an existing, readable image, or ``None`` after reporting it."""
    if not check_exists(path, f"image referenced by {file.name}", problems, record):
        return None
    try:
        return image_size(path, record)
    except DataFormatError as e:
        problems.add(e.file, e.message, record)
        return None


# --- HF datasets and rs-data check ---------------------------------------------------------------------

def to_hf_dataset(samples: Sequence[GCGSample]):
    """A ``datasets.Dataset`` with one row per tile.

    Columns: ``image`` (``datasets.Image``, referenced by path), ``id`` (str), ``tile``, ``instruction``,
    ``markup``, ``caption``, ``phrases`` (list of str), ``width``, ``height`` and ``masks``: one
    compressed COCO RLE ``counts`` string per phrase, of size ``[height, width]``
    (decode with ``masks.rle_to_mask({"size": [height, width], "counts": s})``).
    """
    import datasets

    string = datasets.Value("string")
    features = datasets.Features({
        "image": datasets.Image(), "id": string, "tile": string, "instruction": string, "markup": string,
        "caption": string, "phrases": datasets.List(string), "width": datasets.Value("int32"),
        "height": datasets.Value("int32"), "masks": datasets.List(string),
    })
    rows = {name: [] for name in features}
    for s in samples:
        rows["image"].append(str(s.image_path))
        rows["id"].append(str(s.id))
        rows["tile"].append(s.name)
        rows["instruction"].append(s.instruction)
        rows["markup"].append(s.caption.markup)
        rows["caption"].append(s.caption.caption)
        rows["phrases"].append(list(s.caption.phrases))
        rows["width"].append(s.image_size[0])
        rows["height"].append(s.image_size[1])
        rows["masks"].append([mask_to_rle(m)["counts"] for m in s.phrase_masks()])
    return datasets.Dataset.from_dict(rows, features=features)


def detect(root: str | os.PathLike) -> bool:
    """Whether ``root`` looks like GeoPixelD: it has ``GeoPixelD.json``, or per-tile files (JSON objects
    with ``gcg_description``) in it or in one of its subdirectories."""
    root = Path(root)
    if (root / INDEX_NAME).is_file():
        return True
    if not root.is_dir():
        return False
    for directory in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        first = next((p for p in sorted(directory.glob("*.json")) if p.name != MANIFEST), None)
        if first is not None:
            try:
                tile = read_json(first)
            except DataFormatError:
                continue
            if isinstance(tile, dict) and "gcg_description" in tile:
                return True
    return False


def check(root: str | os.PathLike, problems: Problems) -> dict[str, int]:
    """Validate a GeoPixelD root for ``rs-data check``: through ``GeoPixelD.json`` when present, otherwise
    every per-tile directory (``root`` and its subdirectories holding ``*.json``).

    Returns counts: ``tiles``, ``phrases`` and ``group_phrases`` (phrases with more than one polygon part;
    RLE-only phrases are never counted as groups, their parts being unknown).
    """
    root = Path(root)
    if (root / INDEX_NAME).is_file():
        samples = read_geopixeld(root / INDEX_NAME, problems)
    elif not root.is_dir():
        problems.add(root, "missing GeoPixelD directory")
        samples = []
    else:
        dirs = [d for d in (root, *sorted(p for p in root.iterdir() if p.is_dir()))
                if any(p.name not in (INDEX_NAME, MANIFEST) for p in d.glob("*.json"))]
        samples = [s for d in dirs for s in read_tiles(d, problems)]
    return {
        "tiles": len(samples),
        "phrases": sum(len(s.masks) for s in samples),
        "group_phrases": sum(isinstance(m, list) and len(m) > 1 for s in samples for m in s.masks),
    }
