"""Checkpoints a user can trust: strict weight loading and model cards.

**Strict loading.** A checkpoint whose keys or shapes differ from the model must never leave part of the model at
its random initialisation without a word (transformers only logs missing keys). :func:`compare_state_dict` lists
the differences between the tensors a model expects and those a file holds; :func:`check_state_dict` and
:func:`load_state_dict_strict` raise one :class:`WeightsMismatchError` naming the file and every missing,
unexpected and wrongly shaped key. :func:`strict_from_pretrained` wraps a transformers ``from_pretrained`` the
same way, from the loading report of ``output_loading_info=True`` (keys transformers legitimately skips, such as
tied weights, are not reported)::

    class MyModel(PreTrainedModel):
        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            return strict_from_pretrained(super().from_pretrained, *args, **kwargs)

**Model cards.** :func:`write_model_card` writes ``README.md`` into a ``save_pretrained`` directory: the model and
its preset, the training data, the full resolved configuration (a YAML block), and for each evaluation the exact
command line that reproduces it with the metrics it gave. A YAML front matter (the Hugging Face model-card
header) repeats the evaluations in machine-readable form; :func:`read_model_card` parses it back.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from .data.common import atomic_path

CARD_FILE = "README.md"
CARD_FORMAT = "rs-vlm-model-card/1"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin")
MAX_LISTED = 25  # keys listed per kind in an error message


# --------------------------------------------------------------------------------------------------------------
# strict loading


@dataclass(frozen=True)
class KeyDifferences:
    """How a checkpoint's tensors differ from a model's: ``missing`` (in the model, not in the file),
    ``unexpected`` (in the file, not in the model) and ``mismatched`` ``(key, shape in the file, shape in the
    model)``, each sorted by key. False when there is no difference."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    other: tuple[str, ...] = ()  # further errors reported by the loader

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched or self.other)

    @classmethod
    def from_loading_info(cls, info: Mapping[str, Any]) -> KeyDifferences:
        """From the dict transformers' ``from_pretrained(..., output_loading_info=True)`` returns:
        ``missing_keys`` / ``unexpected_keys`` (sets of names), ``mismatched_keys`` (``(name, shape in the
        checkpoint, shape in the model)`` tuples) and ``error_msgs``."""
        mismatched = sorted((str(k), tuple(a), tuple(b)) for k, a, b in info.get("mismatched_keys") or ())
        return cls(tuple(sorted(map(str, info.get("missing_keys") or ()))),
                   tuple(sorted(map(str, info.get("unexpected_keys") or ()))), tuple(mismatched),
                   tuple(map(str, info.get("error_msgs") or ())))

    def lines(self) -> list[str]:
        """One line per kind of difference, at most :data:`MAX_LISTED` keys each."""
        out = []
        for label, keys in (("missing keys (in the model, not in the file)", self.missing),
                            ("unexpected keys (in the file, not in the model)", self.unexpected),
                            ("wrong shapes", [f"{k}: {_shape(a)} in the file, {_shape(b)} in the model"
                                              for k, a, b in self.mismatched]),
                            ("other loading errors", self.other)):
            if keys:
                shown = ", ".join(keys[:MAX_LISTED])
                more = f" … and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
                out.append(f"{label} [{len(keys)}]: {shown}{more}")
        return out

    def describe(self) -> str:
        """The differences on one line (``; ``-separated), for messages that add their own context."""
        return "; ".join(self.lines())


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into; ``differences`` holds every key that differs."""

    def __init__(self, source: str | os.PathLike, differences: KeyDifferences, target: str = "the model"):
        self.source, self.differences, self.target = str(source), differences, target
        body = "\n".join(f"  - {line}" for line in differences.lines())
        super().__init__(f"{self.source} does not match {target}:\n{body}")


def compare_state_dict(expected: Mapping[str, Any], found: Mapping[str, Any]) -> KeyDifferences:
    """The differences between the tensors a model ``expected`` (e.g. ``model.state_dict()``) and those ``found``
    in a checkpoint. Values are tensors or shapes (anything with ``.shape``, or a sequence of ints)."""
    shapes = [(k, _shape_of(found[k]), _shape_of(expected[k])) for k in sorted(expected.keys() & found.keys())]
    return KeyDifferences(tuple(sorted(expected.keys() - found.keys())), tuple(sorted(found.keys() - expected.keys())),
                          tuple((k, a, b) for k, a, b in shapes if a != b))


def check_state_dict(expected: Mapping[str, Any], found: Mapping[str, Any], source: str | os.PathLike,
                     target: str = "the model") -> None:
    """Raise :class:`WeightsMismatchError` (naming ``source`` and ``target``) unless ``found`` holds exactly the keys
    of ``expected`` with the same shapes."""
    differences = compare_state_dict(expected, found)
    if differences:
        raise WeightsMismatchError(source, differences, target)


def load_state_dict_strict(module, state_dict: Mapping[str, Any], source: str | os.PathLike) -> None:
    """``module.load_state_dict(state_dict)`` after :func:`check_state_dict` against ``module.state_dict()``, so a
    mismatch raises one error listing every difference (with the file name) and loads nothing."""
    check_state_dict(module.state_dict(), state_dict, source, type(module).__name__)
    module.load_state_dict(state_dict)


def weights_source(path: str | os.PathLike) -> str:
    """The weights file of a ``save_pretrained`` directory (for messages): ``<dir>/model.safetensors`` or the
    shard index, else ``path`` itself."""
    directory = Path(path)
    if directory.is_dir():
        for name in WEIGHT_FILES:
            if (directory / name).is_file():
                return str(directory / name)
    return str(path)


def strict_from_pretrained(load: Callable[..., Any], pretrained_model_name_or_path: str | os.PathLike, *args,
                           **kwargs):
    """Call a transformers ``from_pretrained`` (``load``, e.g. ``super().from_pretrained`` in an override or
    ``Qwen2_5_VLForConditionalGeneration.from_pretrained``) and raise :class:`WeightsMismatchError` if any
    weight is missing, unexpected or of another shape, instead of returning a partly random model.

    Shape mismatches are collected with the rest (``ignore_mismatched_sizes=True`` unless given) rather than
    raised one by one. Returns what ``load`` returns: the model, or ``(model, loading_info)`` when
    ``output_loading_info=True`` is passed.
    """
    want_info = kwargs.pop("output_loading_info", False)
    kwargs.setdefault("ignore_mismatched_sizes", True)
    model, info = load(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
    differences = KeyDifferences.from_loading_info(info)
    if differences:
        raise WeightsMismatchError(weights_source(pretrained_model_name_or_path), differences, type(model).__name__)
    return (model, info) if want_info else model


# --------------------------------------------------------------------------------------------------------------
# model cards


@dataclass(frozen=True)
class CardEvaluation:
    """One evaluation of a model card: the exact ``command`` (argv, program first) and the ``metrics`` it gave
    (scalar values as the evaluation reported them); ``description`` says what is evaluated."""

    command: tuple[str, ...]
    metrics: Mapping[str, float | int]
    description: str = ""

    @property
    def command_line(self) -> str:
        """The command as one shell-quoted line."""
        return shlex.join(self.command)


@dataclass(frozen=True)
class ModelCard:
    """The machine-readable part of a model card (its front matter)."""

    model_name: str
    preset: str
    package: str
    training_data: dict[str, Any]
    evaluations: tuple[CardEvaluation, ...]
    working_directory: str
    created: str


def write_model_card(directory: str | os.PathLike, *, model_name: str, preset: str, package: str,
                     training_data: Mapping[str, Any], config: Mapping[str, Any],
                     evaluations: Sequence[CardEvaluation], notes: Sequence[str] = (),
                     working_directory: str | os.PathLike | None = None) -> Path:
    """Write ``<directory>/README.md`` (atomically) and return its path.

    ``model_name`` and ``preset`` name the model; ``package`` is its distribution (e.g. ``rs-icipnet``);
    ``training_data`` describes what it was trained on (paths, split, sizes, the generator seed of synthetic
    data), ``config`` is the full resolved training configuration, ``evaluations`` the commands that reproduce
    the card's metrics, run from ``working_directory`` (default: the current one; relative paths in the
    commands are relative to it). ``notes`` become paragraphs of their own.
    """
    directory = Path(directory)
    workdir = str(Path(working_directory or os.getcwd()).resolve())
    evaluations = [CardEvaluation(tuple(map(str, e.command)), _scalars(e.metrics), e.description)
                   for e in evaluations]
    header = {
        "library_name": "transformers", "tags": ["rs-vlm", package, model_name],
        "rs_vlm": {
            "format": CARD_FORMAT, "model_name": model_name, "preset": preset, "package": package,
            "training_data": _plain(training_data), "working_directory": workdir,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "evaluations": [{"description": e.description, "command": e.command_line, "metrics": dict(e.metrics)}
                            for e in evaluations],
        },
    }
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=1 << 16)  # a command stays one line
    parts = [f"---\n{front}---", "",
             f"# {model_name} ({preset} preset)", "",
             f"Trained with `{package}`. Relative paths below are relative to the run's working directory: "
             f"`{workdir}`.",
             "", *[p for note in notes for p in (note, "")], "## Training data", "",
             "| field | value |", "|---|---|",
             *[f"| {k} | {_cell(v)} |" for k, v in training_data.items()], "", "## Evaluation", ""]
    if not evaluations:
        parts += ["No evaluation was run at the end of training.", ""]
    for e in evaluations:
        if e.description:
            parts += [e.description, ""]
        parts += ["```bash", e.command_line, "```", "", "| metric | value |", "|---|---:|",
                  *[f"| {k} | {_number(v)} |" for k, v in e.metrics.items()], ""]
    parts += ["## Training configuration", "", "```yaml",
              yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True).rstrip(), "```", ""]
    path = directory / CARD_FILE
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


def read_model_card(directory: str | os.PathLike) -> ModelCard:
    """Parse the front matter of ``<directory>/README.md`` written by :func:`write_model_card`."""
    path = Path(directory) / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {directory} has no model card")
    text = path.read_text(encoding="utf-8")
    head, sep, _ = text.removeprefix("---\n").partition("\n---\n")
    try:
        meta = yaml.safe_load(head) if text.startswith("---\n") and sep else None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: the front matter is not valid YAML ({e})") from None
    card = meta.get("rs_vlm") if isinstance(meta, dict) else None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path}: no '{CARD_FORMAT}' front matter (was it written by rs_shared.hub.write_model_card?)")
    evaluations = tuple(CardEvaluation(tuple(shlex.split(e["command"])), e["metrics"], e.get("description", ""))
                        for e in card["evaluations"])
    return ModelCard(card["model_name"], card["preset"], card["package"], card["training_data"], evaluations,
                     card["working_directory"], card["created"])


# --------------------------------------------------------------------------------------------------------------
# helpers


def _shape_of(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in (value.shape if hasattr(value, "shape") else value))


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """Metric values as Python ``int`` / ``float`` (numpy and torch scalars unwrapped)."""
    out = {}
    for k, v in metrics.items():
        v = v.item() if hasattr(v, "item") else v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"model-card metric {k!r} must be a number, got {type(v).__name__}")
        out[str(k)] = v
    return out


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, paths as strings and numpy/torch scalars as Python numbers (YAML-safe)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def _cell(value: Any) -> str:
    value = _plain(value)
    text = (str(value) if value is None or isinstance(value, (str, int, float, bool))
            else yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip())
    return text.replace("|", "\\|").replace("\n", " ")


__all__ = [
    "CARD_FILE", "CardEvaluation", "KeyDifferences", "ModelCard", "WeightsMismatchError", "check_state_dict",
    "compare_state_dict", "load_state_dict_strict", "read_model_card", "strict_from_pretrained", "weights_source",
    "write_model_card",
]
