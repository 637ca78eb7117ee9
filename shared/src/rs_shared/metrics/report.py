"""Evaluation reports: one JSON file per evaluation run recording what was measured, under which protocol,
and with which code; plus a Markdown table for CLIs.

A report is a JSON object::

    {
      "protocol": "RRSIS official test script (LAVT/RMSIN), 480x480, IoU=0 when U=0",
      "results":  {...},                   # metric values as computed (fractions unless the caller scaled them)
      "seeds":    [1, 2, 3] | null,
      "config":   {...} | null,            # the resolved run configuration
      "extra":    {...} | null,            # anything else the caller wants kept (e.g. which WUPS variant)
      "versions": {"rs-shared": "0.1.0", "torch": "2.15.0", ...},   # installed distributions only
      "git":      "<commit>" | "<commit>+dirty" | null,
      "created":  "2025-01-31T12:00:00+00:00"                      # UTC, ISO 8601
    }
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.common import write_json

REPORTED_DISTRIBUTIONS = ("rs-shared", "rs-bimors", "rs-clvnet", "rs-icipnet", "rs-rscovlm", "torch",
                          "transformers", "numpy", "pycocotools", "pycocoevalcap")

_SOURCE_DIR = Path(__file__).resolve().parent.parent  # the rs_shared package directory
_GIT_TIMEOUT_S = 10


def write_report(path: str | os.PathLike, results: dict, *, protocol: str, seeds: list[int] | None = None,
                 config: dict | None = None, extra: dict | None = None) -> dict:
    """Write an evaluation report to ``path`` (JSON, atomically) and return it as a dict.

    ``protocol`` names the evaluation protocol followed (e.g. the metric docstring's name of it). Values may
    be numpy/torch scalars or arrays, tuples or paths; they are converted to plain JSON types, and the
    returned dict is exactly what reading the file back gives (mapping keys become strings). ``versions``,
    ``git`` and ``created`` are filled in (see :func:`package_versions` and :func:`git_revision`).
    """
    if not isinstance(protocol, str) or not protocol.strip():
        raise ValueError("protocol must be a non-empty description of the evaluation protocol")
    report = {
        "protocol": protocol,
        "results": _jsonable(results, "results"),
        "seeds": _jsonable(seeds, "seeds"),
        "config": _jsonable(config, "config"),
        "extra": _jsonable(extra, "extra"),
        "versions": package_versions(),
        "git": git_revision(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(path, report, indent=2)
    return report


def package_versions() -> dict[str, str]:
    """Versions of the :data:`REPORTED_DISTRIBUTIONS` that are installed (missing ones are left out)."""
    versions = {}
    for name in REPORTED_DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_revision(directory: str | os.PathLike | None = None) -> str | None:
    """Commit of the git checkout the code runs from, with ``+dirty`` if ``git status --porcelain`` lists
    anything (uncommitted or untracked files, or the status could not be read); ``None`` when ``directory``
    (default: the rs_shared source directory) is not tracked in a git checkout — e.g. an installed wheel,
    even one inside a repository's virtualenv — or git is unavailable. Never raises.
    """
    directory = Path(directory) if directory is not None else _SOURCE_DIR
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None or _git(directory, "ls-files", "--error-unmatch", "--", ".") is None:
        return None
    status = _git(directory, "status", "--porcelain")
    return commit.strip() + ("" if status == "" else "+dirty")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` restricted to ``columns`` (used as headers, in order).

    Floats are printed with ``digits`` decimals (scale fractions to percent before, if that is what the table
    shows); missing values and ``None`` are empty cells; columns whose values are all numbers are
    right-aligned; ``|`` in text is escaped.
    """
    if not columns:
        raise ValueError("no columns given")
    cells = [[_cell(row.get(c), digits) for c in columns] for row in rows]
    numeric = [all(isinstance(row.get(c), (int, float, np.number)) and not isinstance(row.get(c), bool)
                   for row in rows if row.get(c) is not None) for c in columns]
    headers = [_escape(str(c)) for c in columns]
    widths = [max([len(h), 3] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]
    layout = list(zip(widths, numeric, strict=True))

    def line(values: list[str]) -> str:
        padded = (v.rjust(w) if num else v.ljust(w) for v, (w, num) in zip(values, layout, strict=True))
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + ":" if num else "-" * w for w, num in layout) + " |"
    return "\n".join([line(headers), rule] + [line(r) for r in cells])


def _git(directory: Path, *args: str) -> str | None:
    """stdout of ``git args`` run in ``directory`` (no shell, bounded time), or ``None`` on any failure."""
    try:
        proc = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; raises :class:`TypeError` naming the location of anything else."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, (np.integer, np.str_)):
                key = key.item()
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise TypeError(f"{where}: mapping keys must be str or int, got {type(key).__name__} {key!r}")
            out[str(key)] = _jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(float(value))
    return _escape(str(value))


def _escape(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")
