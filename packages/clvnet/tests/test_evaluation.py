"""GCG evaluation (spec §4) with a fake model: metric values on hand-made cases, diagnostics, report files, the
clvnet-eval CLI."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from clvnet import cli_eval, predict
from clvnet.data import GCGEvalDataset, ensure_synthetic_gcg
from clvnet.evaluation import ExactMatchSimilarity, evaluate_gcg, resolve_similarity, write_report
from clvnet.processing import CLVNetProcessor
from clvnet.tokenizer import build_tiny_tokenizer
from rs_shared.data.gcg import parse_grounded_caption
from rs_shared.data.masks import rle_to_mask
from rs_shared.metrics.captioning import JavaNotFoundError


@dataclass
class GroundedPrediction:
    """Stand-in for clvnet.modeling.GroundedPrediction (same fields)."""

    text: str
    caption: str
    phrases: list[str]
    masks: np.ndarray
    mask_scores: np.ndarray


def prediction(text: str, masks: np.ndarray) -> GroundedPrediction:
    parsed = parse_grounded_caption(text)
    return GroundedPrediction(text, parsed.caption, list(parsed.phrases), masks, np.ones(len(masks), np.float32))


class FakeModel:
    """Returns prepared predictions in evaluation order; records what generate_grounded received."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.calls = []

    def generate_grounded(self, batch, tokenizer=None, max_new_tokens=None):
        self.calls.append({"batch_size": len(batch["input_ids"]), "tokenizer": tokenizer,
                           "max_new_tokens": max_new_tokens, "boxes": batch["boxes"].tolist()})
        n = len(batch["input_ids"])
        out, self.outputs = self.outputs[:n], self.outputs[n:]
        return out


def square(size, y0, y1, x0, x1):
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


A, B, C = square(16, 0, 8, 0, 8), square(16, 8, 16, 8, 16), square(16, 0, 4, 12, 16)


def pair(ids, markups, gt_masks):
    """A (batch, records) evaluation pair with the minimum the evaluation reads."""
    batch = {"input_ids": torch.zeros(len(ids), 1, dtype=torch.long),
             "boxes": torch.tensor([[0, 0, 16, 16.0]] * len(ids)),
             "gt_masks": [torch.from_numpy(np.stack(m) if m else np.zeros((0, 16, 16), bool)) for m in gt_masks]}
    records = [{"id": i, "name": f"tile{i}", "caption": parse_grounded_caption(t).caption,
                "phrases": list(parse_grounded_caption(t).phrases)} for i, t in zip(ids, markups)]
    return batch, records


GT_1 = "A <p> red car </p> [SEG] and <p> a truck </p> [SEG] on a road."
GT_2 = "One <p> plane </p> [SEG] parked."


def evaluate(model, data, **kwargs):
    return evaluate_gcg(model, data, caption_metrics=False, progress=False, **kwargs)


def test_oracle_scores_one():
    data = [pair([1, 2], [GT_1, GT_2], [[A, B], [C]])]
    model = FakeModel([prediction(GT_1, np.stack([A, B])), prediction(GT_2, C[None])])
    result = evaluate(model, data, max_new_tokens=7)
    assert (result["AP50"], result["mIoU"], result["recall"]) == (pytest.approx(1.0), 1.0, 1.0)
    assert result["num_images"] == 2 and result["mean_phrases"] == 1.5 and result["parse_problem_rate"] == 0.0
    assert result["similarity"].startswith("exact-match") and result["caption_metrics"] == "skipped"
    assert "METEOR" not in result and model.calls[0]["max_new_tokens"] == 7
    assert [r["miou"] for r in result["records"]] == [1.0, 1.0]
    assert result["records"][0]["box"] == [0.0, 0.0, 16.0, 16.0] and result["records"][0]["name"] == "tile1"


