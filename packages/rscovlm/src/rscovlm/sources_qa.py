"""Converters from the recipe's question-answering, classification and captioning formats into conversation
sources and ``rscovlm-eval`` sets (spec §2.1, §2.2, §4.1, §6).

Formats read here:

- **RSVQA** (LR / HR): ``<prefix>_questions.json`` ``{"questions": [{id, img_id, type, question,
  answers_ids, active}]}``, ``<prefix>_answers.json`` ``{"answers": [{id, question_id, answer, active}]}``,
  images ``<images>/<img_id>.tif``; inactive questions are skipped.
- **Scene classification** (UCM, NWPU-RESISC45, AID, …): a folder of class sub-folders, or a CoOp split
  JSON (``rs-data convert folders-to-split``) and one of its splits.
- **Caption sets** in the Karpathy JSON form of RSICD, UCM-captions and Sydney-captions:
  ``{"images": [{filename, split, sentences: [{raw}]}]}``, images ``<images>/<filename>``.
- **LRS-VQA-Zoom** JSON (§2.2, §4.1): ``{image, image_ori_width, image_ori_height, bbox_info: {crop_hbox:
  [[x1, y1, x2, y2], …]}}`` with ``{question, answer}`` or ``{Text, "Answer choices", "Ground truth"}``.

Items are :class:`QAItem`; :func:`qa_conversations` makes one single-turn conversation per reference answer
and :func:`qa_eval_records` the ``rscovlm-eval`` records (``cls`` / ``vqa`` / ``cap``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from rs_shared.data.common import read_json, read_image
from rs_shared.data.conversations import Conversation, ImageItem, Message, TextItem
from rs_shared.data.errors import DataFormatError
from rs_shared.data.scene_cls import IMAGE_EXTENSIONS, SPLITS, read_split

from .resize import PAPER_MAX_PIXELS, PAPER_MIN_PIXELS, plan_resize
from .templates import (
    CAPTION_PROMPT,
    TOOL_SYSTEM_PROMPT,
    ZOOMED_IMAGE_NOTE,
    classification_prompt,
    mcq_prompt,
    tool_call,
    zoom_question,
)

MCQ_SHORT_ANSWER = "answer with a single word or phrase"  # LRS-VQA MCQ instruction removed from `Text` (§4.1)


@dataclass(frozen=True)
class QAItem:
    """One image with a question and its reference answers (several for captions); ``meta`` is copied into
    the evaluation record (e.g. the RSVQA question ``type``)."""

    id: str
    image: Path
    question: str
    answers: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)


def qa_conversations(items: Sequence[QAItem], source: str) -> list[Conversation]:
    """One conversation ``[image, question] → answer`` per reference answer of each item (the default
    system turn is added by the renderer)."""
    return [Conversation(f"{item.id}-{k}" if len(item.answers) > 1 else item.id,
                         (Message("user", (ImageItem(0), TextItem(item.question))),
                          Message("assistant", (TextItem(answer),))), (item.image,), source)
            for item in items for k, answer in enumerate(item.answers)]


def qa_eval_records(items: Sequence[QAItem], task: str) -> list[dict[str, Any]]:
    """``rscovlm-eval`` records for ``task`` ``cls`` / ``vqa`` (``answer``) or ``cap`` (``answers``)."""
    if task not in ("cls", "vqa", "cap"):
        raise ValueError(f"task must be cls, vqa or cap, got {task!r}")
    return [{"id": i.id, "image": i.image, "question": i.question,
             **({"answers": list(i.answers)} if task == "cap" else {"answer": i.answers[0]}), **i.meta}
            for i in items]


def _records(path: Path, key: str) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataFormatError(path, f"expected an object with a list {key!r}")
    return data[key]


def _field(obj: Any, key: str, kind: type | tuple[type, ...], file: Path, record: object) -> Any:
    if not isinstance(obj, dict):
        raise DataFormatError(file, f"expected an object, got {type(obj).__name__}", record)
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise DataFormatError(file, f"field {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r:.60}",
                              record)
    return value


# --- RSVQA ------------------------------------------------------------------------------------------------

def read_rsvqa(root: str | os.PathLike, prefix: str, images: str | os.PathLike) -> list[QAItem]:
    """The active questions of an RSVQA split (``<root>/<prefix>_questions.json`` and ``_answers.json``,
    e.g. prefix ``LR_split_test``), each with its first active answer; ``meta`` keeps the question ``type``."""
    root, images = Path(root), Path(images)
    q_file, a_file = root / f"{prefix}_questions.json", root / f"{prefix}_answers.json"
    answers = {}
    for k, a in enumerate(_records(a_file, "answers")):
        answer_id = _field(a, "id", int, a_file, f"answers[{k}]")
        if a.get("active", True):
            answers[answer_id] = _field(a, "answer", str, a_file, f"answers[{k}]")
    items = []
    for k, q in enumerate(_records(q_file, "questions")):
        record = f"questions[{k}]"
        qid, img = _field(q, "id", int, q_file, record), _field(q, "img_id", int, q_file, record)
        if not q.get("active", True):
            continue
        question = _field(q, "question", str, q_file, record)
        ids = [i for i in _field(q, "answers_ids", list, q_file, record) if i in answers]
        if not ids:
            raise DataFormatError(q_file, f"no active answer among 'answers_ids' in {a_file.name}", record)
        image = images / f"{img}.tif"
        if not image.is_file():
            raise DataFormatError(q_file, f"image file {image} is missing (from field 'img_id')", record)
        items.append(QAItem(str(qid), image, question, (answers[ids[0]],), {"type": q.get("type")}))
    return items


# --- scene classification ---------------------------------------------------------------------------------

def class_name(folder: str) -> str:
    """A class folder name as an answer: ``_`` → space (``baseball_diamond`` → ``baseball diamond``)."""
    return folder.replace("_", " ").strip()


def read_scene(path: str | os.PathLike, split: str | None = None) -> list[QAItem]:
    """Scene-classification items asking :data:`~rscovlm.templates.CLASSIFICATION_PROMPT`: every image of a
    folder of class sub-folders, or the ``split`` (train / val / test) of a CoOp split JSON."""
    path = Path(path)
    if path.is_dir():
        if split is not None:
            raise ValueError(f"{path}: a class-folder dataset has no splits; pass a CoOp split JSON with a split")
        pairs = [(p, class_name(folder.name)) for folder in sorted(path.iterdir()) if folder.is_dir()
                 for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not pairs:
            raise FileNotFoundError(f"{path}: no class sub-folders with images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        names = [f"{p.parent.name}/{p.stem}" for p, _ in pairs]
    elif path.is_file():
        if split not in SPLITS:
            raise ValueError(f"{path}: choose the split of the CoOp JSON to convert, one of {SPLITS}")
        samples = getattr(read_split(path), split)
        pairs = [(s.path, class_name(s.classname)) for s in samples]
        names = [s.impath_rel for s in samples]
    else:
        raise FileNotFoundError(f"{path} does not exist")
    return [QAItem(name, image, classification_prompt(), (label,)) for name, (image, label) in zip(names, pairs)]


# --- captions ---------------------------------------------------------------------------------------------

def read_captions(path: str | os.PathLike, images: str | os.PathLike, split: str | None = None) -> list[QAItem]:
    """The images of a Karpathy-style caption JSON (``split`` only, if given) with their raw sentences as
    the reference answers, asked :data:`~rscovlm.templates.CAPTION_PROMPT`."""
    path, images = Path(path), Path(images)
    items = []
    for k, entry in enumerate(_records(path, "images")):
        record = f"images[{k}]"
        filename = _field(entry, "filename", str, path, record)
        if split is not None and entry.get("split") != split:
            continue
        sentences = _field(entry, "sentences", list, path, record)
        raws = [s.get("raw") if isinstance(s, dict) else None for s in sentences]
        if not raws or not all(isinstance(r, str) and r.strip() for r in raws):
            raise DataFormatError(path, "field 'sentences' must be a non-empty list of {'raw': caption}", record)
        image = images / filename
        if not image.is_file():
            raise DataFormatError(path, f"image file {image} is missing (from field 'filename')", record)
        items.append(QAItem(str(entry.get("imgid", k)), image, CAPTION_PROMPT, tuple(r.strip() for r in raws)))
    if not items:
        raise ValueError(f"{path}: no images{f' in split {split!r}' if split else ''}")
    return items


# --- LRS-VQA-Zoom (zoom-in chain, §4.1) -------------------------------------------------------------------

def _mcq(obj: dict, file: Path, record: str) -> tuple[str, str]:
    text = _field(obj, "Text", str, file, record).rstrip()
    lower = text.lower()
    cut = lower.rfind(MCQ_SHORT_ANSWER)
    if cut >= 0 and not lower[cut + len(MCQ_SHORT_ANSWER):].strip(" .:"):
        text = text[:cut].rstrip()  # suffix removed exactly (the official character-set rstrip, pitfall §9.5, is not)
    choices = _field(obj, "Answer choices", list, file, record)
    if not choices or not all(isinstance(c, str) for c in choices):
        raise DataFormatError(file, "field 'Answer choices' must be a non-empty list of strings", record)
    return mcq_prompt(text, choices), _field(obj, "Ground truth", str, file, record)


def lrs_zoom_conversations(path: str | os.PathLike, image_root: str | os.PathLike, crop_dir: str | os.PathLike,
                           min_pixels: int = PAPER_MIN_PIXELS, max_pixels: int = PAPER_MAX_PIXELS,
                           source: str = "lrsvqa_zoom") -> list[Conversation]:
    """LRS-VQA-Zoom records → zoom-chain conversations (§4.1).

    With exactly one ``crop_hbox``: the tool system turn, ``[image, question + zoom instruction]``, the
    ``image_zoom_in`` tool call with the box in pixels of the **resized** frame (``int`` per axis, the frame
    :func:`~rscovlm.resize.smart_resize` gives with ``min_pixels``/``max_pixels``, pinned on the image item as
    ``resized_width``/``resized_height``), ``[crop, zoomed-image note]`` and the answer. The crop is cut from
    the original image at the un-rescaled box and saved as ``<crop_dir>/<n>.png``. Other records (0 or ≥ 2
    boxes) are single turns ``[image, question] → answer``. Not marked with a ``coords`` frame: the tool call
    is already in the resized frame, and these samples are never randomly resized (§3.4)."""
    path, image_root, crop_dir = Path(path), Path(image_root), Path(crop_dir)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(path, f"expected a JSON list of LRS-VQA-Zoom records, got {type(data).__name__}")
    crop_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for k, obj in enumerate(tqdm(data, desc="LRS-VQA-Zoom", unit="record", leave=False, disable=None)):
        record = f"{k}"
        image = image_root / _field(obj, "image", str, path, record)
        if not image.is_file():
            raise DataFormatError(path, f"image file {image} is missing (from field 'image')", record)
        question, answer = (_mcq(obj, path, record) if "Text" in obj else
                            (_field(obj, "question", str, path, record), _field(obj, "answer", str, path, record)))
        boxes = _field(_field(obj, "bbox_info", dict, path, record), "crop_hbox", list, path, record)
        name = str(obj.get("question_id", obj.get("id", f"{path.stem}-{k}")))
        if len(boxes) != 1:
            out.append(Conversation(name, (Message("user", (ImageItem(0), TextItem(question))),
                                           Message("assistant", (TextItem(answer),))), (image,), source))
            continue
        box = boxes[0]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
                and box[0] < box[2] and box[1] < box[3]):
            raise DataFormatError(path, f"field 'crop_hbox' must hold [x1, y1, x2, y2] with area, got {box!r:.60}",
                                  record)
        with read_image(image, record) as full:
            frame = plan_resize(full.width, full.height, min_pixels, max_pixels)
            crop = crop_dir / f"{k:07d}.png"
            full.crop(tuple(int(v) for v in box)).save(crop)
        options = {"resized_width": frame.resized[0], "resized_height": frame.resized[1]}
        messages = (Message("system", (TextItem(TOOL_SYSTEM_PROMPT),)),
                    Message("user", (ImageItem(0, options), TextItem(zoom_question(question)))),
                    Message("assistant", (TextItem(tool_call(frame.to_resized(box))),)),
                    Message("user", (ImageItem(1), TextItem(ZOOMED_IMAGE_NOTE))),
                    Message("assistant", (TextItem(answer),)))
        out.append(Conversation(name, messages, (image, crop), source))
    return out


__all__ = ["MCQ_SHORT_ANSWER", "QAItem", "class_name", "lrs_zoom_conversations",
           "qa_conversations", "qa_eval_records", "read_captions", "read_rsvqa", "read_scene"]
