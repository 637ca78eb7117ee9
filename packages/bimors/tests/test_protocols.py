"""The three protocols as data, their few-shot splits, and result aggregation on hand-computed numbers."""

import json
import math

import numpy as np
import pytest
from rs_shared.data.scene_cls import few_shot

from bimors.datasets import PATTERNNET_CLASSES, RSICD_CLASSES, load_dataset
from bimors.protocols import (
    BASE_TO_NEW,
    CROSS_DATASET,
    DOMAIN_GENERALIZATION,
    NUM_SHOTS,
    SEEDS,
    evaluation_split,
    fewshot_split,
    get_protocol,
    mean_over_seeds,
    results_markdown,
    shots_file,
    summarize_base_to_new,
    summarize_transfer,
    training_split,
    write_results,
)


@pytest.fixture
def fake_dataset(fake_copy):
    """A fake copy (3/2/2 images per class) loaded by name; its sizes differ from the published ones."""
    def load(root, name, classnames):
        fake_copy(root, name, classnames, per_class=(3, 2, 2))
        with pytest.warns(UserWarning, match="differ from the published"):
            return load_dataset(name, root)
    return load


def test_protocols_as_scripted():
    assert SEEDS == (1, 2, 3) and NUM_SHOTS == 16
    assert [(r.dataset, r.subsample) for r in BASE_TO_NEW.runs] == [
        ("PatternNet", "base"), ("RSICD", "base"), ("RESISC45", "base"), ("MLRSNet", "base")]
    assert all([(e.dataset, e.subsample, e.role) for e in r.evaluations] == [(r.dataset, "base", "base"),
                                                                             (r.dataset, "new", "new")]
               for r in BASE_TO_NEW.runs)
    (cross,) = CROSS_DATASET.runs
    assert (cross.dataset, cross.subsample) == ("PatternNet", "all")
    assert [(e.dataset, e.subsample, e.role) for e in cross.evaluations] == [
        ("PatternNet", "all", "source"), ("RSICD", "all", "target"), ("RESISC45", "all", "target"),
        ("MLRSNet", "all", "target")]
    (dg,) = DOMAIN_GENERALIZATION.runs
    assert (dg.dataset, dg.subsample) == ("PatternNetv2", "all")
    assert [e.dataset for e in dg.evaluations] == ["PatternNetv2", "RSICDv2", "RESISC45v2", "MLRSNetv2"]
    assert get_protocol("dg") is DOMAIN_GENERALIZATION
    with pytest.raises(KeyError, match="expected one of base2new, cross_dataset, dg"):
        get_protocol("b2n")


def test_shots_are_sampled_once_and_stored_as_json(tmp_path, fake_dataset):
    dataset = fake_dataset(tmp_path, "RSICD", RSICD_CLASSES)
    path = shots_file(dataset, 2, 1)
    assert path == tmp_path / "RSICD" / "split_few_shots" / "shot_2-seed_1.json"
    shots = fewshot_split(dataset, 2, 1)
    assert shots.train == few_shot(dataset.split, 2, 1).train  # Dassl semantics (rs_shared)
    stored = json.loads(path.read_text())
    assert (stored["num_shots"], stored["seed"], len(stored["train"]), len(stored["val"])) == (2, 1, 60, 60)
    assert shots.test == dataset.split.test  # the test split is never few-shot

    stored["train"] = [t for t in stored["train"] if t[1] != 0] + [t for t in stored["train"] if t[1] == 0][:1]
    path.write_text(json.dumps(stored))  # once written, the file is what every later run uses
    assert len(fewshot_split(dataset, 2, 1).train) == 59
    assert fewshot_split(dataset, 2, 2).train != shots.train
    assert fewshot_split(dataset, 0, 1) is dataset.split
    fewshot_split(dataset, 2, 3, shots_dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "RSICD" / "shot_2-seed_3.json").is_file()


def test_base_to_new_splits_sample_first_then_subsample(tmp_path, fake_dataset):
    dataset = fake_dataset(tmp_path, "PatternNet", PATTERNNET_CLASSES)
    train = training_split(dataset, "base", seed=1, num_shots=2)
    assert train.classnames == dataset.facts.base_classnames
    assert len(train.train) == 19 * 2 and {s.label for s in train.train} == set(range(19))
    assert len(train.test) == 19 * 2  # the whole base test split
    new = evaluation_split(dataset, "new", seed=1, num_shots=2)
    assert new.classnames == dataset.facts.new_classnames and {s.label for s in new.test} == set(range(19))
    assert new.test[0].classname == "runway_marking" and new.test[0].label == 0
    assert {s.path for s in new.train} <= {s.path for s in fewshot_split(dataset, 2, 1).train}  # shared shots
    assert evaluation_split(dataset, "all", seed=1) is dataset.split


