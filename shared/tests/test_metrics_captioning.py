"""rs_shared.metrics.captioning: parity with pycocoevalcap's scorers, hand-checked values, Java handling."""

import math
import os
import shutil
import threading
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from rs_shared.metrics import captioning
from rs_shared.metrics.captioning import JavaNotFoundError, caption_metrics, simple_tokenize


PREDICTIONS = {
    "a": "A white plane is parked near the terminal.",
    "b": "Two tennis courts, next to a road!",
    "c": "",  # empty prediction
    "d": "Many cars are parked in the lot beside the building",
    "e": "a harbor with boats",
}
REFERENCES = {
    "a": ["A white airplane parked at the terminal building.", "The plane is parked near a terminal."],
    "b": ["There are two tennis courts beside the road."],  # single reference
    "c": ["A baseball field surrounded by trees."],
    "d": ["Several cars are parked in a parking lot next to a large building.", "cars in a lot"],
    "e": ["Boats are docked in the harbor.", "a small harbor with many boats", "boats near a pier"],
}


def _child_pids() -> list[int]:
    """Processes (zombies included) whose parent is this test process."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            pids.append(int(stat.parent.name))
    return pids


def test_parity_with_pycocoevalcap_scorers_and_no_leaked_process():
    threads_before = threading.active_count()
    children_before = _child_pids()
    reference_meteor = Meteor()  # starts its JVM now, loading in parallel with the one caption_metrics starts
    try:
        ours = caption_metrics(PREDICTIONS, REFERENCES)
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
        res = tokenizer.tokenize({k: [{"caption": PREDICTIONS[k]}] for k in REFERENCES})
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        expected = {f"BLEU-{n}": b for n, b in enumerate(bleu, 1)}
        expected["METEOR"] = reference_meteor.compute_score(gts, res)[0]
        expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
        expected["CIDEr"] = Cider().compute_score(gts, res)[0]
    finally:
        with reference_meteor.meteor_p as process:  # kill, then close its pipes and wait
            process.kill()
    for name, value in expected.items():
        assert ours[name] == float(value), name
    assert ours["num_images"] == 5 and ours["tokenizer"] == "ptb" and ours["standard"] is True
    assert 0 < ours["METEOR"] < 1 and 0 < ours["CIDEr"]
    assert _child_pids() == children_before  # the METEOR JVM is gone, not left as a zombie
    assert threading.active_count() == threads_before


@pytest.mark.parametrize("tokenizer", ["ptb", "simple"])
def test_bleu_hand_checked(tokenizer):
    # One image, one reference; 6 hypothesis tokens, 6 reference tokens.
    # Matches: 1-grams 5/6, 2-grams 3/5 (the cat, cat sat, on the), 3-grams 1/4 (the cat sat), 4-grams 0/3.
    # pycocoevalcap smooths each precision as (matches + 1e-15) / (count + 1e-9).
    out = caption_metrics({1: "The cat sat on the mat."}, {1: ["the cat sat down on the rug"]}, ("BLEU",),
                          tokenizer=tokenizer)
    # reference has 7 tokens, hypothesis 6: brevity penalty exp(1 - 7/6)
    bp = math.exp(1 - 7 / 6)
    p = [(5 + 1e-15) / (6 + 1e-9), (3 + 1e-15) / (5 + 1e-9), (1 + 1e-15) / (4 + 1e-9), (0 + 1e-15) / (3 + 1e-9)]
    for n in range(1, 5):
        assert out[f"BLEU-{n}"] == pytest.approx(bp * math.prod(p[:n]) ** (1 / n), rel=1e-9)
    assert out["standard"] is (tokenizer == "ptb")


def test_identical_captions_give_maximal_scores_and_single_image_cider_is_zero():
    refs = {1: ["a red car on the road"], 2: ["three ships in a harbor"]}
    out = caption_metrics({k: v[0] for k, v in refs.items()}, refs, ("BLEU", "ROUGE_L", "CIDEr"),
                          tokenizer="simple")
    assert out["BLEU-4"] == pytest.approx(1.0) and out["ROUGE_L"] == pytest.approx(1.0)
    assert out["CIDEr"] == pytest.approx(10.0)  # CIDEr-D: mean cosine 1 over n = 1..4, times 10
    # CIDEr-D's IDF comes from the evaluated references: with one image every n-gram has IDF 0.
    single = caption_metrics({1: "a red car"}, {1: ["a red car"]}, ("CIDEr",), tokenizer="simple")
    assert single["CIDEr"] == 0.0


def test_empty_prediction_scores_zero():
    out = caption_metrics({1: "", 2: "three ships"}, {1: ["a red car"], 2: ["three ships"]},
                          ("BLEU", "ROUGE_L", "CIDEr"), tokenizer="simple")
    assert out["ROUGE_L"] == pytest.approx(0.5)  # image 1 scores 0, image 2 scores 1
    assert out["BLEU-1"] == pytest.approx(2 / 2 * math.exp(1 - 5 / 2), rel=1e-6)  # corpus: 2 of 2 tokens, BP


def test_ptb_line_breaks_do_not_shift_captions():
    # Java's PTBTokenizer splits lines at \r, \u2028, \v, ...; pycocoevalcap only replaces "\n".
    preds = {1: "a red\rcar", 2: "three\u2028ships", 3: "a plane"}
    refs = {1: ["a red car"], 2: ["three ships"], 3: ["a plane"]}
    out = caption_metrics(preds, refs, ("BLEU",))
    assert out["BLEU-1"] == pytest.approx(1.0) and out["BLEU-2"] == pytest.approx(1.0)


def test_missing_java_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(JavaNotFoundError, match=r"Java >= 8.*apt install default-jre-headless"):
        caption_metrics({1: "a car"}, {1: ["a car"]}, ("BLEU",))
    with pytest.raises(JavaNotFoundError, match="METEOR"):
        caption_metrics({1: "a car"}, {1: ["a car"]}, ("METEOR",), tokenizer="simple")
    out = caption_metrics({1: "a car"}, {1: ["a car"]}, ("BLEU", "ROUGE_L"), tokenizer="simple")
    assert out["ROUGE_L"] == pytest.approx(1.0) and out["standard"] is False


@pytest.mark.parametrize(("banner", "major"), [('java version "1.7.0_80"', 7), ('java version "1.8.0_392"', 8),
                                               ('openjdk version "21" 2023-09-19', 21)])
def test_java_version_check(tmp_path, monkeypatch, banner, major):
    fake = tmp_path / "java"
    fake.write_text(f"#!/bin/sh\necho '{banner}' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: str(fake))
    assert captioning._java_major_version(str(fake)) == major
    if major < 8:
        with pytest.raises(JavaNotFoundError, match="Java 7"):
            captioning.require_java()
    else:
        assert captioning.require_java() == str(fake)


def test_simple_tokenize_rule():
    assert simple_tokenize('Tennis court-1, the "red" (big) CAR; 50% / two!') == \
        "tennis court-1 the red big car 50 % / two"
    assert simple_tokenize("The man's car.") == "the man s car"
    assert simple_tokenize("") == ""


@pytest.mark.parametrize(("preds", "refs", "metrics", "message"), [
    ({1: "a"}, {2: ["a"]}, ("BLEU",), "same image ids"),
    ({}, {}, ("BLEU",), "no images"),
    ({1: "a"}, {1: "a"}, ("BLEU",), "list of strings"),
    ({1: "a"}, {1: []}, ("BLEU",), "no reference"),
    ({1: None}, {1: ["a"]}, ("BLEU",), "must be strings"),
    ({1: "a"}, {1: ["a"]}, ("SPICE",), "SPICE is not supported"),
])
def test_input_errors(preds, refs, metrics, message):
    with pytest.raises(ValueError, match=message):
        caption_metrics(preds, refs, metrics, tokenizer="simple")
    with pytest.raises(ValueError, match="tokenizer"):
        caption_metrics({1: "a"}, {1: ["a"]}, ("BLEU",), tokenizer="nltk")
