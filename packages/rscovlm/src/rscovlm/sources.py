"""Converters from the on-disk formats of the recipe's box datasets into conversation sources (spec §2.1,
§2.2, §2.4, §3.3).

Each reader validates its files (an error names the file, the line or record and the field) and returns
neutral items; :func:`grounding_conversations` / :func:`detection_conversations` turn them into
:class:`rs_shared.data.conversations.Conversation` records with the task templates of
:mod:`rscovlm.templates`; :func:`write_source` writes the file that ``--data.sources NAME=PATH`` reads.

Boxes stay in the frame of the files: pixels of the original image (``coords="pixel"``), or GeoChat's
0–100 percentages (``coords="norm100"``). :class:`rscovlm.mixture.SFTDataset` rewrites them into integer
pixels of the resized frame at training time (§3.3), so one converted file serves any resolution and every
random resize (§3.4).

Formats read here:

- **refGeo** JSON lines (§2.2): ``{dataset, image_id, question, question_id, bbox [x1,y1,x2,y2],
  poly [[x,y]×4], …}``, image ``<root>/images/<dataset>/<image_id>`` → HBB or polygon grounding.
- **DIOR-RSVG**: ``Annotations/<id>.xml`` (VOC style, each ``<object>`` with ``<name>``, ``<bndbox>`` and
  the referring ``<description>``) and ``JPEGImages/<filename>`` → HBB grounding.
- **DOTA** ``images/`` + ``labelTxt/`` (:func:`rs_shared.data.dota.read_dota`; tile large images first
  with ``rs-data convert dota-tiles --size 512``) → polygon or HBB detection.
- **GeoChat** instruct JSON (LLaVA-style records) with GeoChat boxes ``{<x1><y1><x2><y2>|<θ>}`` or
  TEOChatlas boxes ``[x1, y1, x2, y2]``, both 0–100 → the same conversations with ``[x1, y1, x2, y2]`` boxes.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from rs_shared.data.conversations import (
    Conversation,
    ImageItem,
    Message,
    TextItem,
    join_image_tags,
    read_conversations,
    split_image_tags,
    write_jsonl,
    write_llava,
)
from rs_shared.data.dota import CLASS_LISTS, read_dota
from rs_shared.data.errors import DataFormatError

from .templates import (
    SYSTEM_PROMPTS,
    category_list,
    detection_answer,
    detection_line,
    find_prompt,
    normalize_polygon,
)

BOX_KINDS = ("hbb", "poly")


@dataclass(frozen=True)
class GroundingItem:
    """One referring expression: ``bbox`` ``(x1, y1, x2, y2)`` and optionally ``poly`` ``(x1, y1, …, x4, y4)``
    in pixels of the original image."""

    id: str
    image: Path
    expression: str
    bbox: tuple[float, float, float, float]
    poly: tuple[float, ...] | None = None


# --- writing ----------------------------------------------------------------------------------------------

def write_source(path: str | os.PathLike, conversations: Sequence[Conversation]) -> Path:
    """Write ``conversations`` to ``path``: ``.json`` → a LLaVA-style list, ``.jsonl`` → unified records
    (needed when image items carry resize options). Image paths are written relative to the file's folder.
    Returns the path; raises ``ValueError`` for another suffix or no conversations."""
    path = Path(path)
    if not conversations:
        raise ValueError(f"{path}: nothing to write (no records were converted)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        write_llava(path, conversations)
    elif path.suffix == ".jsonl":
        write_jsonl(path, conversations, style="unified")
    else:
        raise ValueError(f"{path}: the output must end in .json (LLaVA list) or .jsonl (unified records)")
    return path


def write_eval_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``rscovlm-eval`` records (:mod:`rscovlm.eval_data`) as JSON lines; each record's ``image`` (a
    :class:`~pathlib.Path`) is written relative to the file's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = os.path.abspath(path.parent)
    lines = [json.dumps({**r, "image": Path(os.path.relpath(r["image"], root)).as_posix()}, ensure_ascii=False)
             for r in records]
    if not lines:
        raise ValueError(f"{path}: nothing to write (no records were converted)")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _number(value: float) -> str:
    """A coordinate as text: integers without a decimal point, others with at most 2 decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0")


