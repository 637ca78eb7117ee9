"""``rs-data convert captions-to-geopixeld``: images plus one JSON file of captions whose phrases carry polygons →
the GeoPixelD layout that :mod:`rs_shared.data.gcg` reads (and CLV-Net trains on). One record per image::

    captions.json   [{"image": "images/0001.png",
                      "caption": "An airport with a runway. Two planes are parked beside a hangar.",
                      "phrases": [{"text": "Two planes", "polygons": [[x1, y1, x2, y2, …], [ …second plane… ]]},
                                  {"text": "a hangar", "polygons": [[x1, y1, x2, y2, …]]}],
                      "split": "train"},                                         ← optional, in every record or none
                     …]                                       (or JSON lines: one such object per line)
    →  <out>/GeoPixelD.json              index: instruction + grounded caption, image and polygon file per tile
       <out>/<split>/<tile>.png          the image (PNG)
       <out>/<split>/<tile>.json         {"id", "img", "gcg_description",
                                          "polygons": [phrase → [part → [[x, y], …]]]}

``polygons`` are COCO-style: a list of parts, each a flat ``[x1, y1, x2, y2, …]`` list of pixel coordinates (at least
three vertices); a phrase naming several objects ("two planes") lists one part per object. Each phrase's ``text``
must occur in the caption, after the previous phrase; it is marked up as ``<p> text </p> [SEG]`` there (GeoPixel's
markup). Vertices are rounded to whole pixels, as GeoPixelD stores them, and must lie inside the image (1 px
tolerance). Tiles are named after the image file's stem. Without a ``split`` field images are drawn into train and
test (:func:`.table.assign_splits`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..common import read_image, write_json
from ..errors import Problems
from ..gcg import GEOPIXEL_GCG_INSTRUCTION, INDEX_NAME, SEG_TOKEN, VERTEX_TOLERANCE, parse_grounded_caption
from ..masks import parse_coco_segmentation
from .table import staged_output, Row, assign_splits, read_table, safe_name

COLUMNS = ("image", "caption", "phrases")
MARKUP_PIECES = ("<", ">", SEG_TOKEN)


def _plain_text(row: Row, key: str, text: str) -> str:
    if any(piece in text for piece in MARKUP_PIECES) or "\n" in text:
        raise row.error(f"{key} {text!r:.60} must be plain one-line text without '<', '>' or {SEG_TOKEN!r}; the "
                        "converter writes the <p> … </p> [SEG] markup itself")
    return text


def grounded_markup(row: Row, size: tuple[int, int]) -> tuple[str, list[list[list[int]]]]:
    """The GeoPixelD caption markup of ``row`` and, per phrase, its polygon parts as ``[[x, y], …]`` integer
    vertices within the image ``size`` ``(W, H)``."""
    caption = _plain_text(row, "caption", row.text("caption"))
    phrases = row.values["phrases"]
    if not isinstance(phrases, list) or not phrases:
        raise row.error("field 'phrases' must be a non-empty list of "
                        "{\"text\": …, \"polygons\": [[x1, y1, …], …]}")
    width, height = size
    pieces, polygons, cursor = [], [], 0
    for k, phrase in enumerate(phrases):
        where = f"phrase {k}"
        if not isinstance(phrase, dict) or not isinstance(phrase.get("text"), str) or not phrase["text"].strip():
            raise row.error(f"{where} must be an object with non-empty 'text' and 'polygons'")
        text = _plain_text(row, f"{where} text", phrase["text"].strip())
        start = caption.find(text, cursor)
        if start < 0:
            after = "" if k == 0 else f" after phrase {k - 1} ({phrases[k - 1]['text'].strip()!r})"
            raise row.error(f"{where} {text!r} does not occur in the caption{after}; phrases must be parts of the "
                            "caption, in order")
        pieces += [caption[cursor:start], f"<p> {text} </p> {SEG_TOKEN}"]
        cursor = start + len(text)
        value = phrase.get("polygons")
        if not isinstance(value, list) or not value:
            raise row.error(f"{where}: 'polygons' must be a non-empty list of flat [x1, y1, x2, y2, …] polygons "
                            f"(one per object the phrase names), got {value!r:.60}")
        parts = parse_coco_segmentation(value, height, width, row.file, f"{row.where}, {where}", Problems())
        rounded = []
        for j, part in enumerate(parts):
            outside = (part < -VERTEX_TOLERANCE) | (part > np.array([width, height]) + VERTEX_TOLERANCE)
            if outside.any():
                vertex = part[outside.any(1)][0].tolist()
                raise row.error(f"{where}, polygon {j}: vertex {vertex} lies outside the {width}x{height} image")
            rounded.append(np.rint(part).astype(int).tolist())
        polygons.append(rounded)
    markup = "".join([*pieces, caption[cursor:]])
    problem = parse_grounded_caption(markup).grounding_problem()
    if problem is not None:
        raise row.error(problem)
    return markup, polygons


def captions_to_geopixeld(table: str | os.PathLike, out: str | os.PathLike, root: str | os.PathLike | None = None,
                          p_train: float = 0.8, p_val: float = 0.0, seed: int = 0) -> dict[str, int]:
    """Convert ``table`` (a JSON list or JSON lines of ``image``/``caption``/``phrases`` records; image paths
    relative to ``root``, default the table's folder) into a GeoPixelD dataset at the new directory ``out``.
    Returns the tiles per split and the number of phrases."""
    annotations = read_table(table, COLUMNS, json_only=True)
    root = Path(root) if root is not None else annotations.path.parent
    by_image: dict[str, list[Row]] = {}
    for row in annotations.rows:
        by_image.setdefault(str(row.path("image", root).resolve()), []).append(row)
    for rows in by_image.values():
        if len(rows) > 1:
            raise rows[1].error(f"image {rows[1].text('image')!r} already has a caption ({rows[0].where}); "
                                "GeoPixelD holds one grounded caption per image")
    splits = assign_splits(by_image, annotations.has_splits, p_train, p_val, seed)

    with staged_output(out) as staging:
        tiles: dict[tuple[str, str], Row] = {}
        index, counts = [], {"train": 0, "val": 0, "test": 0, "phrases": 0}
        for tile_id, (key, (row,)) in enumerate(by_image.items()):
            split, name = splits[key], safe_name(Path(key).stem)
            if (split, name) in tiles:
                raise row.error(f"its tile name {name!r} (from the image file name) is taken in split {split!r} by "
                                f"{tiles[split, name].where}; rename one image")
            tiles[split, name] = row
            image = read_image(row.path("image", root), row.record)
            markup, polygons = grounded_markup(row, image.size)
            (staging / split).mkdir(exist_ok=True)
            image.save(staging / split / f"{name}.png")
            write_json(staging / split / f"{name}.json",
                       {"id": tile_id, "img": f"{name}.png", "gcg_description": markup, "polygons": polygons})
            index.append({"id": tile_id, "conversations": [{"from": "human", "value": GEOPIXEL_GCG_INSTRUCTION},
                                                           {"from": "bot", "value": markup}],
                          "image": f"{split}/{name}.png", "polygons": f"{split}/{name}.json"})
            counts[split] += 1
            counts["phrases"] += len(polygons)
        write_json(staging / INDEX_NAME, index)
    return counts
