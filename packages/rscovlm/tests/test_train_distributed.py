"""Two CPU processes of DeepSpeed ZeRO-1 (gloo) training the tiny model through ``accelerate launch`` with the
shared ``deepspeed_zero1`` config (the paper preset's parallelism, §1), a few steps. The first DeepSpeed run on a
machine JIT-compiles its shm comm op into ``TORCH_EXTENSIONS_DIR`` (about 90 s, then cached)."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rs_shared.training import accelerate_config
from rscovlm import cli_train
from rscovlm.mixture import ensure_synthetic_sft
from rscovlm.model_factory import load_pretrained

pytestmark = pytest.mark.slow


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_deepspeed_zero1_two_processes(tmp_path):
    data = tmp_path / "sft"
    ensure_synthetic_sft(data, 16, seed=0)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(accelerate_config("deepspeed_zero1")), "--num_processes", "2", "--main_process_port", free_port(),
               cli_train.__file__, "--config", "tiny-synthetic", "--train.output_dir", str(out),
               "--data.synthetic_dir", str(data), "--data.synthetic_n", "16", "--train.batch_size", "2",
               "--train.max_steps", "4", "--train.log_every", "1", "--train.save_every", "2",
               "--eval.tasks", "cls", "--eval.synthetic_samples", "2", "--eval.max_new_tokens", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                  str(Path.home() / ".cache" / "torch_extensions"))}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert done.stdout.count("trained 4 steps on 16 mixture samples (2 process(es))") == 1  # main process only
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in log)
    files = {p.name for p in (out / "checkpoints" / "step_000004").iterdir()}
    assert {"optimizer_rank0.safetensors", "optimizer_rank1.safetensors", "model.safetensors"} <= files
    assert load_pretrained(out / "model").model.config.model_type == "qwen2_5_vl"
