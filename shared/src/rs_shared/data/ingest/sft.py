"""``rs-data convert qa-to-sft``: images plus a table of question/answer pairs → chat/SFT conversations in the
LLaVA format that :mod:`rs_shared.data.conversations` reads (and RSCoVLM fine-tunes on)::

    qa.jsonl        {"image": "images/0001.png", "question": "How many planes are there?", "answer": "3"}
                    {"image": "images/0001.png", "question": "Is there a hangar?", "answer": "yes"}
                    (or CSV/TSV with the columns image,question,answer; optional: id, split)
    →  <out>/images/<file>          copies of the images
       <out>/<split>.json            LLaVA records: user "<image>\\n<question>", assistant "<answer>"
       <out>/qa/<split>.jsonl        val/test only: the held-out pairs as {"id", "image", "question", "answer"}
                                     (image paths relative to that file), the form VQA evaluators read

Each pair becomes one single-turn conversation; its id is the row's ``id`` field, else ``<image stem>-<k>`` for
the ``k``-th pair of that image. All pairs of an image go to one split (:func:`.table.assign_splits`; the default
is 80 % train, 20 % test). For detection data in DOTA's ``labelTxt`` form use ``rs-data convert dota-to-sft``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..common import image_size
from ..conversations import IMAGE_TAG, Conversation, ImageItem, Message, TextItem, write_llava
from .table import staged_output, SPLITS, Row, assign_splits, read_table

COLUMNS = ("image", "question", "answer")


def _turn_text(row: Row, key: str) -> str:
    text = row.text(key)
    if IMAGE_TAG in text:
        raise row.error(f"field {key!r} contains {IMAGE_TAG!r}, which chat formats read as an image placeholder")
    return text


def qa_to_sft(table: str | os.PathLike, out: str | os.PathLike, root: str | os.PathLike | None = None,
              p_train: float = 0.8, p_val: float = 0.0, seed: int = 0) -> dict[str, int]:
    """Convert ``table`` (CSV/TSV/JSON/JSON lines with ``image``, ``question`` and ``answer``; image paths relative
    to ``root``, default the table's folder) into conversation files at the new directory ``out``. Returns the
    conversations per split and the number of images."""
    annotations = read_table(table, COLUMNS)
    root = Path(root) if root is not None else annotations.path.parent
    by_image: dict[str, list[Row]] = {}
    for row in annotations.rows:
        _turn_text(row, "question")
        _turn_text(row, "answer")
        by_image.setdefault(str(row.path("image", root).resolve()), []).append(row)
    splits = assign_splits(by_image, annotations.has_splits, p_train, p_val, seed)

    with staged_output(out) as staging:
        copies: dict[str, Row] = {}
        ids: dict[str, Row] = {}
        conversations: dict[str, list[Conversation]] = {s: [] for s in SPLITS}
        held_out: dict[str, list[str]] = {s: [] for s in SPLITS}
        for key, rows in by_image.items():
            source = Path(key)
            image_size(source, rows[0].record)  # exists and is a readable image
            if source.name in copies:
                raise rows[0].error(f"another image is also named {source.name!r} ({copies[source.name].where}); "
                                    "images are copied into one folder, so rename one")
            copies[source.name] = rows[0]
            target = staging / "images" / source.name
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(source, target)
            split = splits[key]
            for k, row in enumerate(rows):
                ident = row.text("id") if "id" in row.values else f"{source.stem}-{k}"
                if ident in ids:
                    raise row.error(f"id {ident!r} is used again (first by {ids[ident].where}); ids must be unique")
                ids[ident] = row
                question, answer = _turn_text(row, "question"), _turn_text(row, "answer")
                messages = (Message("user", (ImageItem(0), TextItem(question))),
                            Message("assistant", (TextItem(answer),)))
                conversations[split].append(Conversation(ident, messages, (target,)))
                if split != "train":
                    record = {"id": ident, "image": f"../images/{source.name}", "question": question, "answer": answer}
                    held_out[split].append(json.dumps(record, ensure_ascii=False) + "\n")
        for split, records in conversations.items():
            if records:
                write_llava(staging / f"{split}.json", records, image_root=staging)
            if held_out[split]:
                (staging / "qa").mkdir(exist_ok=True)
                (staging / "qa" / f"{split}.jsonl").write_text("".join(held_out[split]), encoding="utf-8")
    return {s: len(conversations[s]) for s in SPLITS} | {"images": len(by_image)}
