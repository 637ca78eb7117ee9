"""Referring remote-sensing segmentation: RRSIS-D (REFER layout) and RefSegRS.

A sample is one (image, referring expression, binary mask) triplet, :class:`RefSegSample`.

**RRSIS-D** (read through a REFER-style API by the official RMSIN/ICIPNet loader), under ``root``::

    rrsisd/refs(unc).p                     pickle: list of ref dicts
    rrsisd/instances.json                  COCO: images, annotations, categories
    images/rrsisd/JPEGImages/<file_name>   800 x 800 JPEG tiles

A ref dict holds ``ref_id``, ``ann_id``, ``image_id``, ``category_id``, ``split`` (``train``/``val``/
``test``) and ``sentences`` (dicts with ``raw``, ``sent``, ``tokens``, ``sent_id``). Its mask is the
segmentation of annotation ``ann_id``: flat COCO polygons ``[x1, y1, x2, y2, ...]`` or one RLE dict.
One record is made per (ref, sentence); the expression is the sentence's ``raw`` text, which is what the
official loader tokenises. Training draws one random expression per ref and evaluation uses every one:
:func:`group_by_ref` gives the groups.

**RefSegRS**, under ``root``::

    images/<id>.tif   masks/<id>.tif   output_phrase_{train,val,test}.txt

Each non-blank line of a phrase file is ``<id> <expression ...>`` (the first space separates the id) and
is one sample. Masks are read as 8-bit greyscale with foreground ``value > 50``; images are converted to
RGB. A RefSegRS record's ``ref_id`` and ``sent_id`` are its 1-based line number in the split file.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from .common import RecordDataset, as_array, atomic_path, image_size, read_image, read_json, require_keys, write_json
from .errors import DataFormatError, Problems
from .safe_pickle import safe_pickle_load
from .masks import parse_coco_segmentation, polygons_to_mask, rle_to_mask

SPLITS = ("train", "val", "test")
REFSEGRS_THRESHOLD = 50  # RefSegRS mask pixels above this value are foreground
Overlap = Literal["union", "official"]


# --- records --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CocoMask:
    """Mask source of an RRSIS-D record: a validated COCO segmentation, rasterised by :meth:`decode`.

    Exactly one of ``polygons`` (flat ``(x1, y1, x2, y2, ...)`` parts in pixels, >= 3 vertices each) and
    ``rle`` (a COCO RLE dict) is set. ``overlap`` says how parts combine: ``"union"`` keeps every pixel
    inside any part; ``"official"`` reproduces the REFER/RMSIN loader, which sums the part masks and
    keeps pixels equal to 1, so where two parts overlap the mask is background.
    """

    height: int
    width: int
    polygons: tuple[tuple[float, ...], ...] = ()
    rle: dict | None = None
    overlap: Overlap = "union"

    def decode(self) -> np.ndarray:
        """``(height, width)`` bool mask."""
        if self.rle is not None:
            return rle_to_mask(self.rle)  # a single part: both rules agree
        if self.overlap == "union":
            return polygons_to_mask([np.reshape(p, (-1, 2)) for p in self.polygons], self.height, self.width)
        rles = coco_mask.frPyObjects([list(p) for p in self.polygons], self.height, self.width)
        return coco_mask.decode(rles).sum(axis=2).astype(np.uint8) == 1


@dataclass(frozen=True)
class MaskFile:
    """Mask source of a RefSegRS record: a mask image read as 8-bit greyscale, foreground ``value > 50``."""

    path: Path

    def decode(self) -> np.ndarray:
        """``(H, W)`` bool mask."""
        return as_array(read_image(self.path, mode="L")) > REFSEGRS_THRESHOLD


@dataclass(frozen=True)
class RefSegSample:
    """One (image, expression, mask) sample; pixels are read by :meth:`load`.

    ``ref_id`` identifies the referred object (RRSIS-D ref, RefSegRS line), ``sent_id`` the expression,
    ``image_id`` the image (RRSIS-D COCO id, RefSegRS file stem). ``ann_id`` and ``category`` are set for
    RRSIS-D only.
    """

    image_path: Path
    expression: str
    ref_id: int
    sent_id: int
    split: str
    image_id: int | str
    mask: CocoMask | MaskFile
    ann_id: int | None = None
    category: str | None = None

    def load(self) -> dict[str, Any]:
        """``{"image": (H, W, 3) uint8, "mask": (H, W) bool, "expression": str, "ref_id": int,
        "sent_id": int}``; an image whose size differs from its mask raises :class:`DataFormatError`."""
        record = f"ref_id {self.ref_id}"
        image = as_array(read_image(self.image_path, record))
        try:
            mask = self.mask.decode()
        except DataFormatError as e:
            raise DataFormatError(e.file, e.message, record) from None
        if mask.shape != image.shape[:2]:
            raise DataFormatError(self.image_path, f"image is {image.shape[1]}x{image.shape[0]} pixels but its "
                                  f"mask is {mask.shape[1]}x{mask.shape[0]}", record)
        return {"image": image, "mask": mask, "expression": self.expression, "ref_id": self.ref_id,
                "sent_id": self.sent_id}


def group_by_ref(records: Sequence[RefSegSample]) -> list[list[RefSegSample]]:
    """Records grouped by referred object (same split and ``ref_id``), in order of first appearance."""
    groups: dict[tuple[str, int], list[RefSegSample]] = {}
    for r in records:
        groups.setdefault((r.split, r.ref_id), []).append(r)
    return list(groups.values())


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# --- RRSIS-D --------------------------------------------------------------------------------------------

def _rrsisd_paths(root: Path) -> tuple[Path, Path, Path]:
    return root / "rrsisd" / "refs(unc).p", root / "rrsisd" / "instances.json", root / "images" / "rrsisd" / "JPEGImages"


def _label(index: int | str, obj: object, key: str) -> str:
    """``"3 (ref_id 12)"``: the record index plus its id when the record has one."""
    if isinstance(obj, dict) and key in obj:
        return f"{index} ({key} {obj[key]!r})"
    return str(index)


_REF_KEYS = {"ref_id": int, "ann_id": int, "image_id": int, "category_id": int, "split": str, "sentences": list}
_IMAGE_KEYS = {"id": int, "file_name": str, "height": int, "width": int}
_ANN_KEYS = {"id": int, "image_id": int, "category_id": int, "segmentation": (list, dict)}


def _index_instances(data: object, path: Path, problems: Problems):
    """``images`` (id -> entry), ``categories`` (id -> name) and ``annotations`` (id -> (index, raw dict)).
    Annotations are validated later, only when a ref uses them."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        raise DataFormatError(path, "expected a COCO object with lists 'images', 'annotations' and 'categories'")
    images: dict[int, dict] = {}
    for j, img in enumerate(data["images"]):
        rec = _label(f"images[{j}]", img, "id")
        if not require_keys(img, _IMAGE_KEYS, path, rec, problems):
            continue
        if img["height"] <= 0 or img["width"] <= 0:
            problems.add(path, f"height and width must be positive, got {img['height']}x{img['width']}", rec)
        elif img["id"] in images:
            problems.add(path, f"duplicate image id {img['id']}", rec)
        else:
            images[img["id"]] = img
    categories: dict[int, str] = {}
    for j, cat in enumerate(data["categories"]):
        if require_keys(cat, {"id": int, "name": str}, path, _label(f"categories[{j}]", cat, "id"), problems):
            categories[cat["id"]] = cat["name"]
    annotations: dict[int, tuple[int, dict]] = {}
    for j, ann in enumerate(data["annotations"]):
        if require_keys(ann, {"id": int}, path, f"annotations[{j}]", problems):
            if ann["id"] in annotations:
                problems.add(path, f"duplicate annotation id {ann['id']}", f"annotations[{j}]")
            else:
                annotations[ann["id"]] = (j, ann)
    return images, categories, annotations


