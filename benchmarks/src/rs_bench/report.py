"""The benchmark report (``report.json``, ``report.md``) and the baseline it is compared with.

A baseline (``benchmarks/baseline.json``) holds, for one budget, each package's quality (metric, value, direction,
tolerance) and median training step time, plus where it was measured. :func:`compare` flags

* ``quality`` regressions: the value is worse than the baseline by more than the tolerance, or it does not beat
  the package's control (e.g. an untrained model);
* ``speed`` regressions: the median step time exceeds the baseline's × ``speed_factor``. Step times depend on the
  machine and on what else runs on it, so the factor is generous and speed regressions are advisory by default.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASELINE_NOTE = ("Written by rs-bench --update-baseline. Quality values are compared within each package's "
                 "tolerance; step times only within a generous factor, since they depend on the machine and its load.")


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model and count, OS, Python and the load average now (busy machines give slow, noisy timings)."""
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "loadavg": [round(a, 2) for a in os.getloadavg()]}


# --- baseline ----------------------------------------------------------------------------------------------------

def read_baseline(path: Path) -> dict[str, Any]:
    """The baseline at ``path``; raises ``ValueError`` naming the file and the field when it is malformed."""
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(baseline, dict) or not isinstance(baseline.get("budget"), str) \
            or not isinstance(baseline.get("packages"), dict):
        raise ValueError(f"{path}: expected an object with 'budget' (str) and 'packages' (object)")
    if not isinstance(baseline.get("threads", 1), int):
        raise ValueError(f"{path}: threads must be an integer")
    for name, entry in baseline["packages"].items():
        for key in ("quality", "tolerance", "median_step_s"):
            if not isinstance(entry, dict) or not isinstance(entry.get(key), int | float):
                raise ValueError(f"{path}: packages.{name}.{key} must be a number")
        if not isinstance(entry.get("higher_is_better"), bool):
            raise ValueError(f"{path}: packages.{name}.higher_is_better must be true or false")
    return baseline


def baseline_entry(result: dict[str, Any]) -> dict[str, Any]:
    """What the baseline keeps of one package's result."""
    quality = result["quality"]
    return {"metric": quality["metric"], "quality": round(quality["value"], 4),
            "higher_is_better": quality["higher_is_better"], "tolerance": quality["tolerance"],
            "median_step_s": result["train"]["median_step_s"]}


