"""Training configuration as typed dataclasses: YAML files, ``--key value`` overrides and ``--help``.

A configuration is a tree of dataclasses whose typed fields carry ``metadata={"help": ...}`` (their
``--help`` text). A key is the dotted path through the tree (``train.optim.lr``). Values resolve with the
precedence *field defaults < YAML file < command line*::

    @dataclass
    class RunConfig:
        train: TrainConfig = field(default_factory=TrainConfig)
        model: ModelConfig = field(default_factory=ModelConfig.tiny)

    config = load_config(RunConfig, "configs/refsegrs.yaml", ["train.optim.lr=3e-5", "--train.seed", "1"])
    config = parse_config(RunConfig, prog="icipnet-train")  # --config FILE plus one --a.b.c per leaf

YAML is read with ``yaml.safe_load``. A file may build on another one with a top-level
``_base_: other.yaml`` (relative to the including file; bases may chain, cycles are errors); its own
values override the base's key by key.

Values given as text (command line, or YAML scalars such as ``3e-5`` that YAML 1.1 reads as strings)
are converted according to the annotation: ``int``; ``float`` (``3e-5``, ``inf``); ``bool``
(true/false/yes/no/1/0); ``str``; ``Literal[...]`` (one of its choices); ``tuple[float, float]``,
``tuple[str, ...]``, ``list[int]`` (a YAML list, or comma-separated text ``0.9,0.95``, where empty text
is an empty sequence); ``X | None`` (``none`` or ``null`` give None).

After loading, every dataclass in the tree that defines ``validate(self)`` is checked, innermost first.
``validate`` raises :class:`ConfigError` with ``key`` set to the field name (or a ``ValueError``). Every
problem surfaces as a :class:`ConfigError` naming where the value came from and its dotted key, e.g.
``refsegrs.yaml: train.optim.lrr: unknown key; did you mean 'train.optim.lr'?``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "ConfigError", "OptimConfig", "ScheduleConfig", "TrainConfig", "add_config_arguments", "config_from_args",
    "config_to_dict", "load_config", "parse_config", "resolve_preset", "save_config",
    "validate_config",
]

T = TypeVar("T")

COMMAND_LINE = "command line"
_BASE_KEY = "_base_"
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_DEST = "config:"  # argparse dest prefix of the per-leaf options
_SCALARS = {int: "int", float: "float", bool: "bool", str: "str"}


class ConfigError(ValueError):
    """A configuration value is unknown, malformed or invalid.

    ``str(error)`` is ``"<source>: <dotted key>: <problem>"``, where the source is the YAML file or
    ``"command line"``, e.g. ``refsegrs.yaml: train.optim.lr: expected a float, got 'fast'``.
    """

    def __init__(self, problem: str, key: str = "", source: str = ""):
        self.problem, self.key, self.source = problem, key, source
        super().__init__(problem)

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.key, self.problem) if part)


# ---------------------------------------------------------------------------------------------------------
# The shared training configuration (field names are the contract with rs_shared.training.loop)

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "poly", "cosine")
WARMUP_MODES = ("linear", "constant")
INTERVALS = ("step", "epoch")
MIXED_PRECISION = ("no", "bf16", "fp16")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _require(condition: bool, key: str, problem: str) -> None:
    if not condition:
        raise ConfigError(problem, key)


def _require_choice(value: object, choices: Sequence[object], key: str) -> None:
    _require(value in choices, key, f"expected one of {_quoted(choices)}, got {value!r}")


@dataclass
class OptimConfig:
    """Optimizer (see rs_shared.training.optim.build_optimizer)."""

    name: str = field(default="adamw", metadata=_help("optimizer: adamw | sgd"))
    lr: float = field(default=1e-4, metadata=_help("peak learning rate (reached after warm-up)"))
    weight_decay: float = field(default=0.01, metadata=_help(
        "weight decay of decaying parameters; no-decay parameters get 0"))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_help("AdamW (beta1, beta2)"))
    eps: float = field(default=1e-8, metadata=_help("AdamW epsilon"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum"))
    nesterov: bool = field(default=False, metadata=_help("SGD: use Nesterov momentum"))
    no_decay: tuple[str, ...] = field(default=("bias", "norm"), metadata=_help(
        "parameter-name substrings (case-insensitive) that get weight decay 0; 1-D parameters always do"))

    def validate(self) -> None:
        _require_choice(self.name, OPTIMIZERS, "name")
        _require(self.lr >= 0, "lr", f"must be >= 0, got {self.lr}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(all(0 <= b < 1 for b in self.betas), "betas", f"each must be in [0, 1), got {self.betas}")
        _require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        _require(self.momentum >= 0, "momentum", f"must be >= 0, got {self.momentum}")
        _require(not self.nesterov or self.momentum > 0, "nesterov", "Nesterov momentum needs momentum > 0")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (see rs_shared.training.optim.build_scheduler)."""

    name: str = field(default="constant", metadata=_help(
        "schedule after warm-up: constant | poly (lr*(1 - t/T)^power) | cosine (half cosine from lr to min_lr)"))
    warmup_steps: int = field(default=0, metadata=_help("warm-up length in `interval` units; 0 = no warm-up"))
    warmup_start: float = field(default=0.0, metadata=_help(
        "linear warm-up: starting factor (the first step uses warmup_start*lr); "
        "constant warm-up: the absolute lr held during warm-up (CoOp/BiMoRS: 1e-5)"))
    power: float = field(default=0.9, metadata=_help("poly exponent"))
    min_lr: float = field(default=0.0, metadata=_help("final lr of poly and cosine"))
    interval: str = field(default="step", metadata=_help(
        "step: the lr changes every optimizer step | epoch: only at epoch boundaries (t counts epochs)"))
    warmup_mode: str = field(default="linear", metadata=_help(
        "linear: ramp from warmup_start*lr to lr, then the schedule spans the remaining T - warmup_steps | "
        "constant: hold lr warmup_start, then the schedule restarts at t = 0 and spans all T "
        "(Dassl's ConstantWarmupScheduler, used by CoOp/BiMoRS)"))

    def validate(self) -> None:
        _require_choice(self.name, SCHEDULES, "name")
        _require_choice(self.warmup_mode, WARMUP_MODES, "warmup_mode")
        _require_choice(self.interval, INTERVALS, "interval")
        _require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(self.warmup_start >= 0, "warmup_start", f"must be >= 0, got {self.warmup_start}")
        _require(self.power > 0, "power", f"must be > 0, got {self.power}")
        _require(self.min_lr >= 0, "min_lr", f"must be >= 0, got {self.min_lr}")


