"""The workspace itself: five distributions, the dependency direction, the lock, the entry points."""

import importlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {"rs-shared": ROOT / "shared", **{f"rs-{m}": ROOT / "packages" / m
                                            for m in ("bimors", "clvnet", "icipnet", "rscovlm")}}
MODEL_PACKAGES = [name for name in MEMBERS if name != "rs-shared"]


def pyproject(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())


def requirement_names(project: dict) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower() for dep in project.get("dependencies", [])}


def test_root_is_a_virtual_workspace_of_the_five_members():
    root = pyproject(ROOT)
    assert "project" not in root  # virtual root: no code of its own
    # the five released distributions, plus the demo app and the benchmark runner (never released)
    assert set(root["tool"]["uv"]["workspace"]["members"]) == {"shared", "packages/*", "demo", "benchmarks"}
    for name, path in MEMBERS.items():
        project = pyproject(path)["project"]
        assert project["name"] == name and project["version"] == "0.1.0"
        assert project["requires-python"].startswith(">=3.11")
        assert (path / "README.md").is_file()
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


@pytest.mark.parametrize("name", MODEL_PACKAGES)
def test_model_packages_depend_on_rs_shared_and_never_on_each_other(name):
    deps = requirement_names(pyproject(MEMBERS[name])["project"])
    assert "rs-shared" in deps
    assert not deps & (set(MODEL_PACKAGES) - {name})


def test_rs_shared_never_imports_a_model_package():
    sources = (ROOT / "shared" / "src").rglob("*.py")
    pattern = re.compile(r"^\s*(from|import)\s+(bimors|clvnet|icipnet|rscovlm)\b", re.M)
    assert not [p for p in sources if pattern.search(p.read_text())]


def test_lock_resolves_the_whole_stack():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions = {p["name"]: p.get("version") for p in lock["package"]}
    for package in ("torch", "transformers", "peft", "open-clip-torch", "timm", "accelerate", "deepspeed",
                    "datasets", "pytest"):
        assert package in versions, package
    assert versions["transformers"].startswith("5.")


@pytest.mark.parametrize("module", ["rs_shared", "bimors", "clvnet", "icipnet", "rscovlm"])
def test_every_distribution_imports(module):
    assert importlib.import_module(module).__version__ == "0.1.0"


def test_rs_data_entry_point_is_installed():
    exe = shutil.which("rs-data", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: rs-data" in out and "quickstart" in out