def updated_baseline(report: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The baseline after ``report``: its packages replace theirs; the others are kept when ``previous`` is for the
    same budget (a run of a subset of the packages updates only those)."""
    packages = dict(previous["packages"]) if previous and previous["budget"] == report["budget"] else {}
    packages.update({name: baseline_entry(result) for name, result in report["packages"].items()})
    return {"note": BASELINE_NOTE, "budget": report["budget"], "seed": report["seed"], "threads": report["threads"],
            "created": report["created"], "git": report["git"], "machine": report["machine"],
            "packages": dict(sorted(packages.items()))}


def compare(results: dict[str, dict[str, Any]], baseline: dict[str, Any] | None, budget: str, threads: int,
            speed_factor: float) -> tuple[list[dict[str, str]], list[str]]:
    """``(regressions, notes)`` of package ``results`` against ``baseline`` (module docstring).

    Each regression is ``{"package", "kind": "quality" | "speed", "message"}``. The control check needs no
    baseline (and is skipped for the smoke budget); the rest is skipped, with a note, when there is no baseline,
    it is for another budget, or it has no entry for a package. Step times are compared only when the baseline
    was measured with the same number of ``threads``.
    """
    regressions, notes = [], []

    def flag(package: str, kind: str, message: str) -> None:
        regressions.append({"package": package, "kind": kind, "message": message})

    if baseline is None:
        notes.append("no baseline: only the controls were checked")
    elif baseline["budget"] != budget:
        notes.append(f"the baseline is for the {baseline['budget']} budget, this run is {budget}: "
                     "only the controls were checked")
        baseline = None
    compare_speed = baseline is not None and baseline.get("threads", threads) == threads
    if baseline is not None and not compare_speed:
        notes.append(f"the baseline's step times were measured with --threads {baseline['threads']}, this run used "
                     f"--threads {threads}: step times were not compared")
    if budget == "smoke":
        notes.append("smoke budget: quality is meaningless, the controls were not checked")
    for name, result in results.items():
        q = result["quality"]
        sign = 1 if q["higher_is_better"] else -1
        if budget != "smoke" and sign * (q["value"] - q["control_value"]) <= 0:
            flag(name, "quality", f"{q['metric']} {q['value']:.4f} does not beat its control "
                                  f"({q['control']}: {q['control_value']:.4f})")
        if baseline is None:
            continue
        base = baseline["packages"].get(name)
        if base is None:
            notes.append(f"{name}: not in the baseline")
            continue
        if sign * (q["value"] - base["quality"]) < -base["tolerance"]:
            flag(name, "quality", f"{q['metric']} {q['value']:.4f} is worse than the baseline {base['quality']:.4f} "
                                  f"by more than its tolerance {base['tolerance']}")
        step, base_step = result["train"]["median_step_s"], base["median_step_s"]
        if compare_speed and step > speed_factor * base_step:
            flag(name, "speed", f"median training step {step:.4f} s is more than {speed_factor}× the baseline's "
                                f"{base_step:.4f} s (machine-dependent: check the load average)")
    return regressions, notes


# --- report ------------------------------------------------------------------------------------------------------

def new_report(budget: str, seed: int, threads: int, command: list[str]) -> dict[str, Any]:
    """The report's header: what ran, where and with which code (:func:`rs_shared.metrics.report` helpers)."""
    from importlib.metadata import version

    from rs_shared.metrics.report import git_revision, package_versions

    return {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command, "budget": budget, "seed": seed, "threads": threads, "machine": machine(),
            "versions": {**package_versions(), "rs-bench": version("rs-bench")}, "git": git_revision(),
            "packages": {}, "failed": {}}


def _number(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    """``report.md``: a table with a row per package, the regressions, then each package's extras and picture."""
    m = report["machine"]
    lines = [f"# rs-bench ({report['budget']} budget)", "",
             f"{m['cpu_model']} ({m['cpu_count']} CPUs), torch threads per package: {report['threads']}, "
             f"load average {', '.join(map(str, m['loadavg']))} at the start; git {report['git']}; seed "
             f"{report['seed']}; {report['wall_s']:.0f} s in all. Speed and memory are measured on this machine "
             "under its load: compare them only with runs on the same machine.", "",
             "| package | parameters | train s/step (median) | train samples/s | inference s/sample | peak RSS (MB) "
             "| quality | value | control | control value | wall (s) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|"]
    for name, r in report["packages"].items():
        q = r["quality"]
        arrow = "↑" if q["higher_is_better"] else "↓"
        lines.append(f"| {name} | {r['parameters'] / 1e6:.2f} M | {r['train']['median_step_s']:.3f} "
                     f"| {r['train']['samples_per_s']:.1f} | {r['inference']['median_s']:.4f} | {r['peak_rss_mb']:.0f} "
                     f"| {q['metric']} {arrow} | {q['value']:.3f} | {q['control']} | {q['control_value']:.3f} "
                     f"| {r['wall_s']:.0f} |")
    for name, error in report["failed"].items():
        last = error.strip().splitlines()[-1].replace("|", "\\|") if error.strip() else "no output"
        lines.append(f"| {name} | failed: {last} |" + " |" * 9)
    lines += ["", "## Regressions", ""]
    if report["regressions"]:
        lines += [f"- **{r['package']}** ({r['kind']}): {r['message']}" for r in report["regressions"]]
    else:
        lines.append(f"None against {report['baseline']}." if report["baseline"] else "None (no baseline).")
    lines += [f"- note: {note}" for note in report["notes"]]
    for name, r in report["packages"].items():
        q = r["quality"]
        lines += ["", f"## {name} {r['version']}", "",
                  f"Quality on {q['split']} ({q['samples']} samples): {q['metric']} {q['value']:.4f}, "
                  f"{q['control']} {q['control_value']:.4f}; " +
                  ", ".join(f"{k} {_number(v, 4)}" for k, v in q["extra"].items()) + ".",
                  f"Training: {r['train']['steps']} steps × batch {r['train']['batch_size']}, loss "
                  f"{r['train']['first_loss']:.3f} → {r['train']['final_loss']:.3f}; inference: "
                  f"{r['inference']['unit']}. Stages (s): " +
                  ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items()) + ".", "",
                  f"![{name}]({r['picture']})"]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``out/report.json`` and ``out/report.md``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path
