"""Scene-classification metrics: Dassl's evaluator and the CoCoOp base-to-new summary (spec ``bimors.md`` §4).

* **Accuracy** — Dassl's top-1 accuracy over the whole test split, ``100 × correct / total``: *micro*
  accuracy, the single number in every table. Returned here as a **fraction**; CLIs print it ×100.
* **Macro accuracy** — Dassl's per-class result: the mean over the classes present in the ground truth of
  each class's accuracy (recall). Extra; equals micro accuracy on balanced test sets.
* **Macro-F1** — Dassl's ``f1_score(y_true, y_pred, average="macro", labels=np.unique(y_true))``: per-class
  ``F1 = 2·TP / (2·TP + FP + FN)`` over the classes present in the ground truth, averaged. Extra.
* **Base-to-new** — ``H = 2·Base·New / (Base + New)`` computed from Base and New **averaged over seeds
  first**; a multi-dataset "Average" row averages Base and New across datasets first, then computes H.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def predicted_labels(scores: Array) -> np.ndarray:
    """Top-1 labels ``(N,)`` int64 from ``(N, C)`` scores/logits (argmax; ties go to the lowest class index)
    or from ``(N,)`` integer labels, which are returned as they are."""
    scores = _numpy(scores)
    if scores.ndim == 2 and np.issubdtype(scores.dtype, np.floating):
        if not np.isfinite(scores).all():
            raise ValueError("scores contain NaN or infinity")
        return scores.argmax(1).astype(np.int64)
    if scores.ndim == 1 and np.issubdtype(scores.dtype, np.integer):
        return scores.astype(np.int64)
    raise ValueError(f"expected (N, C) floating-point scores or (N,) integer labels; got shape {scores.shape} "
                     f"of dtype {scores.dtype}")


def classification_metrics(scores: Array, targets: Array) -> dict[str, float | int]:
    """``{"accuracy", "macro_accuracy", "macro_f1"}`` as fractions plus ``"n"``, following Dassl's evaluator.

    ``scores``: ``(N, C)`` logits or ``(N,)`` predicted labels; ``targets``: ``(N,)`` integer labels.
    """
    pred, true = predicted_labels(scores), _target_labels(targets)
    if len(pred) != len(true):
        raise ValueError(f"{len(pred)} predictions but {len(true)} targets")
    if len(true) == 0:
        raise ValueError("no samples were evaluated")
    if true.min() < 0 or pred.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    size = int(max(true.max(), pred.max())) + 1
    correct = pred == true
    tp = np.bincount(true[correct], minlength=size)
    support = np.bincount(true, minlength=size)        # TP + FN
    predicted = np.bincount(pred, minlength=size)      # TP + FP
    present = support > 0                              # Dassl: labels=np.unique(y_true)
    recall = tp[present] / support[present]
    f1 = 2 * tp[present] / (support[present] + predicted[present])
    return {"accuracy": float(correct.mean()), "macro_accuracy": float(recall.mean()),
            "macro_f1": float(f1.mean()), "n": len(true)}


class ClassificationMetrics:
    """Accumulates predictions over batches; :meth:`compute` returns :func:`classification_metrics`.

    ``state()`` / ``merge()`` gather per-process results (e.g. with ``torch.distributed.all_gather_object``);
    merging equals a single pass.
    """

    def __init__(self) -> None:
        self._pred: list[np.ndarray] = []
        self._true: list[np.ndarray] = []

    def update(self, scores: Array, targets: Array) -> None:
        """Add a batch: ``(B, C)`` logits or ``(B,)`` labels, and ``(B,)`` integer targets."""
        pred, true = predicted_labels(scores), _target_labels(targets)
        if len(pred) != len(true):
            raise ValueError(f"{len(pred)} predictions but {len(true)} targets")
        self._pred.append(pred)
        self._true.append(true)

    def state(self) -> dict[str, np.ndarray]:
        """Picklable state: predicted and true labels, in update order."""
        return {"pred": _cat(self._pred), "true": _cat(self._true)}

    def merge(self, other: ClassificationMetrics | Mapping[str, np.ndarray]) -> ClassificationMetrics:
        """Append another accumulator or its :meth:`state`."""
        state = other.state() if isinstance(other, ClassificationMetrics) else other
        self.update(np.asarray(state["pred"], np.int64), np.asarray(state["true"], np.int64))
        return self

    def __len__(self) -> int:
        return sum(len(t) for t in self._true)

    def compute(self) -> dict[str, float | int]:
        return classification_metrics(_cat(self._pred), _cat(self._true))


def harmonic_mean(base: float, new: float) -> float:
    """``H = 2·Base·New / (Base + New)`` (0 when both are 0); units are kept (fractions in, fractions out)."""
    if base < 0 or new < 0:
        raise ValueError(f"accuracies must be non-negative, got base={base}, new={new}")
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def base_new_summary(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, float | int]:
    """CoCoOp base-to-new row for one dataset: ``{seed: {"base": acc, "new": acc}}`` →
    ``{"base", "new", "H", "n_seeds"}``, where Base and New are averaged over seeds **first** and H is the
    harmonic mean of those averages (not the average of per-seed H)."""
    if not per_seed:
        raise ValueError("no seeds given")
    base, new = _mean_base_new(per_seed, "seed")
    return {"base": base, "new": new, "H": harmonic_mean(base, new), "n_seeds": len(per_seed)}


def base_new_average(per_dataset: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The multi-dataset "Average" row: ``{dataset: {"base", "new", ...}}`` (e.g. :func:`base_new_summary`
    outputs) → ``{"base", "new", "H"}`` with Base and New averaged across datasets first, then H."""
    if not per_dataset:
        raise ValueError("no datasets given")
    base, new = _mean_base_new(per_dataset, "dataset")
    return {"base": base, "new": new, "H": harmonic_mean(base, new)}


def _mean_base_new(rows: Mapping[object, Mapping[str, float]], what: str) -> tuple[float, float]:
    for key, row in rows.items():
        if not isinstance(row, Mapping) or "base" not in row or "new" not in row:
            raise ValueError(f"{what} {key!r}: expected a mapping with 'base' and 'new' accuracies, got {row!r}")
    return (float(np.mean([row["base"] for row in rows.values()])),
            float(np.mean([row["new"] for row in rows.values()])))


def _target_labels(targets: Array) -> np.ndarray:
    true = _numpy(targets)
    if true.ndim != 1 or not np.issubdtype(true.dtype, np.integer):
        raise ValueError(f"targets must be (N,) integer labels; got shape {true.shape} of dtype {true.dtype}")
    return true.astype(np.int64)


def _numpy(x: Array) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"expected a numpy array or torch tensor, got {type(x).__name__}")


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