def test_hand_computed_miou_recall_and_parse_problems():
    # image 1: masks swapped in order (mIoU still 1), the second phrase worded differently (no recall for it);
    # image 2: no [SEG] at all → image mIoU 0, but a phrase-less "<p> plane </p>" counts as a parse problem
    text_1 = "A <p> Red  Car </p> [SEG] and <p> the lorry </p> [SEG] on a road."
    data = [pair([1], [GT_1], [[A, B]]), pair([2], [GT_2], [[C]])]
    no_masks = np.zeros((0, 16, 16), bool)
    model = FakeModel([prediction(text_1, np.stack([B, A])), prediction("One <p> plane </p> parked.", no_masks)])
    result = evaluate(model, data)
    assert result["mIoU"] == pytest.approx(0.5)
    # recall loop on image 1: best IoU pair (gt 0 "red car", pred 1 "the lorry") is tried first → text fails → stop
    assert result["true_positives"] == 0 and result["recall"] == 0.0
    assert result["parse_problem_rate"] == 0.5 and [r["parse_problem"] for r in result["records"]] == [False, True]
    assert [r["num_seg"] for r in result["records"]] == [2, 0]


def test_recall_exact_match_is_case_and_space_insensitive():
    data = [pair([1], [GT_1], [[A, B]])]
    model = FakeModel([prediction("<p> RED car </p> [SEG] <p> a  truck </p> [SEG]", np.stack([A, B]))])
    assert evaluate(model, data)["recall"] == 1.0


def test_exact_match_similarity_matrix():
    sims = ExactMatchSimilarity()(["The car", "a plane"], ["the  CAR", "plane", "a plane "])
    np.testing.assert_array_equal(sims, [[1, 0, 0], [0, 0, 1]])
    assert ExactMatchSimilarity()([], ["x"]).shape == (0, 1)
    assert isinstance(resolve_similarity("exact")[0], ExactMatchSimilarity)
    with pytest.raises(FileNotFoundError, match="bert-base-uncased"):
        resolve_similarity("/nonexistent/bert")


def test_custom_similarity_is_used_and_named():
    class Always:
        name = "always similar"

        def __call__(self, a, b):
            return np.ones((len(a), len(b)))

    data = [pair([1], [GT_1], [[A, B]])]
    model = FakeModel([prediction("<p> x </p> [SEG] <p> y </p> [SEG]", np.stack([A, B]))])
    result = evaluate(model, data, similarity=Always())
    assert result["recall"] == 1.0 and result["similarity"] == "always similar"


def test_caption_metrics_with_java():
    data = [pair([1, 2], [GT_1, GT_2], [[A, B], [C]])]
    result = evaluate_gcg(FakeModel([prediction(GT_1, np.stack([A, B])), prediction(GT_2, C[None])]), data,
                          progress=False)
    assert result["caption_metrics"] == "ptb" and result["METEOR"] > 0.9  # captions equal to the references
    assert result["CIDEr"] >= 0 and result["mIoU"] == 1.0


