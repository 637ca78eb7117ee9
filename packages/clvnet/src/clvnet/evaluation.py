"""GCG evaluation of CLV-Net (spec §4: GLaMM's protocol as GeoPixel and CLV-Net report it).

:func:`evaluate_gcg` runs ``model.generate_grounded`` over evaluation batches and scores the outputs with
:func:`rs_shared.metrics.gcg.gcg_metrics` (AP50, mIoU, recall, METEOR, CIDEr), adding diagnostics: the mean
number of predicted phrases, the fraction of outputs whose ``[SEG]`` count differs from their ``<p>`` phrase
count (parse problems), and one record per image. :func:`write_report` writes ``metrics.json``,
``metrics.md`` and ``predictions.jsonl``.

Evaluation data come as :class:`clvnet.data.GCGEvalDataset` (batched here with
:func:`clvnet.data.collate_with_records`) or as any iterable of ``(batch, records)`` pairs in that format:
``batch`` is the model input of the interfaces file with ``gt_masks`` (``B`` bool tensors ``(N_i, H, W)``, one
mask per phrase, at the original size) and ``boxes``; ``records[i]`` has the tile's ``id`` (int or str, unique),
``name``, cleaned ``caption`` and ``phrases`` (:data:`RECORD_FIELDS`).

Recall needs a phrase similarity. The standard one is GLaMM's BERT cosine (pass the directory of a local
``bert-base-uncased``); :class:`ExactMatchSimilarity` is a non-standard stand-in for synthetic data.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as coco_mask
from rs_shared.data.gcg import parse_grounded_caption
from rs_shared.data.masks import mask_to_rle
from rs_shared.metrics import report as shared_report
from rs_shared.metrics.captioning import check_caption_options
from rs_shared.metrics.gcg import (
    CAPTION_METRICS,
    BertSentenceSimilarity,
    GCGGroundTruth,
    GCGPrediction,
    TextSimilarity,
    gcg_metrics,
    image_miou,
)
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


PROTOCOL = ("GLaMM GCG evaluation (groundingLMM eval/gcg) as reused by GeoPixel: GLaMM caption cleaning, COCOeval "
            "segm AP50 class-agnostic with every score 1.0, greedy one-to-one mIoU, greedy recall with IoU >= 0.5 and "
            "text similarity >= 0.5, pycocoevalcap METEOR and CIDEr-D (spec §4)")
RECORD_FIELDS = ("id", "caption", "phrases")
HEADLINE = ("AP50", "mIoU", "recall", "METEOR", "CIDEr")
EXACT_MATCH = "exact"


class ExactMatchSimilarity:
    """Non-standard phrase similarity for data without BERT: 1.0 when two phrases are equal after collapsing
    whitespace and lower-casing, else 0.0 (``(n, m)`` float array, the :class:`TextSimilarity` signature)."""

    name = "exact-match (non-standard; GLaMM uses bert-base-uncased cosine)"

    def __call__(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> np.ndarray:
        a = [" ".join(t.lower().split()) for t in texts_a]
        b = [" ".join(t.lower().split()) for t in texts_b]
        return np.array([[float(x == y) for y in b] for x in a], dtype=np.float64).reshape(len(a), len(b))


def resolve_similarity(similarity: TextSimilarity | str | os.PathLike | None) -> tuple[TextSimilarity, str]:
    """``(similarity, description)``: ``None`` or ``"exact"`` → :class:`ExactMatchSimilarity`; a directory →
    :class:`~rs_shared.metrics.gcg.BertSentenceSimilarity` on it (GLaMM's choice); a callable is kept."""
    if similarity is None or (isinstance(similarity, str) and similarity == EXACT_MATCH):
        return ExactMatchSimilarity(), ExactMatchSimilarity.name
    if isinstance(similarity, str | os.PathLike):
        return BertSentenceSimilarity(similarity), f"bert-base-uncased sentence cosine ({similarity})"
    return similarity, getattr(similarity, "name", type(similarity).__name__)


def _batches(data, batch_size: int) -> Iterable[tuple[Mapping, Sequence[Mapping]]]:
    """``(batch, records)`` pairs from a map-style dataset with a ``processor`` (GCGEvalDataset), or ``data``."""
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        processor = getattr(data, "processor", None)
        if processor is None:
            raise ValueError(f"cannot batch a {type(data).__name__} without a 'processor' attribute; pass a "
                             "GCGEvalDataset or a DataLoader of (batch, records) pairs")
        from .data import collate_with_records  # the data pipeline's batching of tiles

        return DataLoader(data, batch_size=batch_size, shuffle=False,
                          collate_fn=functools.partial(collate_with_records, processor))
    return data


def _ground_truth(item, number: int) -> tuple[Mapping, list[tuple[Any, GCGGroundTruth, dict[str, Any]]]]:
    """``batch`` and ``(id, ground truth, record info)`` per image of an evaluation ``(batch, records)`` pair."""
    if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], Mapping)):
        raise ValueError(f"evaluation batch {number} must be a (batch dict, records) pair, as "
                         f"clvnet.data.collate_with_records makes; got {type(item).__name__}")
    batch, records = item
    if "gt_masks" not in batch:
        raise ValueError(f"evaluation batch {number} has no 'gt_masks' (ground-truth masks, one per phrase)")
    masks, boxes = list(batch["gt_masks"]), batch.get("boxes")
    if len(records) != len(masks):
        raise ValueError(f"evaluation batch {number}: {len(records)} records but {len(masks)} gt_masks")
    out = []
    for k, (record, gt_masks) in enumerate(zip(records, masks, strict=True)):
        missing = [f for f in RECORD_FIELDS if f not in record]
        if missing:
            raise ValueError(f"evaluation batch {number}, record {k} lacks {missing}")
        image_id = record["id"]
        gt_masks = gt_masks.cpu().numpy() if isinstance(gt_masks, torch.Tensor) else np.asarray(gt_masks)
        try:
            gt = GCGGroundTruth(record["caption"], record["phrases"], gt_masks.astype(bool))
        except ValueError as e:
            raise ValueError(f"image {image_id!r}: {e}") from None
        info = {"name": record.get("name"), "box": None if boxes is None else [float(v) for v in boxes[k]]}
        out.append((image_id, gt, info))
    return batch, out


