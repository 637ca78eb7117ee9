"""Two CPU processes through accelerate launch: DDP over gloo and DeepSpeed ZeRO-2 (with the bundled
accelerate configs) against one process with the doubled batch.

``training_scripts/train_mlp.py`` without dropout and data noise, so that the global batch alone decides
each step: per-process batch 2 on 2 processes must give the per-step losses and final weights of batch 4
on 1 process (float tolerance: the gradient all-reduce sums in another order). The DeepSpeed launch also
resumes, in the same processes, from its step-6 checkpoint (per-rank ZeRO partitions) and must end
bitwise equal. The three launches run concurrently. The first DeepSpeed run on a machine JIT-compiles
DeepSpeed's shm comm op into ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rs_shared.training import accelerate_config

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "training_scripts" / "train_mlp.py"
DETERMINISTIC = ["--dropout", "0", "--noise", "0", "--max-steps", "12"]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(config: str, output_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config(config)),
            "--num_processes", "2", "--main_process_port", free_port(), str(SCRIPT),
            "--output-dir", str(output_dir), "--batch-size", "2", *DETERMINISTIC, *args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                  str(Path.home() / ".cache" / "torch_extensions"))}
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    commands = {
        "one": [sys.executable, str(SCRIPT), "--output-dir", str(root / "one"), "--batch-size", "4", *DETERMINISTIC],
        "ddp": launch("ddp_cpu", root / "ddp"),
        "zero2": launch("deepspeed_zero2", root / "zero2", "--save-every", "6",
                        "--resume-output", str(root / "zero2_resumed"), "--resume-from-step", "6"),
    }
    procs = {name: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, cmd in commands.items()}
    output = {name: p.communicate(timeout=900)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name} failed:\n{output[name][-5000:]}"
    return root


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def assert_close(x: dict, y: dict) -> None:
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-5)


def test_ddp_two_processes_match_one_process_with_double_batch(runs):
    one, ddp = losses(runs / "one"), losses(runs / "ddp")
    assert len(one) == len(ddp) == 12
    assert ddp == pytest.approx(one, abs=1e-5)
    assert_close(weights(runs / "one"), weights(runs / "ddp"))


def test_deepspeed_zero2_two_processes_match_one_process(runs):
    zero2 = losses(runs / "zero2")
    assert len(zero2) == 12 and all(map(torch.isfinite, torch.tensor(zero2)))
    assert zero2 == pytest.approx(losses(runs / "one"), abs=1e-5)
    assert_close(weights(runs / "one"), weights(runs / "zero2"))
    files = {p.name for p in (runs / "zero2" / "checkpoints" / "step_000006").iterdir()}
    assert {"optimizer_rank0.safetensors", "optimizer_rank1.safetensors", "rng_rank1.json"} <= files
    assert "optimizer.json" not in files


def test_deepspeed_zero2_resume_is_exact(runs):
    full, resumed = weights(runs / "zero2"), weights(runs / "zero2_resumed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert losses(runs / "zero2_resumed") == losses(runs / "zero2")[6:]
