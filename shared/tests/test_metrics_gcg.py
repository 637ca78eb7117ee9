"""rs_shared.metrics.gcg: GLaMM's GCG protocol (CLV-Net spec §4, parity points 11–14), AP50 against
pycocotools on files, BERT similarity against GLaMM's one-sentence-at-a-time formula, edge cases."""

import json
import math

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rs_shared.data.gcg import GCGSample, parse_grounded_caption
from rs_shared.metrics import gcg
from rs_shared.metrics.captioning import caption_metrics
from rs_shared.metrics.gcg import (
    BertSentenceSimilarity,
    GCGGroundTruth,
    GCGPrediction,
    gcg_metrics,
    image_miou,
    image_true_positives,
)

H, W = 12, 16


def exact_match(a, b):
    """Injected text similarity: 1 for equal phrases, else 0."""
    return (np.asarray(a, dtype=object)[:, None] == np.asarray(b, dtype=object)[None, :]).astype(float)


def table_similarity(table):
    """Injected text similarity from a {(gt, pred): value} table (1 on equality, 0 when not listed)."""
    def similarity(a, b):
        return np.array([[1.0 if x == y else table.get((x, y), 0.0) for y in b] for x in a]).reshape(len(a), len(b))
    return similarity


def box(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def stack(*masks):
    return np.stack(masks) if masks else np.zeros((0, H, W), dtype=bool)


def evaluate(preds, gts, similarity=exact_match, **kwargs):
    return gcg_metrics(preds, gts, similarity, captions=(), **kwargs)


# --- parity points -------------------------------------------------------------------------------------

def test_parity_14_prediction_markup_is_cleaned():
    pred = GCGPrediction.from_markup("The <p> car </p> [SEG] is red.", stack(box(0, 2, 0, 2)))
    assert pred.caption == "The car is red." and pred.phrases == ("car",)
    assert pred.masks.shape == (1, H, W) and pred.masks.dtype == bool


def test_parity_11_miou_toy():
    assert image_miou(np.array([[0.8, 0.0], [0.0, 0.3]])) == pytest.approx(0.55)
    assert image_miou(np.zeros((0, 2))) == 0.0
    # masks with IoU(A, A') = 8/10, IoU(B, C) = 3/10, all other pairs disjoint
    a, a_ = box(0, 2, 0, 5), box(0, 2, 0, 4)
    b, c = box(5, 7, 0, 5), box(5, 6, 0, 3)
    preds = {1: GCGPrediction("", ("a", "b"), stack(a, b)), 2: GCGPrediction("", (), stack())}
    gts = {1: GCGGroundTruth("", ("a", "c"), stack(a_, c)), 2: GCGGroundTruth("", ("x",), stack(box(9, 12, 9, 12)))}
    out = evaluate({1: preds[1]}, {1: gts[1]})
    assert out["mIoU"] == pytest.approx(0.55)
    out = evaluate(preds, gts)  # image 2 has no predicted mask: it scores 0 and still counts
    assert out["mIoU"] == pytest.approx(0.275)


def test_miou_greedy_takes_global_maximum_first():
    # greedy, not optimal: 0.9 is taken first, leaving 0.1 (mean 0.5), although 0.8 + 0.8 would be better
    assert image_miou(np.array([[0.9, 0.8], [0.8, 0.1]])) == pytest.approx(0.5)
    assert image_miou(np.array([[0.9, 0.8], [0.8, 0.0]])) == pytest.approx(0.9)  # stops at the 0 maximum


def test_parity_12_recall_stops_at_first_failing_pair():
    assert image_true_positives(np.array([[0.9, 0.0], [0.0, 0.8]]), np.array([[0.4, 0.0], [0.0, 1.0]])) == 0
    assert image_true_positives(np.array([[0.9, 0.0], [0.0, 0.8]]), np.array([[0.6, 0.0], [0.0, 1.0]])) == 2
    car, car_pred = box(0, 3, 0, 3), box(0, 3, 0, 3) | box(3, 4, 0, 1)  # IoU 9/10
    tree, tree_pred = box(6, 8, 0, 5), box(6, 8, 0, 4)  # IoU 8/10
    gts = {0: GCGGroundTruth("", ("car", "tree"), stack(car, tree))}
    preds = {0: GCGPrediction("", ("truck", "tree"), stack(car_pred, tree_pred))}
    out = evaluate(preds, gts, table_similarity({("car", "truck"): 0.4}))
    assert out["true_positives"] == 0 and out["recall"] == 0.0 and out["gt_phrases"] == 2
    out = evaluate(preds, gts, table_similarity({("car", "truck"): 0.6}))
    assert out["true_positives"] == 2 and out["recall"] == 1.0
    # an IoU below 0.5 also stops the loop; a pair at exactly 0.5 passes both thresholds
    assert image_true_positives(np.array([[0.49]]), np.array([[1.0]])) == 0
    assert image_true_positives(np.array([[0.5]]), np.array([[0.5]])) == 1


def test_parity_13_ap50_depends_on_order_only_through_stable_ties():
    gt_mask = box(0, 4, 0, 4)
    gts = {0: GCGGroundTruth("", ("a",), stack(gt_mask))}
    tp, fp = gt_mask, box(8, 12, 8, 12)
    # all scores are 1.0: ranked [TP, FP] → precision 1 up to recall 1 → AP 1; [FP, TP] → precision 0.5
    assert evaluate({0: GCGPrediction("", ("a", "b"), stack(tp, fp))}, gts)["AP50"] == pytest.approx(1.0)
    assert evaluate({0: GCGPrediction("", ("b", "a"), stack(fp, tp))}, gts)["AP50"] == pytest.approx(0.5)
    # across images the ranking follows the sorted image ids
    gts2 = {"a": GCGGroundTruth("", ("a",), stack(gt_mask)), "b": GCGGroundTruth("", ("b",), stack(gt_mask))}
    tp_first = {"a": GCGPrediction("", ("a",), stack(tp)), "b": GCGPrediction("", ("b", "x"), stack(tp, fp))}
    fp_first = {"a": GCGPrediction("", ("a", "x"), stack(fp, tp)), "b": GCGPrediction("", ("b",), stack(tp))}
    assert evaluate(tp_first, gts2)["AP50"] == pytest.approx(1.0)
    assert evaluate(fp_first, gts2)["AP50"] == pytest.approx(2 / 3)  # ranks FP, TP, TP: precision 2/3 at recall 1
    # permuting predictions that are all true positives changes nothing
    masks = [box(0, 3, 0, 3), box(5, 8, 5, 8), box(0, 4, 10, 14)]
    gts3 = {0: GCGGroundTruth("", ("a", "b", "c"), stack(*masks))}
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        pred = GCGPrediction("", tuple("abc"[k] for k in order), stack(*(masks[k] for k in order)))
        assert evaluate({0: pred}, gts3)["AP50"] == pytest.approx(1.0)


# --- references on random masks ------------------------------------------------------------------------

def _random_set(seed):
    rng = np.random.default_rng(seed)
    preds, gts = {}, {}
    for image_id in range(7):
        num_gt = int(rng.integers(0, 4))
        gt_masks = [_blob(rng) for _ in range(num_gt)]
        pred_masks = [m ^ (rng.random((H, W)) < 0.15) for m in gt_masks if rng.random() < 0.8]
        pred_masks += [_blob(rng) for _ in range(int(rng.integers(0, 3)))]
        order = rng.permutation(len(pred_masks))
        pred_masks = [pred_masks[k] for k in order]
        gt_phrases = tuple(f"object {k}" for k in range(num_gt))
        pred_phrases = tuple(f"object {k}" for k in rng.permutation(max(len(pred_masks), 1))[:len(pred_masks)])
        gts[image_id] = GCGGroundTruth("", gt_phrases, stack(*gt_masks))
        preds[image_id] = GCGPrediction("", pred_phrases, stack(*pred_masks))
    return preds, gts


def _blob(rng):
    y0, x0 = int(rng.integers(0, H - 3)), int(rng.integers(0, W - 3))
    return box(y0, y0 + int(rng.integers(2, H - y0)), x0, x0 + int(rng.integers(2, W - x0)))


def _pycocotools_ap50(preds, gts, tmp_path):
    """AP50 the GLaMM way: GT and results as COCO JSON files (string RLE counts), COCOeval segm stats[1]."""
    def rle(m):
        r = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
        return {"size": r["size"], "counts": r["counts"].decode()}
    images = [{"id": int(k), "height": H, "width": W} for k in gts]
    masks = [(k, m) for k, g in gts.items() for m in g.masks]
    anns = [{"id": n, "image_id": int(k), "category_id": 1, "segmentation": rle(m), "area": int(m.sum()),
             "bbox": coco_mask.toBbox(rle(m)).tolist(), "iscrowd": 0} for n, (k, m) in enumerate(masks, 1)]
    results = [{"image_id": int(k), "category_id": 1, "segmentation": rle(m), "score": 1.0}
               for k, p in preds.items() for m in p.masks]
    (tmp_path / "gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                  "categories": [{"id": 1, "name": "object"}]}))
    (tmp_path / "res.json").write_text(json.dumps(results))
    coco_gt = COCO(str(tmp_path / "gt.json"))
    evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(tmp_path / "res.json")), "segm")  # safe: pycocotools class, not eval()
    evaluator.params.catIds = [1]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats[1]