def _to_device(batch: Mapping, device: torch.device | None) -> dict:
    if device is None:
        return dict(batch)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _model_device(model) -> torch.device | None:
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return None if first is None else first.device


def _image_record(image_id, pred, gt: GCGGroundTruth, info: Mapping[str, Any]) -> dict[str, Any]:
    """One image's output, ground-truth counts and image mIoU (JSON-ready; masks as COCO RLE)."""
    masks = np.asarray(pred.masks, dtype=bool)
    pred_rles = [mask_to_rle(m) for m in masks]
    gt_rles = [mask_to_rle(m) for m in gt.masks]
    iou = np.zeros((len(pred_rles), len(gt_rles)))
    if pred_rles and gt_rles:
        encoded = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in (*pred_rles, *gt_rles)]
        iou = np.asarray(coco_mask.iou(encoded[:len(pred_rles)], encoded[len(pred_rles):], [0] * len(gt_rles)))
    num_seg = parse_grounded_caption(pred.text).num_seg
    scores = getattr(pred, "mask_scores", None)
    return {
        "id": image_id, "name": info["name"], "text": pred.text, "caption": pred.caption,
        "phrases": list(pred.phrases), "masks": pred_rles,
        "mask_scores": None if scores is None else [float(s) for s in np.asarray(scores)], "box": info["box"],
        "num_seg": num_seg, "num_masks": len(pred_rles), "parse_problem": num_seg != len(pred.phrases),
        "gt_caption": gt.caption, "gt_phrases": list(gt.phrases),
        "miou": image_miou(iou.reshape(len(pred_rles), len(gt_rles))),
    }


