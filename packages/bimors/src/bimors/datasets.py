"""The datasets BiMoRS is evaluated on, by name, and the embedded synthetic dataset (spec §3, §7 points 6–7).

Every real dataset lives under one root in the official layout (spec §3.1, names case-sensitive)::

    <root>/<Dir>/images/<class_folder>/<file>.jpg
    <root>/<Dir>/<name>.json                      CoOp split: train/val/test lists of [path, label, classname]
    <root>/<Dir>/shots/shot_<K>-seed_<S>.json     few-shot subsets (RSICD: split_few_shots/), written once

:data:`DATASETS` holds what the spec states about each of them (:class:`DatasetFacts`): class counts,
base/new sizes, split and test sizes, and the label→name order where the spec gives it. Reading a dataset
checks the classes against these facts (a mismatch means the wrong JSON and raises); split sizes that
differ only warn, so that a partial copy still loads.

Class names are kept exactly as stored (``storagetanks``, ``oil_gas_field``); turning ``_`` into a space
is a prompt-building step (spec §3.4). ``clean_names=True`` is the opt-in variant that splits the glued
RSICD/v2 names (``storagetanks`` → ``storage_tanks``).

MLRSNet has no published JSON: :func:`load_dataset` writes ``mlrsnet.json`` once from a **sorted** folder
listing with a fixed seed (:func:`rs_shared.data.scene_cls.folder_to_split`, spec §6.2) and reads that file
ever after. The default dataset, ``"synthetic"``, is the 11-class procedural scene set of
:mod:`rs_shared.data.synthetic`, generated under ``<root>/synthetic`` when absent.

Any other dataset is given as a PATH (anything with a ``/`` or ending in ``.json``): a folder in the layout above
(``images/`` and one split JSON, as ``rs-data convert labels-to-scene`` writes it) or its split JSON. Its
:class:`DatasetFacts` come from the split itself (:func:`split_facts`): the class names in label order, and the
first ⌈C/2⌉ labels as the base classes (the CoOp base-to-new rule).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.scene_cls import SPLITS, SceneSplit, folder_to_split, read_split, write_split
from rs_shared.data.synthetic import SCENE_CLASSES
from rs_shared.data.synthetic.export import SCENE_SPLIT_NAME
from rs_shared.data.synthetic.export import ensure_synthetic as ensure

SYNTHETIC = "synthetic"
SYNTHETIC_N = 330  # 30 images per class: 21 train / 3 val / 6 test
SYNTHETIC_SIZE = 64
MLRSNET_SPLIT_SEED = 1  # seed of the generated MLRSNet split (spec §6.2: sorted listing, fixed seed)
MAX_LISTED_PROBLEMS = 5

# Label order of the APPLeNet JSONs: base classes (labels 0..m-1) then new classes (spec §3.5).
PATTERNNET_CLASSES = (
    "oil_well", "runway", "baseball_field", "sparse_residential", "parking_lot", "oil_gas_field",
    "wastewater_treatment_plant", "crosswalk", "swimming_pool", "shipping_yard", "harbor", "intersection",
    "forest", "nursing_home", "mobile_home_park", "bridge", "closed_road", "coastal_mansion", "golf_course",
    "runway_marking", "overpass", "transformer_station", "tennis_court", "railway", "basketball_court",
    "christmas_tree_farm", "parking_space", "cemetery", "river", "solar_panel", "chaparral", "ferry_terminal",
    "storage_tank", "dense_residential", "beach", "football_field", "freeway", "airplane",
)
RSICD_CLASSES = (
    "center", "farmland", "baseballfield", "playground", "industrial", "storagetanks", "resort", "forest",
    "bridge", "port", "railwaystation", "sparseresidential", "viaduct", "airport", "denseresidential",
    "school", "mountain", "park", "commercial", "parking", "mediumresidential", "meadow", "pond", "river",
    "bareland", "desert", "church", "stadium", "square", "beach",
)
RESISC45_CLASSES = (
    "runway", "lake", "sparse_residential", "wetland", "parking_lot", "roundabout", "terrace", "sea_ice",
    "baseball_diamond", "harbor", "palace", "ship", "intersection", "forest", "ground_track_field",
    "mobile_home_park", "commercial_area", "bridge", "island", "golf_course", "thermal_power_station", "airport",
    "mountain",
    "overpass", "industrial_area", "tennis_court", "railway", "cloud", "basketball_court", "circular_farmland",
    "meadow", "railway_station", "river", "chaparral", "desert", "church", "stadium", "medium_residential",
    "rectangular_farmland", "snowberg", "storage_tank", "dense_residential", "beach", "freeway", "airplane",
)
V2_CLASSES = (  # one label space shared by the four v2 sets (spec §3.6)
    "baseballfield", "sparse_residential", "harbor", "intersection", "forest", "bridge", "overpass", "railway",
    "parking", "meadow", "river", "desert", "stadium", "storage_tank", "dense_residential", "beach",
)
CLEAN_NAMES = {  # opt-in fix of the glued RSICD / v2 names (spec §3.4); parity mode keeps them
    "storagetanks": "storage_tanks", "railwaystation": "railway_station",
    "sparseresidential": "sparse_residential", "denseresidential": "dense_residential",
    "mediumresidential": "medium_residential", "bareland": "bare_land", "baseballfield": "baseball_field",
}


@dataclass(frozen=True)
class DatasetFacts:
    """What the spec states about one dataset (§3.3, §3.5, §3.6, §7 points 6–7).

    ``directory`` / ``split_name`` are the case-sensitive ``<Dir>`` / ``<name>`` pair; ``classnames`` is the
    label order (``None`` where the spec does not give it); ``split_sizes`` is (train, val, test) of the
    published JSON and ``test_base_new`` the test sizes of the base and new halves.
    """

    directory: str
    split_name: str
    num_classes: int
    num_base: int
    num_new: int
    split_sizes: tuple[int, int, int] | None = None
    test_base_new: tuple[int, int] | None = None
    classnames: tuple[str, ...] | None = None
    shots_folder: str = "shots"
    published_split: bool = True

    @property
    def base_classnames(self) -> tuple[str, ...] | None:
        return None if self.classnames is None else self.classnames[:self.num_base]

    @property
    def new_classnames(self) -> tuple[str, ...] | None:
        return None if self.classnames is None else self.classnames[self.num_base:]


DATASETS: dict[str, DatasetFacts] = {
    "PatternNet": DatasetFacts("PatternNet", "patternnet", 38, 19, 19, (14_896, 6_384, 9_120), (4_560, 4_560),
                               PATTERNNET_CLASSES),
    "RSICD": DatasetFacts("RSICD", "rsicd", 30, 15, 15, (4_887, 2_112, 3_001), (1_500, 1_501), RSICD_CLASSES,
                          shots_folder="split_few_shots"),
    "RESISC45": DatasetFacts("RESISC45", "resisc45", 45, 23, 22, (15_435, 6_615, 9_450), (4_830, 4_620),
                             RESISC45_CLASSES),
    "MLRSNet": DatasetFacts("MLRSNet", "mlrsnet", 46, 23, 23, published_split=False),
    "PatternNetv2": DatasetFacts("PatternNetv2", "patternnetv2", 16, 8, 8, (6_272, 2_688, 3_840), None, V2_CLASSES),
    "RSICDv2": DatasetFacts("RSICDv2", "rsicdv2", 16, 8, 8, (2_620, 1_132, 1_608), None, V2_CLASSES),
    "RESISC45v2": DatasetFacts("RESISC45v2", "resisc45v2", 16, 8, 8, (5_488, 2_352, 3_360), None, V2_CLASSES),
    "MLRSNetv2": DatasetFacts("MLRSNetv2", "mlrsnetv2", 16, 8, 8, (19_163, 8_219, 11_741), None, V2_CLASSES),
    SYNTHETIC: DatasetFacts(SYNTHETIC, SCENE_SPLIT_NAME, len(SCENE_CLASSES), 6, 5, None, None, SCENE_CLASSES),
}


@dataclass(frozen=True)
class SceneDataset:
    """A dataset as read from disk: its registry name, directory, split and facts."""

    name: str
    directory: Path
    split: SceneSplit
    facts: DatasetFacts

    @property
    def classnames(self) -> tuple[str, ...]:
        return self.split.classnames


def is_dataset_path(name: str) -> bool:
    """Whether ``name`` names a dataset by path (has a ``/`` or ends in ``.json``) rather than by registry name."""
    return "/" in name or os.sep in name or name.endswith(".json")


def dataset_label(name: str) -> str:
    """A short name for file names and tables: the registry name, or the folder name of a dataset path."""
    if not is_dataset_path(name):
        return name
    path = Path(name)
    return (path.parent if path.suffix == ".json" else path).resolve().name


def dataset_facts(name: str) -> DatasetFacts:
    """The :class:`DatasetFacts` of ``name``: a registry name (case-sensitive, as the directory is named), or a
    dataset path, whose facts are read from its split JSON (:func:`split_facts`)."""
    if is_dataset_path(name):
        json_path = split_json(name)
        return split_facts(json_path, _read(json_path, name))
    if name not in DATASETS:
        hint = next((n for n in DATASETS if n.lower() == name.lower()), None)
        raise KeyError(f"unknown dataset {name!r}" + (f" (did you mean {hint!r}? names are case-sensitive)"
                                                      if hint else "") + f"; known: {', '.join(DATASETS)}, or a "
                       "path to a converted dataset folder (images/ + split JSON) or its split JSON"
                       + (f" (for the folder {name} here, write ./{name})" if Path(name).is_dir() else ""))
    return DATASETS[name]


def dataset_dir(root: str | os.PathLike | None, name: str) -> Path:
    """``<root>/<Dir>`` of dataset ``name``; a dataset path is its own folder (``root`` is not used)."""
    if is_dataset_path(name):
        return split_json(name).parent
    if root is None:
        raise FileNotFoundError(f"no datasets root given: the {name} dataset is read from <root>/"
                                f"{dataset_facts(name).directory}/ (images/ and the split JSON)")
    return Path(root) / dataset_facts(name).directory


def split_json(path: str | os.PathLike) -> Path:
    """The split JSON of a dataset path: the file itself, or the one ``*.json`` beside ``images/`` in the folder
    (``<folder name in lower case>.json``, the converter's default, when there are several)."""
    path = Path(path)
    expected = "expected a dataset folder with images/<class_folder>/<image> and one CoOp split <name>.json, or " \
               "that JSON (rs-data convert labels-to-scene writes both)"
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"split file {path} does not exist; {expected}")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder {path} does not exist; {expected}")
    found = sorted(path.glob("*.json"))
    preferred = path / f"{path.resolve().name.lower()}.json"
    if preferred in found or len(found) == 1:
        return preferred if preferred in found else found[0]
    listed = f"it has {', '.join(f.name for f in found)}" if found else "it has none"
    raise FileNotFoundError(f"{path}: cannot tell which split JSON to read ({listed}); {expected}; or give the "
                            "JSON's path as the dataset")


