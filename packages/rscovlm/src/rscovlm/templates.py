"""Every prompt string of RSCoVLM in one place, and the writers of the answer grammar (spec §2.4, §4, §5.1, §6).

The short functional strings the spec quotes are literal here: ``find the {…}``, ``There are none.``, the
detection/grounding line grammar, the DOTA category list, the tool-call block, the multiple-choice scaffold
and the VRSBench VQA suffix. Longer sentences (system prompts, zoom instructions) are paraphrased: the
official wording is not in the spec, so a checkpoint trained with it sees slightly different text (open
point for exact checkpoint parity).

Coordinates in every answer are integer pixels of the **resized** frame fed to the ViT (§3.3): callers map
boxes with :meth:`rscovlm.resize.ResizedFrame.to_resized` first. The parsers in :mod:`rscovlm.parsing` read
exactly what these writers produce.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from rs_shared.data.dota import DOTA_V1_0
from rs_shared.data.geometry import sort_quad_vertices

# --- system turns (§2.3, §2.4) ----------------------------------------------------------------------------

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."  # Qwen2.5-VL's default system turn
HBB_SYSTEM_PROMPT = (
    "You are a precise object detector for remote sensing images. Answer in plain text with one object per "
    "line as x1,y1,x2,y2 object, where x1,y1 is the top-left and x2,y2 the bottom-right corner of its "
    "horizontal box in integer pixel coordinates of this image."
)
POLYGON_SYSTEM_PROMPT = (
    "You are a precise object detector for remote sensing images. Answer in plain text with one object per "
    "line as x1,y1,x2,y2,x3,y3,x4,y4 object, the four corners of its quadrilateral in integer pixel "
    "coordinates of this image, clockwise from the top-most corner."
)
OBB_SYSTEM_PROMPT = (  # the unused oriented-box variant (§2.4)
    "You are a precise oriented object detector for remote sensing images. Answer in plain text with one "
    "object per line as x,y,w,h,a object: the centre, width, height and angle in degrees of its rotated box "
    "in integer pixel coordinates of this image."
)
SYSTEM_PROMPTS = {"hbb": HBB_SYSTEM_PROMPT, "poly": POLYGON_SYSTEM_PROMPT, "obb": OBB_SYSTEM_PROMPT}

# --- grounding and detection (§2.4, §5.1) -----------------------------------------------------------------

FIND_PROMPT = "find the {target}"  # training user turn, literal
FIND_PROMPT_EVAL = "find the {target}."  # the detection eval prompt ends with a period (§5.1, pitfall §9.11)
EMPTY_DETECTION = "There are none."  # the answer for an image without objects, literal
DOTA_CATEGORY_LIST = (
    "baseball diamond, basketball court, bridge, ground track field, harbor, helicopter, large vehicle, plane, "
    "roundabout, ship, small vehicle, soccer ball field, storage tank, swimming pool, tennis court"
)
COORDS_PER_KIND = {"hbb": 4, "poly": 8}


def class_key(name: str) -> str:
    """A class name as prompts and answers write it: ``-`` → space, lower case (``small-vehicle`` →
    ``small vehicle``)."""
    return name.replace("-", " ").lower()


def category_list(classes: Sequence[str] = DOTA_V1_0) -> str:
    """The class names as :func:`class_key`, sorted alphabetically and joined with ``", "`` (§2.4)."""
    return ", ".join(sorted(class_key(c) for c in classes))


def find_prompt(target: str, eval_prompt: bool = False) -> str:
    """The grounding/detection user turn: ``find the {target}`` (``.`` appended for detection eval)."""
    return (FIND_PROMPT_EVAL if eval_prompt else FIND_PROMPT).format(target=target)


def normalize_polygon(coords: Sequence[int] | np.ndarray, clockwise: bool = True) -> list[int]:
    """The 4 vertices of an integer quadrilateral ``x1,y1,…,x4,y4`` sorted by angle around their mean and
    rotated to start at the smallest ``(y, x)``. ``clockwise=True`` (clockwise on screen) is the DOTA
    order; refGeo's code produces counter-clockwise order (``False``, pitfall §9.12)."""
    return [int(v) for v in sort_quad_vertices(np.asarray(coords, dtype=np.int64).reshape(1, 8), clockwise)[0]]


def detection_line(coords: Sequence[int], label: str) -> str:
    """One answer line: ``x1,y1,…`` (integers, no spaces) + space + the label."""
    return ",".join(str(int(v)) for v in coords) + " " + label


def detection_answer(coords: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], kind: str = "poly",
                     clockwise: bool = True) -> str:
    """The plain-text detection target (§2.4) for integer boxes of the resized frame.

    ``coords`` is ``(N, 4)`` HBBs ``x1,y1,x2,y2`` (``kind="hbb"``) or ``(N, 8)`` quadrilaterals
    (``kind="poly"``, vertices normalized with :func:`normalize_polygon`); ``labels`` are class names
    (written as :func:`class_key`). Lines are sorted by (class name, y1, x1) of each object's HBB and
    newline-joined with a trailing ``\\n``; no objects gives ``There are none.``.
    """
    if kind not in COORDS_PER_KIND:
        raise ValueError(f"kind must be one of {sorted(COORDS_PER_KIND)}, got {kind!r}")
    rows = [list(map(int, c)) for c in coords]
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} boxes but {len(labels)} labels")
    if not rows:
        return EMPTY_DETECTION
    n = COORDS_PER_KIND[kind]
    if any(len(r) != n for r in rows):
        raise ValueError(f"every {kind} box needs {n} coordinates, got lengths {sorted({len(r) for r in rows})}")
    if kind == "poly":
        rows = [normalize_polygon(r, clockwise) for r in rows]
    names = [class_key(label) for label in labels]
    order = sorted(range(len(rows)), key=lambda i: (names[i], min(rows[i][1::2]), min(rows[i][0::2])))
    return "".join(detection_line(rows[i], names[i]) + "\n" for i in order)


