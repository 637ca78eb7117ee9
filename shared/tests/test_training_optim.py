"""rs_shared.training.optim: parameter groups, optimizers and learning-rate schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rs_shared.training.config import ConfigError, OptimConfig, ScheduleConfig
from rs_shared.training.optim import GroupRule, build_optimizer, build_scheduler, param_groups


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.proj = nn.Linear(8, 8)
        self.norm1 = nn.LayerNorm(8)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))


class TextEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = nn.Embedding(10, 8)
        self.layer = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
        self.LayerNorm = nn.LayerNorm(8)


class Net(nn.Module):
    """ICIPNet-shaped: a backbone, a text encoder with frozen embeddings and top layers, a decoder."""

    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.text_encoder = TextEncoder()
        self.decoder = nn.Sequential(nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
        for module in (self.text_encoder.embeddings, self.text_encoder.layer[2], self.text_encoder.layer[3]):
            module.requires_grad_(False)


def names(groups):
    return {g["name"]: g["param_names"] for g in groups}


def test_default_groups_split_decay_and_no_decay_and_skip_frozen_parameters():
    model = Net()
    groups = param_groups(model, weight_decay=0.05)
    assert names(groups) == {
        "decay": ["backbone.absolute_pos_embed", "backbone.proj.weight", "text_encoder.layer.0.weight",
                  "text_encoder.layer.1.weight", "decoder.0.weight", "decoder.2.weight"],
        "no_decay": ["backbone.relative_position_bias_table",  # a name containing "bias"
                     "backbone.proj.bias", "backbone.norm1.weight", "backbone.norm1.bias", "text_encoder.layer.0.bias",
                     "text_encoder.layer.1.bias", "text_encoder.LayerNorm.weight", "text_encoder.LayerNorm.bias",
                     "decoder.0.bias", "decoder.1.weight", "decoder.1.bias", "decoder.2.bias"],
    }
    assert [g["name"] for g in groups] == ["decay", "no_decay"]  # order of first appearance
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    trainable = [p for p in model.parameters() if p.requires_grad]
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}
    for g in groups:  # tensors and names stay aligned
        params = dict(model.named_parameters())
        assert all(params[n] is p for n, p in zip(g["param_names"], g["params"], strict=True))
    assert names(param_groups(Net(), 0.05)) == names(groups)  # deterministic


def test_no_decay_substrings_are_case_insensitive_and_configurable():
    groups = param_groups(Net(), 0.01, no_decay=("POS_EMBED", "layer.1."))
    assert names(groups)["decay"] == [
        "backbone.relative_position_bias_table", "backbone.proj.weight", "text_encoder.layer.0.weight",
        "decoder.0.weight", "decoder.2.weight"]
    assert names(groups)["no_decay"][:2] == ["backbone.absolute_pos_embed", "backbone.proj.bias"]
    assert "text_encoder.layer.1.weight" in names(groups)["no_decay"]


def test_icipnet_rules_reproduce_the_official_groups():
    rules = [GroupRule(r"^backbone\..*(norm|absolute_pos_embed|relative_position_bias_table)", weight_decay=0.0),
             GroupRule(r"", weight_decay=0.01)]
    groups = param_groups(Net(), 0.01, rules=rules)
    assert [(g["name"], g["weight_decay"], g["lr_scale"]) for g in groups] == [("rule0", 0.0, 1.0),
                                                                                 ("rule1", 0.01, 1.0)]
    assert names(groups)["rule0"] == ["backbone.absolute_pos_embed", "backbone.relative_position_bias_table",
                                      "backbone.norm1.weight", "backbone.norm1.bias"]
    assert "backbone.proj.bias" in names(groups)["rule1"] and "decoder.1.bias" in names(groups)["rule1"]
    assert not any(n.startswith(("text_encoder.embeddings", "text_encoder.layer.2", "text_encoder.layer.3"))
                   for g in groups for n in g["param_names"])


def test_lr_scale_rules_keep_the_default_split_and_scale_the_lr():
    model = Net()
    rules = [GroupRule(r"^text_encoder\.", lr_scale=0.1), GroupRule(r"^decoder\.0\.", weight_decay=0.5)]
    optimizer = build_optimizer(model, OptimConfig(lr=2e-4, weight_decay=0.05), rules=rules)
    got = [(g["name"], g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups]
    assert got == [("decay", 2e-4, 0.05, 3), ("no_decay", 2e-4, 0.0, 7), ("rule0/decay", 2e-5, 0.05, 2),
                   ("rule0/no_decay", 2e-5, 0.0, 4), ("rule1", 2e-4, 0.5, 2)]


def test_group_errors():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="Linear has no trainable parameters"):
        param_groups(frozen, 0.01)
    with pytest.raises(ValueError, match="not a valid regex"):
        GroupRule("(")
    with pytest.raises(ValueError, match="lr_scale must be >= 0"):
        GroupRule("x", lr_scale=-1)
    with pytest.raises(ValueError, match="pass the model"):
        build_optimizer([{"params": list(Net().parameters())}], OptimConfig(), rules=[GroupRule("x")])


def test_optimizer_hyperparameters_land_in_the_optimizer():
    model = Net()
    sgd = build_optimizer(model, OptimConfig(name="sgd", lr=0.009, momentum=0.8, nesterov=True,
                                             weight_decay=5e-4))
    assert isinstance(sgd, torch.optim.SGD)
    for g in sgd.param_groups:
        assert (g["lr"], g["momentum"], g["nesterov"], g["dampening"]) == (0.009, 0.8, True, 0)
    assert [g["weight_decay"] for g in sgd.param_groups] == [5e-4, 0.0]

    adamw = build_optimizer(model, OptimConfig(lr=3e-5, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1))
    assert isinstance(adamw, torch.optim.AdamW)
    for g in adamw.param_groups:
        assert (g["lr"], g["betas"], g["eps"], g["amsgrad"]) == (3e-5, (0.9, 0.95), 1e-6, False)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]
    assert adamw.state_dict()["param_groups"][0]["param_names"][0] == "backbone.absolute_pos_embed"

    ready = build_optimizer([{"params": [model.decoder[0].weight], "lr": 1.0}, {"params": [model.decoder[0].bias]}],
                            OptimConfig(name="sgd", lr=0.5, weight_decay=0.2))
    assert [(g["lr"], g["weight_decay"]) for g in ready.param_groups] == [(1.0, 0.2), (0.5, 0.2)]
    with pytest.raises(ConfigError, match="name: expected one of 'adamw', 'sgd', got 'adam'"):
        build_optimizer(model, OptimConfig(name="adam"))


# --- schedules ------------------------------------------------------------------------------------------------


def make(lr, schedule, total, steps_per_epoch=1, name="sgd", rules=None):
    optimizer = build_optimizer(nn.Linear(2, 2), OptimConfig(name=name, lr=lr), rules=rules)
    return optimizer, build_scheduler(optimizer, schedule, total, steps_per_epoch)


def run(optimizer, scheduler, steps):
    """The lr of each group used by the next ``steps`` optimizer steps (the loop's contract)."""
    used = []
    for _ in range(steps):
        used.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return used


def lrs(lr, schedule, total, steps_per_epoch=1):
    return [step[0] for step in run(*make(lr, schedule, total, steps_per_epoch), total)]


def test_poly_per_step_icipnet():
    got = lrs(3e-5, ScheduleConfig(name="poly", power=0.9), total=100)
    for k in (0, 1, 37, 50, 99):
        assert got[k] == pytest.approx(3e-5 * (1 - k / 100) ** 0.9, rel=1e-12, abs=0)
    assert got[50] == pytest.approx(1.6076601e-5, rel=1e-7)


def test_poly_per_epoch_with_a_floor():
    got = lrs(0.1, ScheduleConfig(name="poly", power=2.0, min_lr=0.01, interval="epoch"), total=50, steps_per_epoch=10)
    for k in (0, 9, 10, 25, 49):
        assert got[k] == pytest.approx(0.01 + 0.09 * (1 - (k // 10) / 5) ** 2, rel=1e-12)
    assert got[:10] == [0.1] * 10 and got[40] == pytest.approx(0.01 + 0.09 * 0.04)


def test_cosine_with_linear_warmup_per_step_clvnet():
    got = lrs(3e-4, ScheduleConfig(name="cosine", warmup_steps=150), total=1000)
    assert got[0] == 0.0
    assert got[75] == pytest.approx(1.5e-4, rel=1e-12)
    assert got[149] == pytest.approx(3e-4 * 149 / 150, rel=1e-12)
    assert got[150] == pytest.approx(3e-4, rel=1e-12)
    assert got[575] == pytest.approx(1.5e-4, rel=1e-12)  # half-way through the 850 cosine steps
    assert got[999] == pytest.approx(3e-4 * (1 + math.cos(math.pi * 849 / 850)) / 2, rel=1e-12)


def test_cosine_floor_and_warmup_start():
    got = lrs(1.0, ScheduleConfig(name="cosine", warmup_steps=10, warmup_start=0.1, min_lr=0.2), total=110)
    assert got[0] == pytest.approx(0.1) and got[5] == pytest.approx(0.55) and got[10] == pytest.approx(1.0)
    assert got[60] == pytest.approx(0.6) and got[109] == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi * 0.99)) / 2)


def test_constant_schedule_with_and_without_warmup():
    assert lrs(0.5, ScheduleConfig(), total=5) == [0.5] * 5
    got = lrs(0.5, ScheduleConfig(warmup_steps=4), total=8)
    assert got == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5])


