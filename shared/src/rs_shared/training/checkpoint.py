"""Atomic, pickle-free training checkpoints and resume discovery.

A checkpoint is a directory ``<output_dir>/checkpoints/step_<NNNNNN>/`` (the optimizer-step number,
zero-padded to six digits) holding:

========================================  ==========================================================
``model.safetensors``                     the unwrapped model's ``state_dict``
``optimizer.json`` + ``.safetensors``     optimizer state (replicated optimizers: written once)
``optimizer_rank<r>.json`` + ``…``        DeepSpeed ZeRO-1/2: each process's optimizer partition
``scheduler.json``                        LR-scheduler state
``rng_rank<r>.json`` + ``.safetensors``   RNG states of process ``r``: Python ``random`` and NumPy
                                          (JSON), torch CPU and CUDA generators (ByteTensors)
``trainer_state.json``                    data position, step, last logs, eval history
``config.json``                           the run's configuration
``complete.json``                         written last: every file's size (the completeness marker)
========================================  ==========================================================

Nested states (optimizer, scheduler) are stored by :func:`flatten_state`: tensors go to a safetensors
file, everything else (hyper-parameters, step counts, structure) to JSON. Nothing is ever pickled.

Writing is atomic: every process writes its files into ``checkpoints/.tmp-step_<NNNNNN>/``, the
processes meet at a barrier, then the main process writes ``complete.json``, fsyncs and renames the
directory to its final name. A crash at any point leaves either a finished checkpoint or a temporary
directory that resume ignores (and the next save removes). All processes must see one filesystem.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
MARKER = "complete.json"
FORMAT = "rs_shared.training.checkpoint/1"
_STEP_DIR = re.compile(r"step_(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, or does not fit the run that tries to load it."""


def checkpoint_name(step: int) -> str:
    """``step_000123`` for step 123."""
    return f"step_{step:06d}"


# --------------------------------------------------------------------------- nested state <-> files


def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON-able skeleton and a flat ``{name: tensor}`` dict.

    Supported leaves: tensors, ``bool``/``int``/``float``/``str``/``None``. Containers: ``dict`` (any
    hashable JSON-scalar keys; non-string keys such as the integer parameter ids of
    ``Optimizer.state_dict()`` are kept with their type), ``list`` and ``tuple``. Each tensor is
    replaced by ``{"__tensor__": name}`` where ``name`` is its dotted path. Anything else raises
    ``TypeError`` naming the path, so no object is ever silently pickled or dropped.
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            name = path or "tensor"
            while name in tensors:
                name += "_"
            tensors[name] = x.detach()
            return {"__tensor__": name}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v, f"{path}.{k}" if path else k) for k, v in x.items()}
            for k in x:
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise TypeError(f"cannot store dict key {k!r} of type {type(k).__name__} at '{path}'")
            return {"__items__": [[k, enc(v, f"{path}.{k}" if path else str(k))] for k, v in x.items()]}
        raise TypeError(f"cannot store a {type(x).__name__} at '{path or '<root>'}' in a checkpoint "
                        "(supported: tensors, numbers, strings, None, lists, tuples and dicts of them)")

    return enc(state, ""), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__items__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    return skeleton


def save_state(directory: Path, stem: str, state: Any) -> list[str]:
    """Write ``state`` as ``<stem>.json`` (+ ``<stem>.safetensors`` if it holds tensors); return the
    names of the files written."""
    skeleton, tensors = flatten_state(state)
    names = [f"{stem}.json"]
    _write_text(directory / names[0], json.dumps(skeleton, indent=1))
    if tensors:
        names.append(f"{stem}.safetensors")
        save_tensors(directory / names[1], tensors)
    return names


def load_state(directory: Path, stem: str) -> Any:
    """Read a state written by :func:`save_state`."""
    skeleton = _read_json(directory / f"{stem}.json")
    tensor_file = directory / f"{stem}.safetensors"
    tensors = load_file(tensor_file) if tensor_file.exists() else {}
    return unflatten_state(skeleton, tensors)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """``safetensors`` file of CPU copies of ``tensors``; tensors sharing storage (tied weights, views)
    are copied apart, since the format stores each tensor on its own. The file is fsynced."""
    seen: set[int] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    save_file(out, path, metadata={"format": "pt"})
    _fsync(path)


