"""Scene-classification layer: CoOp split JSON, Dassl few-shot, base/new, folder splits, writers, checks."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.scene_cls import (
    SceneClassificationDataset,
    SceneSample,
    SceneSplit,
    _split_sizes,
    check,
    detect,
    few_shot,
    folder_to_split,
    load_shots,
    read_split,
    save_shots,
    shots_path,
    subsample_classes,
    to_hf_dataset,
    write_dataset,
    write_split,
)

# Labels follow the file, not the alphabet (as in the APPLeNet JSONs); names are kept glued/underscored.
SPLIT_JSON = """{
    "train": [
        ["oil_well/oil_well_0.png", 0, "oil_well"],
        ["oil_well/oil_well_1.png", 0, "oil_well"],
        ["oil_well/oil_well_2.png", 0, "oil_well"],
        ["forest/forest_0.png", 1, "forest"],
        ["forest/forest_1.png", 1, "forest"],
        ["storagetanks/tanks_a.jpg", 2, "storagetanks"]
    ],
    "val": [
        ["oil_well/oil_well_3.png", 0, "oil_well"],
        ["forest/forest_2.png", 1, "forest"]
    ],
    "test": [
        ["oil_well/oil_well_4.png", 0, "oil_well"],
        ["forest/forest_3.png", 1, "forest"],
        ["storagetanks/tanks_b.jpg", 2, "storagetanks"]
    ]
}
"""
PATHS = [t[0] for s in ("train", "val", "test") for t in json.loads(SPLIT_JSON)[s]]


def _pixels(i: int, h: int = 6, w: int = 5) -> np.ndarray:
    """A distinct tiny picture: flat colour per index plus a bright top-left pixel."""
    a = np.empty((h, w, 3), np.uint8)
    a[:] = (20 * i % 256, 255 - 15 * i, 60 + 7 * i)
    a[0, 0] = 255
    return a


@pytest.fixture
def scene_dir(tmp_path: Path) -> Path:
    root = tmp_path / "SceneSet"
    for i, rel in enumerate(PATHS):
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_pixels(i)).save(path, quality=100)  # quality is ignored for PNG
    (root / "sceneset.json").write_text(SPLIT_JSON, encoding="utf-8")
    return root


def _broken(root: Path, edit) -> Path:
    """Rewrite sceneset.json with ``edit(obj)`` applied and return its path."""
    path = root / "sceneset.json"
    obj = json.loads(SPLIT_JSON)
    edit(obj)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- reading


def test_read_split_values(scene_dir: Path):
    split = read_split(scene_dir / "sceneset.json")
    assert split.classnames == ("oil_well", "forest", "storagetanks")
    assert split.num_classes == 3
    assert [len(split[s]) for s in ("train", "val", "test")] == [6, 2, 3]
    assert [s.triple() for s in split.train] == json.loads(SPLIT_JSON)["train"]  # file order kept
    rel = "oil_well/oil_well_0.png"
    assert split.train[0] == SceneSample(scene_dir / "images" / rel, 0, "oil_well", rel)
    item = split.val[1].load()
    assert item["label"] == 1 and item["classname"] == "forest"
    assert item["image"].dtype == np.uint8 and item["image"].shape == (6, 5, 3)
    np.testing.assert_array_equal(item["image"], _pixels(PATHS.index("forest/forest_2.png")))
    jpg = split.test[2].load()["image"].astype(int)
    assert np.abs(jpg - _pixels(PATHS.index("storagetanks/tanks_b.jpg"))).mean() < 8


def test_read_split_with_separate_image_dir(scene_dir: Path, tmp_path: Path):
    moved = tmp_path / "elsewhere.json"
    moved.write_text(SPLIT_JSON, encoding="utf-8")
    split = read_split(moved, image_dir=scene_dir / "images")
    assert split.test[0].path == scene_dir / "images/oil_well/oil_well_4.png"


def test_torch_dataset(scene_dir: Path):
    split = read_split(scene_dir / "sceneset.json")
    ds = SceneClassificationDataset.from_split(split, "test", transform=lambda d: (d["image"].shape, d["label"]))
    assert len(ds) == 3 and ds.classnames == split.classnames
    assert ds[2] == ((6, 5, 3), 2)
    with pytest.raises(KeyError, match="unknown split"):
        split["validation"]


def test_hf_dataset(scene_dir: Path):
    import datasets
    split = read_split(scene_dir / "sceneset.json")
    ds = to_hf_dataset(split.train, split.classnames)
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == list(split.classnames)
    assert ds["label"] == [0, 0, 0, 1, 1, 2]
    assert ds["classname"] == [s.classname for s in split.train]
    assert ds["path"] == [s.impath_rel for s in split.train]
    for i in (0, 4):
        np.testing.assert_array_equal(np.asarray(ds[i]["image"].convert("RGB")), split.train[i].load()["image"])
    plain = to_hf_dataset(split.test)
    assert plain.features["label"] == datasets.Value("int64") and plain["label"] == [0, 1, 2]


# ----------------------------------------------------------------------------------- broken copies


def test_missing_image(scene_dir: Path):
    (scene_dir / "images/oil_well/oil_well_2.png").unlink()
    with pytest.raises(DataFormatError) as e:
        read_split(scene_dir / "sceneset.json")
    msg = str(e.value)
    assert "sceneset.json" in msg and "train[2]" in msg and "oil_well_2.png" in msg and "missing" in msg


def test_truncated_json(scene_dir: Path):
    path = scene_dir / "sceneset.json"
    path.write_text(SPLIT_JSON[: len(SPLIT_JSON) // 2], encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"sceneset\.json: invalid JSON at line \d+"):
        read_split(path)
    problems = Problems(strict=False)
    assert read_split(path, problems=problems).train == () and len(problems.items) == 1


def test_unknown_class_for_label(scene_dir: Path):
    path = _broken(scene_dir, lambda o: o["test"].__setitem__(1, ["forest/forest_3.png", 1, "woods"]))
    with pytest.raises(DataFormatError) as e:
        read_split(path)
    msg = str(e.value)
    assert "sceneset.json" in msg and "test[1]" in msg and "unknown class 'woods'" in msg
    assert "label 1 is 'forest' (defined by train[3])" in msg


def test_class_with_two_labels(scene_dir: Path):
    path = _broken(scene_dir, lambda o: o["val"].__setitem__(1, ["forest/forest_2.png", 3, "forest"]))
    with pytest.raises(DataFormatError) as e:
        read_split(path)
    assert "val[1]" in str(e.value) and "inconsistent label 3 for class 'forest'" in str(e.value)


@pytest.mark.parametrize("triple, expected", [
    (["oil_well/oil_well_0.png", 0], "expected a [path, label, classname] triple"),
    ({"path": "oil_well/oil_well_0.png"}, "expected a [path, label, classname] triple"),
    ([7, 0, "oil_well"], "path must be a non-empty string"),
    (["oil_well/oil_well_0.png", "0", "oil_well"], "label must be a non-negative int, got str"),
    (["oil_well/oil_well_0.png", 0.0, "oil_well"], "label must be a non-negative int, got float"),
    (["oil_well/oil_well_0.png", True, "oil_well"], "label must be a non-negative int, got bool"),
    (["oil_well/oil_well_0.png", -1, "oil_well"], "label must be a non-negative int"),
    (["oil_well/oil_well_0.png", 0, None], "classname must be a non-empty string"),
    (["/data/oil_well_0.png", 0, "oil_well"], "must be relative to images/"),
    (["../oil_well_0.png", 0, "oil_well"], "must be relative to images/"),
])
def test_wrong_triple(scene_dir: Path, triple, expected):
    path = _broken(scene_dir, lambda o: o["train"].__setitem__(0, triple))
    with pytest.raises(DataFormatError) as e:
        read_split(path)
    assert "sceneset.json: record train[0]: " in str(e.value) and expected in str(e.value)


def test_structure_problems(scene_dir: Path):
    path = _broken(scene_dir, lambda o: o.pop("val"))
    with pytest.raises(DataFormatError, match="key 'val' must be a list .* got missing"):
        read_split(path)
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataFormatError, match="expected an object"):
        read_split(path)
    path = _broken(scene_dir, lambda o: o["test"].append(["forest/forest_0.png", 1, "forest"]))
    with pytest.raises(DataFormatError, match=r"record test\[3\]: duplicate path 'forest/forest_0.png' "
                                              r"\(already listed as train\[3\]\)"):
        read_split(path)
    path = _broken(scene_dir, lambda o: [t.__setitem__(1, 3) for s in o.values() for t in s if t[1] == 2])
    with pytest.raises(DataFormatError, match=r"sceneset\.json: labels must be 0..C-1 without gaps; "
                                              r"no record has label\(s\) 2"):
        read_split(path)


def test_non_strict_collects_every_problem(scene_dir: Path):
    def edit(o):
        o["train"][1] = ["oil_well/oil_well_1.png", "zero", "oil_well"]
        o["val"][1] = ["forest/forest_2.png", 1, "woods"]
        o["test"][2] = ["storagetanks/tanks_b.jpg", 4, "storagetanks_v2"]
    path = _broken(scene_dir, edit)
    (scene_dir / "images/forest/forest_0.png").unlink()
    problems = Problems(strict=False)
    split = read_split(path, problems=problems)
    records = [(p.record, p.file) for p in problems.items]
    assert records == [("train[1]", str(path)), ("train[3]", str(path)), ("val[1]", str(path)),
                       (None, str(path))]
    assert "labels must be 0..C-1" in problems.items[-1].message and "3" in problems.items[-1].message
    # good records survive; the gap gets an empty name
    assert [s.impath_rel for s in split.train] == ["oil_well/oil_well_0.png", "oil_well/oil_well_2.png",
                                                   "forest/forest_1.png", "storagetanks/tanks_a.jpg"]
    assert len(split.val) == 1 and len(split.test) == 3
    assert split.classnames == ("oil_well", "forest", "storagetanks", "", "storagetanks_v2")


# ------------------------------------------------------------------------------------------ few-shot


def _memory_split(counts_train: list[tuple[int, int]], counts_val: list[tuple[int, int]],
                  classnames: tuple[str, ...] = tuple(f"c{i}" for i in range(5))) -> SceneSplit:
    """In-memory 5-class split (3 test images per class); ``counts`` lists (label, n) runs in file order
    (labels may come back later)."""
    def make(name, runs):
        out, seen = [], defaultdict(int)
        for label, n in runs:
            for _ in range(n):
                rel = f"c{label}/{name}_{label}_{seen[label]}.jpg"
                seen[label] += 1
                out.append(SceneSample(Path("/x/images") / rel, label, classnames[label], rel))
        return tuple(out)
    test = make("test", [(label, 3) for label in range(5)])
    return SceneSplit(make("train", counts_train), make("val", counts_val), test, classnames)


def _dassl_reference(items: list, k: int) -> list:
    """Dassl's generate_fewshot_dataset for one list, using the global ``random``."""
    tracker = defaultdict(list)
    for item in items:
        tracker[item.label].append(item)
    out = []
    for group in tracker.values():
        out.extend(random.sample(group, k) if len(group) >= k else group)
    return out


