"""Grounded conversation generation (GCG) metrics: GLaMM's protocol (``groundingLMM/eval/gcg/evaluate.py``),
which GeoPixel and CLV-Net report on GeoPixelD.

Per image the model produces a grounded caption (``<p> phrase </p> [SEG]`` markup) and one binary mask per
``[SEG]``; the ground truth is a caption, its phrases and one mask per phrase. Five numbers are computed
(all returned as fractions; papers report × 100):

* **AP50**: pycocotools ``COCOeval`` with ``iouType="segm"`` over all images, class-agnostic (every mask is
  category 1), every predicted mask with score 1.0, ``maxDets`` 100; ``stats[1]`` (AP at IoU 0.50, area
  all). With all scores equal, ranking ties keep the prediction order (COCOeval sorts with a stable
  mergesort): within an image the order of the masks, across images the sorted image ids (COCOeval sorts
  ``imgIds``). Pass the image ids of the ground-truth file as keys to reproduce a reference run.
* **mIoU**: per image, the IoU matrix predictions × ground truths; greedy one-to-one pairing — take the
  global maximum (first in row-major order on ties), record it, remove its row and column, stop when the
  maximum is 0 or nothing is left. Image score = mean of the recorded IoUs (0 when none, e.g. no predicted
  masks); mIoU = mean over all images. Unmatched masks cost nothing else.
* **recall**: per image, the IoU matrix ground truths × predictions and the text-similarity matrix
  ground-truth phrases × predicted phrases; take the global maximum-IoU pair; if IoU < 0.5 **or** text
  similarity < 0.5, *stop* (no further pairs for this image), else count a true positive and zero that
  pair's row and column. Recall = Σ true positives / Σ ground-truth phrases. Phrases and masks are matched
  by index: when the chosen pair has no predicted phrase (more predicted masks than phrases), GLaMM's loop
  raises an ``IndexError`` that its evaluation catches, so that image counts its ground-truth phrases but
  no true positive (reported as ``recall_errors``).
* **METEOR**, **CIDEr**: :func:`rs_shared.metrics.captioning.caption_metrics` (COCO caption protocol, PTB
  tokenizer, CIDEr-D) of the cleaned predicted captions against the one cleaned ground-truth caption per
  image.

Text similarity follows GLaMM: the cosine of ``bert-base-uncased`` sentence vectors, each the mean of the
last hidden state over *all* tokens including ``[CLS]`` and ``[SEP]`` (:class:`BertSentenceSimilarity`).
Any callable with the :class:`TextSimilarity` signature can replace it.

Caption cleaning is :func:`rs_shared.data.gcg.clean_caption` (GLaMM's rule): ``"The <p> car </p> [SEG] is
red."`` → caption ``"The car is red."``, phrases ``["car"]``. Masks are binary, at the original image
size (threshold the decoder's logits at > 0 first). Where GLaMM divides 0 by 0 (IoU of two empty masks)
this module uses IoU 0.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.gcg import GCGSample, parse_grounded_caption
from .captioning import caption_metrics, check_caption_options

IOU_THRESHOLD = 0.5
TEXT_SIMILARITY_THRESHOLD = 0.5
CAPTION_METRICS = ("METEOR", "CIDEr")


class TextSimilarity(Protocol):
    """Phrase similarity: ``(n,)`` and ``(m,)`` strings → ``(n, m)`` array of cosine similarities."""

    def __call__(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> np.ndarray: ...


class BertSentenceSimilarity:
    """GLaMM's phrase similarity: cosine of BERT sentence vectors.

    A sentence vector is the mean of ``last_hidden_state`` over every token of the sentence, ``[CLS]`` and
    ``[SEP]`` included (tokenised with truncation to 512 tokens). Sentences are encoded in padded batches
    and the mean skips the padding, which equals GLaMM's one-sentence-at-a-time encoding up to float
    rounding.

    Args:
        model_dir: local directory of ``bert-base-uncased`` in transformers format (``config.json``, weights,
            ``vocab.txt``/``tokenizer.json``); nothing is downloaded.
        batch_size: sentences per forward pass.
        device: torch device of the model.
    """

    def __init__(self, model_dir: str | os.PathLike, *, batch_size: int = 64, device: str = "cpu"):
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(
                f"BERT model directory {model_dir} does not exist. GCG recall needs a local copy of "
                "bert-base-uncased (transformers format), e.g. made on a machine with hub access by "
                "`hf download google-bert/bert-base-uncased --local-dir DIR`.")
        from transformers import AutoModel, AutoTokenizer  # imported here: it is slow to import
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{model_dir} is not a loadable BERT model directory: {e}") from e
        self.batch_size = batch_size
        self.device = device

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, hidden)`` float32 sentence vectors."""
        import torch

        vectors = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                       max_length=512, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                keep = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vectors.append(((hidden * keep).sum(1) / keep.sum(1)).float().cpu().numpy())
        return np.concatenate(vectors) if vectors else np.zeros((0, self.model.config.hidden_size), np.float32)

    def __call__(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> np.ndarray:
        """``(len(texts_a), len(texts_b))`` cosine similarities (0 against a zero vector)."""
        a, b = (_unit_rows(self.embed(t).astype(np.float64)) for t in (texts_a, texts_b))
        return a @ b.T


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


# --- inputs --------------------------------------------------------------------------------------------

def _binary_masks(masks: object, what: str) -> np.ndarray:
    """``(N, H, W)`` bool array; an empty input (no masks) may have any shape and dtype."""
    arr = np.asarray(masks)
    if arr.size == 0 and (arr.ndim != 3 or len(arr) == 0):
        return np.zeros(arr.shape if arr.ndim == 3 else (0, 0, 0), dtype=bool)
    if arr.ndim != 3:
        raise ValueError(f"{what} masks must be an (N, H, W) array, got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.dtype.kind not in "iu" or not ((arr == 0) | (arr == 1)).all():
            raise ValueError(f"{what} masks must be binary (bool or 0/1 integers), got {arr.dtype}; "
                             "threshold mask logits at > 0 first")
        arr = arr.astype(bool)
    return arr


@dataclass(frozen=True)
class GCGPrediction:
    """A model's output for one image: cleaned caption, grounded phrases in order, ``(P, H, W)`` bool masks.

    ``masks[k]`` belongs to ``phrases[k]`` (the ``k``-th ``[SEG]``). The counts may differ, as model output
    does; the metrics treat a mismatch as GLaMM does. Use :meth:`from_markup` for raw model text.
    """

    caption: str
    phrases: tuple[str, ...]
    masks: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "phrases", tuple(self.phrases))
        object.__setattr__(self, "masks", _binary_masks(self.masks, "predicted"))

    @classmethod
    def from_markup(cls, text: str, masks: object) -> GCGPrediction:
        """From raw generated text with ``<p> … </p> [SEG]`` markup (cleaned by GLaMM's rule)."""
        parsed = parse_grounded_caption(text)
        return cls(parsed.caption, parsed.phrases, masks)


@dataclass(frozen=True)
class GCGGroundTruth:
    """Reference for one image: cleaned caption, phrases, and ``(G, H, W)`` bool masks, one per phrase."""

    caption: str
    phrases: tuple[str, ...]
    masks: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "phrases", tuple(self.phrases))
        object.__setattr__(self, "masks", _binary_masks(self.masks, "ground-truth"))
        if len(self.masks) != len(self.phrases):
            raise ValueError(f"ground truth has {len(self.phrases)} phrases but {len(self.masks)} masks; "
                             "one mask per phrase expected")

    @classmethod
    def from_sample(cls, sample: GCGSample) -> GCGGroundTruth:
        """From a GeoPixelD sample: its cleaned caption, phrases and pycocotools-rasterised phrase masks."""
        return cls(sample.caption.caption, sample.caption.phrases, sample.phrase_masks())


