"""CLV-Net's losses besides the caption cross-entropy: the mask losses (spec §1.5) and SRAlign (§1.4).

* :func:`mask_bce`, :func:`mask_dice`: per-mask BCE-with-logits and GeoPixel's scaled Dice on ``(N, H, W)``
  logits at the original image size; the model averages them over all masks of the batch.
* :func:`relation_consistency_loss`: L_rec (eq. 11), the symmetric KL between the textual and visual relation
  matrices, from their row log-softmaxes.
* :func:`cross_modal_contrastive_loss`: L_csc (eq. 10), decoupled InfoNCE between mask embeddings and the word
  embeddings of the phrases, in both directions, with the spec's [RECON] positive/negative sets. Each direction is
  one :func:`rs_shared.kernels.grouped_info_nce` (fused Triton kernels on CUDA, the PyTorch reference elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from rs_shared.kernels import grouped_info_nce

DICE_SCALE = 1000.0
DICE_EPS = 1e-6
CSC_REDUCTIONS = ("mean", "sum")


def _check_masks(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 3 or logits.shape != targets.shape:
        raise ValueError(f"mask logits and targets must both be (N, H, W); got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")


def mask_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-mask mean binary cross-entropy with logits (§1.5).

    Args:
        logits: ``(N, H, W)`` mask logits.
        targets: ``(N, H, W)`` binary targets (bool or 0/1 of any dtype).

    Returns:
        ``(N,)`` mean over the pixels of each mask.
    """
    _check_masks(logits, targets)
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return loss.flatten(1).mean(1)


def mask_dice(logits: torch.Tensor, targets: torch.Tensor, scale: float = DICE_SCALE,
              eps: float = DICE_EPS) -> torch.Tensor:
    """Per-mask Dice loss as GeoPixel defines it (§1.5).

    ``1 − (2·Σ(p·t)/scale + eps) / (Σp/scale + Σt/scale + eps)`` with ``p = sigmoid(logits)``; the division by
    ``scale`` is part of the definition (it sets the effective epsilon). An empty target with all ``p ≈ 0``
    gives 0; with ``p = 0.5`` everywhere and a target fraction ``a`` it gives ``1 − a / (0.5 + a)``.

    Args:
        logits: ``(N, H, W)`` mask logits.
        targets: ``(N, H, W)`` binary targets.

    Returns:
        ``(N,)`` Dice loss of each mask.
    """
    _check_masks(logits, targets)
    p = logits.sigmoid().flatten(1)
    t = targets.to(p.dtype).flatten(1)
    numerator = 2 * (p * t).sum(1) / scale
    denominator = p.sum(1) / scale + t.sum(1) / scale
    return 1 - (numerator + eps) / (denominator + eps)


def relation_consistency_loss(log_r_t: torch.Tensor, log_r_v: torch.Tensor) -> torch.Tensor:
    """L_rec (§1.4 eq. 11): ``½ Σ_ij [R^t (log R^t − log R^v) + R^v (log R^v − log R^t)]``.

    Args:
        log_r_t: ``(N, N)`` row log-softmax of the textual relation logits (log R^t; finite values).
        log_r_v: ``(N, N)`` row log-softmax of the visual relation logits (log R^v).

    Returns:
        Scalar, ≥ 0, symmetric in its arguments, exactly 0 when they are equal; 0 for ``N = 1`` (a 1 × 1 row
        softmax is 1) and for ``N = 0``.
    """
    if log_r_t.ndim != 2 or log_r_t.shape[0] != log_r_t.shape[1] or log_r_t.shape != log_r_v.shape:
        raise ValueError(f"relation matrices must both be (N, N); got {tuple(log_r_t.shape)} and "
                         f"{tuple(log_r_v.shape)}")
    # the two KL terms combine into ½ Σ (R^t − R^v)(log R^t − log R^v): every entry is ≥ 0
    return 0.5 * ((log_r_t.exp() - log_r_v.exp()) * (log_r_t - log_r_v)).sum()


