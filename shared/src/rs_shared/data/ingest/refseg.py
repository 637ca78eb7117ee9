"""``rs-data convert masks-to-refsegrs``: images, one binary mask per referred object and a table of
``image,mask,expression`` rows → the RefSegRS layout that :mod:`rs_shared.data.refseg` reads (and ICIPNet trains
on)::

    refs.csv                       image,mask,expression[,split]
                                   images/0001.png,masks/0001_car.png,the red car left of the truck
                                   images/0001.png,masks/0001_car.png,the leftmost car
    →  <out>/images/<id>.tif               RGB tile (LZW, lossless)
       <out>/masks/<id>.tif                0/255 mask (LZW)
       <out>/output_phrase_<split>.txt     one "<id> <expression>" line per row, for train, val and test

A mask is a single-channel or colour picture with two values: 0 is background, the other value is the object
(0/1, 0/255 and palette PNGs all work; a JPEG mask has more grey levels and is refused). It must have its image's
size and must not be empty. Each (image, mask) pair becomes one RefSegRS id, ``<image stem>__<mask stem>``
(characters outside ``[A-Za-z0-9._-]`` become ``_``); an image with several referred objects is therefore written
once per object, as RefSegRS itself does. All rows of an image go to one split (see
:func:`.table.assign_splits`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..common import as_array, read_image
from .table import staged_output, SPLITS, Row, assign_splits, read_table, safe_name

COLUMNS = ("image", "mask", "expression")


def _expression(row: Row) -> str:
    text = row.text("expression")
    if "\n" in text or "\r" in text:
        raise row.error("field 'expression' must be one line of text")
    return text


def _mask(row: Row, path: Path, size: tuple[int, int]) -> np.ndarray:
    """The ``(H, W)`` bool object mask of ``path``, checked against the image ``size`` ``(W, H)``."""
    values = as_array(read_image(path, row.record, mode="L"))
    levels = np.unique(values)
    if len(levels) > 2:
        raise row.error(f"mask {path.name} has {len(levels)} grey levels; expected a binary mask (0 = background "
                        "and one object value). Save masks losslessly (PNG), not as JPEG")
    if values.shape[::-1] != size:
        raise row.error(f"mask {path.name} is {values.shape[1]}x{values.shape[0]} pixels but its image is "
                        f"{size[0]}x{size[1]}")
    if levels.max() == 0:
        raise row.error(f"mask {path.name} is empty (all pixels 0); expected the referred object's pixels non-zero")
    return values > 0


def masks_to_refsegrs(table: str | os.PathLike, out: str | os.PathLike, root: str | os.PathLike | None = None,
                      p_train: float = 0.7, p_val: float = 0.1, seed: int = 0) -> dict[str, int]:
    """Convert ``table`` (CSV/TSV/JSON/JSON lines with ``image``, ``mask`` and ``expression``; paths relative to
    ``root``, default the table's folder) into a RefSegRS dataset at the new directory ``out``. Returns the
    expressions per split and the numbers of images and objects (ids)."""
    annotations = read_table(table, COLUMNS)
    root = Path(root) if root is not None else annotations.path.parent
    by_image: dict[Path, list[Row]] = {}
    ids: dict[tuple[Path, Path], str] = {}
    owners: dict[str, Row] = {}
    for row in annotations.rows:
        _expression(row)
        image, mask = row.path("image", root).resolve(), row.path("mask", root).resolve()
        by_image.setdefault(image, []).append(row)
        if (image, mask) not in ids:
            ident = safe_name(f"{image.stem}__{mask.stem}")
            if ident in owners:
                raise row.error(f"its image and mask give the id {ident!r}, as a different pair does on "
                                f"{owners[ident].where}; rename one of the files")
            ids[image, mask], owners[ident] = ident, row
    splits = assign_splits({str(k): v for k, v in by_image.items()}, annotations.has_splits, p_train, p_val, seed)

    with staged_output(out) as staging:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        lines: dict[str, list[str]] = {s: [] for s in SPLITS}
        written = set()
        for image_path, rows in by_image.items():
            image = read_image(image_path, rows[0].record)
            for row in rows:
                ident = ids[image_path, row.path("mask", root).resolve()]
                if ident not in written:
                    mask = _mask(row, row.path("mask", root), image.size)
                    image.save(staging / "images" / f"{ident}.tif", compression="tiff_lzw")
                    Image.fromarray(mask.astype(np.uint8) * 255, "L").save(staging / "masks" / f"{ident}.tif",
                                                                           compression="tiff_lzw")
                    written.add(ident)
                lines[splits[str(image_path)]].append(f"{ident} {_expression(row)}\n")
        for split, split_lines in lines.items():
            (staging / f"output_phrase_{split}.txt").write_text("".join(split_lines), encoding="utf-8")
    return {s: len(lines[s]) for s in SPLITS} | {"images": len(by_image), "objects": len(ids)}