# labels appear out of order and one comes back later; sizes below, at and above K
SHOT_SPLIT = _memory_split([(3, 20), (0, 16), (4, 5), (1, 30), (3, 4), (2, 17)],
                           [(2, 9), (0, 4), (1, 2), (3, 6), (4, 5)])


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 4, 16])
def test_few_shot_equals_dassl(seed: int, k: int):
    state = random.getstate()
    shots = few_shot(SHOT_SPLIT, k, seed)
    assert random.getstate() == state  # the global RNG is not touched
    random.seed(seed)
    ref_train = _dassl_reference(list(SHOT_SPLIT.train), k)
    ref_val = _dassl_reference(list(SHOT_SPLIT.val), min(k, 4))
    random.setstate(state)
    assert list(shots.train) == ref_train and list(shots.val) == ref_val
    assert shots.test == SHOT_SPLIT.test and shots.classnames == SHOT_SPLIT.classnames
    assert [s.label for s in shots.train][:1] == [3]  # first-appearance order of labels


def test_few_shot_counts_and_determinism():
    shots = few_shot(SHOT_SPLIT, 16, seed=1)
    per_label = {label: sum(s.label == label for s in shots.train) for label in range(5)}
    assert per_label == {0: 16, 1: 16, 2: 16, 3: 16, 4: 5}
    assert [s.label for s in shots.val].count(2) == 4 and [s.label for s in shots.val].count(1) == 2
    # a label with exactly K items is still permuted by random.sample
    assert [s.impath_rel for s in shots.train if s.label == 0] != [s.impath_rel for s in SHOT_SPLIT.train
                                                                   if s.label == 0]
    assert few_shot(SHOT_SPLIT, 16, seed=1) == shots and few_shot(SHOT_SPLIT, 16, seed=2) != shots
    with pytest.raises(ValueError, match="num_shots must be >= 1"):
        few_shot(SHOT_SPLIT, 0, seed=1)


