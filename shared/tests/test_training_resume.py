"""Exact resume after SIGKILL, between steps and in the middle of a checkpoint write.

Three runs of ``training_scripts/train_mlp.py`` (dropout, data noise from the global RNG, AdamW, cosine
warm-up, clipping, grad_accum 2, 5 optimizer steps per epoch, checkpoints every 3 steps, 12 steps):
A runs through; B is SIGKILLed at step 7 and resumed with ``resume="auto"`` from step 6; C is SIGKILLed
while writing checkpoint 9 and resumed from step 6. B and C must end bitwise equal to A. Independent
processes run concurrently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rs_shared.training import list_checkpoints

SCRIPT = Path(__file__).parent / "training_scripts" / "train_mlp.py"


def run_concurrently(*arg_lists: list[str], timeout: float = 600) -> list[tuple[int, str]]:
    """Run ``train_mlp.py`` once per argument list, all at once; ``(returncode, stderr)`` of each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for args in arg_lists]
    errors = [p.communicate(timeout=timeout)[1] for p in procs]
    return [(p.returncode, err) for p, err in zip(procs, errors)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    a, b, c = root / "A", root / "B", root / "C"
    first = run_concurrently(["--output-dir", str(a)], ["--output-dir", str(b), "--kill-at-step", "7"],
                             ["--output-dir", str(c), "--kill-while-saving", "9"])
    after_kill = {d.name: sorted(p.name for p in (d / "checkpoints").iterdir()) for d in (b, c)}
    after_kill_complete = {d.name: [p.name for p in list_checkpoints(d)] for d in (b, c)}
    second = run_concurrently(["--output-dir", str(b), "--resume", "auto"],
                              ["--output-dir", str(c), "--resume", "auto"])
    return {"root": root, "first": first, "second": second, "after_kill": after_kill,
            "after_kill_complete": after_kill_complete}


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def log(run: Path) -> list[tuple]:
    return [(r["step"], r["lr"], r["loss"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def assert_bitwise_equal(x: dict, y: dict) -> None:
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), k


def test_uninterrupted_run(runs):
    (code, err), *_ = runs["first"]
    assert code == 0, err
    a = runs["root"] / "A"
    assert [p.name for p in list_checkpoints(a)] == ["step_000006", "step_000009", "step_000012"]  # keep_last 3
    assert [s for s, _, _ in log(a)] == list(range(1, 13))


def test_killed_between_steps_resumes_bitwise(runs):
    code, err = runs["first"][1]
    assert code == -signal.SIGKILL, err
    assert runs["after_kill"]["B"] == ["step_000003", "step_000006"]
    code, err = runs["second"][0]
    assert code == 0, err
    a, b = runs["root"] / "A", runs["root"] / "B"
    assert_bitwise_equal(weights(a), weights(b))
    assert log(b) == log(a)  # the line of step 7 written before the kill was dropped on resume
    assert_bitwise_equal(load_file(a / "checkpoints" / "step_000012" / "optimizer.safetensors"),
                         load_file(b / "checkpoints" / "step_000012" / "optimizer.safetensors"))


def test_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(runs):
    code, err = runs["first"][2]
    assert code == -signal.SIGKILL, err
    assert runs["after_kill"]["C"] == [".tmp-step_000009", "step_000003", "step_000006"]
    assert runs["after_kill_complete"]["C"] == ["step_000003", "step_000006"]
    code, err = runs["second"][1]
    assert code == 0, err
    a, c = runs["root"] / "A", runs["root"] / "C"
    assert_bitwise_equal(weights(a), weights(c))
    assert log(c) == log(a)
    assert sorted(p.name for p in (c / "checkpoints").iterdir()) == ["step_000006", "step_000009", "step_000012"]
