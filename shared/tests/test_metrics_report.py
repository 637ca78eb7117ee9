"""The evaluation-report contract: fields, versions, JSON round trip, git provenance, Markdown tables."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from rs_shared.metrics import report as report_module
from rs_shared.metrics.report import git_revision, markdown_table, package_versions, write_report



def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd, env=env,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_report_fields_and_json_round_trip(tmp_path):
    results = {"oIoU": np.float64(0.7655), "mIoU": np.float32(0.5), "n": np.int64(3481),
               "per_category": {"car": torch.tensor(0.25)}, "curve": np.array([0.5, 0.25]),
               "by_seed": {1: 0.5, 2: (0.25, 0.75)}}
    path = tmp_path / "runs" / "eval.json"
    got = write_report(path, results, protocol="RRSIS official test script", seeds=[1, 2, 3],
                       config={"data_root": tmp_path, "size": 480}, extra={"wups": "exact match only"})
    assert set(got) == {"protocol", "results", "seeds", "config", "extra", "versions", "git", "created"}
    assert json.loads(path.read_text(encoding="utf-8")) == got
    assert got["results"] == {"oIoU": 0.7655, "mIoU": 0.5, "n": 3481, "per_category": {"car": 0.25},
                              "curve": [0.5, 0.25], "by_seed": {"1": 0.5, "2": [0.25, 0.75]}}
    assert got["seeds"] == [1, 2, 3] and got["config"] == {"data_root": str(tmp_path), "size": 480}
    assert got["extra"] == {"wups": "exact match only"}
    assert got["created"].endswith("+00:00")
    assert got["git"] is None or re.fullmatch(r"[0-9a-f]{40,64}(\+dirty)?", got["git"])


def test_optional_fields_are_null(tmp_path):
    got = write_report(tmp_path / "r.json", {"accuracy": 0.9}, protocol="Dassl top-1")
    assert got["seeds"] is None and got["config"] is None and got["extra"] is None


def test_versions_include_rs_shared_and_torch():
    versions = package_versions()
    assert versions["rs-shared"] and versions["torch"] and versions["numpy"]
    assert set(versions) <= set(report_module.REPORTED_DISTRIBUTIONS)


def test_unserialisable_value_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"results\['model'\]: object is not JSON-serialisable"):
        write_report(tmp_path / "r.json", {"model": object()}, protocol="p")
    with pytest.raises(ValueError, match="protocol"):
        write_report(tmp_path / "r.json", {}, protocol=" ")
    assert not (tmp_path / "r.json").exists()


def test_outside_a_git_checkout_git_is_null(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "_SOURCE_DIR", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))   # do not find a repository above
    assert write_report(tmp_path / "r.json", {"a": 1}, protocol="p")["git"] is None


def test_missing_git_executable_gives_null(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_revision() is None


def test_git_timeout_gives_null(monkeypatch):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs.get("timeout"))

    monkeypatch.setattr(report_module.subprocess, "run", hang)
    assert git_revision() is None


def test_commit_dirty_and_untracked_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "src")
    _git(repo, "commit", "-q", "-m", "init")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_revision(repo / "src") == head
    (repo / "src" / "a.py").write_text("x = 2\n")
    assert git_revision(repo / "src") == head + "+dirty"
    (repo / "venv_site_packages").mkdir()                # e.g. a wheel installed into a venv inside the checkout
    (repo / "venv_site_packages" / "m.py").write_text("")
    assert git_revision(repo / "venv_site_packages") is None


def test_markdown_table():
    rows = [{"dataset": "RefSegRS", "mIoU": 66.08, "oIoU": 76.554, "n": 1817},
            {"dataset": "RRSIS|D", "mIoU": 63.93, "n": 3481, "note": None}]
    assert markdown_table(rows, ["dataset", "mIoU", "oIoU", "n"]) == (
        "| dataset  |  mIoU |  oIoU |    n |\n"
        "| -------- | ----: | ----: | ---: |\n"
        "| RefSegRS | 66.08 | 76.55 | 1817 |\n"
        "| RRSIS\\|D | 63.93 |       | 3481 |"
    )
    assert markdown_table(rows[:1], ["mIoU"], digits=1).splitlines()[-1] == "| 66.1 |"
