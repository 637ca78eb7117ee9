"""Detection AP/mAP, APnc and grounding accuracy: spec parity points, hand-computed cases, and agreement with a
plain loop-based VOC implementation on random inputs."""

import numpy as np
import pytest
from shapely.geometry import Polygon

from rs_shared.data.geometry import Boxes, obb_to_quad
from rs_shared.metrics import detection as detection_module
from rs_shared.metrics.detection import (
    Detections,
    GroundTruth,
    apnc,
    apply_score_threshold,
    evaluate_detection,
    grounding_accuracy,
    select_score_threshold,
)

RNG = np.random.default_rng(0)


def dets(boxes, labels="plane", scores=None, fmt="xyxy", **kw):
    boxes = np.asarray(boxes, dtype=float).reshape(-1, {"xyxy": 4, "quad": 8, "obb": 5}[fmt])
    labels = [labels] * len(boxes) if isinstance(labels, str) else labels
    return Detections(Boxes(boxes, fmt, **kw), np.array(labels, dtype=str if len(labels) == 0 else None), scores)


def gts(boxes, labels="plane", difficult=None, fmt="xyxy", **kw):
    boxes = np.asarray(boxes, dtype=float).reshape(-1, {"xyxy": 4, "quad": 8, "obb": 5}[fmt])
    labels = [labels] * len(boxes) if isinstance(labels, str) else labels
    return GroundTruth(Boxes(boxes, fmt, **kw), np.array(labels, dtype=str if len(labels) == 0 else None), difficult)


# --- a plain reference: one detection at a time, one pair at a time ------------------------------------

def ref_iou(a, b, fmt):
    if fmt == "xyxy":
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 and w * h > 0 else 0.0
    pa, pb = Polygon(np.reshape(a, (4, 2))), Polygon(np.reshape(b, (4, 2)))
    inter = pa.intersection(pb).area
    return inter / (pa.area + pb.area - inter) if pa.area > 0 and pb.area > 0 else 0.0


def reference_map(preds, truths, thr, ap, use_scores, ignore_difficult):
    fmt = preds[0].boxes.fmt
    classes = sorted({str(x) for d in preds + truths for x in d.labels})
    eps = np.finfo(np.float32).eps
    aps = {}
    for c in classes:
        ranked = []
        for k, d in enumerate(preds):
            for i in range(len(d)):
                if d.labels[i] == c:
                    ranked.append((1.0 if not use_scores or d.scores is None else d.scores[i], k, i))
        ranked.sort(key=lambda r: -r[0])  # Python's sort is stable: image, then box order on ties
        npos = sum(1 for g in truths for j in range(len(g))
                   if g.labels[j] == c and not (ignore_difficult and g.difficult[j]))
        matched = set()
        tp, fp = [], []
        for _, k, i in ranked:
            g = truths[k]
            best, best_j = -1.0, None
            for j in range(len(g)):
                if g.labels[j] != c:
                    continue
                iou = ref_iou(preds[k].boxes.data[i], g.boxes.data[j], fmt)
                if iou > best:
                    best, best_j = iou, j
            if best_j is not None and best >= thr:
                if ignore_difficult and g.difficult[best_j]:
                    tp.append(0), fp.append(0)
                elif (k, best_j) not in matched:
                    matched.add((k, best_j))
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        if npos == 0:
            continue
        rec, prec, ctp, cfp = [], [], 0, 0
        for t_, f_ in zip(tp, fp, strict=True):
            ctp, cfp = ctp + t_, cfp + f_
            rec.append(ctp / max(npos, eps))
            prec.append(ctp / max(ctp + cfp, eps))
        if ap == "voc07":
            value = 0.0
            for t in np.arange(0.0, 1.1, 0.1):
                value += max([p for r, p in zip(rec, prec, strict=True) if r >= t], default=0.0) / 11
        else:
            mrec, mpre = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = max(mpre[i], mpre[i + 1])
            value = sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])
        aps[c] = value
    return (sum(aps.values()) / len(aps) if aps else 0.0), aps


