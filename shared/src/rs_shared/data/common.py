"""Pieces every reader shares: image and JSON reading with clear errors, the generic torch Dataset,
and atomic writes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import DataFormatError, Problems

Image.MAX_IMAGE_PIXELS = None  # DOTA scenes reach 20,000 × 20,000 pixels; they are trusted local files


def read_image(path: str | os.PathLike, record: object | None = None, mode: str = "RGB") -> Image.Image:
    """Open an image as ``mode`` (RGB by default), raising :class:`DataFormatError` if it is missing or
    unreadable."""
    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except FileNotFoundError:
        raise DataFormatError(path, "image file is missing", record) from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataFormatError(path, f"cannot read image: {e}", record) from None


def image_size(path: str | os.PathLike, record: object | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataFormatError(path, "image file is missing", record) from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataFormatError(path, f"cannot read image: {e}", record) from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a truncated or malformed file raises :class:`DataFormatError` with the position."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataFormatError(path, "file is missing") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not UTF-8 text: {e}") from None
    except OSError as e:  # a directory, no permission, ...
        raise DataFormatError(path, f"cannot read file: {e.strerror or e}") from None


def read_jsonl(path: str | os.PathLike, problems: Problems) -> list[tuple[int, Any]]:
    """``(line number, object)`` for each non-empty line of a JSON-lines file; bad lines are reported."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        out.append((lineno, json.loads(line)))
                    except json.JSONDecodeError as e:
                        problems.add(path, f"invalid JSON: {e.msg}", f"line {lineno}")
    except FileNotFoundError:
        raise DataFormatError(path, "file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(path, f"cannot read file: {e}") from None
    return out


def require_keys(obj: object, keys: dict[str, type | tuple[type, ...]], file: str | os.PathLike,
                 record: object, problems: Problems) -> bool:
    """Check that ``obj`` is a dict holding ``keys`` with the given types; report the first mismatch."""
    if not isinstance(obj, dict):
        problems.add(file, f"expected an object, got {type(obj).__name__}", record)
        return False
    for key, typ in keys.items():
        if key not in obj:
            problems.add(file, f"missing field '{key}'", record)
            return False
        if not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            names = " or ".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            problems.add(file, f"field '{key}' must be {names}, got {type(obj[key]).__name__}", record)
            return False
    return True


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed onto ``path``, on
    error removed. A crash therefore never leaves a truncated file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write JSON atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


class Record(Protocol):
    """A typed sample record: plain data about one sample, plus :meth:`load` for its pixels."""

    def load(self) -> dict[str, Any]: ...


class RecordDataset(torch.utils.data.Dataset):
    """Map-style torch Dataset over typed records; item ``i`` is ``transform(records[i].load())``.

    ``load()`` returns a dict with the image as an ``(H, W, 3)`` uint8 array and the targets as arrays;
    task packages supply ``transform`` (resizing, normalisation, tokenisation).
    """

    def __init__(self, records: Sequence[Record], transform: Callable[[dict], Any] | None = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        sample = self.records[index].load()
        return self.transform(sample) if self.transform else sample


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)