# --- per-image protocol steps --------------------------------------------------------------------------

def image_miou(iou: np.ndarray) -> float:
    """GLaMM's per-image mIoU from the ``(num_pred, num_gt)`` IoU matrix (greedy one-to-one pairing)."""
    iou = np.array(iou, dtype=np.float64)  # a copy: the loop overwrites it
    recorded = []
    while iou.size and iou.max() > 0:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        recorded.append(iou[i, j])
        iou[i, :] = 0
        iou[:, j] = 0
    return float(np.mean(recorded)) if recorded else 0.0


def image_true_positives(iou: np.ndarray, similarity: np.ndarray, *, iou_threshold: float = IOU_THRESHOLD,
                         similarity_threshold: float = TEXT_SIMILARITY_THRESHOLD) -> int | None:
    """GLaMM's per-image recall matching (``find_best_matches``): the number of true positives.

    ``iou`` is ``(num_gt, num_pred_masks)``, ``similarity`` ``(num_gt_phrases, num_pred_phrases)``. Returns
    ``None`` where GLaMM's loop raises an ``IndexError`` (the chosen pair has no similarity entry), which
    its evaluation scores as 0 true positives.
    """
    iou = np.array(iou, dtype=np.float64)  # a copy: the loop overwrites it
    similarity = np.asarray(similarity)
    matches = 0
    while iou.size:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < iou_threshold:
            break
        if i >= similarity.shape[0] or j >= similarity.shape[1]:
            return None
        if similarity[i, j] < similarity_threshold:
            break
        matches += 1
        iou[i, :] = 0
        iou[:, j] = 0
    return matches