def _single_turn(id: str, source: str, image: Path, question: str, answer: str, system: str | None = None,
                 coords: str | None = None) -> Conversation:
    messages = [Message("system", (TextItem(system),))] if system else []
    messages += [Message("user", (ImageItem(0), TextItem(question))), Message("assistant", (TextItem(answer),))]
    return Conversation(id, tuple(messages), (image,), source, coords)


# --- grounding (refGeo, DIOR-RSVG) ------------------------------------------------------------------------

def grounding_conversations(items: Sequence[GroundingItem], kind: str = "hbb",
                            source: str = "refgeo") -> list[Conversation]:
    """One grounding conversation per item (§2.4): the HBB (or polygon) system turn, ``find the
    {expression}``, and ``x1,y1,x2,y2 {expression}\\n`` (polygon: 8 numbers, refGeo's counter-clockwise
    vertex order, pitfall §9.12, ints before scaling as the official code). Pixel frame."""
    if kind not in BOX_KINDS:
        raise ValueError(f"kind must be one of {BOX_KINDS}, got {kind!r}")
    out = []
    for item in items:
        if kind == "hbb":
            answer = ",".join(_number(v) for v in item.bbox) + f" {item.expression}\n"
        elif item.poly is None:
            raise ValueError(f"{source} item {item.id}: has no polygon; convert it with kind='hbb'")
        else:
            answer = detection_line(normalize_polygon([int(v) for v in item.poly], clockwise=False),
                                    item.expression) + "\n"
        out.append(_single_turn(f"{item.id}-{kind}", source, item.image, find_prompt(item.expression), answer,
                                SYSTEM_PROMPTS[kind], "pixel"))
    return out


def grounding_eval_records(items: Sequence[GroundingItem]) -> list[dict[str, Any]]:
    """``rscovlm-eval --task vg`` records: ``{id, image, question, bbox}``."""
    return [{"id": i.id, "image": i.image, "question": i.expression, "bbox": list(i.bbox)} for i in items]


