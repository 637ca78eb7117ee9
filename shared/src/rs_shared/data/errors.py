"""One error type for bad dataset input, and a collector for `rs-data check`.

Every reader reports a problem through :class:`Problems`. In strict mode (the default for loading) the
first problem raises :class:`DataFormatError`; in collecting mode (``rs-data check``) problems are
gathered and the offending record is skipped, so one run lists everything that is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


class DataFormatError(ValueError):
    """A dataset file does not match its documented format.

    The message always names the file, the record inside it (when there is one) and what was expected,
    e.g. ``refs(unc).p: record 12 (ref_id 31): 'sentences' must be a non-empty list, got int``.
    """

    def __init__(self, file: str | os.PathLike, message: str, record: object | None = None):
        self.file = os.fspath(file)
        self.record = record
        self.message = message
        where = self.file if record is None else f"{self.file}: record {record}"
        super().__init__(f"{where}: {message}")


@dataclass
class Problems:
    """Where readers report format problems.

    ``strict=True`` raises the first problem; ``strict=False`` collects them in :attr:`items` and lets the
    reader skip the broken record and continue. (Deliberately no ``__len__``/``__bool__``: an empty collector
    must stay truthy so ``problems or Problems()`` can never swap it for a strict one.)
    """

    strict: bool = True
    items: list[DataFormatError] = field(default_factory=list)

    def add(self, file: str | os.PathLike, message: str, record: object | None = None) -> None:
        error = DataFormatError(file, message, record)
        if self.strict:
            raise error
        self.items.append(error)


def check_exists(path: str | os.PathLike, what: str, problems: Problems, record: object | None = None) -> bool:
    """Report ``path`` as missing (naming what it should have been) and return whether it exists."""
    if os.path.exists(path):
        return True
    problems.add(path, f"missing {what}", record)
    return False
