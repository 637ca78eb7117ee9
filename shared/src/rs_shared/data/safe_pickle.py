"""A restricted unpickler for annotation pickles (RRSIS-D ``refs(unc).p``, Dassl few-shot caches).

Pickles can run arbitrary code when loaded; annotation files from the internet are untrusted. This loader
builds only scalars and plain containers and refuses every other global before importing it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from .errors import DataFormatError


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler that builds only scalars and plain containers.

    Lists, dicts, tuples, str, bytes, numbers, bool and None need no global lookup. The only globals
    allowed are constructors of harmless containers that older protocols cannot express with opcodes:
    ``set``/``frozenset`` (protocols 0-3 pickle them as a call of the builtin; Python 2 and Python 3
    at protocol <= 2 name the module ``__builtin__``) and ``collections.OrderedDict`` (always pickled as
    a call; annotation tools that keep key order produce it). None of them can run code or touch files.
    Python 3 ``bytes`` pickled at protocol <= 2 need ``_codecs.encode`` and are refused: annotation
    pickles hold text, and Python 2 byte strings do not need it.
    """

    _ALLOWED = frozenset({
        ("builtins", "set"), ("builtins", "frozenset"),
        ("__builtin__", "set"), ("__builtin__", "frozenset"),
        ("collections", "OrderedDict"),
    })

    def __init__(self, file, path: Path):
        # Python 2 byte strings (``str``) are decoded as UTF-8: REFER annotations are ASCII/UTF-8 text.
        # latin1 would silently garble non-ASCII words, "bytes" would turn every dict key into bytes.
        super().__init__(file, encoding="utf-8", errors="strict")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise DataFormatError(
                self.path, f"pickle asks for global '{module}.{name}'; only plain containers and scalars are allowed"
            )
        return super().find_class(module, name)


_UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
                    KeyError, OverflowError, RecursionError)


def safe_pickle_load(path: str | os.PathLike) -> Any:
    """Load a pickle that may only contain scalars, str/bytes and plain containers.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, classes, ...) is refused
    before it is imported, so a malicious file cannot run code. Truncated or corrupt files, and Python 2
    strings that are not UTF-8, raise :class:`DataFormatError` as well.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _PlainUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataFormatError(path, "file is missing") from None
    except DataFormatError:
        raise
    except _UNPICKLE_ERRORS as e:
        raise DataFormatError(path, f"not a valid pickle ({type(e).__name__}: {e})") from None