def _reference_miou_and_recall(preds, gts):
    """The protocol of spec §4 written out literally, on decoded masks (np.delete, row-wise pair loops)."""
    def iou(m1, m2):
        union = np.logical_or(m1, m2).sum()
        return np.logical_and(m1, m2).sum() / union if union else 0.0
    mious, tp, positives = [], 0, 0
    for k in sorted(gts):
        p, g = preds[k], gts[k]
        matrix = np.array([[iou(a, b) for b in g.masks] for a in p.masks]).reshape(len(p.masks), len(g.masks))
        paired = []
        while matrix.size > 0 and np.max(matrix) > 0:
            i, j = np.unravel_index(np.argmax(matrix), matrix.shape)
            paired.append(matrix[i, j])
            matrix = np.delete(np.delete(matrix, i, axis=0), j, axis=1)
        mious.append(np.mean(paired) if paired else 0.0)
        positives += len(g.phrases)
        try:
            ious = np.array([[iou(a, b) for b in p.masks] for a in g.masks]).reshape(len(g.masks), len(p.masks))
            sims = exact_match(g.phrases, p.phrases)
            matches = []
            while ious.size > 0:
                idx = np.unravel_index(np.argmax(ious), ious.shape)
                if ious[idx] < 0.5 or sims[idx] < 0.5:
                    break
                matches.append(idx)
                ious[idx[0], :] = ious[:, idx[1]] = 0
                sims[idx[0], :] = sims[:, idx[1]] = 0
            tp += len(matches)
        except IndexError:
            pass
    return float(np.mean(mious)), tp / positives


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_pycocotools_and_literal_protocol_on_random_masks(tmp_path, seed):
    preds, gts = _random_set(seed)
    out = evaluate(preds, gts)
    assert out["AP50"] == pytest.approx(_pycocotools_ap50(preds, gts, tmp_path), abs=1e-12)
    miou, recall = _reference_miou_and_recall(preds, gts)
    assert out["mIoU"] == pytest.approx(miou, abs=1e-12)
    assert out["recall"] == pytest.approx(recall, abs=1e-12)
    assert out["num_images"] == 7 and out["num_gt_masks"] == sum(len(g.masks) for g in gts.values())
    assert out["num_pred_masks"] == sum(len(p.masks) for p in preds.values())
    # reversing each image's predictions: still equal to pycocotools fed in the same order
    reversed_preds = {k: GCGPrediction("", p.phrases[::-1], p.masks[::-1]) for k, p in preds.items()}
    assert evaluate(reversed_preds, gts)["AP50"] == pytest.approx(
        _pycocotools_ap50(reversed_preds, gts, tmp_path), abs=1e-12)