def random_case(rng, fmt):
    """A few images with duplicates, jittered and random predictions, tied scores and degenerate boxes."""
    preds, truths = [], []
    for _ in range(rng.integers(1, 6)):
        n_gt = int(rng.integers(0, 8))
        obb = np.column_stack([rng.uniform(0, 60, (n_gt, 2)), rng.uniform(2, 25, (n_gt, 2)), rng.uniform(-3, 3, n_gt)])
        gt_labels = rng.choice(list("abc"), n_gt)
        source = [obb + rng.normal(0, 1.5, obb.shape) * [1, 1, 0.5, 0.5, 0.05] for _ in range(2)]
        rand = np.column_stack([rng.uniform(0, 60, (4, 2)), rng.uniform(0, 25, (4, 2)), rng.uniform(-3, 3, 4)])
        rand[0, 2] = 0.0  # a degenerate (zero-area) prediction
        pred = np.concatenate([*source, obb[:2], rand])  # jittered copies, exact duplicates, random boxes
        pred[:, 2:4] = np.abs(pred[:, 2:4])
        relabelled = rng.choice(list("abc"), n_gt)
        pred_labels = np.concatenate([gt_labels, relabelled, gt_labels[:2], rng.choice(list("abc"), 4)])
        keep = rng.random(len(pred)) < 0.8
        pred, pred_labels = pred[keep], pred_labels[keep]
        scores = rng.choice([0.2, 0.5, 0.9], len(pred))
        if fmt == "xyxy":
            to = lambda o: Boxes(o, "obb", angle="le90").to("xyxy").data  # noqa: E731
        else:
            to = obb_to_quad
        preds.append(Detections(Boxes(to(pred), fmt), pred_labels.astype(str), scores))
        truths.append(GroundTruth(Boxes(to(obb), fmt), gt_labels.astype(str), rng.random(n_gt) < 0.2))
    return preds, truths


@pytest.mark.parametrize("fmt", ["xyxy", "quad"])
def test_agrees_with_a_plain_loop_implementation_on_random_cases(fmt):
    rng = np.random.default_rng(1 if fmt == "xyxy" else 2)
    for _ in range(25):
        preds, truths = random_case(rng, fmt)
        for ap in ("voc07", "area"):
            for use_scores in (True, False):
                for ignore in (True, False):
                    result = evaluate_detection(preds, truths, iou_thresholds=(0.5, 0.75), ap=ap,
                                                use_scores=use_scores, ignore_difficult=ignore)
                    for thr in (0.5, 0.75):
                        expected_map, expected_aps = reference_map(preds, truths, thr, ap, use_scores, ignore)
                        assert result["mAP_at"][f"{thr:.2f}"] == pytest.approx(expected_map, abs=1e-9)
                        assert result["AP_at"][f"{thr:.2f}"] == pytest.approx(expected_aps, abs=1e-9)


# --- spec parity point P7: APnc and its tie-order sensitivity ------------------------------------------

IMAGE_A = (dets([[0, 0, 10, 10], [50, 50, 60, 60]]), gts([[0, 0, 10, 10], [20, 0, 30, 10]]))
IMAGE_B = (dets([[1, 0, 11, 10]]), gts([[0, 0, 10, 10]]))  # IoU 0.818


def test_p7_apnc_image_a_then_b():
    preds, truths = [IMAGE_A[0], IMAGE_B[0]], [IMAGE_A[1], IMAGE_B[1]]
    result = apnc(preds, truths)
    assert result["APnc50"] == pytest.approx(6 / 11) and result["APnc75"] == pytest.approx(6 / 11)
    assert result["APnc50:95"] == pytest.approx(0.4909, abs=5e-5)
    assert result["AP50"] == {"plane": pytest.approx(6 / 11)}
    area = evaluate_detection(preds, truths, ap="area", use_scores=False)
    assert area["mAP"] == pytest.approx(5 / 9)


