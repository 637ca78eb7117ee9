"""Fallback checkpoints: each package's tiny preset trained briefly on synthetic data, built once and cached.

A model not given on the command line is replaced by its package's ``tiny-synthetic`` preset trained by the package's
own ``<pkg>-train`` entry point with a short step budget (:data:`BUDGETS`). These models have seen a few seconds of
training on procedurally generated scenes: they are untrained-scale toys that show the interface and the shape of the
outputs, not what the papers' models do.

Cache layout (``cache_dir`` defaults to ``$XDG_CACHE_HOME/rs-demo``, i.e. ``~/.cache/rs-demo``)::

    <cache_dir>/<budget>/<package>/
        data/            the synthetic dataset the package generated
        run/             the package's training output (the model directory lies inside it)
        train.log        everything the training command printed
        fallback.json    written last: the command, the model directory and the time it took

An entry without ``fallback.json`` (an interrupted build) is deleted and built again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("rs_demo")

PACKAGES = ("bimors", "icipnet", "clvnet", "rscovlm")
MARKER = "fallback.json"


@dataclass(frozen=True)
class Recipe:
    """How one package's fallback is trained: its console script, the fixed arguments (paths filled in from the
    cache entry) and where the model directory lands under ``run/``."""

    entry_point: str
    fixed_args: tuple[str, ...]
    model_dir: str


# {entry} is the cache entry directory. Every recipe starts from the package's packaged tiny-synthetic preset.
RECIPES = {
    # cross_dataset with the synthetic set as its only dataset: one model trained on all 11 scene classes
    "bimors": Recipe("bimors-train", (
        "--config", "tiny-synthetic", "--train.output_dir", "{entry}/run", "--data.root", "{entry}/data",
        "--model.tiny_clip_cache", "{entry}/clip", "--protocol.name", "cross_dataset", "--protocol.datasets", "",
        "--protocol.source", "synthetic", "--protocol.targets", "synthetic", "--protocol.seeds", "1",
        "--protocol.zero_shot", "false"), "run/synthetic-all/seed1/model"),
    "icipnet": Recipe("icipnet-train", (
        "--config", "tiny-synthetic", "--train.output_dir", "{entry}/run", "--data.synthetic_dir", "{entry}/data",
        "--train.tensorboard", "false"), "run/model"),
    "clvnet": Recipe("clvnet-train", (
        "--config", "tiny-synthetic", "--train.output_dir", "{entry}/run", "--data.synthetic_dir", "{entry}/data"),
        "run/model"),
    "rscovlm": Recipe("rscovlm-train", (
        "--config", "tiny-synthetic", "--train.output_dir", "{entry}/run", "--data.synthetic_dir", "{entry}/data"),
        "run/model"),
}

# Step budgets, as overrides of each preset (the packages also evaluate the model they saved, on a few samples here).
# "demo": about 1-2 minutes per package on 2 idle cores; "smoke": the least that runs every code path (the browser
# test), a few seconds of training each.
BUDGETS: dict[str, dict[str, dict[str, object]]] = {
    "demo": {
        "bimors": {"model.tiny_clip_steps": 300, "model.tiny_clip_pairs": 2048, "train.epochs": 3},
        "icipnet": {"data.synthetic_n": 1000, "train.max_steps": 150, "train.batch_size": 16,
                    "train.eval_every": 150, "train.save_every": 150, "train.schedule.warmup_steps": 15,
                    "data.val_max": 100},
        "clvnet": {"data.synthetic_n": 300, "train.max_steps": 120, "train.save_every": 120,
                   "train.schedule.warmup_steps": 12, "eval.max_samples": 20, "model.tiny_sam_steps": 0},
        # below ~500 steps the tiny RSCoVLM answers with repeated tokens; at 500-600 it gives short answers
        "rscovlm": {"data.synthetic_n": 240, "train.max_steps": 500, "train.save_every": 500,
                    "eval.synthetic_samples": 8},
    },
    "smoke": {
        "bimors": {"model.tiny_clip_steps": 10, "model.tiny_clip_pairs": 128, "train.epochs": 1},
        "icipnet": {"data.synthetic_n": 60, "train.max_steps": 4, "train.batch_size": 4, "train.eval_every": 4,
                    "train.save_every": 4, "train.schedule.warmup_steps": 1, "data.val_max": 4,
                    "data.eval_batch_size": 4},
        "clvnet": {"data.synthetic_n": 10, "train.max_steps": 4, "train.batch_size": 2, "train.save_every": 4,
                   "train.schedule.warmup_steps": 1, "eval.max_samples": 2, "eval.caption_metrics": "false",
                   "model.tiny_sam_steps": 0},
        "rscovlm": {"data.synthetic_n": 12, "train.max_steps": 4, "train.batch_size": 2, "train.save_every": 4,
                    "eval.synthetic_samples": 2},
    },
}
DEFAULT_BUDGET = "demo"


class FallbackError(RuntimeError):
    """A fallback model could not be built; the message names the command and its log."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/rs-demo``, else ``~/.cache/rs-demo``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "rs-demo"