def _read_rrsisd(root: Path, splits: Sequence[str], problems: Problems, overlap: Overlap) -> dict[str, list]:
    if overlap not in ("union", "official"):
        raise ValueError(f"overlap must be 'union' or 'official', got {overlap!r}")
    refs_path, inst_path, image_dir = _rrsisd_paths(root)
    images, categories, annotations = _index_instances(read_json(inst_path), inst_path, problems)
    refs = safe_pickle_load(refs_path)
    if not isinstance(refs, list):
        raise DataFormatError(refs_path, f"expected a list of ref dicts, got {type(refs).__name__}")

    masks: dict[int, CocoMask | None] = {}  # per annotation id, validated once
    image_ok: dict[int, bool] = {}  # per image id: the file exists

    def ann_mask(ann_id: int) -> CocoMask | None:
        if ann_id not in masks:
            j, ann = annotations[ann_id]
            rec, masks[ann_id] = _label(f"annotations[{j}]", ann, "id"), None
            if not require_keys(ann, _ANN_KEYS, inst_path, rec, problems):
                return None
            img = images.get(ann["image_id"])
            if img is None:
                problems.add(inst_path, f"image_id {ann['image_id']} is not in 'images'", rec)
                return None
            seg = parse_coco_segmentation(ann["segmentation"], img["height"], img["width"], inst_path, rec, problems)
            if isinstance(seg, dict):
                masks[ann_id] = CocoMask(img["height"], img["width"], rle=seg, overlap=overlap)
            elif seg is not None:
                polygons = tuple(tuple(p.reshape(-1).tolist()) for p in seg)
                masks[ann_id] = CocoMask(img["height"], img["width"], polygons=polygons, overlap=overlap)
        return masks[ann_id]

    out: dict[str, list[RefSegSample]] = {s: [] for s in splits}
    for i, ref in enumerate(refs):
        rec = _label(i, ref, "ref_id")
        if not require_keys(ref, _REF_KEYS, refs_path, rec, problems):
            continue
        split = ref["split"] if ref["split"] in ("train", "val") else "test" if "test" in ref["split"] else None
        if split is None:
            problems.add(refs_path, f"split {ref['split']!r} is neither 'train', 'val' nor a 'test' split", rec)
            continue
        if split not in out:
            continue
        if (message := _missing_link(ref, images, categories, annotations)) is not None:
            problems.add(refs_path, message, rec)
            continue
        if (mask := ann_mask(ref["ann_id"])) is None:
            continue
        ann = annotations[ref["ann_id"]][1]
        if (ann["image_id"], ann["category_id"]) != (ref["image_id"], ref["category_id"]):
            problems.add(refs_path, f"annotation {ref['ann_id']} has image_id {ann['image_id']} and category_id "
                         f"{ann['category_id']}; the ref says {ref['image_id']} and {ref['category_id']}", rec)
            continue
        sentences = _parse_sentences(ref["sentences"], refs_path, rec, problems)
        image = images[ref["image_id"]]
        image_path = image_dir / image["file_name"]
        if image["id"] not in image_ok:
            image_ok[image["id"]] = image_path.is_file()
            if not image_ok[image["id"]]:
                problems.add(image_path, "image file is missing", f"image_id {image['id']}")
        if sentences is None or not image_ok[image["id"]]:
            continue
        out[split].extend(
            RefSegSample(image_path, text, ref["ref_id"], sent_id, split, image["id"], mask,
                         ann_id=ref["ann_id"], category=categories[ref["category_id"]])
            for sent_id, text in sentences
        )
    return out