def test_p7_apnc_image_b_then_a():
    result = apnc([IMAGE_B[0], IMAGE_A[0]], [IMAGE_B[1], IMAGE_A[1]])
    assert result["APnc50"] == pytest.approx(7 / 11)
    assert result["APnc50:95"] == pytest.approx(0.5)


def test_p7_holds_for_oriented_inputs_and_equal_scores():
    quad = lambda d: Detections(d.boxes.to("quad"), d.labels, np.full(len(d), 0.7))  # noqa: E731
    result = evaluate_detection([quad(IMAGE_A[0]), quad(IMAGE_B[0])], [IMAGE_A[1], IMAGE_B[1]],
                                iou_thresholds=detection_module.APNC_THRESHOLDS)
    assert result["mAP_at"]["0.50"] == pytest.approx(6 / 11) and result["mAP"] == pytest.approx(0.4909, abs=5e-5)


# --- matching rules, by hand ---------------------------------------------------------------------------

def test_no_fallback_to_the_second_best_ground_truth():
    truth = gts([[0, 0, 10, 10], [0, 1, 10, 12]])
    pred = dets([[0, 0, 10, 10], [0, 0, 10, 11]], scores=[0.9, 0.8])  # the second's best GT is taken: FP
    result = evaluate_detection([pred], [truth])
    assert result["AP"]["plane"] == pytest.approx(6 / 11)  # recall 1/2 at precision 1, then 1/2 at 1/2
    assert result["recall"]["plane"] == pytest.approx(0.5)
    assert evaluate_detection([pred], [truth], ap="area")["mAP"] == pytest.approx(0.5)


def test_difficult_objects_are_ignored_or_counted():
    truth = gts([[0, 0, 10, 10], [20, 20, 30, 30]], difficult=[0, 1])
    pred = dets([[20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]], scores=[0.9, 0.8, 0.7])
    ignored = evaluate_detection([pred], [truth], ignore_difficult=True)
    assert ignored["num_gt"] == {"plane": 1}
    assert ignored["mAP"] == pytest.approx(0.5)  # neither, FP, TP: precision 1/2 at recall 1
    assert evaluate_detection([pred], [truth], ignore_difficult=True, ap="area")["mAP"] == pytest.approx(0.5)
    counted = evaluate_detection([pred], [truth], ignore_difficult=False)
    assert counted["mAP"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert apnc([pred], [truth])["APnc50"] == pytest.approx(counted["mAP"])  # APnc counts difficult by default


def test_detections_without_ground_truth_of_their_class_are_false_positives():
    truths = [gts([[0, 0, 10, 10]]), gts([[0, 0, 10, 10]], "ship")]
    preds = [dets([[0, 0, 10, 10]], "ship", [0.9]), dets([[0, 0, 10, 10], [0, 0, 10, 10]], ["ship", "car"], [0.8, 0.7])]
    result = evaluate_detection(preds, truths)
    assert result["AP"] == {"plane": 0.0, "ship": 0.5}  # ship: FP, then TP (precision 1/2 at recall 1)
    assert result["num_gt"] == {"car": 0, "plane": 1, "ship": 1} and result["num_det"]["car"] == 1
    assert result["mAP"] == 0.25  # car has no GT: not in the mean


def test_duplicates_and_degenerate_predictions_are_false_positives():
    truth = gts([[0, 0, 10, 10]])
    pred = dets([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5]], scores=[0.9, 0.9, 0.95])
    result = evaluate_detection([pred], [truth], ap="area")
    assert result["mAP"] == pytest.approx(0.5)  # FP (degenerate), TP, FP: precision 1/2 at recall 1