def grounding_answer(coords: Sequence[int], expression: str) -> str:
    """The grounding target: ``x1,y1,x2,y2 {expression}\\n`` (or 8 numbers for a polygon)."""
    return detection_line(coords, expression) + "\n"


# --- zoom-in chain (§4) -----------------------------------------------------------------------------------

ZOOM_TOOL_NAME = "image_zoom_in"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
ZOOM_TOOL_SCHEMA = {
    "type": "function",
    "function": {
        "name": ZOOM_TOOL_NAME,
        "description": "Zoom in on a region of the image: crop it and look at it at a higher resolution.",
        "parameters": {
            "type": "object",
            "properties": {
                "bbox": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "[x1, y1, x2, y2]: absolute pixel coordinates of the top-left and "
                                   "bottom-right corners of the region.",
                },
            },
            "required": ["bbox"],
        },
    },
}
TOOL_SYSTEM_PROMPT = (  # Hermes-style "# Tools" block (§4.1), paraphrased
    "You are a helpful assistant.\n\n# Tools\n\nYou may call the function below to look closer at the image.\n\n"
    "The function signature is given within <tools></tools> XML tags:\n<tools>\n"
    + json.dumps(ZOOM_TOOL_SCHEMA) + "\n</tools>\n\n"
    "For each function call, return a JSON object with the function name and its arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
ZOOM_INSTRUCTION = "First zoom in on the region of interest with the image_zoom_in tool, then answer the question."
ZOOMED_IMAGE_NOTE = "Here is the zoomed-in image. You can now complete the task."


def zoom_question(question: str) -> str:
    """The round-0 user text of the zoom chain: the question, a newline and :data:`ZOOM_INSTRUCTION`."""
    return f"{question}\n{ZOOM_INSTRUCTION}"


def tool_call(bbox: Sequence[int]) -> str:
    """The assistant's tool-call turn (§4.1), exactly
    ``<tool_call>\\n{"name": "image_zoom_in", "arguments": {"bbox": [x1, y1, x2, y2]}}\\n</tool_call>``."""
    box = [int(v) for v in bbox]
    if len(box) != 4:
        raise ValueError(f"a zoom bbox has 4 integers, got {list(bbox)!r}")
    payload = json.dumps({"name": ZOOM_TOOL_NAME, "arguments": {"bbox": box}})
    return f"{TOOL_CALL_OPEN}\n{payload}\n{TOOL_CALL_CLOSE}"


# --- multiple choice, VQA, classification, captioning, counting (§4.1, §6) -------------------------------

MCQ_CHOICES_HEADER = " The choices are listed below: \n"  # literal
MCQ_INSTRUCTION = "Select the best option from the choices above and reply with only its letter (A, B, C, D or E)."
MCQ_ANSWER_CUE = "\nThe best answer is:"  # literal
VQA_SHORT_ANSWER = " Answer the question using a single word or a short phrase."  # VRSBench VQA suffix, literal
CLASSIFICATION_PROMPT = ("What is the scene category of this remote sensing image? "
                         "Answer with one word or a short phrase.")
CLASSIFICATION_CHOICES_PROMPT = "Classify this remote sensing image into one of these scene categories: {classes}."
CAPTION_PROMPT = "Describe this remote sensing image in detail."
COUNTING_PROMPT = "How many {objects} are there in the image? Answer with a number."


def mcq_prompt(question: str, choices: Sequence[str]) -> str:
    """The LRS-VQA multiple-choice user text (§4.1): the question (already without its short-answer
    instruction), the choices header, one choice per line, the letter instruction and the answer cue."""
    return question + MCQ_CHOICES_HEADER + "\n".join(choices) + "\n" + MCQ_INSTRUCTION + MCQ_ANSWER_CUE


def classification_prompt(classes: Sequence[str] | None = None) -> str:
    """Scene-classification question; with ``classes`` the candidate names are listed."""
    if classes is None:
        return CLASSIFICATION_PROMPT
    return CLASSIFICATION_CHOICES_PROMPT.format(classes=", ".join(classes))


def counting_prompt(objects: str) -> str:
    """Counting question for a plural object noun (``"planes"``)."""
    return COUNTING_PROMPT.format(objects=objects)


__all__ = [
    "CAPTION_PROMPT", "CLASSIFICATION_CHOICES_PROMPT", "CLASSIFICATION_PROMPT", "COORDS_PER_KIND",
    "COUNTING_PROMPT", "DEFAULT_SYSTEM_PROMPT", "DOTA_CATEGORY_LIST", "EMPTY_DETECTION", "FIND_PROMPT",
    "FIND_PROMPT_EVAL", "HBB_SYSTEM_PROMPT", "MCQ_ANSWER_CUE", "MCQ_CHOICES_HEADER", "MCQ_INSTRUCTION",
    "OBB_SYSTEM_PROMPT", "POLYGON_SYSTEM_PROMPT", "SYSTEM_PROMPTS", "TOOL_CALL_CLOSE", "TOOL_CALL_OPEN",
    "TOOL_SYSTEM_PROMPT", "VQA_SHORT_ANSWER", "ZOOMED_IMAGE_NOTE", "ZOOM_INSTRUCTION", "ZOOM_TOOL_NAME",
    "ZOOM_TOOL_SCHEMA", "category_list", "class_key", "classification_prompt", "counting_prompt",
    "detection_answer", "detection_line", "find_prompt", "grounding_answer", "mcq_prompt", "normalize_polygon",
    "tool_call", "zoom_question",
]
