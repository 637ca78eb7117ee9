"""What every package benchmark measures, and how: training step times read from the training loop's own log,
the latency of single-sample inference calls, peak resident memory, and the wall time of each stage.

Step times come from ``log.jsonl`` of :func:`rs_shared.training.train` written with ``log_every=1`` (see
:data:`LOOP_OVERRIDES`): each line holds the seconds since the loop started, so consecutive lines give the duration
of one optimiser step (data loading, forward, backward, optimiser). The first step (warm-up) and steps that ran an
evaluation are left out; the median is reported.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Overrides every benchmark adds to a package's training config: one log line per step (the step times), no
# intermediate checkpoints and no TensorBoard (neither is measured, both cost time).
LOOP_OVERRIDES = ("train.log_every=1", "train.save_every=0", "train.tensorboard=false")


def read_log(log_file: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl`` written by :func:`rs_shared.training.train`."""
    path = Path(log_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the training log is missing (did the training loop run?)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_speed(log_file: str | Path, batch_size: int) -> dict[str, float | int]:
    """Speed and loss of one training run from its per-step log.

    Returns ``steps``, ``median_step_s`` (median over the steps after the first, without evaluation steps),
    ``samples_per_s`` (``batch_size / median_step_s``), ``loop_s`` (the loop's wall time), ``first_loss`` and
    ``final_loss`` (mean of the last five logged losses).
    """
    records = read_log(log_file)
    durations = [b["time"] - a["time"] for a, b in zip(records, records[1:])
                 if b["step"] == a["step"] + 1 and "eval" not in b]
    if not durations:
        raise ValueError(f"{log_file}: fewer than two consecutive per-step log lines; was it written with "
                         f"train.log_every=1 and at least 2 steps?")
    median = statistics.median(durations)
    tail = [r["loss"] for r in records[-5:]]
    return {"steps": records[-1]["step"], "batch_size": batch_size, "median_step_s": round(median, 4),
            "samples_per_s": round(batch_size / median, 2), "loop_s": round(records[-1]["time"], 1),
            "first_loss": round(records[0]["loss"], 4), "final_loss": round(sum(tail) / len(tail), 4)}


def latency(call: Callable[[Any], Any], inputs: Iterable[Any], warmup: int = 1) -> dict[str, float | int]:
    """Median wall time of ``call(x)`` over ``inputs`` (one sample each), after ``warmup`` untimed calls on the
    first input. Returns ``median_s`` and ``calls`` (timed calls)."""
    inputs = list(inputs)
    if not inputs:
        raise ValueError("latency needs at least one input")
    for _ in range(warmup):
        call(inputs[0])
    times = []
    for x in inputs:
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "calls": len(times)}


def status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB, or None off Linux."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def maxrss_mb() -> float:
    """``ru_maxrss`` of this process in MiB (kilobytes on Linux, bytes on macOS)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB: ``VmHWM`` where Linux gives it, else ``ru_maxrss``."""
    peak = status_mb("VmHWM")
    return round(peak if peak is not None else maxrss_mb(), 1)


def parameter_count(model) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())


class Stages:
    """Wall time of named stages, printed as progress lines ``[package] stage …`` / ``… done in 12.3 s``."""

    def __init__(self, package: str):
        self.package = package
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, detail: str = "") -> Iterator[None]:
        print(f"[{self.package}] {name}{': ' + detail if detail else ''} …", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"[{self.package}] {name} done in {self.seconds[name]:.1f} s", flush=True)
