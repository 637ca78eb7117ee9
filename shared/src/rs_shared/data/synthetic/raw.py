"""Synthetic scenes laid out the way a researcher's own data usually arrives — a folder of images plus one
annotation file — as the input of the ``rs-data convert`` converters of :mod:`rs_shared.data.ingest`. Tests and the
package READMEs' "own data" guides use it to run those converters end to end without real data.

:func:`write_raw` writes under ``out``:

* ``scene``  — ``images/S00000.png`` … and ``labels.csv`` (``image,label``)
* ``refseg`` — ``images/``, ``masks/<image>_<object>.png`` (0/255) and ``refs.csv`` (``image,mask,expression``);
  about half the images have a second referred object, so one image carries several masks
* ``gcg``    — ``images/`` and ``captions.json`` (``image``, plain ``caption``, ``phrases`` with COCO polygons)
* ``sft``    — ``images/`` and ``qa.jsonl`` (``image,question,answer``; several pairs per image)
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..gcg import parse_grounded_caption
from .export import DEFAULT_SIZE, sample_seed
from .language import grounded_caption, qa_pairs, referring_expression
from .scene import OBJECT_SCENE_CLASSES, SCENE_CLASSES, make_referring_scene, make_scene

TABLES = {"scene": "labels.csv", "refseg": "refs.csv", "gcg": "captions.json", "sft": "qa.jsonl"}


def _save(image: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path.relative_to(path.parents[1]).as_posix()


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _scene(out: Path, seeds: list[int], size: tuple[int, int]) -> None:
    rows = []
    for i, s in enumerate(seeds):
        label = SCENE_CLASSES[i % len(SCENE_CLASSES)]
        rows.append((_save(make_scene(s, size, label).image, out / "images" / f"S{i:05d}.png"), label))
    _write_csv(out / TABLES["scene"], ("image", "label"), rows)


def _refseg(out: Path, seeds: list[int], size: tuple[int, int]) -> None:
    rows = []
    for i, s in enumerate(seeds):
        scene, expr = make_referring_scene(s, size)
        image = _save(scene.image, out / "images" / f"S{i:05d}.png")
        referred = [expr]
        if i % 2:  # a second object of the same image, when an expression identifies it
            rng = np.random.default_rng(s)
            others = (referring_expression(scene, j, rng) for j in range(len(scene.objects)) if j != expr.target)
            referred += [e for e in others if e is not None][:1]
        for e in referred:
            mask = scene.objects[e.target].mask(size[1], size[0]).astype(np.uint8) * 255
            rows.append((image, _save(mask, out / "masks" / f"S{i:05d}_{e.target}.png"), e.text))
    _write_csv(out / TABLES["refseg"], ("image", "mask", "expression"), rows)


def _gcg(out: Path, seeds: list[int], size: tuple[int, int]) -> None:
    records = []
    for i, s in enumerate(seeds):
        scene = make_scene(s, size, OBJECT_SCENE_CLASSES[i % len(OBJECT_SCENE_CLASSES)])
        attempt = 0
        while not scene.objects:  # nothing to ground: redraw from a derived seed
            attempt += 1
            scene = make_scene(int(np.random.default_rng([s, attempt]).integers(2**31)), size, scene.scene_class)
        markup, groups = grounded_caption(scene, np.random.default_rng(s))
        grounded = parse_grounded_caption(markup)
        phrases = [{"text": text, "polygons": [scene.objects[j].polygon.reshape(-1).tolist() for j in group]}
                   for text, group in zip(grounded.phrases, groups, strict=True)]
        records.append({"image": _save(scene.image, out / "images" / f"S{i:05d}.png"), "caption": grounded.caption,
                        "phrases": phrases})
    (out / TABLES["gcg"]).write_text(json.dumps(records, indent=1), encoding="utf-8")


def _sft(out: Path, seeds: list[int], size: tuple[int, int]) -> None:
    lines = []
    for i, s in enumerate(seeds):
        scene = make_scene(s, size, SCENE_CLASSES[i % len(SCENE_CLASSES)])
        image = _save(scene.image, out / "images" / f"S{i:05d}.png")
        lines += [json.dumps({"image": image, "question": qa.question, "answer": qa.answer}) + "\n"
                  for qa in qa_pairs(scene, np.random.default_rng(s))]
    (out / TABLES["sft"]).write_text("".join(lines), encoding="utf-8")


_WRITERS = {"scene": _scene, "refseg": _refseg, "gcg": _gcg, "sft": _sft}


def write_raw(task: str, out: str | os.PathLike, n: int, seed: int = 0,
              size: tuple[int, int] | int | None = None) -> Path:
    """Write ``n`` synthetic images of ``task`` (``scene``, ``refseg``, ``gcg`` or ``sft``) and their annotation
    table into the new directory ``out``, in the layout of the module docstring; returns the table's path. Image
    ``i`` comes from the same seed as in :func:`.export.synthesize` (``size`` defaults as there)."""
    if task not in _WRITERS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(_WRITERS)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    size = size or DEFAULT_SIZE[task]
    size = (size, size) if isinstance(size, int) else tuple(size)
    _WRITERS[task](out, [sample_seed(seed, task, i) for i in range(n)], size)
    return out / TABLES[task]
