"""CGFormer: the relation module between the LLM's object states and the SAM2 decoder (spec §1.3, eqs. 6–9).

For one image with N objects: ``f_h`` (N, D) object states, ``f_r`` (K, D) region tokens (the context) →

* eq. 6  ``f_o = φ_o(f_h + MHCA(f_h, f_r, f_r))``
* eq. 7  ``R_e = Norm(φ_h(f_o) φ_v(f_o)ᵀ)`` — Norm = row softmax of logits / √D [RECON]
* eq. 8  ``f_e = φ_e((R_e + I) f_o)``
* ``A_o = [R_e > τ_A]`` (no gradient; τ_A = 1/N by default [RECON])
* eq. 9  ``f_g = ψ(f_o + φ_g(A_o f_e))`` — the paper's ``f_e · A_o`` is not conformable; A_o f_e aggregates
  neighbours [RECON, erratum].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def mlp(dim: int) -> nn.Sequential:
    """Every "MLP" of CGFormer: Linear(D, D)–GELU–Linear(D, D) [RECON]."""
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))


@dataclass
class RelationOutput:
    """CGFormer's intermediate values for one image (N objects, width D)."""

    grounded: torch.Tensor  # f_g (N, D)
    relation_logits: torch.Tensor  # φ_h(f_o) φ_v(f_o)ᵀ / √D (N, N); R_e is its row softmax
    adjacency: torch.Tensor  # A_o (N, N) in {0, 1}
    object_states: torch.Tensor  # f_o (N, D)

    @property
    def relation(self) -> torch.Tensor:
        """R_e (N, N): rows sum to 1."""
        return self.relation_logits.softmax(-1)


class CGFormer(nn.Module):
    """Eqs. 6–9. ``adjacency_threshold`` None is τ_A = 1/N; ``adjacency_norm`` divides A_o's rows by max(1, deg)."""

    def __init__(self, dim: int, num_heads: int, adjacency_threshold: float | None = None,
                 adjacency_norm: bool = False, layernorm: bool = False):
        super().__init__()
        self.cross_attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.phi_o = nn.Linear(dim, dim)
        self.phi_h = nn.Linear(dim, dim)
        self.phi_v = nn.Linear(dim, dim)
        self.phi_e = mlp(dim)
        self.phi_g = nn.Linear(dim, dim)
        self.psi = mlp(dim)
        self.norm_o = nn.LayerNorm(dim) if layernorm else nn.Identity()
        self.norm_e = nn.LayerNorm(dim) if layernorm else nn.Identity()
        self.adjacency_threshold = adjacency_threshold
        self.adjacency_norm = adjacency_norm

    def forward(self, object_states: torch.Tensor, context: torch.Tensor) -> RelationOutput:
        """``object_states`` f_h (N, D), ``context`` (K, D) → :class:`RelationOutput`."""
        n, dim = object_states.shape
        attended, _ = self.cross_attention(object_states[None], context[None], context[None], need_weights=False)
        f_o = self.phi_o(self.norm_o(object_states + attended[0]))  # eq. 6
        logits = self.phi_h(f_o) @ self.phi_v(f_o).T / math.sqrt(dim)  # eq. 7 (before the row softmax)
        relation = logits.softmax(-1)
        eye = torch.eye(n, dtype=f_o.dtype, device=f_o.device)
        f_e = self.phi_e(self.norm_e((relation + eye) @ f_o))  # eq. 8
        threshold = 1.0 / n if self.adjacency_threshold is None else self.adjacency_threshold
        adjacency = (relation.detach() > threshold).to(f_o.dtype)
        neighbours = adjacency
        if self.adjacency_norm:
            neighbours = adjacency / adjacency.sum(-1, keepdim=True).clamp(min=1)
        f_g = self.psi(f_o + self.phi_g(neighbours @ f_e))  # eq. 9
        return RelationOutput(f_g, logits, adjacency, f_o)


__all__ = ["CGFormer", "RelationOutput", "mlp"]
