"""The five distributions as users get them: built by ``uv build --package NAME``, installed from wheels.

- Each sdist and wheel builds; the wheel carries every module and data file of its package (the packaged presets
  ``configs/*.yaml``, rs-shared's accelerate configs), its console scripts and the metadata PyPI shows.
- Each model package installs into a fresh virtual environment with only the rs-shared wheel beside it, and there
  every console script answers ``--help``, the train command finds and reads its presets inside the wheel, and the
  predict command (``rscovlm-chat`` for rscovlm) runs on a random-init tiny model saved with the package's own API.
  Third-party packages come from the registry through uv's cache (hard links: seconds once the workspace is synced),
  pinned to the versions of ``uv.lock`` so the test does not change when PyPI does. Everything in the environment
  runs with its own python from a directory outside the repository (``wheel_probe.py``, copied out), so the
  workspace cannot be imported by accident.
- ``.github/release_target.py``, the tag check of the release workflow, accepts a ready tree and names what is wrong.
"""

import configparser
import email.parser
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from packaging.requirements import Requirement
from PIL import Image
from rs_shared.data.masks import rle_to_mask
from rs_shared.data.synthetic import SCENE_CLASSES

ROOT = Path(__file__).resolve().parents[1]
PROBE = Path(__file__).with_name("wheel_probe.py")
RELEASE_SCRIPT = ROOT / ".github" / "release_target.py"
RELEASE_WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _release_target():
    spec = importlib.util.spec_from_file_location("release_target", RELEASE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DISTRIBUTIONS = _release_target().DISTRIBUTIONS  # tag prefix -> (distribution, directory, import name)
MODEL_PREFIXES = [prefix for prefix in DISTRIBUTIONS if prefix != "shared"]
# what each package's paper-size preset (wheel_probe.PAPER_PRESETS) needs from the user: the error must name it
PAPER_PRESET_NEEDS = {"bimors": "data.root", "clvnet": "model.init", "icipnet": "model.swin", "rscovlm": "model.path"}
# subprocess environment: never the workspace's virtual environment, never a Python download
ENV = {**{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")},
       "UV_PYTHON_DOWNLOADS": "never"}


def project(directory: str) -> dict:
    return tomllib.loads((ROOT / directory / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def stem(prefix: str) -> str:
    """``rs_icipnet-0.1.0``: the file-name stem of the distribution's sdist and wheel."""
    name, directory, _ = DISTRIBUTIONS[prefix]
    return f"{name.replace('-', '_')}-{project(directory)['version']}"


def run(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (f"{' '.join(map(str, cmd))} exited with {result.returncode}:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="session")
def uv() -> str:
    exe = os.environ.get("UV") or shutil.which("uv")
    if exe is None:
        raise RuntimeError("uv not found: run the tests with `uv run pytest` (uv sets $UV) or put uv on PATH")
    return exe


@pytest.fixture(scope="session")
def dist_dir(uv, tmp_path_factory) -> Path:
    """The sdist and wheel of all five distributions, built as the release workflow builds them (concurrently)."""
    out = tmp_path_factory.mktemp("dist")
    builds = {name: subprocess.Popen([uv, "build", "--package", name, "--out-dir", str(out / name), "--quiet"],
                                     cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for name, _, _ in DISTRIBUTIONS.values()}
    logs = {name: build.communicate()[0] for name, build in builds.items()}
    failed = {name: log for name, log in logs.items() if builds[name].returncode != 0}
    assert not failed, "\n".join(f"uv build --package {name} failed:\n{log}" for name, log in failed.items())
    for path in [*out.glob("*/*.whl"), *out.glob("*/*.tar.gz")]:
        path.rename(out / path.name)
    return out


@pytest.fixture(scope="session")
def lock_constraints(uv, tmp_path_factory) -> Path:
    """uv.lock's third-party versions as a pip constraints file (no workspace package in it)."""
    path = tmp_path_factory.mktemp("lock") / "constraints.txt"
    run([uv, "export", "--frozen", "--all-packages", "--no-emit-workspace", "--no-hashes", "--no-header",
         "--no-annotate", "--format", "requirements.txt", "--output-file", path, "--quiet"], cwd=ROOT, env=ENV)
    return path


# --- what the wheels and sdists carry -----------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", list(DISTRIBUTIONS))
def test_wheel_and_sdist_carry_the_package(prefix, dist_dir):
    name, directory, module = DISTRIBUTIONS[prefix]
    meta_project, base = project(directory), stem(prefix)
    with zipfile.ZipFile(dist_dir / f"{base}-py3-none-any.whl") as wheel:
        files = set(wheel.namelist())
        metadata = email.parser.Parser().parsestr(wheel.read(f"{base}.dist-info/METADATA").decode())
        entry_points = configparser.ConfigParser(delimiters=("=",))
        entry_points.read_string(wheel.read(f"{base}.dist-info/entry_points.txt").decode())

    # every module and data file of src/<module> (presets, accelerate configs) and nothing else
    source = ROOT / directory / "src"
    expected = {p.relative_to(source).as_posix() for p in (source / module).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert {f for f in files if not f.startswith(f"{base}.dist-info/")} == expected
    assert any(f.endswith(".yaml") for f in expected)  # configs/*.yaml or accelerate_configs/*.yaml

    assert dict(entry_points["console_scripts"]) == meta_project["scripts"]
    assert metadata["Name"] == name and metadata["Version"] == meta_project["version"]
    assert metadata["Requires-Python"] == meta_project["requires-python"] == ">=3.11"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (ROOT / directory / "README.md").read_text(encoding="utf-8").strip()
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    assert all(r.specifier for r in requirements), "every dependency has a version bound"
    if prefix != "shared":  # 0.x: the next minor release of rs-shared may break this package
        shared = next(r for r in requirements if r.name == "rs-shared")
        major, minor, *_ = project("shared")["version"].split(".")
        assert project("shared")["version"] in shared.specifier
        assert f"{major}.{int(minor) + 1}.0" not in shared.specifier

    with tarfile.open(dist_dir / f"{base}.tar.gz") as sdist:
        members = set(sdist.getnames())
        assert {f"{base}/{f}" for f in ("pyproject.toml", "README.md", "CHANGELOG.md")} <= members
        changelog = sdist.extractfile(f"{base}/CHANGELOG.md").read().decode()
    assert f"## [{meta_project['version']}] - " in changelog


# --- installed alone, with only rs-shared beside it ---------------------------------------------------------------

def check_bimors_prediction(out: Path, result: dict, image: Path):
    record = json.loads((out / "prediction.json").read_text())
    assert json.loads(result["stdout"]) == record
    top = record["top_k"]
    probabilities = [entry["probability"] for entry in top]
    assert [entry["rank"] for entry in top] == [1, 2, 3] and {entry["class"] for entry in top} <= set(SCENE_CLASSES)
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert Image.open(out / record["picture"]).format == "PNG"


def check_clvnet_prediction(out: Path, result: dict, image: Path):
    record = json.loads((out / "scene.json").read_text())
    width, height = Image.open(image).size
    assert record["box"] == [8.0, 4.0, 72.0, 60.0] and record["caption"] in result["stdout"]
    assert len(record["masks"]) == len(record["mask_scores"])
    assert all(rle_to_mask(rle).shape == (height, width) for rle in record["masks"])
    assert Image.open(out / "scene.png").format == "PNG"


def check_icipnet_prediction(out: Path, result: dict, image: Path):
    record = json.loads((out / "prediction.json").read_text())
    width, height = Image.open(image).size
    assert record["size"] == [width, height]
    assert [entry["text"] for entry in record["predictions"]] == ["the red plane", "the largest building"]
    for entry in record["predictions"]:
        mask = np.asarray(Image.open(out / entry["mask"]))
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 255}
        assert entry["area_fraction"] == pytest.approx((mask > 0).mean())
        assert Image.open(out / entry["overlay"]).format == "PNG"


def check_rscovlm_prediction(out: Path, result: dict, image: Path):
    record = json.loads((out / "chat.json").read_text())
    assert result["stdout"] == record["answer"] + "\n"
    assert record["rounds"][0]["prompt"].startswith("How many planes are there?")
    assert record["original_size"] == list(Image.open(image).size)
    assert (record["overlay"] is not None) == (out / "overlay.png").is_file()


CHECK_PREDICTION = {"bimors": check_bimors_prediction, "clvnet": check_clvnet_prediction,
                    "icipnet": check_icipnet_prediction, "rscovlm": check_rscovlm_prediction}


def workspace_distributions() -> set[str]:
    sources = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["uv"]["sources"]
    return {name for name, source in sources.items() if source.get("workspace")}


@pytest.mark.slow
@pytest.mark.parametrize("prefix", MODEL_PREFIXES)
def test_wheel_installs_alone_and_its_commands_work(prefix, uv, dist_dir, lock_constraints, tmp_path):
    name, directory, module = DISTRIBUTIONS[prefix]
    venv = Path(os.path.abspath(tmp_path / f"venv-{prefix}"))
    python = venv / "bin" / "python"
    shared_wheel = dist_dir / f"{stem('shared')}-py3-none-any.whl"
    run([uv, "venv", venv, "--python", "3.11", "--quiet"], cwd=tmp_path, env=ENV)
    run([uv, "pip", "install", "--python", python, "--constraints", lock_constraints, shared_wheel,
         dist_dir / f"{stem(prefix)}-py3-none-any.whl", "--quiet"], cwd=tmp_path, env=ENV)

    # rs-shared and this package, both from the wheels just built; no other workspace package, nothing from PyPI
    listed = json.loads(run([uv, "pip", "list", "--python", python, "--format", "json"], cwd=tmp_path,
                            env=ENV).stdout)
    assert {p["name"] for p in listed} & workspace_distributions() == {"rs-shared", name}
    site = next((venv / "lib").glob("python3.11/site-packages"))
    direct_url = json.loads(next(site.glob("rs_shared-*.dist-info")).joinpath("direct_url.json").read_text())
    assert direct_url["url"] == shared_wheel.as_uri()

    probe = shutil.copy(PROBE, tmp_path / PROBE.name)
    work = tmp_path / "work"
    env = {**ENV, "PATH": f"{venv / 'bin'}{os.pathsep}{ENV.get('PATH', '')}"}
    run([python, probe, prefix, work], cwd=tmp_path, env=env)
    report = json.loads((work / "report.json").read_text())

    assert Path(report["prefix"]) == venv
    assert set(report["distributions"]) == {"rs-shared", name}
    for dist_name, info in report["distributions"].items():
        version = project("shared" if dist_name == "rs-shared" else directory)["version"]
        assert info["version"] == info["module_version"] == version
        assert Path(info["module_file"]).is_relative_to(site.resolve())  # imported from the wheel, not the tree

    scripts = {**project("shared")["scripts"], **project(directory)["scripts"]}
    assert set(report["scripts"]) == set(scripts)
    for script, info in report["scripts"].items():
        assert info["shebang"] == f"#!{python}", script
        result = info["help"]
        assert result["code"] == 0, f"{script} --help: {result['stderr'][-3000:]}"
        assert result["stdout"].startswith(f"usage: {script}") and len(result["stdout"]) > 200, script

    missing, paper = report["presets"]["missing"], report["presets"]["paper"]
    listed_presets = re.search(r"packaged presets: ([^)]*)\)", missing["stderr"])
    assert missing["code"] != 0 and listed_presets, missing["stderr"][-3000:]
    configs = ROOT / directory / "src" / module / "configs"
    assert sorted(listed_presets.group(1).split(", ")) == sorted(p.stem for p in configs.glob("*.yaml"))
    assert paper["code"] in (1, 2) and PAPER_PRESET_NEEDS[prefix] in paper["stderr"], paper["stderr"][-3000:]

    predict = report["predict"]
    assert predict["code"] == 0, f"{predict['script']}: {predict['stderr'][-5000:]}"
    CHECK_PREDICTION[prefix](Path(predict["out"]), predict, work / "scene.png")


# --- the release workflow's tag check -----------------------------------------------------------------------------

def test_release_workflow_publishes_the_five_distributions_without_secrets():
    text = RELEASE_WORKFLOW.read_text(encoding="utf-8")
    workflow = yaml.safe_load(text)
    assert workflow[True]["push"]["tags"] == [f"{prefix}-v*" for prefix in DISTRIBUTIONS]  # YAML 1.1: `on` is True
    for name, directory, module in DISTRIBUTIONS.values():
        assert project(directory)["name"] == name
        assert (ROOT / directory / "src" / module / "__init__.py").is_file()
        assert (ROOT / directory / "CHANGELOG.md").is_file()
    assert workflow["jobs"]["publish"]["permissions"] == {"id-token": "write"}
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    assert "secrets." not in text and not [s for s in steps if {"password", "token"} & set(s.get("with", {}))]


def write_member(root: Path, directory: str, name: str, module: str, version: str, changelog: str):
    path = root / directory
    (path / "src" / module).mkdir(parents=True)
    (path / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "{version}"\n')
    (path / "src" / module / "__init__.py").write_text(f'"""{name}."""\n\n__version__ = "{version}"\n')
    (path / "CHANGELOG.md").write_text(f"# Changelog\n\n{changelog}\n")


def test_release_target_accepts_a_ready_tree_and_names_what_is_wrong(tmp_path):
    (tmp_path / ".github").mkdir()
    script = shutil.copy(RELEASE_SCRIPT, tmp_path / ".github")
    write_member(tmp_path, "shared", "rs-shared", "rs_shared", "0.1.3", "## [0.1.3] - 2026-12-01")
    write_member(tmp_path, "packages/icipnet", "rs-icipnet", "icipnet", "0.2.0",
                 "## [0.2.0] - 2026-12-02\n\n### Added\n- x\n\n## [0.1.0] - 2026-11-30")

    def release(tag):
        return subprocess.run([sys.executable, script, tag], capture_output=True, text=True, cwd=tmp_path)

    def outputs(result):
        assert result.returncode == 0, result.stderr
        return dict(line.split("=", 1) for line in result.stdout.splitlines())

    assert outputs(release("icipnet-v0.2.0")) == {"package": "rs-icipnet", "directory": "packages/icipnet",
                                                  "version": "0.2.0", "shared_version": "0.1.3",
                                                  "pytest_k": "icipnet"}
    assert outputs(release("refs/tags/shared-v0.1.3"))["pytest_k"] == ""  # a shared release tests every package

    stale = release("icipnet-v0.3.0")
    assert stale.returncode == 1
    for path in ("packages/icipnet/pyproject.toml", "packages/icipnet/src/icipnet/__init__.py",
                 "packages/icipnet/CHANGELOG.md"):
        assert path in stale.stderr
    (tmp_path / "packages/icipnet/CHANGELOG.md").write_text("## [0.2.0] - Unreleased\n")
    undated = release("icipnet-v0.2.0")
    assert undated.returncode == 1 and "CHANGELOG.md: no section '## [0.2.0] - YYYY-MM-DD'" in undated.stderr
    assert "pyproject.toml" not in undated.stderr
    for tag in ("demo-v0.1.0", "icipnet-0.2.0", "icipnet-v"):
        result = release(tag)
        assert result.returncode == 1 and "shared, bimors, clvnet, icipnet, rscovlm" in result.stderr, tag