def _rles(masks: np.ndarray) -> list[dict]:
    if len(masks) == 0:
        return []
    return coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def _iou(pred: list[dict], gt: list[dict]) -> np.ndarray:
    """``(len(pred), len(gt))`` mask IoU (intersection / union; 0 for two empty masks)."""
    if not pred or not gt:
        return np.zeros((len(pred), len(gt)))
    return np.asarray(coco_mask.iou(pred, gt, [0] * len(gt)), dtype=np.float64).reshape(len(pred), len(gt))


def _ap50(pred: list[list[dict]], gt: list[list[dict]]) -> float:
    """COCOeval segm AP at IoU 0.5 (``stats[1]``) for images ``1..n`` in this order; NaN without any GT mask."""
    # COCOeval decodes each annotation through its image's height and width
    sizes = [next((r["size"] for r in (*p, *g)), [0, 0]) for p, g in zip(pred, gt, strict=True)]
    images = [{"id": image_id, "height": int(h), "width": int(w)} for image_id, (h, w) in enumerate(sizes, 1)]
    annotations = []
    for image_id, rles in enumerate(gt, 1):
        for rle in rles:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "segmentation": rle, "area": float(coco_mask.area(rle)),
                                "bbox": coco_mask.toBbox(rle).tolist(), "iscrowd": 0})
    if not annotations:
        return float("nan")
    results = [{"image_id": image_id, "category_id": 1, "segmentation": rle, "score": 1.0}
               for image_id, rles in enumerate(pred, 1) for rle in rles]
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools reports progress with print()
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations,
                           "categories": [{"id": 1, "name": "object"}]}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="segm")  # safe: pycocotools class, not eval()
        evaluator.params.catIds = [1]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


# --- evaluation ----------------------------------------------------------------------------------------

