"""The four models behind the demo's tabs, each a thin layer over its package's own inference API.

- :class:`SceneClassifier` — BiMoRS: ``bimors.predict`` (classes and BERT recorded with the model, top-k, picture).
- :class:`ReferringSegmenter` — ICIPNet: ``icipnet.inference.ReferringSegmenter``; the overlay by ``rs_shared.viz``.
- :class:`GroundedCaptioner` — CLV-Net: ``clvnet.predict`` (``load_for_inference``, ``predict_image``, ``overlay``).
- :class:`ZoomChat` — RSCoVLM: ``rscovlm.inference`` (``load_model``, ``HFGenerator``, ``single_turn``), the zoom-in
  chain of ``rscovlm.zoom`` and the detection parser of ``rscovlm.parsing``; boxes drawn by ``rs_shared.viz``.

Every model directory is loaded with its package's strict ``from_pretrained``. Images are ``(H, W, 3)`` uint8 RGB
arrays, as Gradio hands them over.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rs_shared.data.geometry import Boxes, xyxy_to_quad
from rs_shared.viz import compose, draw_boxes, draw_caption, draw_masks, palette, to_display

ZOOM_BOX_COLOR = (255, 255, 255)
MASK_COLOR = (230, 25, 75)


class ModelLoadError(ValueError):
    """A model directory given to the demo cannot be used; the message names the directory and what is missing."""


# --- BiMoRS ---------------------------------------------------------------------------------------------------

class SceneClassifier:
    """BiMoRS with the class list and caption BERT that ``bimors-train`` recorded beside the model."""

    def __init__(self, model_dir: str | os.PathLike):
        from bimors.caption import CaptionEmbedder
        from bimors.configuration import BiMoRSConfig
        from bimors.data import eval_transform
        from bimors.modeling import BiMoRSModel
        from bimors.predict import PredictError, resolve_bert, resolve_classes, training_info

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(f"--bimors {model_dir}: no config.json; expected a bimors-train model directory "
                                 "(<output_dir>/<dataset>-<subsample>/seed<k>/model)")
        info = training_info(model_dir)
        try:
            self.class_names = resolve_classes(None, info, model_dir)
            bert = resolve_bert(None, info, BiMoRSConfig.from_pretrained(model_dir).caption_dim, model_dir)
        except PredictError as e:
            raise ModelLoadError(f"--bimors {model_dir}: {e} (the demo reads the class list and the BERT from the "
                                 "training.json that bimors-train writes beside the model)") from None
        self.model = BiMoRSModel.from_pretrained(model_dir).eval()
        self.embedder = CaptionEmbedder(bert)
        if self.embedder.dim != self.model.config.caption_dim:
            raise ModelLoadError(f"--bimors {model_dir}: BERT {bert} gives {self.embedder.dim}-d embeddings, the model "
                                 f"expects caption_dim = {self.model.config.caption_dim}")
        self.transform = eval_transform(self.model.clip.visual.image_size[0])

    def __call__(self, image: np.ndarray, caption: str, classes: list[str] | None = None,
                 top_k: int = 5) -> tuple[list[dict], Image.Image]:
        """``(top, picture)``: the ``min(top_k, C)`` most probable of ``classes`` (default: the training classes)
        as ``bimors.predict.predict_top_k`` records, and the image with its caption and a bar chart."""
        from bimors.predict import draw_prediction, predict_top_k

        caption = caption.strip()
        if not caption:
            raise ValueError("BiMoRS needs a caption of the image (its prompts are conditioned on it)")
        pil = Image.fromarray(image)
        pixel_values = self.transform(pil).unsqueeze(0)  # (1, 3, S, S)
        top = predict_top_k(self.model, pixel_values, self.embedder([caption]), classes or self.class_names, top_k)
        return top, draw_prediction(pil, caption, top)


# --- ICIPNet --------------------------------------------------------------------------------------------------

class ReferringSegmenter:
    """ICIPNet's ``ReferringSegmenter``: one mask per referring expression."""

    def __init__(self, model_dir: str | os.PathLike):
        from icipnet.inference import ReferringSegmenter as Segmenter

        _require_config(model_dir, "--icipnet", "an icipnet-train output (<output_dir>/model or best)")
        self.segmenter = Segmenter.from_pretrained(model_dir)

    def __call__(self, image: np.ndarray, expression: str) -> tuple[Image.Image, dict[str, Any]]:
        """``(picture, record)``: the mask over the image with the expression below it beside the foreground
        probability map (black 0 → white 1), and the mask's area fraction, box and mean foreground probability."""
        expression = expression.strip()
        if not expression:
            raise ValueError("give a referring expression, e.g. 'the red car'")
        result = self.segmenter(image, [expression])
        mask, probability = result.masks[0], result.probabilities[0]  # (H, W) bool, (H, W) float32
        ys, xs = np.nonzero(mask)
        record = {
            "expression": expression, "image_size": [image.shape[1], image.shape[0]],
            "area_fraction": float(mask.mean()),
            "bbox_xyxy": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None,
            "mean_foreground_probability": float(probability[mask].mean()) if mask.any() else None,
        }
        overlay = draw_caption(draw_masks(image, mask[None], colors=[MASK_COLOR]), expression)
        heat = np.round(np.clip(probability, 0.0, 1.0) * 255).astype(np.uint8)  # (H, W)
        return compose([overlay, draw_caption(heat, "foreground probability")]), record


