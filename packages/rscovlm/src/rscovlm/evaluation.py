"""Evaluation of RSCoVLM on detection, grounding, captioning, VQA and scene classification (spec §5, §6).

Every task generates with a :class:`rscovlm.inference.Generator` (greedy, batched), parses the text with the
strict parsers of :mod:`rscovlm.parsing` and reports its score **with the parse-failure rate** (the share
of outputs that did not parse; they are scored as wrong, never dropped).

- ``det`` (§5): images larger than ``tile_size`` are cut into DOTA windows (``rs_shared.data.dota.tile_sample``),
  each window is asked ``find the {category list}.`` under the polygon (or HBB) system turn, the answers are
  parsed (§5.2), mapped to the source image, turned into minimum-area rectangles (§5.3) and merged with
  per-class rotated NMS at IoU 0.1 (equal scores: tile order, then line order). Score: APnc50 / APnc75 /
  APnc50:95 (``rs_shared.metrics.detection.apnc``, VOC07 11-point, difficult objects counted).
- ``vg`` (§6): ``find the {expression}`` under the HBB system turn, the first line parsed; Acc@0.5 with IoU
  strictly > 0.5 and the official 1-px overlap rule; a failed parse is the box [0, 0, 0, 0] (wrong).
- ``cls`` / ``vqa`` (§6): answer accuracy under a matcher (:data:`MATCHERS`); ``cls`` failures are answers
  naming none (or several) of the classes, ``vqa`` failures empty answers. ``vqa`` can use the zoom chain.
- ``cap``: COCO caption metrics (``rs_shared.metrics.captioning``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, no
  SPICE); failures are empty captions, scored as they are (an empty caption matches nothing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from rs_shared.data.dota import DOTA_V1_0, DotaSample, tile_sample
from rs_shared.data.geometry import Boxes, min_area_quad, xyxy_to_quad
from rs_shared.metrics import text as text_metrics
from rs_shared.metrics.boxes import quad_iou
from rs_shared.metrics.captioning import METRICS as CAPTION_METRICS
from rs_shared.metrics.captioning import caption_metrics, check_caption_options
from rs_shared.metrics.detection import Detections, GroundTruth, apnc, grounding_accuracy

from .eval_data import GroundingSample, TextSample
from .inference import ChatRequest, Generator, single_turn
from .parsing import FUZZY_BACKEND, normalize_answer, parse_class, parse_detection, parse_grounding
from .templates import HBB_SYSTEM_PROMPT, SYSTEM_PROMPTS, category_list, class_key, find_prompt
from .zoom import CropSource, run_zoom_chain

MERGE_NMS_IOU = 0.1  # §5.4: per-class rotated NMS when merging tiles
JAVA_FREE_CAPTION_METRICS = ("BLEU", "ROUGE_L", "CIDEr")  # METEOR needs Java even without the PTB tokenizer
MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "exact": text_metrics.exact_match,
    "bidirectional": text_metrics.bidirectional_containment,  # VHM protocol (cls, RSVQA)
    "bidirectional_official": functools.partial(text_metrics.bidirectional_containment,
                                                empty_prediction_correct=True),  # pitfall §9.8
    "one_way": text_metrics.one_way_containment,  # VRSBench VQA
    "teochat": text_metrics.teochat_exact_match,  # GeoChat/TEOChat cls
    "wups": text_metrics.wups_match,  # LRS-VQA; exact match only without WordNet
}


def _rate(failures: int, total: int) -> float:
    return failures / total if total else 0.0


def _load_rgb(path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the image ({e})") from None


# --- detection ----------------------------------------------------------------------------------------

def rotated_nms(quads: np.ndarray, labels: Sequence[str], iou_threshold: float = MERGE_NMS_IOU) -> np.ndarray:
    """Indices (ascending) kept by greedy per-class NMS over ``(N, 8)`` quads taken in input order (all
    scores are equal, so order decides): a box is dropped when its IoU with a kept box of its class
    exceeds ``iou_threshold``."""
    labels = np.asarray(labels)
    keep: list[int] = []
    for label in dict.fromkeys(labels.tolist()):
        index = np.flatnonzero(labels == label)
        iou = quad_iou(quads[index], quads[index])
        dropped = np.zeros(len(index), dtype=bool)
        for i in range(len(index)):
            if dropped[i]:
                continue
            keep.append(int(index[i]))
            dropped[i + 1:] |= iou[i, i + 1:] > iou_threshold
    return np.array(sorted(keep), dtype=np.int64)


def evaluate_detection_set(generator: Generator, samples: Sequence[DotaSample], classes: Sequence[str] = DOTA_V1_0,
                           tile_size: int = 512, gap: int = 200, kind: str = "poly",
                           min_area_rect: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """APnc of ``generator`` on DOTA images (module docstring). Returns ``(results, records)``: results hold
    ``APnc50``, ``APnc75``, ``APnc50:95`` (fractions), per-class ``AP50``, ``parse_failure_rate`` (outputs
    with no usable line that do not say "There are none."), ``skipped_line_rate`` and counts; records hold
    one entry per window with its raw output."""
    if kind not in ("poly", "hbb"):
        raise ValueError(f"kind must be 'poly' or 'hbb', got {kind!r}")
    prompt = find_prompt(category_list(classes), eval_prompt=True)
    predictions, truths, records = [], [], []
    n_outputs = n_failed = n_lines = n_skipped = 0
    for sample in samples:
        image = np.asarray(sample.load()["image"])
        height, width = image.shape[:2]
        if max(width, height) > tile_size:
            windows = [(t.image, t.x0, t.y0, t.name) for t in tile_sample(sample, image, tile_size, gap)]
        else:
            windows = [(image, 0, 0, sample.name)]
        outputs = generator.generate([single_turn(prompt, w[0], SYSTEM_PROMPTS[kind]) for w in windows])
        quads, labels = [], []
        for (tile, x0, y0, name), output in zip(windows, outputs, strict=True):
            frame = generator.image_settings.frame(tile.shape[1], tile.shape[0])
            parsed = parse_detection(output, classes, frame, kind)
            n_outputs += 1
            failed = parsed.failure is not None or (not parsed.objects and not parsed.empty_answer)
            n_failed += failed
            n_lines += len(parsed.objects) + len(parsed.skipped)
            n_skipped += len(parsed.skipped)
            for obj in parsed.objects:
                coords = np.asarray(obj.coords, dtype=np.float64)
                quad = xyxy_to_quad(coords[None])[0] if kind == "hbb" else coords
                quads.append(quad + np.tile([x0, y0], 4))
                labels.append(classes[obj.class_index])
            records.append({"image": sample.name, "window": name, "origin": [x0, y0], "output": output,
                            "objects": len(parsed.objects), "parse_failed": bool(failed),
                            "skipped": [s.reason for s in parsed.skipped]})
        quads_arr = np.reshape(quads, (-1, 8))
        if min_area_rect and len(quads_arr):
            quads_arr = np.stack([min_area_quad(q.reshape(4, 2)).reshape(8) for q in quads_arr])
        if len(windows) > 1 and len(quads_arr):
            keep = rotated_nms(quads_arr, labels)
            quads_arr, labels = quads_arr[keep], [labels[i] for i in keep]
        gt = sample.boxes.to("quad", "pixel").data
        if min_area_rect and len(gt):
            gt = np.stack([min_area_quad(q.reshape(4, 2)).reshape(8) for q in gt])
        predictions.append(Detections(Boxes(quads_arr, "quad", "pixel", (width, height)), np.array(labels, dtype=str)))
        truths.append(GroundTruth(Boxes(gt, "quad", "pixel", (width, height)), np.array(sample.labels, dtype=str),
                                  sample.difficult))
    scores = apnc(predictions, truths, ignore_difficult=False, classes=list(classes))
    results = {**scores, "parse_failure_rate": _rate(n_failed, n_outputs), "skipped_line_rate": _rate(n_skipped, n_lines),
               "images": len(samples), "windows": n_outputs, "detections": int(sum(len(p) for p in predictions)),
               "fuzzy_backend": FUZZY_BACKEND}
    return results, records


# --- grounding -----------------------------------------------------------------------------------------

def evaluate_grounding_set(generator: Generator,
                           samples: Sequence[GroundingSample]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Acc@0.5 (IoU > 0.5, official 1-px overlap rule) with the parse-failure rate (§6)."""
    images = [_load_rgb(s.image_path) for s in samples]
    outputs = generator.generate([single_turn(find_prompt(s.expression), image, HBB_SYSTEM_PROMPT)
                                  for s, image in zip(samples, images, strict=True)])
    predictions, truths, records, failures = [], [], [], 0
    for sample, image, output in zip(samples, images, outputs, strict=True):
        parsed = parse_grounding(output, generator.image_settings.frame(*image.size))
        failures += not parsed.ok
        predictions.append(Boxes([parsed.value.coords], "xyxy", "pixel", image.size) if parsed.ok else None)
        truths.append(Boxes([sample.bbox], "xyxy", "pixel", image.size))
        records.append({"id": sample.id, "expression": sample.expression, "output": output,
                        "box": list(parsed.value.coords) if parsed.ok else [0, 0, 0, 0],
                        "gt": list(sample.bbox), "failure": parsed.failure})
    scores = grounding_accuracy(predictions, truths, threshold=0.5, official_iou=True)
    return {"Acc@0.5": scores["accuracy"], "correct": scores["correct"], "total": scores["total"],
            "parse_failure_rate": _rate(failures, len(samples))}, records


