"""RRSIS test-script metrics: hand-computed cases, the official edge cases, input forms, merging,
nearest-neighbour GT resizing and the per-category reconstruction."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from rs_shared.metrics.segmentation import (
    RefSegMetrics,
    category_miou,
    category_of,
    prediction_masks,
    resize_mask_nearest,
)


def _mask(shape, *cells):
    m = np.zeros(shape, bool)
    for r, c in cells:
        m[r, c] = True
    return m


def _official_script(preds: np.ndarray, gts: np.ndarray) -> dict:
    """The official test loop written out sample by sample (batch size 1), as an independent reference."""
    cum_i = cum_u = 0
    ious, correct = [], [0] * 5
    for p, g in zip(preds, gts, strict=True):
        i, u = np.sum(np.logical_and(p, g)), np.sum(np.logical_or(p, g))
        iou = 0.0 if u == 0 else i * 1.0 / u
        ious.append(iou)
        cum_i, cum_u = cum_i + i, cum_u + u
        for k, t in enumerate([0.5, 0.6, 0.7, 0.8, 0.9]):
            correct[k] += iou >= t
    out = {"oIoU": cum_i / cum_u, "mIoU": np.mean(np.array(ious))}
    out.update({f"P@{t}": c / len(ious) for t, c in zip([0.5, 0.6, 0.7, 0.8, 0.9], correct, strict=True)})
    return out


def test_hand_computed_batch():
    shape = (4, 4)
    preds = np.stack([
        _mask(shape, (0, 0), (0, 1), (1, 0), (1, 1)),      # vs top row: I 2, U 6 -> 1/3
        _mask(shape, (2, 2), (2, 3), (3, 3)),              # identical: I 3, U 3 -> 1
        _mask(shape, (3, 0), (3, 1)),                      # empty GT: I 0, U 2 -> 0
        _mask(shape, (1, 2), (1, 3)),                      # GT one of them: I 1, U 2 -> 0.5 (counts for P@0.5)
    ])
    gts = np.stack([
        _mask(shape, (0, 0), (0, 1), (0, 2), (0, 3)),
        _mask(shape, (2, 2), (2, 3), (3, 3)),
        _mask(shape),
        _mask(shape, (1, 2)),
    ])
    m = RefSegMetrics()
    m.update(preds, gts)
    r = m.compute()
    assert r["n"] == 4
    assert r["oIoU"] == pytest.approx(6 / 13)
    assert r["mIoU"] == pytest.approx((1 / 3 + 1 + 0 + 0.5) / 4)
    assert r["P@0.5"] == 0.5 and r["P@0.6"] == 0.25 and r["P@0.9"] == 0.25
    np.testing.assert_array_equal(m.intersections, [2, 3, 0, 1])
    np.testing.assert_array_equal(m.unions, [6, 3, 2, 2])


def test_threshold_is_inclusive_at_exact_fractions():
    # IoU exactly 7/10 and 3/5: P@0.7 and P@0.6 count them (IoU >= X).
    pred = np.zeros((2, 1, 10), bool)
    gt = np.zeros((2, 1, 10), bool)
    pred[0, 0, :10], gt[0, 0, :7] = True, True
    pred[1, 0, :5], gt[1, 0, :3] = True, True
    m = RefSegMetrics()
    m.update(pred, gt)
    r = m.compute()
    assert r["P@0.6"] == 1.0 and r["P@0.7"] == 0.5 and r["P@0.8"] == 0.0


def test_empty_gt_and_empty_prediction_scores_zero_and_adds_nothing_to_union():
    empty = np.zeros((1, 5, 5), bool)
    full = np.ones((1, 5, 5), bool)
    m = RefSegMetrics()
    m.update(empty, empty)
    r = m.compute()
    assert r["mIoU"] == 0.0 and r["oIoU"] == 0.0 and r["P@0.5"] == 0.0  # IoU 0, not 1; ΣU = 0 -> oIoU 0
    m.update(full, full)
    r = m.compute()
    assert r["mIoU"] == 0.5 and r["oIoU"] == 1.0 and r["P@0.9"] == 0.5
    np.testing.assert_array_equal(m.unions, [0, 25])


def test_matches_official_loop_on_random_masks():
    rng = np.random.default_rng(0)
    gts = rng.random((40, 12, 9)) < rng.random((40, 1, 1))
    preds = gts ^ (rng.random((40, 12, 9)) < rng.random((40, 1, 1)) * 0.5)
    gts[3] = False                                     # an empty ground truth among them
    m = RefSegMetrics()
    for lo in range(0, 40, 7):
        m.update(preds[lo:lo + 7], gts[lo:lo + 7])
    got = m.compute()
    ref = _official_script(preds, gts)
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_two_logit_ties_go_to_background():
    logits = torch.tensor([[[[0.3, 1.0, -2.0]], [[0.3, 0.9, -1.0]]]])   # (1, 2, 1, 3): bg, fg
    np.testing.assert_array_equal(prediction_masks(logits).numpy(), [[[False, False, True]]])
    np.testing.assert_array_equal(prediction_masks(logits.numpy()), [[[False, False, True]]])
    # argmax agrees except on the tie
    assert logits.argmax(1).tolist() == [[[0, 0, 1]]]


def test_single_logit_threshold_is_strictly_positive():
    logits = np.array([[[-1.0, 0.0, 1e-6]]], np.float32)
    np.testing.assert_array_equal(prediction_masks(logits), [[[False, False, True]]])


def test_bf16_logits_and_integer_masks_are_accepted():
    logits = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]], dtype=torch.bfloat16)
    assert prediction_masks(logits).tolist() == [[[True, False]]]
    labels = np.array([[[0, 1]]], np.int64)
    assert prediction_masks(labels).tolist() == [[[False, True]]]


@pytest.mark.parametrize(("pred", "gt", "message"), [
    (np.zeros((1, 3, 4, 4)), np.zeros((1, 4, 4), bool), "(B, 2, H, W)"),
    (np.zeros((1, 2, 4, 4), np.int64), np.zeros((1, 4, 4), bool), "floating-point logits"),
    (np.zeros((4, 4), bool), np.zeros((4, 4), bool), "batch dimension"),
    (np.zeros((1, 4, 4), bool), np.full((1, 4, 4), 255, np.uint8), "only 0 and 1"),
    (np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), np.float32), "bool or 0/1 integers"),
    (np.zeros((1, 4, 4), bool), np.zeros((1, 8, 8), bool), "resize_mask_nearest"),
    (np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4), bool), "NaN"),
    (np.full((1, 4, 4), 2, np.uint8), np.zeros((1, 4, 4), bool), "only 0 and 1"),
])
def test_ambiguous_or_inconsistent_input_is_rejected(pred, gt, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RefSegMetrics().update(pred, gt)


def test_non_array_input_is_rejected():
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        RefSegMetrics().update([[[True]]], np.ones((1, 1, 1), bool))


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        RefSegMetrics().compute()


def test_merge_equals_single_pass_and_state_pickles():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(30, 2, 8, 8)).astype(np.float32)
    gts = rng.random((30, 8, 8)) < 0.4
    single = RefSegMetrics()
    single.update(logits, gts)
    parts = [RefSegMetrics() for _ in range(3)]
    for k, part in enumerate(parts):
        part.update(logits[k * 10:(k + 1) * 10], gts[k * 10:(k + 1) * 10])
    merged = RefSegMetrics()
    for part in parts:
        merged.merge(pickle.loads(pickle.dumps(part.state())))  # safe: in memory, as all_gather_object does
    assert merged.compute() == single.compute()
    np.testing.assert_array_equal(merged.ious, single.ious)
    assert len(RefSegMetrics().merge(parts[0]).merge(parts[1])) == 20


def test_merge_rejects_inconsistent_state():
    with pytest.raises(ValueError, match="invalid RefSegMetrics state"):
        RefSegMetrics().merge({"intersection": np.array([3]), "union": np.array([2])})


def test_torch_and_numpy_inputs_agree():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 7, 5, generator=g)
    gts = torch.rand(6, 7, 5, generator=g) < 0.5
    results = []
    for pred, gt in [(logits, gts), (logits.numpy(), gts.numpy()), (logits, gts.numpy()),
                     (logits.numpy(), gts.to(torch.uint8))]:
        m = RefSegMetrics()
        m.update(pred, gt)
        results.append(m.compute())
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize(("src", "dst"), [((800, 800), (480, 480)), ((512, 512), (480, 480)),
                                          ((37, 53), (480, 480)), ((1024, 960), (480, 480)), ((5, 7), (3, 2))])
def test_resize_matches_the_official_pil_transform(src, dst):
    import torchvision.transforms.functional as tf  # the official transform (in the workspace via timm)
    rng = np.random.default_rng(sum(src))
    mask = rng.random(src) < 0.5
    official = np.asarray(tf.resize(Image.fromarray(mask.astype(np.uint8), mode="P"), list(dst),
                                    interpolation=tf.InterpolationMode.NEAREST)).astype(bool)
    got = resize_mask_nearest(mask, dst)
    assert got.dtype == bool and got.shape == dst
    np.testing.assert_array_equal(got, official)
    batch = resize_mask_nearest(torch.from_numpy(np.stack([mask, ~mask])), dst)
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, *dst)
    np.testing.assert_array_equal(batch[0].numpy(), official)
    np.testing.assert_array_equal(batch[1].numpy(), ~official)


def test_resize_rejects_non_mask_input():
    with pytest.raises(ValueError, match="bool or integer"):
        resize_mask_nearest(np.zeros((4, 4), np.float32), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        resize_mask_nearest(np.zeros((4, 4), bool), (0, 2))


REFSEGRS = ["impervious surface", "low vegetation", "road marking", "paved road", "building", "sidewalk",
            "vehicle", "trailer", "bikeway", "truck", "tree", "car", "van"]
ALIASES = {"road": "paved road"}


@pytest.mark.parametrize(("expression", "expected"), [
    ("road marking on the left", "road marking"),
    ("the road near the building", "paved road"),              # alias; leftmost beats the longer "building"
    ("Paved road in the middle", "paved road"),
    ("low vegetation next to the road", "low vegetation"),
    ("two cars parked along the sidewalk", "car"),           # plural
    ("the tree beside the street", "tree"),                    # "street" does not contain a whole-word tree
    ("a street lamp", None),
    ("the white vans", "van"),
    ("the bikeway", "bikeway"),
])
def test_category_of(expression, expected):
    assert category_of(expression, REFSEGRS, ALIASES) == expected


def test_category_of_rejects_alias_to_unknown_category():
    with pytest.raises(ValueError, match="unknown categories"):
        category_of("road", ["car"], {"road": "paved road"})


def test_category_miou_hand_computed():
    r = category_miou([1.0, 0.5, 0.0, 0.8], ["car", "car", "van", None])
    assert r == {"per_category": {"car": 0.75, "van": 0.0}, "counts": {"car": 2, "van": 1}, "mean": 0.375,
                 "unassigned": 1}


def test_category_mean_is_unweighted_and_reproduces_table_v_average():
    table_v = {"impervious surface": 82.85, "low vegetation": 70.31, "road marking": 24.86, "paved road": 79.00,
               "building": 92.32, "sidewalk": 72.94, "vehicle": 78.62, "trailer": 77.83, "bikeway": 67.45,
               "truck": 81.80, "tree": 69.07, "car": 78.07, "van": 75.89}
    ious, cats = [], []
    for k, (name, value) in enumerate(table_v.items()):
        n = k + 1                                              # unequal counts: the mean must not weight them
        ious += [value / 100] * n
        cats += [name] * n
    r = category_miou(ious, cats)
    assert round(100 * r["mean"], 2) == 73.15
    assert r["per_category"]["road marking"] == pytest.approx(0.2486)


def test_category_miou_length_mismatch():
    with pytest.raises(ValueError, match="3 IoUs but 2"):
        category_miou([0.1, 0.2, 0.3], ["car", "van"])
