"""Evaluation (spec §5, §6, §8 tests f and g): APnc toy case, grounding, matchers, parse-failure rates."""

import json

import numpy as np
import pytest
from PIL import Image
from rs_shared.data.dota import DotaImage
from rs_shared.data.geometry import Boxes

from rscovlm.eval_data import GroundingSample, TextSample, load_eval_set, synthesize_eval_set
from rscovlm.evaluation import (
    MATCHERS,
    evaluate_detection_set,
    evaluate_grounding_set,
    evaluate_text_set,
    rotated_nms,
)
from rscovlm.render import ImageSettings

IDENTITY = ImageSettings(min_pixels=28 * 28, max_pixels=4096 * 4096)  # 84×84 images keep their size


class TableGenerator:
    """Answers by looking the request's last user text or first image up in ``table``."""

    def __init__(self, answer, image_settings=IDENTITY):
        self.answer, self.image_settings, self.requests = answer, image_settings, []

    def generate(self, requests):
        self.requests += requests
        return [self.answer(r) for r in requests]


def _square(x1, y1, x2, y2, label="plane"):
    return f"{x1},{y1},{x2},{y1},{x2},{y2},{x1},{y2} {label}"


def _dota(name, boxes, value):
    quads = Boxes(np.array(boxes, dtype=float), "xyxy", "pixel", (84, 84)).to("quad")
    return DotaImage(name, np.full((84, 84, 3), value, np.uint8), quads, ("plane",) * len(boxes),
                     np.zeros(len(boxes), np.int64))


def test_apnc_toy_case_through_the_detection_pipeline():
    a = _dota("A", [[0, 0, 10, 10], [20, 0, 30, 10]], 10)
    b = _dota("B", [[0, 0, 10, 10]], 20)
    outputs = {10: _square(0, 0, 10, 10) + "\n" + _square(50, 50, 60, 60) + "\n",
               20: _square(1, 0, 11, 10) + "\nthis line is not a box\n"}
    fake = TableGenerator(lambda r: outputs[int(np.asarray(r.images[0])[0, 0, 0])])
    results, records = evaluate_detection_set(fake, [a, b], classes=("plane",))
    assert results["APnc50"] == pytest.approx(6 / 11) and results["APnc75"] == pytest.approx(6 / 11)
    assert results["APnc50:95"] == pytest.approx(0.4909, abs=1e-4)
    assert results["parse_failure_rate"] == 0.0 and results["skipped_line_rate"] == pytest.approx(1 / 4)
    prompt = fake.requests[0].messages[-1]["content"][-1]["text"]
    assert prompt == "find the plane." and len(records) == 2
    swapped, _ = evaluate_detection_set(fake, [b, a], classes=("plane",))  # tie order matters (P7)
    assert swapped["APnc50"] == pytest.approx(7 / 11) and swapped["APnc50:95"] == pytest.approx(0.5)


def test_detection_failures_and_empty_answers():
    a, b, c = _dota("A", [[0, 0, 10, 10]], 10), _dota("B", [], 20), _dota("C", [[5, 5, 20, 20]], 30)
    outputs = {10: "garbage without boxes", 20: "There are none.", 30: "1,2,3 plane"}
    fake = TableGenerator(lambda r: outputs[int(np.asarray(r.images[0])[0, 0, 0])])
    results, records = evaluate_detection_set(fake, [a, b, c], classes=("plane",))
    assert results["APnc50"] == 0.0 and results["parse_failure_rate"] == pytest.approx(2 / 3)
    assert [r["parse_failed"] for r in records] == [True, False, True]


def test_large_images_are_tiled_and_merged():
    image = DotaImage("big", np.zeros((700, 700, 3), np.uint8),
                      Boxes(np.array([[400, 400, 440, 440]], float), "xyxy", "pixel", (700, 700)).to("quad"),
                      ("plane",), np.zeros(1, np.int64))
    # every window that contains (400, 400) reports it in its own coordinates: merged into one detection
    def answer(request):
        return "There are none."
    fake = TableGenerator(answer)
    results, records = evaluate_detection_set(fake, [image], classes=("plane",), tile_size=512, gap=200)
    assert results["windows"] == len(records) == 4 and [r["origin"] for r in records] == [
        [0, 0], [188, 0], [0, 188], [188, 188]]
    answers = iter([_square(400, 400, 440, 440), _square(212, 400, 252, 440), _square(400, 212, 440, 252),
                    _square(212, 212, 252, 252)])
    fake = TableGenerator(lambda r: next(answers))
    results, _ = evaluate_detection_set(fake, [image], classes=("plane",), tile_size=512, gap=200)
    assert results["detections"] == 1 and results["APnc50"] == pytest.approx(1.0)