# --- edge cases ----------------------------------------------------------------------------------------

def test_no_predicted_masks():
    gts = {0: GCGGroundTruth("", ("a",), stack(box(0, 3, 0, 3))), 1: GCGGroundTruth("", (), stack())}
    preds = {0: GCGPrediction("", ("a",), []), 1: GCGPrediction("", (), np.zeros((0, H, W), dtype=bool))}
    out = evaluate(preds, gts)
    assert out["AP50"] == 0.0 and out["mIoU"] == 0.0 and out["recall"] == 0.0
    assert out["num_pred_masks"] == 0 and out["gt_phrases"] == 1


def test_no_ground_truth_masks():
    gts = {0: GCGGroundTruth("a plain scene", (), stack())}
    preds = {0: GCGPrediction("", ("a",), stack(box(0, 3, 0, 3)))}
    out = evaluate(preds, gts)
    assert math.isnan(out["AP50"])  # COCOeval has nothing to evaluate (it reports -1)
    assert out["mIoU"] == 0.0 and out["recall"] == 0.0 and out["gt_phrases"] == 0


def test_more_masks_than_phrases_follows_glamm_index_error():
    gt_masks = stack(box(0, 4, 0, 4), box(6, 10, 6, 10))
    gts = {0: GCGGroundTruth("", ("a", "b"), gt_masks)}
    # the best-IoU pair uses predicted mask 1, which has no phrase: GLaMM raises → 0 TP, GT phrases counted
    preds = {0: GCGPrediction("", ("a",), stack(box(0, 4, 0, 3), box(6, 10, 6, 10)))}
    out = evaluate(preds, gts)
    assert out["recall_errors"] == 1 and out["true_positives"] == 0 and out["gt_phrases"] == 2
    assert out["mIoU"] == pytest.approx((1.0 + 0.75) / 2)  # masks are still scored
    # the same surplus mask is harmless when the loop stops before reaching it
    preds = {0: GCGPrediction("", ("a",), stack(box(0, 4, 0, 4), box(6, 10, 6, 7)))}  # IoU 1, then 0.25
    out = evaluate(preds, gts)
    assert out["recall_errors"] == 0 and out["true_positives"] == 1 and out["recall"] == 0.5
    # fewer masks than phrases never fails
    preds = {0: GCGPrediction("", ("a", "b", "c"), stack(box(0, 4, 0, 4)))}
    assert evaluate(preds, gts)["true_positives"] == 1