# --- CLV-Net --------------------------------------------------------------------------------------------------

class GroundedCaptioner:
    """CLV-Net: a caption of the region in a box, with one mask per ``<p>`` phrase."""

    def __init__(self, model_dir: str | os.PathLike):
        from clvnet.predict import load_for_inference

        _require_config(model_dir, "--clvnet", "a clvnet-train output (<output_dir>/model)")
        self.model, self.processor = load_for_inference(model_dir)

    def __call__(self, image: np.ndarray, box: list[float] | None) -> tuple[str, Image.Image, dict[str, Any]]:
        """``(tagged caption, overlay, record)`` for the ``xyxy`` pixel box (``None``: the whole image)."""
        from clvnet.predict import overlay, predict_image, prediction_json, prompt_box

        box = prompt_box(box, image.shape[1], image.shape[0])  # ValueError for a box outside the image
        prediction = predict_image(self.model, self.processor, image, box)
        record = prediction_json(prediction, box)
        record.pop("masks")  # COCO RLE strings are unreadable in the page; the overlay shows the masks
        return prediction.text, overlay(prediction, image, box), record


# --- RSCoVLM --------------------------------------------------------------------------------------------------

@dataclass
class ChatResult:
    """One question answered: the transcript as Gradio chat messages, the image with the parsed boxes and zoom
    regions, and the JSON record (rounds, parse result)."""

    messages: list[dict[str, Any]]
    picture: Image.Image
    record: dict[str, Any] = field(default_factory=dict)


class ZoomChat:
    """RSCoVLM: greedy answers, optionally through the zoom-in chain; the answer read as detection lines."""

    def __init__(self, model_dir: str | os.PathLike):
        from rscovlm.inference import load_model

        _require_config(model_dir, "--rscovlm", "an rscovlm-train output (<output_dir>/model) or a Qwen2.5-VL "
                                                "checkpoint with its tokenizer and preprocessor_config.json")
        self.loaded = load_model(str(model_dir))

    def __call__(self, image: np.ndarray, prompt: str, zoom_steps: int = 1, crop_source: str = "resized",
                 max_new_tokens: int = 128) -> ChatResult:
        from rscovlm.inference import HFGenerator

        return chat(HFGenerator(self.loaded, max_new_tokens), image, prompt, zoom_steps, crop_source)


