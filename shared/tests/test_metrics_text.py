"""Answer normalisation and the RSCoVLM matchers, including parity point 10 of the spec."""

from functools import partial

import pytest

from rs_shared.metrics.text import (
    answer_accuracy,
    bidirectional_containment,
    exact_match,
    group_accuracy,
    normalize_answer,
    one_way_containment,
    teochat_exact_match,
    wups_match,
)

SYNONYMS = {frozenset({"car", "automobile"}): 1.0, frozenset({"car", "truck"}): 0.8}


def fake_wordnet(a: str, b: str) -> float:
    """Stand-in for the WordNet path similarity (WordNet is not available offline)."""
    return SYNONYMS.get(frozenset({a, b}), 0.0)


# --- parity point 10, verbatim -------------------------------------------------------------------------

def test_p10_bidirectional_empty_prediction_is_correct_officially():
    assert bidirectional_containment("", "airport", empty_prediction_correct=True) is True


def test_p10_one_way_no_matches_none():
    assert one_way_containment("none", "no") is True


def test_p10_teochat_exact():
    assert teochat_exact_match("Airport.", "airport") is True


def test_p10_wups_with_wordnet_similarity():
    assert wups_match("car", "automobile", similarity=fake_wordnet) is True


# --- the rest -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "normalised"), [
    (" Yes. ", "yes"), ("...Airport..", "airport"), ("yes .", "yes "), ("Dense Residential", "dense residential"),
    ("\tU.S.\n", "u.s"), ("", ""),
])
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match():
    assert exact_match(" Yes.", "yes")
    assert not exact_match("yes!", "yes")
    assert not exact_match("dense residential", "residential")


def test_bidirectional_containment_default_rejects_empty_prediction():
    assert bidirectional_containment("", "airport") is False
    assert bidirectional_containment("  . ", "airport") is False                 # empty after N(s)
    assert bidirectional_containment("airport", "The airport.") is True          # pred in gt
    assert bidirectional_containment("It is a dense residential area", "dense residential") is True
    assert bidirectional_containment("farmland", "forest") is False


def test_one_way_containment_direction_and_substring_quirk():
    assert one_way_containment("north", "no") is True and one_way_containment("not", "no") is True
    assert one_way_containment("no", "none") is False                            # gt must be inside pred
    assert one_way_containment("Yes, there is.", "yes") is True


def test_teochat_keeps_whitespace_and_deletes_inner_punctuation():
    assert teochat_exact_match(" airport", "airport") is False
    assert teochat_exact_match("baseball-field", "baseballfield") is True
    assert teochat_exact_match("Dense Residential", "dense residential") is True


def test_wups_without_wordnet_counts_only_exact_matches():
    assert wups_match("car", "automobile") is False
    assert wups_match(" Car.", "car") is True
    assert wups_match("car", "truck", similarity=fake_wordnet) is False          # strictly > 0.8


def test_answer_accuracy_with_each_matcher():
    preds = ["Yes.", "", "none", "Airport"]
    refs = ["yes", "airport", "no", "airport"]
    assert answer_accuracy(preds, refs) == 0.5
    assert answer_accuracy(preds, refs, one_way_containment) == 0.75
    assert answer_accuracy(preds, refs, bidirectional_containment) == 0.75
    official = partial(bidirectional_containment, empty_prediction_correct=True)
    assert answer_accuracy(preds, refs, official) == 1.0


def test_group_accuracy_task_average_and_pooled():
    preds = ["yes", "no", "no", "3", "red"]
    refs = ["yes", "yes", "no", "4", "red"]
    groups = ["presence", "presence", "presence", "count", "color"]
    r = group_accuracy(preds, refs, groups)
    assert r["per_group"] == {"color": 1.0, "count": 0.0, "presence": pytest.approx(2 / 3)}
    assert r["counts"] == {"color": 1, "count": 1, "presence": 3}
    assert r["mean"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert r["overall"] == pytest.approx(3 / 5)


@pytest.mark.parametrize(("preds", "refs", "error", "message"), [
    (["a"], ["a", "b"], ValueError, "1 predictions but 2 references"),
    ([], [], ValueError, "no answers"),
    (["a", None], ["a", "b"], TypeError, "prediction 1 must be a string"),
    (["a", "b"], ["a", " . "], ValueError, "reference 1 is empty"),
])
def test_bad_input_is_rejected(preds, refs, error, message):
    with pytest.raises(error, match=message):
        answer_accuracy(preds, refs)


def test_group_labels_must_align():
    with pytest.raises(ValueError, match="2 answers but 1 group"):
        group_accuracy(["a", "b"], ["a", "b"], ["x"])
