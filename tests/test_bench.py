"""rs-bench: one package end to end with the smoke budget (the report's structure, a regression flagged against a
doctored baseline, the exit code, the baseline update), and the comparison rules on hand-made results."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rs_bench.report import compare, read_baseline, updated_baseline


def rs_bench() -> str:
    exe = shutil.which("rs-bench", path=str(Path(sys.executable).parent))
    assert exe is not None, "rs-bench is not installed in this environment (uv sync)"
    return exe


def result(value: float, control: float, step: float = 0.1, higher_is_better: bool = True) -> dict:
    """A package result as far as :func:`compare` reads it."""
    return {"quality": {"metric": "m", "value": value, "higher_is_better": higher_is_better, "tolerance": 0.05,
                        "control": "c", "control_value": control},
            "train": {"median_step_s": step}}


def baseline(quality: float, step: float = 0.1, higher_is_better: bool = True, budget: str = "quick") -> dict:
    entry = {"metric": "m", "quality": quality, "higher_is_better": higher_is_better, "tolerance": 0.05,
             "median_step_s": step}
    return {"budget": budget, "threads": 2, "packages": {"p": entry}}


def test_smoke_run_writes_the_report_and_flags_a_doctored_baseline(tmp_path):
    baseline_file = tmp_path / "baseline.json"
    baseline_file.write_text(json.dumps({"budget": "smoke", "threads": 1, "packages": {"rscovlm": {
        "metric": "classification accuracy", "quality": 2.0, "higher_is_better": True, "tolerance": 0.1,
        "median_step_s": 1e-6}}}))
    out = tmp_path / "out"
    proc = subprocess.run([rs_bench(), "--budget", "smoke", "--packages", "rscovlm", "--threads", "1", "--out",
                           str(out), "--baseline", str(baseline_file), "--fail-on-regression", "quality",
                           "--update-baseline"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "[1/1] rscovlm" in proc.stdout and "REGRESSION rscovlm (quality)" in proc.stdout

    report = json.loads((out / "report.json").read_text())
    assert report["budget"] == "smoke" and report["failed"] == {} and list(report["packages"]) == ["rscovlm"]
    assert {"cpu_model", "cpu_count", "loadavg", "loadavg_end"} <= set(report["machine"])
    assert report["versions"]["rs-rscovlm"] == "0.1.0" and "torch" in report["versions"]
    row = report["packages"]["rscovlm"]
    assert row["train"]["steps"] == 4 and row["train"]["batch_size"] == 8 and row["train"]["median_step_s"] > 0
    assert row["inference"]["median_s"] > 0 and row["peak_rss_mb"] > 100 and row["parameters"] > 0
    assert 0 <= row["quality"]["value"] <= 1 and row["quality"]["control"] == "blank images"
    assert (out / row["picture"]).is_file()
    assert sorted(r["kind"] for r in report["regressions"]) == ["quality", "speed"]

    markdown = (out / "report.md").read_text()
    assert "| rscovlm | " in markdown and f"![rscovlm]({row['picture']})" in markdown
    assert "**rscovlm** (quality)" in markdown

    updated = read_baseline(baseline_file)  # --update-baseline replaced the doctored entry by this run's
    assert updated["budget"] == "smoke"
    assert updated["packages"]["rscovlm"]["quality"] == round(row["quality"]["value"], 4)
    assert updated["packages"]["rscovlm"]["median_step_s"] == row["train"]["median_step_s"]


def test_quality_regressions_respect_the_tolerance_and_the_direction():
    assert compare({"p": result(0.58, 0.3)}, baseline(0.60), "quick", 2, 2.5) == ([], [])
    regressions, _ = compare({"p": result(0.50, 0.3)}, baseline(0.60), "quick", 2, 2.5)
    assert [(r["package"], r["kind"]) for r in regressions] == [("p", "quality")]
    assert "worse than the baseline" in regressions[0]["message"]
    lower = {"p": result(1.6, 7.0, higher_is_better=False)}  # a loss: higher is worse
    assert compare(lower, baseline(1.58, higher_is_better=False), "quick", 2, 2.5) == ([], [])
    assert compare(lower, baseline(1.5, higher_is_better=False), "quick", 2, 2.5)[0][0]["kind"] == "quality"


def test_not_beating_the_control_is_a_quality_regression_except_in_smoke_runs():
    regressions, notes = compare({"p": result(0.3, 0.3)}, None, "quick", 2, 2.5)
    assert [r["kind"] for r in regressions] == ["quality"] and "does not beat its control" in regressions[0]["message"]
    assert notes == ["no baseline: only the controls were checked"]
    regressions, notes = compare({"p": result(0.3, 0.3)}, None, "smoke", 2, 2.5)
    assert regressions == [] and any("smoke" in n for n in notes)


def test_speed_regressions_use_the_factor_and_other_budgets_are_not_compared():
    assert compare({"p": result(0.6, 0.3, step=0.24)}, baseline(0.6, step=0.1), "quick", 2, 2.5)[0] == []
    regressions, _ = compare({"p": result(0.6, 0.3, step=0.26)}, baseline(0.6, step=0.1), "quick", 2, 2.5)
    assert [r["kind"] for r in regressions] == ["speed"]
    regressions, notes = compare({"p": result(0.1, 0.05, step=9.0)}, baseline(0.6, step=0.1), "full", 2, 2.5)
    assert regressions == [] and "quick budget" in notes[0]
    assert compare({"q": result(0.6, 0.3)}, baseline(0.6), "quick", 2, 2.5) == ([], ["q: not in the baseline"])
    regressions, notes = compare({"p": result(0.6, 0.3, step=0.9)}, baseline(0.6, step=0.1), "quick", 1, 2.5)
    assert regressions == [] and "measured with --threads 2" in notes[0]


def test_baseline_update_keeps_other_packages_of_the_same_budget(tmp_path):
    report = {"budget": "quick", "seed": 0, "threads": 2, "created": "now", "git": None, "machine": {},
              "packages": {"q": {**result(0.7, 0.2), "train": {"median_step_s": 0.3}}}}
    report["packages"]["q"]["quality"]["value"] = 0.71234
    new = updated_baseline(report, baseline(0.6))
    assert set(new["packages"]) == {"p", "q"} and new["packages"]["q"]["quality"] == 0.7123
    assert set(updated_baseline(report, baseline(0.6, budget="full"))["packages"]) == {"q"}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(new))
    assert read_baseline(path) == new


def test_a_malformed_baseline_names_the_file_and_field(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"budget": "quick", "packages": {"icipnet": {"quality": "high"}}}))
    with pytest.raises(ValueError, match=r"baseline\.json: packages\.icipnet\.quality must be a number"):
        read_baseline(path)
    proc = subprocess.run([rs_bench(), "--quick", "--baseline", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "packages.icipnet.quality" in proc.stderr


def test_help_explains_the_budgets_and_exit_codes():
    out = subprocess.run([rs_bench(), "--help"], capture_output=True, text=True, check=True).stdout
    for text in ("--quick", "--packages", "--baseline", "--fail-on-regression", "--update-baseline", "smoke",
                 "Exit codes"):
        assert text in out
