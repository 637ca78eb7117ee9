"""``manifest.json``: what ``rs-data synth`` wrote (format, counts, generator version, seed, a SHA-256 per
file), so that ``rs-data check`` can tell a complete, unmodified dataset from a damaged one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from .common import read_json, write_json
from .errors import Problems

MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: str | os.PathLike, *, format: str, task: str, counts: dict[str, int],
                   generator: dict[str, Any]) -> Path:
    """Hash every file under ``root`` (except the manifest itself) and write ``root/manifest.json``."""
    root = Path(root)
    files = {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    path = root / MANIFEST
    write_json(path, {"format": format, "task": task, "counts": counts, "generator": generator,
                      "files": files}, indent=1)
    return path


def read_manifest(root: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    return read_json(path) if path.is_file() else None


def verify_manifest(root: str | os.PathLike, problems: Problems) -> dict[str, Any] | None:
    """Report files listed in the manifest that are missing or whose checksum changed, and files added
    since. Returns the manifest, or ``None`` when there is none."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        return None
    path = root / MANIFEST
    files = manifest.get("files")
    if not isinstance(files, dict):
        problems.add(path, "field 'files' must map relative paths to SHA-256 digests")
        return manifest
    for rel, digest in files.items():
        p = root / rel
        if not p.is_file():
            problems.add(p, "listed in manifest.json but missing")
        elif sha256_file(p) != digest:
            problems.add(p, "checksum differs from manifest.json (file changed since it was generated)")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and p.name != MANIFEST and rel not in files:
            problems.add(p, "file is not listed in manifest.json (added after generation)")
    return manifest
