"""Batched greedy generation with transformers' ``generate`` (spec §4.3, §5.1, §8).

A request is a conversation without its answer (unified messages as :class:`rscovlm.render.ChatRenderer`
reads them) plus its images; the generator renders each request with a generation prompt, left-pads a batch
(:func:`rscovlm.collate.collate`), decodes greedily and returns the new text decoded with
``skip_special_tokens=True`` (``<tool_call>`` is a non-special token and survives, §8).

Anything with an ``image_settings`` attribute and a ``generate(requests) -> list[str]`` method is a
:class:`Generator`: the zoom chain and the evaluation take that interface, so tests drive them with a
scripted fake.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .collate import collate
from .model_factory import LoadedModel, build_tiny_model, load_pretrained
from .render import ChatRenderer, ImageLike, ImageSettings


@dataclass
class ChatRequest:
    """One prompt: ``messages`` (system/user/assistant turns, no final answer) and the images their image
    items refer to (PIL images or ``(H, W, 3)`` uint8 arrays)."""

    messages: list[dict[str, Any]]
    images: list[ImageLike] = field(default_factory=list)


class Generator(Protocol):
    """What the zoom chain and the evaluation need from a model."""

    image_settings: ImageSettings

    def generate(self, requests: Sequence[ChatRequest]) -> list[str]:
        """One decoded answer per request, in order."""
        ...


class HFGenerator:
    """Greedy decoding of a :class:`~rscovlm.model_factory.LoadedModel` in batches of ``batch_size``.

    ``max_new_tokens`` bounds each answer; generation stops at ``<|im_end|>`` (the model's generation
    config). Requests are rendered with the checkpoint's own tokenizer and image settings.
    """

    def __init__(self, loaded: LoadedModel, max_new_tokens: int = 256, batch_size: int = 1):
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be positive, got {max_new_tokens}, {batch_size}")
        self.loaded = loaded
        self.renderer: ChatRenderer = loaded.renderer()
        self.image_settings = loaded.image_settings
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.pad_id = loaded.tokenizer.pad_token_id

    @torch.no_grad()
    def generate(self, requests: Sequence[ChatRequest]) -> list[str]:
        """Decoded answers, ``batch_size`` requests per ``model.generate`` call (left padding)."""
        outputs: list[str] = []
        model = self.loaded.model
        device = next(model.parameters()).device
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            samples = [self.renderer.render(r.messages, r.images, add_generation_prompt=True) for r in chunk]
            batch = collate(samples, self.pad_id, padding_side="left")
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
            generated = model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                       pad_token_id=self.pad_id)
            new_tokens = generated[:, batch["input_ids"].shape[1]:]
            outputs += self.loaded.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return outputs


def load_model(spec: str, min_pixels: int | None = None, max_pixels: int | None = None) -> LoadedModel:
    """``spec`` ``"tiny"`` (the random tiny preset, built in memory) or a local checkpoint directory;
    ``min_pixels`` / ``max_pixels`` override the checkpoint's image settings (e.g. both at the cap for
    the "Max Mode" of §5.1)."""
    overrides = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
    if spec == "tiny":
        loaded = build_tiny_model()
        if overrides:
            loaded.image_settings = dataclasses.replace(loaded.image_settings, **overrides)
        return loaded
    return load_pretrained(spec, **overrides)


def user_turn(text: str, image_index: int | None = 0, options: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A user message ``[image, text]`` (or text only when ``image_index`` is None)."""
    content: list[dict[str, Any]] = []
    if image_index is not None:
        content.append({"type": "image", "index": image_index, **(options or {})})
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def single_turn(question: str, image: ImageLike, system: str | None = None) -> ChatRequest:
    """The one-turn request ``[system], user [image, question]`` (the default system turn when ``None``)."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    return ChatRequest(messages + [user_turn(question)], [image])


__all__ = ["ChatRequest", "Generator", "HFGenerator", "load_model", "single_turn", "user_turn"]