def fallback_entry(package: str, cache_dir: str | os.PathLike, budget: str = DEFAULT_BUDGET) -> Path:
    """The cache entry directory of ``package``'s fallback: ``<cache_dir>/<budget>/<package>`` (absolute)."""
    return (Path(cache_dir) / budget / package).resolve()


def train_command(package: str, budget: str, entry: Path) -> list[str]:
    """The ``<pkg>-train`` command line that builds ``package``'s fallback in the cache entry ``entry``."""
    if package not in RECIPES:
        raise ValueError(f"unknown package {package!r}; expected one of {PACKAGES}")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; expected one of {sorted(BUDGETS)}")
    recipe = RECIPES[package]
    executable = shutil.which(recipe.entry_point, path=str(Path(sys.executable).parent))
    if executable is None:
        raise FallbackError(f"{recipe.entry_point} is not installed beside {sys.executable}; install rs-{package}")
    args = [arg.format(entry=entry) for arg in recipe.fixed_args]
    for key, value in BUDGETS[budget][package].items():
        args += [f"--{key}", str(value)]
    return [executable, *args]


def ensure_fallback(package: str, cache_dir: str | os.PathLike, budget: str = DEFAULT_BUDGET,
                    threads: int = 1) -> Path:
    """The model directory of ``package``'s fallback, trained now (by the package's own training command, its
    output shown and kept in ``train.log``) unless the cache already holds it; see the module docstring."""
    entry = fallback_entry(package, cache_dir, budget)
    marker = entry / MARKER
    if marker.is_file():
        return entry / json.loads(marker.read_text(encoding="utf-8"))["model"]
    if entry.exists():
        logger.info("%s: removing the unfinished fallback build in %s", package, entry)
        shutil.rmtree(entry)
    entry.mkdir(parents=True)
    command = train_command(package, budget, entry)
    logger.info("%s: building the fallback (tiny preset, %r budget) in %s; log: %s", package, budget, entry,
                entry / "train.log")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    with open(entry / "train.log", "wb") as log:
        process = subprocess.Popen(command, cwd=entry, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while chunk := process.stdout.read1(1 << 16):  # shown as it comes (progress bars too) and kept in the log
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            log.write(chunk)
        code = process.wait()
    seconds = time.perf_counter() - start
    model = entry / RECIPES[package].model_dir
    if code != 0 or not (model / "config.json").is_file():
        raise FallbackError(f"{package}: building the fallback failed (exit code {code}); command: "
                            f"{' '.join(command)}; see {entry / 'train.log'}")
    marker.write_text(json.dumps({"package": package, "budget": budget, "command": command,
                                  "model": RECIPES[package].model_dir, "seconds": round(seconds, 1)}, indent=2)
                      + "\n", encoding="utf-8")
    logger.info("%s: fallback built in %.0f s", package, seconds)
    return model


__all__ = ["BUDGETS", "DEFAULT_BUDGET", "PACKAGES", "RECIPES", "FallbackError", "Recipe", "default_cache_dir",
           "ensure_fallback", "fallback_entry", "train_command"]