# --- text answers ---------------------------------------------------------------------------------------

def _answers(generator: Generator, samples: Sequence[TextSample], zoom: int = 0,
             crop_source: CropSource = "resized") -> tuple[list[str], list[dict[str, Any] | None]]:
    images = [_load_rgb(s.image_path) for s in samples]
    if zoom > 0:
        chains = run_zoom_chain(generator, [s.question for s in samples], images, zoom, crop_source)
        return [c.answer for c in chains], [c.to_dict() for c in chains]
    requests: list[ChatRequest] = [single_turn(s.question, image) for s, image in zip(samples, images, strict=True)]
    return generator.generate(requests), [None] * len(samples)


def evaluate_text_set(generator: Generator, samples: Sequence[TextSample], task: str, match: str | None = None,
                      classes: Sequence[str] | None = None, zoom: int = 0, crop_source: CropSource = "resized",
                      caption_tokenizer: str = "ptb",
                      caption_names: Sequence[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Scores of a ``cls``, ``vqa`` or ``cap`` set with the parse-failure rate (module docstring).

    ``match`` names a :data:`MATCHERS` entry (default ``bidirectional`` for cls, ``wups`` for vqa);
    ``classes`` is the cls class list (default: the reference answers seen); ``zoom > 0`` answers with the
    zoom chain (``zoom`` = ``max_zoom_steps``). ``caption_names`` defaults to the COCO set (BLEU-1..4, METEOR,
    ROUGE-L, CIDEr) with the standard PTB tokenizer and to the Java-free BLEU, ROUGE-L and CIDEr with
    ``caption_tokenizer="simple"``.
    """
    if task not in ("cls", "vqa", "cap"):
        raise ValueError(f"task must be cls, vqa or cap, got {task!r}")
    if task == "cap":  # fail on unknown names or a missing Java before generating, not after
        if caption_names is None:
            caption_names = CAPTION_METRICS if caption_tokenizer == "ptb" else JAVA_FREE_CAPTION_METRICS
        caption_names = check_caption_options(caption_names, caption_tokenizer)
    outputs, chains = _answers(generator, samples, zoom, crop_source)
    records = [{"id": s.id, "question": s.question, "answers": list(s.answers), "output": o,
                **({"zoom": c} if c is not None else {})} for s, o, c in zip(samples, outputs, chains, strict=True)]
    empty = sum(not normalize_answer(o) for o in outputs)
    if task == "cap":  # keyed by position: sample ids need not be unique (e.g. one record per caption of an image)
        scores = caption_metrics(dict(enumerate(outputs)), {k: list(s.answers) for k, s in enumerate(samples)},
                                 caption_names, tokenizer=caption_tokenizer)
        return {**scores, "parse_failure_rate": _rate(empty, len(samples))}, records
    name = match or ("bidirectional" if task == "cls" else "wups")
    if name not in MATCHERS:
        raise ValueError(f"unknown matcher {name!r}; choose from {sorted(MATCHERS)}")
    correct = [MATCHERS[name](o, s.answers[0]) for s, o in zip(samples, outputs, strict=True)]
    for record, ok in zip(records, correct, strict=True):
        record["correct"] = bool(ok)
    results: dict[str, Any] = {"accuracy": _rate(sum(correct), len(samples)), "correct": int(sum(correct)),
                               "total": len(samples), "matcher": name}
    if task == "cls":
        names = list(classes) if classes else sorted({class_key(s.answers[0]) for s in samples})
        parsed = [parse_class(o, names) for o in outputs]
        for record, p in zip(records, parsed, strict=True):
            record["class"] = names[p.value] if p.ok else None
        results["parse_failure_rate"] = _rate(sum(not p.ok for p in parsed), len(samples))
        results["classes"] = len(names)
    else:
        results["parse_failure_rate"] = _rate(empty, len(samples))
        if name == "wups":
            results["wups_variant"] = "exact match only (WordNet similarity not available)"
    if zoom > 0:
        results["zoom_failure_rate"] = _rate(sum(c["rounds"] and any(r["failure"] for r in c["rounds"])
                                                 for c in chains if c), len(samples))
    return results, records


__all__ = ["MATCHERS", "MERGE_NMS_IOU", "evaluate_detection_set", "evaluate_grounding_set", "evaluate_text_set",
           "rotated_nms"]