def test_duplicate_predictions():
    gt = box(0, 4, 0, 4)
    gts = {0: GCGGroundTruth("", ("a",), stack(gt))}
    preds = {0: GCGPrediction("", ("a", "a"), stack(gt, gt))}
    out = evaluate(preds, gts)
    assert out["mIoU"] == 1.0  # the duplicate stays unmatched and costs nothing
    assert out["true_positives"] == 1 and out["recall"] == 1.0
    assert out["AP50"] == pytest.approx(1.0)  # ranked TP then FP: precision 1 up to recall 1


def test_empty_masks_have_iou_zero():
    empty = np.zeros((H, W), dtype=bool)
    out = evaluate({0: GCGPrediction("", ("a",), stack(empty))}, {0: GCGGroundTruth("", ("a",), stack(empty))})
    assert out["mIoU"] == 0.0 and out["true_positives"] == 0


def test_input_errors():
    gt = {0: GCGGroundTruth("", ("a",), stack(box(0, 2, 0, 2)))}
    with pytest.raises(ValueError, match="same image ids"):
        evaluate({1: GCGPrediction("", (), [])}, gt)
    with pytest.raises(ValueError, match=r"image 0: predicted masks are \(4, 4\)"):
        evaluate({0: GCGPrediction("", ("a",), np.ones((1, 4, 4), dtype=bool))}, gt)
    with pytest.raises(ValueError, match="threshold mask logits"):
        GCGPrediction("", ("a",), np.full((1, H, W), 0.7))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        GCGPrediction("", ("a",), np.ones((H, W), dtype=bool))
    with pytest.raises(ValueError, match="2 phrases but 1 masks"):
        GCGGroundTruth("", ("a", "b"), stack(box(0, 2, 0, 2)))
    with pytest.raises(ValueError, match="mutually comparable"):
        evaluate({0: GCGPrediction("", (), []), "x": GCGPrediction("", (), [])},
                 {0: gt[0], "x": GCGGroundTruth("", (), stack())})
    with pytest.raises(ValueError, match="returned shape"):
        evaluate({0: GCGPrediction("", ("a",), stack(box(0, 2, 0, 2)))}, gt, lambda a, b: np.zeros((3, 3)))
    with pytest.raises(ValueError, match="unknown caption metric"):
        gcg_metrics({0: GCGPrediction("", ("a",), [])}, gt, exact_match, captions=("SPICE",))


def test_integer_masks_and_geopixeld_ground_truth(tmp_path):
    caption = parse_grounded_caption("A <p> tennis court-1 </p> [SEG] near <p> the cars </p> [SEG].")
    square = [np.array([[0, 0], [4, 0], [4, 4], [0, 4]], dtype=float)]
    parts = [np.array([[8, 0], [10, 0], [10, 2], [8, 2]], dtype=float),
             np.array([[12, 6], [14, 6], [14, 8], [12, 8]], dtype=float)]
    sample = GCGSample(0, tmp_path / "t.png", "", caption, (square, parts), (W, H))
    gt = GCGGroundTruth.from_sample(sample)
    # GLaMM's cleaning keeps the space left where "[SEG]" stood before the full stop
    assert gt.caption == "A tennis court-1 near the cars ." and gt.phrases == ("tennis court-1", "the cars")
    assert gt.masks.sum(axis=(1, 2)).tolist() == [16, 8]  # the group phrase's two parts form one mask
    pred = GCGPrediction.from_markup("A <p> tennis court-1 </p> [SEG] near <p> the cars </p> [SEG].",
                                     gt.masks.astype(np.uint8))
    out = evaluate({0: pred}, {0: gt})
    assert out["AP50"] == pytest.approx(1.0) and out["mIoU"] == 1.0 and out["recall"] == 1.0


# --- captions ------------------------------------------------------------------------------------------

