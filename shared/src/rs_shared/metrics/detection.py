"""Object detection and visual grounding metrics: VOC/DOTA AP and mAP, RSCoVLM's APnc, grounding Acc@0.5.

**Matching** (PASCAL VOC / DOTA devkit / mmrotate ``eval_rbbox_map``), per class and image, going through
the detections by descending score:

- each detection takes the ground-truth box (GT) of maximal IoU in its image (on ties, the GT listed first);
- IoU ≥ threshold and that GT not yet matched → true positive (TP), and the GT is matched;
- IoU ≥ threshold and that GT already matched → false positive (FP): there is no fallback to the second-best GT;
- IoU ≥ threshold and that GT ignored (``difficult`` with ``ignore_difficult=True``) → neither TP nor FP;
- IoU < threshold, or no GT of that class in the image → FP.

Ignored GTs do not count towards the number of GTs. The VOC and DOTA devkits test ``IoU > threshold``;
mmdet/mmrotate and RSCoVLM (spec §5.3) use ``≥``, as here.

**Ranking.** Detections are sorted by descending score with a *stable* sort, so equal scores keep the
order image by image (in the order of the input lists), then box by box within an image. The reference
implementations sort with ``np.argsort(-scores)`` (quicksort), whose order among equal scores is
unspecified; with all scores equal (APnc) their results may differ from these by a few tenths of a point.

**Curves and AP** (per class): ``recall = cumTP / max(nGT, ε)``, ``precision = cumTP / max(cumTP + cumFP, ε)``
with ε the float32 machine epsilon, as mmdet. ``"voc07"``: the 11-point AP, the mean over
``t in np.arange(0, 1.1, 0.1)`` (these exact floats: 0.30000000000000004 and so on, as both devkits) of the
maximal precision at recall ≥ t (0 if none). ``"area"``: the all-point AP of VOC2010+, the area under the
precision envelope. ``"coco101"``: COCO's interpolation (pycocotools ``COCOeval.accumulate``), the same mean
over the 101 recall levels ``np.linspace(0, 1, 101)``. mAP is the mean AP over the classes with at least one
(non-ignored) GT; it is 0.0 when no class has one. All values are fractions in [0, 1], as plain Python floats.

Boxes of one image (predictions and GT) must be comparable: see :func:`rs_shared.metrics.boxes.common_frame`.
IoU is horizontal when every box is ``xyxy``/``xywh``, and the exact polygon IoU otherwise.

**COCO.** ``ap="coco101"`` changes only the integration: matching stays the VOC rule above, with no area
ranges, per-image detection limit (``maxDets``) or crowd regions. COCOeval instead matches each detection to
the best GT *still unmatched* with IoU ≥ threshold (on equal IoUs, the GT listed last), and prefers
non-ignored GTs; the two agree whenever no detection reaches two GTs at the threshold and no GT is ignored.
COCOeval ranks with the same stable sort, images in increasing ``image_id`` order. Where matching agrees,
per-class ``"coco101"`` AP equals COCOeval's ``precision`` at that IoU averaged over its recall levels;
classes without GT (COCOeval: -1) are left out of the mean by both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rs_shared.data.geometry import Boxes
from rs_shared.metrics.boxes import (
    HORIZONTAL_FORMATS,
    common_frame,
    quad_iou_pairs,
    xyxy_iou_pairs,
)

APMethod = Literal["voc07", "area", "coco101"]
APNC_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50, 0.55, …, 0.95
SCORE_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(20))  # 0.00, 0.05, …, 0.95
VOC07_RECALLS = np.arange(0.0, 1.1, 0.1)  # the devkits' 11 recall levels, floats as numpy makes them
COCO_RECALLS = np.linspace(0.0, 1.0, 101)  # COCOeval's recThrs
_EPS = float(np.finfo(np.float32).eps)
_PAIRS_PER_CHUNK = 1 << 20


@dataclass(frozen=True)
class Detections:
    """The predicted boxes of one image: ``labels[i]`` (a class name or index) and ``scores[i]`` belong to
    box ``i``. ``scores=None`` means every box has confidence 1.0 (VLM output)."""

    boxes: Boxes
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _labels(self.labels, len(self.boxes), "Detections"))
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64)
            if scores.shape != (len(self.boxes),) or not np.isfinite(scores).all():
                raise ValueError(f"Detections: expected {len(self.boxes)} finite scores, got {scores.shape}")
            object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class GroundTruth:
    """The annotated boxes of one image: ``labels[i]`` (a class name or index) and ``difficult[i]`` belong to
    box ``i``. A non-zero ``difficult`` flag marks a box the VOC/DOTA protocol ignores (DOTA writes 1, and 2 for
    objects cut by a tile border); ``None`` means no box is difficult."""

    boxes: Boxes
    labels: np.ndarray
    difficult: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _labels(self.labels, len(self.boxes), "GroundTruth"))
        flags = np.zeros(len(self.boxes), dtype=bool) if self.difficult is None else np.asarray(self.difficult)
        if flags.shape != (len(self.boxes),):
            raise ValueError(f"GroundTruth: expected {len(self.boxes)} difficult flags, got {flags.shape}")
        object.__setattr__(self, "difficult", flags != 0)

    def __len__(self) -> int:
        return len(self.boxes)


def evaluate_detection(
    predictions: Sequence[Detections],
    ground_truth: Sequence[GroundTruth],
    *,
    iou_thresholds: float | Sequence[float] = 0.5,
    ap: APMethod = "voc07",
    use_scores: bool = True,
    ignore_difficult: bool = True,
    classes: Sequence[str | int] | None = None,
) -> dict:
    """Per-class AP and mAP of detections against ground truth (VOC / DOTA Task 1 protocol, module docstring).

    ``predictions[k]`` and ``ground_truth[k]`` describe the same image. ``use_scores=False`` ranks every
    detection as if its score were 1.0 (RSCoVLM's "no confidence" setting). ``ignore_difficult=True`` follows
    VOC and the DOTA devkit; RSCoVLM's local evaluation counts difficult objects (``False``).
    ``classes`` fixes the class list (labels outside it raise ``ValueError``); by default it is every label
    seen, sorted. ``ap`` picks how each precision–recall curve becomes an AP: ``"voc07"``, ``"area"`` or
    ``"coco101"`` (module docstring).

    Returns ``{"mAP": mean over thresholds of the per-threshold mAP, "mAP_at": {"0.50": …},
    "AP": {class: AP averaged over thresholds}, "AP_at": {"0.50": {class: AP}}, "recall": {class: final
    recall averaged over thresholds}, "num_gt": {class: int}, "num_det": {class: int}}``; ``AP``, ``AP_at``
    and ``recall`` list only the classes with at least one GT.
    """
    thresholds = _thresholds(iou_thresholds, ap)
    table = _MatchTable.build(predictions, ground_truth, classes)
    return table.evaluate(thresholds, ap, use_scores, ignore_difficult)


def apnc(
    predictions: Sequence[Detections],
    ground_truth: Sequence[GroundTruth],
    *,
    ignore_difficult: bool = False,
    classes: Sequence[str | int] | None = None,
) -> dict:
    """RSCoVLM's AP with no confidence (spec §5.4): every detection scores 1.0, VOC07 11-point AP.

    Returns ``{"APnc50", "APnc75", "APnc50:95", "AP50": {class: AP at IoU 0.5}}`` as fractions; APnc50:95
    is the mean of the mAPs at IoU 0.50, 0.55, …, 0.95. Difficult objects count by default, as in RSCoVLM's
    local (mmrotate) evaluation. Tie order: see the module docstring.
    """
    result = evaluate_detection(predictions, ground_truth, iou_thresholds=APNC_THRESHOLDS, ap="voc07",
                                use_scores=False, ignore_difficult=ignore_difficult, classes=classes)
    return {"APnc50": result["mAP_at"]["0.50"], "APnc75": result["mAP_at"]["0.75"],
            "APnc50:95": result["mAP"], "AP50": result["AP_at"]["0.50"]}


def select_score_threshold(
    predictions: Sequence[Detections],
    ground_truth: Sequence[GroundTruth],
    *,
    candidates: Sequence[float] = SCORE_THRESHOLDS,
    iou_threshold: float = 0.5,
    ap: APMethod = "voc07",
    ignore_difficult: bool = False,
    classes: Sequence[str | int] | None = None,
) -> dict:
    """The score threshold τ* that lets a scored detector compete under APnc (RSCoVLM spec §5.4).

    For each τ in ``candidates`` (default 0, 0.05, …, 0.95) the detections with score **> τ** are kept, all
    with score 1, and scored with the mAP at ``iou_threshold``; τ* maximises it (the smallest τ on ties).
    Apply τ* to other predictions with :func:`apply_score_threshold`.

    Returns ``{"threshold": τ*, "mAP": mAP at τ*, "mAP_by_threshold": {"0.05": …}}``.
    """
    thresholds = _thresholds(iou_threshold, ap)
    table = _MatchTable.build(predictions, ground_truth, classes)
    by_tau = {}
    for tau in candidates:
        result = table.evaluate(thresholds, ap, False, ignore_difficult, keep=table.score > tau)
        by_tau[f"{tau:.2f}"] = result["mAP"]
    best = int(np.argmax(list(by_tau.values())))
    return {"threshold": float(candidates[best]), "mAP": list(by_tau.values())[best], "mAP_by_threshold": by_tau}


def apply_score_threshold(predictions: Sequence[Detections], threshold: float) -> list[Detections]:
    """The detections with score > ``threshold``, every kept score set to 1.0 (spec §5.4, baselines)."""
    out = []
    for det in predictions:
        if det.scores is None:
            raise ValueError("apply_score_threshold needs scored detections (Detections.scores is None)")
        keep = det.scores > threshold
        boxes = Boxes(det.boxes.data[keep], det.boxes.fmt, det.boxes.frame, det.boxes.image_size, det.boxes.angle)
        out.append(Detections(boxes, det.labels[keep], np.ones(int(keep.sum()))))
    return out


def grounding_accuracy(
    predictions: Sequence[Boxes | None],
    ground_truth: Sequence[Boxes],
    *,
    threshold: float = 0.5,
    official_iou: bool = False,
) -> dict:
    """Visual grounding accuracy: the fraction of samples whose predicted box has IoU **> threshold**
    (strictly) with the ground-truth box (RSCoVLM / GeoGround "Acc@0.5", spec §6).

    Each sample has one GT box and one predicted box; ``None`` or an empty ``Boxes`` (an unparsable answer)
    counts as wrong, as does the zero box ``[0, 0, 0, 0]`` the official parser substitutes. Horizontal IoU when
    both boxes are ``xyxy``/``xywh``, polygon IoU for quads and oriented boxes.

    ``official_iou=True`` reproduces RSCoVLM's IoU helper for horizontal pixel boxes: the intersection counts
    only when the overlap exceeds 1 px in both axes, and areas are ``(x2 - x1) · (y2 - y1)`` unclipped.

    Returns ``{"accuracy": fraction, "correct": int, "total": int}``.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truth)} ground-truth boxes")
    if not ground_truth:
        raise ValueError("grounding_accuracy needs at least one sample")
    pairs: dict[str, tuple[list[int], list[np.ndarray], list[np.ndarray]]] = {"xyxy": ([], [], []),
                                                                               "quad": ([], [], [])}
    for k, (pred, gt) in enumerate(zip(predictions, ground_truth, strict=True)):
        if len(gt) != 1:
            raise ValueError(f"sample {k}: expected one ground-truth box, got {len(gt)}")
        if pred is None or len(pred) == 0:
            continue
        if len(pred) != 1:
            raise ValueError(f"sample {k}: expected one predicted box, got {len(pred)}")
        fmt = "xyxy" if pred.fmt in HORIZONTAL_FORMATS and gt.fmt in HORIZONTAL_FORMATS else "quad"
        if official_iou and fmt == "quad":
            raise ValueError(f"sample {k}: official_iou applies to horizontal boxes only, got {pred.fmt}/{gt.fmt}")
        p, g = common_frame(pred, gt, fmt, pixel=official_iou)
        pairs[fmt][0].append(k)
        pairs[fmt][1].append(p)
        pairs[fmt][2].append(g)
    iou = np.zeros(len(ground_truth))
    for fmt, (index, p, g) in pairs.items():
        if not index:
            continue
        p, g = np.concatenate(p), np.concatenate(g)
        if official_iou:
            iou[index] = _official_grounding_iou(p, g)
        else:
            pair = np.arange(len(p))
            iou[index] = (xyxy_iou_pairs if fmt == "xyxy" else quad_iou_pairs)(p, g, pair, pair)
    correct = int((iou > threshold).sum())
    return {"accuracy": correct / len(ground_truth), "correct": correct, "total": len(ground_truth)}


