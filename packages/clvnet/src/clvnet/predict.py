"""Box-prompted grounded captioning of one image (spec §1.6) and its outputs: JSON and an overlay picture.

:func:`load_for_inference` loads a saved model directory (``CLVNetModel.save_pretrained`` output with the
tokenizer saved beside it); :func:`predict_image` runs one image with a box prompt; :func:`write_prediction`
writes ``<name>.json`` and ``<name>.png`` (masks, the prompt box and the caption with phrases in mask colours).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rs_shared.data.common import as_array, read_image, write_json
from rs_shared.data.geometry import Boxes
from rs_shared.data.masks import mask_to_rle
from rs_shared.viz import draw_boxes, draw_caption, draw_masks, palette, save_png

from .processing import check_box

PROMPT_BOX_COLOR = (255, 255, 255)
MODEL_FILES = ("config.json",)


def load_for_inference(model_dir: str | os.PathLike, device: str = "cpu"):
    """``(model, processor)`` from a saved CLV-Net directory: ``CLVNetModel.from_pretrained(model_dir)`` in eval
    mode on ``device`` and the processor built from its config and the tokenizer saved in the same directory."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} is not a saved CLV-Net model: {missing} missing "
                                "(expected CLVNetModel.save_pretrained output with the tokenizer saved beside it)")
    from .modeling import CLVNetModel  # imported here: heavy, and the CLIs' tests replace this function
    from .processing import CLVNetProcessor
    from .tokenizer import load_tokenizer

    model = CLVNetModel.from_pretrained(model_dir).to(device).eval()
    return model, CLVNetProcessor.from_config(model.config, load_tokenizer(model_dir))


def read_rgb(image: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 array from a path, a PIL image or an array (grey/RGBA converted)."""
    if isinstance(image, str | os.PathLike):
        return as_array(read_image(image))
    if isinstance(image, Image.Image):
        return as_array(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image arrays must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    return arr


def prompt_box(box: Sequence[float] | None, width: int, height: int) -> list[float]:
    """The ``xyxy`` pixel box prompt as a list; ``None`` → the whole image. ``ValueError`` for a box that is not 4
    finite numbers with ``0 ≤ x1 < x2 ≤ W``, ``0 ≤ y1 < y2 ≤ H`` (:func:`clvnet.processing.check_box`)."""
    if box is None:
        return [0.0, 0.0, float(width), float(height)]
    return check_box(list(box), width, height, "box prompt").tolist()


def predict_image(model, processor, image: str | os.PathLike | Image.Image | np.ndarray,
                  box: Sequence[float] | None = None, *, max_new_tokens: int | None = None):
    """The model's ``GroundedPrediction`` for one image and box prompt (``xyxy`` pixels; ``None`` = whole image).

    ``processor(image (H, W, 3) uint8, box)`` gives the inference sample (prompt ends after the assistant
    header) and ``processor.collate`` the batch of one.
    """
    pixels = read_rgb(image)
    box = prompt_box(box, pixels.shape[1], pixels.shape[0])
    batch = processor.collate([processor(pixels, box)])
    return model.generate_grounded(batch, processor.tokenizer, max_new_tokens=max_new_tokens)[0]


def prediction_json(pred, box: Sequence[float]) -> dict[str, Any]:
    """``{text, caption, phrases, masks: [COCO RLE], mask_scores, box}`` of a prediction (JSON-ready)."""
    scores = getattr(pred, "mask_scores", None)
    return {"text": pred.text, "caption": pred.caption, "phrases": list(pred.phrases),
            "masks": [mask_to_rle(m) for m in np.asarray(pred.masks, dtype=bool)],
            "mask_scores": None if scores is None else [float(s) for s in np.asarray(scores)],
            "box": [float(v) for v in box]}


def overlay(pred, image: np.ndarray, box: Sequence[float]) -> Image.Image:
    """Masks in palette colours, the prompt box in white, and the caption below with phrase ``i`` in the colour of
    mask ``i`` (phrases not found verbatim in the caption are left unhighlighted)."""
    height, width = image.shape[:2]
    masks = np.asarray(pred.masks, dtype=bool).reshape(-1, height, width)
    colors = palette(max(len(masks), len(pred.phrases)))
    picture = draw_masks(image, masks, colors[:len(masks)])
    picture = draw_boxes(picture, Boxes(np.asarray(box, dtype=np.float64)[None], "xyxy", "pixel", (width, height)),
                         labels=["box"], colors=[PROMPT_BOX_COLOR])
    found, found_colors, start = [], [], 0
    for phrase, color in zip(pred.phrases, colors):  # phrases occur in order in the cleaned caption
        phrase = " ".join(phrase.split())
        at = pred.caption.find(phrase, start) if phrase else -1
        if at >= 0:
            found.append(phrase)
            found_colors.append(color)
            start = at + len(phrase)
    return draw_caption(picture, pred.caption, found, found_colors)


def write_prediction(pred, image: str | os.PathLike | Image.Image | np.ndarray, box: Sequence[float] | None,
                     out_dir: str | os.PathLike, name: str = "prediction") -> dict[str, Path]:
    """Write ``<out_dir>/<name>.json`` (:func:`prediction_json`) and ``<out_dir>/<name>.png`` (:func:`overlay`);
    returns ``{"json": path, "png": path}``."""
    pixels = read_rgb(image)
    box = prompt_box(box, pixels.shape[1], pixels.shape[0])
    masks = np.asarray(pred.masks)
    if masks.size and masks.shape[1:] != pixels.shape[:2]:
        raise ValueError(f"prediction masks are {masks.shape[1:]} (H, W) but the image is {pixels.shape[:2]}")
    out = Path(out_dir)
    paths = {"json": out / f"{name}.json", "png": out / f"{name}.png"}
    write_json(paths["json"], prediction_json(pred, box), indent=2)
    save_png(overlay(pred, pixels, box), paths["png"])
    return paths