def _caption_set():
    gts = {0: GCGGroundTruth("Two tennis courts near a road.", (), stack()),
           1: GCGGroundTruth("A harbor with many boats.", (), stack())}
    preds = {0: GCGPrediction.from_markup("Two <p> tennis courts </p> [SEG] beside a road.", stack()),
             1: GCGPrediction.from_markup("A <p> harbor </p> [SEG] with boats", stack())}
    return preds, gts


@pytest.mark.parametrize("tokenizer", [
    "ptb", "simple"])
def test_caption_metrics_of_cleaned_captions(tokenizer):
    preds, gts = _caption_set()
    out = gcg_metrics(preds, gts, exact_match, captions=("CIDEr",), tokenizer=tokenizer)
    expected = caption_metrics({0: "Two tennis courts beside a road.", 1: "A harbor with boats"},
                               {0: ["Two tennis courts near a road."], 1: ["A harbor with many boats."]},
                               ("CIDEr",), tokenizer=tokenizer)
    assert out["CIDEr"] == expected["CIDEr"] > 0
    assert out["tokenizer"] == tokenizer and out["standard"] is (tokenizer == "ptb") and out["num_images"] == 2


def test_default_caption_metrics_are_meteor_and_cider(monkeypatch):
    calls = []
    monkeypatch.setattr(gcg, "check_caption_options", lambda metrics, tokenizer: tuple(metrics))
    monkeypatch.setattr(gcg, "caption_metrics", lambda *args, **kwargs: calls.append((args, kwargs)) or {})
    preds, gts = _caption_set()
    gcg_metrics(preds, gts, exact_match)
    (predictions, references, metrics), kwargs = calls[0]
    assert metrics == ("METEOR", "CIDEr") and kwargs == {"tokenizer": "ptb"}
    assert predictions == {0: "Two tennis courts beside a road.", 1: "A harbor with boats"}
    assert references == {0: ["Two tennis courts near a road."], 1: ["A harbor with many boats."]}


# --- BERT text similarity ------------------------------------------------------------------------------

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "red", "car", "cars", "tree", "trees", "tennis",
         "court", "-", "1", "2", "large", "building", "harbor", "##s"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    import torch

    from transformers import BertConfig, BertModel, BertTokenizer

    directory = tmp_path_factory.mktemp("bert-tiny")
    (directory / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(vocab=str(directory / "vocab.txt"))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=64))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_bert_similarity_matches_glamm_single_sentence_encoding(bert_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts_a = ["the red car", "tennis court-1", "a large building near the harbor", "trees"]
    texts_b = ["cars", "the tennis court-2", "red car"]
    similarity = BertSentenceSimilarity(bert_dir, batch_size=2)  # padded batches of unequal lengths
    got = similarity(texts_a, texts_b)

    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    model = AutoModel.from_pretrained(bert_dir)

    def glamm_vector(text):  # GLaMM: one sentence, mean over all its tokens incl. [CLS]/[SEP]
        inputs = tokenizer(text, return_tensors="pt", padding=True, truncation=True, max_length=512)
        with torch.no_grad():
            return model(**inputs).last_hidden_state[0].mean(0).numpy().astype(np.float64)

    expected = np.array([[np.dot(glamm_vector(x), glamm_vector(y)) /
                          (np.linalg.norm(glamm_vector(x)) * np.linalg.norm(glamm_vector(y))) for y in texts_b]
                         for x in texts_a])
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.diag(similarity(texts_b, texts_b)), 1.0, atol=1e-6)
    assert similarity([], texts_b).shape == (0, 3)


def test_bert_similarity_from_a_path_in_gcg_metrics(bert_dir):
    gt = {0: GCGGroundTruth("", ("the red car",), stack(box(0, 4, 0, 4)))}
    pred = {0: GCGPrediction("", ("the red car",), stack(box(0, 4, 0, 4)))}
    out = gcg_metrics(pred, gt, str(bert_dir), captions=())
    assert out["recall"] == 1.0  # identical phrases: cosine 1 ≥ 0.5


def test_bert_similarity_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="bert-base-uncased"):
        BertSentenceSimilarity(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a loadable BERT model directory"):
        BertSentenceSimilarity(tmp_path / "empty")


def test_empty_mask_inputs_of_any_shape():
    for empty in ([], np.zeros(0), np.zeros((0, H, W)), np.zeros((0, H, W), dtype=np.float32)):
        assert GCGPrediction("", (), empty).masks.shape[0] == 0
    assert GCGPrediction("", (), np.zeros((0, H, W))).masks.shape == (0, H, W)
