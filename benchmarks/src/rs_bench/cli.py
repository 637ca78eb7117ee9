"""rs-bench: train each model package's tiny preset briefly on synthetic data, measure its speed, peak memory
and quality against a trivial control, write a JSON + markdown report with pictures, and compare with the
committed baseline.

Each package runs in its own interpreter (``python -m rs_bench.worker``) so that its peak memory is its own; its
work directory ``<out>/<package>/`` (data, run, pictures, ``worker.log``) is replaced on every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .worker import BUDGETS, PACKAGES, RESULT_FILE

DEFAULT_BASELINE = Path(__file__).resolve().parents[2] / "baseline.json"  # benchmarks/baseline.json
EXIT_REGRESSION, EXIT_FAILED = 1, 3
LOG_TAIL = 3000  # characters of a failed worker's log shown


def package_list(text: str) -> list[str]:
    """argparse type: a comma-separated, non-empty subset of :data:`PACKAGES`, in the order given."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(PACKAGES))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown package(s) {unknown or text!r}; choose from {', '.join(PACKAGES)}")
    return list(dict.fromkeys(names))


def default_threads() -> int:
    """Two torch threads (the reference machine's cores), or fewer if this process may use fewer CPUs."""
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rs-bench", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Budgets: smoke (a few steps: checks the wiring, quality is meaningless), quick (about 4 minutes for "
               "all four packages on 2 idle cores; CI and the README's first command), full (several times longer, "
               "closer numbers).\n"
               "Exit codes: 0 done; 1 regressions of the kind --fail-on-regression names; 2 bad arguments or "
               "baseline file; 3 a package's benchmark failed (its log tail is printed).\n"
               "Example: rs-bench --quick --packages icipnet,clvnet --out runs/bench")
    parser.add_argument("--quick", action="store_true", help="shorthand for --budget quick")
    parser.add_argument("--budget", choices=BUDGETS, default="full",
                        help="training/evaluation budget of every package (default: full; see below)")
    parser.add_argument("--packages", type=package_list, default=list(PACKAGES),
                        help=f"comma-separated packages to run, in order (default: {','.join(PACKAGES)})")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"),
                        help="output directory: report.json, report.md and one work directory per package "
                             "(default: runs/bench)")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                        help="baseline JSON to compare with (default: benchmarks/baseline.json); a missing file "
                             "means only the controls are checked")
    parser.add_argument("--update-baseline", action="store_true",
                        help="write this run's quality and step times into --baseline (packages not run are kept "
                             "when the budget is the same)")
    parser.add_argument("--fail-on-regression", choices=("quality", "any"),
                        help="exit with 1 on quality regressions (quality), or on quality and speed ones (any); "
                             "default: report them only")
    parser.add_argument("--speed-factor", type=float, default=2.5,
                        help="flag a speed regression when the median step time exceeds the baseline's × this "
                             "(default: 2.5; compared only when the baseline used as many threads; timings depend "
                             "on the machine and its load)")
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="torch threads of each package's process (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, initialisation and training")
    return parser


def run_package(name: str, out: Path, budget: str, seed: int, threads: int) -> dict | str:
    """Run one package's worker; its result (picture path relative to ``out``), or the tail of its log on failure."""
    work = out / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "rs_bench.worker", name, "--work", str(work), "--budget", budget,
               "--seed", str(seed), "--threads", str(threads)]
    with open(work / "worker.log", "w", encoding="utf-8") as log:
        code = subprocess.run(command, env=env, stderr=log, check=False).returncode
    if code or not (work / RESULT_FILE).is_file():
        tail = (work / "worker.log").read_text(encoding="utf-8", errors="replace")[-LOG_TAIL:]
        return f"exit code {code}; end of {work / 'worker.log'}:\n{tail}"
    result = json.loads((work / RESULT_FILE).read_text(encoding="utf-8"))
    result["picture"] = os.path.relpath(result["picture"], out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    budget = "quick" if args.quick else args.budget
    if args.threads < 1 or args.speed_factor <= 0:
        parser.error("--threads must be >= 1 and --speed-factor > 0")
    from .report import compare, new_report, read_baseline, updated_baseline, write

    try:
        baseline = read_baseline(args.baseline) if args.baseline.is_file() else None
    except ValueError as e:
        parser.error(str(e))
    report = new_report(budget, args.seed, args.threads, ["rs-bench", *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    for index, name in enumerate(args.packages, 1):
        print(f"[{index}/{len(args.packages)}] {name}: {budget} budget, {args.threads} threads", flush=True)
        outcome = run_package(name, args.out, budget, args.seed, args.threads)
        if isinstance(outcome, str):
            report["failed"][name] = outcome
            print(f"[{index}/{len(args.packages)}] {name} FAILED ({outcome})", flush=True)
            continue
        report["packages"][name] = outcome
        q = outcome["quality"]
        print(f"[{index}/{len(args.packages)}] {name} done in {outcome['wall_s']:.0f} s: {q['metric']} "
              f"{q['value']:.3f} ({q['control']}: {q['control_value']:.3f}), "
              f"{outcome['train']['median_step_s']:.3f} s/step, peak {outcome['peak_rss_mb']:.0f} MB", flush=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["loadavg_end"] = [round(a, 2) for a in os.getloadavg()]
    report["baseline"] = str(args.baseline) if baseline else None
    report["regressions"], report["notes"] = compare(report["packages"], baseline, budget, args.threads,
                                                          args.speed_factor)
    json_path, md_path = write(report, args.out)

    for regression in report["regressions"]:
        print(f"REGRESSION {regression['package']} ({regression['kind']}): {regression['message']}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"report: {json_path} and {md_path} ({report['wall_s']:.0f} s)")
    if args.update_baseline and report["packages"]:
        new = updated_baseline(report, baseline)
        args.baseline.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")
        print(f"baseline updated: {args.baseline} ({', '.join(report['packages'])})")
    if report["failed"]:
        return EXIT_FAILED
    kinds = {"quality": {"quality"}, "any": {"quality", "speed"}}.get(args.fail_on_regression, set())
    return EXIT_REGRESSION if any(r["kind"] in kinds for r in report["regressions"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
