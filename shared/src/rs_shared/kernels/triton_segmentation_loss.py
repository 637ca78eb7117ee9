"""Triton kernels of :func:`rs_shared.kernels.ce_dice_loss` and their autograd function.

Imported only when the dispatch picks Triton. A program owns ``BLOCK_N`` pixels of one sample and all ``C``
classes (a ``(BLOCK_C, BLOCK_N)`` tile of the ``(B, C, H·W)`` logits).

* forward (grid ``B × ⌈HW/BLOCK_N⌉``): softmax over the classes, then per program the partial sums
  ``Σ p_c·[y=c]``, ``Σ p_c``, ``Σ [y=c]`` of every class and ``Σ w_y·(lse − x_y)``, ``Σ w_y``; one deterministic
  ``torch.sum`` over the programs gives the Dice statistics and the weighted CE.
* backward (same grid): with ``U = Σp + Σ[y=c] + ε`` per (sample, class) the Dice gradient w.r.t. ``p_c`` is
  ``g_c = −2w/U·[y=c] + w(2I + ε)/U²``, so ``∂loss/∂x_c = p_c(g_c − Σ_k p_k g_k) + (1 − w)·w_y(p_c − [y=c]) / Σ w_y``,
  elementwise from the saved per-(sample, class) coefficients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _softmax_tile(logits_ptr, target_ptr, b, block, C, HW, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    """Class ids, pixel ids, their validity, fp32 logits, softmax ``p`` (0 off the tile), log-sum-exp and one-hot."""
    cls = tl.arange(0, BLOCK_C)
    pix = block * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok, n_ok = cls < C, pix < HW
    x = tl.load(logits_ptr + b * C * HW + cls[:, None] * HW + pix[None, :], mask=c_ok[:, None] & n_ok[None, :],
                other=0.0).to(tl.float32)
    x = tl.where(c_ok[:, None], x, float("-inf"))
    y = tl.load(target_ptr + b * HW + pix, mask=n_ok, other=-1)
    m = tl.max(x, axis=0)
    e = tl.exp(x - m[None, :])
    z = tl.sum(e, axis=0)
    p = tl.where(n_ok[None, :], e / z[None, :], 0.0)
    one_hot = (cls[:, None] == y[None, :]) & n_ok[None, :]
    return cls, pix, c_ok, n_ok, x, p, m + tl.log(z), one_hot


@triton.jit
def _forward_kernel(logits_ptr, target_ptr, weight_ptr, stats_ptr, ce_ptr, C, HW,
                    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    b, block = tl.program_id(0), tl.program_id(1)
    cls, pix, c_ok, n_ok, x, p, lse, one_hot = _softmax_tile(logits_ptr, target_ptr, b, block, C, HW,
                                                             BLOCK_C, BLOCK_N)
    part = b * tl.num_programs(1) + block  # this program's partial-sum slot
    stats = stats_ptr + part * 3 * C + cls
    tl.store(stats, tl.sum(tl.where(one_hot, p, 0.0), axis=1), mask=c_ok)  # Σ p·t
    tl.store(stats + C, tl.sum(p, axis=1), mask=c_ok)  # Σ p
    tl.store(stats + 2 * C, tl.sum(one_hot.to(tl.float32), axis=1), mask=c_ok)  # Σ t
    w = tl.load(weight_ptr + cls, mask=c_ok, other=0.0)
    w_y = tl.sum(tl.where(one_hot, w[:, None], 0.0), axis=0)  # (BLOCK_N,), 0 off the tile
    x_y = tl.sum(tl.where(one_hot, x, 0.0), axis=0)
    tl.store(ce_ptr + part * 2, tl.sum(w_y * (lse - x_y), axis=0))
    tl.store(ce_ptr + part * 2 + 1, tl.sum(w_y, axis=0))


@triton.jit
def _backward_kernel(logits_ptr, target_ptr, weight_ptr, alpha_ptr, beta_ptr, ce_scale_ptr, grad_ptr, C, HW,
                     BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr):
    b, block = tl.program_id(0), tl.program_id(1)
    cls, pix, c_ok, n_ok, x, p, lse, one_hot = _softmax_tile(logits_ptr, target_ptr, b, block, C, HW,
                                                             BLOCK_C, BLOCK_N)
    alpha = tl.load(alpha_ptr + b * C + cls, mask=c_ok, other=0.0)
    beta = tl.load(beta_ptr + b * C + cls, mask=c_ok, other=0.0)
    g = tl.where(one_hot, alpha[:, None], 0.0) + beta[:, None]  # ∂Dice/∂p_c
    d_dice = p * (g - tl.sum(p * g, axis=0)[None, :])
    w = tl.load(weight_ptr + cls, mask=c_ok, other=0.0)
    w_y = tl.sum(tl.where(one_hot, w[:, None], 0.0), axis=0)
    d_ce = tl.load(ce_scale_ptr) * w_y[None, :] * (p - one_hot.to(tl.float32))
    tl.store(grad_ptr + b * C * HW + cls[:, None] * HW + pix[None, :], d_dice + d_ce,
             mask=c_ok[:, None] & n_ok[None, :])


def _launch_config(C: int) -> dict:
    block_c = triton.next_power_of_2(C)
    return {"BLOCK_C": block_c, "BLOCK_N": max(16, min(1024, 4096 // block_c))}


class CeDiceLossFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward are the Triton kernels above (inputs checked by the caller)."""

    @staticmethod
    def forward(ctx, logits, target, class_weights, dice_weight, smooth):
        B, C, H, W = logits.shape
        x = logits.contiguous()
        y = target.contiguous()
        config = _launch_config(C)
        n_blocks = triton.cdiv(H * W, config["BLOCK_N"])
        stats = torch.empty(B, n_blocks, 3, C, device=x.device, dtype=torch.float32)
        ce_parts = torch.empty(B, n_blocks, 2, device=x.device, dtype=torch.float32)
        _forward_kernel[(B, n_blocks)](x, y, class_weights, stats, ce_parts, C, H * W, **config)
        inter, prob_sum, count = stats.sum(1).unbind(1)  # (B, C) each
        ce_num, ce_den = ce_parts.sum((0, 1)).unbind()
        union = prob_sum + count + smooth
        dice = (1 - (2 * inter + smooth) / union).sum()
        ctx.save_for_backward(x, y, class_weights, inter, union, ce_den)
        ctx.dice_weight, ctx.smooth, ctx.config, ctx.n_blocks = dice_weight, smooth, config, n_blocks
        return (1 - dice_weight) * (ce_num / ce_den) + dice_weight * dice

    @staticmethod
    def backward(ctx, d_loss):
        x, y, class_weights, inter, union, ce_den = ctx.saved_tensors
        B, C, H, W = x.shape
        scale = d_loss.float() * ctx.dice_weight
        alpha = (-2 * scale / union).contiguous()
        beta = (scale * (2 * inter + ctx.smooth) / union.square()).contiguous()
        ce_scale = (d_loss.float() * (1 - ctx.dice_weight) / ce_den).reshape(1)
        grad = torch.empty(B, C, H, W, device=x.device, dtype=torch.float32)
        _backward_kernel[(B, ctx.n_blocks)](x, y, class_weights, alpha, beta, ce_scale, grad, C, H * W, **ctx.config)
        return grad.to(x.dtype), None, None, None, None


__all__ = ["CeDiceLossFunction"]
