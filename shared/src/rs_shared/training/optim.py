"""Optimizers with parameter groups, and learning-rate schedules.

Parameter groups
----------------
:func:`param_groups` puts every trainable parameter (``requires_grad``) of a model into exactly one group;
frozen parameters are left out. Rules come first: an ordered list of :class:`GroupRule`, where the first
rule whose regex pattern ``re.search``-matches the parameter name decides. A rule with a ``weight_decay``
fixes the decay of everything it matches; otherwise (no rule, or a rule that only sets ``lr_scale``) the
default applies: weight decay 0 for 1-D tensors (biases, norm scales and shifts) and for names that contain
a ``no_decay`` substring (case-insensitive), ``weight_decay`` for the rest.

Groups are ordered by their first parameter in ``model.named_parameters()`` order, and parameters keep that
order inside a group, so the same model and rules always give the same layout: optimizer states are
indexed by position, and exact resume depends on it. Build the groups from the unwrapped model (before
``accelerator.prepare``, which prefixes names with ``module.``). Each group is a dict with ``params``,
``param_names`` (torch's own key, kept in ``optimizer.state_dict()``), ``weight_decay``, ``lr_scale`` and a
``name`` (``decay``, ``no_decay``, ``rule0``, ``rule1/no_decay``, ...).

Recipes::

    # ICIPNet (official code): only these backbone parameters skip decay; biases and the decoder decay
    [GroupRule(r"^backbone\\..*(norm|absolute_pos_embed|relative_position_bias_table)", weight_decay=0.0),
     GroupRule(r"", weight_decay=0.01)]
    # Dassl SGD (CoOp, BiMoRS): every parameter decays
    [GroupRule(r"", weight_decay=5e-4)]
    # a 10x smaller lr for a pretrained part, default decay rules otherwise
    [GroupRule(r"^vision\\.", lr_scale=0.1)]

Schedules
---------
:func:`build_scheduler` returns a ``LambdaLR``. **Call ``scheduler.step()`` once per optimizer step**, right
after ``optimizer.step()`` (never per micro-step, never per epoch): optimizer step ``k`` (counting from 0)
then runs with the value at ``k``. With ``interval="epoch"`` the value changes only when ``k`` crosses an
epoch boundary, so the loop never needs to know the interval.

With ``t = k`` and ``T = total_steps`` (``interval="step"``), or ``t = k // steps_per_epoch`` and
``T = ceil(total_steps / steps_per_epoch)`` (``interval="epoch"``), ``W = warmup_steps``, ``s = warmup_start``,
``m = min_lr`` and the peak ``lr``:

* warm-up, ``t < W``: ``linear`` gives ``lr * (s + (1 - s) * t / W)``; ``constant`` holds the absolute
  lr ``s`` (Dassl's ConstantWarmupScheduler, as in CoOp/BiMoRS).
* afterwards ``u = t - W`` runs over ``H = T - W`` (linear warm-up, as in HF's cosine-with-warm-up) or
  ``H = T`` (constant warm-up: the schedule restarts after warm-up, so it never reaches its end), with
  ``p = min(u / H, 1)``: ``constant`` -> ``lr``; ``poly`` -> ``m + (lr - m) * (1 - p) ** power``;
  ``cosine`` -> ``m + (lr - m) * (1 + cos(pi * p)) / 2``.

A group with ``lr_scale`` runs at ``lr_scale`` times these values (constant warm-up lr and ``min_lr``
included). The scheduler's ``state_dict()`` holds plain numbers only (JSON-serialisable).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from .config import OptimConfig, ScheduleConfig, validate_config

__all__ = ["GroupRule", "build_optimizer", "build_scheduler", "param_groups"]


@dataclass(frozen=True)
class GroupRule:
    """Settings for the parameters whose name the regex ``pattern`` matches (``re.search``).

    ``weight_decay=None`` keeps the default decay/no-decay split inside the rule's parameters; a number
    applies to all of them. ``lr_scale`` multiplies the learning rate (and its schedule) of the group.
    """

    pattern: str
    weight_decay: float | None = None
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"GroupRule pattern {self.pattern!r} is not a valid regex: {e}") from None
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ValueError(f"GroupRule {self.pattern!r}: weight_decay must be >= 0, got {self.weight_decay}")
        if not self.lr_scale >= 0:
            raise ValueError(f"GroupRule {self.pattern!r}: lr_scale must be >= 0, got {self.lr_scale}")


def param_groups(model: nn.Module, weight_decay: float, no_decay: Sequence[str] = ("bias", "norm"),
                 rules: Sequence[GroupRule] | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups of ``model``'s trainable parameters (see the module docstring)."""
    rules = list(rules or ())
    substrings = [s.lower() for s in no_decay]
    groups: dict[str, dict[str, Any]] = {}
    trainable = 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        trainable += 1
        index, rule = next(((i, r) for i, r in enumerate(rules) if re.search(r.pattern, name)), (None, None))
        if rule is not None and rule.weight_decay is not None:
            label, decay = f"rule{index}", rule.weight_decay
        else:
            exempt = param.ndim <= 1 or any(s in name.lower() for s in substrings)
            kind = "no_decay" if exempt else "decay"
            label, decay = (kind if rule is None else f"rule{index}/{kind}"), (0.0 if exempt else weight_decay)
        group = groups.setdefault(label, {"name": label, "params": [], "param_names": [], "weight_decay": decay,
                                          "lr_scale": 1.0 if rule is None else rule.lr_scale})
        group["params"].append(param)
        group["param_names"].append(name)
    if trainable == 0:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    grouped = [p for g in groups.values() for p in g["params"]]
    assert len(grouped) == trainable == len({id(p) for p in grouped}), "a parameter is in no or several groups"
    return list(groups.values())