def test_rotated_nms_per_class():
    quads = Boxes(np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40]], float),
                  "xyxy").to("quad").data
    assert rotated_nms(quads, ["a", "a", "b", "a"]).tolist() == [0, 2, 3]
    assert rotated_nms(quads, ["a", "a", "b", "a"], iou_threshold=0.9).tolist() == [0, 1, 2, 3]


def test_grounding_strict_iou_and_failures(tmp_path):
    Image.new("RGB", (84, 84)).save(tmp_path / "x.png")
    lines = [{"image": "x.png", "question": q, "bbox": [0, 0, 10, 10]} for q in ("half", "more", "broken", "spaces")]
    (tmp_path / "vg.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    samples = load_eval_set("vg", tmp_path / "vg.jsonl")
    outputs = {"find the half": "0,0,10,20 box", "find the more": "0,0,10,19 box\nsecond line ignored",
               "find the broken": "no box here", "find the spaces": "0, 0, 10, 10 box"}
    fake = TableGenerator(lambda r: outputs[r.messages[-1]["content"][-1]["text"]])
    results, records = evaluate_grounding_set(fake, samples)
    assert results["Acc@0.5"] == 0.25 and results["correct"] == 1  # IoU 0.5 is wrong, 0.526 right (P8)
    assert results["parse_failure_rate"] == 0.5 and records[2]["box"] == [0, 0, 0, 0]


def test_bad_records_name_file_line_and_field(tmp_path):
    file = tmp_path / "vg.jsonl"
    file.write_text('{"image": "x.png", "question": "q", "bbox": [0, 0, 10, 10]}\n{"image": "x.png", "question": "q"}\n')
    with pytest.raises(ValueError, match=r"vg.jsonl:2: field 'bbox'"):
        load_eval_set("vg", file)
    file.write_text('{"image": "x.png", "question": "q"}\n')
    with pytest.raises(ValueError, match=r"vg.jsonl:1: field 'answer'"):
        load_eval_set("vqa", file)


def test_section6_matchers():
    assert not MATCHERS["bidirectional"]("", "airport") and MATCHERS["bidirectional_official"]("", "airport")
    assert MATCHERS["bidirectional"]("Dense residential.", "residential")
    assert MATCHERS["one_way"]("none", "no") and MATCHERS["one_way"]("north", "no")  # the protocol's quirk
    assert not MATCHERS["one_way"]("no", "none")
    assert MATCHERS["teochat"]("Airport.", "airport") and not MATCHERS["teochat"](" airport", "airport")
    assert MATCHERS["exact"](" Yes. ", "yes") and not MATCHERS["exact"]("yes .", "yes")
    assert MATCHERS["wups"]("Car.", "car") and not MATCHERS["wups"]("car", "automobile")  # no WordNet: exact only


def test_text_tasks_report_parse_failures(tmp_path):
    Image.new("RGB", (84, 84)).save(tmp_path / "x.png")
    samples = [TextSample(str(k), tmp_path / "x.png", f"q{k}", (a,))
               for k, a in enumerate(["airport", "harbor", "forest", "forest"])]
    outputs = iter(["Airport.", "harbor or forest", "", "a dense forest"])
    results, records = evaluate_text_set(TableGenerator(lambda r: next(outputs)), samples, "cls")
    # bidirectional: "airport", "forest" ⊂ "a dense forest" right; "harbor or forest" contains "harbor": right
    assert results["accuracy"] == 0.75 and results["matcher"] == "bidirectional"
    assert results["parse_failure_rate"] == 0.5  # the ambiguous answer and the empty one
    assert [r["class"] for r in records] == ["airport", None, None, "forest"]
    outputs = iter(["3", " ", "yes", "No."])
    vqa = [TextSample(str(k), tmp_path / "x.png", "q", (a,)) for k, a in enumerate(["3", "2", "yes", "no"])]
    results, _ = evaluate_text_set(TableGenerator(lambda r: next(outputs)), vqa, "vqa")
    assert results["accuracy"] == 0.75 and results["parse_failure_rate"] == 0.25 and "wups_variant" in results


@pytest.mark.parametrize("task", ["vg", "cls", "vqa", "cap"])
def test_synthetic_sets_load(tmp_path, task):
    path = synthesize_eval_set(task, tmp_path / task, 3, size=112)
    samples = load_eval_set(task, path)
    assert len(samples) == 3 and all(s.image_path.is_file() for s in samples)
    if task == "vg":
        assert all(isinstance(s, GroundingSample) and s.bbox[0] < s.bbox[2] for s in samples)
