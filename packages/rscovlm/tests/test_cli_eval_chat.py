"""``rscovlm-eval`` and ``rscovlm-chat`` on the tiny model with a few synthetic samples."""

import json

import pytest
from PIL import Image

from rscovlm import cli_chat, cli_eval


@pytest.mark.parametrize("task, metric", [("det", "APnc50"), ("vg", "Acc@0.5"), ("cls", "accuracy")])
def test_eval_cli_writes_report_with_parse_failure_rate(tmp_path, capsys, task, metric):
    out = tmp_path / task
    code = cli_eval.main(["--model", "tiny", "--task", task, "--synthetic-samples", "2", "--synthetic-size", "600",
                          "--max-new-tokens", "8", "--batch-size", "2", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    assert 0.0 <= results[metric] <= 1.0 and 0.0 <= results["parse_failure_rate"] <= 1.0
    assert report["config"]["task"] == task and report["protocol"]
    markdown = (out / "report.md").read_text()
    assert "parse failure %" in markdown and markdown in capsys.readouterr().out
    predictions = (out / "predictions.jsonl").read_text().splitlines()
    assert predictions and all("output" in json.loads(line) for line in predictions)
    if task == "det":
        assert results["windows"] == 2 * 4  # two 600² images, four 512 windows each


def test_eval_cli_reports_bad_data(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    assert cli_eval.main(["--model", "tiny", "--task", "vqa", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: not valid JSON" in capsys.readouterr().err


def test_chat_help_explains_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_chat.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--image", "--prompt", "--zoom", "--crop-source", "--max-new-tokens", "--out"):
        assert option in text


@pytest.mark.parametrize("zoom", [0, 1])
def test_chat_tiny_run(tmp_path, capsys, zoom):
    image = tmp_path / "x.png"
    Image.new("RGB", (120, 90), (30, 60, 90)).save(image)
    out = tmp_path / "chat"
    assert cli_chat.main(["--model", "tiny", "--image", str(image), "--prompt", "find the plane", "--zoom", str(zoom),
                          "--max-new-tokens", "6", "--out", str(out)]) == 0
    record = json.loads((out / "chat.json").read_text())
    assert capsys.readouterr().out == record["answer"] + "\n"
    assert record["rounds"][0]["prompt"].startswith("find the plane") and record["zoom"] == zoom
    assert (record["overlay"] is not None) == (out / "overlay.png").exists()


def test_chat_overlay_for_box_answers(tmp_path):
    quads, labels = cli_chat._overlay_boxes("10,10,50,10,50,40,10,40 plane\n", None)
    assert quads.shape == (1, 8) and labels == ["plane"]
    quads, labels = cli_chat._overlay_boxes("1,2,30,40 ship", None)
    assert quads.tolist() == [[1, 2, 30, 2, 30, 40, 1, 40]] and labels == ["ship"]
    assert cli_chat._overlay_boxes("no boxes", None)[0].shape == (0, 8)