BIMORS_EPOCH_LRS = [1e-5, 0.009, 0.008780, 0.008141, 0.007145, 0.005891, 0.0045, 0.003109, 0.001855, 0.000859]


def test_bimors_constant_warmup_then_per_epoch_cosine():
    schedule = ScheduleConfig(name="cosine", interval="epoch", warmup_steps=1, warmup_mode="constant",
                              warmup_start=1e-5)
    got = lrs(0.009, schedule, total=10 * 76, steps_per_epoch=76)
    for epoch, expected in enumerate(BIMORS_EPOCH_LRS):  # bimors.md §2, rounded to 6 decimals there
        assert got[epoch * 76:(epoch + 1) * 76] == [got[epoch * 76]] * 76  # changes at epoch boundaries only
        assert got[epoch * 76] == pytest.approx(expected, abs=5e-7)
    assert got[0] == pytest.approx(1e-5, rel=1e-12)
    assert got[2 * 76] == pytest.approx(0.009 * (1 + math.cos(math.pi / 10)) / 2, rel=1e-12)


def test_lr_scale_scales_every_part_of_the_schedule():
    schedule = ScheduleConfig(name="cosine", warmup_steps=2, warmup_mode="constant", warmup_start=1e-3, min_lr=0.01)
    optimizer, scheduler = make(0.1, schedule, total=10, rules=[GroupRule("bias", lr_scale=0.5)])
    used = run(optimizer, scheduler, 10)
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "rule0/no_decay"]
    for step in used:
        assert step[1] == pytest.approx(0.5 * step[0], rel=1e-12)
    assert used[0] == pytest.approx([1e-3, 5e-4])
    assert used[2][0] == pytest.approx(0.1)
    assert used[7][0] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi / 2)) / 2)