def test_missing_java_fails_before_generation(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    model = FakeModel([])
    with pytest.raises(JavaNotFoundError, match="java"):
        evaluate_gcg(model, [pair([1], [GT_2], [[C]])], progress=False)
    assert model.calls == []


def test_bad_evaluation_input():
    good = pair([1], [GT_2], [[C]])
    with pytest.raises(ValueError, match="gt_masks"):
        evaluate(FakeModel([]), [({"input_ids": torch.zeros(1, 1)}, good[1])])
    with pytest.raises(ValueError, match="record 0 lacks"):
        evaluate(FakeModel([]), [(good[0], [{"id": 1}])])
    with pytest.raises(ValueError, match="occurs twice"):
        evaluate(FakeModel([prediction(GT_2, C[None])] * 2), [good, good])
    with pytest.raises(RuntimeError, match="returned 0 predictions"):
        evaluate(FakeModel([]), [good])
    with pytest.raises(ValueError, match="empty"):
        evaluate(FakeModel([]), [])
    with pytest.raises(ValueError, match="1 phrases but 2 masks"):
        evaluate(FakeModel([]), [pair([1], [GT_2], [[C, A]])])


def test_write_report(tmp_path):
    data = [pair([1, 2], [GT_1, GT_2], [[A, B], [C]])]
    result = evaluate(FakeModel([prediction(GT_1, np.stack([A, B])), prediction(GT_2, C[None])]), data)
    paths = write_report(result, tmp_path / "report", config={"model": "m"})
    metrics = json.loads(paths["metrics.json"].read_text())
    assert metrics["results"]["mIoU"] == 1.0 and "records" not in metrics["results"]
    assert metrics["config"] == {"model": "m"} and "GLaMM" in metrics["protocol"]
    table = paths["metrics.md"].read_text()
    assert "| images |" in table and "100.00" in table and "exact-match" in table
    lines = [json.loads(line) for line in paths["predictions.jsonl"].read_text().splitlines()]
    assert [r["id"] for r in lines] == [1, 2] and lines[0]["phrases"] == ["red car", "a truck"]
    np.testing.assert_array_equal(rle_to_mask(lines[0]["masks"][1]), B)


# --- with the data pipeline: GCGEvalDataset on the synthetic set ------------------------------------------


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    tokenizer = build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return CLVNetProcessor(tokenizer, vision_image_size=56, patch_size=14, hd_num=1, region_tokens=4,
                           sam_image_size=64)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return ensure_synthetic_gcg(tmp_path_factory.mktemp("gcg"), n=10, seed=0)


def oracle(dataset):
    """Perfect predictions for every tile of ``dataset``, in order."""
    return FakeModel([prediction(r.caption.markup, r.phrase_masks()) for r in dataset.records])


def test_eval_dataset_with_oracle(processor, synthetic):
    dataset = GCGEvalDataset(synthetic, processor, split="test")
    model = oracle(dataset)
    result = evaluate(model, dataset, batch_size=2)
    assert result["num_images"] == len(dataset) == 2
    assert result["mIoU"] == 1.0 and result["recall"] == 1.0 and result["AP50"] == pytest.approx(1.0)
    assert model.calls[0]["batch_size"] == 2 and model.calls[0]["tokenizer"] is processor.tokenizer
    union = [r.union_box().data[0].tolist() for r in dataset.records]
    np.testing.assert_allclose([r["box"] for r in result["records"]], union)


def test_wrong_box_changes_the_prompt(processor, synthetic):
    right = GCGEvalDataset(synthetic, processor, split="test")
    wrong = GCGEvalDataset(synthetic, processor, split="test", wrong_box=True)
    boxes = [evaluate(oracle(d), d)["records"][0]["box"] for d in (right, wrong)]
    assert boxes[0] != pytest.approx(boxes[1])


# --- clvnet-eval ------------------------------------------------------------------------------------------


@pytest.fixture
def fake_loading(monkeypatch, processor):
    """Replace model loading by an oracle over the synthetic test tiles (order = dataset order)."""
    state = {}

    def load(model_dir, device="cpu"):
        from clvnet.data import load_gcg_records

        records = load_gcg_records(state["data"], "test")
        state["model"] = FakeModel([prediction(r.caption.markup, r.phrase_masks()) for r in records])
        return state["model"], processor

    monkeypatch.setattr(predict, "load_for_inference", load)
    return state


def test_cli_eval_synthetic(tmp_path, fake_loading, capsys):
    out = tmp_path / "out"
    fake_loading["data"] = out / "data"
    code = cli_eval.main(["--model", str(tmp_path), "--synthetic", "--synthetic-samples", "10", "--out", str(out),
                          "--no-caption-metrics", "--no-progress", "--max-new-tokens", "5"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["results"]["mIoU"] == 1.0 and metrics["config"]["split"] == "test"
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2
    assert fake_loading["model"].calls[0]["max_new_tokens"] == 5
    captured = capsys.readouterr()
    assert "| images |" in captured.out and "exact phrase matching" in captured.err


def test_cli_eval_errors(tmp_path, fake_loading, monkeypatch, capsys):
    assert cli_eval.main(["--model", str(tmp_path), "--data", str(tmp_path / "missing")]) == 2
    assert "--data" in capsys.readouterr().err
    assert cli_eval.main(["--model", str(tmp_path / "nope"), "--synthetic"]) == 2
    assert cli_eval.main(["--model", str(tmp_path), "--synthetic", "--batch-size", "0"]) == 2
    out = tmp_path / "out"
    fake_loading["data"] = out / "data"
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert cli_eval.main(["--model", str(tmp_path), "--synthetic", "--synthetic-samples", "10", "--out",
                          str(out), "--no-progress"]) == 3
    assert "--no-caption-metrics" in capsys.readouterr().err


def test_cli_eval_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_eval.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "--wrong-box" in out and "--bert" in out and "Exit codes" in out