def test_empty_inputs():
    empty = dets(np.zeros((0, 4)), [])
    assert evaluate_detection([], [])["mAP"] == 0.0
    no_preds = evaluate_detection([empty], [gts([[0, 0, 10, 10]])])
    assert no_preds["mAP"] == 0.0 and no_preds["AP"] == {"plane": 0.0} and no_preds["recall"] == {"plane": 0.0}
    no_gt = evaluate_detection([dets([[0, 0, 1, 1]])], [gts(np.zeros((0, 4)), [])])
    assert no_gt["mAP"] == 0.0 and no_gt["AP"] == {} and no_gt["num_det"] == {"plane": 1}


def test_integer_labels_and_a_fixed_class_list():
    truth = GroundTruth(Boxes([[0, 0, 10, 10]], "xyxy"), np.array([3]))
    pred = Detections(Boxes([[0, 0, 10, 10]], "xyxy"), np.array([3]))
    result = evaluate_detection([pred], [truth], classes=range(5))
    assert result["AP"] == {3: 1.0} and result["num_gt"] == {0: 0, 1: 0, 2: 0, 3: 1, 4: 0}


def test_frames_are_reconciled_per_image():
    truth = gts([[64, 48, 128, 96]], image_size=(640, 480))
    pred = dets([[100, 100, 200, 200]], fmt="xyxy", frame="norm1000")  # the same box, per mille
    assert evaluate_detection([pred], [truth])["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="image 1"):
        evaluate_detection([pred, pred], [truth, gts([[0, 0, 1, 1]])])


def test_invalid_inputs_raise():
    box = Boxes([[0, 0, 1, 1]], "xyxy")
    with pytest.raises(ValueError, match="labels"):
        Detections(box, np.array(["a", "b"]))
    with pytest.raises(ValueError, match="scores"):
        Detections(box, np.array(["a"]), np.array([np.nan]))
    with pytest.raises(ValueError, match="difficult"):
        GroundTruth(box, np.array(["a"]), np.array([0, 1]))
    with pytest.raises(ValueError, match="mix"):
        evaluate_detection([Detections(box, np.array([1]))], [GroundTruth(box, np.array(["a"]))])
    with pytest.raises(ValueError, match="not in classes"):
        evaluate_detection([Detections(box, np.array(["a"]))], [GroundTruth(box, np.array(["a"]))], classes=["b"])
    with pytest.raises(ValueError, match="thresholds"):
        evaluate_detection([], [], iou_thresholds=0.0)
    with pytest.raises(ValueError, match="voc07"):
        evaluate_detection([], [], ap="coco")
    with pytest.raises(ValueError, match="images"):
        evaluate_detection([], [GroundTruth(box, np.array(["a"]))])


def test_chunking_does_not_change_results(monkeypatch):
    preds, truths = random_case(np.random.default_rng(5), "quad")
    whole = evaluate_detection(preds, truths, iou_thresholds=(0.5, 0.7))
    monkeypatch.setattr(detection_module, "_PAIRS_PER_CHUNK", 3)
    assert evaluate_detection(preds, truths, iou_thresholds=(0.5, 0.7)) == whole


# --- baseline score threshold (spec §5.4) ---------------------------------------------------------------

def test_score_threshold_is_strict_and_prefers_the_smallest():
    truth = gts([[0, 0, 10, 10]])
    pred = dets([[50, 50, 60, 60], [0, 0, 10, 10]], scores=[0.3, 0.5])  # an FP listed before the TP
    chosen = select_score_threshold([pred], [truth])
    assert chosen["mAP_by_threshold"]["0.25"] == pytest.approx(0.5)  # both kept, scores 1: FP ranks first
    assert chosen["mAP_by_threshold"]["0.30"] == 1.0  # score 0.3 is not > 0.3
    assert chosen["mAP_by_threshold"]["0.50"] == 0.0
    assert chosen["threshold"] == 0.3 and chosen["mAP"] == 1.0
    (kept,) = apply_score_threshold([pred], chosen["threshold"])
    np.testing.assert_array_equal(kept.boxes.data, [[0, 0, 10, 10]])
    np.testing.assert_array_equal(kept.scores, [1.0])


# --- grounding -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("official_iou", [False, True])
def test_p8_grounding_iou_must_exceed_one_half(official_iou):
    truth = Boxes([[0, 0, 10, 10]], "xyxy")
    preds = [Boxes([[0, 0, 10, 20]], "xyxy"), Boxes([[0, 0, 10, 19]], "xyxy")]  # IoU 0.5 and 0.526
    result = grounding_accuracy(preds, [truth, truth], official_iou=official_iou)
    assert result == {"accuracy": 0.5, "correct": 1, "total": 2}


def test_unparsable_and_zero_boxes_are_wrong():
    truth = Boxes([[0, 0, 10, 10]], "xyxy")
    preds = [None, Boxes(np.zeros((0, 4)), "xyxy"), Boxes([[0, 0, 0, 0]], "xyxy"), truth]
    assert grounding_accuracy(preds, [truth] * 4)["correct"] == 1
    assert grounding_accuracy(preds, [truth] * 4, official_iou=True)["correct"] == 1


def test_official_iou_needs_more_than_one_pixel_of_overlap():
    thin = Boxes([[0, 0, 1, 10]], "xyxy")  # identical boxes one pixel wide
    assert grounding_accuracy([thin], [thin])["correct"] == 1
    assert grounding_accuracy([thin], [thin], official_iou=True)["correct"] == 0


def test_oriented_grounding_and_normalised_predictions():
    truth = Boxes([[50, 50, 40, 20, 0.3]], "obb", image_size=(200, 100), angle="le90")
    same = Boxes(truth.to("quad", "norm1000").data, "quad", "norm1000", (200, 100))
    turned = Boxes([[50, 50, 40, 20, 0.3 + np.pi / 2]], "obb", angle="le90")  # crossing: IoU 1/3
    result = grounding_accuracy([same, turned], [truth, truth])
    assert result["correct"] == 1
    horizontal = Boxes([[100, 100, 500, 500]], "xyxy", "norm1000")
    truth_h = Boxes([[20, 10, 100, 50]], "xyxy", image_size=(200, 100))
    assert grounding_accuracy([horizontal], [truth_h], official_iou=True)["correct"] == 1
    with pytest.raises(ValueError, match="horizontal"):
        grounding_accuracy([same], [truth], official_iou=True)


def test_grounding_input_errors():
    box = Boxes([[0, 0, 1, 1]], "xyxy")
    two = Boxes([[0, 0, 1, 1], [0, 0, 2, 2]], "xyxy")
    with pytest.raises(ValueError, match="one predicted box"):
        grounding_accuracy([two], [box])
    with pytest.raises(ValueError, match="one ground-truth box"):
        grounding_accuracy([box], [two])
    with pytest.raises(ValueError, match="predictions"):
        grounding_accuracy([box], [box, box])
    with pytest.raises(ValueError, match="at least one"):
        grounding_accuracy([], [])


# --- COCO 101-point AP against pycocotools ---------------------------------------------------------------

def coco_precision(preds, truths, classes, iou=0.5):
    """COCOeval's precision at one IoU threshold, ``(101 recall levels, len(classes))``, -1 for classes without
    GT; image ``k`` of the lists is COCO image ``k + 1``, every area counts and no image hits ``maxDets``."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    category = {c: i + 1 for i, c in enumerate(classes)}
    annotations, results = [], []
    for k, (pred, truth) in enumerate(zip(preds, truths, strict=True)):
        for box, label in zip(truth.boxes.to("xywh").data.tolist(), truth.labels, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": category[label],
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for box, label, score in zip(pred.boxes.to("xywh").data.tolist(), pred.labels, pred.scores, strict=True):
            results.append({"image_id": k + 1, "category_id": category[label], "bbox": box, "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": k + 1, "width": 400, "height": 400} for k in range(len(truths))],
                      "annotations": annotations, "categories": [{"id": i, "name": c} for c, i in category.items()]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")  # safe: pycocotools class, not eval()
        evaluator.params.iouThrs = np.array([iou])
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        evaluator.params.maxDets = [max(len(p) for p in preds) + 1]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][0, :, :, 0, -1]


def assert_matches_coco(preds, truths, classes):
    precision = coco_precision(preds, truths, classes)
    coco_ap = {c: precision[:, k].mean() for k, c in enumerate(classes) if (precision[:, k] > -1).all()}
    assert all((precision[:, k] == -1).all() for k, c in enumerate(classes) if c not in coco_ap)
    result = evaluate_detection(preds, truths, ap="coco101", classes=classes, ignore_difficult=False)
    assert result["AP"] == pytest.approx(coco_ap, abs=1e-9)  # the same classes: those with GT
    assert result["mAP"] == pytest.approx(precision[precision > -1].mean(), abs=1e-9)  # as COCOeval.summarize
    return result


def grid_case(rng, distinct_scores):
    """Images of 4 × 4 cells of 100 px, each holding at most one GT, so that a detection (kept inside one cell)
    has IoU ≥ 0.5 with at most one GT and COCO and VOC matching coincide. Detections: jittered hits, exact
    duplicates of them, shifted misses, relabelled hits, and stray boxes in empty cells (some of class "d",
    which has no GT), shuffled within each image."""
    preds, truths = [], []
    for _ in range(int(rng.integers(15, 30))):
        cells = rng.permutation(16)
        n_gt = int(rng.integers(0, 7))
        corner = np.column_stack([cells % 4, cells // 4]) * 100.0 + rng.uniform(5, 20, (16, 2))
        xyxy = np.column_stack([corner, corner + rng.uniform(30, 70, (16, 2))])
        gt_labels = rng.choice(list("abc"), n_gt)
        boxes, labels = [], []
        for j in range(n_gt):
            if rng.random() < 0.8:
                hit = xyxy[j] + rng.uniform(-1.5, 1.5, 4)
                boxes += [hit] * (1 + (rng.random() < 0.3))  # an exact duplicate is a FP in both protocols
                labels += [gt_labels[j]] * (len(boxes) - len(labels))
            if rng.random() < 0.2:
                width = xyxy[j, 2] - xyxy[j, 0]
                boxes.append(xyxy[j] + [0.6 * width, 0, 0.6 * width, 0])  # IoU < 0.25
                labels.append(gt_labels[j])
            if rng.random() < 0.1:
                boxes.append(xyxy[j])
                labels.append(rng.choice([c for c in "abc" if c != gt_labels[j]]))
        for j in range(n_gt, n_gt + int(rng.integers(0, 3))):
            boxes.append(xyxy[j])
            labels.append(rng.choice(list("abcd")))
        order = rng.permutation(len(boxes))
        scores = rng.random(len(boxes)) if distinct_scores else rng.choice([0.3, 0.6, 0.9], len(boxes))
        preds.append(dets(np.reshape(boxes, (-1, 4))[order], list(np.array(labels, dtype=str)[order]), scores))
        truths.append(gts(xyxy[:n_gt], list(gt_labels)))
    return preds, truths


def assert_voc_and_coco_matching_coincide(preds, truths):
    """The case's premise: every detection has IoU ≥ 0.5 with at most one GT, and no IoU is near 0.5."""
    for pred, truth in zip(preds, truths, strict=True):
        d, g = pred.boxes.data, truth.boxes.data
        w = np.clip(np.minimum(d[:, None, 2], g[:, 2]) - np.maximum(d[:, None, 0], g[:, 0]), 0, None)
        h = np.clip(np.minimum(d[:, None, 3], g[:, 3]) - np.maximum(d[:, None, 1], g[:, 1]), 0, None)
        area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
        iou = w * h / (area(d)[:, None] + area(g) - w * h)
        assert ((iou >= 0.5).sum(axis=1) <= 1).all() and not ((iou > 0.4) & (iou < 0.6)).any()


@pytest.mark.parametrize("distinct_scores", [True, False])
def test_coco101_agrees_with_pycocotools_where_matching_coincides(distinct_scores):
    rng = np.random.default_rng(7 if distinct_scores else 8)
    for _ in range(10):
        preds, truths = grid_case(rng, distinct_scores)
        assert_voc_and_coco_matching_coincide(preds, truths)
        result = assert_matches_coco(preds, truths, classes=list("abcd"))
        assert "d" not in result["AP"]  # detections, no GT: COCOeval -1, left out here


@pytest.mark.parametrize("b_first", [False, True])
@pytest.mark.parametrize("fp_first", [False, True])
def test_coco101_tie_order_agrees_with_pycocotools(b_first, fp_first):
    image_a = (dets([[50, 50, 60, 60], [0, 0, 10, 10]][:: 1 if fp_first else -1], scores=[0.5, 0.5]),
               gts([[0, 0, 10, 10], [20, 0, 30, 10]]))
    image_b = (dets([[1, 0, 11, 10]], scores=[0.5]), gts([[0, 0, 10, 10]]))
    images = [image_b, image_a] if b_first else [image_a, image_b]
    result = assert_matches_coco([p for p, _ in images], [t for _, t in images], classes=["plane"])
    # All scores tie, so the input order ranks: of the 101 recall levels, 34 are ≤ 1/3 and 67 are ≤ 2/3.
    expected = {(True, False): 67,  # B, then A's TP, FP: precision 1 up to recall 2/3
                (True, True): 34 + 33 * 2 / 3,  # TP, FP, TP: 1 up to recall 1/3, then 2/3
                (False, False): 34 + 33 * 2 / 3,  # TP, FP, TP
                (False, True): 67 * 2 / 3}  # FP, TP, TP: 2/3 up to recall 2/3
    assert result["mAP"] == pytest.approx(expected[b_first, fp_first] / 101)


def test_coco101_classes_without_detections_or_without_ground_truth():
    truths = [gts([[0, 0, 10, 10], [200, 0, 210, 10]], ["plane", "ship"]), gts(np.zeros((0, 4)), [])]
    preds = [dets([[0, 0, 10, 10], [100, 100, 110, 110]], ["plane", "car"], [0.9, 0.8]),
             dets([[0, 0, 10, 10]], "car", [0.7])]
    precision = coco_precision(preds, truths, ["car", "plane", "ship"])
    assert (precision[:, 0] == -1).all() and (precision[:, 2] == 0).all()  # no GT: -1; no detection: 0
    np.testing.assert_allclose(precision[:, 1], 1.0)  # COCOeval's 1 / (1 + np.spacing(1))
    result = assert_matches_coco(preds, truths, ["car", "plane", "ship"])
    assert result["AP"] == {"plane": 1.0, "ship": 0.0} and result["mAP"] == 0.5 and result["num_det"]["car"] == 2


def test_coco101_differs_from_voc_only_in_the_integration():
    truth = gts([[0, 0, 10, 10], [50, 0, 60, 10], [100, 0, 110, 10]])
    pred = dets([[0, 0, 10, 10], [200, 0, 210, 10], [50, 0, 60, 10]], scores=[0.9, 0.8, 0.7])
    # TP, FP, TP: recall 1/3 at precision 1, 2/3 at 2/3; nothing beyond recall 2/3.
    values = {ap: evaluate_detection([pred], [truth], ap=ap)["mAP"] for ap in ("voc07", "area", "coco101")}
    assert values == pytest.approx({"voc07": (4 + 3 * 2 / 3) / 11, "area": 1 / 3 + 2 / 9,
                                    "coco101": (34 + 33 * 2 / 3) / 101})
    assert select_score_threshold([pred], [truth], ap="coco101")["mAP"] == pytest.approx(values["coco101"])