def build_optimizer(model_or_groups: nn.Module | Iterable[dict[str, Any]], cfg: OptimConfig,
                    rules: Sequence[GroupRule] | None = None) -> torch.optim.Optimizer:
    """AdamW or SGD over a model (grouped by :func:`param_groups` with ``cfg.no_decay`` and ``rules``) or
    over ready-made groups. A group's lr is ``cfg.lr * lr_scale`` unless it sets ``lr`` itself."""
    validate_config(cfg)
    if isinstance(model_or_groups, nn.Module):
        groups = param_groups(model_or_groups, cfg.weight_decay, cfg.no_decay, rules)
    elif rules:
        raise ValueError("rules group a model's parameters; pass the model, not ready-made groups")
    else:
        groups = [dict(g) for g in model_or_groups]
    for group in groups:
        group.setdefault("lr", cfg.lr * group.get("lr_scale", 1.0))
    if cfg.name == "adamw":
        # torch's fused (single-kernel) AdamW, on CPU as on CUDA: one pass over the parameters instead of a
        # dozen elementwise ops per tensor (an AdamW step over the tiny ICIPNet's 504 tensors: 16 ms → 3 ms on CPU)
        params = [p for g in groups for p in g["params"]]
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


class _Schedule(LambdaLR):
    """A LambdaLR whose ``load_state_dict`` also puts the restored lrs into the optimizer, so a resumed
    run continues at the right lr whichever state (optimizer or scheduler) is loaded first."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int,
                    steps_per_epoch: int) -> LRScheduler:
    """The schedule of the module docstring over ``total_steps`` optimizer steps.

    ``steps_per_epoch`` is the number of optimizer steps per epoch (micro-batches / grad_accum); it only
    matters for ``interval="epoch"``. Step the result once per optimizer step.
    """
    validate_config(cfg)
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError(f"total_steps and steps_per_epoch must be >= 1, got {total_steps}, {steps_per_epoch}")
    lambdas = []
    for group in optimizer.param_groups:
        scale = group.get("lr_scale", 1.0)
        peak = group.get("initial_lr", group["lr"]) / scale if scale else 0.0
        lambdas.append(_factor(cfg, peak, total_steps, steps_per_epoch))
    return _Schedule(optimizer, lambdas)


def _factor(cfg: ScheduleConfig, peak: float, total_steps: int, steps_per_epoch: int):
    """``step -> lr(step) / peak`` (a plain function, so that LambdaLR's state_dict stores no closure)."""

    def factor(step: int) -> float:
        return _lr_at(cfg, peak, step, total_steps, steps_per_epoch) / peak if peak else 0.0

    return factor


def _lr_at(cfg: ScheduleConfig, lr: float, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step ``step`` for peak ``lr`` (the formulas of the module docstring)."""
    if cfg.interval == "epoch":
        t, total = step // steps_per_epoch, math.ceil(total_steps / steps_per_epoch)
    else:
        t, total = step, total_steps
    warmup, start = cfg.warmup_steps, cfg.warmup_start
    if t < warmup:
        return start if cfg.warmup_mode == "constant" else lr * (start + (1 - start) * t / warmup)
    horizon = total if cfg.warmup_mode == "constant" else total - warmup
    progress = min((t - warmup) / horizon, 1.0) if horizon > 0 else 1.0
    if cfg.name == "poly":
        return cfg.min_lr + (lr - cfg.min_lr) * (1 - progress) ** cfg.power
    if cfg.name == "cosine":
        return cfg.min_lr + (lr - cfg.min_lr) * (1 + math.cos(math.pi * progress)) / 2
    return lr
