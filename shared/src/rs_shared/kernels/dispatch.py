"""The one place that decides whether a fused op runs its Triton kernels or its PyTorch reference.

Rule: Triton when every tensor argument is on a CUDA device and ``import triton`` works; the reference otherwise.
The environment variable ``RS_KERNELS`` overrides the rule:

* ``auto`` (or unset): the rule above;
* ``reference``: always the PyTorch reference;
* ``triton``: always Triton. CPU tensors then need Triton's interpreter, ``TRITON_INTERPRET=1`` set before
  ``triton`` is first imported (that is how the tests run the kernels without a GPU).

Triton is imported lazily, only when the rule picks it, so CPU users never load it.
"""

from __future__ import annotations

import functools
import os

import torch

ENV_VAR = "RS_KERNELS"
MODES = ("auto", "reference", "triton")


def kernel_mode() -> str:
    """The value of ``RS_KERNELS`` (``"auto"`` when unset); an unknown value is an error."""
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"environment variable {ENV_VAR}={os.environ[ENV_VAR]!r}: expected one of {MODES}")
    return mode


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` succeeds (checked once per process)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether a fused op called on ``tensors`` should launch its Triton kernels (see the module docstring).

    Raises:
        ValueError: ``RS_KERNELS`` holds an unknown value.
        RuntimeError: ``RS_KERNELS=triton`` but Triton cannot run here (not installed, or CPU tensors without
            ``TRITON_INTERPRET=1``).
    """
    mode = kernel_mode()
    if mode == "reference":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    if mode == "auto":
        return on_cuda and triton_available()
    if not triton_available():
        raise RuntimeError(f"{ENV_VAR}=triton but triton is not installed (pip install triton)")
    if not on_cuda and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise RuntimeError(f"{ENV_VAR}=triton with CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 "
                           "before triton is imported (or leave RS_KERNELS unset to use the PyTorch reference)")
    return True


__all__ = ["ENV_VAR", "MODES", "kernel_mode", "triton_available", "use_triton"]
