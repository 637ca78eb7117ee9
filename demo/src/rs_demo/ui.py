"""The Gradio app: one tab per model, each with example inputs already filled in so that one click runs it.

Element ids (``elem_id``) name every input, button and output as ``<package>-<what>``; the browser test drives the
page through them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import gradio as gr

from . import examples
from .models import GroundedCaptioner, ReferringSegmenter, SceneClassifier, ZoomChat

TITLE = "rs-vlm demo"
# The system's fonts: the default theme's web fonts would be fetched from the internet, which this app never needs.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
# Input tiles are small (64-224 px): show them filling their box, with sharp pixels (display only).
CSS = ".rs-input img { width: 100% !important; height: 100% !important; object-fit: contain; " \
      "image-rendering: pixelated; }"


def parse_box(text: str) -> list[float] | None:
    """``"x1, y1, x2, y2"`` (commas and/or spaces) → four floats; empty text → ``None`` (the whole image)."""
    text = text.strip()
    if not text:
        return None
    parts = [p for p in re.split(r"[,\s]+", text) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"box: expected four numbers x1, y1, x2, y2 (pixels), got {text!r}") from None
    if len(values) != 4:
        raise ValueError(f"box: expected four numbers x1, y1, x2, y2 (pixels), got {len(values)} in {text!r}")
    return values


def parse_classes(text: str) -> list[str] | None:
    """``"airport, harbor"`` → ``["airport", "harbor"]``; empty text → ``None`` (the model's training classes)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


def _user_errors(fn: Callable) -> Callable:
    """``fn`` with bad input (``ValueError``) shown in the page as an error message instead of a stack trace."""
    @functools.wraps(fn)
    def wrapped(*args):
        if args and args[0] is None:
            raise gr.Error("give an image first (upload one or pick an example)")
        try:
            return fn(*args)
        except ValueError as e:
            raise gr.Error(str(e)) from None
    return wrapped


def _image(elem_id: str, label: str, value: Any = None) -> gr.Image:
    """An RGB image component: an input (with a first ``value``) or, without one, an output."""
    is_input = value is not None
    return gr.Image(value, label=label, type="numpy", image_mode="RGB", format="png", height=320,
                    interactive=is_input, elem_id=elem_id, elem_classes=["rs-input"] if is_input else None)


def _scene_tab(model: SceneClassifier) -> None:
    rows = examples.scene_examples()

    @_user_errors
    def classify(image, caption, classes, top_k):
        top, picture = model(image, caption, parse_classes(classes), int(top_k))
        return {entry["class"]: entry["probability"] for entry in top}, picture

    with gr.Row():
        with gr.Column():
            image = _image("bimors-image", "scene image", rows[0][0])
            caption = gr.Textbox(rows[0][1], label="caption of the image (BiMoRS conditions its prompts on it)",
                                 lines=2, elem_id="bimors-caption")
            classes = gr.Textbox("", label="class names, comma-separated (empty: the classes the model was trained "
                                           f"on: {', '.join(model.class_names)})", elem_id="bimors-classes")
            top_k = gr.Slider(1, 10, value=5, step=1, label="top-k", elem_id="bimors-top-k")
            run = gr.Button("Classify", variant="primary", elem_id="bimors-run")
        with gr.Column():
            label = gr.Label(label="top-k classes", elem_id="bimors-label")
            picture = _image("bimors-picture", "image, caption and probabilities")
    gr.Examples(rows, [image, caption], label="synthetic scenes (click one)")
    run.click(classify, [image, caption, classes, top_k], [label, picture])


def _referring_tab(model: ReferringSegmenter) -> None:
    rows = examples.referring_examples()

    @_user_errors
    def segment(image, expression):
        return model(image, expression)

    with gr.Row():
        with gr.Column():
            image = _image("icipnet-image", "image", rows[0][0])
            expression = gr.Textbox(rows[0][1], label="referring expression", elem_id="icipnet-expression")
            run = gr.Button("Segment", variant="primary", elem_id="icipnet-run")
        with gr.Column():
            overlay = _image("icipnet-overlay", "mask overlay | foreground probability")
            record = gr.JSON(label="mask: area fraction, box, mean foreground probability", elem_id="icipnet-json")
    gr.Examples(rows, [image, expression], label="synthetic referring tiles (click one)")
    run.click(segment, [image, expression], [overlay, record])


def _gcg_tab(model: GroundedCaptioner) -> None:
    rows = examples.gcg_examples()

    @_user_errors
    def caption(image, box):
        return model(image, parse_box(box))

    with gr.Row():
        with gr.Column():
            image = _image("clvnet-image", "image", rows[0][0])
            box = gr.Textbox(rows[0][1], label="box prompt x1, y1, x2, y2 in pixels (empty: the whole image)",
                             elem_id="clvnet-box")
            run = gr.Button("Caption the box", variant="primary", elem_id="clvnet-run")
        with gr.Column():
            text = gr.Textbox(label="grounded caption (<p> phrase </p> [SEG] markup)", lines=4,
                              elem_id="clvnet-caption")
            overlay = _image("clvnet-overlay", "masks (one colour per phrase), prompt box in white")
            record = gr.JSON(label="phrases and mask scores", elem_id="clvnet-json")
    gr.Examples(rows, [image, box], label="synthetic object scenes with the union box of their objects (click one)")
    run.click(caption, [image, box], [text, overlay, record])


def _chat_tab(model: ZoomChat) -> None:
    rows = examples.chat_examples()

    @_user_errors
    def ask(image, prompt, zoom_steps, crop_source, max_new_tokens):
        result = model(image, prompt, int(zoom_steps), crop_source, int(max_new_tokens))
        return result.messages, result.picture, result.record

    with gr.Row():
        with gr.Column():
            image = _image("rscovlm-image", "image", rows[0][0])
            prompt = gr.Textbox(rows[0][1], label="question or instruction", lines=2, elem_id="rscovlm-prompt")
            zoom = gr.Slider(0, 3, value=1, step=1, label="zoom-in steps (0: a plain answer)", elem_id="rscovlm-zoom")
            crop_source = gr.Radio(["resized", "original"], value="resized", label="crop zoom regions from",
                                   elem_id="rscovlm-crop-source")
            max_new_tokens = gr.Slider(16, 512, value=128, step=16, label="max new tokens per round",
                                       elem_id="rscovlm-max-new-tokens")
            run = gr.Button("Ask", variant="primary", elem_id="rscovlm-run")
        with gr.Column():
            chat = gr.Chatbot(label="transcript (every round of the zoom-in chain)", height=360,
                              elem_id="rscovlm-chat")
            overlay = _image("rscovlm-overlay", "parsed boxes; zoom regions in white")
            record = gr.JSON(label="rounds and parse result", elem_id="rscovlm-json")
    gr.Examples(rows, [image, prompt], label="synthetic scenes: detection and counting (click one)")
    run.click(ask, [image, prompt, zoom, crop_source, max_new_tokens], [chat, overlay, record])


TABS = (  # (package, tab title, builder)
    ("bimors", "Scene classification · BiMoRS", _scene_tab),
    ("icipnet", "Referring segmentation · ICIPNet", _referring_tab),
    ("clvnet", "Grounded caption · CLV-Net", _gcg_tab),
    ("rscovlm", "Chat with zoom-in · RSCoVLM", _chat_tab),
)


def build_app(models: Mapping[str, Any], sources: Mapping[str, str]) -> gr.Blocks:
    """The app over the loaded ``models`` (``{"bimors": SceneClassifier, …}``); ``sources[package]`` says in one
    line where each model came from (shown under the title)."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\n" + "\n".join(f"- **{package}**: {sources[package]}" for package, _, _ in TABS))
        for package, title, build in TABS:
            with gr.Tab(title, id=package, elem_id=f"{package}-tab"):
                build(models[package])
    return app


__all__ = ["CSS", "THEME", "TITLE", "build_app", "parse_box", "parse_classes"]
