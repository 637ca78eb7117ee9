"""Triton kernels of :func:`rs_shared.kernels.grouped_info_nce` and their autograd function.

Imported only when the dispatch picks Triton. The embedding width ``E`` is held in one block (SRAlign: 256).
With ``S = s·QKᵀ``, ``lse_i`` = log-sum-exp of row ``i`` over its negatives and ``D_t`` the denominator of key
``t`` (``lse_{o(t)}``, or ``logaddexp(lse_{o(t)}, S[o(t), t])`` with the positive):

* forward: ``_row_lse_kernel`` (grid over query blocks) walks all key blocks with an online log-sum-exp of the
  negatives; ``_key_loss_kernel`` (grid over key blocks) gathers each key's owner row and writes
  ``ℓ_t = D_t − S[o(t), t]``.
* backward: with upstream ``g_t`` let ``w_t = g_t`` (or ``g_t·exp(lse_{o(t)} − D_t)`` with the positive) and
  ``G_i = Σ_{o(t)=i} w_t``; then ``∂ℓ/∂S[i, t] = G_i·exp(S[i, t] − lse_i)·[o(t) ≠ i] − w_t·[o(t) = i]``.
  ``_query_grad_kernel`` accumulates ``G``, ``dQ = s·dS K`` and per-block partials of ``ds = Σ dS ⊙ QKᵀ``;
  ``_key_grad_kernel`` accumulates ``dK = s·dSᵀ Q`` over all query blocks. No atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _load_rows(ptr, idx, ok, E, BLOCK_E: tl.constexpr):
    cols = tl.arange(0, BLOCK_E)
    return tl.load(ptr + idx[:, None] * E + cols[None, :], mask=ok[:, None] & (cols[None, :] < E), other=0.0)


@triton.jit
def _row_lse_kernel(q_ptr, k_ptr, owner_ptr, scale_ptr, lse_ptr, N, T, E,
                    BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    q = _load_rows(q_ptr, rows, row_ok, E, BLOCK_E)
    scale = tl.load(scale_ptr)
    m = tl.full((BLOCK_N,), float("-inf"), dtype=tl.float32)
    total = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        keys = t0 + tl.arange(0, BLOCK_T)
        key_ok = keys < T
        k = _load_rows(k_ptr, keys, key_ok, E, BLOCK_E)
        owner = tl.load(owner_ptr + keys, mask=key_ok, other=-1)
        negative = key_ok[None, :] & (owner[None, :] != rows[:, None])
        s = tl.where(negative, scale * tl.dot(q, tl.trans(k), input_precision="ieee"), float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row without negatives so far
        total = total * tl.exp(m - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), axis=1)
        m = m_new
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    tl.store(lse_ptr + rows, m_safe + tl.log(total), mask=row_ok)  # −inf for a row without negatives


@triton.jit
def _key_loss_kernel(q_ptr, k_ptr, owner_ptr, scale_ptr, lse_ptr, loss_ptr, den_ptr, T, E,
                     INCLUDE_POSITIVE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
    keys = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    key_ok = keys < T
    owner = tl.load(owner_ptr + keys, mask=key_ok, other=0)
    positive = tl.load(scale_ptr) * tl.sum(_load_rows(q_ptr, owner, key_ok, E, BLOCK_E)
                                           * _load_rows(k_ptr, keys, key_ok, E, BLOCK_E), axis=1)
    den = tl.load(lse_ptr + owner, mask=key_ok, other=0.0)
    if INCLUDE_POSITIVE:
        top = tl.maximum(den, positive)
        den = top + tl.log(tl.exp(den - top) + tl.exp(positive - top))
    tl.store(loss_ptr + keys, den - positive, mask=key_ok)
    tl.store(den_ptr + keys, den, mask=key_ok)


@triton.jit
def _score_grad(q, k, rows, row_ok, keys, key_ok, owner, w, lse, scale):
    """``dS`` parts of one (query block, key block) tile: negatives' softmax, owned weights, and raw ``QKᵀ``."""
    raw = tl.dot(q, tl.trans(k), input_precision="ieee")
    tile_ok = row_ok[:, None] & key_ok[None, :]
    negative = tile_ok & (owner[None, :] != rows[:, None])
    lse_safe = tl.where(lse == float("-inf"), 0.0, lse)
    prob = tl.where(negative, tl.exp(scale * raw - lse_safe[:, None]), 0.0)
    owned = tl.where(tile_ok & (owner[None, :] == rows[:, None]), w[None, :], 0.0)
    return prob, owned, raw


