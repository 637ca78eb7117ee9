"""rs_shared.training.config: YAML + overrides + --help for dataclass trees, and the training configs."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

import pytest

from rs_shared.training.config import (
    ConfigError,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_to_dict,
    load_config,
    parse_config,
    resolve_config_argument,
    save_config,
    validate_config,
)


@dataclass
class ModelConfig:
    """Model options of a package."""

    width: int = field(default=32, metadata={"help": "hidden width"})
    use_icip: bool = field(default=True, metadata={"help": "enable ICIP prompts"})
    backbone: Literal["swin-b", "swin-t"] = field(default="swin-b", metadata={"help": "backbone variant"})
    dropout: float | None = field(default=None, metadata={"help": "dropout, none = the backbone's own"})
    out_indices: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "stages returned"})


@dataclass
class DataConfig:
    root: str = field(metadata={"help": "dataset root (required)"})
    splits: tuple[str, ...] = field(default=("train",), metadata={"help": "splits to read"})


@dataclass
class RunConfig:
    """A package's CLI config: the shared training options plus its own sections."""

    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "training loop"})
    model: ModelConfig = field(default_factory=lambda: ModelConfig(width=64), metadata={"help": "model"})
    data: DataConfig = field(default_factory=lambda: DataConfig(root="data/"), metadata={"help": "data"})


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def leaf_keys(cls, prefix=""):
    """(dotted key, dataclass field) of every leaf of a config tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


# --- the training configs -----------------------------------------------------------------------------


def test_training_config_fields_and_defaults_follow_the_contract():
    t = TrainConfig()
    assert (t.output_dir, t.seed, t.max_steps, t.epochs, t.batch_size, t.grad_accum, t.clip_grad_norm,
            t.mixed_precision, t.num_workers, t.log_every, t.eval_every, t.save_every, t.keep_last, t.resume,
            t.tensorboard) == ("runs/train", 0, 0, 1, 8, 1, 0.0, "no", 0, 10, 0, 0, 3, "", True)
    o = t.optim
    assert (o.name, o.lr, o.weight_decay, o.betas, o.eps, o.momentum, o.nesterov, o.no_decay) == (
        "adamw", 1e-4, 0.01, (0.9, 0.999), 1e-8, 0.9, False, ("bias", "norm"))
    s = t.schedule
    assert (s.name, s.warmup_steps, s.warmup_start, s.power, s.min_lr, s.interval, s.warmup_mode) == (
        "constant", 0, 0.0, 0.9, 0.0, "step", "linear")
    for key, f in leaf_keys(RunConfig):
        assert f.metadata.get("help"), f"{key} has no help text"
    assert load_config(TrainConfig) == TrainConfig()


@pytest.mark.parametrize("override, key, problem", [
    ("mixed_precision=fp8", "mixed_precision", "expected one of 'no', 'bf16', 'fp16', got 'fp8'"),
    ("keep_last=0", "keep_last", "must be >= 1"),
    ("grad_accum=0", "grad_accum", "must be >= 1"),
    ("batch_size=0", "batch_size", "must be >= 1"),
    ("max_steps=-1", "max_steps", "must be >= 0"),
    ("optim.name=adam", "optim.name", "expected one of 'adamw', 'sgd', got 'adam'"),
    ("optim.betas=0.9,1.5", "optim.betas", "[0, 1)"),
    ("schedule.name=linear", "schedule.name", "expected one of 'constant', 'poly', 'cosine'"),
    ("schedule.interval=iter", "schedule.interval", "expected one of 'step', 'epoch'"),
    ("schedule.warmup_mode=exp", "schedule.warmup_mode", "expected one of 'linear', 'constant'"),
])
def test_validation_names_the_source_and_key(override, key, problem):
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, overrides=[override])
    assert str(info.value).startswith(f"command line: {key}: ")
    assert problem in str(info.value)
    assert info.value.key == key


def test_validate_config_checks_configs_built_in_code():
    validate_config(RunConfig())
    with pytest.raises(ConfigError, match=r"^train\.optim\.nesterov: Nesterov momentum needs momentum > 0"):
        validate_config(RunConfig(train=TrainConfig(optim=OptimConfig(name="sgd", momentum=0.0, nesterov=True))))


# --- YAML, overrides, precedence -------------------------------------------------------------------------


def test_yaml_then_overrides_with_precedence(tmp_path):
    path = write(tmp_path / "refsegrs.yaml", """