def split_facts(json_path: str | os.PathLike, split: SceneSplit) -> DatasetFacts:
    """The :class:`DatasetFacts` of a dataset given by path, from its read ``split``: its class names in label
    order, base = the first ⌈C/2⌉ labels and new = the rest (CoOp's base-to-new rule)."""
    json_path = Path(json_path)
    if split.num_classes < 2:
        raise DataFormatError(json_path, f"the split has {split.num_classes} class(es); BiMoRS needs at least 2 "
                                         "(one base and one new class)")
    num_base = math.ceil(split.num_classes / 2)
    return DatasetFacts(json_path.parent.resolve().name, json_path.stem, split.num_classes, num_base,
                        split.num_classes - num_base, classnames=split.classnames)


def _read(json_path: Path, name: str) -> SceneSplit:
    """Read a split JSON (images under ``images/`` beside it); every problem found raises one DataFormatError."""
    problems = Problems(strict=False)
    split = read_split(json_path, json_path.parent / "images", problems)
    if problems.items:
        shown = "\n  ".join(f"record {e.record}: {e.message}" if e.file == os.fspath(json_path) and e.record
                             else str(e) for e in problems.items[:MAX_LISTED_PROBLEMS])
        more = len(problems.items) - MAX_LISTED_PROBLEMS
        raise DataFormatError(json_path, f"{len(problems.items)} problem(s) reading the {name} split:\n  {shown}"
                                         + (f"\n  … and {more} more" if more > 0 else ""))
    return split


