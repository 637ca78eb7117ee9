"""Writing the GeoPixelD layout of :mod:`rs_shared.data.gcg`: tiles (image, grounded caption, polygons, optional
box-conditioned regions) → ``<root>/<split>/<tile>.png`` + ``.json`` and the ``GeoPixelD.json`` index.

Everything written is first checked by the reader's own rules, so what this module writes always reads back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .common import read_json, write_json
from .errors import DataFormatError, Problems
from .gcg import GEOPIXEL_GCG_INSTRUCTION, INDEX_NAME, GCGRegion, _grounded, _phrase_polygons, _regions


@dataclass(frozen=True)
class GCGTile:
    """In-memory input of :func:`write_geopixeld`: one tile to be written.

    ``image`` is ``(H, W, 3)`` uint8; ``polygons[k]`` lists the parts of the ``k``-th phrase, each a
    ``(K, 2)`` array of integer ``[x, y]`` vertices. ``regions`` are box-conditioned captions (written as the
    per-tile file's ``regions``; their masks in the form of ``polygons``).
    """

    name: str
    image: np.ndarray
    markup: str
    polygons: Sequence[Sequence[np.ndarray]]
    instruction: str = GEOPIXEL_GCG_INSTRUCTION
    regions: Sequence[GCGRegion] = ()


def write_geopixeld(root: str | os.PathLike, tiles: Sequence[GCGTile], split: str = "train") -> Path:
    """Write ``tiles`` as ``<root>/<split>/<tile>.png`` + ``<tile>.json`` and list them in
    ``<root>/GeoPixelD.json`` (polygons variant; paths relative to ``root``). Returns the index path.

    Index entries of other splits already in the index are kept, entries of ``split`` are replaced (its
    old tile files are not deleted); new ids continue after the largest kept id.
    """
    root = Path(root)
    names = [t.name for t in tiles]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"tile names must be unique within a split; repeated: {repeated}")
    polygons = [_tile_polygons(tile, root / split / f"{tile.name}.json") for tile in tiles]
    index_path = root / INDEX_NAME
    existing = read_json(index_path) if index_path.is_file() else []
    if not isinstance(existing, list) or not all(isinstance(r, dict) and isinstance(r.get("image"), str)
                                                  and isinstance(r.get("id"), int) for r in existing):
        raise DataFormatError(index_path, "existing index must be a list of records with 'id' and 'image'")
    kept = [r for r in existing if not r["image"].startswith(f"{split}/")]
    next_id = max((r["id"] for r in kept), default=-1) + 1
    (root / split).mkdir(parents=True, exist_ok=True)
    records = []
    for tile_id, (tile, tile_polygons) in enumerate(zip(tiles, polygons), next_id):
        Image.fromarray(tile.image).save(root / split / f"{tile.name}.png")
        entry = {"id": tile_id, "img": f"{tile.name}.png", "gcg_description": tile.markup, **tile_polygons}
        write_json(root / split / f"{tile.name}.json", entry)
        records.append({
            "id": tile_id,
            "conversations": [{"from": "human", "value": tile.instruction}, {"from": "bot", "value": tile.markup}],
            "image": f"{split}/{tile.name}.png",
            "polygons": f"{split}/{tile.name}.json",
        })
    write_json(index_path, kept + records)
    return index_path


def _tile_polygons(tile: GCGTile, path: Path) -> dict[str, list]:
    """The JSON ``polygons`` (and ``regions``, when there are any) of ``tile``, after checking them by the reader's
    rules (so that they read back): raises ``ValueError`` (a :class:`DataFormatError` naming ``path`` for markup,
    box and polygon problems)."""
    if not tile.name or Path(tile.name).name != tile.name:
        raise ValueError(f"tile name {tile.name!r} must be a file stem without directories")
    image = np.asarray(tile.image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"tile {tile.name!r}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    strict = Problems()
    size = image.shape[1::-1]

    def checked(markup: str, polygons: Sequence[Sequence[np.ndarray]], record: str) -> list:
        caption = _grounded(markup, path, record, strict)
        value = [[np.asarray(part).tolist() for part in parts] for parts in polygons]
        masks = _phrase_polygons(value, caption.num_seg, size, path, record, strict)
        if not all(np.array_equal(part, np.round(part)) for parts in masks for part in parts):
            raise ValueError(f"tile {record!r}: polygon vertices must be integers (GeoPixelD stores int pixels)")
        return [[part.astype(int).tolist() for part in parts] for parts in masks]

    out = {"polygons": checked(tile.markup, tile.polygons, tile.name)}
    if tile.regions:
        out["regions"] = [{"box": [float(v) for v in r.box], "gcg_description": r.caption.markup,
                           "polygons": checked(r.caption.markup, r.masks, f"{tile.name}, region {k}")}
                          for k, r in enumerate(tile.regions)]
        _regions(out, size, path, tile.name, strict)  # the boxes, by the reader's rule
    return out


__all__ = ["GCGTile", "write_geopixeld"]
