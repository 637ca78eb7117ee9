"""Oriented-box mAP at DOTA density on one core, printed as JSON.

A synthetic DOTA-like split: 500 images of 1024² pixels, 100 ground-truth oriented boxes each (15 classes,
5 % difficult) and 200 predictions each — a jittered copy of every object (sometimes relabelled) plus 100
random boxes — so 100,000 predictions against 50,000 ground-truth boxes. Times the whole evaluation from
``Boxes`` to numbers: scored VOC07 mAP at IoU 0.5, and APnc over the ten thresholds 0.50:0.05:0.95.

    uv run python benchmarks/rotated_map.py [--images 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from rs_shared.data.geometry import Boxes
from rs_shared.metrics.detection import Detections, GroundTruth, apnc, evaluate_detection

NUM_CLASSES = 15
IMAGE = 1024


def _random_obbs(rng: np.random.Generator, n: int) -> np.ndarray:
    size = rng.lognormal(np.log(30), 0.6, (n, 2)).clip(4, 300)
    return np.column_stack([rng.uniform(0, IMAGE, (n, 2)), size, rng.uniform(-np.pi / 2, np.pi / 2, n)])


def make_split(images: int, gt_per_image: int = 100, random_preds: int = 100, seed: int = 0
               ) -> tuple[list[Detections], list[GroundTruth]]:
    rng = np.random.default_rng(seed)
    predictions, ground_truth = [], []
    for _ in range(images):
        gt = _random_obbs(rng, gt_per_image)
        labels = rng.integers(0, NUM_CLASSES, gt_per_image)
        ground_truth.append(GroundTruth(Boxes(gt, "obb", image_size=(IMAGE, IMAGE), angle="le90"), labels,
                                        rng.random(gt_per_image) < 0.05))
        hits = gt + rng.normal(0, 1, gt.shape) * [3, 3, 2, 2, 0.1]
        hits[:, 2:4] = np.abs(hits[:, 2:4]) + 1
        hit_labels = np.where(rng.random(gt_per_image) < 0.1, rng.integers(0, NUM_CLASSES, gt_per_image), labels)
        boxes = np.concatenate([hits, _random_obbs(rng, random_preds)])
        pred_labels = np.concatenate([hit_labels, rng.integers(0, NUM_CLASSES, random_preds)])
        scores = np.concatenate([rng.uniform(0.3, 1, gt_per_image), rng.uniform(0, 0.7, random_preds)])
        predictions.append(Detections(Boxes(boxes, "obb", image_size=(IMAGE, IMAGE), angle="le90"),
                                      pred_labels, scores))
    return predictions, ground_truth


def _best_of(repeats: int, fn) -> tuple[float, dict]:
    times, result = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 3), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="number of images (100 GT, 200 predictions each)")
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of this many runs")
    args = parser.parse_args()
    predictions, ground_truth = make_split(args.images)
    map50_s, scored = _best_of(args.repeats, lambda: evaluate_detection(predictions, ground_truth))
    apnc_s, nc = _best_of(args.repeats, lambda: apnc(predictions, ground_truth))
    print(json.dumps({
        "benchmark": "rotated_map",
        "cpu_count": os.cpu_count(),
        "images": args.images,
        "predictions": sum(len(p) for p in predictions),
        "ground_truth": sum(len(g) for g in ground_truth),
        "results": {
            "map50_scored": {"seconds": map50_s, "mAP": round(scored["mAP"], 4)},
            "apnc_10_thresholds": {"seconds": apnc_s, "APnc50": round(nc["APnc50"], 4),
                                   "APnc50:95": round(nc["APnc50:95"], 4)},
        },
    }, indent=2))


if __name__ == "__main__":
    main()
