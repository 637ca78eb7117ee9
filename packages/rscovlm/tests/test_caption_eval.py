"""Captioning evaluation (``rscovlm-eval --task cap``): the reported metrics equal ``rs_shared.metrics`` computed
directly on the same outputs, with the parse-failure rate; a scripted fake model and the tiny real model."""

import json

import pytest
from PIL import Image
from rs_shared.metrics.captioning import METRICS, JavaNotFoundError, caption_metrics

from rscovlm import cli_eval, evaluation
from rscovlm.eval_data import TextSample, load_eval_set
from rscovlm.evaluation import evaluate_text_set
from rscovlm.templates import CAPTION_PROMPT

REFERENCES = [("many planes are parked near a terminal .", "an airport with two runways ."),
              ("yellow beach and blue sea .", "a beach ."),
              ("a river crosses green farmland .",),
              ("yellow beach and blue sea .",)]
OUTPUTS = ["Many planes are parked near the terminal.", "a beach with blue sea", "", "yellow beach, blue sea."]


class ScriptedGenerator:
    """Returns ``outputs`` in order, one per request; records the requests."""

    def __init__(self, outputs):
        self.outputs, self.requests = iter(outputs), []
        self.image_settings = None

    def generate(self, requests):
        self.requests += requests
        return [next(self.outputs) for _ in requests]


@pytest.fixture
def samples(tmp_path):
    Image.new("RGB", (56, 56)).save(tmp_path / "a.png")
    # ids 0 and 3 repeat: records of one image may share an id; every record is scored
    return [TextSample(str(k % 3), tmp_path / "a.png", CAPTION_PROMPT, refs) for k, refs in enumerate(REFERENCES)]


def test_cap_scores_equal_rs_shared_metrics(samples, monkeypatch):
    calls = []  # the task's own call of rs_shared's caption_metrics (METEOR's Java start is slow: run it once)

    def spy(*args, **kwargs):
        calls.append((args, kwargs, caption_metrics(*args, **kwargs)))
        return calls[-1][2]

    monkeypatch.setattr(evaluation, "caption_metrics", spy)
    fake = ScriptedGenerator(OUTPUTS)
    results, records = evaluate_text_set(fake, samples, "cap")
    predictions, references = dict(enumerate(OUTPUTS)), {k: list(r) for k, r in enumerate(REFERENCES)}
    ((args, kwargs, reported),) = calls
    assert args == (predictions, references, METRICS) and kwargs == {"tokenizer": "ptb"}
    assert results["METEOR"] == reported["METEOR"]
    direct = caption_metrics(predictions, references, ("BLEU", "ROUGE_L", "CIDEr"))  # computed here, directly
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE_L", "CIDEr"):
        assert results[key] == pytest.approx(direct[key], abs=1e-12), key
    assert results["num_images"] == 4 and results["standard"] is True
    assert 0 < results["BLEU-4"] < 1 and results["CIDEr"] > 0 and 0 < results["METEOR"] < 1
    assert results["parse_failure_rate"] == 0.25  # the empty caption: counted, and scored as it is
    assert [r["output"] for r in records] == OUTPUTS and records[1]["answers"] == list(REFERENCES[1])
    assert [r.messages[-1]["content"][-1]["text"] for r in fake.requests] == [CAPTION_PROMPT] * 4


def test_cap_simple_tokenizer_and_missing_java(samples, monkeypatch, tmp_path):
    results, _ = evaluate_text_set(ScriptedGenerator(OUTPUTS), samples, "cap", caption_tokenizer="simple")
    direct = caption_metrics(dict(enumerate(OUTPUTS)), {k: list(r) for k, r in enumerate(REFERENCES)},
                             ("BLEU", "ROUGE_L", "CIDEr"), tokenizer="simple")
    assert "METEOR" not in results and results["standard"] is False
    assert all(results[k] == pytest.approx(direct[k]) for k in ("BLEU-4", "ROUGE_L", "CIDEr"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: stop before generating anything
    fake = ScriptedGenerator(OUTPUTS)
    with pytest.raises(JavaNotFoundError):
        evaluate_text_set(fake, samples, "cap")
    assert fake.requests == []


def test_cap_cli_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "cap"
    code = cli_eval.main(["--model", "tiny", "--task", "cap", "--synthetic-samples", "3", "--synthetic-size", "112",
                          "--max-new-tokens", "6", "--batch-size", "2", "--caption-tokenizer", "simple",
                          "--out", str(out)])
    assert code == 0
    results = json.loads((out / "report.json").read_text())["results"]
    outputs = [json.loads(line)["output"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    references = [list(s.answers) for s in load_eval_set("cap", out / "data")]
    direct = caption_metrics(dict(enumerate(outputs)), dict(enumerate(references)), ("BLEU", "ROUGE_L", "CIDEr"),
                             tokenizer="simple")
    assert len(outputs) == 3 and all(results[k] == pytest.approx(direct[k]) for k in ("BLEU-4", "ROUGE_L", "CIDEr"))
    assert results["parse_failure_rate"] == sum(not o.strip().strip(".") for o in outputs) / 3  # newlines: failures
    assert "BLEU-4" in (out / "report.md").read_text() and "parse failure %" in capsys.readouterr().out