def load_dataset(name: str, root: str | os.PathLike | None = None, *, clean_names: bool = False,
                 synthetic_n: int = SYNTHETIC_N, synthetic_seed: int = 0,
                 synthetic_size: int = SYNTHETIC_SIZE) -> SceneDataset:
    """Read dataset ``name`` from ``<root>/<Dir>``, or a dataset given by path (see the module docstring).

    Raises :class:`FileNotFoundError` naming what is expected where when the directory, ``images/`` or the
    split JSON is absent, and :class:`DataFormatError` (listing the first problems and their count) when
    the JSON is malformed, lists missing images, or its classes contradict :data:`DATASETS`. ``"synthetic"``
    is generated (``synthetic_n`` images of ``synthetic_size`` px, seed ``synthetic_seed``) when absent.
    """
    if is_dataset_path(name):
        json_path = split_json(name)
        if not (json_path.parent / "images").is_dir():
            raise FileNotFoundError(f"{name}: no images/ folder beside {json_path}; expected "
                                    f"{json_path.parent}/images/<class_folder>/<image>")
        split = _read(json_path, name)
        facts, directory = split_facts(json_path, split), json_path.parent
    else:
        facts = dataset_facts(name)
        directory = dataset_dir(root, name)
        if name == SYNTHETIC:
            ensure_synthetic(directory, synthetic_n, synthetic_seed, synthetic_size)
        _require_layout(name, facts, directory)
        json_path = directory / f"{facts.split_name}.json"
        if not facts.published_split and not json_path.exists():
            write_split(json_path, folder_to_split(directory / "images", seed=MLRSNET_SPLIT_SEED))
        split = _read(json_path, name)
        check_facts(facts, split, json_path)
    if clean_names:
        split = clean_classnames(split)
    return SceneDataset(name, directory, split, facts)


