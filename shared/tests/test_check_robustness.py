"""`rs-data check` and `show` on randomly damaged datasets: every damage is a reported problem or a clean
error message, never an unhandled exception (a bare traceback)."""

import contextlib
import io
import json
import pickle
import random
import shutil

import pytest

from rs_shared.data.cli import main
from rs_shared.data.synthetic.export import synthesize

WRONG_VALUES = [None, 0, -1, 1.5, "x", "", [], {}, [1, 2, 3], {"a": 1}, True, [[1, 2, 3]], float("nan")]
FORMATS = {"scene": ("scene", {}), "rrsisd": ("refseg", {}), "refsegrs": ("refseg", {"layout": "refsegrs"}),
           "gcg": ("gcg", {}), "dota": ("dota", {"size": 256}), "sft": ("sft", {"size": 64})}


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    for name, (task, kwargs) in FORMATS.items():
        synthesize(task, root / name, n=5, seed=2, **kwargs)
    return root


def json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from json_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:3]):
            yield from json_paths(value, (*prefix, i))


def replace_at(obj, path, value):
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return obj


def damage(root, rng):
    """One random damage: a JSON/pickle value of the wrong type or shape, a garbled token in a text
    file, or a truncated file. Returns whether any byte changed (a damage can be a no-op)."""
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    files = [p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"]
    texts = [p for p in files if p.suffix in (".json", ".txt")]
    pickles = [p for p in files if p.suffix == ".p"]
    roll = rng.random()
    if pickles and roll < 0.2:
        refs = pickle.loads(pickles[0].read_bytes())  # safe: the test's own freshly generated file
        refs = replace_at(refs, rng.choice(list(json_paths(refs))), rng.choice(WRONG_VALUES))
        pickles[0].write_bytes(pickle.dumps(refs, protocol=2))
    elif texts and roll < 0.9:
        f = rng.choice(texts)
        if f.suffix == ".json":
            obj = json.loads(f.read_text())
            obj = replace_at(obj, rng.choice(list(json_paths(obj))), rng.choice(WRONG_VALUES))
            f.write_text(json.dumps(obj))
        else:
            lines = f.read_text().splitlines() or [""]
            i = rng.randrange(len(lines))
            tokens = lines[i].split() or [""]
            tokens[rng.randrange(len(tokens))] = rng.choice(["nan", "", "x", "-5", "1e309", "9" * 30])
            lines[i] = " ".join(tokens)
            f.write_text("\n".join(lines))
    else:
        f = rng.choice(files)
        data = f.read_bytes()
        f.write_bytes(data[: rng.randrange(max(1, len(data)))])
    return any(p.read_bytes() != data for p, data in before.items())


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # PIL on a truncated TIFF
@pytest.mark.parametrize("trial", range(60))
def test_damaged_dataset_never_crashes_check_or_show(originals, tmp_path, trial):
    rng = random.Random(trial)
    name = sorted(FORMATS)[trial % len(FORMATS)]
    root = shutil.copytree(originals / name, tmp_path / name)
    changed = damage(root, rng)
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        code = main(["check", str(root)])
        main(["show", str(root), "--out", str(tmp_path / "x.png")])
    # damage that no reader notices is still caught by the manifest checksums
    assert code == (1 if changed else 0), out.getvalue()
