"""Weighted cross-entropy + soft Dice over class logits (the RMSIN/ICIPNet segmentation loss, fused).

For logits ``x`` ``(B, C, H, W)``, class indices ``y`` ``(B, H, W)``, class weights ``w_c`` and ``p = softmax_C(x)``:

* ``CE = Σ_pixels w_y·(−log p_y) / Σ_pixels w_y`` (PyTorch's weighted-mean ``cross_entropy``);
* ``Dice = Σ_{b,c} [1 − (2·Σ_pixels p_c·[y = c] + ε) / (Σ_pixels p_c + Σ_pixels [y = c] + ε)]`` (a **sum** over the
  batch and the classes);
* ``loss = (1 − dice_weight)·CE + dice_weight·Dice``.

Both terms are computed in fp32 whatever the logits' dtype. The fused Triton version reads the logits once for the
value (per-(sample, class) sums) and once for the gradient, and never builds the one-hot target or the softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .dispatch import use_triton


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-6) -> torch.Tensor:
    """``Σ_{b,c} (1 − d_{b,c})`` for logits ``(B, C, H, W)`` and class indices ``target`` ``(B, H, W)`` (reference)."""
    probs = logits.float().softmax(dim=1)
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()  # (B, C, H, W)
    inter = (probs * one_hot).sum(dim=(2, 3))
    union = probs.sum(dim=(2, 3)) + one_hot.sum(dim=(2, 3))
    return (1 - (2 * inter + smooth) / (union + smooth)).sum()


def ce_dice_loss_reference(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor,
                           dice_weight: float, smooth: float = 1e-6) -> torch.Tensor:
    """:func:`ce_dice_loss` in plain PyTorch."""
    ce = F.cross_entropy(logits.float(), target, weight=class_weights)
    return (1 - dice_weight) * ce + dice_weight * soft_dice_loss(logits, target, smooth)


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | Sequence[float],
                 dice_weight: float, smooth: float = 1e-6) -> torch.Tensor:
    """Fused ``(1 − dice_weight)·weighted CE + dice_weight·Dice`` (see the module docstring).

    Differentiable in ``logits``. Runs the Triton kernels or the PyTorch reference according to
    :func:`rs_shared.kernels.dispatch.use_triton`.

    Args:
        logits: ``(B, C, H, W)`` class logits, any float dtype.
        target: ``(B, H, W)`` int64 class indices in ``[0, C)``.
        class_weights: ``C`` cross-entropy weights (a sequence or a tensor).
        dice_weight: the Dice share ``w``.
        smooth: the Dice ``ε``.

    Returns:
        fp32 scalar.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"expected logits (B, C, H, W) and target (B, H, W); got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    class_weights = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
    if class_weights.shape != (logits.shape[1],):
        raise ValueError(f"class_weights must hold one weight per class ({logits.shape[1]}), got shape "
                         f"{tuple(class_weights.shape)}")
    if use_triton(logits, target):
        from .triton_segmentation_loss import CeDiceLossFunction

        return CeDiceLossFunction.apply(logits, target, class_weights, float(dice_weight), float(smooth))
    return ce_dice_loss_reference(logits, target, class_weights, dice_weight, smooth)


__all__ = ["ce_dice_loss", "ce_dice_loss_reference", "soft_dice_loss"]
