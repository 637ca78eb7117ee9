"""Dassl accuracy / macro accuracy / macro-F1 and the CoCoOp base-to-new summary, on hand-computed numbers."""

import pickle

import numpy as np
import pytest
import torch

from rs_shared.metrics.classification import (
    ClassificationMetrics,
    base_new_average,
    base_new_summary,
    classification_metrics,
    harmonic_mean,
    predicted_labels,
)


def test_hand_computed_micro_macro_and_f1():
    true = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    r = classification_metrics(pred, true)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)       # per-class recall, averaged
    assert r["macro_f1"] == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)         # 2TP / (2TP + FP + FN)
    assert r["n"] == 6


def test_classes_absent_from_ground_truth_are_not_averaged():
    # Dassl passes labels=np.unique(y_true): predicted-only class 3 gets no F1 of its own.
    r = classification_metrics(np.array([0, 3, 1]), np.array([0, 0, 1]))
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["macro_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)


def test_balanced_set_micro_equals_macro():
    true = np.repeat(np.arange(4), 5)
    pred = true.copy()
    pred[[0, 6, 7, 19]] = (pred[[0, 6, 7, 19]] + 1) % 4
    r = classification_metrics(pred, true)
    assert r["accuracy"] == pytest.approx(r["macro_accuracy"]) == pytest.approx(16 / 20)


def test_logits_argmax_with_ties_to_lowest_index_and_torch_equals_numpy():
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.1, 0.0, 0.3]], np.float32)
    np.testing.assert_array_equal(predicted_labels(logits), [0, 1, 2])
    targets = np.array([0, 2, 2])
    from_numpy = classification_metrics(logits, targets)
    from_torch = classification_metrics(torch.from_numpy(logits).to(torch.bfloat16), torch.from_numpy(targets))
    assert from_numpy == from_torch and from_numpy["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(("scores", "targets", "message"), [
    (np.zeros((2, 3), np.int64), np.array([0, 1]), "floating-point scores"),
    (np.array([0, 1]), np.array([0.0, 1.0]), "integer labels"),
    (np.array([0, 1, 1]), np.array([0, 1]), "3 predictions but 2 targets"),
    (np.array([0, -1]), np.array([0, 1]), "non-negative"),
    (np.array([[np.nan, 0.0]]), np.array([0]), "NaN"),
    (np.zeros(0, np.int64), np.zeros(0, np.int64), "no samples"),
])
def test_bad_input_is_rejected(scores, targets, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(scores, targets)


def test_accumulator_merge_equals_single_pass():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7)).astype(np.float32)
    targets = rng.integers(0, 7, 50)
    single = ClassificationMetrics()
    single.update(logits, targets)
    merged = ClassificationMetrics()
    for lo in range(0, 50, 20):
        part = ClassificationMetrics()
        part.update(torch.from_numpy(logits[lo:lo + 20]), torch.from_numpy(targets[lo:lo + 20]))
        merged.merge(pickle.loads(pickle.dumps(part.state())))  # safe: our own object, in memory
    assert merged.compute() == single.compute() == classification_metrics(logits, targets)
    assert len(merged) == 50


def test_harmonic_mean():
    assert harmonic_mean(0.8, 0.7) == pytest.approx(2 * 0.8 * 0.7 / 1.5)
    assert harmonic_mean(90.0, 60.0) == pytest.approx(72.0)                  # units are preserved
    assert harmonic_mean(0.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        harmonic_mean(-0.1, 0.5)


def test_seed_average_comes_before_h():
    per_seed = {1: {"base": 0.9, "new": 0.5}, 2: {"base": 0.7, "new": 0.9}}
    r = base_new_summary(per_seed)
    assert r["base"] == pytest.approx(0.8) and r["new"] == pytest.approx(0.7) and r["n_seeds"] == 2
    assert r["H"] == pytest.approx(2 * 0.8 * 0.7 / 1.5)                      # 0.74667
    mean_of_h = np.mean([harmonic_mean(s["base"], s["new"]) for s in per_seed.values()])   # 0.71518
    assert abs(r["H"] - mean_of_h) > 0.03


def test_dataset_average_row_averages_base_and_new_first():
    rows = {"RSICD": base_new_summary({1: {"base": 0.8, "new": 0.7}}), "PatternNet": {"base": 0.6, "new": 0.3}}
    r = base_new_average(rows)
    assert r == pytest.approx({"base": 0.7, "new": 0.5, "H": 2 * 0.7 * 0.5 / 1.2})
    assert r["H"] != pytest.approx(np.mean([harmonic_mean(0.8, 0.7), harmonic_mean(0.6, 0.3)]))


def test_summary_rejects_malformed_rows():
    with pytest.raises(ValueError, match="seed 2: expected a mapping with 'base' and 'new'"):
        base_new_summary({1: {"base": 0.5, "new": 0.5}, 2: {"base": 0.5}})
    with pytest.raises(ValueError, match="no seeds"):
        base_new_summary({})