@dataclass
class TrainConfig:
    """Training loop (see rs_shared.training.loop.train)."""

    output_dir: str = field(default="runs/train", metadata=_help(
        "directory for checkpoints, logs and the final model"))
    seed: int = field(default=0, metadata=_help("random seed for Python, NumPy and torch"))
    max_steps: int = field(default=0, metadata=_help("total optimizer steps; 0 = epochs x steps per epoch"))
    epochs: int = field(default=1, metadata=_help("passes over the training data (when max_steps is 0)"))
    batch_size: int = field(default=8, metadata=_help("samples per process per micro-step"))
    grad_accum: int = field(default=1, metadata=_help("micro-steps accumulated into one optimizer step"))
    clip_grad_norm: float = field(default=0.0, metadata=_help("clip the global gradient norm; 0 = off"))
    mixed_precision: str = field(default="no", metadata=_help("autocast precision: no | bf16 | fp16"))
    num_workers: int = field(default=0, metadata=_help("DataLoader worker processes"))
    log_every: int = field(default=10, metadata=_help("log every N optimizer steps"))
    eval_every: int = field(default=0, metadata=_help(
        "evaluate every N optimizer steps; 0 = at the end of every epoch (only when an eval_fn is given)"))
    save_every: int = field(default=0, metadata=_help("checkpoint every N optimizer steps; 0 = only at the end"))
    keep_last: int = field(default=3, metadata=_help("number of most recent checkpoints kept"))
    resume: str = field(default="", metadata=_help(
        "'' = start fresh | auto = latest checkpoint in output_dir | path of a checkpoint"))
    tensorboard: bool = field(default=True, metadata=_help("also log to TensorBoard (besides JSONL)"))
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=_help("optimizer"))
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig, metadata=_help("learning-rate schedule"))

    def validate(self) -> None:
        _require(bool(self.output_dir), "output_dir", "must not be empty")
        _require_choice(self.mixed_precision, MIXED_PRECISION, "mixed_precision")
        for key in ("seed", "max_steps", "num_workers", "eval_every", "save_every"):
            _require(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        for key in ("epochs", "batch_size", "grad_accum", "log_every", "keep_last"):
            _require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        _require(self.clip_grad_norm >= 0, "clip_grad_norm", f"must be >= 0, got {self.clip_grad_norm}")


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from its defaults, then the YAML file ``path``, then ``overrides``; then validate.

    ``overrides`` holds ``"a.b.c=VALUE"`` items and/or ``"--a.b.c", "VALUE"`` pairs (``"--a.b.c=VALUE"``
    too). Raises :class:`ConfigError` for an unreadable file, an unknown key, a badly typed or invalid
    value, or a required value that is never given.
    """
    return _load(cls, path, _parse_overrides(overrides))



def resolve_preset(name: str | os.PathLike, config_dir: str | os.PathLike) -> Path:
    """The YAML config ``name``: a file path as given, else a packaged preset of ``config_dir`` by name
    (``tiny-synthetic``) or as ``configs/tiny-synthetic.yaml``. Raises ``FileNotFoundError`` listing the presets."""
    path, config_dir = Path(name), Path(config_dir)
    if path.is_file():
        return path
    packaged = config_dir / (path.name if path.suffix else f"{path.name}.yaml")
    if packaged.is_file():
        return packaged
    presets = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml")))
    raise FileNotFoundError(f"config {str(name)!r} not found: neither a file nor a packaged preset "
                            f"(packaged presets: {presets})")


def resolve_config_argument(argv: Sequence[str], config_dir: str | os.PathLike) -> list[str]:
    """``argv`` with the value of ``--config NAME`` / ``--config=NAME`` replaced by :func:`resolve_preset`'s path,
    so a command line can name a packaged preset. Raises ``FileNotFoundError`` listing the presets."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = str(resolve_preset(argv[i + 1], config_dir))
        elif arg.startswith("--config="):
            argv[i] = "--config=" + str(resolve_preset(arg.partition("=")[2], config_dir))
    return argv

def validate_config(config: object) -> None:
    """Run ``validate()`` of every dataclass in the tree, innermost first (for configs built in code)."""
    _validate(config, "", {})


def config_to_dict(config: object) -> dict[str, Any]:
    """Nested dict of plain YAML values (sequences as lists) that :func:`load_config` reads back."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


def save_config(path: str | os.PathLike, config: object) -> None:
    """Write ``config`` as YAML (atomically); ``load_config(type(config), path)`` gives it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class _Node:
    """One key of a config tree: a section (dataclass) or a leaf."""

    type: Any  # the field annotation
    default: Any  # MISSING when required; the default instance for a section
    help: str

    @property
    def is_section(self) -> bool:
        return isinstance(self.type, type) and dataclasses.is_dataclass(self.type)


def _schema(cls: type, prefix: str = "", base: object = None, out: dict | None = None) -> dict[str, _Node]:
    """Every dotted key of ``cls`` (sections before their leaves), with annotation, default and help."""
    out = {} if out is None else out
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = prefix + f.name
        if base is not None:
            default = getattr(base, f.name)
        elif f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        node = out[key] = _Node(hints[f.name], default, f.metadata.get("help", ""))
        if node.is_section:
            _schema(node.type, key + ".", None if default is MISSING else default, out)
        else:
            _describe(node.type)  # rejects unsupported annotations up front
    return out


def _load(cls: type[T], path: str | os.PathLike | None, overrides: list[tuple[str, str]]) -> T:
    schema = _schema(cls)
    flat: dict[str, tuple[Any, str]] = {}  # dotted leaf key -> (raw value, where it came from)
    if path is not None:
        _read_yaml(Path(path), schema, flat, ())
    for key, value in overrides:
        node = schema.get(key)
        if node is None:
            raise ConfigError(_unknown(key, schema), key, COMMAND_LINE)
        if node.is_section:
            leaf = next(k for k in schema if k.startswith(key + ".") and not schema[k].is_section)
            raise ConfigError(f"is a section; set one of its keys, e.g. {leaf}", key, COMMAND_LINE)
        flat[key] = (value, COMMAND_LINE)
    config = _build(cls, schema, flat, "")
    _validate(config, "", flat)
    return config


def _read_yaml(path: Path, schema: dict[str, _Node], flat: dict, chain: tuple[Path, ...]) -> None:
    """Flatten the YAML file (after its ``_base_``, if any) into ``flat``."""
    source = str(path)
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"'{_BASE_KEY}' includes form a cycle: {cycle}", source=source)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("config file not found", source=source) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", source=source) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file: {e}", source=source) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys at the top level, got {_show(data)}", source=source)
    if _BASE_KEY in data:
        base = data.pop(_BASE_KEY)
        if not isinstance(base, str) or not base:
            raise ConfigError(f"expected the path of a YAML file, got {_show(base)}", _BASE_KEY, source)
        _read_yaml(path.parent / base, schema, flat, (*chain, path.resolve()))
    _flatten(data, "", schema, source, flat)


