"""Shared helpers of the speed benchmarks (``icipnet_speed.py``, ``bimors_speed.py``).

Each benchmark runs every row in a fresh interpreter (the script re-invoked with a hidden ``--worker`` flag and a
JSON spec with at least ``preset``, ``mode`` and ``threads``); the worker prints its result row as one line
starting with a marker, which the driver parses. The scripts run as ``python benchmarks/<name>.py``, so this
module is imported as ``from _bench import ...`` (``sys.path[0]`` is ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import version
from pathlib import Path

from rs_bench.measure import maxrss_mb, status_mb  # noqa: F401  (maxrss_mb: used by the scripts via _bench)
from rs_bench.report import cpu_model

# ---------------------------------------------------------------------------------------------------------------
# Worker side: memory readings (status_mb and maxrss_mb are rs_bench.measure's, shared with rs-bench)


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux ≥ 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return status_mb("VmHWM") is not None


def print_worker_row(mark: str, row: dict) -> None:
    """Print a worker's result row as the marked line :func:`run_subprocess` parses."""
    print(mark + json.dumps(row), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Driver side: arguments, subprocesses, report


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def preset_list(allowed: Iterable[str]) -> Callable[[str], list[str]]:
    """argparse type factory: a comma-separated, non-empty subset of ``allowed``."""
    allowed = tuple(allowed)

    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        unknown = sorted(set(names) - set(allowed))
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"unknown preset(s) {unknown or text!r}; choose from {', '.join(allowed)}")
        return names

    return parse


def add_report_args(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark ends with: ``--out``, ``--markdown`` and the hidden ``--worker``."""
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def run_subprocess(script: str | Path, spec: dict, mark: str, extra_env: Mapping[str, str] | None = None) -> dict:
    """Run one spec in a fresh interpreter of ``script --worker`` (thread env pinned) and parse its result line."""
    env = os.environ | {"OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"])}
    env |= extra_env or {}
    proc = subprocess.run([sys.executable, str(script), "--worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(mark)]
    if proc.returncode or not lines:
        raise RuntimeError(f"benchmark worker {spec['preset']}/{spec['mode']} (threads {spec['threads']}) failed "
                           f"with exit code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(mark):])


def run_all(name: str, script: str | Path, specs: Iterable[dict], mark: str,
            extra_env: Mapping[str, str] | None = None) -> dict:
    """Run every spec in its own worker; the report with the environment (torch, CPU, load average) and rows."""
    environment = {"torch": version("torch"), "python": platform.python_version(), "cpu_model": cpu_model(),
                   "cpu_count": os.cpu_count(), "loadavg_start": [round(a, 2) for a in os.getloadavg()]}
    results = []
    for spec in specs:
        print(f"[{name}] {spec['preset']} {spec['mode']} threads={spec['threads']} …", file=sys.stderr, flush=True)
        results.append(run_subprocess(script, spec, mark, extra_env))
    environment["loadavg_end"] = [round(a, 2) for a in os.getloadavg()]
    return {"benchmark": name, "environment": environment, "results": results}


def environment_line(env: dict) -> str:
    """The markdown report's first line: torch version, CPU and the load average at start → end."""
    load = ", ".join(f"{a:.2f}" for a in env["loadavg_start"]) + " → " + \
        ", ".join(f"{a:.2f}" for a in env["loadavg_end"])
    return f"torch {env['torch']}, {env['cpu_model']} ({env['cpu_count']} CPUs), load average {load}"


def emit_report(report: dict, args: argparse.Namespace, markdown_table: Callable[[dict], str]) -> None:
    """Write the JSON report to ``args.out`` if given; print it, or its markdown table with ``args.markdown``."""
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report) if args.markdown else json.dumps(report, indent=2))
