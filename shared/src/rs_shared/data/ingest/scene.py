"""``rs-data convert labels-to-scene``: a folder of images plus a table of ``image,label`` rows → the CoOp scene
classification layout that :mod:`rs_shared.data.scene_cls` reads (and BiMoRS / CoOp loaders expect)::

    labels.csv                     image,label[,split]
                                   images/0001.jpg,airport
                                   images/0002.jpg,forest
    →  <out>/images/<label>/<file>     copies of the images, one folder per class
       <out>/<name>.json               {"train"|"val"|"test": [[<label>/<file>, label index, label], …]}

Class indices follow the sorted class names (CoOp's rule for a folder per class). Without a ``split`` column the
split is :func:`rs_shared.data.scene_cls.folder_to_split`'s: per class, a seeded shuffle of the sorted file names,
``p_train`` train, ``p_val`` val, the rest test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..common import image_size
from ..scene_cls import IMAGE_EXTENSIONS, SPLITS, SceneSample, SceneSplit, folder_to_split, write_split
from .table import staged_output, Row, read_table

COLUMNS = ("image", "label")


def _class_folder(row: Row) -> str:
    label = row.text("label")
    if label in (".", "..") or set(label) & set("/\\"):
        raise row.error(f"label {label!r} must be usable as a folder name (no '/' or '\\', not '.' or '..')")
    return label


def labels_to_scene(table: str | os.PathLike, out: str | os.PathLike, root: str | os.PathLike | None = None,
                    p_train: float = 0.5, p_val: float = 0.2, seed: int = 1,
                    name: str | None = None) -> dict[str, int]:
    """Convert ``table`` (CSV/TSV/JSON/JSON lines with ``image`` and ``label``; paths relative to ``root``,
    default the table's folder) into a scene dataset at the new directory ``out``; the split JSON is
    ``<out>/<name>.json`` (``name`` defaults to ``out``'s folder name in lower case). Returns split and class counts.
    """
    annotations = read_table(table, COLUMNS)
    root = Path(root) if root is not None else annotations.path.parent
    if not 0 < p_train or not 0 <= p_val or not p_train + p_val < 1:
        raise ValueError(f"need 0 < p_train, 0 <= p_val and p_train + p_val < 1, got {p_train}, {p_val}")
    name = name or Path(out).resolve().name.lower()
    sources: dict[Path, Row] = {}
    targets: dict[str, Row] = {}
    planned = []
    for row in annotations.rows:
        label = _class_folder(row)
        source = row.path("image", root)
        if source.suffix.lower() not in IMAGE_EXTENSIONS:
            raise row.error(f"image {source.name!r} must have one of the extensions {sorted(IMAGE_EXTENSIONS)}")
        if source.resolve() in sources:
            raise row.error(f"image {source} is listed again (first by {sources[source.resolve()].where}); a scene "
                            "classification image has one label")
        sources[source.resolve()] = row
        rel = f"{label}/{source.name}"
        if rel in targets:
            raise row.error(f"two images of class {label!r} are named {source.name!r} (the other is "
                            f"{targets[rel].where}); rename one")
        targets[rel] = row
        image_size(source, row.record)  # exists and is a readable image
        planned.append((source, rel, row))

    with staged_output(out) as staging:
        for source, rel, _ in planned:
            (staging / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / "images" / rel)
        if annotations.has_splits:
            classnames = tuple(sorted({rel.split("/")[0] for _, rel, _ in planned}))
            by_split: dict[str, list[SceneSample]] = {s: [] for s in SPLITS}
            for _, rel, row in planned:
                label = rel.split("/")[0]
                by_split[row.split()].append(SceneSample(staging / "images" / rel, classnames.index(label), label, rel))
            split = SceneSplit(*(tuple(by_split[s]) for s in SPLITS), classnames)
        else:
            split = folder_to_split(staging / "images", p_train, p_val, seed)
        write_split(staging / f"{name}.json", split)
    return {s: len(split[s]) for s in SPLITS} | {"classes": split.num_classes}
