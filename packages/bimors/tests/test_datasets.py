"""Dataset registry facts (spec §3, §7 points 6–7) and the readers, on tiny fake on-disk copies."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from rs_shared.data.errors import DataFormatError
from rs_shared.data.scene_cls import subsample_classes
from rs_shared.data.synthetic import SCENE_CLASSES

from bimors.datasets import (
    DATASETS,
    MLRSNET_SPLIT_SEED,
    PATTERNNET_CLASSES,
    RESISC45_CLASSES,
    RSICD_CLASSES,
    V2_CLASSES,
    dataset_dir,
    dataset_facts,
    ensure_synthetic,
    load_dataset,
)

V1 = ("PatternNet", "RSICD", "RESISC45", "MLRSNet")
V2 = ("PatternNetv2", "RSICDv2", "RESISC45v2", "MLRSNetv2")


# --- registry ----------------------------------------------------------------------------------------------

def test_class_counts_and_base_new_sizes_of_spec_point_6():
    expected = {"PatternNet": (38, 19, 19), "RSICD": (30, 15, 15), "RESISC45": (45, 23, 22), "MLRSNet": (46, 23, 23),
                **{name: (16, 8, 8) for name in V2}}
    for name, (classes, base, new) in expected.items():
        facts = dataset_facts(name)
        assert (facts.num_classes, facts.num_base, facts.num_new) == (classes, base, new)
        assert facts.num_base == math.ceil(classes / 2)  # the CoOp rule
    assert [dataset_facts(n).directory + "/" + dataset_facts(n).split_name for n in (*V1, *V2)] == [
        "PatternNet/patternnet", "RSICD/rsicd", "RESISC45/resisc45", "MLRSNet/mlrsnet", "PatternNetv2/patternnetv2",
        "RSICDv2/rsicdv2", "RESISC45v2/resisc45v2", "MLRSNetv2/mlrsnetv2"]
    assert dataset_facts("RSICD").shots_folder == "split_few_shots"
    assert dataset_facts("PatternNet").shots_folder == "shots"
    assert not dataset_facts("MLRSNet").published_split and dataset_facts("MLRSNet").classnames is None


def test_test_sizes_of_spec_point_7():
    sizes = {"PatternNet": (9_120, 4_560, 4_560), "RESISC45": (9_450, 4_830, 4_620), "RSICD": (3_001, 1_500, 1_501)}
    for name, (test, base, new) in sizes.items():
        facts = dataset_facts(name)
        assert facts.split_sizes[2] == test and facts.test_base_new == (base, new) and base + new == test
    assert {n: dataset_facts(n).split_sizes[2] for n in V2} == {
        "PatternNetv2": 3_840, "RSICDv2": 1_608, "RESISC45v2": 3_360, "MLRSNetv2": 11_741}
    # balanced sets: per-class counts 392/168/240 (PatternNet, PatternNetv2) and 343/147/210 (RESISC45, v2)
    assert dataset_facts("PatternNet").split_sizes == tuple(38 * n for n in (392, 168, 240))
    assert dataset_facts("PatternNetv2").split_sizes == tuple(16 * n for n in (392, 168, 240))
    assert dataset_facts("RESISC45").split_sizes == tuple(45 * n for n in (343, 147, 210))
    assert dataset_facts("RESISC45v2").split_sizes == tuple(16 * n for n in (343, 147, 210))
    assert dataset_facts("RESISC45").test_base_new == (23 * 210, 22 * 210)


def test_base_new_names_of_spec_3_5_and_v2_map_of_3_6():
    patternnet, rsicd, resisc = (dataset_facts(n) for n in ("PatternNet", "RSICD", "RESISC45"))
    for facts, classes in ((patternnet, PATTERNNET_CLASSES), (rsicd, RSICD_CLASSES), (resisc, RESISC45_CLASSES)):
        assert len(classes) == len(set(classes)) == facts.num_classes
        assert facts.base_classnames + facts.new_classnames == classes
    assert patternnet.base_classnames[:3] == ("oil_well", "runway", "baseball_field")
    assert patternnet.base_classnames[-1] == "golf_course" and patternnet.new_classnames[0] == "runway_marking"
    assert patternnet.new_classnames[-1] == "airplane"
    assert rsicd.base_classnames[-1] == "denseresidential" and rsicd.new_classnames[0] == "school"
    assert resisc.base_classnames[-1] == "mountain" and resisc.new_classnames[0] == "overpass"
    assert len(resisc.new_classnames) == 22 and resisc.new_classnames[-1] == "airplane"
    v2 = dict(enumerate(V2_CLASSES))
    assert (v2[0], v2[1], v2[8], v2[13], v2[15]) == ("baseballfield", "sparse_residential", "parking", "storage_tank",
                                                     "beach")
    assert all(dataset_facts(n).classnames == V2_CLASSES for n in V2)


def test_names_are_case_sensitive():
    with pytest.raises(KeyError, match="did you mean 'PatternNet'"):
        dataset_facts("patternnet")
    assert dataset_dir("/data", "RESISC45v2").as_posix() == "/data/RESISC45v2"


# --- readers -----------------------------------------------------------------------------------------------

def test_reads_a_fake_patternnet_in_label_order(tmp_path, fake_copy):
    fake_copy(tmp_path, "PatternNet", PATTERNNET_CLASSES)
    with pytest.warns(UserWarning, match=r"sizes \(76, 38, 38\) differ from the published \(14896, 6384, 9120\)"):
        dataset = load_dataset("PatternNet", tmp_path)
    assert dataset.classnames == PATTERNNET_CLASSES and dataset.directory == tmp_path / "PatternNet"
    base, new = subsample_classes(dataset.split, "base"), subsample_classes(dataset.split, "new")
    assert base.classnames == dataset.facts.base_classnames and new.classnames == dataset.facts.new_classnames
    assert len(base.test) == 19 and len(new.test) == 19 and {s.label for s in new.test} == set(range(19))
    assert "oil_gas_field" in dataset.classnames  # stored names untouched ("_" → " " is a prompt step)


def test_clean_names_is_opt_in(tmp_path, fake_copy):
    fake_copy(tmp_path, "RSICD", RSICD_CLASSES)
    with pytest.warns(UserWarning):
        parity = load_dataset("RSICD", tmp_path)
    with pytest.warns(UserWarning):
        clean = load_dataset("RSICD", tmp_path, clean_names=True)
    assert "storagetanks" in parity.classnames and "railwaystation" in parity.classnames
    assert clean.classnames[parity.classnames.index("storagetanks")] == "storage_tanks"
    assert clean.classnames[parity.classnames.index("bareland")] == "bare_land"
    assert clean.classnames[0] == parity.classnames[0] == "center"
    assert {s.classname for s in clean.split.test} == set(clean.classnames)


def test_v2_copy_and_wrong_json_are_told_apart(tmp_path, fake_copy):
    fake_copy(tmp_path, "RSICDv2", V2_CLASSES)
    with pytest.warns(UserWarning):
        assert load_dataset("RSICDv2", tmp_path).classnames == V2_CLASSES
    fake_copy(tmp_path, "PatternNetv2", V2_CLASSES[::-1])  # another label order
    with pytest.raises(DataFormatError, match=r"label order.*0: 'beach' \(expected 'baseballfield'\)"):
        load_dataset("PatternNetv2", tmp_path)
    fake_copy(tmp_path, "RESISC45", RESISC45_CLASSES[:16])  # e.g. a v2 JSON under RESISC45/
    with pytest.raises(DataFormatError, match="RESISC45 has 45 classes, this split has 16"):
        load_dataset("RESISC45", tmp_path)


def test_absent_data_says_what_is_expected_where(tmp_path, fake_copy):
    with pytest.raises(FileNotFoundError, match=r"PatternNet/patternnet\.json.*cannot be downloaded"):
        load_dataset("PatternNet", tmp_path)
    (tmp_path / "RSICD").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no images/ folder in .*RSICD; expected .*RSICD/images/<class"):
        load_dataset("RSICD", tmp_path)
    directory = fake_copy(tmp_path, "RESISC45v2", V2_CLASSES)
    (directory / "resisc45v2.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"split file .*RESISC45v2/resisc45v2\.json is missing"):
        load_dataset("RESISC45v2", tmp_path)


def test_missing_images_are_counted_and_named(tmp_path, fake_copy):
    directory = fake_copy(tmp_path, "MLRSNetv2", V2_CLASSES)
    for name in ("beach/beach_0.jpg", "river/river_3.jpg", "forest/forest_1.jpg"):
        (directory / "images" / name).unlink()
    with pytest.raises(DataFormatError, match=r"(?s)3 problem\(s\) reading the MLRSNetv2 split:\n  record train\[9\]: "
                                              r"image file is missing: .*forest_1\.jpg.*beach_0\.jpg.*river_3\.jpg"):
        load_dataset("MLRSNetv2", tmp_path)


def _fake_mlrsnet(directory, reverse):
    rng = np.random.default_rng(0)
    classes = [f"class_{i:02d}" for i in range(46)]
    for cls in reversed(classes) if reverse else classes:
        (directory / "images" / cls).mkdir(parents=True)
        for j in (range(9, -1, -1) if reverse else range(10)):  # files created in opposite orders
            pixels = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(directory / "images" / cls / f"{j}.jpg")
    return classes


def test_mlrsnet_split_is_generated_once_from_a_sorted_listing(tmp_path):
    classes = _fake_mlrsnet(tmp_path / "a" / "MLRSNet", reverse=False)
    _fake_mlrsnet(tmp_path / "b" / "MLRSNet", reverse=True)
    first = load_dataset("MLRSNet", tmp_path / "a")
    json_path = tmp_path / "a" / "MLRSNet" / "mlrsnet.json"
    assert first.classnames == tuple(classes)  # alphabetical labels
    assert [len(first.split[s]) for s in ("train", "val", "test")] == [46 * 5, 46 * 2, 46 * 3]
    written = json_path.read_text()
    load_dataset("MLRSNet", tmp_path / "b")
    assert (tmp_path / "b" / "MLRSNet" / "mlrsnet.json").read_text() == written  # independent of listing order
    stored = json.loads(written)
    stored["test"] = stored["test"][:-1]  # the file, once written, is what is read
    json_path.write_text(json.dumps(stored))
    assert len(load_dataset("MLRSNet", tmp_path / "a").split.test) == 46 * 3 - 1
    assert MLRSNET_SPLIT_SEED == 1


def test_synthetic_is_the_embedded_default(tmp_path):
    dataset = load_dataset("synthetic", tmp_path, synthetic_n=22, synthetic_size=32)
    assert dataset.classnames == SCENE_CLASSES and dataset.directory == tmp_path / "synthetic"
    assert DATASETS["synthetic"].num_base == 6 and DATASETS["synthetic"].num_new == 5
    (dataset.directory / "shots").mkdir()
    (dataset.directory / "shots" / "shot_1-seed_1.json").write_text("{}")  # later additions are fine
    assert load_dataset("synthetic", tmp_path, synthetic_n=22, synthetic_size=32).split == dataset.split
    with pytest.raises(DataFormatError, match=r"n=22 \(wanted 44\)"):
        ensure_synthetic(dataset.directory, n=44, size=32)
    image = dataset.split.train[0].path
    image.write_bytes(image.read_bytes() + b"\0")
    with pytest.raises(DataFormatError, match="checksum differs"):
        load_dataset("synthetic", tmp_path, synthetic_n=22, synthetic_size=32)


# --- a dataset given by path (own data, e.g. from rs-data convert labels-to-scene) -----------------------------

def _own_copy(root, classnames=("airport", "beach", "forest", "harbor", "river"), per_class=(2, 1, 1)):
    from rs_shared.data.scene_cls import write_dataset

    rng = np.random.default_rng(0)
    samples = {split: [(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), label, cls)
                       for label, cls in enumerate(classnames) for _ in range(n)]
               for split, n in zip(("train", "val", "test"), per_class, strict=True)}
    write_dataset(root / "MyScenes", "myscenes", samples)
    return root / "MyScenes"


def test_dataset_path_entry_is_built_from_the_split_json(tmp_path):
    from bimors.datasets import dataset_label, split_json

    directory = _own_copy(tmp_path)
    for name in (str(directory), str(directory / "myscenes.json")):
        facts = dataset_facts(name)
        assert (facts.directory, facts.split_name) == ("MyScenes", "myscenes")
        assert (facts.num_classes, facts.num_base, facts.num_new) == (5, 3, 2)  # base = the first ceil(5/2) labels
        assert facts.base_classnames == ("airport", "beach", "forest")
        assert facts.new_classnames == ("harbor", "river")
        assert dataset_label(name) == "MyScenes" and dataset_dir(None, name) == directory
        dataset = load_dataset(name)  # no root needed
        assert dataset.name == name and dataset.directory == directory and dataset.facts == facts
        assert [len(dataset.split[s]) for s in ("train", "val", "test")] == [10, 5, 5]
    assert split_json(directory) == directory / "myscenes.json"
    # the base half the protocol picks is the entry's base half
    base = subsample_classes(load_dataset(str(directory)).split, "base")
    assert base.classnames == dataset_facts(str(directory)).base_classnames


def test_dataset_path_errors_name_the_file(tmp_path):
    directory = _own_copy(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere/x\.json does not exist"):
        load_dataset(str(tmp_path / "nowhere" / "x.json"))
    with pytest.raises(FileNotFoundError, match=r"dataset folder .*nothing does not exist"):
        dataset_facts(str(tmp_path / "nothing"))
    (directory / "other.json").write_text("{}")
    (directory / "myscenes.json").rename(directory / "third.json")
    with pytest.raises(FileNotFoundError, match=r"other\.json, third\.json"):
        load_dataset(str(directory))
    (directory / "third.json").write_text(json.dumps({"train": [["airport/none.jpg", 0, "airport"]], "val": [],
                                                      "test": [["beach/beach_0.jpg", 1, "beach"]]}))
    with pytest.raises(DataFormatError, match=r"(?s)third\.json.*missing.*none\.jpg"):
        load_dataset(str(directory / "third.json"))
    (directory / "third.json").write_text(json.dumps({"train": [["airport/airport_0.jpg", 0, "airport"]],
                                                      "val": [], "test": []}))
    with pytest.raises(DataFormatError, match=r"third\.json.*1 class"):
        dataset_facts(str(directory / "third.json"))
    with pytest.raises(KeyError, match=r"unknown dataset 'MyScenes'.*path"):
        dataset_facts("MyScenes")
