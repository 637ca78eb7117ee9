"""One training loop for every rs-vlm model, on HF accelerate.

- :mod:`.config`: typed dataclass configs, YAML files, ``--key value`` overrides, ``--help``.
- :mod:`.optim`: AdamW/SGD with parameter groups and no-decay rules; constant/poly/cosine schedules.
- :mod:`.loop`: :func:`train` (1 process, DDP, DeepSpeed ZeRO-1/2), JSONL + TensorBoard logs.
- :mod:`.checkpoint`: atomic pickle-free checkpoints, keep-last-k, exact resume.

Launch configs for ``accelerate launch --config_file`` ship in ``accelerate_configs/`` (see
:func:`accelerate_config`).
"""

from pathlib import Path

from .checkpoint import (
    CheckpointError,
    checkpoint_problem,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from .config import (
    ConfigError,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_to_dict,
    load_config,
    parse_config,
    resolve_config_argument,
    resolve_preset,
    save_config,
    validate_config,
)
from .loop import EpochBatchSampler, TrainResult, TrainState, build_accelerator, train
from .optim import GroupRule, build_optimizer, build_scheduler, param_groups

ACCELERATE_CONFIGS = Path(__file__).parent / "accelerate_configs"


def accelerate_config(name: str) -> Path:
    """Path of a bundled accelerate launch config: ``"ddp_cpu"``, ``"deepspeed_zero1"`` or
    ``"deepspeed_zero2"`` (use it as ``accelerate launch --config_file PATH train.py ...``)."""
    path = ACCELERATE_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml"))
        raise ValueError(f"no accelerate config {name!r}; available: {', '.join(known)}")
    return path


__all__ = [
    "ACCELERATE_CONFIGS", "CheckpointError", "ConfigError", "EpochBatchSampler", "GroupRule", "OptimConfig",
    "ScheduleConfig", "TrainConfig", "TrainResult", "TrainState", "accelerate_config", "add_config_arguments",
    "build_accelerator", "build_optimizer", "build_scheduler", "checkpoint_problem", "config_from_args",
    "config_to_dict", "list_checkpoints", "load_checkpoint", "load_config", "param_groups", "parse_config",
    "resolve_config_argument", "resolve_preset", "resolve_resume", "save_checkpoint", "save_config", "train", "validate_config",
]