def test_random_instance_reproduces_module_seed():
    state = random.getstate()
    random.seed(7)
    expected = [random.random() for _ in range(5)] + random.sample(range(100), 10)
    random.setstate(state)
    rng = random.Random(7)
    assert [rng.random() for _ in range(5)] + rng.sample(range(100), 10) == expected


def test_shots_json_round_trip(scene_dir: Path):
    split = read_split(scene_dir / "sceneset.json")
    shots = few_shot(split, 2, seed=3)
    path = shots_path(scene_dir, 2, 3)
    assert path == scene_dir / "shots" / "shot_2-seed_3.json"
    save_shots(path, shots, num_shots=2, seed=3)
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored["num_shots"] == 2 and stored["seed"] == 3
    assert set(stored) == {"num_shots", "seed", "train", "val"}
    assert stored["train"] == [s.triple() for s in shots.train]
    assert str(scene_dir) not in path.read_text(encoding="utf-8")  # relative paths only
    assert load_shots(path, split, num_shots=2, seed=3) == shots


def test_shots_validation(scene_dir: Path):
    split = read_split(scene_dir / "sceneset.json")
    path = scene_dir / "shots" / "shot_2-seed_1.json"
    save_shots(path, few_shot(split, 2, seed=1), num_shots=2, seed=1)
    with pytest.raises(DataFormatError, match=r"shot_2-seed_1\.json: 'seed' is 1, expected 2"):
        load_shots(path, split, seed=2)
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj["train"][0][1] = 2  # wrong label for that image
    obj["train"].append(["oil_well/oil_well_3.png", 0, "oil_well"])  # a val image, not a train one
    obj["train"].append(obj["train"][1])  # duplicate
    obj["val"].append(["forest/forest_3.png", 1])
    path.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(DataFormatError) as e:
        load_shots(path, split)
    assert "shot_2-seed_1.json: record train[0]: " in str(e.value) and "disagrees with the split" in str(e.value)
    problems = Problems(strict=False)
    loaded = load_shots(path, split, problems=problems)
    assert [p.record for p in problems.items] == ["train[0]", "train[5]", "train[6]", "val[2]"]
    assert "is not in the split's train list" in problems.items[1].message
    assert "duplicate path" in problems.items[2].message
    assert len(loaded.train) == 4 and loaded.test == split.test
    obj["train"] = [["oil_well/oil_well_0.png", 0, "oil_well"], ["oil_well/oil_well_1.png", 0, "oil_well"],
                    ["oil_well/oil_well_2.png", 0, "oil_well"]]
    path.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"record train\[2\]: more than 2 train shots for label 0"):
        load_shots(path, split)
    path.write_text(json.dumps({"seed": 1, "train": [], "val": []}), encoding="utf-8")
    with pytest.raises(DataFormatError, match="missing field 'num_shots'"):
        load_shots(path, split)


