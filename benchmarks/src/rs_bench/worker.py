"""One package's benchmark in its own interpreter, so that its peak memory and its imports are its own.

``python -m rs_bench.worker PACKAGE --work DIR --budget quick --seed 0 --threads 2`` runs
``rs_bench.<PACKAGE>.run`` and writes ``DIR/result.json``: the package module's measurements plus ``package``,
``version``, ``budget``, ``seed``, ``threads``, ``peak_rss_mb`` (the whole process: imports, data, training and
evaluation), ``stage_s`` (wall time per stage) and ``wall_s``. :mod:`rs_bench.cli` starts it; it prints one
progress line per stage on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time
from importlib.metadata import version
from pathlib import Path

PACKAGES = ("bimors", "icipnet", "clvnet", "rscovlm")
BUDGETS = ("smoke", "quick", "full")
RESULT_FILE = "result.json"


def run(package: str, work: Path, budget: str, seed: int, threads: int) -> dict:
    """Run the benchmark of ``package`` in this process and return its result (see module docstring)."""
    import torch

    torch.set_num_threads(threads)
    started = time.perf_counter()
    from .measure import Stages, peak_rss_mb

    stages = Stages(package)
    work.mkdir(parents=True, exist_ok=True)
    result = importlib.import_module(f"rs_bench.{package}").run(work, budget, seed, stages)
    result["picture"] = str(result["picture"])
    return {"package": package, "version": version(f"rs-{package}"), "budget": budget, "seed": seed,
            "threads": torch.get_num_threads(), **result, "peak_rss_mb": peak_rss_mb(),
            "stage_s": stages.seconds, "wall_s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rs_bench.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("package", choices=PACKAGES)
    parser.add_argument("--work", type=Path, required=True, help="directory for data, runs and result.json")
    parser.add_argument("--budget", choices=BUDGETS, default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args.package, args.work, args.budget, args.seed, args.threads)
    (args.work / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
