"""IXC-2.5's Partial LoRA (spec §1.2, §6): a low-rank delta on every LLM linear, added at image positions only.

InternLM-XComposer-2.5 carries a frozen rank-256 adapter (``Plora_A``/``Plora_B``) on each linear of each layer
whose output is added only where ``im_mask`` is set (the image tokens; CLV-Net's region tokens are flagged the same
way [RECON]). It depends on the token, so it cannot be merged into the weights. Here it is a module tree
``partial_lora.{layer}.{proj}.lora_A/lora_B`` beside the Llama stand-in, attached with forward hooks on the Llama
linears, so peft's LoRA can still wrap those same linears. The mask is set for one forward with
:meth:`PartialLoRA.image_positions`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


class LowRankDelta(nn.Module):
    """``x ↦ B(A(x)) · scale``, ``A: in → r``, ``B: r → out`` (no bias, dropout on the input in training)."""

    def __init__(self, in_features: int, out_features: int, rank: int, scale: float, dropout: float = 0.05):
        super().__init__()
        self.lora_A = nn.Linear(in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, out_features, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.scale = scale
        self.lora_B.zero_init = True  # a fresh adapter is the identity (CLVNetModel._init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_B(self.lora_A(self.dropout(x))) * self.scale


class PartialLoRA(nn.ModuleList):
    """One ``ModuleDict`` of :class:`LowRankDelta` per decoder layer of a Llama model, hooked onto its linears."""

    def __init__(self, llama_layers: nn.ModuleList, rank: int, alpha: int):
        super().__init__()
        self._mask: torch.Tensor | None = None
        for layer in llama_layers:
            deltas = nn.ModuleDict()
            for block, names in PROJECTIONS.items():
                for name in names:
                    linear = getattr(getattr(layer, block), name)
                    deltas[name] = LowRankDelta(linear.in_features, linear.out_features, rank, alpha / rank)
                    linear.register_forward_hook(self._hook(deltas[name]))
            self.append(deltas)

    def _hook(self, delta: LowRankDelta):
        def add_delta(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            mask = self._mask
            if mask is None or mask.shape != output.shape[:-1]:  # cached decoding steps are text tokens
                return output
            return output + delta(args[0]) * mask.unsqueeze(-1).to(output.dtype)
        return add_delta

    @contextlib.contextmanager
    def image_positions(self, mask: torch.Tensor | None) -> Iterator[None]:
        """Within the block, linears add their delta where ``mask`` ``(B, L)`` is true."""
        previous, self._mask = self._mask, mask
        try:
            yield
        finally:
            self._mask = previous


__all__ = ["LowRankDelta", "PartialLoRA", "PROJECTIONS"]