def _require_layout(name: str, facts: DatasetFacts, directory: Path) -> None:
    """A FileNotFoundError that says what :func:`load_dataset` expects where."""
    json_name = f"{facts.split_name}.json"
    expected = (f"expected {directory}/images/<class_folder>/<image> and "
                + (f"the split {directory}/{json_name}" if facts.published_split else
                   f"(optionally) the split {directory}/{json_name}, generated from the sorted listing when absent"))
    offline = "" if name == SYNTHETIC else (" Datasets cannot be downloaded here: copy the dataset (and the "
                                            "APPLeNet split JSON) into place first.")
    if not directory.is_dir():
        raise FileNotFoundError(f"{name}: dataset directory {directory} does not exist; {expected}.{offline}")
    if not (directory / "images").is_dir():
        raise FileNotFoundError(f"{name}: no images/ folder in {directory}; {expected}.{offline}")
    if facts.published_split and not (directory / json_name).is_file():
        raise FileNotFoundError(f"{name}: split file {directory / json_name} is missing; {expected}.{offline}")


def check_facts(facts: DatasetFacts, split: SceneSplit, json_path: str | os.PathLike) -> None:
    """Compare a read split with the registry: the class count and (where known) the label→name order must
    match (:class:`DataFormatError` otherwise); differing split sizes only warn (a partial copy)."""
    if split.num_classes != facts.num_classes:
        raise DataFormatError(json_path, f"{facts.directory} has {facts.num_classes} classes, this split has "
                                         f"{split.num_classes}: is it the right JSON?")
    if facts.classnames is not None and split.classnames != facts.classnames:
        wrong = [f"{label}: {got!r} (expected {want!r})" for label, (got, want)
                 in enumerate(zip(split.classnames, facts.classnames, strict=True)) if got != want]
        raise DataFormatError(json_path, f"labels do not follow the {facts.directory} label order of the published "
                                         f"split; " + "; ".join(wrong[:MAX_LISTED_PROBLEMS]))
    sizes = tuple(len(split[s]) for s in SPLITS)
    if facts.split_sizes is not None and sizes != facts.split_sizes:
        warnings.warn(f"{json_path}: train/val/test sizes {sizes} differ from the published "
                      f"{facts.split_sizes} of {facts.directory} (a partial or different copy)", stacklevel=3)


def clean_classnames(split: SceneSplit) -> SceneSplit:
    """``split`` with the glued names of :data:`CLEAN_NAMES` split by ``_`` (samples and class list)."""
    def fix(name: str) -> str:
        return CLEAN_NAMES.get(name, name)

    def samples(items):
        return tuple(replace(s, classname=fix(s.classname)) for s in items)

    return SceneSplit(samples(split.train), samples(split.val), samples(split.test),
                      tuple(fix(n) for n in split.classnames))


def ensure_synthetic(directory: str | os.PathLike, n: int = SYNTHETIC_N, seed: int = 0,
                     size: int = SYNTHETIC_SIZE) -> Path:
    """The embedded default dataset at ``directory``: rs_shared's synthetic scene dataset (task ``"scene"``),
    generated when absent or empty, else checked against its manifest; files added later, such as ``shots/``
    and caption caches, are allowed (:func:`rs_shared.data.synthetic.export.ensure_synthetic`)."""
    return ensure("scene", directory, n, seed=seed, size=size, allow_added_files=True)