def _official_grounding_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RSCoVLM ``metric.iou``, elementwise on pixel ``x1, y1, x2, y2`` boxes; 0 where the union is not positive."""
    w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.where((w > 1) & (h > 1), w * h, 0.0)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# --- matching ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _MatchTable:
    """Everything matching needs, computed once: for each detection (in input order: image by image, box by
    box) its class, score, best IoU over the GTs of its image and class, and which GT that is (-1: none)."""

    classes: tuple
    det_class: np.ndarray
    score: np.ndarray
    best_iou: np.ndarray
    best_gt: np.ndarray
    gt_class: np.ndarray
    gt_difficult: np.ndarray

    @classmethod
    def build(cls, predictions: Sequence[Detections], ground_truth: Sequence[GroundTruth],
              classes: Sequence[str | int] | None) -> _MatchTable:
        if len(predictions) != len(ground_truth):
            raise ValueError(f"{len(predictions)} images of predictions for {len(ground_truth)} of ground truth")
        horizontal = all(x.boxes.fmt in HORIZONTAL_FORMATS for x in (*predictions, *ground_truth))
        fmt = "xyxy" if horizontal else "quad"
        det_boxes, gt_boxes = [], []
        for k, (det, gt) in enumerate(zip(predictions, ground_truth, strict=True)):
            try:
                d, g = common_frame(det.boxes, gt.boxes, fmt)
            except ValueError as error:
                raise ValueError(f"image {k}: {error}") from None
            det_boxes.append(d)
            gt_boxes.append(g)
        width = 4 if horizontal else 8
        det_xy = np.concatenate(det_boxes) if det_boxes else np.zeros((0, width))
        gt_xy = np.concatenate(gt_boxes) if gt_boxes else np.zeros((0, width))
        det_image = np.repeat(np.arange(len(predictions)), [len(d) for d in predictions])
        gt_image = np.repeat(np.arange(len(ground_truth)), [len(g) for g in ground_truth])
        names, det_class, gt_class = _class_indices([d.labels for d in predictions],
                                                    [g.labels for g in ground_truth], classes)
        scores = [np.ones(len(d.boxes)) if d.scores is None else d.scores for d in predictions]
        best_iou, best_gt = _best_matches(det_xy, gt_xy, det_image * len(names) + det_class,
                                          gt_image * len(names) + gt_class, horizontal)
        difficult = [g.difficult for g in ground_truth]
        return cls(names, det_class, np.concatenate(scores) if scores else np.zeros(0), best_iou, best_gt,
                   gt_class, np.concatenate(difficult) if difficult else np.zeros(0, dtype=bool))

    def evaluate(self, thresholds: tuple[float, ...], ap: APMethod, use_scores: bool, ignore_difficult: bool,
                 keep: np.ndarray | None = None) -> dict:
        kept = np.arange(len(self.det_class)) if keep is None else np.flatnonzero(keep)
        score = self.score[kept] if use_scores else np.ones(len(kept))
        # Stable ranking: class, then descending score, then input order.
        rank = kept[np.lexsort((kept, -score, self.det_class[kept]))]
        det_class, best_iou, best_gt = self.det_class[rank], self.best_iou[rank], self.best_gt[rank]
        ignored = self.gt_difficult if ignore_difficult else np.zeros_like(self.gt_difficult)
        num_classes = len(self.classes)
        num_gt = np.bincount(self.gt_class[~ignored], minlength=num_classes)
        bounds = np.searchsorted(det_class, np.arange(num_classes + 1))
        has_gt = np.flatnonzero(num_gt > 0)
        aps = np.zeros((len(thresholds), num_classes))
        recalls = np.zeros((len(thresholds), num_classes))
        for t, thr in enumerate(thresholds):
            tp, fp = _true_false_positives(best_iou, best_gt, ignored, thr)
            for c in has_gt:
                lo, hi = bounds[c], bounds[c + 1]
                ctp, cfp = np.cumsum(tp[lo:hi]), np.cumsum(fp[lo:hi])
                recall = ctp / max(num_gt[c], _EPS)
                precision = ctp / np.maximum(ctp + cfp, _EPS)
                if ap == "area":
                    aps[t, c] = _area_ap(recall, precision)
                else:
                    levels = VOC07_RECALLS if ap == "voc07" else COCO_RECALLS
                    aps[t, c] = _interpolated_ap(recall, precision, levels)
                recalls[t, c] = recall[-1] if len(recall) else 0.0
        keys = [f"{thr:.2f}" for thr in thresholds]
        names = [self.classes[c] for c in has_gt]
        mean_at = aps[:, has_gt].mean(axis=1) if len(has_gt) else np.zeros(len(thresholds))
        num_det = np.bincount(det_class, minlength=num_classes)
        return {
            "mAP": float(mean_at.mean()),
            "mAP_at": {key: float(m) for key, m in zip(keys, mean_at, strict=True)},
            "AP": {name: float(aps[:, c].mean()) for name, c in zip(names, has_gt, strict=True)},
            "AP_at": {key: {name: float(aps[t, c]) for name, c in zip(names, has_gt, strict=True)}
                      for t, key in enumerate(keys)},
            "recall": {name: float(recalls[:, c].mean()) for name, c in zip(names, has_gt, strict=True)},
            "num_gt": {name: int(num_gt[c]) for c, name in enumerate(self.classes)},
            "num_det": {name: int(num_det[c]) for c, name in enumerate(self.classes)},
        }


def _true_false_positives(best_iou: np.ndarray, best_gt: np.ndarray, ignored: np.ndarray,
                          thr: float) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP flags of ranked detections. A GT is matched by the first detection (in rank order) that
    reaches it with IoU ≥ thr; later ones reaching it are FP, and those reaching an ignored GT are neither."""
    hit = best_iou >= thr  # best_iou is 0 where there is no candidate GT, and thr > 0
    reaches_ignored = hit & ignored[np.where(hit, best_gt, 0)] if len(ignored) else np.zeros_like(hit)
    candidate = np.flatnonzero(hit & ~reaches_ignored)
    tp = np.zeros(len(hit), dtype=bool)
    _, first = np.unique(best_gt[candidate], return_index=True)  # first occurrence of each GT
    tp[candidate[first]] = True
    fp = ~hit
    fp[candidate] = ~tp[candidate]
    return tp, fp


