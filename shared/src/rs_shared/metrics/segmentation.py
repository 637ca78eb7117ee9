"""Referring segmentation metrics: the RRSIS official test-script protocol (LAVT / RMSIN / ICIPNet).

Protocol (spec ``icipnet.md`` §6), per (referred object, expression) sample, every expression counted:

* the predicted mask is the argmax over the two output logits (foreground wins only if its logit is
  strictly larger: ties go to background) at the **evaluation resolution**, 480×480 for RRSIS models;
* the ground-truth mask is resized to that resolution with PIL nearest neighbour
  (:func:`resize_mask_nearest`); predictions are **not** resized back to the original resolution;
* ``I = |pred ∧ gt|``, ``U = |pred ∨ gt|``, ``IoU = I / U`` and ``IoU = 0`` when ``U = 0`` — so a sample
  with an empty ground truth and an empty prediction scores **0, not 1**, and adds nothing to ``ΣU``
  (exactly what the official script does);
* ``oIoU = ΣI / ΣU`` over all samples (0 when ``ΣU = 0``), ``mIoU`` = mean per-sample IoU, and
  ``P@X`` = share of samples with ``IoU ≥ X`` for ``X ∈ {0.5, 0.6, 0.7, 0.8, 0.9}``.

All values are returned as **fractions in [0, 1]**; tables and CLIs print them ×100 (percent), as the
papers do.

Per-category mIoU (ICIPNet Table V) is not in the official code; :func:`category_of` and
:func:`category_miou` implement the spec's reconstruction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

Array = np.ndarray | torch.Tensor

PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def prediction_masks(pred: Array) -> Array:
    """Binary ``(B, H, W)`` masks from a batch of predictions, in the same library (numpy or torch).

    Accepted forms — anything else raises :class:`ValueError` rather than being guessed:

    * ``(B, H, W)`` bool: masks, returned as is;
    * ``(B, H, W)`` integer with values in {0, 1}: masks (e.g. the output of ``logits.argmax(1)``);
    * ``(B, 2, H, W)`` floating: background/foreground logits; foreground where ``pred[:, 1] > pred[:, 0]``,
      i.e. ``argmax`` with ties resolved to background (the official rule);
    * ``(B, H, W)`` floating: one foreground logit per pixel; foreground where it is ``> 0``. Probabilities
      must be thresholded by the caller (``prob > 0.5``) — a probability map here would be misread.

    Non-finite logits raise (a diverged model must not get a score).
    """
    _check_array(pred, "prediction")
    if pred.ndim == 4:
        if pred.shape[1] != 2 or not _is_floating(pred):
            raise ValueError(f"4-D predictions must be (B, 2, H, W) floating-point logits; got shape "
                             f"{tuple(pred.shape)} of dtype {pred.dtype}")
        _check_finite(pred)
        return pred[:, 1] > pred[:, 0]
    if pred.ndim != 3:
        raise ValueError(f"predictions must be (B, H, W) masks/logits or (B, 2, H, W) logits; got shape "
                         f"{tuple(pred.shape)} (add a batch dimension for a single mask)")
    if _is_floating(pred):
        _check_finite(pred)
        return pred > 0
    return _integer_or_bool_mask(pred, "prediction")


def target_masks(gt: Array) -> Array:
    """Binary ``(B, H, W)`` ground-truth masks: bool, or integers with values in {0, 1} (not 0/255)."""
    _check_array(gt, "ground truth")
    if gt.ndim != 3:
        raise ValueError(f"ground-truth masks must be (B, H, W); got shape {tuple(gt.shape)}")
    if _is_floating(gt):
        raise ValueError(f"ground-truth masks must be bool or 0/1 integers, got {gt.dtype}")
    return _integer_or_bool_mask(gt, "ground truth")


def resize_mask_nearest(mask: Array, size: tuple[int, int]) -> Array:
    """Resize ``(..., H, W)`` masks to ``size = (height, width)`` with PIL nearest neighbour.

    This is the ground-truth transform of the official test script (``F.resize(target, (480, 480),
    interpolation=NEAREST)`` on a PIL image), reproduced pixel for pixel by going through PIL itself
    (PIL's nearest uses fixed-point source coordinates, which differ from the exact
    ``floor((i + 0.5)·in/out)`` wherever that lands exactly on a pixel edge). Returns the same library,
    dtype and device as ``mask``. Metrics are then computed at this resolution; predictions are never
    resized back.
    """
    height, width = size
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (height, width), got {size}")
    if mask.ndim < 2:
        raise ValueError(f"masks must have at least 2 dimensions (..., H, W); got shape {tuple(mask.shape)}")
    is_torch = isinstance(mask, torch.Tensor)
    array = mask.detach().cpu().numpy() if is_torch else np.asarray(mask)
    if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"masks must be bool or integer label maps, got {array.dtype}")
    flat = array.reshape(-1, *array.shape[-2:])
    if flat.size and (flat.min() < 0 or flat.max() > 255):
        raise ValueError("integer masks must hold labels in [0, 255] (8-bit, like the official PNG masks)")
    out = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize((width, height), Image.NEAREST))
                    for m in flat]) if len(flat) else np.zeros((0, height, width), np.uint8)
    out = out.astype(array.dtype).reshape(*array.shape[:-2], height, width)
    return torch.from_numpy(out).to(mask.device) if is_torch else out


class RefSegMetrics:
    """Accumulates the RRSIS test-script metrics over batches (see the module docstring for the protocol).

    ``update(pred, gt)`` takes a batch of predictions (any form of :func:`prediction_masks`) and binary
    ground-truth masks of the same ``(B, H, W)`` at the evaluation resolution; numpy and torch inputs can be
    mixed. Per-sample intersections and unions are kept, in update order, so the result is independent of
    batching and :meth:`merge` of per-process accumulators equals a single pass::

        metrics = RefSegMetrics()
        for batch in loader:
            metrics.update(model(batch).logits, batch["mask"])
        states = [None] * world_size
        torch.distributed.all_gather_object(states, metrics.state())
        total = RefSegMetrics()
        for s in states:
            total.merge(s)
        total.compute()  # {"oIoU": 0.77, "mIoU": 0.64, "P@0.5": ..., "P@0.9": ..., "n": 3481}
    """

    def __init__(self) -> None:
        self._intersection: list[np.ndarray] = []
        self._union: list[np.ndarray] = []

    def update(self, pred: Array, gt: Array) -> None:
        """Add a batch: ``pred`` as in :func:`prediction_masks`, ``gt`` ``(B, H, W)`` bool or 0/1 masks."""
        p, g = prediction_masks(pred), target_masks(gt)
        if tuple(p.shape) != tuple(g.shape):
            raise ValueError(f"prediction masks {tuple(p.shape)} and ground truth {tuple(g.shape)} differ in shape; "
                             "evaluate both at the same resolution (resize the ground truth with "
                             "resize_mask_nearest, never the prediction)")
        if isinstance(p, torch.Tensor) and isinstance(g, torch.Tensor):
            g = g.to(p.device)
            inter = (p & g).flatten(1).sum(1).cpu().numpy()
            union = (p | g).flatten(1).sum(1).cpu().numpy()
        else:
            p, g = _numpy(p), _numpy(g)
            inter = (p & g).reshape(len(p), -1).sum(1)
            union = (p | g).reshape(len(p), -1).sum(1)
        self._intersection.append(inter.astype(np.int64))
        self._union.append(union.astype(np.int64))

    @property
    def intersections(self) -> np.ndarray:
        """Per-sample ``I`` (int64), in update order."""
        return np.concatenate(self._intersection) if self._intersection else np.zeros(0, np.int64)

    @property
    def unions(self) -> np.ndarray:
        """Per-sample ``U`` (int64), in update order."""
        return np.concatenate(self._union) if self._union else np.zeros(0, np.int64)

    @property
    def ious(self) -> np.ndarray:
        """Per-sample IoU (float64), in update order; 0 where ``U = 0``."""
        inter, union = self.intersections, self.unions
        return np.divide(inter, union, out=np.zeros(len(union)), where=union > 0)

    def __len__(self) -> int:
        return sum(len(u) for u in self._union)

    def state(self) -> dict[str, np.ndarray]:
        """Picklable state (per-sample ``intersection`` and ``union``) for gathering across processes."""
        return {"intersection": self.intersections, "union": self.unions}

    def merge(self, other: RefSegMetrics | Mapping[str, np.ndarray]) -> RefSegMetrics:
        """Append another accumulator or its :meth:`state` (samples keep their order: self, then other)."""
        state = other.state() if isinstance(other, RefSegMetrics) else other
        inter = np.asarray(state["intersection"], dtype=np.int64)
        union = np.asarray(state["union"], dtype=np.int64)
        if inter.shape != union.shape or inter.ndim != 1 or (inter > union).any() or (inter < 0).any():
            raise ValueError("invalid RefSegMetrics state: 'intersection' and 'union' must be equal-length "
                             "1-D counts with 0 <= intersection <= union")
        self._intersection.append(inter)
        self._union.append(union)
        return self

    def compute(self) -> dict[str, float | int]:
        """``{"oIoU", "mIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"}`` as fractions, plus ``"n"``."""
        inter, union, ious = self.intersections, self.unions, self.ious
        if len(ious) == 0:
            raise ValueError("no samples were evaluated")
        total_union = int(union.sum())
        results: dict[str, float | int] = {
            "oIoU": float(inter.sum() / total_union) if total_union else 0.0,
            "mIoU": float(ious.mean()),
        }
        for t in PRECISION_THRESHOLDS:
            results[f"P@{t}"] = float((ious >= t).mean())
        results["n"] = len(ious)
        return results


def category_of(expression: str, categories: Iterable[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The category a referring expression talks about, or ``None`` if no category name occurs in it.

    Spec [RECON] for RefSegRS per-category mIoU: the category is the one whose name occurs in the expression,
    longest match first, with aliases supplied by the caller (RefSegRS: ``{"road": "paved road"}``).
    Matching is case-insensitive on whole words (a name must start at a word boundary and may take a plural
    ``s``/``es``, so "cars" is car but "street" is not tree). The **leftmost** occurrence wins (the referent
    normally comes first); among names starting at the same position the longest wins, so "road marking"
    beats the alias "road". Aliases map to categories, which must be among ``categories``.
    """
    categories = list(categories)
    aliases = dict(aliases or {})
    unknown = sorted(set(aliases.values()) - set(categories))
    if unknown:
        raise ValueError(f"aliases point to unknown categories {unknown}; known: {categories}")
    names = {name.lower(): name for name in categories}
    names.update({alias.lower(): target for alias, target in aliases.items()})
    if not names:
        raise ValueError("no categories given")
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    match = re.search(rf"\b({alternatives})(?:s|es)?\b", expression.lower())
    return None if match is None else names[match.group(1)]


