"""Synthetic scenes written in the real on-disk formats: the embedded default dataset of every CLI.

:func:`synthesize` generates ``n`` scenes for one task, writes them with that format's own writer,
validates what it wrote with the format's strict reader, and records a ``manifest.json`` (counts,
checksums, generator version and seed). Sample ``i`` is generated from a seed derived from
``(seed, task, i)``, so datasets are reproducible file for file and a sample does not depend on ``n``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ... import __version__
from ..errors import DataFormatError, Problems
from ..formats import BY_NAME
from ..manifest import MANIFEST, read_manifest, verify_manifest, write_manifest
from .language import grounded_caption, holistic_sentence, qa_pairs, referring_expression, region_caption
from .scene import (
    OBJECT_SCENE_CLASSES,
    SCENE_CLASSES,
    Scene,
    make_referring_scene,
    make_scene,
    referring_object_scale,
)
from .shapes import CATEGORIES, REFERRING_CATEGORIES

TASKS = ("scene", "refseg", "gcg", "dota", "sft")
DEFAULT_SIZE = {"scene": 64, "refseg": 64, "gcg": 128, "sft": 224, "dota": 1024}
FORMAT = {"scene": "coop", "gcg": "geopixeld", "dota": "dota", "sft": "llava"}  # refseg: its layout
SCENE_SPLIT_NAME = "synthetic_scenes"
GENERATOR_NAME = "rs_shared.data.synthetic"  # the manifest's generator.name
SCENE_CAPTIONS = "captions.jsonl"  # ground-truth captions of the "scene" task, beside the split JSON
# Split fractions, assigned in this order: with few images test is filled before val.
SPLIT_FRACTIONS = {"train": 0.7, "test": 0.2, "val": 0.1}


def sample_seed(seed: int, task: str, index: int) -> int:
    """The generator seed of sample ``index`` of ``task`` in a dataset generated with ``seed``."""
    entropy = [seed, TASKS.index(task), index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def split_of(index: int, n: int, fractions: dict[str, float]) -> str:
    """Deterministic split assignment: the first ``fractions[train]`` of the indices go to train, etc."""
    edge = 0.0
    for name, fraction in fractions.items():
        edge += fraction
        if index < round(edge * n):
            return name
    return name


def synthesize(task: str, out: str | os.PathLike, n: int, seed: int = 0,
               size: tuple[int, int] | int | None = None, layout: str = "rrsisd", object_scale: float = 1.0,
               regions: int = 0) -> dict:
    """Generate ``n`` images for ``task`` (see :data:`TASKS`) into the empty or absent directory ``out``.

    ``size`` is ``(W, H)`` or a side length (default :data:`DEFAULT_SIZE`); ``layout`` chooses the
    referring-segmentation format (``"rrsisd"`` or ``"refsegrs"``); ``object_scale`` (refseg only) draws
    the objects that many times larger than the default; ``regions`` (gcg only) adds that many box-conditioned
    captions per tile (:func:`~rs_shared.data.synthetic.language.region_caption`, written as the per-tile file's
    ``regions``: the box enclosing the covered objects and their caption) to the holistic caption. Both are
    recorded in the manifest when not default. Returns the counts that ``rs-data check`` reports for the written
    dataset.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if object_scale <= 0 or (object_scale != 1.0 and task != "refseg"):
        raise ValueError(f"object_scale must be > 0 and is only available for refseg, got {object_scale} for {task}")
    if regions < 0 or (regions and task != "gcg"):
        raise ValueError(f"regions must be >= 0 and is only available for gcg, got {regions} for {task}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    fmt_name = layout if task == "refseg" else FORMAT[task]
    if fmt_name not in ("rrsisd", "refsegrs", *FORMAT.values()):
        raise ValueError(f"unknown refseg layout {layout!r}; expected 'rrsisd' or 'refsegrs'")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new --out directory")
    size = size or DEFAULT_SIZE[task]
    size = (size, size) if isinstance(size, int) else tuple(size)

    seeds = [sample_seed(seed, task, i) for i in range(n)]
    progress = tqdm(seeds, desc=f"synth {task}", unit="scene", leave=False)
    options = {"refseg": {"object_scale": object_scale}, "gcg": {"regions": regions}}
    _WRITERS[fmt_name](out, progress, size, **options.get(task, {}))

    fmt = BY_NAME[fmt_name]
    counts = fmt.validate(out, Problems())  # strict: what we wrote must read back cleanly
    generator = {"name": GENERATOR_NAME, "version": __version__, "seed": seed, "n": n, "size": list(size)}
    if object_scale != 1.0:
        generator["object_scale"] = object_scale
    if regions:
        generator["regions"] = regions
    if task == "scene":  # the ground-truth captions file (hashed with every other file under "files")
        generator["captions"] = SCENE_CAPTIONS
    write_manifest(out, format=fmt_name, task=task, counts=counts, generator=generator)
    return counts




def ensure_synthetic(task: str, out: str | os.PathLike, n: int, seed: int = 0,
                     size: tuple[int, int] | int | None = None, layout: str = "rrsisd", object_scale: float = 1.0,
                     allow_added_files: bool = False, regions: int = 0) -> Path:
    """A package's embedded default dataset: ``out`` filled by :func:`synthesize` when absent or empty, else
    checked to be this generator's output for the same ``task``, format, ``n``, ``seed``, ``size``,
    ``object_scale`` and ``regions`` (its manifest) with every listed file unchanged. Files added after generation
    (few-shot lists, caches) are accepted with ``allow_added_files``. Anything else raises :class:`DataFormatError`
    saying what differs. Under several processes call it on the main process first."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        synthesize(task, out, n, seed=seed, size=size, layout=layout, object_scale=object_scale, regions=regions)
        return out
    manifest = read_manifest(out)
    if manifest is None:
        raise DataFormatError(out, f"directory is not empty and has no {MANIFEST}, so it is not a synthetic "
                                   "dataset; choose an empty directory or remove this one")
    generator = manifest.get("generator") if isinstance(manifest.get("generator"), dict) else {}
    side = size or DEFAULT_SIZE.get(task)
    found = {"task": manifest.get("task"), "format": manifest.get("format"), "generator": generator.get("name"),
             "n": generator.get("n"), "seed": generator.get("seed"), "size": generator.get("size"),
             "object_scale": generator.get("object_scale", 1.0), "regions": generator.get("regions", 0)}
    wanted = {"task": task, "format": layout if task == "refseg" else FORMAT.get(task), "generator": GENERATOR_NAME,
              "n": n, "seed": seed, "size": [side, side] if isinstance(side, int) else list(side),
              "object_scale": object_scale, "regions": regions}
    differ = [f"{k}={found[k]!r} (wanted {v!r})" for k, v in wanted.items() if found[k] != v]
    if differ:
        raise DataFormatError(out / MANIFEST, "the synthetic dataset here was generated with " + ", ".join(differ)
                              + "; delete the directory to regenerate it or choose another one")
    problems = Problems(strict=False)
    verify_manifest(out, problems)
    listed = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    for error in problems.items:  # a changed or missing listed file is an error; an added one may be allowed
        added = Path(error.file) != out / MANIFEST and _relative(error.file, out) not in listed
        if not (allow_added_files and added):
            raise error
    return out


def _relative(path: str | os.PathLike, root: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return os.fspath(path)

# --- one writer per format --------------------------------------------------------------------------

def _write_scene(out: Path, seeds, size) -> None:
    """The CoOp layout (images + split JSON) and :data:`SCENE_CAPTIONS` beside it: one ground-truth caption
    per image, ``{"relpath": <path under images/>, "caption": holistic_sentence(scene, default_rng(seed))}``,
    in split order (train, val, test)."""
    from ..common import atomic_path
    from ..scene_cls import SPLITS, write_dataset

    n = len(seeds)
    samples: dict[str, list] = {"train": [], "val": [], "test": []}
    captions: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, s in enumerate(seeds):
        label = i % len(SCENE_CLASSES)  # balanced classes; each class's images spread over the splits
        scene = make_scene(s, size, SCENE_CLASSES[label])
        split = split_of(i // len(SCENE_CLASSES), -(-n // len(SCENE_CLASSES)), SPLIT_FRACTIONS)
        samples[split].append((scene.image, label, SCENE_CLASSES[label]))
        captions[split].append(holistic_sentence(scene, np.random.default_rng(s)))
    written = write_dataset(out, SCENE_SPLIT_NAME, samples, ext="png")
    lines = [json.dumps({"relpath": sample.impath_rel, "caption": caption}, ensure_ascii=False)
             for split in SPLITS for sample, caption in zip(written[split], captions[split], strict=True)]
    with atomic_path(out / SCENE_CAPTIONS) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _referring_scene(seed: int, size, object_scale: float):
    return make_referring_scene(seed, size, referring_object_scale(size) * object_scale)


def _write_rrsisd(out: Path, seeds, size, object_scale: float = 1.0) -> None:
    from ..refseg import RRSISDImage, RRSISDObject, write_rrsisd

    n = len(seeds)
    images = []
    for i, s in enumerate(seeds):
        scene, expr = _referring_scene(s, size, object_scale)
        objects = [RRSISDObject(CATEGORIES[o.category].noun, [o.polygon], [expr.text] if j == expr.target else [])
                   for j, o in enumerate(scene.objects)]
        images.append(RRSISDImage(f"{i:06d}.jpg", scene.image, split_of(i, n, SPLIT_FRACTIONS), objects))
    write_rrsisd(out, images, [CATEGORIES[c].noun for c in REFERRING_CATEGORIES])


def _write_refsegrs(out: Path, seeds, size, object_scale: float = 1.0) -> None:
    from ..refseg import RefSegRSItem, write_refsegrs

    n = len(seeds)
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for i, s in enumerate(seeds):
        scene, expr = _referring_scene(s, size, object_scale)
        mask = scene.objects[expr.target].mask(scene.size[1], scene.size[0])
        by_split[split_of(i, n, SPLIT_FRACTIONS)].append(RefSegRSItem(f"{i:05d}", scene.image, mask, expr.text))
    write_refsegrs(out, by_split)


def _object_scene(s: int, i: int, size) -> Scene:
    return make_scene(s, size, OBJECT_SCENE_CLASSES[i % len(OBJECT_SCENE_CLASSES)])


def _write_gcg(out: Path, seeds, size, regions: int = 0) -> None:
    """Per tile: the holistic :func:`grounded_caption` and ``regions`` box-conditioned :func:`region_caption`
    (region ``k`` drawn from ``default_rng([seed, 1, k])``), each region's box enclosing its objects' polygons."""
    from ..gcg import GCGRegion, parse_grounded_caption
    from ..gcg_writer import GCGTile, write_geopixeld

    n = len(seeds)
    tiles: dict[str, list] = {"train": [], "test": []}
    for i, s in enumerate(seeds):
        scene = _object_scene(s, i, size)
        attempt = 0
        while not scene.objects:  # a rare empty scene has nothing to ground: redraw it from a derived seed
            attempt += 1
            s = int(np.random.default_rng([s, attempt]).integers(2**31))
            scene = _object_scene(s, i, size)
        markup, groups = grounded_caption(scene, np.random.default_rng(s))
        polygons = [[scene.objects[j].polygon for j in group] for group in groups]
        boxes = scene.boxes("xyxy").data
        described = []
        for k in range(regions):
            region_markup, region_groups = region_caption(scene, np.random.default_rng([s, 1, k]))
            covered = [j for group in region_groups for j in group]
            box = (*boxes[covered, :2].min(0), *boxes[covered, 2:].max(0))
            described.append(GCGRegion(tuple(float(v) for v in np.clip(box, 0, [*size, *size])),
                                       parse_grounded_caption(region_markup),
                                       [[scene.objects[j].polygon for j in group] for group in region_groups]))
        tiles[split_of(i, n, {"train": 0.8, "test": 0.2})].append(
            GCGTile(f"S{i:05d}", scene.image, markup, polygons, regions=described))
    for split, items in tiles.items():
        if items:
            write_geopixeld(out, items, split)


def _dota_image(scene: Scene, name: str):
    from ..dota import DotaImage

    keep = [j for j, o in enumerate(scene.objects) if CATEGORIES[o.category].dota is not None]
    quads = scene.boxes("quad")
    boxes = type(quads)(quads.data[keep], "quad", "pixel", scene.size)
    return DotaImage(name, scene.image, boxes, tuple(CATEGORIES[scene.objects[j].category].dota for j in keep),
                     np.array([int(scene.objects[j].difficult) for j in keep]), imagesource="synthetic",
                     gsd=round(1 / scene.object_scale, 6))


def _write_dota(out: Path, seeds, size) -> None:
    from ..dota import write_dota

    write_dota(out, (_dota_image(_object_scene(s, i, size), f"S{i:04d}") for i, s in enumerate(seeds)))  # streamed


SFT_KINDS = ("qa", "detection", "grounding")  # record i is of kind SFT_KINDS[i % 3]
GROUNDING_PROMPT = "find the {target}"  # the refGeo training prompt (RSCoVLM spec §2.4), literal
GROUNDING_TURNS = 3  # objects grounded per referring tile


def _write_sft(out: Path, seeds, size) -> None:
    """Records of the kinds :data:`SFT_KINDS` in turn: multi-turn QA (counting, presence, location, scene
    class, description) on a scene of a class, detection of the DOTA classes (quadrilaterals) on such a scene,
    and refGeo-style grounding on a referring tile (:func:`make_referring_scene`: 3–6 objects, the target
    identified uniquely by its expression): ``find the {expression}`` answered ``x1,y1,x2,y2 {expression}``.
    Boxes are integer pixels of the image, so detection and grounding records say ``coords="pixel"``."""
    from PIL import Image

    from ..common import atomic_path
    from ..conversations import Conversation, ImageItem, Message, TextItem, write_llava
    from ..convert import detection_answer

    records = []
    for i, s in enumerate(seeds):
        kind = SFT_KINDS[i % len(SFT_KINDS)]
        if kind == "grounding":
            scene, turns = _grounding_turns(s, size)
        else:
            scene = make_scene(s, size, SCENE_CLASSES[i % len(SCENE_CLASSES)])
            turns = _detection_turns(scene, detection_answer) if kind == "detection" else \
                [(qa.question, qa.answer) for qa in qa_pairs(scene, np.random.default_rng(s))]
        path = out / "images" / f"S{i:05d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(scene.image).save(tmp, format="PNG")
        messages = []
        for k, (question, answer) in enumerate(turns):
            content = (ImageItem(0), TextItem(question)) if k == 0 else (TextItem(question),)
            messages += [Message("user", content), Message("assistant", (TextItem(answer),))]
        records.append(Conversation(f"S{i:05d}", tuple(messages), (path,), source=f"synthetic:{kind}",
                                    coords="pixel" if kind != "qa" else None))
    write_llava(out / "sft.json", records, image_root=out)


def _detection_turns(scene: Scene, detection_answer: Callable) -> list[tuple[str, str]]:
    image = _dota_image(scene, "")
    classes = sorted({c.dota.replace("-", " ") for c in CATEGORIES.values() if c.dota})
    return [(f"Detect all {', '.join(classes)} in the image. Answer one object per line as "
             "x1,y1,x2,y2,x3,y3,x4,y4 class.", detection_answer(image.boxes.data, list(image.labels)))]


def _grounding_turns(seed: int, size) -> tuple[Scene, list[tuple[str, str]]]:
    """A referring tile and up to :data:`GROUNDING_TURNS` turns: its target first, then other objects (in random
    order) that an expression identifies uniquely. Each expression, without its leading article, goes into
    :data:`GROUNDING_PROMPT` and, after the integer box, into the answer."""
    scene, expr = make_referring_scene(seed, size)
    rng = np.random.default_rng([seed, 2])
    exprs = [expr]
    for j in rng.permutation(len(scene.objects)):
        if len(exprs) == GROUNDING_TURNS:
            break
        other = referring_expression(scene, int(j), rng) if j != expr.target else None
        if other is not None:
            exprs.append(other)
    boxes = scene.boxes("xyxy").data.astype(int)
    turns = []
    for e in exprs:
        target = e.text[4:] if e.text.startswith("the ") else e.text
        x1, y1, x2, y2 = boxes[e.target]
        turns.append((GROUNDING_PROMPT.format(target=target), f"{x1},{y1},{x2},{y2} {target}"))
    return scene, turns


_WRITERS = {"coop": _write_scene, "rrsisd": _write_rrsisd, "refsegrs": _write_refsegrs,
            "geopixeld": _write_gcg, "dota": _write_dota, "llava": _write_sft}
