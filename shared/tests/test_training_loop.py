"""rs_shared.training.loop and checkpoint: learning, logging, checkpoint files, data order (in-process)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from rs_shared.training import (
    CheckpointError,
    EpochBatchSampler,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    build_accelerator,
    checkpoint_problem,
    list_checkpoints,
    resolve_resume,
    train,
)
from rs_shared.training.checkpoint import flatten_state, load_state, rng_state, save_state, set_rng_state


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; each run here may choose another precision."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def blobs(n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two well separated Gaussian blobs in 2-D, labels 0/1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.5 + 3.0 * (2 * y[:, None] - 1)
    return list(zip(x, y))


def step_fn(model, batch):
    x, y = batch
    logits = model(x)
    return torch.nn.functional.cross_entropy(logits, y), {"accuracy": (logits.argmax(-1) == y).float().mean()}


def config(tmp_path, **kw) -> TrainConfig:
    defaults = dict(output_dir=str(tmp_path / "run"), max_steps=10, batch_size=8, log_every=1, tensorboard=False,
                    optim=OptimConfig(lr=0.1, weight_decay=0.0))
    return TrainConfig(**{**defaults, **kw})


def linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(2, 2)


def read_log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_loss_falls_tenfold_on_separable_blobs(tmp_path):
    cfg = config(tmp_path, max_steps=40, schedule=ScheduleConfig(name="cosine", warmup_steps=3))
    result = train(cfg, linear(), blobs(), step_fn)
    losses = [r["loss"] for r in read_log(tmp_path / "run")]
    assert result.step == 40 and len(losses) == 40
    assert losses[-1] * 10 <= losses[0], losses
    assert result.logs["accuracy"] == 1.0


def test_logs_tensorboard_eval_keep_last_and_final_weights(tmp_path):
    evals = []

    def eval_fn(model, accelerator):
        assert not model.training and not torch.is_grad_enabled()
        evals.append(1)
        return {"score": float(len(evals))}

    cfg = config(tmp_path, max_steps=10, log_every=3, save_every=2, keep_last=2, eval_every=4, tensorboard=True)
    result = train(cfg, linear(), blobs(32), step_fn, eval_fn=eval_fn)
    run = tmp_path / "run"

    log = read_log(run)
    assert [r["step"] for r in log] == [3, 4, 6, 8, 9, 10]  # every 3 steps, plus eval steps and the end
    for r in log:
        assert {"step", "epoch", "lr", "loss", "logs", "time"} <= r.keys()
        assert r["lr"] == pytest.approx(0.1) and np.isfinite(r["loss"]) and "accuracy" in r["logs"]
    assert [r.get("eval") for r in log if "eval" in r] == [{"score": 1.0}, {"score": 2.0}, {"score": 3.0}]
    assert log[3]["epoch"] == 2.0  # 32 samples / batch 8: 4 steps per epoch
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    assert [p.name for p in list_checkpoints(run)] == ["step_000008", "step_000010"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert result.checkpoint == run / "checkpoints" / "step_000010"
    state = json.loads((result.checkpoint / "trainer_state.json").read_text())
    assert state["step"] == 10 and state["eval_history"][-1] == {"step": 10, "score": 3.0}
    assert json.loads((result.checkpoint / "config.json").read_text())["optim"]["lr"] == 0.1

    final = load_file(result.model_path)
    ckpt = load_file(result.checkpoint / "model.safetensors")
    assert final.keys() == {"weight", "bias"} and all(torch.equal(final[k], ckpt[k]) for k in final)


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    small = train(config(tmp_path / "a", batch_size=4, grad_accum=4, max_steps=6), linear(), blobs(), step_fn)
    AcceleratorState._reset_state(reset_partial_state=True)
    large = train(config(tmp_path / "b", batch_size=16, max_steps=6), linear(), blobs(), step_fn)
    a, b = load_file(small.model_path), load_file(large.model_path)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    la, lb = (read_log(tmp_path / d / "run") for d in "ab")
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], abs=1e-6)


def test_bf16_autocast_and_clipping_run(tmp_path):
    cfg = config(tmp_path, max_steps=4, mixed_precision="bf16", clip_grad_norm=0.5)
    result = train(cfg, linear(), blobs(), step_fn)
    assert result.step == 4 and np.isfinite(result.logs["loss"]) and "grad_norm" in result.logs


def test_runs_of_one_process_may_change_precision(tmp_path):
    # accelerate alone refuses a second precision in one process; a notebook or pytest session trains several
    for k, precision in enumerate(("no", "bf16", "no")):
        assert build_accelerator(config(tmp_path, mixed_precision=precision)).mixed_precision == precision
        result = train(config(tmp_path / str(k), max_steps=2, mixed_precision=precision), linear(), blobs(), step_fn)
        assert result.step == 2 and np.isfinite(result.logs["loss"])


def test_resume_from_incomplete_checkpoint_is_a_clear_error(tmp_path):
    cfg = config(tmp_path, max_steps=4, save_every=2)
    train(cfg, linear(), blobs(), step_fn)
    ckpt = tmp_path / "run" / "checkpoints" / "step_000002"
    (ckpt / "complete.json").unlink()
    with pytest.raises(CheckpointError, match=r"step_000002.*complete\.json is missing"):
        train(config(tmp_path, max_steps=6, resume=str(ckpt)), linear(), blobs(), step_fn)
    with pytest.raises(CheckpointError, match="no such directory"):
        resolve_resume(str(tmp_path / "nowhere"), tmp_path / "run")
    # "auto" skips it and takes the newest complete one
    assert resolve_resume("auto", tmp_path / "run").name == "step_000004"
    assert resolve_resume("auto", tmp_path / "empty") is None and resolve_resume("", tmp_path / "run") is None


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    first = train(config(tmp_path, max_steps=4), linear(), blobs(), step_fn)
    weights = load_file(first.model_path)
    AcceleratorState._reset_state(reset_partial_state=True)
    again = train(config(tmp_path, max_steps=4, resume="auto"), torch.nn.Linear(2, 2), blobs(), step_fn)
    assert again.step == 4 and again.checkpoint == first.checkpoint
    assert all(torch.equal(weights[k], v) for k, v in load_file(again.model_path).items())
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2, 3, 4]


def test_the_seed_fixes_the_weights_of_a_model_built_after_the_accelerator(tmp_path):
    def built(seed: int) -> torch.Tensor:
        torch.manual_seed(int(torch.randint(1 << 30, ())))  # whatever state the process happens to be in
        build_accelerator(config(tmp_path, seed=seed))
        return torch.nn.Linear(4, 4).weight.detach().clone()

    first = built(3)
    assert torch.equal(built(3), first) and not torch.equal(built(4), first)


def test_too_few_batches_for_one_step(tmp_path):
    with pytest.raises(ValueError, match="fewer than grad_accum=4"):
        train(config(tmp_path, batch_size=8, grad_accum=4), linear(), blobs(16), step_fn)


def test_fsdp_on_cpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match="FSDP does not work on CPU"):
        build_accelerator(config(tmp_path))


# --------------------------------------------------------------------------- checkpoint pieces


def test_checkpoint_problems_are_named(tmp_path):
    train(config(tmp_path, max_steps=2, save_every=1, keep_last=5), linear(), blobs(), step_fn)
    root = tmp_path / "run" / "checkpoints"
    assert checkpoint_problem(root / "step_000001") is None
    with open(root / "step_000001" / "model.safetensors", "ab") as f:
        f.write(b"x")
    assert "model.safetensors has" in checkpoint_problem(root / "step_000001")
    (root / "step_000002" / "complete.json").write_text("{trunc")
    assert "unreadable" in checkpoint_problem(root / "step_000002")
    (root / ".tmp-step_000003").mkdir()
    assert list_checkpoints(tmp_path / "run") == []


def test_nested_state_round_trip_without_pickle(tmp_path):
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(4.0)}, 1: {}},
             "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0, 1], "name": None, "flag": True}],
             "__odd": [1.5, float("inf")]}
    files = save_state(tmp_path, "opt", state)
    assert files == ["opt.json", "opt.safetensors"]
    back = load_state(tmp_path, "opt")
    assert back["state"][0]["exp_avg"].equal(state["state"][0]["exp_avg"]) and back["state"][1] == {}
    assert back["param_groups"] == state["param_groups"] and back["__odd"] == state["__odd"]
    assert isinstance(back["param_groups"][0]["betas"], tuple)
    with pytest.raises(TypeError, match=r"cannot store a object at 'x\.0'"):
        flatten_state({"x": [object()]})


def test_rng_state_round_trip():
    saved = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(*saved)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


# --------------------------------------------------------------------------- data order


def test_sampler_splits_global_batches_across_processes_and_wraps():
    one = EpochBatchSampler(10, 4, seed=3)
    two = [EpochBatchSampler(10, 2, num_processes=2, process_index=r, seed=3) for r in range(2)]
    for s in (one, *two):
        s.set_epoch(1)
    batches = list(one)
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)
    assert batches == [a + b for a, b in zip(*two)]
    order = one.order().tolist()
    assert sorted(order) == list(range(10)) and batches[2] == order[8:] + order[:2]  # wrap-around


def test_sampler_reshuffles_per_epoch_skips_by_offset_and_keeps_global_rng():
    s = EpochBatchSampler(12, 3, seed=0)
    s.set_epoch(0)
    epoch0 = list(s)
    s.set_epoch(1)
    assert list(s) != epoch0
    s.set_epoch(0, start=6)
    assert list(s) == epoch0[2:]
    before = torch.get_rng_state()
    s.set_epoch(5)
    list(s)
    assert torch.equal(before, torch.get_rng_state())


def test_one_output_dir_holds_one_run(tmp_path):
    train(config(tmp_path, max_steps=4, save_every=2), linear(), blobs(), step_fn)
    with pytest.raises(CheckpointError, match=r"already holds checkpoints \(step_000002, step_000004\).*resume='auto'"):
        train(config(tmp_path, max_steps=4), linear(), blobs(), step_fn)
    older = tmp_path / "run" / "checkpoints" / "step_000002"
    with pytest.raises(CheckpointError, match=r"holds newer checkpoints \(step_000004\)"):
        train(config(tmp_path, max_steps=4, resume=str(older)), linear(), blobs(), step_fn)
    # into another output_dir it is fine, and continues exactly
    other = train(config(tmp_path, output_dir=str(tmp_path / "branch"), max_steps=4, resume=str(older)),
                  linear(), blobs(), step_fn)
    a, b = load_file(tmp_path / "run" / "final" / "model.safetensors"), load_file(other.model_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_set_epoch_is_called_before_every_epoch_and_on_resume(tmp_path):
    class EpochAware(list):
        def __init__(self, items):
            super().__init__(items)
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    data = EpochAware(blobs(32))  # 4 steps per epoch at batch 8
    train(config(tmp_path, max_steps=10, save_every=5), linear(), data, step_fn)
    assert data.epochs == [0, 1, 2]
    resumed = EpochAware(blobs(32))
    train(config(tmp_path, max_steps=12, resume=str(tmp_path / "run" / "checkpoints" / "step_000010")),
          linear(), resumed, step_fn)
    assert resumed.epochs == [2]  # step 10 is mid-epoch 2; steps 11-12 finish it
