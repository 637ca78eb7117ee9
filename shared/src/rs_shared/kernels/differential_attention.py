"""Differential cross-attention (ICIPNet's BIF, spec §3.1): two softmax maps over few keys, subtracted, times ``V``.

For every batch element and head, with ``Q = [Q₁ ‖ Q₂]`` and ``K = [K₁ ‖ K₂]`` split along their last axis,

    ``A = softmax(Q₁K₁ᵀ·s + m) − λ·softmax(Q₂K₂ᵀ·s + m)``,  ``out = A V``,

where ``m = 1e4·mask − 1e4`` is the key-padding bias (0 for real keys, −1e4 for padded ones) and ``λ`` has one
value per head. Everything runs in fp32. The fused Triton version never stores the two ``P × T`` maps.
"""

from __future__ import annotations

import torch

from .dispatch import use_triton


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, lam: torch.Tensor) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be (B, h, S, dim); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, h, _, two_d = q.shape
    T = k.shape[2]
    if T == 0:
        raise ValueError("k must hold at least one key (T >= 1)")
    if two_d % 2 or k.shape != (B, h, T, two_d):
        raise ValueError(f"q (B, h, P, 2d) and k (B, h, T, 2d) need the same even last axis; got {tuple(q.shape)} "
                         f"and {tuple(k.shape)}")
    if v.shape[:3] != (B, h, T):
        raise ValueError(f"v must be (B, h, T, e) = ({B}, {h}, {T}, e), got {tuple(v.shape)}")
    if key_mask.shape != (B, T):
        raise ValueError(f"key_mask must be (B, T) = ({B}, {T}), got {tuple(key_mask.shape)}")
    if lam.shape != (h,):
        raise ValueError(f"lam must hold one value per head, shape ({h},), got {tuple(lam.shape)}")


def differential_attention_map(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor, lam: torch.Tensor,
                               scale: float) -> torch.Tensor:
    """The differential map ``A`` (PyTorch only; for inspection and the reference).

    Args:
        q: ``(B, h, P, 2d)`` queries, halves ``Q₁ ‖ Q₂``.
        k: ``(B, h, T, 2d)`` keys, halves ``K₁ ‖ K₂``.
        key_mask: ``(B, T)``, 1 for real keys and 0 for padding.
        lam: ``(h,)`` λ of each head.
        scale: the score factor ``s`` (``1/√d`` in BIF).

    Returns:
        fp32 ``(B, h, P, T)``.
    """
    q1, q2 = q.float().chunk(2, dim=-1)
    k1, k2 = k.float().chunk(2, dim=-1)
    bias = (1e4 * key_mask.float() - 1e4)[:, None, None, :]  # padded keys → −1e4
    attn1 = (q1 @ k1.transpose(-2, -1) * scale + bias).softmax(dim=-1)
    attn2 = (q2 @ k2.transpose(-2, -1) * scale + bias).softmax(dim=-1)
    return attn1 - lam.float().view(1, -1, 1, 1) * attn2


def differential_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
                                     lam: torch.Tensor, scale: float) -> torch.Tensor:
    """``A V`` in plain PyTorch (see :func:`differential_attention`)."""
    return differential_attention_map(q, k, key_mask, lam, scale) @ v.float()


def differential_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
                           lam: torch.Tensor, scale: float) -> torch.Tensor:
    """Fused differential cross-attention ``(softmax(Q₁K₁ᵀs + m) − λ·softmax(Q₂K₂ᵀs + m)) V``.

    Differentiable in ``q``, ``k``, ``v`` and ``lam``. Runs the Triton kernels or the PyTorch reference according to
    :func:`rs_shared.kernels.dispatch.use_triton`.

    Args:
        q: ``(B, h, P, 2d)`` queries, halves ``Q₁ ‖ Q₂``.
        k: ``(B, h, T, 2d)`` keys, halves ``K₁ ‖ K₂`` (the kernels hold all ``T`` keys at once: ``T`` ≲ 128).
        v: ``(B, h, T, e)`` values.
        key_mask: ``(B, T)``, 1 for real keys and 0 for padding (padded keys get the bias −1e4).
        lam: ``(h,)`` λ of each head.
        scale: the score factor ``s``.

    Returns:
        fp32 ``(B, h, P, e)``.
    """
    _check(q, k, v, key_mask, lam)
    if use_triton(q, k, v, key_mask, lam):
        from .triton_differential_attention import DifferentialAttentionFunction

        return DifferentialAttentionFunction.apply(q, k, v, key_mask, lam, float(scale))
    return differential_attention_reference(q, k, v, key_mask, lam, scale)


__all__ = ["differential_attention", "differential_attention_map", "differential_attention_reference"]
