"""Fused attention and loss ops: Triton kernels on CUDA, a plain PyTorch reference everywhere else.

Every op has a reference implementation (``*_reference``, the definition) and a Triton implementation (forward and
backward kernels inside a ``torch.autograd.Function``); the public function checks its inputs and dispatches.

* :func:`differential_attention` (ICIPNet BIF, ``icipnet.fusion``): per head
  ``(softmax(Q₁K₁ᵀs + m) − λ·softmax(Q₂K₂ᵀs + m)) V`` with a key-padding bias ``m``; gradients for ``Q, K, V, λ``.
* :func:`ce_dice_loss` (ICIPNet loss, ``icipnet.loss``): softmax over classes, class-weighted cross-entropy
  (weighted mean) and soft Dice (sum over samples and classes); gradient w.r.t. the logits.
* :func:`grouped_info_nce` (CLV-Net SRAlign L_csc, ``clvnet.losses``): scaled similarities, log-sum-exp over the
  other owners' keys, per-key InfoNCE; gradients for both embeddings and the scale.

**Dispatch** (:mod:`rs_shared.kernels.dispatch`, the one decision point): Triton when every tensor argument is on
CUDA and ``import triton`` works, the reference otherwise. ``RS_KERNELS=reference`` forces the reference,
``RS_KERNELS=triton`` forces Triton (CPU tensors then need ``TRITON_INTERPRET=1`` set before triton is imported).
Triton is imported only when it is picked, so CPU users never load it.

**Tests.** ``shared/tests/test_kernels.py`` checks the references and the dispatch in-process;
``shared/tests/test_kernels_triton.py`` runs ``kernels_interpreter_cases.py`` in a child pytest with
``TRITON_INTERPRET=1 RS_KERNELS=triton``, comparing the kernels' values and gradients with the references on CPU::

    uv run pytest shared/tests/test_kernels.py shared/tests/test_kernels_triton.py -q
    uv run pytest shared/tests/kernels_interpreter_cases.py -q   # the interpreter cases alone, with details

The kernels are verified under Triton's interpreter only; their block sizes are untuned guesses for a GPU.
"""

from .contrastive import grouped_info_nce, grouped_info_nce_reference
from .differential_attention import (
    differential_attention,
    differential_attention_map,
    differential_attention_reference,
)
from .dispatch import kernel_mode, triton_available, use_triton
from .segmentation_loss import ce_dice_loss, ce_dice_loss_reference, soft_dice_loss

__all__ = [
    "ce_dice_loss",
    "ce_dice_loss_reference",
    "differential_attention",
    "differential_attention_map",
    "differential_attention_reference",
    "grouped_info_nce",
    "grouped_info_nce_reference",
    "kernel_mode",
    "soft_dice_loss",
    "triton_available",
    "use_triton",
]