@triton.jit
def _query_grad_kernel(q_ptr, k_ptr, owner_ptr, scale_ptr, lse_ptr, w_ptr, dq_ptr, g_ptr, dscale_part_ptr, N, T, E,
                       BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
    block = tl.program_id(0)
    rows = block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    q = _load_rows(q_ptr, rows, row_ok, E, BLOCK_E)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    scale = tl.load(scale_ptr)
    g = tl.zeros((BLOCK_N,), dtype=tl.float32)
    acc_negative = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
    acc_owned = tl.zeros((BLOCK_N, BLOCK_E), dtype=tl.float32)
    raw_negative = tl.zeros((BLOCK_N,), dtype=tl.float32)
    raw_owned = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        keys = t0 + tl.arange(0, BLOCK_T)
        key_ok = keys < T
        k = _load_rows(k_ptr, keys, key_ok, E, BLOCK_E)
        owner = tl.load(owner_ptr + keys, mask=key_ok, other=-1)
        w = tl.load(w_ptr + keys, mask=key_ok, other=0.0)
        prob, owned, raw = _score_grad(q, k, rows, row_ok, keys, key_ok, owner, w, lse, scale)
        g += tl.sum(owned, axis=1)
        acc_negative += tl.dot(prob, k, input_precision="ieee")
        acc_owned += tl.dot(owned, k, input_precision="ieee")
        raw_negative += tl.sum(prob * raw, axis=1)
        raw_owned += tl.sum(owned * raw, axis=1)
    cols = tl.arange(0, BLOCK_E)
    tl.store(dq_ptr + rows[:, None] * E + cols[None, :], scale * (g[:, None] * acc_negative - acc_owned),
             mask=row_ok[:, None] & (cols[None, :] < E))
    tl.store(g_ptr + rows, g, mask=row_ok)
    tl.store(dscale_part_ptr + block, tl.sum(g * raw_negative - raw_owned, axis=0))


@triton.jit
def _key_grad_kernel(q_ptr, k_ptr, owner_ptr, scale_ptr, lse_ptr, w_ptr, g_ptr, dk_ptr, N, T, E,
                     BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr):
    keys = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    key_ok = keys < T
    k = _load_rows(k_ptr, keys, key_ok, E, BLOCK_E)
    owner = tl.load(owner_ptr + keys, mask=key_ok, other=-1)
    w = tl.load(w_ptr + keys, mask=key_ok, other=0.0)
    scale = tl.load(scale_ptr)
    acc = tl.zeros((BLOCK_T, BLOCK_E), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        q = _load_rows(q_ptr, rows, row_ok, E, BLOCK_E)
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
        prob, owned, _ = _score_grad(q, k, rows, row_ok, keys, key_ok, owner, w, lse, scale)
        acc += tl.dot(tl.trans(g[:, None] * prob - owned), q, input_precision="ieee")
    cols = tl.arange(0, BLOCK_E)
    tl.store(dk_ptr + keys[:, None] * E + cols[None, :], scale * acc, mask=key_ok[:, None] & (cols[None, :] < E))


def _launch_config(E: int) -> dict:
    return {"BLOCK_N": 16, "BLOCK_T": 16, "BLOCK_E": max(16, triton.next_power_of_2(E))}


class GroupedInfoNceFunction(torch.autograd.Function):
    """Autograd wrapper: forward and backward are the Triton kernels above (inputs checked by the caller)."""

    @staticmethod
    def forward(ctx, queries, keys, owner, scale, include_positive):
        (N, E), T = queries.shape, keys.shape[0]
        q, k, owner = queries.float().contiguous(), keys.float().contiguous(), owner.contiguous()
        scale32 = scale.float().reshape(1)
        config = _launch_config(E)
        lse = torch.empty(N, device=q.device, dtype=torch.float32)
        loss = torch.empty(T, device=q.device, dtype=torch.float32)
        den = torch.empty_like(loss)
        _row_lse_kernel[(triton.cdiv(N, config["BLOCK_N"]),)](q, k, owner, scale32, lse, N, T, E, **config)
        _key_loss_kernel[(triton.cdiv(T, config["BLOCK_T"]),)](q, k, owner, scale32, lse, loss, den, T, E,
                                                               include_positive, BLOCK_T=config["BLOCK_T"],
                                                               BLOCK_E=config["BLOCK_E"])
        ctx.save_for_backward(q, k, owner, scale32, lse, den)
        ctx.include_positive, ctx.config = include_positive, config
        ctx.dtypes = (queries.dtype, keys.dtype, scale.dtype)
        return loss

    @staticmethod
    def backward(ctx, d_loss):
        q, k, owner, scale, lse, den = ctx.saved_tensors
        (N, E), T = q.shape, k.shape[0]
        w = d_loss.float()
        if ctx.include_positive:
            w = w * torch.exp(lse[owner] - den)  # the share of the negatives in each denominator
        w = w.contiguous()
        n_blocks = triton.cdiv(N, ctx.config["BLOCK_N"])
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        g = torch.empty(N, device=q.device, dtype=torch.float32)
        dscale_part = torch.empty(n_blocks, device=q.device, dtype=torch.float32)
        _query_grad_kernel[(n_blocks,)](q, k, owner, scale, lse, w, dq, g, dscale_part, N, T, E, **ctx.config)
        _key_grad_kernel[(triton.cdiv(T, ctx.config["BLOCK_T"]),)](q, k, owner, scale, lse, w, g, dk, N, T, E,
                                                                   **ctx.config)
        q_dtype, k_dtype, scale_dtype = ctx.dtypes
        return dq.to(q_dtype), dk.to(k_dtype), None, dscale_part.sum().to(scale_dtype), None


__all__ = ["GroupedInfoNceFunction"]