def chat(generator, image: np.ndarray, prompt: str, zoom_steps: int = 1, crop_source: str = "resized") -> ChatResult:
    """Answer ``prompt`` about ``image`` with any ``rscovlm.inference.Generator``: one plain turn when ``zoom_steps``
    is 0, else ``rscovlm.zoom.run_zoom_chain`` with up to ``zoom_steps`` crops. The transcript has every round, each
    zoom region (or why the tool call failed) and what the detection parser made of the answer; the picture has the
    parsed boxes and, in white, the zoom regions (original-image pixels)."""
    from rscovlm.inference import single_turn
    from rscovlm.zoom import ZoomRound, run_zoom_chain

    prompt = prompt.strip()
    if not prompt:
        raise ValueError("ask a question or give an instruction, e.g. 'How many planes are there?'")
    if zoom_steps < 0:
        raise ValueError(f"zoom-in steps must be >= 0, got {zoom_steps}")
    pil = Image.fromarray(image)
    if zoom_steps > 0:
        chain = run_zoom_chain(generator, [prompt], [pil], zoom_steps, crop_source)[0]
        rounds, answer, frame, capped = chain.rounds, chain.answer, chain.frame, chain.capped
    else:
        answer = generator.generate([single_turn(prompt, pil)])[0]
        rounds, frame, capped = [ZoomRound(prompt, answer)], generator.image_settings.frame(*pil.size), False

    messages: list[dict[str, Any]] = []
    zoom_quads, zoom_labels = [], []
    for k, step in enumerate(rounds):
        messages += [{"role": "user", "content": step.prompt},
                     {"role": "assistant", "content": step.output if step.output.strip() else "*(empty answer)*"}]
        if not step.tool_call or k == len(rounds) - 1:  # a last tool call is one the zoom limit refused
            continue
        if step.failure is not None:
            messages.append(_note(f"zoom-in {k + 1} failed", f"{step.failure}; the full image was sent back"))
            continue
        region = frame.to_original(step.crop_box) if crop_source == "resized" else step.crop_box
        zoom_quads.append(xyxy_to_quad(np.asarray([region]))[0])
        zoom_labels.append(f"zoom {k + 1}")
        messages.append(_note(f"zoom-in {k + 1}", f"region {[round(v) for v in region]} of the image (white box), "
                                                  f"sent back as a {step.crop_size[0]}×{step.crop_size[1]} crop"))
    if capped:
        messages.append(_note("zoom limit reached", f"{zoom_steps} zoom-in step(s) allowed: the last tool call "
                                                    "stays the answer"))
    quads, labels, parse_note = _detections(answer, frame)
    messages.append(_note("detection parse", parse_note))
    all_quads = np.asarray(zoom_quads + list(quads), dtype=np.float64).reshape(-1, 8)
    colors = [ZOOM_BOX_COLOR] * len(zoom_quads) + palette(len(quads))
    picture = draw_boxes(pil, Boxes(all_quads, "quad", "pixel", pil.size), zoom_labels + labels, colors) \
        if len(all_quads) else to_display(pil)
    record = {"answer": answer, "capped": capped, "original_size": list(frame.original),
              "resized_size": list(frame.resized), "rounds": [dataclasses.asdict(r) for r in rounds],
              "boxes": np.asarray(quads).reshape(-1, 8).round(1).tolist(), "labels": labels, "parse": parse_note}
    return ChatResult(messages, picture, record)


def _detections(answer: str, frame) -> tuple[np.ndarray, list[str], str]:
    """The answer read as polygon lines, else as horizontal-box lines (``rscovlm.parsing.parse_detection``):
    ``(quads (N, 8) in original-image pixels, labels, a note saying what parsed and what did not)``."""
    from rscovlm.parsing import parse_detection

    parses = {kind: parse_detection(answer, frame=frame, kind=kind) for kind in ("poly", "hbb")}
    for kind, parsed in parses.items():
        if parsed.objects:
            coords = np.array([o.coords for o in parsed.objects], dtype=np.float64)
            quads = coords if kind == "poly" else xyxy_to_quad(coords)
            note = f"parsed {len(parsed.objects)} {'polygon' if kind == 'poly' else 'box'} line(s), drawn on the image"
            if parsed.skipped:
                note += f"; {len(parsed.skipped)} line(s) skipped: " + "; ".join(
                    f"line {s.line + 1}: {s.reason}" for s in parsed.skipped[:3])
            return quads, [o.raw_label for o in parsed.objects], note
    poly = parses["poly"]
    if poly.empty_answer:
        return np.zeros((0, 8)), [], "the answer says there are no objects"
    if poly.failure:
        reason = poly.failure
    elif poly.skipped:
        reason = "; ".join(f"line {s.line + 1}: {s.reason}" for s in poly.skipped[:3])
    else:
        reason = "empty answer"
    return np.zeros((0, 8)), [], (f"parse failure: the answer is not `x1,y1,…,x4,y4 class` (or `x1,y1,x2,y2 class`) "
                                  f"lines ({reason}); no boxes drawn")


def _note(title: str, text: str) -> dict[str, Any]:
    """A chat message in which the demo (not the model) reports what happened between or after the rounds."""
    return {"role": "assistant", "content": f"*[{title}]* {text}"}


def _require_config(model_dir: str | os.PathLike, flag: str, expected: str) -> None:
    if not (Path(model_dir) / "config.json").is_file():
        raise ModelLoadError(f"{flag} {model_dir}: no config.json; expected {expected}")


__all__ = ["ChatResult", "GroundedCaptioner", "ModelLoadError", "ReferringSegmenter", "SceneClassifier", "ZoomChat",
           "chat"]
