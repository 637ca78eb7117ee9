"""Evaluation of ICIPNet by the official RRSIS protocol, plus the checks that the language is used.

:func:`evaluate` runs a model over a :class:`~icipnet.data.RefSegEvalDataset` and accumulates
:class:`rs_shared.metrics.segmentation.RefSegMetrics` (prediction = argmax of the two logits at the input
resolution, ties to background; ground truth nearest-resized to it; IoU 0 when the union is empty).
Across processes each one evaluates a strided shard and the states are merged.

Two controls tell whether a model reads the expression rather than segmenting salient objects:

* ``shuffle_expressions=True`` pairs every image with another sample's expression (a derangement): a
  model that uses the language loses accuracy, a language-blind one does not;
* :func:`category_oracle` scores a perfect mask of a random instance of the target's category (what a
  model that reads only the category word could at best do), on RRSIS-D-layout data where every object
  of the image is annotated. On samples whose category occurs more than once (*ambiguous*), a model must
  beat it to show that it uses colour, size and spatial words.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from rs_shared.data.common import read_json
from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.masks import parse_coco_segmentation, segmentation_to_mask
from rs_shared.metrics.segmentation import RefSegMetrics, resize_mask_nearest
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .data import RefSegEvalDataset, collate


def predict_masks(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 2, S, S)`` logits → ``(B, S, S)`` bool foreground (strictly larger foreground logit)."""
    return logits[:, 1] > logits[:, 0]


def derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` with no fixed point (the identity for ``n < 2``)."""
    if n < 2:
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    return np.roll(perm, 1)[np.argsort(perm)]  # i -> the element after i in a random cycle


@torch.no_grad()
def evaluate(model, dataset: RefSegEvalDataset, *, batch_size: int = 8, accelerator=None,
             shuffle_expressions: bool = False, seed: int = 0, progress: bool = False) -> RefSegMetrics:
    """The metrics of ``model`` on ``dataset`` (per-sample IoUs in dataset order, over all processes)."""
    was_training = model.training
    model.eval()
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    device = next(model.parameters()).device
    shard = Subset(dataset, range(rank, len(dataset), world))
    partner = derangement(len(dataset), seed) if shuffle_expressions else None
    metrics = RefSegMetrics()
    position = 0
    for batch in tqdm(DataLoader(shard, batch_size=batch_size, collate_fn=collate), desc="eval",
                      disable=not progress or rank != 0, leave=False):
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if partner is not None:
            indices = [rank + world * (position + k) for k in range(len(input_ids))]
            rows = [dataset.rows[partner[i]] for i in indices]
            input_ids, attention_mask = dataset.input_ids[rows], dataset.attention_mask[rows]
        position += len(input_ids)
        logits = model(batch["pixel_values"].to(device), input_ids.to(device), attention_mask.to(device)).logits
        metrics.update(predict_masks(logits).cpu(), batch["labels"].bool())
    if was_training:
        model.train()
    if world == 1:
        return metrics
    # process r evaluated samples r, r + world, ...: put the gathered counts back in dataset order
    inter, union = np.zeros(len(dataset), np.int64), np.zeros(len(dataset), np.int64)
    for r, state in enumerate(gather_object([metrics.state()])):
        inter[r::world], union[r::world] = state["intersection"], state["union"]
    return RefSegMetrics().merge({"intersection": inter, "union": union})


def category_oracle(root: str | Path, dataset: RefSegEvalDataset, seed: int = 0) -> tuple[RefSegMetrics, np.ndarray]:
    """``(metrics, ambiguous)`` of the category-only oracle on RRSIS-D-layout data, per dataset sample.

    For each sample the oracle predicts the exact mask of one instance (drawn with ``default_rng([seed, i])``)
    of the target's category in that image; ``ambiguous[i]`` says whether the image holds more than one
    instance of it. IoUs are computed at the evaluation resolution, as for the model.
    """
    path = Path(root) / "rrsisd" / "instances.json"
    instances = read_json(path)
    images = {im["id"]: im for im in instances["images"]}
    by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    size = dataset.image_size
    metrics, ambiguous = RefSegMetrics(), np.zeros(len(dataset), bool)
    for i, row in enumerate(dataset.rows):
        record = dataset.records[row]
        target = next((a for a in by_image.get(record.image_id, []) if a["id"] == record.ann_id), None)
        if target is None:
            raise DataFormatError(path, f"annotation {record.ann_id} of image {record.image_id} is missing", record)
        same = [a for a in by_image[record.image_id] if a["category_id"] == target["category_id"]]
        pick = same[int(np.random.default_rng([seed, i]).integers(len(same)))]
        image = images[record.image_id]
        pred, gt = (_annotation_mask(a, image["height"], image["width"], size, path, record) for a in (pick, target))
        metrics.update(pred[None], gt[None])
        ambiguous[i] = len(same) > 1
    return metrics, ambiguous


def _annotation_mask(ann: dict, height: int, width: int, size: int, path: Path, record) -> np.ndarray:
    """The annotation's mask, nearest-resized to ``size × size`` like the ground truth of the evaluation."""
    seg = parse_coco_segmentation(ann["segmentation"], height, width, path, record, Problems())  # raises if bad
    return resize_mask_nearest(segmentation_to_mask(seg, height, width), (size, size))


def subset(metrics: RefSegMetrics, keep: np.ndarray) -> RefSegMetrics:
    """The metrics of the samples where ``keep`` (bool per sample) is true."""
    return RefSegMetrics().merge({"intersection": metrics.intersections[keep], "union": metrics.unions[keep]})
