"""The training loop shared by every model package, on HF accelerate.

:func:`train` runs one process, N processes (DDP: gloo on CPU, NCCL on GPU) or DeepSpeed ZeRO-1/2 with
the same code; the launch decides (``python train.py``, ``accelerate launch --config_file
<accelerate_configs/…yaml> train.py``, ``torchrun``). The unit of progress is the optimizer step:
``max_steps``, ``log_every``, ``eval_every`` and ``save_every`` count optimizer steps, each of which
consumes ``grad_accum`` micro-batches of ``batch_size`` samples on every process.

Data order is owned here, not by accelerate: epoch ``e`` visits a permutation drawn from a generator
seeded with ``(seed, e)``, identical on every process; global batch ``k`` is the ``k``-th run of
``batch_size × num_processes`` samples of it and process ``r`` takes the ``r``-th slice. Two processes
with batch ``b`` therefore see exactly the samples one process with batch ``2b`` sees. The last global
batch of an epoch is completed by wrapping around to the start of the permutation, and micro-batches
left over at the end of an epoch that do not fill a whole accumulation group are not used.

Resume (``resume="auto"`` or a checkpoint path) restores model, optimizer, scheduler, RNG states and
the data position, and skips the consumed part of the epoch by index offset (no batch is loaded to be
thrown away). On CPU the continued run is bitwise identical to an uninterrupted one when the randomness
lives in the main process (``num_workers=0``); with worker processes, augmentation randomness inside
the workers restarts from the epoch's seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, InitProcessGroupKwargs, send_to_device, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..data.common import atomic_path
from .checkpoint import check_output_dir, load_checkpoint, resolve_resume, save_checkpoint, save_tensors
from .config import TrainConfig, config_to_dict, validate_config
from .optim import build_optimizer, build_scheduler

StepOutput = torch.Tensor | tuple[torch.Tensor, dict[str, float | torch.Tensor]]


@dataclass
class TrainState:
    """Progress of a run, handed to callbacks and stored in every checkpoint (``trainer_state.json``)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch, 0-based
    samples_in_epoch: int = 0  # samples of this epoch's order consumed, over all processes
    loss: float = math.nan  # last step: mean over its micro-batches and processes
    lr: float = math.nan  # learning rate of the last step (first parameter group)
    logs: dict[str, float] = field(default_factory=dict)  # last step's extra values from step_fn
    eval: dict[str, float] = field(default_factory=dict)  # latest eval_fn result
    eval_history: list[dict[str, float]] = field(default_factory=list)  # [{"step": s, **metrics}, ...]
    num_processes: int = 1
    log_window: dict[str, Any] = field(default_factory=dict)  # sums since the last log line

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    step: int  # optimizer steps done
    logs: dict[str, float]  # last step: {"loss": …, "lr": …, **step_fn logs}
    eval: dict[str, float]  # latest eval_fn result ({} without eval_fn)
    checkpoint: Path | None  # the final checkpoint
    model_path: Path  # <output_dir>/final/model.safetensors


