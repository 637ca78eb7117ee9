"""A researcher's own annotation table, read for ``rs-data convert``: CSV/TSV with a header row, a JSON list of
objects, or JSON lines. Every error names the table file and the row (``line 7`` of a CSV or JSON-lines file,
``item 3`` of a JSON list) and says what was expected.

Paths in a table are relative to a root folder (by default the table's own folder) unless absolute. An optional
``split`` column (``train``/``val``/``test``) fixes the split of every row; without it the converters draw the
split per image with :func:`assign_splits`.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataFormatError
from ..scene_cls import _split_sizes

SPLITS = ("train", "val", "test")
SPLIT_COLUMN = "split"
DELIMITED = {".csv": ",", ".tsv": "\t"}
JSON_SUFFIXES = (".json", ".jsonl")
SAFE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Row:
    """One record of a table: ``where`` names it (``line 7``, ``item 3``) and ``values`` holds its fields
    (strings for CSV, any JSON value for JSON)."""

    file: Path
    where: str
    values: Mapping[str, Any]

    @property
    def record(self) -> str:
        """The row as error messages name it: ``labels.csv line 7``."""
        return f"{self.file.name} {self.where}"

    def error(self, message: str) -> DataFormatError:
        return DataFormatError(self.file, message, self.where)

    def text(self, key: str) -> str:
        """Field ``key`` as stripped, non-empty text (a JSON integer is accepted and written in decimal)."""
        value = self.values.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            got = "missing" if value is None else repr(value)[:60]
            raise self.error(f"field {key!r} must be non-empty text, got {got}")
        return value.strip()

    def path(self, key: str, root: Path) -> Path:
        """Field ``key`` as a file path under ``root`` (absolute paths are kept)."""
        return root / self.text(key)

    def split(self) -> str:
        """The row's ``split`` field, checked to be one of :data:`SPLITS`."""
        value = self.text(SPLIT_COLUMN)
        if value not in SPLITS:
            raise self.error(f"field 'split' must be one of {', '.join(SPLITS)}, got {value!r}")
        return value


@dataclass(frozen=True)
class Table:
    """The rows of an annotation table and the columns it has (for JSON: the keys of its first record)."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[Row, ...]

    @property
    def has_splits(self) -> bool:
        return SPLIT_COLUMN in self.columns


def read_table(path: str | os.PathLike, required: Sequence[str], *, json_only: bool = False) -> Table:
    """Read an annotation table and check that every row has the ``required`` fields.

    ``.csv`` / ``.tsv`` files need a header row naming the columns (a UTF-8 byte-order mark is allowed); ``.json``
    files hold a list of objects, or one object per line; ``.jsonl`` files one object per line. ``json_only``
    refuses delimited files (for nested annotations). Raises :class:`DataFormatError` naming the file and row.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    allowed = JSON_SUFFIXES if json_only else (*DELIMITED, *JSON_SUFFIXES)
    if suffix not in allowed:
        raise DataFormatError(path, f"expected a table with one of the suffixes {', '.join(allowed)}, "
                                    f"got {suffix or 'no suffix'!r}")
    if not path.is_file():
        raise DataFormatError(path, "annotation file is missing")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not UTF-8 text: {e}") from None
    if suffix in DELIMITED:
        columns, rows = _read_delimited(path, text, DELIMITED[suffix])
    else:
        rows = _read_json_rows(path, text)
        columns = tuple(rows[0].values) if rows else ()
    if not rows:
        raise DataFormatError(path, f"the table has no rows; expected one row per annotation with the fields "
                                    f"{', '.join(required)}")
    for row in rows:
        missing = [key for key in required if key not in row.values]
        if missing:
            raise row.error(f"missing field(s) {', '.join(map(repr, missing))}; every row needs "
                            f"{', '.join(required)} (optionally 'split')")
        if (SPLIT_COLUMN in row.values) != (SPLIT_COLUMN in columns):
            raise row.error("the 'split' field must be given for every row or for none")
    return Table(path, tuple(columns), tuple(rows))


def _read_delimited(path: Path, text: str, delimiter: str) -> tuple[tuple[str, ...], list[Row]]:
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        return (), []
    except csv.Error as e:
        raise DataFormatError(path, f"unreadable header: {e}", "line 1") from None
    if len(set(header)) != len(header) or "" in header:
        raise DataFormatError(path, f"the header must name each column once, got {header}", "line 1")
    rows = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataFormatError(path, f"unreadable row: {e}", f"line {reader.line_num}") from None
        if not any(field.strip() for field in fields):
            continue
        where = f"line {reader.line_num}"
        if len(fields) != len(header):
            raise DataFormatError(path, f"has {len(fields)} fields, the header has {len(header)} "
                                        f"({delimiter.join(header)})", where)
        rows.append(Row(path, where, dict(zip(header, fields, strict=True))))
    return tuple(header), rows


def _read_json_rows(path: Path, text: str) -> list[Row]:
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        numbered = [(f"item {i}", item) for i, item in enumerate(items)]
    else:
        numbered = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((f"line {lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataFormatError(path, f"invalid JSON: {e.msg} (one object per line expected)",
                                          f"line {lineno}") from None
    rows = []
    for where, item in numbered:
        if not isinstance(item, dict):
            raise DataFormatError(path, f"expected an object, got {type(item).__name__}", where)
        rows.append(Row(path, where, item))
    return rows


def assign_splits(groups: Mapping[str, Sequence[Row]], has_splits: bool, p_train: float, p_val: float,
                  seed: int) -> dict[str, str]:
    """The split of each group of rows (a group is usually one image, so an image never lands in two splits).

    With a ``split`` column every row of a group must name the same split. Otherwise the group keys are sorted,
    shuffled with ``random.Random(seed)`` and cut by :func:`rs_shared.data.scene_cls.folder_to_split`'s rule:
    ``round(n·p_train)`` train, ``round(n·p_val)`` val, the rest test, and with three groups or more every split
    with a non-zero share gets at least one.
    """
    if has_splits:
        out = {}
        for key, rows in groups.items():
            out[key] = rows[0].split()
            for row in rows[1:]:
                if row.split() != out[key]:
                    raise row.error(f"split {row.split()!r} differs from {out[key]!r} given for the same image by "
                                    f"{rows[0].where}; an image belongs to one split")
        return out
    if not (0 < p_train and 0 <= p_val and p_train + p_val < 1):
        raise ValueError(f"need 0 < p_train, 0 <= p_val and p_train + p_val < 1, got {p_train}, {p_val}")
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_train, n_val = _split_sizes(len(keys), p_train, p_val)
    return {key: "train" if i < n_train else "val" if i < n_train + n_val else "test" for i, key in enumerate(keys)}


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_`` (for file stems and ids)."""
    return "".join(c if c in SAFE_NAME_CHARS else "_" for c in text)


@contextmanager
def staged_output(out: str | os.PathLike) -> Iterator[Path]:
    """A fresh directory beside ``out`` to write a converted dataset into: renamed to ``out`` when the conversion
    succeeds, removed when it fails, so a bad row never leaves a half-written dataset. ``out`` must be absent or an
    empty directory."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} is not an empty directory; choose a new output directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
