"""The Zoom-in Chain at inference (spec §4.3).

Round 0 asks ``[tool system prompt, user [image, question + zoom instruction]]``. While the model answers
with a ``<tool_call>`` and fewer than ``max_zoom_steps`` zooms were made, the call is parsed
(:func:`rscovlm.parsing.parse_tool_call`), the region is cropped, the assistant turn (the model's text) and
a user turn ``[crop, zoomed-image note]`` are appended and the whole conversation is generated again (the full
image is re-encoded too). The answer is the last round's text.

- ``crop_source="resized"`` (official parity): the bbox is read in pixels of the resized frame the model saw
  and the crop is cut from the resized image (the official rescale factor ``(w, h) / (grid·14)`` is exactly 1).
- ``crop_source="original"`` (paper intent, as training): the bbox is mapped to the original image,
  ``bbox · (W_o / W_r, H_o / H_r)``, and cut from the original resolution.
- An unparsable call (bad JSON, wrong tool, no area, or a box outside the image) sends the *full* image back
  as the zoomed image and the failure is recorded (§4.3). Each sample keeps its own image list, so batches
  cannot mix images up (pitfall §9.6). ``max_zoom_steps`` caps the zooms per sample (the official code is
  unbounded): a tool call beyond the cap ends the chain and stays the recorded answer.

Crops are resized by the renderer like any image (smart_resize with the checkpoint's min/max pixels), so a
small crop is upsampled, e.g. 200×200 → 224×224 with the paper's bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from .inference import ChatRequest, Generator, user_turn
from .parsing import parse_tool_call
from .render import ImageLike
from .resize import ResizedFrame, resize_image
from .templates import TOOL_SYSTEM_PROMPT, ZOOMED_IMAGE_NOTE, zoom_question

CropSource = Literal["resized", "original"]
CROP_SOURCES = ("resized", "original")


@dataclass
class ZoomRound:
    """One generation round of one sample.

    ``prompt``: the text of the user turn that was answered; ``output``: the decoded answer. When the output
    holds a tool call: ``tool_bbox`` (the model's bbox, resized-frame pixels) or ``failure`` (why it could
    not be used); ``crop_box`` the region in the crop source's frame (floats), ``crop_pixels`` the integer
    window actually cut, ``crop_size`` ``(width, height)`` of the zoomed image sent back.
    """

    prompt: str
    output: str
    tool_call: bool = False
    tool_bbox: list[float] | None = None
    failure: str | None = None
    crop_box: list[float] | None = None
    crop_pixels: list[int] | None = None
    crop_size: list[int] | None = None


@dataclass
class ZoomResult:
    """The chain of one sample: ``answer`` (last output), its ``rounds``, the full image's ``frame`` and
    ``capped`` when the last output is a tool call refused by ``max_zoom_steps``."""

    answer: str
    rounds: list[ZoomRound]
    frame: ResizedFrame
    capped: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def zoom_failures(self) -> int:
        return sum(r.failure is not None for r in self.rounds)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record of the chain (without the image objects)."""
        return {"answer": self.answer, "capped": self.capped,
                "original_size": list(self.frame.original), "resized_size": list(self.frame.resized),
                "rounds": [asdict(r) for r in self.rounds]}


@dataclass
class _State:
    messages: list[dict[str, Any]]
    images: list[ImageLike]
    frame: ResizedFrame
    rounds: list[ZoomRound] = field(default_factory=list)
    zooms: int = 0
    done: bool = False
    capped: bool = False


def zoom_messages(question: str, zoom_prompt: bool = True) -> list[dict[str, Any]]:
    """Round-0 messages: the tool system prompt and ``[image, question + zoom instruction]``, or, without
    ``zoom_prompt`` (LRS-VQA ``count`` questions, §4.3), the plain question under the default system turn."""
    if not zoom_prompt:
        return [user_turn(question)]
    return [{"role": "system", "content": TOOL_SYSTEM_PROMPT}, user_turn(zoom_question(question))]