def _missing_link(ref: dict, images: dict, categories: dict, annotations: dict) -> str | None:
    """What a ref points to that instances.json lacks, or ``None``."""
    if ref["category_id"] not in categories:
        return f"category_id {ref['category_id']} is not in instances.json categories (unknown class)"
    if ref["image_id"] not in images:
        return f"image_id {ref['image_id']} is not a valid image of instances.json"
    if ref["ann_id"] not in annotations:
        return f"ann_id {ref['ann_id']} is not an annotation of instances.json"
    return None


def _parse_sentences(value: list, file: Path, record: str, problems: Problems) -> list[tuple[int, str]] | None:
    """``(sent_id, raw text)`` of each sentence dict, or ``None`` after reporting a problem."""
    if not value:
        problems.add(file, "'sentences' is empty; expected at least one referring expression", record)
        return None
    out = []
    for k, s in enumerate(value):
        if not require_keys(s, {"raw": str, "sent_id": int}, file, f"{record} sentence {k}", problems):
            return None
        if not s["raw"].strip():
            problems.add(file, "sentence 'raw' is empty", f"{record} sentence {k}")
            return None
        out.append((s["sent_id"], s["raw"]))
    return out


def read_rrsisd(root: str | os.PathLike, split: str, problems: Problems | None = None,
                overlap: Overlap = "union") -> list[RefSegSample]:
    """Records of one RRSIS-D split (``train``: ``split == "train"``, ``val``: ``== "val"``, ``test``:
    ``"test" in split``), one per (ref, sentence), in file order.

    ``overlap="official"`` reproduces the official mask rule (see :class:`CocoMask`); ``"union"`` is the
    geometric one. Every ref is validated: field types, known category, existing annotation and image,
    annotation of that image, non-empty sentences, valid segmentation, image file present.
    """
    _check_split(split)
    return _read_rrsisd(Path(root), (split,), Problems() if problems is None else problems, overlap)[split]