def evaluate_gcg(
    model,
    dataset_or_loader: Dataset | DataLoader | Iterable[tuple[Mapping, Sequence[Mapping]]],
    *,
    similarity: TextSimilarity | str | os.PathLike | None = None,
    caption_metrics: bool = True,
    caption_tokenizer: str = "ptb",
    batch_size: int = 1,
    tokenizer=None,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate grounded captions for an evaluation set and score them by the GCG protocol (spec §4).

    Args:
        model: has ``generate_grounded(batch, tokenizer, max_new_tokens=None) -> list[GroundedPrediction]``
            (one per image, with ``text``, ``caption``, ``phrases``, ``masks`` ``(N, H, W)`` bool at the original
            size, ``mask_scores``).
        dataset_or_loader: a :class:`clvnet.data.GCGEvalDataset` (batched here by ``batch_size``), or a DataLoader
            or any iterable of ``(batch, records)`` pairs (module docstring).
        similarity: phrase similarity for recall: a local ``bert-base-uncased`` directory (standard), a
            :class:`~rs_shared.metrics.gcg.TextSimilarity`, or ``None``/``"exact"`` for exact matching.
        caption_metrics: add METEOR and CIDEr (pycocoevalcap; the PTB tokenizer and METEOR need Java ≥ 8,
            checked before generation starts).
        caption_tokenizer: ``"ptb"`` (standard) or ``"simple"`` (no Java; no METEOR then).
        batch_size: images per generation call when batching a dataset.
        tokenizer: passed to ``generate_grounded`` (``CLVNetModel`` decodes with it); default: the dataset's
            ``processor.tokenizer``.
        max_new_tokens: generation budget (``None``: the model's default).
        progress: show a progress bar.

    Returns:
        ``AP50``, ``mIoU``, ``recall`` (fractions), ``METEOR``, ``CIDEr`` (when ``caption_metrics``), the counts of
        :func:`~rs_shared.metrics.gcg.gcg_metrics`, ``mean_phrases`` (predicted phrases per image),
        ``parse_problem_rate`` (outputs whose ``[SEG]`` count ≠ their phrase count), ``similarity`` (which text
        similarity recall used), ``caption_metrics`` (``"skipped"`` or the tokenizer used) and ``records``
        (one dict per image, see :func:`write_report`).
    """
    captions = CAPTION_METRICS if caption_metrics else ()
    if caption_tokenizer == "simple":
        captions = tuple(m for m in captions if m != "METEOR")
    captions = check_caption_options(captions, caption_tokenizer)  # e.g. Java is missing: fail before generating
    similarity, similarity_name = resolve_similarity(similarity)
    if tokenizer is None:
        tokenizer = getattr(getattr(dataset_or_loader, "processor", None), "tokenizer", None)

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    device = _model_device(model)
    predictions, ground_truth, records = {}, {}, []
    try:
        with torch.no_grad():
            for number, item in enumerate(tqdm(_batches(dataset_or_loader, batch_size), desc="eval gcg",
                                               disable=not progress, leave=False)):
                batch, truth = _ground_truth(item, number)
                outputs = model.generate_grounded(_to_device(batch, device), tokenizer, max_new_tokens=max_new_tokens)
                if len(outputs) != len(truth):
                    raise RuntimeError(f"generate_grounded returned {len(outputs)} predictions for a batch of "
                                       f"{len(truth)} images")
                for (image_id, gt, info), pred in zip(truth, outputs, strict=True):
                    if image_id in ground_truth:
                        raise ValueError(f"image id {image_id!r} occurs twice in the evaluation set")
                    ground_truth[image_id] = gt
                    predictions[image_id] = GCGPrediction(pred.caption, pred.phrases, np.asarray(pred.masks, bool))
                    records.append(_image_record(image_id, pred, gt, info))
    finally:
        if was_training:
            model.train()
    if not records:
        raise ValueError("the evaluation set is empty")

    result: dict[str, Any] = dict(gcg_metrics(predictions, ground_truth, similarity, captions=captions,
                                              tokenizer=caption_tokenizer))
    result.update(
        mean_phrases=float(np.mean([len(r["phrases"]) for r in records])),
        parse_problem_rate=float(np.mean([r["parse_problem"] for r in records])),
        similarity=similarity_name,
        caption_metrics=caption_tokenizer if captions else "skipped",
        records=records,
    )
    return result


def summary_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of an :func:`evaluate_gcg` result for a table (metrics × 100; CIDEr × 100 as
    papers print it)."""
    row: dict[str, Any] = {"images": result["num_images"]}
    row.update({name: 100 * result[name] for name in HEADLINE if name in result})
    row.update({"mean phrases": result["mean_phrases"], "parse problems %": 100 * result["parse_problem_rate"]})
    return row


def write_report(result: Mapping[str, Any], out_dir: str | os.PathLike, *,
                 config: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write an :func:`evaluate_gcg` result into ``out_dir``; returns the paths by name.

    * ``metrics.json``: an :func:`rs_shared.metrics.report.write_report` report (protocol, results without the
      records, ``config``, versions, git revision);
    * ``metrics.md``: the headline numbers as a Markdown table (× 100), plus which similarity and caption
      tokenizer were used;
    * ``predictions.jsonl``: one JSON object per image: ``id``, ``text``, ``caption``, ``phrases``, ``masks``
      (COCO RLE ``{"size": [H, W], "counts": str}`` per mask), ``mask_scores``, ``box``, ``num_seg``,
      ``num_masks``, ``parse_problem``, ``gt_caption``, ``gt_phrases``, ``miou`` (the image's mIoU).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in result.items() if k != "records"}
    paths = {"metrics.json": out / "metrics.json", "metrics.md": out / "metrics.md",
             "predictions.jsonl": out / "predictions.jsonl"}
    shared_report.write_report(paths["metrics.json"], metrics, protocol=PROTOCOL,
                               config=None if config is None else dict(config))
    row = summary_row(result)
    lines = ["# clvnet-eval: grounded captioning (GCG)", "", PROTOCOL + ".", "",
             shared_report.markdown_table([row], list(row)), "",
             f"Recall text similarity: {result['similarity']}. Caption metrics: {result['caption_metrics']}.", ""]
    paths["metrics.md"].write_text("\n".join(lines), encoding="utf-8")
    with open(paths["predictions.jsonl"], "w", encoding="utf-8") as f:
        for record in result["records"]:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return paths