def crop_region(image: ImageLike, frame: ResizedFrame, bbox: Sequence[float],
                crop_source: CropSource = "resized") -> tuple[Image.Image, list[float], list[int]]:
    """Cut the zoom region ``bbox`` (``x1, y1, x2, y2`` in resized-frame pixels) out of ``image`` (of size
    ``frame.original``).

    Returns ``(crop, crop_box, crop_pixels)``: ``crop_box`` the region in the source's frame (the bbox
    itself for ``"resized"``, ``bbox · (W_o / W_r, H_o / H_r)`` for ``"original"``), ``crop_pixels`` the
    integer window cut (outward rounding, clipped to the image). Raises ``ValueError`` when the window
    is empty after clipping.
    """
    if crop_source not in CROP_SOURCES:
        raise ValueError(f"crop_source must be one of {CROP_SOURCES}, got {crop_source!r}")
    pil = Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image
    if crop_source == "resized":
        source, box = resize_image(pil, frame), [float(v) for v in bbox]
    else:
        source, box = pil.convert("RGB"), frame.to_original(list(bbox))
    width, height = source.size
    window = [max(0, math.floor(box[0])), max(0, math.floor(box[1])),
              min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))]
    if window[0] >= window[2] or window[1] >= window[3]:
        raise ValueError(f"zoom box {[round(v, 1) for v in box]} lies outside the {width}×{height} image")
    return source.crop(tuple(window)), box, window


def run_zoom_chain(generator: Generator, questions: Sequence[str], images: Sequence[ImageLike],
                   max_zoom_steps: int = 1, crop_source: CropSource = "resized",
                   zoom_prompt: bool | Sequence[bool] = True) -> list[ZoomResult]:
    """Answer each ``questions[i]`` about ``images[i]`` with the zoom-in chain (module docstring).

    All unfinished samples are generated together in each round (``generator.generate`` batches them).
    ``zoom_prompt`` (one flag, or one per sample) chooses the round-0 prompt of :func:`zoom_messages`.
    ``max_zoom_steps=0`` allows no zoom: the first output is the answer.
    """
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions for {len(images)} images")
    if max_zoom_steps < 0:
        raise ValueError(f"max_zoom_steps must be >= 0, got {max_zoom_steps}")
    if crop_source not in CROP_SOURCES:
        raise ValueError(f"crop_source must be one of {CROP_SOURCES}, got {crop_source!r}")
    flags = [zoom_prompt] * len(questions) if isinstance(zoom_prompt, bool) else list(zoom_prompt)
    if len(flags) != len(questions):
        raise ValueError(f"{len(flags)} zoom_prompt flags for {len(questions)} questions")
    states = []
    for question, image, flag in zip(questions, images, flags, strict=True):
        size = image.size if isinstance(image, Image.Image) else (np.asarray(image).shape[1],
                                                                  np.asarray(image).shape[0])
        frame = generator.image_settings.frame(*size)
        states.append(_State(zoom_messages(question, flag), [image], frame))
    while active := [s for s in states if not s.done]:
        outputs = generator.generate([ChatRequest(s.messages, s.images) for s in active])
        if len(outputs) != len(active):
            raise RuntimeError(f"generator returned {len(outputs)} outputs for {len(active)} requests")
        for state, output in zip(active, outputs, strict=True):
            _advance(state, output, max_zoom_steps, crop_source)
    return [ZoomResult(s.rounds[-1].output, s.rounds, s.frame, s.capped, s.messages) for s in states]


def _advance(state: _State, output: str, max_zoom_steps: int, crop_source: CropSource) -> None:
    """Record one round of ``state`` and append the next turns, or mark it done."""
    prompt = "".join(i["text"] for i in state.messages[-1]["content"] if i["type"] == "text")
    parsed = parse_tool_call(output)
    record = ZoomRound(prompt, output, tool_call=parsed.called)
    state.rounds.append(record)
    if not parsed.called:
        state.done = True
        return
    if state.zooms >= max_zoom_steps:
        state.done = state.capped = True
        return
    zoomed_index = 0  # §4.3: on any failure the full image goes back as the "zoomed" image
    if parsed.ok:
        record.tool_bbox = list(parsed.call.bbox)
        try:
            crop, record.crop_box, record.crop_pixels = crop_region(state.images[0], state.frame,
                                                                    parsed.call.bbox, crop_source)
            state.images.append(crop)
            zoomed_index = len(state.images) - 1
            record.crop_size = list(crop.size)
        except ValueError as e:
            record.failure = str(e)
    else:
        record.failure = parsed.failure
    if zoomed_index == 0:
        record.crop_size = list(state.frame.original)
    state.zooms += 1
    state.messages += [{"role": "assistant", "content": output}, user_turn(ZOOMED_IMAGE_NOTE, zoomed_index)]


__all__ = ["CROP_SOURCES", "CropSource", "ZoomResult", "ZoomRound", "crop_region", "run_zoom_chain",
           "zoom_messages"]
