"""Strict parsers of model output (spec §4.3, §5.2, §6). They never raise and never ``eval``: any input,
including a non-string, gives a result or a recorded failure reason.

- :func:`parse_detection`: plain detection answers, one ``x1,y1,…,x4,y4 class`` line per object (§5.2, the
  normative rules), labels mapped to class keys exactly or fuzzily, coordinates mapped back to the original
  frame, every object with score 1.0.
- :func:`parse_grounding`: the first line as ``x1,y1,x2,y2 label`` (or 8 numbers for a polygon), §6.
- :func:`parse_tool_call`: the zoom-in tool call, JSON read with ``json.loads`` only (§4.3).
- :func:`parse_count`, :func:`parse_class`, :func:`parse_choice`: counting, scene-class and multiple-choice
  answers.

Numbers are ASCII integers (an optional ``-`` and at most :data:`MAX_DIGITS` digits); Python's ``int`` would
also take ``+``, ``_``, surrounding whitespace and non-ASCII digits, which a model output should not contain.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from rs_shared.data.dota import DOTA_V1_0

from .resize import ResizedFrame
from .templates import COORDS_PER_KIND, EMPTY_DETECTION, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ZOOM_TOOL_NAME, class_key

T = TypeVar("T")
MAX_DIGITS = 12
_INT = re.compile(rf"-?[0-9]{{1,{MAX_DIGITS}}}", re.ASCII)
_NONE_ANSWER = EMPTY_DETECTION.lower().rstrip(".")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
_COUNT = re.compile(rf"\b(?:[0-9]{{1,{MAX_DIGITS}}}|none|{'|'.join(_NUMBER_WORDS)})\b", re.ASCII)

try:  # §5.2 uses rapidfuzz WRatio; difflib is the pure-Python fallback (see fuzzy_match)
    from rapidfuzz import fuzz as _fuzz
    from rapidfuzz import process as _process
    FUZZY_BACKEND = "rapidfuzz"
except ImportError:  # pragma: no cover - depends on the environment
    _process = None
    FUZZY_BACKEND = "difflib"


@dataclass(frozen=True)
class ParseResult(Generic[T]):
    """``value`` when parsing succeeded, else ``None`` and ``failure`` says why."""

    value: T | None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def _fail(reason: str) -> ParseResult:
    return ParseResult(None, reason)


def normalize_answer(text: str) -> str:
    """The answer normalization N(s) of §6: lower case, strip whitespace, strip ``.`` at both ends."""
    return text.lower().strip().strip(".")


# --- labels ---------------------------------------------------------------------------------------------

def fuzzy_match(label: str, keys: Sequence[str]) -> tuple[int, float]:
    """``(index, score 0–100)`` of the key most similar to ``label``, first key on ties, no cutoff.

    With rapidfuzz installed this is ``process.extractOne(label, keys)`` (WRatio), the official mapping;
    otherwise difflib's ``SequenceMatcher`` ratio × 100 (same answers on the spec's examples, different
    scores). :data:`FUZZY_BACKEND` tells which one runs.
    """
    if _process is not None:
        _, score, index = _process.extractOne(label, list(keys), scorer=_fuzz.WRatio)
        return int(index), float(score)
    scores = [difflib.SequenceMatcher(None, label, key).ratio() * 100 for key in keys]
    best = max(range(len(keys)), key=lambda i: (scores[i], -i))
    return best, scores[best]


# --- detection (§5.2) -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DetectedObject:
    """One parsed answer line. ``coords`` are 8 (polygon) or 4 (HBB) floats in the original frame (or in
    the resized frame when no frame was given); ``label`` is the class key, ``class_index`` its index in the
    class list; ``raw_label`` the text as written; ``label_score`` 100 for an exact key, else the fuzzy score."""

    coords: tuple[float, ...]
    label: str
    class_index: int
    raw_label: str
    label_score: float
    score: float = 1.0


@dataclass(frozen=True)
class SkippedLine:
    line: int  # 0-based line number in the trimmed output
    text: str
    reason: str


@dataclass(frozen=True)
class DetectionParse:
    """Objects in line order; ``skipped`` lines with their reasons; ``empty_answer`` when the model said
    there are none; ``failure`` only when the input is not text at all."""

    objects: tuple[DetectedObject, ...] = ()
    skipped: tuple[SkippedLine, ...] = ()
    empty_answer: bool = False
    failure: str | None = None


def parse_detection(text: object, classes: Sequence[str] = DOTA_V1_0, frame: ResizedFrame | None = None,
                    kind: str = "poly", min_label_score: float | None = None,
                    matcher: Callable[[str, Sequence[str]], tuple[int, float]] = fuzzy_match) -> DetectionParse:
    """Parse a plain detection answer (§5.2).

    1. The trimmed output, lower-cased and without one trailing ``.``, equal to ``there are none`` → empty.
    2. Each non-empty line (trimmed) is split at its first space. The head must be comma-separated integers
       without spaces; fewer than 8 (4 for ``kind="hbb"``) skip the line, extra ones are dropped.
    3. The tail, trimmed and lower-cased, is the label: an exact class key (``-`` → space) or else the
       ``matcher``'s best key, with no cutoff unless ``min_label_score`` is given.
    4. Coordinates are mapped to the original image with ``frame``; every object scores 1.0.
    """
    if not isinstance(text, str):
        return DetectionParse(failure=f"output is {type(text).__name__}, not str")
    if kind not in COORDS_PER_KIND:
        return DetectionParse(failure=f"unknown box kind {kind!r}; expected one of {sorted(COORDS_PER_KIND)}")
    keys = [class_key(c) for c in classes]
    if not keys:
        return DetectionParse(failure="the class list is empty")
    trimmed = text.strip()
    if trimmed.lower().removesuffix(".") == _NONE_ANSWER:
        return DetectionParse(empty_answer=True)
    n_coords = COORDS_PER_KIND[kind]
    objects, skipped = [], []
    for number, raw in enumerate(trimmed.split("\n")):
        line = raw.strip()
        if not line:
            continue
        head, space, tail = line.partition(" ")
        numbers = _ints(head)
        label = tail.strip().lower()
        reason = None
        if not space or not label:
            reason = "no label after the coordinates"
        elif numbers is None:
            reason = "the coordinates are not comma-separated integers"
        elif len(numbers) < n_coords:
            reason = f"{len(numbers)} coordinates, {n_coords} needed"
        if reason is None:
            try:
                index, score = (keys.index(label), 100.0) if label in keys else matcher(label, keys)
            except Exception as e:  # a user-supplied matcher must not break the never-raise contract
                index, score, reason = -1, 0.0, f"label matcher failed: {type(e).__name__}"
            if reason is None and min_label_score is not None and score < min_label_score:
                reason = f"label {label!r} matches no class (best {keys[index]!r}, score {score:.1f})"
        if reason is not None:
            skipped.append(SkippedLine(number, line, reason))
            continue
        coords = numbers[:n_coords]
        mapped = frame.to_original(coords) if frame is not None else [float(v) for v in coords]
        objects.append(DetectedObject(tuple(mapped), keys[index], index, label, score))
    return DetectionParse(tuple(objects), tuple(skipped))


def _ints(head: str) -> list[int] | None:
    parts = head.split(",")
    if not all(_INT.fullmatch(p) for p in parts):
        return None
    return [int(p) for p in parts]


# --- grounding (§6) -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grounding:
    """The box of a grounding answer (4 or 8 floats, original frame when a frame was given) and its label."""

    coords: tuple[float, ...]
    label: str


def parse_grounding(text: object, frame: ResizedFrame | None = None, kind: str = "hbb") -> ParseResult[Grounding]:
    """Read the **first line** of the trimmed output as ``x1,y1,x2,y2 label`` (§6: integers only, no spaces
    in the list, a label required; ``kind="poly"`` wants 8 integers). On failure the evaluation protocol
    scores the box as ``[0, 0, 0, 0]``."""
    if not isinstance(text, str):
        return _fail(f"output is {type(text).__name__}, not str")
    if kind not in COORDS_PER_KIND:
        return _fail(f"unknown box kind {kind!r}; expected one of {sorted(COORDS_PER_KIND)}")
    first = text.strip().split("\n")[0]
    if not first:
        return _fail("empty output")
    n = COORDS_PER_KIND[kind]
    number = rf"(-?[0-9]{{1,{MAX_DIGITS}}})"
    match = re.match(",".join([number] * n) + r"[ \t\r\f\v]+", first, re.ASCII)  # then the label: linear time
    label = first[match.end():].rstrip(" \t\r\f\v") if match else ""
    if not label:
        return _fail(f"first line {first[:80]!r} is not {n} comma-separated integers followed by a label")
    coords = [int(v) for v in match.groups()]
    mapped = frame.to_original(coords) if frame is not None else [float(v) for v in coords]
    return ParseResult(Grounding(tuple(mapped), label))


# --- zoom-in tool call (§4.3) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolCall:
    """A valid zoom call: ``bbox`` ``(x1, y1, x2, y2)`` in pixels of the image the model saw, ``x1 < x2`` and
    ``y1 < y2``; ``text_before`` is whatever the model wrote before ``<tool_call>``."""

    name: str
    bbox: tuple[float, float, float, float]
    text_before: str = ""


@dataclass(frozen=True)
class ToolCallParse:
    """``called``: the output contains ``<tool_call>`` (else it is a final answer). ``call`` is set when the
    call is valid; otherwise ``failure`` says why (the chain then falls back, §4.3)."""

    called: bool
    call: ToolCall | None = None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.call is not None


def parse_tool_call(text: object, tool_name: str = ZOOM_TOOL_NAME) -> ToolCallParse:
    """The first ``<tool_call>{json}</tool_call>`` block: ``{"name": tool_name, "arguments": {"bbox": [4
    finite numbers]}}`` read with ``json.loads`` (NaN/Infinity rejected); the box must have positive area."""
    if not isinstance(text, str):
        return ToolCallParse(False, failure=f"output is {type(text).__name__}, not str")
    start = text.find(TOOL_CALL_OPEN)
    if start < 0:
        return ToolCallParse(False)
    end = text.find(TOOL_CALL_CLOSE, start + len(TOOL_CALL_OPEN))
    if end < 0:
        return ToolCallParse(True, failure=f"{TOOL_CALL_OPEN} is not closed by {TOOL_CALL_CLOSE}")
    payload = text[start + len(TOOL_CALL_OPEN):end].strip()
    try:
        data = json.loads(payload, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        return ToolCallParse(True, failure=f"tool call is not valid JSON ({type(e).__name__})")
    if not (isinstance(data, dict) and isinstance(data.get("name"), str) and isinstance(data.get("arguments"), dict)):
        return ToolCallParse(True, failure='tool call must be {"name": str, "arguments": {...}}')
    if data["name"] != tool_name:
        return ToolCallParse(True, failure=f"unknown tool {data['name'][:40]!r}; expected {tool_name!r}")
    bbox = data["arguments"].get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        return ToolCallParse(True, failure="arguments.bbox must be a list of 4 numbers")
    try:
        box = tuple(float(v) for v in bbox)
    except OverflowError:
        return ToolCallParse(True, failure="arguments.bbox holds a number too large for a float")
    if not all(math.isfinite(v) for v in box):
        return ToolCallParse(True, failure="arguments.bbox holds a non-finite number")
    if not (box[0] < box[2] and box[1] < box[3]):
        return ToolCallParse(True, failure=f"arguments.bbox {list(box)} has no area (need x1 < x2, y1 < y2)")
    return ToolCallParse(True, ToolCall(data["name"], box, text[:start].strip()))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed")


# --- counting, classification, multiple choice --------------------------------------------------------

def parse_count(text: object) -> ParseResult[int]:
    """The first number in the answer: ASCII digits or a number word up to twenty (``none`` = 0)."""
    if not isinstance(text, str):
        return _fail(f"output is {type(text).__name__}, not str")
    match = _COUNT.search(text.lower())
    if match is None:
        return _fail(f"no number in {text.strip()[:80]!r}")
    word = match.group(0)
    if word == "none":
        return ParseResult(0)
    return ParseResult(_NUMBER_WORDS.index(word) if word in _NUMBER_WORDS else int(word))


def parse_class(text: object, classes: Sequence[str]) -> ParseResult[int]:
    """The index of the class named by the answer: an exact match after :func:`normalize_answer` (class
    names with ``-``/``_`` read as spaces), else the one class name contained in the answer as whole words
    (a name inside a longer found name, ``residential`` in ``dense residential``, does not count); several
    is ambiguous."""
    if not isinstance(text, str):
        return _fail(f"output is {type(text).__name__}, not str")
    answer = normalize_answer(text)
    names = [normalize_answer(class_key(c).replace("_", " ")) for c in classes]
    if answer in names:
        return ParseResult(names.index(answer))
    found = [i for i, name in enumerate(names) if name and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", answer)]
    if not found:
        return _fail(f"answer {answer[:80]!r} names none of the {len(names)} classes")
    named = {names[i] for i in found}
    best = sorted(n for n in named if not any(n != other and n in other for other in named))
    if len(best) > 1:
        return _fail(f"answer {answer[:80]!r} names several classes: {best}")
    return ParseResult(names.index(best[0]))


def parse_choice(text: object, letters: str = "ABCDE") -> ParseResult[str]:
    """The option letter of a multiple-choice answer: ``B``, ``(B)…``, ``B.…``, ``B)…``, ``B:…`` at the start,
    or ``… answer is (B)`` / ``answer is: B`` anywhere; upper-case letters from ``letters`` only (a leading
    ``A`` followed by a space is an article, not an option)."""
    if not isinstance(text, str):
        return _fail(f"output is {type(text).__name__}, not str")
    options = "".join(c for c in letters if "A" <= c <= "Z")
    if not options:
        return _fail(f"no option letters in {letters!r}")
    stripped = text.strip()
    match = (re.match(rf"\(([{options}])\)|([{options}])(?:[.:)]|$)", stripped)
             or re.search(rf"(?i:answer is):?\s*\(?([{options}])\b", stripped))
    letter = next((g for g in match.groups() if g), None) if match else None
    if letter is None:
        return _fail(f"no option letter ({', '.join(options)}) in {stripped[:80]!r}")
    return ParseResult(letter)


__all__ = [
    "FUZZY_BACKEND", "MAX_DIGITS", "DetectedObject", "DetectionParse", "Grounding", "ParseResult", "SkippedLine",
    "ToolCall", "ToolCallParse", "fuzzy_match", "normalize_answer", "parse_choice", "parse_class", "parse_count",
    "parse_detection", "parse_grounding", "parse_tool_call",
]
