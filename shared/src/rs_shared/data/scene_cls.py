"""Scene-classification datasets: a folder per class plus a CoOp-style split JSON.

On-disk layout (the one the BiMoRS / CoOp loaders expect)::

    <dir>/images/<class_folder>/<file>      the pictures
    <dir>/<name>.json                       the split: {"train": [...], "val": [...], "test": [...]}
    <dir>/shots/shot_<K>-seed_<S>.json      few-shot train/val subsets written by :func:`save_shots`

Each split list holds triples ``[path relative to images/, label, classname]``. Labels are 0-based and
the **integer label defines the class index** (and therefore the base/new partition): the published
JSONs are not alphabetical, so nothing here re-sorts classes. Class names are kept exactly as stored
(``oil_gas_field``, ``storagetanks``); turning ``_`` into a space is a prompt-building step, not a data
one.

Protocol helpers, with the exact semantics of Dassl/CoOp so that published shots can be reproduced:

* :func:`few_shot` — K images per class from train, ``min(K, 4)`` from val, test kept whole;
* :func:`subsample_classes` — the base/new split (first ``ceil(n/2)`` train labels are base), relabelled;
* :func:`folder_to_split` — a split JSON for a folder of class folders that has none.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from PIL import Image

from .common import RecordDataset, as_array, read_image, read_json, require_keys, write_json
from .errors import DataFormatError, Problems

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
MAX_VAL_SHOTS = 4  # Dassl/CoOp: the few-shot val subset has min(K, 4) images per class


@dataclass(frozen=True)
class SceneSample:
    """One labelled image. ``path`` is the image file; ``impath_rel`` is the same file as written in the
    split JSON (POSIX path relative to ``images/``)."""

    path: Path
    label: int
    classname: str
    impath_rel: str

    def load(self) -> dict[str, Any]:
        """``{"image": (H, W, 3) uint8, "label": int, "classname": str}``."""
        image = as_array(read_image(self.path, record=self.impath_rel))
        return {"image": image, "label": self.label, "classname": self.classname}

    def triple(self) -> list:
        """The split-JSON form ``[impath_rel, label, classname]``."""
        return [self.impath_rel, self.label, self.classname]


@dataclass(frozen=True)
class SceneSplit:
    """The three lists of a split file, in file order, and the class names indexed by label.

    In collecting mode (``Problems(strict=False)``) a label that no valid record carries gets the class
    name ``""``; the gap itself is reported as a problem.
    """

    train: tuple[SceneSample, ...]
    val: tuple[SceneSample, ...]
    test: tuple[SceneSample, ...]
    classnames: tuple[str, ...]

    def __getitem__(self, name: str) -> tuple[SceneSample, ...]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


_EMPTY = SceneSplit((), (), (), ())


# --------------------------------------------------------------------------------------------- reading


def _triple_error(item: object) -> str | None:
    """What is wrong with one ``[path, label, classname]`` entry, or ``None``."""
    if not isinstance(item, list) or len(item) != 3:
        return f"expected a [path, label, classname] triple, got {_short(item)}"
    rel, label, name = item
    if not isinstance(rel, str) or not rel:
        return f"path must be a non-empty string relative to images/, got {_short(rel)}"
    if os.path.isabs(rel) or ".." in PurePosixPath(rel).parts:
        return f"path must be relative to images/ and stay inside it, got {rel!r}"
    if not isinstance(label, int) or isinstance(label, bool) or label < 0:
        return f"label must be a non-negative int, got {_short(label)}"
    if not isinstance(name, str) or not name:
        return f"classname must be a non-empty string, got {_short(name)}"
    return None


def _short(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'…' if len(text) > 60 else ''}"


def _read_json_into(path: Path, problems: Problems) -> Any:
    """:func:`read_json`, but in collecting mode an unreadable file is a problem and ``None``."""
    try:
        return read_json(path)
    except DataFormatError as e:
        problems.add(e.file, e.message, e.record)
        return None


def _classnames(names: Mapping[int, str]) -> tuple[str, ...]:
    return tuple(names.get(label, "") for label in range(max(names, default=-1) + 1))


def read_split(json_path: str | os.PathLike, image_dir: str | os.PathLike | None = None,
               problems: Problems | None = None) -> SceneSplit:
    """Read and validate a CoOp split JSON; images are resolved under ``image_dir`` (default: the
    ``images/`` folder next to the JSON).

    Checked, each reported with its record (``train[12]``): the object has ``train``/``val``/``test``
    lists; every entry is a ``[str, int >= 0, str]`` triple with a relative path; no path appears twice
    (across or within splits); every label keeps one class name and every class name one label (the
    first occurrence defines them, a later record with another name is an *unknown class* for that label);
    the image file exists. Finally the labels must be exactly ``0..C-1``.
    """
    json_path = Path(json_path)
    image_dir = json_path.parent / "images" if image_dir is None else Path(image_dir)
    problems = Problems() if problems is None else problems
    obj = _read_json_into(json_path, problems)
    if obj is None:
        return _EMPTY
    if not isinstance(obj, dict):
        problems.add(json_path, f"expected an object with keys {list(SPLITS)}, got {type(obj).__name__}")
        return _EMPTY

    names: dict[int, tuple[str, str]] = {}  # label -> (classname, record that defined it)
    labels: dict[str, tuple[int, str]] = {}  # classname -> (label, record that defined it)
    where: dict[str, str] = {}  # impath_rel -> record
    out: dict[str, list[SceneSample]] = {}
    for split in SPLITS:
        out[split] = []
        items = obj.get(split)
        if not isinstance(items, list):
            got = "missing" if items is None else f"a {type(items).__name__}"
            problems.add(json_path, f"key '{split}' must be a list of [path, label, classname] triples, "
                                    f"got {got}")
            continue
        for i, item in enumerate(items):
            record = f"{split}[{i}]"
            if (error := _triple_error(item)) is not None:
                problems.add(json_path, error, record)
                continue
            rel, label, name = item
            if rel in where:
                problems.add(json_path, f"duplicate path {rel!r} (already listed as {where[rel]})", record)
                continue
            if label in names and names[label][0] != name:
                known, defined = names[label]
                problems.add(json_path, f"unknown class {name!r} for label {label}: label {label} is "
                                        f"{known!r} (defined by {defined})", record)
                continue
            if name in labels and labels[name][0] != label:
                known, defined = labels[name]
                problems.add(json_path, f"inconsistent label {label} for class {name!r}: {name!r} has "
                                        f"label {known} (defined by {defined})", record)
                continue
            where[rel] = record
            names.setdefault(label, (name, record))
            labels.setdefault(name, (label, record))
            path = image_dir / rel
            if not path.is_file():
                problems.add(json_path, f"image file is missing: {path}", record)
                continue
            out[split].append(SceneSample(path, label, name, rel))

    gaps = [label for label in range(max(names, default=-1) + 1) if label not in names]
    if gaps:
        problems.add(json_path, f"labels must be 0..C-1 without gaps; no record has label(s) "
                                f"{', '.join(map(str, gaps))}")
    return SceneSplit(*(tuple(out[s]) for s in SPLITS), _classnames({k: v[0] for k, v in names.items()}))


# --------------------------------------------------------------------------------------------- writing


def write_split(json_path: str | os.PathLike, split: SceneSplit) -> None:
    """Write ``split`` as a CoOp split JSON (triples in list order, 4-space indent as CoOp writes it)."""
    write_json(json_path, {name: [s.triple() for s in split[name]] for name in SPLITS}, indent=4)


def write_dataset(root: str | os.PathLike, name: str,
                  samples: Mapping[str, Iterable[tuple[np.ndarray, int, str]]],
                  ext: Literal["jpg", "png"] = "jpg", quality: int = 95) -> SceneSplit:
    """Write a scene dataset in the official layout and return its split.

    ``samples`` maps ``"train"``/``"val"``/``"test"`` (absent = empty) to ``(image, label, classname)``
    with ``image`` an ``(H, W, 3)`` uint8 array. Images go to ``images/<classname>/<classname>_<i>.<ext>``,
    ``i`` counting from 0 per class across train, val and test (the v2 naming); the split to
    ``<name>.json``. ``ext="png"`` is lossless; ``quality`` applies to JPEG only.
    Invalid input (unknown split, bad array, a label with two names, labels not ``0..C-1``) raises
    ``ValueError`` before anything is written.
    """
    if ext not in ("jpg", "png"):
        raise ValueError(f"ext must be 'jpg' or 'png', got {ext!r}")
    if unknown := set(samples) - set(SPLITS):
        raise ValueError(f"unknown split name(s) {sorted(unknown)}; expected {SPLITS}")
    items = {split: [(np.asarray(a), lab, cls) for a, lab, cls in samples.get(split, ())] for split in SPLITS}
    names: dict[int, str] = {}
    for split, entries in items.items():
        for i, (image, label, classname) in enumerate(entries):
            where = f"{split}[{i}]"
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"{where}: image must be an (H, W, 3) uint8 array, "
                                 f"got {image.dtype} {image.shape}")
            if not isinstance(label, int) or isinstance(label, bool) or label < 0:
                raise ValueError(f"{where}: label must be a non-negative int, got {label!r}")
            if not isinstance(classname, str) or classname in ("", ".", "..") or set("/\\") & set(classname):
                raise ValueError(f"{where}: classname must be usable as a folder name, got {classname!r}")
            if names.setdefault(label, classname) != classname:
                raise ValueError(f"{where}: label {label} is {names[label]!r}, got classname {classname!r}")
    classnames = _classnames(names)
    if "" in classnames or len(set(classnames)) != len(classnames):
        raise ValueError(f"labels must be 0..C-1 with one distinct classname each, got {names}")

    root = Path(root)
    counts = dict.fromkeys(classnames, 0)
    out: dict[str, list[SceneSample]] = {}
    for split, entries in items.items():
        out[split] = []
        for image, label, classname in entries:
            rel = f"{classname}/{classname}_{counts[classname]}.{ext}"
            counts[classname] += 1
            path = root / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if ext == "jpg":
                Image.fromarray(image).save(path, quality=quality)
            else:
                Image.fromarray(image).save(path)
            out[split].append(SceneSample(path, label, classname, rel))
    split = SceneSplit(*(tuple(out[s]) for s in SPLITS), classnames)
    write_split(root / f"{name}.json", split)
    return split


def _split_sizes(n: int, p_train: float, p_val: float) -> tuple[int, int]:
    """``(n_train, n_val)`` for a class of ``n`` images; the rest is test. See :func:`folder_to_split`."""
    n_train = round(n * p_train)
    n_val = min(n - n_train, round(n * p_val))
    if n >= 3:
        n_train = max(n_train, 1)
        n_val = max(n_val, 1) if p_val > 0 else n_val
        while n - n_train - n_val < 1:  # give test its image, taking from the larger of train/val
            if n_train >= n_val:
                n_train -= 1
            else:
                n_val -= 1
    return n_train, n_val


def folder_to_split(image_dir: str | os.PathLike, p_train: float = 0.5, p_val: float = 0.2,
                    seed: int = 1) -> SceneSplit:
    """Build a CoOp-style split from ``image_dir/<class_folder>/<image>`` (used by ``rs-data convert``).

    Rule, per class: labels are the class folders sorted by name (label ``i`` = ``i``-th folder, class
    name = folder name); the class's image files (extensions in :data:`IMAGE_EXTENSIONS`, hidden files
    and sub-folders ignored) are **sorted by name** and shuffled with one ``random.Random(seed)`` that
    serves the classes in label order; then ``n_train = round(n·p_train)``, ``n_val = round(n·p_val)``
    (Python's half-to-even ``round``, as CoOp), test gets the rest. When ``n >= 3`` every split gets at
    least one image: train (and val, when ``p_val > 0``) is raised to 1, and while test would be empty the
    larger of train/val (train on a tie) gives one up. With ``n < 3`` the rounded sizes stand
    (``n = 1`` → test; ``n = 2`` → 1 train + 1 test at the defaults).

    This is CoOp's ``read_and_split_data`` with ``random.seed(seed)`` on a sorted listing; sorting fixes
    the official MLRSNet loader's dependence on the filesystem's listing order.
    """
    image_dir = Path(image_dir)
    if not (0 < p_train and 0 <= p_val and p_train + p_val < 1):
        raise ValueError(f"need 0 < p_train, 0 <= p_val and p_train + p_val < 1, got {p_train}, {p_val}")
    if not image_dir.is_dir():
        raise DataFormatError(image_dir, "missing image directory (expected one sub-folder per class)")
    classes = sorted(d.name for d in image_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataFormatError(image_dir, "no class folders (expected images/<class_folder>/<file>)")
    rng = random.Random(seed)
    out: dict[str, list[SceneSample]] = {s: [] for s in SPLITS}
    for label, classname in enumerate(classes):
        files = sorted(f.name for f in (image_dir / classname).iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataFormatError(image_dir / classname, f"class folder holds no images "
                                  f"(extensions {sorted(IMAGE_EXTENSIONS)})")
        rng.shuffle(files)
        n_train, n_val = _split_sizes(len(files), p_train, p_val)
        parts = {"train": files[:n_train], "val": files[n_train:n_train + n_val],
                 "test": files[n_train + n_val:]}
        for split, names in parts.items():
            out[split].extend(SceneSample(image_dir / classname / f, label, classname, f"{classname}/{f}")
                              for f in names)
    return SceneSplit(*(tuple(out[s]) for s in SPLITS), tuple(classes))


# ------------------------------------------------------------------------------------ few-shot, base/new


def _sample_per_label(samples: Sequence[SceneSample], k: int, rng: random.Random) -> tuple[SceneSample, ...]:
    groups: dict[int, list[SceneSample]] = {}
    for s in samples:  # dict order = order of first appearance, as Dassl's split_dataset_by_label
        groups.setdefault(s.label, []).append(s)
    out: list[SceneSample] = []
    for items in groups.values():
        out.extend(rng.sample(items, k) if len(items) >= k else items)
    return tuple(out)


def few_shot(split: SceneSplit, num_shots: int, seed: int) -> SceneSplit:
    """Dassl's few-shot subsets: ``num_shots`` train and ``min(num_shots, 4)`` val images per class.

    Exactly Dassl's ``generate_fewshot_dataset`` run right after ``random.seed(seed)``: items are grouped by
    label in order of first appearance; a label with at least K items gets ``random.sample(items, K)``
    (even when it has exactly K, which still permutes them), a smaller one keeps all its items in order;
    train is sampled first, then val. A private ``random.Random(seed)`` is used, so the global RNG is left
    alone: for an int seed it starts in the same state as ``random.seed(seed)`` and yields the same
    sequence. The test list is kept whole and class names are unchanged.
    """
    if num_shots < 1:
        raise ValueError(f"num_shots must be >= 1, got {num_shots} (use the full split instead)")
    rng = random.Random(seed)
    train = _sample_per_label(split.train, num_shots, rng)
    val = _sample_per_label(split.val, min(num_shots, MAX_VAL_SHOTS), rng)
    return SceneSplit(train, val, split.test, split.classnames)


def shots_path(dataset_dir: str | os.PathLike, num_shots: int, seed: int) -> Path:
    """Where the shots for ``(num_shots, seed)`` live: ``<dir>/shots/shot_<K>-seed_<S>.json``."""
    return Path(dataset_dir) / "shots" / f"shot_{num_shots}-seed_{seed}.json"


def save_shots(path: str | os.PathLike, shots: SceneSplit, *, num_shots: int, seed: int) -> None:
    """Store the train/val lists of a :func:`few_shot` result as JSON (never pickle):
    ``{"num_shots": K, "seed": S, "train": [triples], "val": [triples]}`` with paths relative to images/."""
    write_json(path, {"num_shots": num_shots, "seed": seed,
                      "train": [s.triple() for s in shots.train], "val": [s.triple() for s in shots.val]},
               indent=1)


def load_shots(path: str | os.PathLike, split: SceneSplit, *, num_shots: int | None = None,
               seed: int | None = None, problems: Problems | None = None) -> SceneSplit:
    """Read shots written by :func:`save_shots` and check them against the ``split`` they came from.

    Every triple must be a sample of the same list of ``split`` (same path, label and class name), listed
    once, with at most ``K`` train / ``min(K, 4)`` val samples per label. ``num_shots`` / ``seed``, when
    given, must match the stored values. Returns the shots with ``split``'s test list and class names.
    """
    path = Path(path)
    problems = Problems() if problems is None else problems
    obj = _read_json_into(path, problems)
    if obj is None or not require_keys(obj, {"num_shots": int, "seed": int, "train": list, "val": list},
                                       path, None, problems):
        return SceneSplit((), (), split.test, split.classnames)
    for key, expected in (("num_shots", num_shots), ("seed", seed)):
        if expected is not None and obj[key] != expected:
            problems.add(path, f"'{key}' is {obj[key]}, expected {expected}")
    limits = {"train": obj["num_shots"], "val": min(obj["num_shots"], MAX_VAL_SHOTS)}
    out: dict[str, list[SceneSample]] = {}
    for name, limit in limits.items():
        known = {s.impath_rel: s for s in split[name]}
        taken: dict[str, str] = {}
        per_label: dict[int, int] = {}
        out[name] = []
        for i, item in enumerate(obj[name]):
            record = f"{name}[{i}]"
            if (error := _triple_error(item)) is not None:
                problems.add(path, error, record)
                continue
            sample = known.get(item[0])
            if sample is None:
                problems.add(path, f"{item[0]!r} is not in the split's {name} list", record)
            elif sample.triple() != item:
                problems.add(path, f"{item} disagrees with the split's {sample.triple()}", record)
            elif item[0] in taken:
                problems.add(path, f"duplicate path {item[0]!r} (already listed as {taken[item[0]]})", record)
            elif per_label.get(sample.label, 0) >= limit:
                problems.add(path, f"more than {limit} {name} shots for label {sample.label}", record)
            else:
                taken[item[0]] = record
                per_label[sample.label] = per_label.get(sample.label, 0) + 1
                out[name].append(sample)
    return SceneSplit(tuple(out["train"]), tuple(out["val"]), split.test, split.classnames)


def subsample_classes(split: SceneSplit, which: Literal["all", "base", "new"]) -> SceneSplit:
    """CoOp's base/new partition, applied to train, val and test alike.

    Labels present in ``split.train`` (the few-shot train list, when sampling comes first as in the
    protocol) are sorted; with ``n`` of them and ``m = ceil(n / 2)``, base is ``labels[:m]`` and new
    ``labels[m:]``. The kept classes are relabelled ``0..k-1`` in that order; records of other classes are
    dropped. ``"all"`` returns ``split`` unchanged.
    """
    if which == "all":
        return split
    if which not in ("base", "new"):
        raise ValueError(f"which must be 'all', 'base' or 'new', got {which!r}")
    labels = sorted({s.label for s in split.train})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if which == "base" else labels[m:]
    relabel = {old: new for new, old in enumerate(selected)}

    def keep(samples: Sequence[SceneSample]) -> tuple[SceneSample, ...]:
        return tuple(replace(s, label=relabel[s.label]) for s in samples if s.label in relabel)

    return SceneSplit(keep(split.train), keep(split.val), keep(split.test),
                      tuple(split.classnames[label] for label in selected))


# ------------------------------------------------------------------------------- torch / HF datasets


class SceneClassificationDataset(RecordDataset):
    """Torch dataset over :class:`SceneSample` records; item ``i`` is ``transform(samples[i].load())``.
    ``classnames`` (indexed by label) is kept for prompt building."""

    def __init__(self, samples: Sequence[SceneSample], classnames: Sequence[str],
                 transform: Callable[[dict], Any] | None = None):
        super().__init__(samples, transform)
        self.classnames = tuple(classnames)

    @classmethod
    def from_split(cls, split: SceneSplit, name: str,
                   transform: Callable[[dict], Any] | None = None) -> SceneClassificationDataset:
        return cls(split[name], split.classnames, transform)


def to_hf_dataset(samples: Sequence[SceneSample], classnames: Sequence[str] | None = None):
    """A ``datasets.Dataset`` with columns ``image`` (``datasets.Image``), ``label`` (``ClassLabel`` over
    ``classnames`` when given, else int64), ``classname`` and ``path`` (relative to images/).

    Images are referenced by file path; ``save_to_disk`` / ``push_to_hub`` embed their bytes.
    """
    import datasets

    label = datasets.ClassLabel(names=list(classnames)) if classnames is not None else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "label": label,
                                  "classname": datasets.Value("string"), "path": datasets.Value("string")})
    return datasets.Dataset.from_dict({
        "image": [str(s.path) for s in samples],
        "label": [s.label for s in samples],
        "classname": [s.classname for s in samples],
        "path": [s.impath_rel for s in samples],
    }, features=features)


# ------------------------------------------------------------------------------------------ rs-data check


def _is_split_file(path: Path) -> bool:
    """A JSON object with a ``train`` key; an unparsable file counts when it opens like one (``{`` and
    ``"train"`` in its first kilobyte), so that ``check`` can report it as truncated."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        head = path.read_bytes()[:1024].lstrip()
        return head.startswith(b"{") and b'"train"' in head
    return isinstance(obj, dict) and "train" in obj


def split_files(root: str | os.PathLike) -> list[Path]:
    """The split JSONs directly under ``root`` (``manifest.json`` excluded), sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p for p in sorted(root.glob("*.json")) if p.name != "manifest.json" and _is_split_file(p)]


def detect(root: str | os.PathLike) -> bool:
    """Whether ``root`` is a scene-classification dataset: an ``images/`` folder and at least one split
    JSON next to it."""
    return (Path(root) / "images").is_dir() and bool(split_files(root))


def check(root: str | os.PathLike, problems: Problems) -> dict[str, int]:
    """Validate every split JSON of ``root`` with :func:`read_split` and count its records.

    Returns ``{"train": n, "val": n, "test": n, "classes": C}``; with several split files the keys are
    prefixed by the file's stem (``"patternnet/train"``).
    """
    root = Path(root)
    files = split_files(root)
    if not files:
        problems.add(root, "no split JSON (an object with train/val/test lists of [path, label, classname])")
        return {}
    if not (root / "images").is_dir():
        problems.add(root / "images", "missing image directory (expected images/<class_folder>/<file>)")
        return {}
    counts: dict[str, int] = {}
    for f in files:
        split = read_split(f, root / "images", problems)
        prefix = "" if len(files) == 1 else f"{f.stem}/"
        counts.update({f"{prefix}{name}": len(split[name]) for name in SPLITS})
        counts[f"{prefix}classes"] = split.num_classes
    return counts