def _best_matches(det_xy: np.ndarray, gt_xy: np.ndarray, det_group: np.ndarray, gt_group: np.ndarray,
                  horizontal: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each detection, the maximal IoU over the GTs of its group (image × class) and the first GT
    reaching it; ``(0.0, -1)`` when it overlaps none."""
    best_iou, best_gt = np.zeros(len(det_xy)), np.full(len(det_xy), -1)
    gt_order = np.argsort(gt_group, kind="stable")
    first = np.searchsorted(gt_group[gt_order], det_group, side="left")
    count = np.searchsorted(gt_group[gt_order], det_group, side="right") - first
    iou_pairs = xyxy_iou_pairs if horizontal else quad_iou_pairs
    end = np.cumsum(count)
    start = 0
    while start < len(det_xy):  # chunks of detections with a bounded number of candidate pairs
        stop = max(int(np.searchsorted(end, (end[start - 1] if start else 0) + _PAIRS_PER_CHUNK, "right")),
                   start + 1)
        dets = np.arange(start, stop)
        det = np.repeat(dets, count[dets])
        offset = np.arange(len(det)) - np.repeat(np.cumsum(count[dets]) - count[dets], count[dets])
        gt = gt_order[np.repeat(first[dets], count[dets]) + offset]
        used_gt, gt_local = np.unique(gt, return_inverse=True)  # only this chunk's boxes are prepared
        iou = iou_pairs(det_xy[start:stop], gt_xy[used_gt], det - start, gt_local)
        positive = iou > 0
        det, gt, iou = det[positive], gt[positive], iou[positive]
        order = np.lexsort((gt, -iou, det))  # per detection: highest IoU, then lowest GT index
        det, gt, iou = det[order], gt[order], iou[order]
        head = np.r_[True, det[1:] != det[:-1]] if len(det) else np.zeros(0, dtype=bool)
        best_iou[det[head]], best_gt[det[head]] = iou[head], gt[head]
        start = stop
    return best_iou, best_gt


# --- AP -----------------------------------------------------------------------------------------------

def _interpolated_ap(recall: np.ndarray, precision: np.ndarray, levels: np.ndarray) -> float:
    """Mean over the recall ``levels`` t of the maximal precision at recall ≥ t (0 if recall never reaches t):
    the VOC07 11-point AP and COCO's 101-point AP."""
    if not len(recall):
        return 0.0
    best_after = np.maximum.accumulate(precision[::-1])[::-1]  # recall is non-decreasing
    at = np.searchsorted(recall, levels, side="left")
    reached = at < len(recall)
    return float(best_after[at[reached]].sum() / len(levels))


def _area_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the monotone precision envelope, over the recall steps (VOC2010+ all-point AP)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(((mrec[step + 1] - mrec[step]) * mpre[step + 1]).sum())


# --- inputs -------------------------------------------------------------------------------------------

def _labels(labels: np.ndarray, n: int, owner: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size == 0:
        labels = labels.reshape(0)
    if labels.shape != (n,) or (n and labels.dtype.kind not in "iuU"):
        raise ValueError(f"{owner}: expected {n} labels (class names or integer indices), "
                         f"got shape {labels.shape} of dtype {labels.dtype}")
    return labels


def _class_indices(det_labels: list[np.ndarray], gt_labels: list[np.ndarray],
                   classes: Sequence[str | int] | None) -> tuple[tuple, np.ndarray, np.ndarray]:
    """The class list and each box's index into it; names and integer indices must not be mixed."""
    arrays = [x for x in det_labels + gt_labels if len(x)]
    kinds = {"str" if x.dtype.kind == "U" else "int" for x in arrays}
    if len(kinds) > 1:
        raise ValueError("labels mix class names and integer indices; use one kind throughout")
    everything = np.concatenate(arrays) if arrays else np.zeros(0, dtype=int)
    seen, inverse = np.unique(everything, return_inverse=True)
    names = tuple(x.item() for x in seen) if classes is None else tuple(classes)
    index = {name: i for i, name in enumerate(names)}
    unknown = [x for x in (v.item() for v in seen) if x not in index]
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not in classes {list(names)[:20]}")
    mapped = np.array([index[v.item()] for v in seen], dtype=np.intp)[inverse.reshape(-1)]
    n_det = sum(len(x) for x in det_labels)
    return names, mapped[:n_det], mapped[n_det:]


def _thresholds(iou_thresholds: float | Sequence[float], ap: str) -> tuple[float, ...]:
    """The IoU thresholds as a tuple, after checking them and the AP method."""
    if ap not in ("voc07", "area", "coco101"):
        raise ValueError(f"ap must be 'voc07', 'area' or 'coco101', got {ap!r}")
    values = (iou_thresholds,) if np.isscalar(iou_thresholds) else tuple(iou_thresholds)  # type: ignore[arg-type]
    if not values or not all(0 < float(v) <= 1 for v in values):
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {values}")
    return tuple(float(v) for v in values)