# --- RefSegRS -------------------------------------------------------------------------------------------

def read_refsegrs(root: str | os.PathLike, split: str, problems: Problems | None = None) -> list[RefSegSample]:
    """Records of ``output_phrase_<split>.txt``, one per non-blank line.

    Lines with no expression, a missing image or mask, or a mask whose size differs from the image are
    reported (naming the line and id) and skipped.
    """
    _check_split(split)
    problems = Problems() if problems is None else problems
    root = Path(root)
    path = root / f"output_phrase_{split}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "split file is missing") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not UTF-8 text: {e}") from None
    pair_ok: dict[str, bool] = {}
    out = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        image_id, _, expression = line.rstrip("\r").partition(" ")
        expression = expression.strip()
        rec = f"line {lineno} (id {image_id!r})"
        if not image_id or "/" in image_id or "\\" in image_id:
            problems.add(path, "expected '<id> <expression>' with a file stem as id", rec)
            continue
        if not expression:
            problems.add(path, "empty expression; expected '<id> <expression>'", rec)
            continue
        if image_id not in pair_ok:
            pair_ok[image_id] = _check_refsegrs_pair(root, image_id, problems)
        if pair_ok[image_id]:
            out.append(RefSegSample(root / "images" / f"{image_id}.tif", expression, lineno, lineno, split,
                                    image_id, MaskFile(root / "masks" / f"{image_id}.tif")))
    return out


def _check_refsegrs_pair(root: Path, image_id: str, problems: Problems) -> bool:
    record = f"id {image_id!r}"
    try:
        size = image_size(root / "images" / f"{image_id}.tif", record)
        mask_size = image_size(root / "masks" / f"{image_id}.tif", record)
    except DataFormatError as e:
        problems.add(e.file, e.message, e.record)
        return False
    if mask_size != size:
        problems.add(root / "masks" / f"{image_id}.tif", f"mask is {mask_size[0]}x{mask_size[1]} pixels but the "
                     f"image is {size[0]}x{size[1]}", record)
        return False
    return True


# --- writers --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RefSegRSItem:
    """One RefSegRS line to write: tile ``image_id`` with its ``(H, W, 3)`` uint8 image, ``(H, W)`` bool
    mask and one expression. Items may share a tile (same id, same pixels) with different expressions."""

    image_id: str
    image: np.ndarray
    mask: np.ndarray
    expression: str


@dataclass(frozen=True)
class RRSISDObject:
    """One annotated instance: ``polygons`` are its parts, each ``(K, 2)`` pixel vertices with K >= 3; each
    of its ``expressions`` becomes a sentence of one ref (no expressions: an annotation without a ref)."""

    category: str
    polygons: Sequence[np.ndarray]
    expressions: Sequence[str]


@dataclass(frozen=True)
class RRSISDImage:
    """One RRSIS-D image (``(H, W, 3)`` uint8) with its objects; all its refs go to ``split``."""

    file_name: str
    image: np.ndarray
    split: str
    objects: Sequence[RRSISDObject]


def _check_expression(text: str) -> None:
    if not text.strip() or text != text.strip() or "\n" in text or "\r" in text:
        raise ValueError(f"expression must be non-empty single-line text without outer spaces, got {text!r}")


def _check_image(image: np.ndarray, what: str) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")


