"""Evaluation of BiMoRS and of zero-shot CLIP on a scene-classification test set (spec §4).

The metric is Dassl's: **micro** top-1 accuracy over the whole test split (the number of every table), with
macro accuracy (mean per-class recall) and macro-F1 as extras — :mod:`rs_shared.metrics.classification`, as
fractions. Zero-shot CLIP is the baseline: the same frozen CLIP, class text ``"a photo of a {name}."``
(``config.template``) through ``encode_text``, logits ``100 · cos``; it needs no caption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from rs_shared.metrics.classification import ClassificationMetrics
from rs_shared.metrics.report import markdown_table
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import BiMoRSDataset, collate
from .modeling import BiMoRSModel

EVAL_BATCH_SIZE = 100  # spec §2: test batch 100
METRIC_COLUMNS = ("accuracy", "macro_accuracy", "macro_f1", "n")
PROTOCOL = ("Dassl top-1: micro accuracy over the full test split (primary), macro accuracy (mean per-class recall) "
            "and macro-F1 (extra); zero-shot CLIP uses the prompt template of the model config")


@torch.no_grad()
def evaluate(model: BiMoRSModel, dataset: BiMoRSDataset, *, batch_size: int = EVAL_BATCH_SIZE,
             zero_shot: bool = False, num_workers: int = 0, progress: bool = True,
             desc: str | None = None) -> dict[str, float | int]:
    """Metrics of ``model`` on ``dataset`` (its ``classnames`` become the model's class prompts).

    Returns ``{"accuracy", "macro_accuracy", "macro_f1"}`` (fractions) and ``"n"``. ``zero_shot=True`` scores
    zero-shot CLIP with the model's CLIP instead of the learned prompts. The model's train/eval mode is restored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not zero_shot and dataset.caption_embeds is None:
        raise ValueError("BiMoRS needs the caption embeddings of the test images: build the dataset with its "
                         "CaptionCache (or evaluate zero-shot CLIP)")
    was_training = model.training
    model.eval()
    if model.class_names != list(dataset.classnames):
        model.set_class_names(dataset.classnames)
    device = model.clip.token_embedding.weight.device
    text_features = model.get_zero_shot_text_features() if zero_shot else None  # (C, E)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers,
                        generator=torch.Generator())  # own generator: evaluating never draws from the training RNG
    metrics = ClassificationMetrics()
    label = desc or ("zero-shot CLIP" if zero_shot else "BiMoRS")
    for batch in tqdm(loader, desc=f"eval {label}", unit="batch", disable=not progress, leave=False):
        pixel_values = batch["pixel_values"].to(device)
        if zero_shot:
            logits = model.compute_logits(model.get_image_features(pixel_values), text_features)
        else:
            logits = model(pixel_values, batch["caption_embeds"].to(device)).logits
        metrics.update(logits.float().cpu(), batch["labels"])
    model.train(was_training)
    return metrics.compute()


def metrics_markdown(rows: Sequence[Mapping], key_columns: Sequence[str] = ("method",), digits: int = 2) -> str:
    """A Markdown table of metric rows: ``key_columns`` then :data:`METRIC_COLUMNS`, fractions shown in percent."""
    scaled = [{k: 100 * v if isinstance(v, float) else v for k, v in row.items()} for row in rows]
    return markdown_table(scaled, (*key_columns, *METRIC_COLUMNS), digits=digits)


__all__ = ["EVAL_BATCH_SIZE", "METRIC_COLUMNS", "PROTOCOL", "evaluate", "metrics_markdown"]
