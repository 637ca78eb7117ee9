"""Prompt strings and the answer grammar (spec §2.4, §4.1), and their round trip through the parsers."""

import json

import numpy as np
import pytest
from rs_shared.data.dota import DOTA_V1_0

from rscovlm import templates
from rscovlm.parsing import parse_detection, parse_grounding, parse_tool_call
from rscovlm.resize import plan_resize


def test_literal_strings():
    assert templates.category_list(DOTA_V1_0) == templates.DOTA_CATEGORY_LIST
    assert templates.find_prompt("plane") == "find the plane"
    assert templates.find_prompt(templates.DOTA_CATEGORY_LIST, eval_prompt=True).endswith("tennis court.")
    assert templates.EMPTY_DETECTION == "There are none."
    assert templates.VQA_SHORT_ANSWER == " Answer the question using a single word or a short phrase."
    assert templates.DEFAULT_SYSTEM_PROMPT == "You are a helpful assistant."


def test_tool_call_is_the_exact_official_block():  # P9
    assert templates.tool_call([100, 200, 300, 400]) == (
        '<tool_call>\n{"name": "image_zoom_in", "arguments": {"bbox": [100, 200, 300, 400]}}\n</tool_call>')
    with pytest.raises(ValueError, match="4 integers"):
        templates.tool_call([1, 2, 3])
    block = templates.TOOL_SYSTEM_PROMPT.split("<tools>\n")[1].split("\n</tools>")[0]
    assert json.loads(block)["function"]["name"] == templates.ZOOM_TOOL_NAME
    assert templates.zoom_question("Is there a ship?") == "Is there a ship?\n" + templates.ZOOM_INSTRUCTION


def test_mcq_prompt_layout():
    text = templates.mcq_prompt("What is the colour of the roof?", ["(A) red", "(B) blue"])
    assert text == ("What is the colour of the roof? The choices are listed below: \n(A) red\n(B) blue\n"
                    + templates.MCQ_INSTRUCTION + "\nThe best answer is:")


def test_detection_answer_order_and_format():
    boxes = [[50, 60, 70, 80], [10, 20, 30, 40], [5, 20, 9, 30], [0, 0, 4, 4]]
    labels = ["small-vehicle", "plane", "plane", "Large-Vehicle"]
    assert templates.detection_answer(boxes, labels, kind="hbb") == (
        "0,0,4,4 large vehicle\n5,20,9,30 plane\n10,20,30,40 plane\n50,60,70,80 small vehicle\n")
    assert templates.detection_answer([], [], kind="poly") == "There are none."
    with pytest.raises(ValueError, match="needs 8"):
        templates.detection_answer([[1, 2, 3, 4]], ["plane"], kind="poly")
    with pytest.raises(ValueError, match="labels"):
        templates.detection_answer([[1, 2, 3, 4]], [], kind="hbb")


def test_polygon_vertex_order():
    square = [30, 40, 10, 40, 10, 20, 30, 20]  # any start, any direction
    assert templates.normalize_polygon(square) == [10, 20, 30, 20, 30, 40, 10, 40]  # clockwise on screen (DOTA)
    assert templates.normalize_polygon(square, clockwise=False) == [10, 20, 10, 40, 30, 40, 30, 20]  # refGeo
    answer = templates.detection_answer([square], ["ship"], kind="poly")
    assert answer == "10,20,30,20,30,40,10,40 ship\n"


def test_answers_round_trip_through_the_parsers():
    rng = np.random.default_rng(0)
    frame = plan_resize(1000, 800)
    quads = rng.integers(0, 1000, (20, 8))
    labels = [DOTA_V1_0[k] for k in rng.integers(0, len(DOTA_V1_0), 20)]
    resized = frame.to_resized(quads)
    parsed = parse_detection(templates.detection_answer(resized, labels), frame=frame)
    assert not parsed.skipped and len(parsed.objects) == 20
    assert sorted(o.label for o in parsed.objects) == sorted(templates.class_key(c) for c in labels)
    assert all(o.label_score == 100.0 for o in parsed.objects)
    scale = np.tile(np.divide(frame.resized, frame.original), 4)
    back = sorted(tuple(np.rint(np.asarray(o.coords) * scale).astype(int)) for o in parsed.objects)
    assert back == sorted(tuple(templates.normalize_polygon(r)) for r in resized)
    grounding = parse_grounding(templates.grounding_answer([100, 203, 302, 406], "the white plane"), frame)
    assert grounding.ok and grounding.value.label == "the white plane"
    np.testing.assert_allclose(grounding.value.coords, [99.206349, 200.0, 299.603175, 400.0], atol=1e-5)
    call = parse_tool_call(templates.tool_call([100, 200, 300, 400]))
    assert call.ok and call.call.bbox == (100.0, 200.0, 300.0, 400.0)