def test_base_to_new_summary_averages_seeds_before_h():
    def seed(base, new, base_macro, new_macro):
        return {"base": {"accuracy": base, "macro_accuracy": base_macro, "macro_f1": 0.0, "n": 10},
                "new": {"accuracy": new, "macro_accuracy": new_macro, "macro_f1": 0.0, "n": 10}}

    results = {"A": {1: seed(0.9, 0.6, 0.8, 0.5), 2: seed(0.8, 0.5, 0.8, 0.5), 3: seed(0.7, 0.4, 0.8, 0.5)},
               "B": {1: seed(1.0, 0.2, 1.0, 0.1), 2: seed(1.0, 0.2, 1.0, 0.1), 3: seed(1.0, 0.2, 1.0, 0.1)}}
    a, b, average = summarize_base_to_new(results)["rows"]
    assert a["dataset"] == "A" and a["n_seeds"] == 3
    assert a["base"] == pytest.approx(0.8) and a["new"] == pytest.approx(0.5)
    assert a["H"] == pytest.approx(0.8 / 1.3)  # 2·0.8·0.5 / 1.3 = 0.61538…, not the mean of per-seed H (0.61482…)
    assert a["H"] != pytest.approx(np.mean([2 * .9 * .6 / 1.5, 2 * .8 * .5 / 1.3, 2 * .7 * .4 / 1.1]), abs=1e-4)
    assert a["H_macro"] == pytest.approx(2 * 0.8 * 0.5 / 1.3)
    assert b["H"] == pytest.approx(1 / 3) and b["H_macro"] == pytest.approx(2 * 0.1 / 1.1)
    assert average["dataset"] == "Average"
    assert (average["base"], average["new"]) == (pytest.approx(0.9), pytest.approx(0.35))
    assert average["H"] == pytest.approx(2 * 0.9 * 0.35 / 1.25)  # 0.504: H of the averaged Base and New
    assert average["base_macro"] == pytest.approx(0.9) and average["new_macro"] == pytest.approx(0.3)
    table = [[cell.strip() for cell in line.split("|")[1:-1]] for line in
             results_markdown({"rows": [a, b, average]}).splitlines()]
    assert table[0] == ["dataset", "base", "new", "H", "base_macro", "new_macro", "H_macro"]
    assert table[2] == ["A", "80.00", "50.00", "61.54", "80.00", "50.00", "61.54"]
    assert table[4][:4] == ["Average", "90.00", "35.00", "50.40"]
    with pytest.raises(ValueError, match=r"A seed 1: expected .*'accuracy'"):
        summarize_base_to_new({"A": {1: {"base": {}, "new": {}}}})


def test_transfer_summary_and_report(tmp_path):
    def m(acc, macro):
        return {"accuracy": acc, "macro_accuracy": macro, "macro_f1": macro / 2, "n": 100}

    results = {"PatternNet": {1: m(0.9, 0.9), 2: m(0.8, 0.8), 3: m(0.85, 0.85)},
               "RSICD": {1: m(0.5, 0.4), 2: m(0.6, 0.5), 3: m(0.7, 0.6)},
               "RESISC45": {1: m(0.3, 0.2), 2: m(0.3, 0.2), 3: m(0.3, 0.2)}}
    source, rsicd, resisc, average = summarize_transfer(results, "PatternNet")["rows"]
    assert source["role"] == "source" and source["accuracy"] == pytest.approx(0.85)
    assert rsicd["accuracy"] == pytest.approx(0.6) and rsicd["accuracy_std"] == pytest.approx(math.sqrt(0.02 / 3))
    assert rsicd["macro_accuracy"] == pytest.approx(0.5) and rsicd["macro_f1"] == pytest.approx(0.25)
    assert resisc["accuracy_std"] == pytest.approx(0.0) and resisc["n_seeds"] == 3
    assert average == {"dataset": "Average (targets)", "role": "average", "accuracy": pytest.approx(0.45),
                       "macro_accuracy": pytest.approx(0.35), "macro_f1": pytest.approx(0.175)}
    table = [[cell.strip() for cell in line.split("|")[1:-1]] for line in
             results_markdown({"rows": [source, rsicd, resisc, average]}).splitlines()]
    assert table[0] == ["dataset", "role", "accuracy", "accuracy_std", "macro_accuracy", "macro_f1"]
    assert table[3] == ["RSICD", "target", "60.00", "8.16", "50.00", "25.00"]
    assert table[5] == ["Average (targets)", "average", "45.00", "", "35.00", "17.50"]
    with pytest.raises(ValueError, match="source dataset 'PatternNetv2'"):
        summarize_transfer(results, "PatternNetv2")
    assert mean_over_seeds({1: {"accuracy": 0.5}, 2: {"accuracy": 0.7}}) == {
        "accuracy": pytest.approx(0.6), "accuracy_std": pytest.approx(0.1), "n_seeds": 2}

    report = write_results(tmp_path / "cross.json", CROSS_DATASET, summarize_transfer(results, "PatternNet"),
                           per_seed=results)
    stored = json.loads((tmp_path / "cross.json").read_text())
    assert stored == report and stored["seeds"] == [1, 2, 3] and "cross_dataset" in stored["protocol"]
    assert stored["results"]["summary"]["rows"][1]["dataset"] == "RSICD"
    assert stored["results"]["per_seed"]["RSICD"]["2"]["accuracy"] == 0.6