def gcg_metrics(
    predictions: Mapping[Hashable, GCGPrediction],
    ground_truth: Mapping[Hashable, GCGGroundTruth],
    similarity: TextSimilarity | str | os.PathLike,
    *,
    captions: Sequence[str] = CAPTION_METRICS,
    tokenizer: str = "ptb",
) -> dict[str, float | int | str | bool]:
    """GLaMM's GCG evaluation (module docstring): AP50, mIoU, recall, METEOR and CIDEr.

    Args:
        predictions: one :class:`GCGPrediction` per image id.
        ground_truth: one :class:`GCGGroundTruth` per image id; the same ids (ints or strs). Images are
            taken in sorted id order, as COCOeval does.
        similarity: a :class:`TextSimilarity`, or the path of a local ``bert-base-uncased`` directory for
            :class:`BertSentenceSimilarity` (GLaMM's choice).
        captions: caption metrics to add (names of :func:`~rs_shared.metrics.captioning.caption_metrics`);
            ``()`` skips them (no Java needed).
        tokenizer: caption tokenizer, ``"ptb"`` (standard) or ``"simple"`` (non-standard).

    Returns:
        ``AP50`` (NaN when no image has a ground-truth mask), ``mIoU``, ``recall`` (0 without ground-truth
        phrases), the caption metrics, and counts: ``num_images``, ``num_gt_masks``, ``num_pred_masks``,
        ``true_positives``, ``gt_phrases``, ``recall_errors`` (images scored 0 true positives because GLaMM's
        matching loop fails on them), plus ``tokenizer`` and ``standard`` when captions are scored.
    """
    ids = _image_ids(predictions, ground_truth)
    captions = check_caption_options(captions, tokenizer)  # fail before the long part, e.g. without Java
    if isinstance(similarity, str | os.PathLike):
        similarity = BertSentenceSimilarity(similarity)

    pred_rles, gt_rles, mious = [], [], []
    true_positives = gt_phrases = recall_errors = 0
    for key in ids:
        pred, gt = predictions[key], ground_truth[key]
        if len(pred.masks) and len(gt.masks) and pred.masks.shape[1:] != gt.masks.shape[1:]:
            raise ValueError(f"image {key!r}: predicted masks are {pred.masks.shape[1:]} (H, W) but the ground "
                             f"truth is {gt.masks.shape[1:]}; predict at the original image size")
        pred_rles.append(_rles(pred.masks))
        gt_rles.append(_rles(gt.masks))
        iou = _iou(pred_rles[-1], gt_rles[-1])
        mious.append(image_miou(iou))

        gt_phrases += len(gt.phrases)
        if iou.size and iou.max() >= IOU_THRESHOLD:  # otherwise the matching loop stops at once
            sims = _similarity_matrix(similarity, gt.phrases, pred.phrases)
            matched = image_true_positives(iou.T, sims)
            recall_errors += matched is None
            true_positives += matched or 0

    results: dict[str, float | int | str | bool] = {
        "AP50": _ap50(pred_rles, gt_rles),
        "mIoU": float(np.mean(mious)),
        "recall": true_positives / gt_phrases if gt_phrases else 0.0,
    }
    if captions:
        results.update(caption_metrics({k: predictions[k].caption for k in ids},
                                       {k: [ground_truth[k].caption] for k in ids}, captions, tokenizer=tokenizer))
    results.update(
        num_images=len(ids),
        num_gt_masks=sum(len(r) for r in gt_rles),
        num_pred_masks=sum(len(r) for r in pred_rles),
        true_positives=true_positives,
        gt_phrases=gt_phrases,
        recall_errors=recall_errors,
    )
    return results


def _similarity_matrix(similarity: TextSimilarity, gt: Sequence[str], pred: Sequence[str]) -> np.ndarray:
    shape = (len(gt), len(pred))
    sims = np.asarray(similarity(gt, pred), dtype=np.float64) if pred else np.zeros(shape)
    if sims.shape != shape:
        raise ValueError(f"text similarity returned shape {sims.shape} for {shape[0]} x {shape[1]} phrases")
    return sims


def _image_ids(predictions: Mapping, ground_truth: Mapping) -> list:
    missing = [k for k in ground_truth if k not in predictions]
    extra = [k for k in predictions if k not in ground_truth]
    if missing or extra:
        raise ValueError(f"predictions and ground truth must cover the same image ids; no prediction for "
                         f"{missing[:5]}, no ground truth for {extra[:5]}")
    if not ground_truth:
        raise ValueError("no images to evaluate")
    try:
        return sorted(ground_truth)
    except TypeError:
        raise ValueError("image ids must be mutually comparable (all int or all str); COCOeval sorts them") from None