train:
  seed: 2014
  epochs: 40
  optim:
    lr: 3e-5          # YAML 1.1 reads this as a string; it is converted from the annotation
    betas: [0.9, 0.98]
  schedule: {name: poly, power: 0.9}
model:
  use_icip: no
data:
  root: /data/refsegrs
""")
    config = load_config(RunConfig, path, ["train.optim.lr=1e-4", "--train.seed", "7", "--model.width=128"])
    assert config.train.optim.lr == 1e-4  # command line beats YAML
    assert config.train.seed == 7 and config.model.width == 128
    assert config.train.epochs == 40 and config.train.optim.betas == (0.9, 0.98)  # YAML beats defaults
    assert config.train.schedule.name == "poly" and config.model.use_icip is False
    assert config.data.root == "/data/refsegrs"
    assert config.train.batch_size == 8 and config.train.optim.eps == 1e-8  # untouched defaults
    assert config.model.out_indices == [1, 2, 3]


def test_default_factories_of_sections_are_the_defaults(tmp_path):
    config = load_config(RunConfig, write(tmp_path / "c.yaml", "model: {use_icip: false}\n"))
    assert config.model.width == 64  # from RunConfig's default_factory, not ModelConfig's own default 32
    assert config.data.root == "data/"


def test_empty_file_and_empty_section(tmp_path):
    assert load_config(RunConfig, write(tmp_path / "empty.yaml", "")) == RunConfig()
    assert load_config(RunConfig, write(tmp_path / "section.yaml", "train:\n  optim:\n")) == RunConfig()


@pytest.mark.parametrize("key, text, expected", [
    ("train.seed", "3", 3),
    ("train.seed", " 12 ", 12),
    ("train.optim.lr", "3e-5", 3e-5),
    ("train.optim.lr", "0.001", 0.001),
    ("train.optim.lr", "2", 2.0),
    ("train.clip_grad_norm", "inf", float("inf")),
    *[("train.tensorboard", text, value) for text, value in
      [("true", True), ("True", True), ("yes", True), ("1", True), ("false", False), ("NO", False), ("0", False)]],
    ("train.resume", "auto", "auto"),
    ("train.resume", "", ""),
    ("train.mixed_precision", "no", "no"),
    ("model.backbone", "swin-t", "swin-t"),
    ("train.optim.betas", "0.9,0.95", (0.9, 0.95)),
    ("train.optim.betas", "[0.9, 0.95]", (0.9, 0.95)),
    ("train.optim.betas", "(0.5,0.5)", (0.5, 0.5)),
    ("train.optim.no_decay", "bias, norm,pos_embed", ("bias", "norm", "pos_embed")),
    ("train.optim.no_decay", "bias", ("bias",)),
    ("train.optim.no_decay", "", ()),
    ("train.optim.no_decay", "[]", ()),
    ("model.out_indices", "0,3", [0, 3]),
    ("model.dropout", "none", None),
    ("model.dropout", "null", None),
    ("model.dropout", "0.1", 0.1),
    ("data.splits", "train,val", ("train", "val")),
])
def test_command_line_text_is_converted_from_the_annotation(key, text, expected):
    config = load_config(RunConfig, overrides=[f"{key}={text}"])
    section, _, name = key.rpartition(".")
    obj = config
    for part in section.split("."):
        obj = getattr(obj, part)
    value = getattr(obj, name)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("yaml_value, expected", [
    ("[0.9, 0.95]", (0.9, 0.95)), ("'0.9,0.95'", (0.9, 0.95)), ("[0, 0]", (0.0, 0.0)),
])
def test_yaml_values_are_converted_too(tmp_path, yaml_value, expected):
    config = load_config(TrainConfig, write(tmp_path / "c.yaml", f"optim:\n  betas: {yaml_value}\n"))
    assert config.optim.betas == expected and all(type(b) is float for b in config.optim.betas)


@pytest.mark.parametrize("key, text, problem", [
    ("train.seed", "1.5", "expected an integer, got '1.5'"),
    ("train.optim.lr", "fast", "expected a float, got 'fast'"),
    ("train.tensorboard", "maybe", "expected a boolean (true/false/yes/no/1/0), got 'maybe'"),
    ("model.backbone", "vit", "expected one of 'swin-b', 'swin-t', got 'vit'"),
    ("train.optim.betas", "0.9", "expected 2 comma-separated values (float, float), got '0.9'"),
    ("train.optim.betas", "0.9,x", "expected 2 comma-separated values (float, float), got '0.9,x'"),
    ("model.out_indices", "1,two", "expected comma-separated int values (empty for none), got '1,two'"),
    ("model.dropout", "high", "expected a float or none, got 'high'"),
])
def test_bad_values_name_the_key_and_the_expected_type(key, text, problem):
    with pytest.raises(ConfigError) as info:
        load_config(RunConfig, overrides=[f"--{key}", text])
    assert str(info.value) == f"command line: {key}: {problem}"


def test_yaml_errors_name_the_file_and_the_dotted_key(tmp_path):
    def error(text, cls=RunConfig):
        path = write(tmp_path / "refsegrs.yaml", text)
        with pytest.raises(ConfigError) as info:
            load_config(cls, path)
        assert str(info.value).startswith(f"{path}: ")
        return str(info.value)

    assert error("train:\n  optim:\n    lrr: 1e-4\n").endswith(
        "refsegrs.yaml: train.optim.lrr: unknown key; did you mean 'train.optim.lr'?")
    assert error("train:\n  optm:\n    lr: 1e-4\n").endswith(
        "train.optm: unknown key; did you mean 'train.optim'?")
    assert error("train:\n  lr: 1e-4\n").endswith("train.lr: unknown key; did you mean 'train.optim.lr'?")
    assert error("train:\n  zzz: 1\n").endswith("train.zzz: unknown key")
    assert error("train:\n  optim:\n    lr: fast\n").endswith("train.optim.lr: expected a float, got 'fast'")
    assert error("train:\n  mixed_precision: no\n").endswith(
        "train.mixed_precision: expected a string, got bool False; quote it in YAML to keep it text")
    assert error("model:\n  backbone: 3\n").endswith("quote it in YAML to keep it text")
    assert error("train:\n  optim: 3\n").endswith(
        "train.optim: is a section: expected a mapping of its keys, got int 3")
    assert error("train:\n  keep_last: 0\n").endswith("train.keep_last: must be >= 1, got 0")
    assert "invalid YAML" in error("train: {seed: 1\n")
    assert error("- 1\n- 2\n").endswith("expected a mapping of keys at the top level, got list [1, 2]")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(RunConfig, tmp_path / "missing.yaml")


def test_required_values_and_override_syntax_errors():
    with pytest.raises(ConfigError, match=r"^root: required value missing \(set it in the YAML file or with --root\)"):
        load_config(DataConfig)
    assert load_config(DataConfig, overrides=["root=/x"]).root == "/x"
    with pytest.raises(ConfigError, match=r"^command line: train\.optim\.lrr: unknown key; did you mean"):
        load_config(RunConfig, overrides=["train.optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"^command line: train\.optim: is a section; set one of its keys, e\.g\. "
                                          r"train\.optim\.name"):
        load_config(RunConfig, overrides=["train.optim=sgd"])
    with pytest.raises(ConfigError, match=r"^command line: expected KEY=VALUE or --KEY VALUE, got 'train.seed'"):
        load_config(RunConfig, overrides=["train.seed"])
    with pytest.raises(ConfigError, match=r"^command line: '--train.seed' needs a value"):
        load_config(RunConfig, overrides=["--train.seed"])
    assert load_config(RunConfig, overrides=["--train.resume=a=b"]).train.resume == "a=b"


def test_unsupported_annotations_are_rejected():
    @dataclass
    class Bad:
        mapping: dict[str, int] = field(default_factory=dict)

    with pytest.raises(TypeError, match="unsupported config field type"):
        load_config(Bad)


# --- _base_ includes ------------------------------------------------------------------------------------------


def test_base_files_merge_key_by_key(tmp_path):
    (tmp_path / "presets").mkdir()
    write(tmp_path / "base.yaml", "train:\n  seed: 1\n  epochs: 40\n  optim: {name: sgd, lr: 0.1}\n")
    write(tmp_path / "presets" / "mid.yaml", "_base_: ../base.yaml\ntrain:\n  optim: {lr: 0.01}\n")
    path = write(tmp_path / "presets" / "run.yaml", "_base_: mid.yaml\ntrain:\n  seed: 3\n")
    config = load_config(RunConfig, path, ["train.epochs=5"])
    assert (config.train.seed, config.train.epochs) == (3, 5)
    assert (config.train.optim.name, config.train.optim.lr) == ("sgd", 0.01)


def test_base_errors_name_the_file_they_come_from(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  sed: 1\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: train\.sed: unknown key; did you mean 'train\.seed'"):
        load_config(RunConfig, write(tmp_path / "run.yaml", "_base_: base.yaml\n"))
    write(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="form a cycle"):
        load_config(RunConfig, tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match=r"nothere\.yaml: config file not found"):
        load_config(RunConfig, write(tmp_path / "c.yaml", "_base_: nothere.yaml\n"))
    with pytest.raises(ConfigError, match=r"_base_: expected the path of a YAML file, got list"):
        load_config(RunConfig, write(tmp_path / "d.yaml", "_base_: [a.yaml]\n"))


# --- saving ---------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    config = RunConfig(
        train=TrainConfig(seed=5, mixed_precision="no", resume="", clip_grad_norm=1.0,
                          optim=OptimConfig(name="sgd", lr=9e-3, betas=(0.8, 0.95), no_decay=()),
                          schedule=ScheduleConfig(name="cosine", warmup_steps=1, warmup_start=1e-5,
                                                  warmup_mode="constant", interval="epoch")),
        model=ModelConfig(width=7, use_icip=False, backbone="swin-t", dropout=0.25, out_indices=[]),
        data=DataConfig(root="yes", splits=("train", "test")),
    )
    path = tmp_path / "out" / "config.yaml"
    save_config(path, config)
    assert load_config(RunConfig, path) == config
    assert config_to_dict(config)["train"]["optim"]["betas"] == [0.8, 0.95]
    text = path.read_text()
    assert "mixed_precision: 'no'" in text and "root: 'yes'" in text  # YAML keeps these strings quoted
    assert not list(path.parent.glob(".*tmp"))


# --- command line -------------------------------------------------------------------------------------------


def test_help_lists_every_option_with_help_type_and_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping
    with pytest.raises(SystemExit) as info:
        parse_config(RunConfig, ["--help"], prog="icipnet-train", description="Train ICIPNet.")
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: icipnet-train [-h] [--config FILE] [--KEY VALUE ...]" in out and "Train ICIPNet." in out
    for key, f in leaf_keys(RunConfig):
        assert f"--{key} " in out, key
        assert f.metadata["help"] in out, key
    lines = {}  # option -> its usage and help text (argparse moves the help of long options to the next line)
    for line in out.splitlines():
        if line.startswith("  --"):
            option = line.split()[0]
            lines[option] = line
        elif line.startswith("    ") and option in lines:
            lines[option] += " " + line.strip()
    assert "--train.optim.lr FLOAT" in lines["--train.optim.lr"]
    assert "[default: 0.0001]" in lines["--train.optim.lr"]
    assert "--train.optim.betas FLOAT,FLOAT" in lines["--train.optim.betas"]
    assert "default: 0.9,0.999]" in lines["--train.optim.betas"]
    assert "default: bias,norm]" in lines["--train.optim.no_decay"]
    assert "[a boolean (true/false/yes/no/1/0); default: true]" in lines["--train.tensorboard"]
    assert "default: '']" in lines["--train.resume"]
    assert "--model.backbone {swin-b,swin-t}" in lines["--model.backbone"]
    assert "default: 64]" in lines["--model.width"]  # the section's default_factory
    assert "default: none]" in lines["--model.dropout"]
    assert "train.optim:" in out and "train.schedule:" in out  # one group per section
    with pytest.raises(SystemExit):
        parse_config(DataConfig, ["--help"])
    assert "dataset root (required) [required]" in capsys.readouterr().out


def test_parse_config_precedence_and_errors(tmp_path, capsys):
    path = write(tmp_path / "c.yaml", "train:\n  seed: 4\n  optim:\n    lr: 0.5\n")
    config = parse_config(RunConfig, ["--config", str(path), "--train.optim.lr", "0.25", "--model.use_icip", "false"])
    assert (config.train.seed, config.train.optim.lr, config.model.use_icip) == (4, 0.25, False)
    assert config.train.epochs == 1

    def fails(argv):
        with pytest.raises(SystemExit) as info:
            parse_config(RunConfig, argv, prog="x-train")
        assert info.value.code == 2
        return capsys.readouterr().err

    assert "command line: train.optim.lrr: unknown key; did you mean 'train.optim.lr'?" in fails(
        ["--train.optim.lrr", "1"])
    assert "train.optim.l: unknown key" in fails(["--train.optim.l", "1"])  # no silent abbreviations
    assert "command line: train.seed: expected an integer, got 'x'" in fails(["--train.seed", "x"])
    assert "command line: train.keep_last: must be >= 1, got 0" in fails(["--train.keep_last", "0"])
    bad = write(tmp_path / "bad.yaml", "train:\n  seed: x\n")
    assert f"{bad}: train.seed: expected an integer, got 'x'" in fails(["--config", str(bad)])
    assert "c2.yaml: config file not found" in fails(["--config", str(tmp_path / "c2.yaml")])
    assert "unrecognized arguments: stray" in fails(["stray"])


def test_add_config_arguments_composes_with_a_package_parser(tmp_path):
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    add_config_arguments(parser, RunConfig)
    args = parser.parse_args(["--device", "cuda", "--train.schedule.name", "cosine"])
    assert args.device == "cuda"
    config = config_from_args(RunConfig, args)
    assert config.train.schedule.name == "cosine" and config.train.optim.lr == 1e-4


def test_config_argument_names_a_packaged_preset(tmp_path):
    presets = tmp_path / "configs"
    presets.mkdir()
    (presets / "tiny.yaml").write_text("train: {}\n")
    own = tmp_path / "mine.yaml"
    own.write_text("train: {}\n")
    assert resolve_config_argument(["--config", "tiny", "--train.lr", "1"], presets) == [
        "--config", str(presets / "tiny.yaml"), "--train.lr", "1"]
    assert resolve_config_argument([f"--config={own}"], presets) == [f"--config={own}"]  # a file wins
    assert resolve_config_argument(["--train.lr", "1"], presets) == ["--train.lr", "1"]
    with pytest.raises(FileNotFoundError, match=r"'nope' not found.*packaged presets: tiny"):
        resolve_config_argument(["--config=nope"], presets)