@pytest.mark.parametrize("optimizer_first", [True, False])
def test_state_dict_round_trip_continues_the_same_curve(optimizer_first):
    schedule = ScheduleConfig(name="cosine", warmup_steps=5, interval="epoch", min_lr=1e-4)

    def fresh():
        torch.manual_seed(0)
        return make(0.01, schedule, total=60, steps_per_epoch=3, name="adamw",
                    rules=[GroupRule("bias", lr_scale=2.0)])

    reference = run(*fresh(), 60)
    optimizer, scheduler = fresh()
    assert run(optimizer, scheduler, 37) == reference[:37]
    opt_state = optimizer.state_dict()
    sched_state = json.loads(json.dumps(scheduler.state_dict()))  # plain numbers: stored without pickle

    optimizer, scheduler = fresh()
    if optimizer_first:
        optimizer.load_state_dict(opt_state)
        scheduler.load_state_dict(sched_state)
    else:
        scheduler.load_state_dict(sched_state)
        optimizer.load_state_dict(opt_state)
    assert run(optimizer, scheduler, 23) == reference[37:]


def test_scheduler_argument_errors():
    optimizer = build_optimizer(nn.Linear(2, 2), OptimConfig())
    with pytest.raises(ValueError, match="total_steps and steps_per_epoch must be >= 1"):
        build_scheduler(optimizer, ScheduleConfig(), 0, 1)
    with pytest.raises(ConfigError, match="interval: expected one of 'step', 'epoch', got 'iter'"):
        build_scheduler(optimizer, ScheduleConfig(interval="iter"), 10, 1)
