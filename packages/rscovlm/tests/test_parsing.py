"""Strict output parsers: the spec's parity cases (§9 P5, P6, P9, pitfalls 9–10) and a seeded fuzz test."""

import random

import numpy as np
import pytest
from rs_shared.data.dota import DOTA_V1_0

from rscovlm import templates
from rscovlm.parsing import (
    FUZZY_BACKEND,
    DetectionParse,
    ParseResult,
    ToolCallParse,
    fuzzy_match,
    parse_choice,
    parse_class,
    parse_count,
    parse_detection,
    parse_grounding,
    parse_tool_call,
)
from rscovlm.resize import plan_resize

KEYS = [templates.class_key(c) for c in DOTA_V1_0]


def test_p5_plain_detection_output():
    output = ("12,30,40,30,40,60,12,60 plane\n100,100,150,100,150,130,100,130 small-vehicle\n"
              "5,5,20,5,20,20 ship\nfoo bar\n1,2,3,4,5,6,7,8,9,10 harbour")
    parsed = parse_detection(output, frame=plan_resize(512, 512))
    assert [(o.label, o.class_index) for o in parsed.objects] == [("plane", 0), ("small vehicle", 4), ("harbor", 12)]
    assert [o.score for o in parsed.objects] == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(parsed.objects[0].coords[:2], [12 * 512 / 504, 30 * 512 / 504])
    assert parsed.objects[0].coords[0] == pytest.approx(12.190476)
    np.testing.assert_allclose(parsed.objects[2].coords, np.arange(1, 9) * 512 / 504)  # first 8 ints kept
    assert [(s.line, s.reason) for s in parsed.skipped] == [
        (2, "6 coordinates, 8 needed"), (3, "the coordinates are not comma-separated integers")]


def test_p6_fuzzy_labels():
    expected = {"airplane": "plane", "harbour": "harbor", "vehicle": "small vehicle", "storage tanks": "storage tank",
                "xyz": "plane"}
    for label, key in expected.items():
        index, score = fuzzy_match(label, KEYS)
        assert KEYS[index] == key, label
    assert fuzzy_match("xyz", KEYS)[1] == 0.0
    if FUZZY_BACKEND == "rapidfuzz":  # WRatio scores of the spec
        assert fuzzy_match("airplane", KEYS)[1] == 90.0


def test_detection_rules():
    for none in ("There are none.", "  there are none  ", "THERE ARE NONE."):
        assert parse_detection(none).empty_answer and not parse_detection(none).objects
    spaced = parse_detection("12, 30,40,30,40,60,12,60 plane")  # pitfall 10: spaces invalidate the line
    assert not spaced.objects and spaced.skipped[0].reason.startswith("the coordinates")
    assert parse_detection("1,2,3,4,5,6,7,8").skipped[0].reason == "no label after the coordinates"
    assert parse_detection("1,2,3,4,5,6,7,8 ").skipped[0].reason == "no label after the coordinates"
    hbb = parse_detection("1,2,3,4 Plane\n5,6,7 ship", kind="hbb")
    assert [o.coords for o in hbb.objects] == [(1.0, 2.0, 3.0, 4.0)] and hbb.objects[0].label == "plane"
    strict = parse_detection("1,2,3,4,5,6,7,8 xyz", min_label_score=50)
    assert not strict.objects and "matches no class" in strict.skipped[0].reason
    assert parse_detection("1,2,3,4,5,6,7,8 plane", kind="obb").failure.startswith("unknown box kind")
    assert parse_detection(None).failure == "output is NoneType, not str"
    huge = parse_detection("1" * 5000 + ",2,3,4,5,6,7,8 plane")  # beyond int()'s digit limit: skipped, no raise
    assert not huge.objects and len(huge.skipped) == 1

    def broken(label, keys):
        raise RuntimeError("boom")
    assert "label matcher failed" in parse_detection("1,2,3,4,5,6,7,8 plain", matcher=broken).skipped[0].reason


def test_grounding_first_line_only():
    ok = parse_grounding("100,203,302,406 plane\n1,2,3,4 ship")
    assert ok.ok and ok.value.coords == (100.0, 203.0, 302.0, 406.0) and ok.value.label == "plane"
    assert not parse_grounding("100, 203, 302, 406 plane").ok  # pitfall 9: spaces fail
    assert not parse_grounding("100,203,302,406").ok  # a label is required
    assert not parse_grounding("0.1,0.2,0.3,0.4 plane").ok  # integers only
    assert not parse_grounding("").ok and not parse_grounding(3).ok
    poly = parse_grounding("1,2,3,4,5,6,7,8 the ship  ", kind="poly")
    assert poly.value.coords == tuple(map(float, range(1, 9))) and poly.value.label == "the ship"


