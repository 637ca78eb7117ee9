"""Conversations → model inputs: prompt text, token ids, loss labels and ViT patches (spec §2.3, §3.1).

The layout is Qwen2.5-VL's chat format. A default system turn is prepended when the first message is not a
system one; each turn is ``<|im_start|>{role}\\n`` + content + ``<|im_end|>`` + ``\\n``; each image is
``<|vision_start|>`` + N × ``<|image_pad|>`` + ``<|vision_end|>`` with ``N = t·h·w / merge²`` of its patch grid.

Labels: only the text of assistant turns and their closing ``<|im_end|>`` carry loss; everything else
(system and user turns, role headers, the ``\\n`` after ``<|im_end|>``, vision tokens) is ``-100``. The
text is cut into pieces of equal supervision, consecutive equal pieces are merged, and each merged piece is
tokenized **separately** without special tokens (the official scheme: ids can differ from tokenizing the
whole string at a piece boundary).

Images are resized once with :func:`rscovlm.resize.smart_resize` (PIL bicubic), scaled by 1/255,
normalized with the CLIP mean/std and cut into rows of ``3·2·14·14 = 1176`` features in the patch order of
transformers' ``Qwen2VLImageProcessor`` (the frame duplicated to the temporal patch of 2). The settings are
persisted with a checkpoint as its ``preprocessor_config.json`` (§3.2), see :class:`ImageSettings`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rs_shared.data.conversations import Conversation
from transformers import PreTrainedTokenizerBase

from .resize import (
    MERGE_SIZE,
    PAPER_MAX_PIXELS,
    PAPER_MIN_PIXELS,
    PATCH_SIZE,
    ResizedFrame,
    plan_resize,
    resize_image,
    smart_resize,
)
from .templates import DEFAULT_SYSTEM_PROMPT
from .tokenizer import IM_END, IM_START, IMAGE_PAD, VISION_END, VISION_START, TokenIds

IGNORE_INDEX = -100
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_CONFIG = "preprocessor_config.json"
ImageLike = Image.Image | np.ndarray


@dataclass(frozen=True)
class ImageSettings:
    """How images become ViT input: the pixel bounds of :func:`smart_resize`, the patch geometry and the
    normalization. Saved as (and read from) a checkpoint's ``preprocessor_config.json``."""

    min_pixels: int = PAPER_MIN_PIXELS
    max_pixels: int = PAPER_MAX_PIXELS
    patch_size: int = PATCH_SIZE
    merge_size: int = MERGE_SIZE
    temporal_patch_size: int = 2
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def frame(self, width: int, height: int, options: Mapping[str, int] | None = None) -> ResizedFrame:
        """The frame of a ``width × height`` image. Per-image ``options`` follow ``qwen_vl_utils``:
        ``resized_width`` + ``resized_height`` give the target (rounded by :func:`smart_resize`), otherwise
        ``min_pixels`` / ``max_pixels`` override the settings' bounds."""
        options = options or {}
        if "resized_width" in options or "resized_height" in options:
            if not ("resized_width" in options and "resized_height" in options):
                raise ValueError(f"image options {dict(options)} need both resized_width and resized_height")
            h, w = smart_resize(options["resized_height"], options["resized_width"], self.factor,
                                self.min_pixels, self.max_pixels)
            return ResizedFrame((width, height), (w, h))
        return plan_resize(width, height, options.get("min_pixels", self.min_pixels),
                           options.get("max_pixels", self.max_pixels), self.factor)

    def patches(self, image: Image.Image) -> np.ndarray:
        """ViT input rows of an already resized RGB image: ``(h·w, 3·T·p·p)`` float32 with ``h, w`` its
        patch grid, rows grouped by ``merge × merge`` block, each row channel-major then temporal copy then
        ``p × p`` pixels (transformers' ``Qwen2VLImageProcessor`` layout)."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        pixels = (pixels - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        height, width, channels = pixels.shape
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        if height % (p * m) or width % (p * m):
            raise ValueError(f"image {width}×{height} is not a multiple of {p * m} on both sides")
        gh, gw = height // p, width // p
        grid = pixels.reshape(gh // m, m, p, gw // m, m, p, channels)  # (bh, mh, ph, bw, mw, pw, C)
        grid = grid.transpose(0, 3, 1, 4, 6, 2, 5)  # (bh, bw, mh, mw, C, ph, pw)
        grid = np.broadcast_to(grid[:, :, :, :, :, None], (*grid.shape[:5], t, p, p))
        return np.ascontiguousarray(grid.reshape(gh * gw, channels * t * p * p), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` content: transformers 5.x reads ``size``, 4.x ``min/max_pixels``."""
        return {
            "image_processor_type": "Qwen2VLImageProcessor",
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "min_pixels": self.min_pixels, "max_pixels": self.max_pixels,
            "patch_size": self.patch_size, "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size, "image_mean": list(self.image_mean), "image_std": list(self.image_std),
            "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "do_convert_rgb": True, "resample": int(Image.Resampling.BICUBIC),
        }

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``preprocessor_config.json`` into ``directory``; returns its path."""
        path = Path(directory) / PREPROCESSOR_CONFIG
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: int) -> ImageSettings:
        """Read ``preprocessor_config.json`` of a checkpoint directory (``size`` first, then top-level
        ``min_pixels`` / ``max_pixels`` as transformers does); keyword ``overrides`` win."""
        path = Path(directory) / PREPROCESSOR_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a checkpoint must carry its image settings")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        size = config.get("size") or {}
        values = {
            "min_pixels": config.get("min_pixels", size.get("shortest_edge", cls.min_pixels)),
            "max_pixels": config.get("max_pixels", size.get("longest_edge", cls.max_pixels)),
            **{k: config[k] for k in ("patch_size", "merge_size", "temporal_patch_size") if k in config},
            **{k: tuple(config[k]) for k in ("image_mean", "image_std") if k in config},
        }
        for key, value in values.items():
            if key in ("image_mean", "image_std"):
                ok = len(value) == 3 and all(isinstance(v, (int, float)) for v in value)
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            if not ok:
                raise ValueError(f"{path}: field {key!r} has an invalid value {value!r}")
        return cls(**{**values, **overrides})


@dataclass
class RenderedSample:
    """One rendered conversation. ``L`` tokens, ``P = Σ h_i·w_i`` patch rows over its images.

    - ``input_ids`` ``(L,)`` int64; ``labels`` ``(L,)`` int64, ``-100`` where no loss (not shifted: the model
      shifts); ``mm_token_type_ids`` ``(L,)`` int64, 1 on image tokens, 0 elsewhere (what the 5.x model needs
      to build 3-D mRoPE positions).
    - ``pixel_values`` ``(P, 1176)`` float32 and ``image_grid_thw`` ``(n_images, 3)`` int64, or ``None``
      without images; ``frames[i]`` maps boxes between image ``i``'s original and resized frames.
    - ``truncated``: the sample was cut to ``max_length`` (images whose tokens were cut are dropped).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    mm_token_type_ids: torch.Tensor
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    frames: tuple[ResizedFrame, ...] = ()
    truncated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class ChatRenderer:
    """Renders unified messages (the format of ``rs_shared`` ``Conversation.load()``) for training and
    inference with one tokenizer and one :class:`ImageSettings`.

    A message is ``{"role": "system" | "user" | "assistant", "content": str | [item, …]}`` with items
    ``{"type": "text", "text": str}`` or ``{"type": "image", "index": i, **options}`` (``index`` into the
    ``images`` argument; without it images are taken in order; options as :meth:`ImageSettings.frame`).
    ``default_system`` is the system turn added when the first message is not one (the chat template
    saved with the tokenizer uses :data:`~rscovlm.templates.DEFAULT_SYSTEM_PROMPT`).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, image_settings: ImageSettings | None = None,
                 max_length: int | None = None, default_system: str = DEFAULT_SYSTEM_PROMPT):
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.tokenizer = tokenizer
        self.ids = TokenIds.of(tokenizer)
        self.image_settings = image_settings or ImageSettings()
        self.max_length = max_length
        self.default_system = default_system

    # -- text -------------------------------------------------------------------------------------------

    def pieces(self, messages: Sequence[Mapping[str, Any]], image_tokens: Sequence[int] = (),
               add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
        """The prompt as ``(text, supervised)`` pieces, consecutive equal flags merged; image ``k`` (in
        order of appearance) is expanded to ``image_tokens[k]`` pads (1 when not given)."""
        _check_mappings(messages)
        raw: list[tuple[str, bool]] = []
        if not messages or messages[0].get("role") != "system":
            raw.append((f"{IM_START}system\n{self.default_system}{IM_END}\n", False))
        n_images = 0
        for t, message in enumerate(messages):
            role = message.get("role")
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"message {t}: unknown role {role!r}; expected system, user or assistant")
            body = []
            for item in _items(message.get("content"), t):
                if item["type"] == "text":
                    body.append(item["text"])
                elif role == "assistant":
                    raise ValueError(f"message {t}: an assistant turn cannot hold an image")
                else:
                    n = image_tokens[n_images] if n_images < len(image_tokens) else 1
                    body.append(VISION_START + IMAGE_PAD * n + VISION_END)
                    n_images += 1
            supervised = role == "assistant"
            raw += [(f"{IM_START}{role}\n", False), ("".join(body) + IM_END, supervised), ("\n", False)]
        if add_generation_prompt:
            raw.append((f"{IM_START}assistant\n", False))
        merged: list[tuple[str, bool]] = []
        for text, flag in raw:
            if merged and merged[-1][1] == flag:
                merged[-1] = (merged[-1][0] + text, flag)
            elif text:
                merged.append((text, flag))
        return merged

    def prompt_text(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False) -> str:
        """The chat text with one ``<|image_pad|>`` per image, as the tokenizer's chat template writes it."""
        return "".join(text for text, _ in self.pieces(messages, (), add_generation_prompt))

    # -- rendering --------------------------------------------------------------------------------------

    def render(self, messages: Sequence[Mapping[str, Any]], images: Sequence[ImageLike] = (),
               add_generation_prompt: bool = False) -> RenderedSample:
        """Token ids, labels, image-token types and ViT patches of ``messages`` (see the module docstring).
        For inference pass messages without the answer and ``add_generation_prompt=True``."""
        order = _image_order(messages, len(images))
        frames, patches = [], []
        for index, options in order:
            image = images[index]
            size = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
            frame = self.image_settings.frame(size[0], size[1], options)
            frames.append(frame)
            patches.append(self.image_settings.patches(resize_image(image, frame)))
        counts = [f.num_image_tokens(self.image_settings.patch_size, self.image_settings.merge_size) for f in frames]
        ids: list[int] = []
        labels: list[int] = []
        for text, supervised in self.pieces(messages, counts, add_generation_prompt):
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if supervised else [IGNORE_INDEX] * len(piece)
        truncated = self.max_length is not None and len(ids) > self.max_length
        if truncated:
            ids, labels, kept = self._truncate(ids, labels)
            frames, patches = frames[:kept], patches[:kept]
        input_ids = torch.tensor(ids, dtype=torch.long)
        grid = [f.grid_thw(self.image_settings.patch_size) for f in frames]
        return RenderedSample(
            input_ids=input_ids,
            labels=torch.tensor(labels, dtype=torch.long),
            mm_token_type_ids=(input_ids == self.ids.image).long(),
            pixel_values=torch.from_numpy(np.concatenate(patches)) if patches else None,
            image_grid_thw=torch.tensor(grid, dtype=torch.long) if grid else None,
            frames=tuple(frames),
            truncated=truncated,
        )

    def render_conversation(self, conversation: Conversation) -> RenderedSample:
        """Render an ``rs_shared`` conversation (a supervised sample: its images are read from disk)."""
        loaded = conversation.load()
        sample = self.render(loaded["messages"], loaded["images"])
        sample.meta = {"id": conversation.id, "source": conversation.source}
        return sample

    def _truncate(self, ids: list[int], labels: list[int]) -> tuple[list[int], list[int], int]:
        """Cut to ``max_length``; an image whose tokens would be cut is removed whole (the sequence ends
        before its ``<|vision_start|>``), so ids and patches stay consistent. Returns the kept image count."""
        cut = self.max_length
        starts = [i for i, tok in enumerate(ids) if tok == self.ids.vision_start]
        ends = [i for i, tok in enumerate(ids) if tok == self.ids.vision_end]
        kept = 0
        for start, end in zip(starts, ends):
            if end < cut:
                kept += 1
            else:
                cut = min(cut, start)
                break
        return ids[:cut], labels[:cut], kept