def category_miou(ious: Sequence[float] | np.ndarray, categories: Sequence[str | None]) -> dict:
    """Per-category mIoU and their **unweighted** mean (ICIPNet Table V reconstruction).

    ``ious`` are per-sample IoUs (e.g. :attr:`RefSegMetrics.ious`) and ``categories`` the category of each
    sample (e.g. from :func:`category_of`), aligned with them. Samples without a category (``None``) are left
    out and counted in ``"unassigned"``; categories without samples are absent. Returns
    ``{"per_category": {name: mIoU}, "counts": {name: n}, "mean": float, "unassigned": int}`` (fractions).
    """
    ious = np.asarray(ious, dtype=np.float64)
    if len(ious) != len(categories):
        raise ValueError(f"{len(ious)} IoUs but {len(categories)} category labels")
    per_category: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name in sorted({c for c in categories if c is not None}):
        selected = ious[[c == name for c in categories]]
        per_category[name] = float(selected.mean())
        counts[name] = len(selected)
    if not per_category:
        raise ValueError("no sample has a category")
    return {"per_category": per_category, "counts": counts, "mean": float(np.mean(list(per_category.values()))),
            "unassigned": sum(c is None for c in categories)}


def _check_array(x: object, what: str) -> None:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


def _is_floating(x: Array) -> bool:
    return x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)


def _check_finite(x: Array) -> None:
    finite = torch.isfinite(x).all().item() if isinstance(x, torch.Tensor) else np.isfinite(x).all()
    if not finite:
        raise ValueError("prediction logits contain NaN or infinity")


def _integer_or_bool_mask(x: Array, what: str) -> Array:
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool:
            return x
        if x.is_complex():
            raise ValueError(f"{what} masks must be bool or 0/1 integers, got {x.dtype}")
        bad = bool(((x != 0) & (x != 1)).any())
    else:
        if x.dtype == np.bool_:
            return x
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{what} masks must be bool or 0/1 integers, got {x.dtype}")
        bad = bool(((x != 0) & (x != 1)).any())
    if bad:
        raise ValueError(f"{what} masks must hold only 0 and 1 (got other values, e.g. 255: binarise first)")
    return x != 0


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