# ------------------------------------------------------------------------------------------- base/new


def test_base_new_five_classes():
    names = ("runway", "lake", "wetland", "harbor", "palace")
    split = _memory_split([(4, 2), (2, 2), (0, 2), (3, 2), (1, 2)], [(1, 1), (4, 1)], names)
    base = subsample_classes(split, "base")
    new = subsample_classes(split, "new")
    assert base.classnames == ("runway", "lake", "wetland") and new.classnames == ("harbor", "palace")
    assert sorted({(s.label, s.classname) for s in base.test}) == [(0, "runway"), (1, "lake"), (2, "wetland")]
    assert sorted({(s.label, s.classname) for s in new.test}) == [(0, "harbor"), (1, "palace")]
    assert [(s.label, s.classname) for s in new.train] == [(1, "palace")] * 2 + [(0, "harbor")] * 2
    assert [s.impath_rel for s in base.val] == ["c1/val_1_0.jpg"] and new.val[0].label == 1
    assert [s.path for s in base.val] == [split.val[0].path]  # only the label changes
    assert len(base.test) == 9 and len(new.test) == 6
    assert subsample_classes(split, "all") is split
    with pytest.raises(ValueError, match="which must be"):
        subsample_classes(split, "novel")


def test_base_new_uses_train_labels():
    split = _memory_split([(0, 1), (1, 1), (2, 1), (3, 1)], [])  # label 4 only in test
    assert [s.label for s in subsample_classes(split, "new").test] == [0, 0, 0, 1, 1, 1]
    assert subsample_classes(split, "new").classnames == ("c2", "c3")


