"""The ICIPNet / RMSIN training loss (paper eq. 14, spec §4): ``(1 − w)·weighted CE + w·Dice``, w = 0.1.

* Cross-entropy with class weights (0.9 background, 1.1 foreground) and PyTorch's weighted-mean
  reduction ``Σ_pixels w_y·nll / Σ_pixels w_y``.
* Dice on the softmax of the two logits against the one-hot target, per (sample, class)
  ``d = (2·Σ p·t + 1e-6) / (Σ p + Σ t + 1e-6)``, and the loss is the **sum** of ``1 − d`` over the batch
  and both classes (range ``[0, 2B]``, so its weight grows with the batch size, as in the official code).

Both terms are computed in fp32 whatever the logits' dtype (autocast-safe), by
:func:`rs_shared.kernels.ce_dice_loss` (fused Triton kernels on CUDA, the PyTorch reference elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rs_shared.kernels import ce_dice_loss, soft_dice_loss

DICE_SMOOTH = 1e-6


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Σ_{b,c} (1 − d_{b,c})`` for logits ``(B, C, H, W)`` and class indices ``target`` ``(B, H, W)``."""
    return soft_dice_loss(logits, target, DICE_SMOOTH)


def icipnet_loss(logits: torch.Tensor, target: torch.Tensor, ce_weights: Sequence[float] = (0.9, 1.1),
                 dice_weight: float = 0.1) -> torch.Tensor:
    """Scalar loss for logits ``(B, 2, S, S)`` (background, foreground) and a mask ``(B, S, S)`` int64 in {0, 1}.

    ``(1 − dice_weight) · CE(logits, target; weight=ce_weights) + dice_weight · Dice``; see the module
    docstring for the exact reductions.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"expected logits (B, C, H, W) and target (B, H, W); got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if len(ce_weights) != logits.shape[1]:
        raise ValueError(f"ce_weights has {len(ce_weights)} entries for {logits.shape[1]} classes")
    return ce_dice_loss(logits, target.long(), list(ce_weights), dice_weight, smooth=DICE_SMOOTH)


__all__ = ["dice_loss", "icipnet_loss"]