def _numbers(value: Any, count: int) -> tuple[float, ...] | None:
    if (isinstance(value, list) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return tuple(float(v) for v in value)
    return None


def _check_box(box: tuple[float, ...], file: Path, record: str) -> None:
    if not (box[0] < box[2] and box[1] < box[3]):
        raise DataFormatError(file, f"box {list(box)} has no area (expected x1 < x2 and y1 < y2)", record)


def read_refgeo(path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> list[GroundingItem]:
    """The items of a refGeo JSON-lines file; images are ``<image_root>/images/<dataset>/<image_id>``
    (``image_root`` defaults to the file's folder). ``question_id`` names an item (default ``<stem>-<line>``)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if not path.is_file():
        raise FileNotFoundError(f"{path}: refGeo JSON-lines file does not exist")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"not valid JSON ({e.msg})", record) from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(obj).__name__}", record)
        for key in ("dataset", "image_id", "question"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise DataFormatError(path, f"field {key!r} must be a non-empty string, got {obj.get(key)!r:.60}",
                                      record)
        bbox = _numbers(obj.get("bbox"), 4)
        if bbox is None:
            raise DataFormatError(path, f"field 'bbox' must be [x1, y1, x2, y2] numbers, got {obj.get('bbox')!r:.60}",
                                  record)
        _check_box(bbox, path, record)
        poly = None
        if obj.get("poly") is not None:
            points = obj["poly"]
            pairs = [_numbers(p, 2) for p in points] if isinstance(points, list) and len(points) == 4 else [None]
            if any(p is None for p in pairs):
                raise DataFormatError(path, f"field 'poly' must be 4 [x, y] points, got {points!r:.60}", record)
            poly = tuple(v for p in pairs for v in p)
        image = root / "images" / obj["dataset"] / obj["image_id"]
        if not image.is_file():
            raise DataFormatError(path, f"image file {image} is missing (from fields 'dataset' and 'image_id')",
                                  record)
        name = str(obj.get("question_id", f"{path.stem}-{number}"))
        items.append(GroundingItem(name, image, obj["question"].strip(), bbox, poly))
    return items


def read_dior_rsvg(root: str | os.PathLike, split_file: str | os.PathLike | None = None) -> list[GroundingItem]:
    """The referring expressions of DIOR-RSVG: every ``<object>`` of ``<root>/Annotations/*.xml`` (or only the
    annotation ids listed one per line in ``split_file``, e.g. ``train.txt``) with its ``<description>`` and
    ``<bndbox>``; images in ``<root>/JPEGImages/``."""
    root = Path(root)
    annotations, images = root / "Annotations", root / "JPEGImages"
    for folder in (annotations, images):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: DIOR-RSVG needs the folders Annotations/ and JPEGImages/")
    if split_file is None:
        files = sorted(annotations.glob("*.xml"))
    else:
        ids = [line.strip() for line in Path(split_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        files = [annotations / f"{i.removesuffix('.xml')}.xml" for i in ids]
    items = []
    for file in tqdm(files, desc="DIOR-RSVG", unit="file", leave=False, disable=None):
        if not file.is_file():
            raise DataFormatError(split_file or annotations, f"annotation file {file.name} is missing")
        try:
            tree = ET.parse(file).getroot()
        except ET.ParseError as e:
            raise DataFormatError(file, f"not valid XML ({e})") from None
        image = images / (tree.findtext("filename") or f"{file.stem}.jpg").strip()
        if not image.is_file():
            raise DataFormatError(file, f"image file {image} is missing (from field 'filename')")
        for k, obj in enumerate(tree.iter("object")):
            record = f"object {k}"
            expression = (obj.findtext("description") or "").strip()
            if not expression:
                raise DataFormatError(file, "field 'description' (the referring expression) is missing or empty",
                                      record)
            values = [obj.findtext(f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax")]
            try:
                bbox = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                raise DataFormatError(file, f"field 'bndbox' must hold numbers xmin, ymin, xmax, ymax, got {values}",
                                      record) from None
            _check_box(bbox, file, record)
            items.append(GroundingItem(f"{file.stem}-{k}", image, expression, bbox))
    return items


# --- detection (DOTA) -------------------------------------------------------------------------------------

def detection_conversations(root: str | os.PathLike, kind: str = "poly", classes: str = "DOTA-v1.0",
                            source: str = "dota") -> list[Conversation]:
    """One detection conversation per image of a DOTA directory (§2.4): the polygon (or HBB) system turn,
    ``find the {category list}`` and one ``x1,y1,…,x4,y4 {class}`` line per object (clockwise from the
    top-most vertex; HBB: the enclosing ``x1,y1,x2,y2``), sorted by (class, y1, x1); ``There are none.``
    for an image without objects (kept, as the recipe does). Integer pixels of the image (ints before
    scaling, as for COCO boxes in the official code). Difficult objects are kept."""
    if kind not in BOX_KINDS:
        raise ValueError(f"kind must be one of {BOX_KINDS}, got {kind!r}")
    if classes not in CLASS_LISTS:
        raise ValueError(f"unknown class list {classes!r}; expected one of {sorted(CLASS_LISTS)}")
    class_list = CLASS_LISTS[classes]
    prompt = find_prompt(category_list(class_list))
    out = []
    for sample in read_dota(root, class_list):
        boxes = sample.boxes if kind == "poly" else sample.hbb()
        coords = np.trunc(boxes.data).astype(np.int64)
        answer = detection_answer(coords, sample.labels, kind)
        out.append(_single_turn(f"{sample.name}-{kind}", source, sample.image_path, prompt, answer,
                                SYSTEM_PROMPTS[kind], "pixel"))
    return out


# --- GeoChat / TEOChatlas ---------------------------------------------------------------------------------

_GEOCHAT_BOX = re.compile(r"\{\s*<(-?\d+(?:\.\d+)?)>\s*<(-?\d+(?:\.\d+)?)>\s*<(-?\d+(?:\.\d+)?)>\s*"
                          r"<(-?\d+(?:\.\d+)?)>\s*(?:\|\s*<-?\d+(?:\.\d+)?>\s*)?\}")
_BRACKET_BOX = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*"
                          r"(-?\d+(?:\.\d+)?)\s*\]")
_TASK_TAG = re.compile(r"\[(?:refer|grounding|identify|detection|caption|vqa)\]", re.IGNORECASE)
_BOILERPLATE = re.compile(
    r"^(?:please\s+)?(?:give me the locations? of|give the locations? of|where (?:is|are)|locate|find|detect|"
    r"identify|output the bounding box(?:es)? of|what is the location of|show me)\s+(?:all\s+)?(?:the\s+)?",
    re.IGNORECASE)
_SEPARATORS = re.compile(r"(?:<delim>|[\s,;.]|and)+")


def geochat_boxes(text: str) -> list[tuple[str, ...]]:
    """The 0–100 boxes written in ``text`` (GeoChat ``{<x1><y1><x2><y2>|<θ>}``, the angle dropped, or
    TEOChatlas ``[x1, y1, x2, y2]``), as number strings in order of appearance."""
    found = [(m.start(), m.groups()) for m in _GEOCHAT_BOX.finditer(text)]
    found += [(m.start(), m.groups()) for m in _BRACKET_BOX.finditer(text)]
    return [groups for _, groups in sorted(found)]


def _bracket(box: Sequence[str]) -> str:
    return "[" + ", ".join(box) + "]"


def geochat_category(question: str) -> str:
    """The object a GeoChat grounding question asks for: the ``<p>…</p>`` phrase when there is one, else the
    question without image tag, task tags (``[refer]``…), boxes and leading boilerplate ("give me the
    location of", "where is", "find the", …), lower-cased and without end punctuation. Heuristic."""
    phrase = re.search(r"<p>(.*?)</p>", question)
    if phrase:
        return phrase.group(1).strip().lower()
    text = _TASK_TAG.sub(" ", question.replace("<image>", " "))
    text = _BRACKET_BOX.sub(" ", _GEOCHAT_BOX.sub(" ", text))
    text = _BOILERPLATE.sub("", " ".join(text.split()))
    return text.strip(" ?.!:").lower()


def _rewrite_answer(answer: str, question: str) -> str:
    """A GeoChat answer with boxes in the ``[x1, y1, x2, y2]`` form (§2.4): an answer made only of boxes
    becomes ``x1,y1,x2,y2 {category}`` lines; a box of the question repeated in the answer is removed."""
    boxes = geochat_boxes(answer)
    if not boxes:
        return answer
    rest = _SEPARATORS.sub("", _BRACKET_BOX.sub("", _GEOCHAT_BOX.sub("", re.sub(r"</?p>", "", answer))))
    if not rest:
        category = geochat_category(question)
        return "\n".join(",".join(box) + (f" {category}" if category else "") for box in boxes)
    asked = {tuple(float(v) for v in b) for b in geochat_boxes(question)}
    removed = 0

    def replace(match: re.Match) -> str:
        nonlocal removed
        if tuple(float(v) for v in match.groups()) in asked:
            removed += 1
            return ""
        return _bracket(match.groups())

    text = _BRACKET_BOX.sub(replace, _GEOCHAT_BOX.sub(replace, answer))
    if removed:  # close the gap the box leaves: "a car  parked" → "a car parked", "a car ." → "a car."
        text = re.sub(r" +([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()
    return text


def geochat_conversations(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                          source: str = "geochat") -> list[Conversation]:
    """The conversations of a GeoChat / TEOChatlas instruct JSON (LLaVA-style) with their 0–100 boxes as
    ``[x1, y1, x2, y2]`` (``coords="norm100"`` on records with boxes, so training rewrites them into pixels
    of the resized frame). Records are read strictly by :func:`~rs_shared.data.conversations.read_conversations`
    (an error names the file and record); video (multi-frame) records are not supported."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GeoChat instruct JSON does not exist")
    out = []
    for conv in read_conversations(path, image_root):
        messages, has_boxes, question = [], False, ""
        for m in conv.messages:
            text = join_image_tags(m.content)
            if m.role == "user":
                question = text
                new = _GEOCHAT_BOX.sub(lambda g: _bracket(g.groups()), text)
            elif m.role == "assistant":
                new = _rewrite_answer(text, question)
            else:
                new = text
            has_boxes |= bool(geochat_boxes(text))
            first = sum(isinstance(i, ImageItem) for msg in messages for i in msg.content)
            messages.append(Message(m.role, split_image_tags(new, first_index=first)))
        try:
            out.append(Conversation(conv.id, tuple(messages), conv.images, conv.source or source,
                                    "norm100" if has_boxes else conv.coords, conv.meta))
        except ValueError as e:
            raise DataFormatError(path, str(e), conv.id) from None
    return out


__all__ = ["BOX_KINDS", "GroundingItem", "detection_conversations", "geochat_boxes", "geochat_category",
           "geochat_conversations", "grounding_conversations", "grounding_eval_records", "read_dior_rsvg",
           "read_refgeo", "write_eval_jsonl", "write_source"]
