"""Triton kernels of :func:`rs_shared.kernels.differential_attention` and their autograd function.

Imported only when the dispatch picks Triton. The keys are few (ICIPNet: ≤ 64 text tokens plus prompts), so a
program owns ``BLOCK_P`` query rows of one (batch, head) and **all** keys: both score maps fit in registers, the
softmaxes are exact (no online rescaling), and the head dimensions are walked in chunks.

* forward (grid ``B·h × ⌈P/BLOCK_P⌉``): scores of both halves, the two softmaxes, ``A = p₁ − λp₂`` and ``A V``;
  saves the row maxima and exp-sums of both maps (``(2, B, h, P)`` each) instead of the maps. (Not a log-sum-exp:
  a row whose keys are all padded sits at −1e4, where fp32 ``s − lse`` would lose three digits.)
* backward (same grid): recomputes ``p₁, p₂`` from those statistics, then ``dA = dO Vᵀ``,
  ``dS₁ = p₁ ⊙ (dA − rowsum(p₁ ⊙ dA))``, ``dS₂ = −λ p₂ ⊙ (dA − rowsum(p₂ ⊙ dA))``, ``dλ = −Σ rowsum(p₂ ⊙ dA)``;
  writes ``dQ = s·dS K`` directly and, per query block, partial ``dK = s·dSᵀQ``, ``dV = AᵀdO`` and ``dλ`` that one
  deterministic ``torch.sum`` reduces (no atomics).

All matrix products use fp32 inputs with ``input_precision="ieee"`` (no TF32), matching PyTorch's fp32 matmul.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

NEG_BIAS = tl.constexpr(1e4)  # bias of a padded key: 1e4 · mask − 1e4


def _block(n: int, cap: int | None = None) -> int:
    """Power-of-two block ≥ 16 (``tl.dot``'s minimum) covering ``n``, at most ``cap``."""
    block = max(16, triton.next_power_of_2(n))
    return block if cap is None else min(cap, block)


@triton.jit
def _qk_chunk(q_base, k_base, rows, keys, row_ok, key_ok, d0, D, BLOCK_D: tl.constexpr):
    """Head-dimension chunk ``[d0, d0 + BLOCK_D)`` of both halves of Q and K (rows ``(·, 2D)``), with the offsets
    and masks of the Q₁ and K₁ tiles (the second halves sit ``D`` further)."""
    cols = d0 + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    q_off = rows[:, None] * (2 * D) + cols[None, :]
    k_off = keys[:, None] * (2 * D) + cols[None, :]
    q_ok = row_ok[:, None] & col_ok[None, :]
    k_ok = key_ok[:, None] & col_ok[None, :]
    q1 = tl.load(q_base + q_off, mask=q_ok, other=0.0)
    q2 = tl.load(q_base + q_off + D, mask=q_ok, other=0.0)
    k1 = tl.load(k_base + k_off, mask=k_ok, other=0.0)
    k2 = tl.load(k_base + k_off + D, mask=k_ok, other=0.0)
    return q_off, k_off, q_ok, k_ok, q1, q2, k1, k2


@triton.jit
def _scores(q_base, k_base, rows, keys, row_ok, key_ok, D, BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr,
            BLOCK_D: tl.constexpr):
    """Raw ``Q₁K₁ᵀ`` and ``Q₂K₂ᵀ`` ``(BLOCK_P, BLOCK_T)`` of rows ``(·, 2D)`` at ``q_base`` and ``k_base``."""
    s1 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    s2 = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        q_off, k_off, q_ok, k_ok, q1, q2, k1, k2 = _qk_chunk(q_base, k_base, rows, keys, row_ok, key_ok, d0, D,
                                                             BLOCK_D)
        s1 += tl.dot(q1, tl.trans(k1), input_precision="ieee")
        s2 += tl.dot(q2, tl.trans(k2), input_precision="ieee")
    return s1, s2


@triton.jit
def _key_bias(mask_ptr, b, T, keys, key_ok):
    """``1e4·mask − 1e4`` for real key slots, −inf beyond ``T`` (the block's padding)."""
    mask = tl.load(mask_ptr + b * T + keys, mask=key_ok, other=0.0)
    return tl.where(key_ok, NEG_BIAS * mask - NEG_BIAS, float("-inf"))


@triton.jit
def _forward_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, lam_ptr, out_ptr, max_ptr, sum_ptr, H, P, T, D, E, scale,
                    BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    bh = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    keys = tl.arange(0, BLOCK_T)
    row_ok, key_ok = rows < P, keys < T
    s1, s2 = _scores(q_ptr + bh * P * 2 * D, k_ptr + bh * T * 2 * D, rows, keys, row_ok, key_ok, D,
                     BLOCK_P, BLOCK_T, BLOCK_D)
    bias = _key_bias(mask_ptr, bh // H, T, keys, key_ok)[None, :]
    s1 = s1 * scale + bias
    s2 = s2 * scale + bias
    m1 = tl.max(s1, axis=1)
    m2 = tl.max(s2, axis=1)
    e1 = tl.exp(s1 - m1[:, None])
    e2 = tl.exp(s2 - m2[:, None])
    l1 = tl.sum(e1, axis=1)
    l2 = tl.sum(e2, axis=1)
    lam = tl.load(lam_ptr + bh % H)
    attn = e1 / l1[:, None] - lam * (e2 / l2[:, None])
    second = tl.num_programs(0) * P  # offset of map 2 in the (2, B·h, P) statistics
    tl.store(max_ptr + bh * P + rows, m1, mask=row_ok)
    tl.store(max_ptr + second + bh * P + rows, m2, mask=row_ok)
    tl.store(sum_ptr + bh * P + rows, l1, mask=row_ok)
    tl.store(sum_ptr + second + bh * P + rows, l2, mask=row_ok)
    for e0 in range(0, E, BLOCK_E):
        cols = e0 + tl.arange(0, BLOCK_E)
        col_ok = cols < E
        v = tl.load(v_ptr + bh * T * E + keys[:, None] * E + cols[None, :], mask=key_ok[:, None] & col_ok[None, :],
                    other=0.0)
        out = tl.dot(attn, v, input_precision="ieee")
        tl.store(out_ptr + bh * P * E + rows[:, None] * E + cols[None, :], out, mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _backward_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, lam_ptr, max_ptr, sum_ptr, dout_ptr,
                     dq_ptr, dk_part_ptr, dv_part_ptr, dlam_part_ptr, H, P, T, D, E, scale,
                     BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr):
    bh = tl.program_id(0)
    block = tl.program_id(1)
    n_blocks = tl.num_programs(1)
    rows = block * BLOCK_P + tl.arange(0, BLOCK_P)
    keys = tl.arange(0, BLOCK_T)
    row_ok, key_ok = rows < P, keys < T
    q_base, k_base = q_ptr + bh * P * 2 * D, k_ptr + bh * T * 2 * D
    s1, s2 = _scores(q_base, k_base, rows, keys, row_ok, key_ok, D, BLOCK_P, BLOCK_T, BLOCK_D)
    bias = _key_bias(mask_ptr, bh // H, T, keys, key_ok)[None, :]
    second = tl.num_programs(0) * P
    m1 = tl.load(max_ptr + bh * P + rows, mask=row_ok, other=0.0)
    m2 = tl.load(max_ptr + second + bh * P + rows, mask=row_ok, other=0.0)
    l1 = tl.load(sum_ptr + bh * P + rows, mask=row_ok, other=1.0)
    l2 = tl.load(sum_ptr + second + bh * P + rows, mask=row_ok, other=1.0)
    p1 = tl.where(row_ok[:, None], tl.exp(s1 * scale + bias - m1[:, None]) / l1[:, None], 0.0)
    p2 = tl.where(row_ok[:, None], tl.exp(s2 * scale + bias - m2[:, None]) / l2[:, None], 0.0)
    lam = tl.load(lam_ptr + bh % H)
    attn = p1 - lam * p2

    # dA = dO Vᵀ, and this block's share of dV = Aᵀ dO
    d_attn = tl.zeros((BLOCK_P, BLOCK_T), dtype=tl.float32)
    part = bh * n_blocks + block  # index of this program's partial-gradient slot
    for e0 in range(0, E, BLOCK_E):
        cols = e0 + tl.arange(0, BLOCK_E)
        col_ok = cols < E
        dout = tl.load(dout_ptr + bh * P * E + rows[:, None] * E + cols[None, :],
                       mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        v = tl.load(v_ptr + bh * T * E + keys[:, None] * E + cols[None, :], mask=key_ok[:, None] & col_ok[None, :],
                    other=0.0)
        d_attn += tl.dot(dout, tl.trans(v), input_precision="ieee")
        dv = tl.dot(tl.trans(attn), dout, input_precision="ieee")
        tl.store(dv_part_ptr + part * T * E + keys[:, None] * E + cols[None, :], dv,
                 mask=key_ok[:, None] & col_ok[None, :])

    delta1 = tl.sum(p1 * d_attn, axis=1)
    delta2 = tl.sum(p2 * d_attn, axis=1)
    ds1 = p1 * (d_attn - delta1[:, None]) * scale
    ds2 = -lam * p2 * (d_attn - delta2[:, None]) * scale
    tl.store(dlam_part_ptr + part, -tl.sum(delta2, axis=0))

    # dQ = dS K (stored), this block's share of dK = dSᵀ Q
    for d0 in range(0, D, BLOCK_D):
        q_off, k_off, q_ok, k_ok, q1, q2, k1, k2 = _qk_chunk(q_base, k_base, rows, keys, row_ok, key_ok, d0, D,
                                                             BLOCK_D)
        dq_base = dq_ptr + bh * P * 2 * D
        tl.store(dq_base + q_off, tl.dot(ds1, k1, input_precision="ieee"), mask=q_ok)
        tl.store(dq_base + q_off + D, tl.dot(ds2, k2, input_precision="ieee"), mask=q_ok)
        dk_base = dk_part_ptr + part * T * 2 * D
        tl.store(dk_base + k_off, tl.dot(tl.trans(ds1), q1, input_precision="ieee"), mask=k_ok)
        tl.store(dk_base + k_off + D, tl.dot(tl.trans(ds2), q2, input_precision="ieee"), mask=k_ok)


def _launch_config(T: int, D: int, E: int) -> dict:
    block_t = _block(T)  # all keys in one block, whatever T (registers suit T ≲ 128)
    return {"BLOCK_P": 64 if block_t <= 32 else 32, "BLOCK_T": block_t, "BLOCK_D": _block(D, 64),
            "BLOCK_E": _block(E, 64)}


class DifferentialAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward are the Triton kernels above (inputs checked by the caller)."""

    @staticmethod
    def forward(ctx, q, k, v, key_mask, lam, scale):
        B, H, P, two_d = q.shape
        T, E = k.shape[2], v.shape[3]
        q32, k32, v32 = (t.float().contiguous() for t in (q, k, v))
        mask32, lam32 = key_mask.float().contiguous(), lam.float().contiguous()
        out = torch.empty(B, H, P, E, device=q.device, dtype=torch.float32)
        row_max = torch.empty(2, B, H, P, device=q.device, dtype=torch.float32)
        row_sum = torch.empty_like(row_max)
        config = _launch_config(T, two_d // 2, E)
        grid = (B * H, triton.cdiv(P, config["BLOCK_P"]))
        _forward_kernel[grid](q32, k32, v32, mask32, lam32, out, row_max, row_sum, H, P, T, two_d // 2, E, scale,
                              **config)
        ctx.save_for_backward(q32, k32, v32, mask32, lam32, row_max, row_sum)
        ctx.scale, ctx.config, ctx.dtypes = scale, config, (q.dtype, k.dtype, v.dtype, lam.dtype)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, mask, lam, row_max, row_sum = ctx.saved_tensors
        B, H, P, two_d = q.shape
        T, E = k.shape[2], v.shape[3]
        n_blocks = triton.cdiv(P, ctx.config["BLOCK_P"])
        dq = torch.empty_like(q)
        dk_part = torch.empty(B, H, n_blocks, T, two_d, device=q.device, dtype=torch.float32)
        dv_part = torch.empty(B, H, n_blocks, T, E, device=q.device, dtype=torch.float32)
        dlam_part = torch.empty(B, H, n_blocks, device=q.device, dtype=torch.float32)
        _backward_kernel[(B * H, n_blocks)](q, k, v, mask, lam, row_max, row_sum, d_out.float().contiguous(), dq,
                                            dk_part, dv_part, dlam_part, H, P, T, two_d // 2, E, ctx.scale,
                                            **ctx.config)
        q_dtype, k_dtype, v_dtype, lam_dtype = ctx.dtypes
        return (dq.to(q_dtype), dk_part.sum(2).to(k_dtype), dv_part.sum(2).to(v_dtype), None,
                dlam_part.sum((0, 2)).to(lam_dtype), None)


__all__ = ["DifferentialAttentionFunction"]