def write_refsegrs(root: str | os.PathLike, samples_by_split: Mapping[str, Sequence[RefSegRSItem]]) -> None:
    """Write the RefSegRS layout: RGB TIFF tiles, 8-bit 0/255 TIFF masks (both LZW, lossless) and one
    phrase file per split in ``samples_by_split``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    written: dict[str, RefSegRSItem] = {}
    for split, items in samples_by_split.items():
        _check_split(split)
        lines = []
        for item in items:
            _check_expression(item.expression)
            if not item.image_id or any(c in item.image_id for c in " /\\\n"):
                raise ValueError(f"image_id must be a file stem without spaces, got {item.image_id!r}")
            _check_image(item.image, item.image_id)
            if item.mask.shape != item.image.shape[:2]:
                raise ValueError(f"{item.image_id}: mask {item.mask.shape} differs from image {item.image.shape}")
            prev = written.get(item.image_id)
            if prev is None:
                Image.fromarray(item.image, "RGB").save(root / "images" / f"{item.image_id}.tif",
                                                        compression="tiff_lzw")
                Image.fromarray(item.mask.astype(np.uint8) * 255, "L").save(root / "masks" / f"{item.image_id}.tif",
                                                                            compression="tiff_lzw")
                written[item.image_id] = item
            elif not (np.array_equal(prev.image, item.image) and np.array_equal(prev.mask, item.mask)):
                raise ValueError(f"image_id {item.image_id!r} is used for two different images or masks")
            lines.append(f"{item.image_id} {item.expression}\n")
        with atomic_path(root / f"output_phrase_{split}.txt") as tmp:
            tmp.write_text("".join(lines), encoding="utf-8")


def write_rrsisd(root: str | os.PathLike, images: Sequence[RRSISDImage], categories: Sequence[str]) -> None:
    """Write the RRSIS-D layout: ``instances.json``, ``refs(unc).p`` and the JPEG tiles (quality 95).

    Ids: category ``k`` of ``categories`` gets id ``k + 1``; images and annotations are numbered from 1
    in order, refs and sentences from 0 (as in REFER). Each object becomes an annotation with flat
    polygon parts, its vertex-extent ``bbox`` (xywh) and ``area`` (rasterised pixel count); each object
    with expressions becomes one ref whose sentences have ``raw`` = the expression, ``tokens`` = its
    lower-cased words and ``sent`` = the tokens joined by spaces. The pickle holds only dicts, lists,
    str and int (protocol 2), so it loads with :func:`safe_pickle_load` and in Python 2.
    """
    root = Path(root)
    refs_path, inst_path, image_dir = _rrsisd_paths(root)
    image_dir.mkdir(parents=True, exist_ok=True)
    category_ids = {name: k + 1 for k, name in enumerate(categories)}
    coco_images, annotations, refs, file_names, n_sentences = [], [], [], set(), 0
    for image_id, entry in enumerate(images, 1):
        _check_split(entry.split)
        _check_image(entry.image, entry.file_name)
        if entry.file_name in file_names:
            raise ValueError(f"duplicate file_name {entry.file_name!r}")
        file_names.add(entry.file_name)
        h, w = entry.image.shape[:2]
        Image.fromarray(entry.image, "RGB").save(image_dir / entry.file_name, format="JPEG", quality=95)
        coco_images.append({"id": image_id, "file_name": entry.file_name, "height": h, "width": w})
        for obj in entry.objects:
            if obj.category not in category_ids:
                raise ValueError(f"{entry.file_name}: category {obj.category!r} is not in categories")
            parts = [np.asarray(p, dtype=np.float64) for p in obj.polygons]
            if not parts or any(p.ndim != 2 or p.shape[0] < 3 or p.shape[1] != 2 for p in parts):
                raise ValueError(f"{entry.file_name}: polygons must be (K, 2) vertex arrays with K >= 3")
            vertices = np.concatenate(parts)
            (x0, y0), (x1, y1) = vertices.min(axis=0), vertices.max(axis=0)
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_ids[obj.category],
                   "segmentation": [p.reshape(-1).tolist() for p in parts],
                   "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                   "area": int(polygons_to_mask(parts, h, w).sum()), "iscrowd": 0}
            annotations.append(ann)
            if not obj.expressions:
                continue
            sentences = []
            for text in obj.expressions:
                _check_expression(text)
                tokens = text.lower().split()
                sentences.append({"raw": text, "sent": " ".join(tokens), "tokens": tokens, "sent_id": n_sentences})
                n_sentences += 1
            refs.append({"ref_id": len(refs), "ann_id": ann["id"], "image_id": image_id,
                         "category_id": ann["category_id"], "split": entry.split, "sentences": sentences,
                         "sent_ids": [s["sent_id"] for s in sentences]})
    write_json(inst_path, {"images": coco_images, "annotations": annotations,
                           "categories": [{"id": i, "name": n} for n, i in category_ids.items()]})
    with atomic_path(refs_path) as tmp:
        tmp.write_bytes(pickle.dumps(refs, protocol=2))


# --- datasets, conversion, detection --------------------------------------------------------------------

class RefSegDataset(RecordDataset):
    """Torch dataset over :class:`RefSegSample` records: item ``i`` is ``transform(records[i].load())``,
    one item per (ref, expression). Training code that wants one random expression per ref samples
    groups from :func:`group_by_ref` instead."""

    @classmethod
    def from_root(cls, root: str | os.PathLike, split: str, transform: Callable[[dict], Any] | None = None,
                  overlap: Overlap = "union") -> RefSegDataset:
        """Read ``split`` of the RRSIS-D or RefSegRS dataset found at ``root`` (strict validation)."""
        if detect_rrsisd(root):
            return cls(read_rrsisd(root, split, overlap=overlap), transform)
        if detect_refsegrs(root):
            return cls(read_refsegrs(root, split), transform)
        raise DataFormatError(root, "neither an RRSIS-D nor a RefSegRS dataset layout")


def to_hf_dataset(records: Sequence[RefSegSample]):
    """A ``datasets.Dataset`` with columns ``image`` (RGB PNG), ``mask`` (1-bit PNG, decodes to a bool
    array), ``expression``, ``ref_id``, ``sent_id``, ``image_id`` (as str), ``ann_id``, ``category`` and
    ``split``. Pixels are those of :meth:`RefSegSample.load`, stored losslessly."""
    import datasets

    features = datasets.Features({
        "image": datasets.Image(), "mask": datasets.Image(), "expression": datasets.Value("string"),
        "ref_id": datasets.Value("int64"), "sent_id": datasets.Value("int64"),
        "image_id": datasets.Value("string"), "ann_id": datasets.Value("int64"),
        "category": datasets.Value("string"), "split": datasets.Value("string"),
    })
    return datasets.Dataset.from_generator(_hf_rows, features=features, gen_kwargs={"records": list(records)})


def _hf_rows(records: list[RefSegSample]):
    for r in records:
        sample = r.load()
        yield {"image": Image.fromarray(sample["image"], "RGB"), "mask": Image.fromarray(sample["mask"]),
               "expression": r.expression, "ref_id": r.ref_id, "sent_id": r.sent_id, "image_id": str(r.image_id),
               "ann_id": r.ann_id, "category": r.category, "split": r.split}


def detect_rrsisd(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds the RRSIS-D annotation files."""
    refs_path, inst_path, _ = _rrsisd_paths(Path(root))
    return refs_path.is_file() and inst_path.is_file()