# --------------------------------------------------------------------------- RNG


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """This process's RNG states: Python ``random`` and NumPy as JSON, torch generators as tensors."""
    version, internal, gauss = random.getstate()
    bit_generator, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    json_part = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss},
        "numpy": {"bit_generator": bit_generator, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            tensors[f"torch_cuda_{i}"] = torch.cuda.get_rng_state(i)
    return json_part, tensors


def set_rng_state(json_part: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = json_part["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = json_part["numpy"]
    np.random.set_state((npy["bit_generator"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(tensors["torch_cpu"])
    for name, state in tensors.items():
        if name.startswith("torch_cuda_") and torch.cuda.is_available():
            device = int(name.removeprefix("torch_cuda_"))
            if device < torch.cuda.device_count():
                torch.cuda.set_rng_state(state, device)


# --------------------------------------------------------------------------- discovery


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``<output_dir>/checkpoints``, oldest step first. Temporary and
    partial directories are left out."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.fullmatch(p.name))]
    return [p for _, p in sorted(found) if checkpoint_problem(p) is None]


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete, loadable checkpoint, or ``None`` if it is: the marker must parse
    and every file it lists must exist with the recorded size."""
    path = Path(path)
    if not path.is_dir():
        return "no such directory"
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{MARKER} is missing (the write was interrupted before it finished)"
    except (OSError, ValueError) as e:
        return f"{MARKER} is unreadable: {e}"
    if not isinstance(marker, dict) or marker.get("format") != FORMAT or not isinstance(marker.get("files"), dict):
        return f"{MARKER} is not a {FORMAT} marker"
    for name, size in marker["files"].items():
        file = path / name
        if not file.is_file():
            return f"file {name} listed in {MARKER} is missing"
        if file.stat().st_size != size:
            return f"file {name} has {file.stat().st_size} bytes, {MARKER} records {size}"
    return None


def check_output_dir(output_dir: str | os.PathLike, resume_from: Path | None) -> None:
    """Refuse to mix two runs in one output directory: starting fresh where complete checkpoints exist,
    or resuming from an older checkpoint while newer ones exist (a later ``resume="auto"`` would pick
    those up). Either way :class:`CheckpointError` names the checkpoints in the way."""
    start = -1 if resume_from is None else _read_json(resume_from / MARKER)["step"]
    newer = [p.name for p in list_checkpoints(output_dir) if _step_of(p) > start]
    if newer and resume_from is None:
        raise CheckpointError(f"{Path(output_dir) / CHECKPOINTS} already holds checkpoints ({', '.join(newer)}) of "
                              "another run: resume it (resume='auto'), or use another output_dir")
    if newer:
        raise CheckpointError(f"resuming from {resume_from} while {Path(output_dir) / CHECKPOINTS} holds newer "
                              f"checkpoints ({', '.join(newer)}) would mix two runs: use another output_dir "
                              "(the resumed checkpoint may live anywhere) or delete those checkpoints")


def resolve_resume(resume: str, output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint to resume from: ``""`` → none; ``"auto"`` → the newest complete checkpoint in
    ``output_dir`` (none if there is none yet); otherwise a checkpoint directory, which must be complete
    (:class:`CheckpointError` says what is wrong with it)."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    problem = checkpoint_problem(resume)
    if problem is not None:
        raise CheckpointError(f"cannot resume from {resume}: {problem}. Pick a complete checkpoint "
                              f"(one with {MARKER}) or use resume='auto' to take the newest complete one.")
    return Path(resume)


# --------------------------------------------------------------------------- save / load


def save_checkpoint(output_dir: str | os.PathLike, step: int, *, accelerator, model, optimizer, scheduler,
                    trainer_state: dict, config: dict, keep_last: int = 0) -> Path:
    """Write checkpoint ``step`` atomically; call on every process (it synchronises them).

    ``keep_last > 0`` then deletes the oldest complete checkpoints older than this one so that at most
    ``keep_last`` remain (only after the new one is complete). Returns the checkpoint's path.
    """
    root = Path(output_dir) / CHECKPOINTS
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{final.name}"
    main, rank = accelerator.is_main_process, accelerator.process_index
    if main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale)
        for stale in root.glob(".trash-*"):
            shutil.rmtree(stale)
        tmp.mkdir()
    accelerator.wait_for_everyone()

    _write_rank_files(tmp, rank, accelerator, optimizer)
    if main:
        save_tensors(tmp / "model.safetensors", accelerator.unwrap_model(model).state_dict())
        if not _is_deepspeed(accelerator):
            save_state(tmp, "optimizer", optimizer.state_dict())
        save_state(tmp, "scheduler", scheduler.state_dict())
        _write_text(tmp / "trainer_state.json", json.dumps(trainer_state, indent=1))
        _write_text(tmp / "config.json", json.dumps(config, indent=1))
    accelerator.wait_for_everyone()

    if main:
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        _write_text(tmp / MARKER, json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1))
        _fsync(tmp)
        os.rename(tmp, final)
        _fsync(root)
        if keep_last > 0:
            older = [p for p in list_checkpoints(output_dir) if _step_of(p) < step]
            for old in older[: max(0, len(older) - (keep_last - 1))]:
                trash = root / f".trash-{old.name}"
                old.rename(trash)  # atomic: never a half-deleted checkpoint under a step name
                shutil.rmtree(trash)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: str | os.PathLike, *, accelerator, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and this process's RNG from checkpoint ``path`` (which must
    be complete); return its ``trainer_state`` dict. Call on every process, after ``accelerator.prepare``.
    """
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"cannot load checkpoint {path}: {problem}")
    state = _read_json(path / "trainer_state.json")
    rank, world = accelerator.process_index, accelerator.num_processes
    saved_world = state.get("num_processes", 1)

    weights = load_file(path / "model.safetensors")
    accelerator.unwrap_model(model).load_state_dict(weights)
    if _is_deepspeed(accelerator):
        if saved_world != world:
            raise CheckpointError(f"{path} holds ZeRO optimizer partitions of {saved_world} processes; "
                                  f"resume it with {saved_world} processes (this run has {world})")
        if not (path / f"optimizer_rank{rank}.json").exists():
            raise CheckpointError(f"{path} holds no ZeRO optimizer partitions (it was not written under "
                                  "DeepSpeed); resume it with the launch configuration that wrote it")
        _load_zero_optimizer(optimizer, load_state(path, f"optimizer_rank{rank}"), rank, world)
    else:
        if not (path / "optimizer.json").exists():
            raise CheckpointError(f"{path} has no optimizer.json (it was written under DeepSpeed ZeRO); "
                                  "resume it under the same DeepSpeed configuration")
        optimizer.load_state_dict(load_state(path, "optimizer"))
    scheduler.load_state_dict(load_state(path, "scheduler"))

    rng_rank = rank if (path / f"rng_rank{rank}.json").exists() else 0
    set_rng_state(_read_json(path / f"rng_rank{rng_rank}.json"), load_file(path / f"rng_rank{rng_rank}.safetensors"))
    return state


def _write_rank_files(directory: Path, rank: int, accelerator, optimizer) -> None:
    json_part, tensors = rng_state()
    _write_text(directory / f"rng_rank{rank}.json", json.dumps(json_part))
    save_tensors(directory / f"rng_rank{rank}.safetensors", tensors)
    if _is_deepspeed(accelerator):
        save_state(directory, f"optimizer_rank{rank}", _zero_optimizer_state(optimizer))


# --------------------------------------------------------------------------- DeepSpeed ZeRO-1/2
#
# DeepSpeed's own checkpoints are torch.save pickles. Instead each process stores its partition: the
# wrapped torch optimizer's state (moments of the flat fp32 partition) and the fp32 master partition,
# plus the loss-scaler numbers. Loading goes through DeepSpeed's own `load_state_dict` with a dict of
# the same shape, so padding and layout checks stay DeepSpeed's.

_ZERO_KEYS = ("base_optimizer_state", "single_partition_of_fp32_groups", "dynamic_loss_scale", "overflow",
              "clip_grad", "zero_stage", "group_paddings", "param_alignment_paddings", "partition_count",
              "ds_version")


def _is_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _zero_optimizer(optimizer):
    zero = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper -> DeepSpeedZeroOptimizer
    if not hasattr(zero, "single_partition_of_fp32_groups"):
        raise CheckpointError(f"checkpoints support DeepSpeed ZeRO stages 1 and 2 only, got {type(zero).__name__}")
    return zero


def _zero_optimizer_state(optimizer) -> dict:
    zero = _zero_optimizer(optimizer)
    state = zero.state_dict()
    out = {k: state[k] for k in _ZERO_KEYS if k in state}
    out["zero_stage"] = int(out["zero_stage"])
    scaler = state.get("loss_scaler")
    out["loss_scaler"] = {k: v for k, v in vars(scaler).items() if isinstance(v, (bool, int, float))} if scaler else {}
    return out


def _load_zero_optimizer(optimizer, saved: dict, rank: int, world: int) -> None:
    zero = _zero_optimizer(optimizer)
    state = zero.state_dict()  # the live layout (slice mappings, loss-scaler object) ...
    scaler = state.get("loss_scaler")
    for k, v in saved.pop("loss_scaler").items():
        if scaler is not None and hasattr(scaler, k):
            setattr(scaler, k, v)
    state.update(saved)  # ... overlaid with the saved partition
    per_rank: list[dict | None] = [None] * world
    per_rank[rank] = state
    zero.load_state_dict(per_rank, load_optimizer_states=True, load_from_fp32_weights=True)


# --------------------------------------------------------------------------- small helpers


def _step_of(path: Path) -> int:
    return int(_STEP_DIR.fullmatch(path.name).group(1))


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None

