"""Evaluation sets of ``rscovlm-eval``: the on-disk formats it reads and the synthetic defaults (spec §5, §6).

- ``det``: a DOTA directory (``images/`` + ``labelTxt/``, :func:`rs_shared.data.dota.read_dota`).
- ``vg``: a JSON-lines file of refGeo-style records ``{"question": expression, "bbox": [x1, y1, x2, y2],
  "image": path}``; instead of ``image``, refGeo's ``dataset`` + ``image_id`` name
  ``<dir>/images/<dataset>/<image_id>``. Paths are relative to the file's directory.
- ``cls`` / ``vqa`` / ``cap``: a JSON-lines file of ``{"image": path, "question": str, "answer": str}``
  (``cap``: ``"answers"``, a list of reference captions, may replace ``answer``; ``cls`` may omit
  ``question``). An optional ``"id"`` names the record (default: its line number).

Bad records raise ``ValueError`` naming the file, line and field. :func:`synthesize_eval_set` writes a small
set of each kind from ``rs_shared.data.synthetic`` (DOTA scenes via ``synthesize("dota")``; the other tasks
from the same scene generator the ``"sft"`` export uses, with its referring expressions, QA pairs, scene
classes and descriptions).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rs_shared.data.dota import DotaSample, read_dota
from rs_shared.data.synthetic import (
    SCENE_CLASSES,
    holistic_sentence,
    make_scene,
    qa_pairs,
    referring_expression,
)
from rs_shared.data.synthetic.export import sample_seed, synthesize

from .templates import CAPTION_PROMPT, classification_prompt

TASKS = ("det", "vg", "cap", "vqa", "cls")
DATA_FILE = "eval.jsonl"


@dataclass(frozen=True)
class GroundingSample:
    """One referring expression: ``bbox`` ``(x1, y1, x2, y2)`` in pixels of the original image."""

    id: str
    image_path: Path
    expression: str
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class TextSample:
    """One question with its reference answers (several for captions)."""

    id: str
    image_path: Path
    question: str
    answers: tuple[str, ...]


def load_eval_set(task: str, path: str | os.PathLike) -> list[DotaSample] | list[GroundingSample] | list[TextSample]:
    """The samples of ``path`` for ``task`` (module docstring formats)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    path = Path(path)
    if task == "det":
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: the det task needs a DOTA directory with images/ and labelTxt/")
        return read_dota(path)
    file = path / DATA_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: the {task} task reads a JSON-lines file")
    samples = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        sample_id = str(record.get("id", record.get("question_id", number)))
        image = _image_path(record, file.parent, where)
        if task == "vg":
            samples.append(GroundingSample(sample_id, image, _text(record, "question", where),
                                           _bbox(record.get("bbox"), where)))
        else:
            samples.append(TextSample(sample_id, image, _question(task, record, where), _answers(record, where)))
    return samples


def _image_path(record: dict, root: Path, where: str) -> Path:
    if isinstance(record.get("image"), str):
        return root / record["image"]
    if isinstance(record.get("dataset"), str) and isinstance(record.get("image_id"), str):
        return root / "images" / record["dataset"] / record["image_id"]
    raise ValueError(f"{where}: field 'image' (or 'dataset' + 'image_id') must name the image file")


def _text(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {key!r} must be a non-empty string, got {value!r:.60}")
    return value


def _question(task: str, record: dict, where: str) -> str:
    if task == "cap" and "question" not in record:
        return CAPTION_PROMPT
    if task == "cls" and "question" not in record:
        return classification_prompt()
    return _text(record, "question", where)


def _answers(record: dict, where: str) -> tuple[str, ...]:
    if "answers" in record:
        answers = record["answers"]
        if not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
            raise ValueError(f"{where}: field 'answers' must be a non-empty list of strings")
        return tuple(answers)
    return (_text(record, "answer", where),)


def _bbox(value: object, where: str) -> tuple[float, float, float, float]:
    if not (isinstance(value, list) and len(value) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{where}: field 'bbox' must be [x1, y1, x2, y2] numbers, got {value!r:.60}")
    box = tuple(float(v) for v in value)
    if not (box[0] < box[2] and box[1] < box[3]):
        raise ValueError(f"{where}: field 'bbox' {list(box)} has no area")
    return box


def synthesize_eval_set(task: str, out: str | os.PathLike, n: int, seed: int = 0, size: int | None = None) -> Path:
    """Write ``n`` synthetic samples of ``task`` into the new directory ``out`` and return the path to pass
    to :func:`load_eval_set`. ``size`` is the image side (default 1024 for ``det``, so DOTA tiling is
    exercised, and 224 otherwise)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    out = Path(out)
    if task == "det":
        synthesize("dota", out, n, seed=seed, size=size or 1024)
        return out
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new directory")
    (out / "images").mkdir(parents=True, exist_ok=True)
    side = size or 224
    records, i = [], 0
    while len(records) < n:
        if i > 20 * n + 50:
            raise RuntimeError(f"could not draw {n} synthetic {task} samples")
        s = sample_seed(seed, "sft", i)
        rng = np.random.default_rng(s)
        scene = make_scene(s, (side, side), SCENE_CLASSES[i % len(SCENE_CLASSES)])
        name = f"images/S{i:05d}.png"
        record = _synthetic_record(task, scene, rng, name)
        i += 1
        if record is None:
            continue
        Image.fromarray(scene.image).save(out / name)
        records.append({"id": f"S{i - 1:05d}", **record})
    (out / DATA_FILE).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return out / DATA_FILE


def _synthetic_record(task: str, scene, rng: np.random.Generator, image: str) -> dict | None:
    if task == "vg":
        for target in rng.permutation(len(scene.objects)):
            expr = referring_expression(scene, int(target), rng)
            if expr is not None:
                box = [int(v) for v in scene.boxes("xyxy").data[expr.target]]
                target = expr.text.removeprefix("the ")  # asked as "find the {target}", as in the training records
                return {"image": image, "question": target, "bbox": box}
        return None
    if task == "cap":
        return {"image": image, "question": CAPTION_PROMPT, "answers": [holistic_sentence(scene, rng)]}
    pairs = qa_pairs(scene, rng)
    wanted = ("scene",) if task == "cls" else ("counting", "presence", "location")
    pairs = [qa for qa in pairs if qa.kind in wanted]
    if not pairs:
        return None
    qa = pairs[int(rng.integers(len(pairs)))]
    return {"image": image, "question": qa.question, "answer": qa.answer}


__all__ = ["DATA_FILE", "TASKS", "GroundingSample", "TextSample", "load_eval_set", "synthesize_eval_set"]