def _flatten(mapping: dict, prefix: str, schema: dict[str, _Node], source: str, flat: dict) -> None:
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        node = schema.get(key)
        if node is None:
            raise ConfigError(_unknown(key, schema), key, source)
        if not node.is_section:
            flat[key] = (value, source)
        elif isinstance(value, dict):
            _flatten(value, key + ".", schema, source, flat)
        elif value is not None:  # `optim:` with nothing under it is an empty section
            raise ConfigError(f"is a section: expected a mapping of its keys, got {_show(value)}", key, source)


def _unknown(key: str, schema: dict[str, _Node]) -> str:
    """'unknown key', suggesting a key of the same name elsewhere in the tree or a similar sibling."""
    parent, _, name = key.rpartition(".")
    same_name = [k for k in schema if k.rpartition(".")[2] == name]
    siblings = {k.rpartition(".")[2]: k for k in schema if k.rpartition(".")[0] == parent}
    similar = [siblings[s] for s in difflib.get_close_matches(name, list(siblings), 1)]
    suggestion = (same_name or similar or [None])[0]
    return f"unknown key; did you mean '{suggestion}'?" if suggestion else "unknown key"


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """``["a.b=1", "--c.d", "2", "--e=3"]`` -> ``[("a.b", "1"), ("c.d", "2"), ("e", "3")]``."""
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of strings, not one string")
    pairs, items = [], iter(overrides)
    for token in items:
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if not eq:
                value = next(items, None)
                if value is None:
                    raise ConfigError(f"'{token}' needs a value", source=COMMAND_LINE)
        else:
            key, eq, value = token.partition("=")
            if not eq:
                raise ConfigError(f"expected KEY=VALUE or --KEY VALUE, got {token!r}", source=COMMAND_LINE)
        pairs.append((key.strip(), value))
    return pairs


