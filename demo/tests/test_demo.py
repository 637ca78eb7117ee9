"""rs_demo's own logic without a trained model: the chat transcript and boxes from a scripted RSCoVLM generator, the
box and class inputs, and the fallback cache's build-once behaviour (with a stand-in training command).
The whole app in a browser is tests/test_demo_browser.py at the repository root."""

import json
import sys

import numpy as np
import pytest
from rscovlm.model_factory import TINY_IMAGE_SETTINGS
from rscovlm.templates import ZOOMED_IMAGE_NOTE, tool_call
from rs_shared.viz import palette

from rs_demo import fallback
from rs_demo.models import chat
from rs_demo.ui import parse_box, parse_classes

WHITE = (255, 255, 255)


class ScriptedGenerator:
    """An ``rscovlm.inference.Generator`` that answers with the given outputs in turn and keeps the requests."""

    image_settings = TINY_IMAGE_SETTINGS  # a 448² image is seen at 224² (half size)

    def __init__(self, *outputs: str):
        self.outputs, self.requests = list(outputs), []

    def generate(self, requests):
        self.requests += requests
        return [self.outputs.pop(0) for _ in requests]


def image(side: int = 448) -> np.ndarray:
    return np.full((side, side, 3), 90, np.uint8)


def test_zoom_round_and_detection_lines_become_transcript_boxes_and_record():
    answer = "10,20,60,20,60,70,10,70 plane\n100,100,150,100,150,150,100,150 ship"
    generator = ScriptedGenerator(tool_call([10, 20, 110, 120]), answer)
    result = chat(generator, image(), "find the planes", zoom_steps=2)

    assert [m["role"] for m in result.messages] == ["user", "assistant", "assistant", "user", "assistant", "assistant"]
    assert result.messages[0]["content"].startswith("find the planes\n")  # round 0 carries the zoom instruction
    assert "zoom-in 1" in result.messages[2]["content"] and "[20, 40, 220, 240]" in result.messages[2]["content"]
    assert result.messages[3]["content"] == ZOOMED_IMAGE_NOTE
    assert result.messages[4]["content"] == answer
    assert "parsed 2 polygon line(s)" in result.messages[5]["content"]
    # resized-frame coordinates (224²) are mapped back to the 448² image
    assert result.record["boxes"] == [[20, 40, 120, 40, 120, 140, 20, 140], [200, 200, 300, 200, 300, 300, 200, 300]]
    assert result.record["labels"] == ["plane", "ship"]
    assert result.picture.size == (448, 448)
    assert result.picture.getpixel((200, 40)) == WHITE  # top edge of the zoom region, drawn in white
    assert result.picture.getpixel((70, 140)) == palette(2)[0]  # bottom edge of the plane's box, first colour


def test_failed_tool_call_and_unparsable_answer_are_reported_as_such():
    generator = ScriptedGenerator("<tool_call>\nnot json\n</tool_call>", "a plane, probably")
    result = chat(generator, image(), "find the planes", zoom_steps=1)

    notes = [m["content"] for m in result.messages if m["content"].startswith("*[")]
    assert notes[0].startswith("*[zoom-in 1 failed]*") and "full image was sent back" in notes[0]
    assert notes[1].startswith("*[detection parse]* parse failure") and "no boxes drawn" in notes[1]
    assert result.record["boxes"] == [] and result.record["answer"] == "a plane, probably"
    assert result.picture.size == (448, 448)


def test_zoom_limit_and_plain_turn():
    capped = chat(ScriptedGenerator(tool_call([0, 0, 50, 50]), tool_call([0, 0, 20, 20])), image(), "q", zoom_steps=1)
    assert capped.record["capped"] and any("zoom limit reached" in m["content"] for m in capped.messages)

    generator = ScriptedGenerator("There are none.")
    plain = chat(generator, image(64), "find the planes", zoom_steps=0)
    assert len(generator.requests) == 1 and generator.requests[0].messages[-1]["content"][-1]["text"] == \
        "find the planes"
    assert "no objects" in plain.messages[-1]["content"]
    assert plain.picture.size == (256, 256)  # small images are enlarged for display
    with pytest.raises(ValueError, match="ask a question"):
        chat(ScriptedGenerator(), image(), "  ", zoom_steps=0)


def test_box_and_class_inputs():
    assert parse_box("10, 20 30,40") == [10.0, 20.0, 30.0, 40.0]
    assert parse_box("  ") is None
    for bad in ("1, 2, 3", "a, b, c, d", "1 2 3 4 5"):
        with pytest.raises(ValueError, match="four numbers"):
            parse_box(bad)
    assert parse_classes(" airport, ,harbor ") == ["airport", "harbor"]
    assert parse_classes("") is None


def test_train_command_is_the_package_entry_point_with_the_budget(tmp_path):
    command = fallback.train_command("icipnet", "smoke", tmp_path)
    assert command[0].endswith("icipnet-train")
    assert command[command.index("--data.synthetic_dir") + 1] == f"{tmp_path}/data"
    assert command[command.index("--train.max_steps") + 1] == "4"
    with pytest.raises(ValueError, match="unknown budget"):
        fallback.train_command("icipnet", "huge", tmp_path)


def test_fallback_is_built_once_and_an_unfinished_build_is_redone(tmp_path, monkeypatch):
    runs = tmp_path / "runs.txt"
    script = ("import pathlib, sys; pathlib.Path('run/model').mkdir(parents=True); "
              "pathlib.Path('run/model/config.json').write_text('{}'); "
              f"open({str(runs)!r}, 'a').write('x'); print('trained')")
    monkeypatch.setattr(fallback, "train_command", lambda package, budget, entry: [sys.executable, "-c", script])
    cache = tmp_path / "cache"

    model = fallback.ensure_fallback("clvnet", cache, "smoke")
    assert model == (cache / "smoke" / "clvnet" / "run" / "model").resolve() and (model / "config.json").is_file()
    marker = json.loads((cache / "smoke" / "clvnet" / "fallback.json").read_text())
    assert marker["model"] == "run/model" and marker["budget"] == "smoke"
    assert "trained" in (cache / "smoke" / "clvnet" / "train.log").read_text()
    assert fallback.ensure_fallback("clvnet", cache, "smoke") == model and runs.read_text() == "x"  # cached

    (cache / "smoke" / "clvnet" / "fallback.json").unlink()  # as if the build had been interrupted
    (cache / "smoke" / "clvnet" / "stray").write_text("left over")
    assert fallback.ensure_fallback("clvnet", cache, "smoke") == model and runs.read_text() == "xx"
    assert not (cache / "smoke" / "clvnet" / "stray").exists()


def test_failed_fallback_build_names_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(fallback, "train_command",
                        lambda package, budget, entry: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(fallback.FallbackError, match=r"exit code 3.*train\.log"):
        fallback.ensure_fallback("rscovlm", tmp_path, "smoke")