class EpochBatchSampler(Sampler[list[int]]):
    """Micro-batches of indices for one process, in the order described in the module docstring.

    Call :meth:`set_epoch` before iterating; ``start`` skips that many samples of the epoch's order
    (the resume offset).
    """

    def __init__(self, num_samples: int, batch_size: int, *, num_processes: int = 1, process_index: int = 0,
                 seed: int = 0):
        if num_samples <= 0:
            raise ValueError("the training dataset is empty")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.num_processes, self.process_index, self.seed = num_processes, process_index, seed
        self.epoch, self.start = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_processes

    @property
    def batches_per_epoch(self) -> int:
        """Global (= per-process micro-) batches in a whole epoch."""
        return math.ceil(self.num_samples / self.global_batch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def order(self) -> torch.Tensor:
        """The epoch's permutation of ``range(num_samples)``."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.num_samples, generator=g)

    def __len__(self) -> int:
        return max(0, math.ceil((self.num_samples - self.start) / self.global_batch))

    def __iter__(self):
        order = self.order()
        for k in range(len(self)):
            first = self.start + k * self.global_batch + self.process_index * self.batch_size
            yield order[torch.arange(first, first + self.batch_size) % self.num_samples].tolist()


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded with ``seed`` (well mixed, never colliding for
    neighbouring epochs)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def build_accelerator(config: TrainConfig) -> Accelerator:
    """The :class:`Accelerator` for the current launch, with Python, NumPy and torch seeded from
    ``config.seed``: packages build their model right after this call, so a seed fixes the initial weights too
    (torch's default generator otherwise starts from a random seed in every process).

    - DeepSpeed (``ACCELERATE_USE_DEEPSPEED=true``, set by ``accelerate launch`` with a DeepSpeed config):
      never ``cpu=True`` (it disables DeepSpeed); on CPU the gloo backend is named explicitly, without
      which accelerate believes it runs one process while DeepSpeed sees all of them.
    - otherwise on CPU ``cpu=True``: one process, or DDP over gloo (``MULTI_CPU``) when launched with
      ``accelerate launch --multi_gpu --num_processes N`` or ``torchrun``. (``accelerate launch --cpu``
      silently starts a single process.)
    - FSDP on CPU is refused: accelerate would silently run independent processes.
    """
    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"mixed_precision": config.mixed_precision,
                              "gradient_accumulation_steps": config.grad_accum}
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        if not cuda:
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    elif _env_flag("ACCELERATE_USE_FSDP") and not cuda:
        raise RuntimeError("FSDP does not work on CPU (accelerate falls back to unsynchronised processes "
                           "without an error); use the DDP or DeepSpeed accelerate configs instead")
    elif not cuda:
        kwargs["cpu"] = True
    _forget_single_process_precision(config.mixed_precision)
    accelerator = Accelerator(**kwargs)
    set_seed(config.seed)
    return accelerator


def _forget_single_process_precision(mixed_precision: str) -> None:
    """Let a later run in the same single process use another ``mixed_precision``.

    accelerate keeps one ``AcceleratorState`` per process and refuses a second precision ("cannot be
    changed, restart your runtime"), so a notebook or test session that trains an fp32 model and then a bf16
    one would fail. Without a process group nothing else depends on that state, so its precision-bearing
    part is dropped (the process-level ``PartialState`` is kept); distributed runs are left untouched.
    """
    state = AcceleratorState._shared_state
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if state and state.get("_mixed_precision") != mixed_precision and not distributed:
        AcceleratorState._reset_state(reset_partial_state=False)


def train(config: TrainConfig, model: torch.nn.Module, train_dataset: Sequence,
          step_fn: Callable[[torch.nn.Module, Any], StepOutput], *, collate_fn: Callable | None = None,
          eval_fn: Callable[[torch.nn.Module, Accelerator], dict[str, float]] | None = None,
          param_groups=None, callbacks: Iterable = (), accelerator: Accelerator | None = None) -> TrainResult:
    """Train ``model`` on ``train_dataset`` as ``config`` says; return the final step, logs and paths.

    Args:
        train_dataset: a map-style dataset; if it has ``set_epoch(epoch)``, it is called before each epoch
            (also when resuming), so per-item randomness can be derived from ``(seed, epoch, index)``.
        step_fn: ``step_fn(model, batch) -> loss`` or ``(loss, logs)``: forward and loss on one
            micro-batch (already on the device); ``logs`` values are averaged and logged.
        eval_fn: ``eval_fn(model, accelerator) -> {metric: value}``, called on every process under
            ``torch.no_grad()`` with the model in eval mode, every ``eval_every`` steps (``0``: at the
            end of each epoch) and at the end. It should return the same (gathered) values on every
            process; the main process logs its own.
        param_groups: :class:`~rs_shared.training.optim.GroupRule` list for
            :func:`~rs_shared.training.optim.build_optimizer` (default: the decay/no-decay split).
        callbacks: objects with optional ``on_step_end(state: TrainState)`` and
            ``on_checkpoint(path: Path)`` methods, called on every process.
        accelerator: an existing accelerator; by default :func:`build_accelerator` makes one.

    Writes ``<output_dir>/log.jsonl`` (one JSON object per log line: step, epoch, lr, loss, logs,
    eval, time), TensorBoard events in ``<output_dir>/tensorboard`` (if ``config.tensorboard``),
    checkpoints in ``<output_dir>/checkpoints`` and the final weights ``<output_dir>/final/model.safetensors``.
    """
    validate_config(config)
    accelerator = accelerator or build_accelerator(config)
    _check_launch(config, accelerator)
    set_seed(config.seed)
    out = Path(config.output_dir)
    main = accelerator.is_main_process
    callbacks = list(callbacks)

    sampler = EpochBatchSampler(len(train_dataset), config.batch_size, num_processes=accelerator.num_processes,
                                process_index=accelerator.process_index, seed=config.seed)
    loader_generator = torch.Generator()  # only seeds worker processes; never touches the global RNG
    loader = DataLoader(train_dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=config.num_workers,
                        generator=loader_generator, pin_memory=accelerator.device.type == "cuda")
    steps_per_epoch = sampler.batches_per_epoch // config.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_dataset)} samples make {sampler.batches_per_epoch} global batches of "
                         f"{sampler.global_batch}, fewer than grad_accum={config.grad_accum}: "
                         "lower batch_size or grad_accum")
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    resume_from = resolve_resume(config.resume, out)
    check_output_dir(out, resume_from)

    optimizer = build_optimizer(model, config.optim, param_groups)
    scheduler = build_scheduler(optimizer, config.schedule, total_steps, steps_per_epoch)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _fill_deepspeed_config(config, accelerator)
    model, optimizer = accelerator.prepare(model, optimizer)

    state = TrainState(num_processes=accelerator.num_processes)
    if resume_from is not None:
        state = TrainState.from_dict(load_checkpoint(resume_from, accelerator=accelerator, model=model,
                                                     optimizer=optimizer, scheduler=scheduler))
        state.num_processes = accelerator.num_processes
    logger = _Logger(out, config.tensorboard, resumed_step=state.step if resume_from else None) if main else None
    accelerator.wait_for_everyone()  # the log is truncated before anyone goes on

    config_dict = config_to_dict(config)
    clip_here = config.clip_grad_norm > 0 and accelerator.distributed_type != DistributedType.DEEPSPEED  # else DS clips
    last_checkpoint = resume_from
    progress = tqdm(total=total_steps, initial=state.step, desc="train", disable=not main, dynamic_ncols=True)
    started = time.monotonic()
    model.train()
    while state.step < total_steps:
        sampler.set_epoch(state.epoch, start=state.samples_in_epoch)
        loader_generator.manual_seed(epoch_seed(config.seed, state.epoch))
        n_micro = len(sampler) // config.grad_accum * config.grad_accum
        if n_micro == 0:  # only after resuming with another batch layout at the very end of an epoch
            state.epoch, state.samples_in_epoch = state.epoch + 1, 0
            continue
        if hasattr(train_dataset, "set_epoch"):  # per-epoch randomness of the dataset (augmentation, sampling)
            train_dataset.set_epoch(state.epoch)
        batches = iter(loader)
        micro_losses, micro_logs = [], []
        for i in range(n_micro):
            batch = send_to_device(next(batches), accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, logs = _split_output(step_fn(model, batch))
                accelerator.backward(loss)
                grad_norm = None
                if accelerator.sync_gradients and clip_here:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            micro_losses.append(loss.detach().float())
            micro_logs.append(logs)
            state.samples_in_epoch += sampler.global_batch
            if not accelerator.sync_gradients:
                continue

            state.step += 1
            epoch_done = i == n_micro - 1
            state.loss, state.logs = _reduce_step(accelerator, micro_losses, micro_logs, grad_norm)
            micro_losses, micro_logs = [], []
            state.lr = optimizer.param_groups[0]["lr"]
            scheduler.step()  # once per optimizer step, whatever the schedule's interval
            _add_to_window(state)

            final = state.step >= total_steps
            evaluated = None
            if eval_fn is not None and ((config.eval_every and state.step % config.eval_every == 0)
                                        or (not config.eval_every and epoch_done) or final):
                evaluated = _evaluate(eval_fn, model, accelerator)
                state.eval = evaluated
                state.eval_history.append({"step": state.step, **evaluated})
            if state.step % config.log_every == 0 or final or evaluated is not None:
                if logger is not None:
                    logger.log(state, evaluated, _epoch_progress(state, sampler, epoch_done),
                               time.monotonic() - started)
                state.log_window = {}
            progress.update(1)
            progress.set_postfix(loss=f"{state.loss:.4g}", lr=f"{state.lr:.3g}", refresh=False)

            if epoch_done:
                state.epoch, state.samples_in_epoch = state.epoch + 1, 0
            if (config.save_every and state.step % config.save_every == 0) or final:
                last_checkpoint = save_checkpoint(out, state.step, accelerator=accelerator, model=model,
                                                  optimizer=optimizer, scheduler=scheduler,
                                                  trainer_state=dataclasses.asdict(state), config=config_dict,
                                                  keep_last=config.keep_last)
                for cb in callbacks:
                    if hasattr(cb, "on_checkpoint"):
                        cb.on_checkpoint(last_checkpoint)
            for cb in callbacks:
                if hasattr(cb, "on_step_end"):
                    cb.on_step_end(state)
            if final:
                break
    progress.close()

    model_path = out / "final" / "model.safetensors"
    if main:
        with atomic_path(model_path) as tmp:
            save_tensors(tmp, accelerator.unwrap_model(model).state_dict())
        logger.close()
    accelerator.wait_for_everyone()
    return TrainResult(step=state.step, logs={"loss": state.loss, "lr": state.lr, **state.logs}, eval=state.eval,
                       checkpoint=last_checkpoint, model_path=model_path)


# --------------------------------------------------------------------------- helpers


class _Logger:
    """``log.jsonl`` and TensorBoard, main process only. On resume, log lines past the resumed step
    (written by the interrupted run after its last checkpoint) are dropped so the log reads as one run."""

    def __init__(self, out: Path, tensorboard: bool, resumed_step: int | None):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "log.jsonl"
        if resumed_step is not None and self.path.exists():
            _truncate_log(self.path, resumed_step)
        elif resumed_step is None:
            self.path.unlink(missing_ok=True)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"),
                                        purge_step=None if resumed_step is None else resumed_step + 1)

    def log(self, state: TrainState, evaluated: dict | None, epoch: float, elapsed: float) -> None:
        window = state.log_window
        n = window.get("steps", 0)
        loss = window["loss"] / n if n else state.loss
        logs = {k: v / n for k, v in window.get("logs", {}).items()} if n else dict(state.logs)
        record = {"step": state.step, "epoch": round(epoch, 6), "lr": state.lr, "loss": loss, "logs": logs,
                  "time": round(elapsed, 3)}
        if evaluated is not None:
            record["eval"] = evaluated
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, state.step)
            self.writer.add_scalar("train/lr", state.lr, state.step)
            for k, v in logs.items():
                self.writer.add_scalar(f"train/{k}", v, state.step)
            for k, v in (evaluated or {}).items():
                self.writer.add_scalar(f"eval/{k}", v, state.step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _truncate_log(path: Path, step: int) -> None:
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            if json.loads(line).get("step", math.inf) <= step:
                kept.append(line + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept), encoding="utf-8")


def _add_to_window(state: TrainState) -> None:
    w = state.log_window
    w["steps"] = w.get("steps", 0) + 1
    w["loss"] = w.get("loss", 0.0) + state.loss
    w["logs"] = {k: w.get("logs", {}).get(k, 0.0) + v for k, v in state.logs.items()}


def _split_output(output: StepOutput) -> tuple[torch.Tensor, dict]:
    if isinstance(output, tuple):
        loss, logs = output
        return loss, dict(logs)
    return output, {}


def _reduce_step(accelerator: Accelerator, losses: list, logs: list[dict], grad_norm) -> tuple[float, dict]:
    """Mean loss and logs of one optimizer step over its micro-batches and all processes."""
    keys = sorted(logs[0])
    values = torch.stack([torch.stack(losses).mean()] +
                         [torch.as_tensor([float(d[k]) for d in logs]).mean() for k in keys]).to(accelerator.device)
    values = accelerator.reduce(values, "mean").tolist()
    out = dict(zip(keys, values[1:]))
    if grad_norm is not None:
        out["grad_norm"] = float(grad_norm)
    return values[0], out


def _evaluate(eval_fn, model, accelerator) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        result = {k: float(v) for k, v in eval_fn(model, accelerator).items()}
    model.train()
    return result


def _epoch_progress(state: TrainState, sampler: EpochBatchSampler, epoch_done: bool) -> float:
    if epoch_done:
        return float(state.epoch + 1)
    return state.epoch + min(state.samples_in_epoch, sampler.num_samples) / sampler.num_samples


def _check_launch(config: TrainConfig, accelerator: Accelerator) -> None:
    if accelerator.gradient_accumulation_steps != config.grad_accum:
        raise ValueError(f"the accelerate launch config sets gradient_accumulation_steps="
                         f"{accelerator.gradient_accumulation_steps} but grad_accum={config.grad_accum}; "
                         "set it in one place (the training config)")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.zero_stage
        if stage not in (1, 2):
            raise ValueError(f"DeepSpeed ZeRO stage {stage} is not supported (checkpoints hold ZeRO-1/2 "
                             "optimizer partitions); use stage 1 or 2")


def _fill_deepspeed_config(config: TrainConfig, accelerator: Accelerator) -> None:
    """Batch, accumulation and clipping come from the training config; the DeepSpeed file may leave them
    ``"auto"`` (or repeat the same values)."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    wanted = {"train_micro_batch_size_per_gpu": config.batch_size,
              "gradient_accumulation_steps": config.grad_accum,
              "train_batch_size": config.batch_size * config.grad_accum * accelerator.num_processes,
              "gradient_clipping": config.clip_grad_norm}
    for key, value in wanted.items():
        if ds.get(key, "auto") not in ("auto", value):
            raise ValueError(f"the DeepSpeed config sets {key}={ds[key]!r} but the training config implies "
                             f"{value!r}; set it to \"auto\" in the DeepSpeed config")
        ds[key] = value


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")