def _build(cls: type[T], schema: dict[str, _Node], flat: dict, prefix: str) -> T:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key = prefix + f.name
        node = schema[key]
        if node.is_section:
            kwargs[f.name] = _build(node.type, schema, flat, key + ".")
        elif key in flat:
            value, source = flat[key]
            try:
                kwargs[f.name] = _coerce(value, node.type)
            except ValueError as e:
                raise ConfigError(str(e), key, source) from None
        elif node.default is not MISSING:
            kwargs[f.name] = node.default
        else:
            raise ConfigError(f"required value missing (set it in the YAML file or with --{key})", key)
    try:
        return cls(**kwargs)
    except ValueError as e:  # a __post_init__ check
        raise ConfigError(str(e), prefix.rstrip(".")) from None


def _validate(config: object, prefix: str, flat: dict) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _validate(value, f"{prefix}{f.name}.", flat)
    check = getattr(config, "validate", None)
    if check is None:
        return
    try:
        check()
    except ConfigError as e:
        key = prefix + e.key if e.key else prefix.rstrip(".")
        raise ConfigError(e.problem, key, flat.get(key, (None, ""))[1]) from None
    except ValueError as e:
        raise ConfigError(str(e), prefix.rstrip(".")) from None


# ---------------------------------------------------------------------------------------------------------
# Values and types


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` (a YAML value or command-line text) as annotation ``tp``; ValueError says what was expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        try:
            return _coerce(value, _optional_inner(tp))
        except ValueError:
            raise _expected(tp, value) from None
    if origin is Literal:
        for choice in args:
            with contextlib.suppress(ValueError):
                if _coerce(value, type(choice)) == choice:
                    return choice
        raise _expected(tp, value)
    if origin in (tuple, list):
        items = _split(value)
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        item_types = args if fixed else (args[0],) * len(items)
        if len(items) != len(item_types):
            raise _expected(tp, value)
        try:
            converted = [_coerce(item, item_tp) for item, item_tp in zip(items, item_types, strict=True)]
        except ValueError:
            raise _expected(tp, value) from None
        return tuple(converted) if origin is tuple else converted
    if tp is bool:
        text = str(value).strip().lower()
        if isinstance(value, bool) or (isinstance(value, (str, int)) and text in _TRUE + _FALSE):
            return text in _TRUE
    elif tp in (int, float) and not isinstance(value, bool):
        if isinstance(value, int if tp is int else (int, float)):
            return tp(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return tp(value)
    elif tp is str and isinstance(value, str):
        return value
    raise _expected(tp, value)


def _expected(tp: Any, value: Any) -> ValueError:
    wants_text = tp is str or str in map(type, typing.get_args(tp) if typing.get_origin(tp) is Literal else ())
    hint = "; quote it in YAML to keep it text" if wants_text and isinstance(value, (bool, int, float)) else ""
    return ValueError(f"expected {_describe(tp)}, got {_show(value)}{hint}")


def _optional_inner(tp: Any) -> Any:
    inner = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(inner) != 1 or len(typing.get_args(tp)) != 2:
        raise TypeError(f"unsupported config field type {tp!r}: the only union allowed is X | None")
    return inner[0]


def _split(value: Any) -> list:
    """Items of a YAML list or of comma-separated text (optionally in [] or ())."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if not isinstance(value, str):
        return [value]
    text = value.strip()
    if text[:1] + text[-1:] in ("[]", "()"):
        text = text[1:-1]
    return [item.strip() for item in text.split(",")] if text.strip() else []


def _describe(tp: Any) -> str:
    """What a value of annotation ``tp`` looks like (for messages and --help); TypeError if unsupported."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SCALARS:
        return {int: "an integer", float: "a float", bool: "a boolean (true/false/yes/no/1/0)",
                str: "a string"}[tp]
    if origin is Literal and all(type(a) in _SCALARS for a in args):
        return f"one of {_quoted(args)}"
    if origin in (Union, types.UnionType):
        return f"{_describe(_optional_inner(tp))} or none"
    if origin in (tuple, list) and args and all(a in _SCALARS or a is Ellipsis for a in args):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return f"{len(args)} comma-separated values ({', '.join(_SCALARS[a] for a in args)})"
        return f"comma-separated {_SCALARS[args[0]]} values (empty for none)"
    raise TypeError(f"unsupported config field type {tp!r}: use int, float, bool, str, Literal, "
                    "tuple/list of scalars, X | None, or a nested dataclass")


def _metavar(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin in (Union, types.UnionType):
        return _metavar(_optional_inner(tp))
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return ",".join(_metavar(a) for a in args)
    if origin in (tuple, list):
        return f"{_metavar(args[0])},..."
    return _SCALARS[tp].upper()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _format(value: Any) -> str:
    """``value`` written the way the command line accepts it."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return ",".join(_format(v) for v in value)
    return str(value) if value != "" else "''"


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{type(value).__name__} {value!r}"


def _quoted(choices: Sequence[object]) -> str:
    return ", ".join(repr(c) for c in choices)


# ---------------------------------------------------------------------------------------------------------
# Command line


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config FILE`` and one ``--a.b.c VALUE`` option per leaf of ``cls`` (grouped by section).

    Each option's help shows the field's help text, the expected value and the default. Options not
    given stay out of the namespace, so a YAML value is only overridden by what the user typed. Read the
    result with :func:`config_from_args`.
    """
    parser.add_argument("--config", metavar="FILE", help=(
        "YAML config file (may build on another with `_base_: FILE`); the options below override it"))
    groups: dict[str, Any] = {"": parser}
    for key, node in _schema(cls).items():
        if node.is_section:
            doc = node.help or (node.type.__doc__ or "").strip().split("\n")[0]
            groups[key] = parser.add_argument_group(key, _escape(doc))
            continue
        default = "required" if node.default is MISSING else f"default: {_format(node.default)}"
        kind = "" if node.type in (int, float, str) else f"{_describe(node.type)}; "  # the metavar says enough
        text = f"{node.help} [{kind}{default}]".lstrip()
        groups[key.rpartition(".")[0]].add_argument(
            f"--{key}", dest=_DEST + key, metavar=_metavar(node.type), default=argparse.SUPPRESS, help=_escape(text))


def config_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Load ``cls`` from a namespace parsed with :func:`add_config_arguments` (file, then options)."""
    overrides = [(k[len(_DEST):], v) for k, v in vars(args).items() if k.startswith(_DEST)]
    return _load(cls, args.config, overrides)


def parse_config(cls: type[T], argv: Sequence[str] | None = None, prog: str | None = None,
                 description: str | None = None) -> T:
    """Parse a command line into ``cls``; a bad option or value exits with status 2 and a clear message."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     usage="%(prog)s [-h] [--config FILE] [--KEY VALUE ...]")
    add_config_arguments(parser, cls)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        key = unknown[0][2:].partition("=")[0] if unknown[0].startswith("--") else ""
        parser.error(str(ConfigError(_unknown(key, _schema(cls)), key, COMMAND_LINE)) if key
                     else f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return config_from_args(cls, args)
    except ConfigError as e:
        parser.error(str(e))


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help strings
