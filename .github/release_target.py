"""Map a release tag to its distribution and check that the tree is ready to release that version.

Used by ``.github/workflows/release.yml`` (and by hand before tagging)::

    python .github/release_target.py icipnet-v0.2.0 >> "$GITHUB_OUTPUT"

A tag is ``<prefix>-v<version>`` with a prefix of :data:`DISTRIBUTIONS`. The tree must have:

- ``<dir>/pyproject.toml`` with ``project.name`` the prefix's distribution and ``project.version`` equal to the
  tag's version (same string);
- ``__version__ = "<version>"`` in ``<dir>/src/<module>/__init__.py``;
- a dated section ``## [<version>] - YYYY-MM-DD`` in ``<dir>/CHANGELOG.md``.

On success it prints ``key=value`` lines (``package``, ``directory``, ``version``, ``shared_version`` — the
rs-shared version of this tree, which PyPI must already have before a model package is published — and
``pytest_k``, the ``pytest -k`` selection of the wheel tests; empty for rs-shared, whose change concerns every
package). Otherwise it prints every problem, each naming its file, to stderr and exits 1. Standard library only.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# tag prefix -> (distribution, directory in the repository, import name)
DISTRIBUTIONS = {
    "shared": ("rs-shared", "shared", "rs_shared"),
    "bimors": ("rs-bimors", "packages/bimors", "bimors"),
    "clvnet": ("rs-clvnet", "packages/clvnet", "clvnet"),
    "icipnet": ("rs-icipnet", "packages/icipnet", "icipnet"),
    "rscovlm": ("rs-rscovlm", "packages/rscovlm", "rscovlm"),
}
TAG = re.compile(r"(?P<prefix>[a-z]+)-v(?P<version>[0-9][0-9A-Za-z.+!-]*)")
VERSION_ATTRIBUTE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


def project(directory: Path) -> dict:
    """The ``[project]`` table of ``directory/pyproject.toml``."""
    return tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})


def problems(prefix: str, version: str) -> list[str]:
    """What stops ``<prefix>-v<version>`` from being released from this tree (each naming its file, relative to the
    repository root); empty when it is ready."""
    name, directory, module = DISTRIBUTIONS[prefix]
    found = []
    meta = project(ROOT / directory)
    pyproject = f"{directory}/pyproject.toml"
    if meta.get("name") != name:
        found.append(f"{pyproject}: project.name is {meta.get('name')!r}, expected {name!r}")
    if meta.get("version") != version:
        found.append(f"{pyproject}: project.version is {meta.get('version')!r} but the tag says {version!r}; "
                     "bump the version (and __version__, CHANGELOG.md) in a commit, then tag that commit")
    init = f"{directory}/src/{module}/__init__.py"
    text = (ROOT / init).read_text(encoding="utf-8") if (ROOT / init).is_file() else ""
    attribute = VERSION_ATTRIBUTE.search(text)
    if attribute is None or attribute.group(1) != version:
        found.append(f"{init}: __version__ is {attribute.group(1) if attribute else None!r}, expected {version!r}")
    changelog = f"{directory}/CHANGELOG.md"
    text = (ROOT / changelog).read_text(encoding="utf-8") if (ROOT / changelog).is_file() else ""
    if not re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}\s*$", text, re.M):
        found.append(f"{changelog}: no section '## [{version}] - YYYY-MM-DD' (date the release's section before "
                     "tagging)")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: release_target.py TAG   (e.g. icipnet-v0.2.0)", file=sys.stderr)
        return 2
    tag = argv[0].removeprefix("refs/tags/")
    match = TAG.fullmatch(tag)
    if match is None or match["prefix"] not in DISTRIBUTIONS:
        print(f"release tag {tag!r}: expected <prefix>-v<version> with a prefix of {', '.join(DISTRIBUTIONS)} "
              "(e.g. icipnet-v0.2.0)", file=sys.stderr)
        return 1
    prefix, version = match["prefix"], match["version"]
    found = problems(prefix, version)
    if found:
        print(f"release tag {tag}: not releasable from this commit:", *(f"  - {p}" for p in found), sep="\n",
              file=sys.stderr)
        return 1
    name, directory, _ = DISTRIBUTIONS[prefix]
    print(f"package={name}\ndirectory={directory}\nversion={version}\n"
          f"shared_version={project(ROOT / 'shared')['version']}\npytest_k={'' if prefix == 'shared' else prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