def _check_mappings(messages: Sequence[Any]) -> None:
    for t, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {t}: expected a {{'role', 'content'}} mapping, got {message!r:.80}")


def _items(content: Any, t: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, (list, tuple)):
        raise ValueError(f"message {t}: 'content' must be str or a list of items, got {type(content).__name__}")
    for j, item in enumerate(content):
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind == "text" and not isinstance(item.get("text"), str):
            raise ValueError(f"message {t} item {j}: a text item needs a str 'text', got {item!r:.80}")
        if kind not in ("text", "image"):
            raise ValueError(f"message {t} item {j}: expected a text or image item, got {item!r:.80}")
    return list(content)


def _image_order(messages: Sequence[Mapping[str, Any]], n_images: int) -> list[tuple[int, dict[str, int]]]:
    """``(image index, options)`` per image item, in order of appearance; every image must be used."""
    _check_mappings(messages)
    order, next_index = [], 0
    for t, message in enumerate(messages):
        for item in _items(message.get("content"), t):
            if item["type"] != "image":
                continue
            index = item.get("index", next_index)
            if not isinstance(index, int) or not 0 <= index < n_images:
                raise ValueError(f"message {t}: image index {index!r} out of range for {n_images} image(s)")
            order.append((index, {k: v for k, v in item.items() if k not in ("type", "index", "image")}))
            next_index = index + 1
    unused = sorted(set(range(n_images)) - {i for i, _ in order})
    if unused:
        raise ValueError(f"images {unused} are not referenced by any image item")
    return order


__all__ = ["CLIP_MEAN", "CLIP_STD", "IGNORE_INDEX", "PREPROCESSOR_CONFIG", "ChatRenderer", "ImageSettings",
           "RenderedSample"]
