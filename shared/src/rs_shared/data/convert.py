"""Conversions between dataset formats, where one format's content makes sense in another (``rs-data
convert``). Each function reads with the strict reader of its source and writes with the target's writer."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .errors import DataFormatError, Problems
from .geometry import sort_quad_vertices


# --- scene classification ------------------------------------------------------------------------------

def folders_to_split(image_dir: str | os.PathLike, out_json: str | os.PathLike, p_train: float = 0.5,
                     p_val: float = 0.2, seed: int = 1) -> dict[str, int]:
    """A CoOp split JSON for a folder of class sub-folders (see :func:`.scene_cls.folder_to_split`)."""
    from .scene_cls import SPLITS, folder_to_split, write_split

    split = folder_to_split(image_dir, p_train, p_val, seed)
    write_split(out_json, split)
    return {name: len(split[name]) for name in SPLITS} | {"classes": split.num_classes}


# --- DOTA ----------------------------------------------------------------------------------------------

def dota_tiles(src: str | os.PathLike, out: str | os.PathLike, size: int = 1024, gap: int = 200,
               iof_thr: float = 0.7, classes: str = "DOTA-v1.0") -> dict[str, int]:
    """Tile every image of a DOTA dataset into overlapping ``size`` patches (DOTA devkit rule)."""
    from .common import as_array, read_image
    from .dota import CLASS_LISTS, read_dota, tile_sample, write_tiles

    samples = read_dota(src, CLASS_LISTS[classes])
    n_tiles = n_objects = 0
    for sample in samples:
        tiles = tile_sample(sample, as_array(read_image(sample.image_path, sample.name)), size, gap, iof_thr)
        write_tiles(out, tiles)
        n_tiles += len(tiles)
        n_objects += sum(len(t.labels) for t in tiles)
    return {"images": len(samples), "tiles": n_tiles, "objects": n_objects}


def detection_answer(quads: np.ndarray, labels: list[str]) -> str:
    """Plain-text detection answer, one object per line: ``x1,y1,x2,y2,x3,y3,x4,y4 class`` (integer pixels,
    vertices clockwise from the top-most one), sorted by (class name, y1, x1); ``There are none.`` when
    empty. Class names are written with ``-`` → space, as VLM detection data (RSCoVLM) does."""
    if len(labels) == 0:
        return "There are none."
    quads = np.rint(sort_quad_vertices(quads)).astype(int)
    names = [label.replace("-", " ") for label in labels]
    order = sorted(range(len(names)), key=lambda i: (names[i], quads[i, 1], quads[i, 0]))
    return "\n".join(",".join(map(str, quads[i])) + f" {names[i]}" for i in order)


def dota_to_sft(src: str | os.PathLike, out_json: str | os.PathLike, classes: str = "DOTA-v1.0") -> dict[str, int]:
    """One detection conversation per DOTA image: the user asks for every class of the class list, the
    assistant answers with :func:`detection_answer`. Coordinates are pixels of the original image, so the
    records say ``coords="pixel"``; a VLM pipeline rescales them to its resized frame."""
    from .conversations import Conversation, ImageItem, Message, TextItem, write_llava
    from .dota import CLASS_LISTS, read_dota

    class_list = CLASS_LISTS[classes]
    request = ("Detect every object of these classes and give one line per object as "
               "x1,y1,x2,y2,x3,y3,x4,y4 class: " + ", ".join(sorted(c.replace("-", " ") for c in class_list)) + ".")
    samples = read_dota(src, class_list)
    conversations = [
        Conversation(
            id=sample.name,
            messages=(Message("user", (ImageItem(0), TextItem(request))),
                      Message("assistant", (TextItem(detection_answer(sample.boxes.data, list(sample.labels))),))),
            images=(sample.image_path,), source=f"dota:{classes}", coords="pixel",
        )
        for sample in samples
    ]
    out_json = Path(out_json)
    write_llava(out_json, conversations, image_root=out_json.parent)
    return {"records": len(conversations), "objects": sum(len(s.labels) for s in samples)}


# --- GeoPixelD -> RRSIS-D ------------------------------------------------------------------------------

_SUFFIX = re.compile(r"-\d+$")


def phrase_category(phrase: str) -> str:
    """The category of a grounded phrase: the phrase without a leading article and numeric instance
    suffix (``"tennis court-2"`` → ``"tennis court"``, ``"the cars"`` → ``"cars"``)."""
    words = phrase.strip().split()
    if words and words[0].lower() in ("the", "a", "an"):
        words = words[1:]
    return _SUFFIX.sub("", " ".join(words)) or phrase.strip()


def geopixeld_to_rrsisd(src: str | os.PathLike, out: str | os.PathLike) -> dict[str, int]:
    """Every grounded phrase of a GeoPixelD dataset becomes a referring expression of its mask.

    Each tile becomes an RRSIS-D image; each phrase an annotation (its polygon parts) with one ref whose
    sentence is the phrase itself (instance suffixes kept, so the expression stays unique in the tile) and
    whose category is :func:`phrase_category`. Tiles under a ``test`` folder go to the test split, others
    to train. Phrases given as RLE only (no polygons) cannot be written as RRSIS-D polygons and stop the
    conversion with an error naming the tile.
    """
    from .common import as_array, read_image
    from .formats import BY_NAME
    from .refseg import RRSISDImage, RRSISDObject, write_rrsisd

    by_split = BY_NAME["geopixeld"].read(src)
    images, categories = [], {}
    for folder, samples in by_split.items():
        split = "test" if folder == "test" else "train"
        for sample in samples:
            objects = []
            for phrase, segmentation in zip(sample.caption.phrases, sample.masks, strict=True):
                if isinstance(segmentation, dict):
                    raise DataFormatError(sample.image_path, f"phrase {phrase!r} has only an RLE mask; "
                                          "RRSIS-D output needs polygons", sample.id)
                parts = [p for p in segmentation if len(p) >= 3]
                category = categories.setdefault(phrase_category(phrase), phrase_category(phrase))
                objects.append(RRSISDObject(category, parts, [phrase]))
            image = as_array(read_image(sample.image_path, sample.id))
            images.append(RRSISDImage(f"{folder}_{sample.name}.jpg", image, split, objects))
    write_rrsisd(out, images, sorted(categories))
    return {"images": len(images), "refs": sum(len(i.objects) for i in images), "categories": len(categories)}


# --- HF datasets (Arrow) ------------------------------------------------------------------------------

def to_arrow(src: str | os.PathLike, out: str | os.PathLike, problems: Problems | None = None) -> dict[str, int]:
    """Save any supported dataset as a ``datasets.DatasetDict`` (one Arrow dataset per split) at ``out``;
    load it back with ``datasets.load_from_disk(out)``. Images are embedded, so ``out`` is self-contained."""
    import importlib

    import datasets

    from .formats import detect_format

    fmt = detect_format(src)
    if fmt is None:
        raise DataFormatError(src, "no known dataset format here (run `rs-data check` for details)")
    module = importlib.import_module(fmt.module)
    by_split = fmt.read(src, problems)
    dataset = datasets.DatasetDict({split: module.to_hf_dataset(records) for split, records in by_split.items()})
    dataset.save_to_disk(os.fspath(out))  # embeds image files (datasets >= 3)
    return {split: len(records) for split, records in by_split.items()}