def detect_refsegrs(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds the RefSegRS folders and at least one phrase file."""
    root = Path(root)
    return ((root / "images").is_dir() and (root / "masks").is_dir()
            and any((root / f"output_phrase_{s}.txt").is_file() for s in SPLITS))


def check(root: str | os.PathLike, problems: Problems) -> dict[str, int]:
    """Validate every split of the RRSIS-D or RefSegRS dataset at ``root`` (for ``rs-data check``).

    Returns sample counts per split (``{"train": n, "val": n, "test": n}``), plus ref counts
    (``"train_refs"``, ...) for RRSIS-D. Whole-file problems (truncated JSON, malicious pickle, missing
    split file) are reported through ``problems`` like record problems.
    """
    root = Path(root)
    if detect_rrsisd(root):
        try:
            by_split = _read_rrsisd(root, SPLITS, problems, "union")
        except DataFormatError as e:
            problems.add(e.file, e.message, e.record)
            return {}
        counts = {s: len(v) for s, v in by_split.items()}
        return counts | {f"{s}_refs": len(group_by_ref(v)) for s, v in by_split.items()}
    if detect_refsegrs(root):
        counts = {}
        for s in SPLITS:
            try:
                counts[s] = len(read_refsegrs(root, s, problems))
            except DataFormatError as e:
                problems.add(e.file, e.message, e.record)
        return counts
    problems.add(root, "neither an RRSIS-D nor a RefSegRS dataset layout")
    return {}
