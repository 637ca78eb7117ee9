"""Grouped InfoNCE: every key has one owning query; its positive is its owner, the negatives are the other owners' keys.

For queries ``q_i`` ``(N, E)``, keys ``k_t`` ``(T, E)``, owners ``o(t) ∈ [0, N)`` and a scale ``s`` (``1/τ``), with
``S = s·Q Kᵀ``, the loss of key ``t`` is

    ``ℓ_t = −S[o(t), t] + log Σ_{t' : o(t') ≠ o(t)} exp(S[o(t), t'])``

and with ``include_positive`` the positive joins the denominator: ``log(exp(S[o(t), t]) + Σ_{t'…} exp(…))``.

Both directions of CLV-Net's SRAlign term L_csc (eq. 10) are this op: mask → words (queries = mask embeddings,
keys = all phrase words, owner = the word's object) and words → mask (queries = phrase embeddings, keys = mask
embeddings, owner = ``arange(N)``). The fused Triton version never stores ``S``.
"""

from __future__ import annotations

import torch

from .dispatch import use_triton


def grouped_info_nce_reference(queries: torch.Tensor, keys: torch.Tensor, owner: torch.Tensor,
                               scale: torch.Tensor | float, include_positive: bool = False) -> torch.Tensor:
    """:func:`grouped_info_nce` in plain PyTorch."""
    n = queries.shape[0]
    sims = scale * queries @ keys.T  # (N, T)
    owned = owner[None, :] == torch.arange(n, device=owner.device)[:, None]
    log_negatives = sims.masked_fill(owned, float("-inf")).logsumexp(1)  # (N,)
    positive = sims[owner, torch.arange(keys.shape[0], device=owner.device)]  # (T,) S[o(t), t]
    log_denominator = log_negatives[owner]
    if include_positive:
        log_denominator = torch.logaddexp(log_denominator, positive)
    return -(positive - log_denominator)


def grouped_info_nce(queries: torch.Tensor, keys: torch.Tensor, owner: torch.Tensor, scale: torch.Tensor | float,
                     include_positive: bool = False) -> torch.Tensor:
    """Per-key grouped InfoNCE loss (see the module docstring).

    Differentiable in ``queries``, ``keys`` and ``scale``. Runs the Triton kernels or the PyTorch reference according
    to :func:`rs_shared.kernels.dispatch.use_triton`.

    Args:
        queries: ``(N, E)``.
        keys: ``(T, E)``.
        owner: ``(T,)`` int64, the query index in ``[0, N)`` that owns each key.
        scale: scalar tensor (or float), the logit scale ``1/τ``.
        include_positive: keep the positive in its denominator (ordinary InfoNCE, ``ℓ ≥ 0``).

    Returns:
        ``(T,)`` loss of each key (fp32 on the Triton path, the inputs' dtype on the reference path).
    """
    if queries.ndim != 2 or keys.ndim != 2 or keys.shape[1] != queries.shape[1]:
        raise ValueError(f"queries (N, E) and keys (T, E) must share E; got {tuple(queries.shape)} and "
                         f"{tuple(keys.shape)}")
    if owner.shape != keys.shape[:1] or owner.dtype != torch.int64:
        raise ValueError(f"owner must be int64 of shape ({keys.shape[0]},) (one query index per key), got "
                         f"{owner.dtype} {tuple(owner.shape)}")
    if isinstance(scale, torch.Tensor) and scale.ndim != 0:
        raise ValueError(f"scale must be a scalar, got shape {tuple(scale.shape)}")
    if use_triton(queries, keys, owner):
        from .triton_contrastive import GroupedInfoNceFunction

        scale = torch.as_tensor(scale, dtype=torch.float32, device=queries.device)
        return GroupedInfoNceFunction.apply(queries, keys, owner, scale, bool(include_positive))
    return grouped_info_nce_reference(queries, keys, owner, scale, include_positive)


__all__ = ["grouped_info_nce", "grouped_info_nce_reference"]