def cross_modal_contrastive_loss(
    mask_embeds: torch.Tensor,
    word_embeds: Sequence[torch.Tensor],
    logit_scale: torch.Tensor,
    reduction: str = "mean",
    include_positive: bool = False,
) -> torch.Tensor:
    """L_csc (§1.4 eq. 10) with the spec's [RECON] sets.

    Mask → words: for object ``i`` every word ``s`` of ``S_i⁺ = word_embeds[i]`` is a positive, the words of
    all other objects are the negatives: ``−(1/|S_i⁺|) Σ_s log(exp(m_i·s/τ) / Σ_{s' ∈ S_j, j≠i} exp(m_i·s'/τ))``.
    Words → mask: ``s_i`` = the renormalised mean of ``S_i⁺``, positive ``m_i``, negatives ``m_j`` (``j ≠ i``):
    ``−log(exp(s_i·m_i/τ) / Σ_{j≠i} exp(s_i·m_j/τ))``. Without the positive in the denominators (literal eq. 10)
    the loss can be negative; ``include_positive`` adds it (ordinary InfoNCE, ≥ 0).

    Args:
        mask_embeds: ``(N, C)`` mask embeddings, unit rows.
        word_embeds: ``N`` tensors ``(n_i, C)``, ``n_i ≥ 1``, unit rows (phrase tokens and the ``[SEG]`` state).
        logit_scale: scalar tensor ``1/τ``.
        reduction: ``"mean"`` over objects (default) or ``"sum"`` (literal eq. 10).
        include_positive: keep the positive in each denominator.

    Returns:
        Scalar; for ``N < 2`` a zero that stays connected to the inputs' graph (the loss is skipped).
    """
    if reduction not in CSC_REDUCTIONS:
        raise ValueError(f"reduction must be one of {CSC_REDUCTIONS}, got {reduction!r}")
    if mask_embeds.ndim != 2:
        raise ValueError(f"mask_embeds must be (N, C), got {tuple(mask_embeds.shape)}")
    n, c = mask_embeds.shape
    if len(word_embeds) != n:
        raise ValueError(f"got {len(word_embeds)} word sets for {n} mask embeddings (one per object expected)")
    for i, words in enumerate(word_embeds):
        if words.ndim != 2 or words.shape[1] != c or len(words) == 0:
            raise ValueError(f"word set {i} must be (n_i >= 1, {c}), got {tuple(words.shape)}")
    if n < 2:  # §7.5: skipped, but keep the graph so every parameter still gets a (zero) gradient
        return mask_embeds.sum() * 0 + logit_scale * 0 + sum(w.sum() * 0 for w in word_embeds)

    words = torch.cat(list(word_embeds))  # (T, C)
    owner = torch.repeat_interleave(torch.arange(n, device=words.device),
                                    torch.tensor([len(w) for w in word_embeds], device=words.device))

    # mask → words (first sum of eq. 10): each word's owner is its object, the other objects' words are negatives
    per_word = grouped_info_nce(mask_embeds, words, owner, logit_scale, include_positive)  # (T,)
    mask_to_words = torch.zeros(n, dtype=per_word.dtype, device=per_word.device).index_add(0, owner, per_word)
    mask_to_words = mask_to_words / torch.bincount(owner, minlength=n).to(per_word.dtype)

    # words → mask (second sum of eq. 10): phrase i owns mask i, the other masks are negatives
    phrase = F.normalize(torch.stack([w.mean(0) for w in word_embeds]), dim=-1)  # (N, C)
    objects = torch.arange(n, device=words.device)
    words_to_mask = grouped_info_nce(phrase, mask_embeds, objects, logit_scale, include_positive)  # (N,)

    total = (mask_to_words + words_to_mask).sum()
    return total / n if reduction == "mean" else total
