"""Short-answer matching for VQA and scene classification by a VLM (spec ``rscovlm.md`` §6, §9 points 8–10).

Each matcher takes ``(prediction, reference)`` strings and returns ``bool``; :func:`answer_accuracy` and
:func:`group_accuracy` turn them into accuracies (fractions; CLIs print ×100). Most matchers first apply the
RSCoVLM normalisation ``N(s)`` (:func:`normalize_answer`): lowercase → strip whitespace → strip "." at both
ends.

Which matcher each benchmark uses (RSCoVLM evaluation code):

* :func:`exact_match` — plain VQA accuracy, ``N(pred) == N(gt)``;
* :func:`bidirectional_containment` — VHM protocol (AID, METER-ML, NWPU-RESISC45, WHU-RS19, RSVQA-HR/LR);
* :func:`one_way_containment` — VRSBench VQA;
* :func:`teochat_exact_match` — GeoChat/TEOChat protocol (AID, UCMerced);
* :func:`wups_match` — LRS-VQA (exact match, else WordNet path similarity > 0.8).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

WUPS_THRESHOLD = 0.8

_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)

Matcher = Callable[[str, str], bool]


def normalize_answer(s: str) -> str:
    """RSCoVLM ``N(s)``: lowercase, strip surrounding whitespace, then strip "." at both ends (in that order,
    so ``" Yes. "`` → ``"yes"`` but ``"yes ."`` → ``"yes "``)."""
    return s.lower().strip().strip(".")


def exact_match(prediction: str, reference: str) -> bool:
    """Normalised exact match, ``N(pred) == N(gt)``."""
    return normalize_answer(prediction) == normalize_answer(reference)


def bidirectional_containment(prediction: str, reference: str, *, empty_prediction_correct: bool = False) -> bool:
    """VHM protocol: ``N(pred) in N(gt) or N(gt) in N(pred)``.

    The official code counts an **empty prediction as correct** (``"" in gt`` is true), so a model that
    answers nothing scores 100 %. Here an empty (after normalisation) prediction is wrong by default;
    ``empty_prediction_correct=True`` reproduces the official numbers (spec pitfall 8) and the report should
    say which was used.
    """
    pred, gt = normalize_answer(prediction), normalize_answer(reference)
    if not pred and not empty_prediction_correct:
        return False
    return pred in gt or gt in pred


def one_way_containment(prediction: str, reference: str) -> bool:
    """VRSBench VQA: ``N(gt) in N(pred)``. Official quirk kept (it is the protocol): plain substring
    containment, so a reference "no" also matches "none", "not" and "north"."""
    return normalize_answer(reference) in normalize_answer(prediction)


def teochat_exact_match(prediction: str, reference: str) -> bool:
    """GeoChat/TEOChat scene-classification protocol: equality after lowercasing and deleting ASCII
    punctuation (``string.punctuation``), **without** stripping whitespace (so "Airport." equals "airport",
    but " airport" does not)."""
    return prediction.lower().translate(_ASCII_PUNCTUATION) == reference.lower().translate(_ASCII_PUNCTUATION)


def wups_match(prediction: str, reference: str, similarity: Callable[[str, str], float] | None = None) -> bool:
    """LRS-VQA "WUPS-acc": correct if ``N(pred) == N(gt)``, else if ``similarity(N(pred), N(gt)) >`` 0.8
    (:data:`WUPS_THRESHOLD`).

    In the official protocol ``similarity`` is the largest WordNet ``path_similarity`` over all synset pairs
    of the two strings (multi-word answers usually have no synsets, so they need an exact match). WordNet is
    not bundled (it is a download); with ``similarity=None`` **only exact matches count**, which can only
    lower the score, and the evaluation report must state which variant was used. With NLTK and its WordNet
    corpus installed, the official similarity is::

        from nltk.corpus import wordnet as wn

        def wordnet_similarity(a, b):
            return max((s.path_similarity(t) or 0.0 for s in wn.synsets(a) for t in wn.synsets(b)), default=0.0)
    """
    pred, gt = normalize_answer(prediction), normalize_answer(reference)
    if pred == gt:
        return True
    return similarity is not None and similarity(pred, gt) > WUPS_THRESHOLD


def answer_accuracy(predictions: Sequence[str], references: Sequence[str], match: Matcher = exact_match) -> float:
    """Fraction of ``(prediction, reference)`` pairs that ``match`` accepts (VQA accuracy with the default
    :func:`exact_match`). Bind matcher options with :func:`functools.partial`."""
    return float(sum(_matches(predictions, references, match)) / len(predictions))


def group_accuracy(predictions: Sequence[str], references: Sequence[str], groups: Sequence[str],
                   match: Matcher = exact_match) -> dict:
    """Accuracy per group (e.g. LRS-VQA task type or RSVQA subset) and their **unweighted** mean.

    Returns ``{"per_group": {group: acc}, "counts": {group: n}, "mean": float, "overall": float}`` where
    ``mean`` averages the groups (the LRS-VQA per-source number is [inferred] to be this task average) and
    ``overall`` is the pooled (micro) accuracy.
    """
    correct = _matches(predictions, references, match)
    if len(groups) != len(correct):
        raise ValueError(f"{len(correct)} answers but {len(groups)} group labels")
    per_group: dict[str, float] = {}
    counts: dict[str, int] = {}
    for group in sorted(set(groups)):
        hits = [c for c, g in zip(correct, groups, strict=True) if g == group]
        per_group[group] = sum(hits) / len(hits)
        counts[group] = len(hits)
    return {"per_group": per_group, "counts": counts, "mean": sum(per_group.values()) / len(per_group),
            "overall": sum(correct) / len(correct)}


def _matches(predictions: Sequence[str], references: Sequence[str], match: Matcher) -> list[bool]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no answers were evaluated")
    for what, texts in (("prediction", predictions), ("reference", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{what} {i} must be a string, got {type(text).__name__}")
    for i, text in enumerate(references):
        if not normalize_answer(text):  # containment would accept every prediction
            raise ValueError(f"reference {i} is empty ({text!r})")
    return [bool(match(p, r)) for p, r in zip(predictions, references, strict=True)]