def test_p9_tool_call():
    text = "Let me look.\n" + templates.tool_call([100, 200, 300, 400])
    parsed = parse_tool_call(text)
    assert parsed.called and parsed.ok and parsed.call.bbox == (100.0, 200.0, 300.0, 400.0)
    assert parsed.call.text_before == "Let me look."
    assert parse_tool_call("The answer is 3.") == ToolCallParse(False)
    failures = {
        "<tool_call>{}": "not closed",
        "<tool_call>{'name': 1}</tool_call>": "not valid JSON",
        '<tool_call>{"name": "crop", "arguments": {"bbox": [1, 2, 3, 4]}}</tool_call>': "unknown tool",
        '<tool_call>{"name": "image_zoom_in", "arguments": {"bbox": [1, 2, 3]}}</tool_call>': "4 numbers",
        '<tool_call>{"name": "image_zoom_in", "arguments": {"bbox": [true, 2, 3, 4]}}</tool_call>': "4 numbers",
        '<tool_call>{"name": "image_zoom_in", "arguments": {"bbox": [NaN, 2, 3, 4]}}</tool_call>': "not valid JSON",
        '<tool_call>{"name": "image_zoom_in", "arguments": {"bbox": [1e999, 2, 3, 4]}}</tool_call>': "non-finite",
        '<tool_call>{"name": "image_zoom_in", "arguments": {"bbox": [5, 2, 3, 4]}}</tool_call>': "no area",
        '<tool_call>{"name": "image_zoom_in", "arguments": "bbox"}</tool_call>': '{"name": str',
        "<tool_call>" + "[" * 100000 + "</tool_call>": "not valid JSON",
    }
    for text, reason in failures.items():
        parsed = parse_tool_call(text)
        assert parsed.called and not parsed.ok and reason in parsed.failure, (text[:60], parsed.failure)


def test_count_class_and_choice():
    assert parse_count("There are 12 planes.").value == 12
    assert parse_count("three").value == 3 and parse_count("None").value == 0
    assert not parse_count("many").ok and not parse_count("1" * 40).ok
    classes = ["airport", "dense_residential", "residential", "farmland"]
    assert parse_class("Dense residential.", classes).value == 1
    assert parse_class("It is a residential area", classes).value == 2
    assert parse_class("a dense residential area", classes).value == 1  # "residential" inside it does not count
    assert not parse_class("a dense residential area near farmland", classes).ok  # two classes: ambiguous
    assert not parse_class("forest", classes).ok
    assert parse_choice("B").value == "B" and parse_choice("(C) a ship").value == "C"
    assert parse_choice("The best answer is: D").value == "D" and parse_choice("E.").value == "E"
    assert not parse_choice("A ship").ok and not parse_choice("F").ok and not parse_choice("").ok


# --- fuzz ------------------------------------------------------------------------------------------------

_ALPHABET = list("0123456789,,,  \n\n\t.-+_:;{}[]\"'()abcxyzPLANEé中٣\u2028\r") + [
    "<tool_call>", "</tool_call>", "plane", "small-vehicle", "There are none.", '"name"', '"arguments"',
    '"bbox"', "image_zoom_in", "NaN", "1e999", "<|im_end|>"]
_VALID = [
    templates.detection_answer([[1, 2, 30, 2, 30, 40, 1, 40], [5, 6, 7, 6, 7, 9, 5, 9]], ["plane", "ship"]),
    templates.grounding_answer([100, 203, 302, 406], "the plane"),
    templates.tool_call([10, 20, 300, 400]),
    "There are 3 ships.", "(B) the roof is red", "dense residential",
]


def _random_string(rng: random.Random) -> str:
    if rng.random() < 0.5:  # a valid output with random edits
        chars = list(rng.choice(_VALID))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(chars) + 1)
            op = rng.random()
            if op < 0.4:
                chars.insert(pos, rng.choice(_ALPHABET))
            elif chars and op < 0.7:
                del chars[min(pos, len(chars) - 1)]
            elif chars:
                chars[min(pos, len(chars) - 1)] = rng.choice(_ALPHABET)
        return "".join(chars)
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 60)))


def test_fuzz_parsers_never_raise():
    rng = random.Random(1234)
    frame = plan_resize(640, 480)
    classes = ["airport", "dense_residential", "residential", "farmland"]
    outcomes = {"detected": 0, "grounded": 0, "called": 0}
    for _ in range(10_000):
        text = _random_string(rng)
        detection = parse_detection(text, frame=frame, kind=rng.choice(["poly", "hbb"]))
        assert isinstance(detection, DetectionParse)
        assert all(len(o.coords) in (4, 8) and 0 <= o.class_index < len(KEYS) for o in detection.objects)
        grounding = parse_grounding(text, frame)
        assert isinstance(grounding, ParseResult) and grounding.ok == (grounding.value is not None)
        call = parse_tool_call(text)
        assert isinstance(call, ToolCallParse) and (call.ok or not call.called or call.failure)
        for result in (parse_count(text), parse_class(text, classes), parse_choice(text)):
            assert isinstance(result, ParseResult) and result.ok == (result.value is not None)
        outcomes["detected"] += bool(detection.objects)
        outcomes["grounded"] += grounding.ok
        outcomes["called"] += call.ok
    assert min(outcomes.values()) > 10  # the fuzz reaches the success paths, not only the failures
    for bad in (None, 3, b"1,2,3,4 plane", ["x"]):
        assert parse_detection(bad).failure and not parse_grounding(bad).ok and not parse_tool_call(bad).ok
        assert not parse_count(bad).ok and not parse_class(bad, classes).ok and not parse_choice(bad).ok