# ------------------------------------------------------------------------------------ folder → split


@pytest.mark.parametrize("n, p_train, p_val, expected", [
    (10, 0.5, 0.2, (5, 2)), (5, 0.5, 0.2, (2, 1)), (800, 0.5, 0.2, (400, 160)),
    (3, 0.5, 0.2, (1, 1)), (4, 0.5, 0.2, (2, 1)), (3, 0.5, 0.49, (1, 1)),
    (3, 0.9, 0.0, (2, 0)), (2, 0.5, 0.2, (1, 0)), (1, 0.5, 0.2, (0, 0)),
])
def test_split_sizes(n, p_train, p_val, expected):
    assert _split_sizes(n, p_train, p_val) == expected


def test_folder_to_split(tmp_path: Path):
    images = tmp_path / "images"
    sizes = {"river": 10, "beach": 3, "airport": 1, "desert": 2}
    for name, n in sizes.items():
        (images / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_pixels(i)).save(images / name / f"{name}_{i:02d}.png")
    (images / "river" / ".hidden.png").write_bytes(b"")
    (images / "river" / "notes.txt").write_text("not an image")
    (images / ".cache").mkdir()

    split = folder_to_split(images, seed=5)
    assert split.classnames == ("airport", "beach", "desert", "river")
    rng = random.Random(5)
    expected = {"train": [], "val": [], "test": []}
    for label, name in enumerate(split.classnames):
        files = [f"{name}/{name}_{i:02d}.png" for i in range(sizes[name])]
        rng.shuffle(files)
        n_train, n_val = _split_sizes(len(files), 0.5, 0.2)
        expected["train"] += [[f, label, name] for f in files[:n_train]]
        expected["val"] += [[f, label, name] for f in files[n_train:n_train + n_val]]
        expected["test"] += [[f, label, name] for f in files[n_train + n_val:]]
    for s in ("train", "val", "test"):
        assert [x.triple() for x in split[s]] == expected[s]
    assert [len(split[s]) for s in ("train", "val", "test")] == [5 + 1 + 0 + 1, 2 + 1 + 0 + 0, 3 + 1 + 1 + 1]
    assert folder_to_split(images, seed=5) == split and folder_to_split(images, seed=6) != split

    write_split(tmp_path / "river.json", split)
    assert read_split(tmp_path / "river.json") == split

    with pytest.raises(ValueError, match="p_train"):
        folder_to_split(images, p_train=0.8, p_val=0.2)
    (images / "empty").mkdir()
    with pytest.raises(DataFormatError, match="empty: class folder holds no images"):
        folder_to_split(images)
    with pytest.raises(DataFormatError, match="missing image directory"):
        folder_to_split(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- writing


def test_write_dataset_round_trip(tmp_path: Path):
    pics = [_pixels(i, 7, 9) for i in range(7)]
    samples = {"train": [(pics[0], 0, "sparse_residential"), (pics[1], 1, "baseballfield"),
                         (pics[2], 0, "sparse_residential")],
               "val": [(pics[3], 1, "baseballfield")],
               "test": [(pics[4], 0, "sparse_residential"), (pics[5], 1, "baseballfield"), (pics[6], 2, "beach")]}
    written = write_dataset(tmp_path / "v2", "patternnetv2", samples, ext="png")
    assert (tmp_path / "v2/images/sparse_residential/sparse_residential_2.png").is_file()
    assert json.loads((tmp_path / "v2/patternnetv2.json").read_text(encoding="utf-8"))["val"] == [
        ["baseballfield/baseballfield_1.png", 1, "baseballfield"]]
    split = read_split(tmp_path / "v2/patternnetv2.json")
    assert split == written and split.classnames == ("sparse_residential", "baseballfield", "beach")
    loaded = [s.load()["image"] for name in ("train", "val", "test") for s in split[name]]
    for got, want in zip(loaded, pics, strict=True):
        np.testing.assert_array_equal(got, want)

    jpg = write_dataset(tmp_path / "jpg", "set", {"test": [(pics[0], 0, "beach")]})
    assert jpg.test[0].impath_rel == "beach/beach_0.jpg"
    assert np.abs(read_split(tmp_path / "jpg/set.json").test[0].load()["image"].astype(int) - pics[0]).mean() < 8
    assert detect(tmp_path / "v2") and check(tmp_path / "v2", Problems()) == {
        "train": 3, "val": 1, "test": 3, "classes": 3}


@pytest.mark.parametrize("samples, expected", [
    ({"train": [(np.zeros((4, 4), np.uint8), 0, "a")]}, "image must be an \\(H, W, 3\\) uint8"),
    ({"train": [(np.zeros((4, 4, 3), np.float32), 0, "a")]}, "image must be an \\(H, W, 3\\) uint8"),
    ({"train": [(np.zeros((4, 4, 3), np.uint8), 0, "a/b")]}, "usable as a folder name"),
    ({"train": [(np.zeros((4, 4, 3), np.uint8), 0, "a")], "test": [(np.zeros((4, 4, 3), np.uint8), 0, "b")]},
     r"test\[0\]: label 0 is 'a'"),
    ({"train": [(np.zeros((4, 4, 3), np.uint8), 1, "a")]}, "labels must be 0..C-1"),
    ({"training": []}, "unknown split name"),
])
def test_write_dataset_rejects_bad_input(tmp_path: Path, samples, expected):
    with pytest.raises(ValueError, match=expected):
        write_dataset(tmp_path, "x", samples)
    assert not (tmp_path / "images").exists()


# ---------------------------------------------------------------------------------------- rs-data check


def test_detect_and_check(scene_dir: Path, tmp_path: Path):
    assert detect(scene_dir)
    assert check(scene_dir, Problems()) == {"train": 6, "val": 2, "test": 3, "classes": 3}
    (scene_dir / "manifest.json").write_text('{"format": "scene_cls", "train": 1}', encoding="utf-8")
    (scene_dir / "other.json").write_text(SPLIT_JSON.replace('"test": [', '"test": [\n["forest/forest_0.png", 1, '
                                                             '"forest"],'), encoding="utf-8")
    problems = Problems(strict=False)
    counts = check(scene_dir, problems)
    assert counts["other/test"] == 3 and counts["sceneset/test"] == 3 and counts["sceneset/classes"] == 3
    assert [(Path(p.file).name, p.record) for p in problems.items] == [("other.json", "test[0]")]

    (scene_dir / "other.json").unlink()
    (scene_dir / "sceneset.json").write_text(SPLIT_JSON[:200], encoding="utf-8")
    assert detect(scene_dir)  # a truncated split is still recognised, so check can report it
    problems = Problems(strict=False)
    check(scene_dir, problems)
    assert len(problems.items) == 1 and "invalid JSON" in problems.items[0].message

    plain = tmp_path / "plain"
    (plain / "images").mkdir(parents=True)
    (plain / "manifest.json").write_text('{"train": []}', encoding="utf-8")
    (plain / "instances.json").write_text('{"images": [], "annotations": []}', encoding="utf-8")
    assert not detect(plain) and not detect(tmp_path / "nowhere")
    with pytest.raises(DataFormatError, match="no split JSON"):
        check(plain, Problems())
