"""CLV-Net inputs: IXC-2.5 HD views, the SAM2 image, the box prompt and the rendered token sequence (§1.2, §8).

One sample (``CLVNetProcessor.__call__``) turns an ``(H, W, 3)`` uint8 image, a box prompt and, for training,
the grounded answer and its masks into tensors; :meth:`CLVNetProcessor.collate` batches them into the input
of ``CLVNetModel.forward`` / ``generate_grounded``:

* ``clip_pixel_values`` — the IXC-2.5 HD transform (§1.2): transpose a portrait image, take the largest grid
  scale ``s`` with ``s·ceil(s/ratio) ≤ hd_num``, resize (bilinear) to width ``s·R`` keeping the aspect, pad the
  height to a multiple of ``R`` with white (centred, as IXC pads), transpose back, normalise with the CLIP
  mean/std and cut ``R × R`` sub-views (row-major) after one global view (bicubic resize of the whole padded
  image to ``R × R``);
* ``sam_pixel_values`` — bilinear resize of the whole image to ``S × S`` (no padding), ImageNet mean/std;
* the box prompt in original pixels (``boxes``), in the stitched HD frame (``region_boxes``, for RoIAlign) and
  normalised by the image size (``box_coords``);
* ``input_ids`` / ``labels`` in the chat layout of the interfaces file (§1.2, §1.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rs_shared.data.masks import mask_bbox
from transformers import PreTrainedTokenizerBase

from .tokenizer import CLVNET_QUERY, IM_END, IM_START, TokenIds

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = -100
BOS_POSITIONS = ("before_image", "after_image")
BOX_TARGETS = ("full", "in_box")
PROMPT_HEADER = f"{IM_START}user\n"
ASSISTANT_HEADER = f"{IM_END}\n{IM_START}assistant\n"
ANSWER_CLOSE = f"{IM_END}\n"


# --- §1.2 IXC-2.5 HD transform ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HDLayout:
    """Where the original image lies in the stitched HD frame (the padded, resized image whose ``R × R``
    sub-views are cut): it fills ``content_size`` pixels from ``offset`` on (the rest is white padding).

    ``grid`` is ``(h, w)`` sub-views; ``frame_size`` ``(width, height)`` = ``(w·R, h·R)``; ``image_size``,
    ``content_size`` and ``offset`` are ``(x, y)``; ``transposed`` tells that the image was portrait (resized in
    transposed form, then transposed back).
    """

    grid: tuple[int, int]
    frame_size: tuple[int, int]
    image_size: tuple[int, int]
    content_size: tuple[int, int]
    offset: tuple[int, int]
    transposed: bool

    def map_box(self, box: Any) -> np.ndarray:
        """An ``xyxy`` box in original pixels → the same box in frame pixels, ``(4,)`` float64."""
        box = np.asarray(box, dtype=np.float64)
        return box * np.tile(self.content_size, 2) / np.tile(self.image_size, 2) + np.tile(self.offset, 2)


def hd_scale(width: int, height: int, hd_num: int) -> int:
    """Largest ``s`` with ``s·ceil(s/ratio) ≤ hd_num``, ratio = long side / short side (§1.2)."""
    if hd_num < 1:
        raise ValueError(f"hd_num must be at least 1, got {hd_num}")
    ratio = max(width, height) / min(width, height)
    scale = 1
    while (scale + 1) * math.ceil((scale + 1) / ratio) <= hd_num:
        scale += 1
    return scale


def hd_transform(image: np.ndarray, resolution: int, hd_num: int) -> tuple[torch.Tensor, HDLayout]:
    """IXC-2.5 HD views of an ``(H, W, 3)`` uint8 image: ``(1 + h·w, 3, R, R)`` float32, CLIP-normalised, the
    global view first and then the sub-views row by row; and the :class:`HDLayout` of the frame (§1.2)."""
    height, width = image.shape[:2]
    transposed = width < height
    work = image.transpose(1, 0, 2) if transposed else image
    ratio = work.shape[1] / work.shape[0]
    new_w = hd_scale(width, height, hd_num) * resolution  # no extra cap on s (§1.2 rule as written)
    new_h = max(1, int(new_w / ratio))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(work)).resize((new_w, new_h), Image.BILINEAR))
    padded_h = math.ceil(new_h / resolution) * resolution
    top = (padded_h - new_h) // 2  # IXC pads top and bottom (white)
    frame = np.full((padded_h, new_w, 3), 255, dtype=np.uint8)
    frame[top:top + new_h] = resized
    if transposed:
        frame = frame.transpose(1, 0, 2)
        content, offset = (new_h, new_w), (top, 0)
    else:
        content, offset = (new_w, new_h), (0, top)
    pixels = normalize(frame, CLIP_MEAN, CLIP_STD)
    h, w = pixels.shape[1] // resolution, pixels.shape[2] // resolution
    subs = pixels.reshape(3, h, resolution, w, resolution).permute(1, 3, 0, 2, 4).reshape(h * w, 3, resolution,
                                                                                            resolution)
    glb = F.interpolate(pixels[None], size=(resolution, resolution), mode="bicubic", align_corners=False)
    layout = HDLayout((h, w), (w * resolution, h * resolution), (width, height), content, offset, transposed)
    return torch.cat([glb, subs]).contiguous(), layout


def num_image_tokens(grid: Sequence[int], tokens_per_side: int) -> int:
    """Image tokens of an ``h × w`` grid with ``T × T`` merged tokens per view: ``(h·w+1)·T² + 1 + (h+1)·T``
    (row separators after each token row, one separator between global view and sub-grid; §1.2)."""
    h, w = int(grid[0]), int(grid[1])
    t = int(tokens_per_side)
    return (h * w + 1) * t * t + 1 + (h + 1) * t


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(3, H, W)`` float32 in [0, 1], then ``(x − mean) / std`` per channel."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def sam_transform(image: np.ndarray, size: int) -> torch.Tensor:
    """SAM2 grounding image (§1.3): bilinear resize of the whole image to ``size × size`` (no padding, aspect
    not kept), ImageNet mean/std → ``(3, size, size)`` float32."""
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR))
    return normalize(resized, IMAGENET_MEAN, IMAGENET_STD)


# --- §8 box prompt ---------------------------------------------------------------------------------------

def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` boxes of the non-empty masks of ``(N, H, W)``, ``(M, 4)`` float64."""
    boxes = np.array([mask_bbox(m) for m in masks]).reshape(-1, 4)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def union_box(masks: np.ndarray) -> np.ndarray:
    """Evaluation box (§8): the box enclosing every non-empty mask of ``(N, H, W)``, ``(4,)`` xyxy pixels; the
    whole image when no mask has a pixel [RECON]."""
    boxes = _mask_boxes(masks)
    if not len(boxes):
        return np.array([0.0, 0.0, masks.shape[2], masks.shape[1]])
    return np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])


def random_box(masks: np.ndarray, rng: np.random.Generator, p_union: float = 0.5,
               jitter: float = 0.1) -> np.ndarray:
    """Training box (§8 [RECON]): with probability ``p_union`` the :func:`union_box`, otherwise the box of one
    uniformly drawn non-empty phrase mask with each side moved by up to ``±jitter`` of the box's width/height,
    clipped to the image. ``(4,)`` xyxy pixels; never degenerate (each side keeps ≥ ``1 − 2·jitter``)."""
    boxes = _mask_boxes(masks)
    if rng.random() < p_union or not len(boxes):
        return union_box(masks)
    box = boxes[int(rng.integers(len(boxes)))]
    size = np.tile(box[2:] - box[:2], 2)
    box = box + rng.uniform(-jitter, jitter, 4) * size
    height, width = masks.shape[1:]
    return np.clip(box, 0.0, [width, height, width, height])


def check_box(box: Any, width: int, height: int, record: str = "sample") -> np.ndarray:
    """``box`` as a ``(4,)`` float64 xyxy array after checking ``0 ≤ x1 < x2 ≤ W`` and ``0 ≤ y1 < y2 ≤ H``;
    ``ValueError`` naming ``record`` otherwise."""
    arr = np.asarray(box, dtype=np.float64)
    if arr.shape != (4,) or not np.isfinite(arr).all():
        raise ValueError(f"{record}: box must be 4 finite numbers x1, y1, x2, y2 (pixels), got {box!r}")
    x1, y1, x2, y2 = arr
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"{record}: box {arr.tolist()} is degenerate (needs x1 < x2 and y1 < y2)")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise ValueError(f"{record}: box {arr.tolist()} lies outside the {width}x{height} image")
    return arr


def box_coords(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """``xyxy`` pixel box normalised to [0, 1] by the original width/height, ``(4,)`` float64."""
    return np.asarray(box, dtype=np.float64) / np.array([width, height, width, height], dtype=np.float64)


# --- §1.2 / §1.5 token sequence ----------------------------------------------------------------------------

def render_sequence(tokenizer: PreTrainedTokenizerBase, ids: TokenIds, n_image: int, region_tokens: int,
                    answer: str | None = None, query: str = CLVNET_QUERY, bos_position: str = "before_image",
                    record: str = "sample") -> tuple[list[int], list[int] | None]:
    """``(input_ids, labels)`` of one sample in the chat layout (interfaces file, §1.2):
    ``<s>``, ``n_image`` × ``<IMAGE>`` (``<s>`` after them with ``bos_position="after_image"``), then the text
    ``IM_START user\\n query IM_END\\n IM_START assistant\\n`` with the query's single ``<BOX>`` id repeated
    ``region_tokens`` times, then ``answer IM_END\\n`` and ``</s>``. The text after the image is tokenised in one
    piece (as GeoPixel does); its prompt part must tokenise alone to the same ids (it is the inference prompt).

    ``labels`` are ``IGNORE_INDEX`` up to and including the assistant header and equal ``input_ids`` on the
    answer, the closing im_end and its newline and ``</s>`` (§1.5, §7 point 7). Without ``answer`` the
    sequence ends after the assistant header (the generation prompt) and ``labels`` is ``None``.
    """
    if bos_position not in BOS_POSITIONS:
        raise ValueError(f"bos_position must be one of {BOS_POSITIONS}, got {bos_position!r}")
    if region_tokens < 0:
        raise ValueError(f"region_tokens must be ≥ 0, got {region_tokens}")
    prompt = PROMPT_HEADER + query + ASSISTANT_HEADER
    prompt_ids = _encode(tokenizer, prompt)
    if prompt_ids.count(ids.box) != 1:
        raise ValueError(f"the query must contain exactly one <BOX> token, found {prompt_ids.count(ids.box)}: "
                         f"{query!r}")
    image = [ids.image] * n_image
    head = [ids.bos, *image] if bos_position == "before_image" else [*image, ids.bos]
    answer_ids: list[int] = []
    if answer is not None:
        text_ids = _encode(tokenizer, prompt + answer + ANSWER_CLOSE)
        if text_ids[:len(prompt_ids)] != prompt_ids:
            raise ValueError(f"{record}: the tokenizer merges the assistant header with the answer's first "
                             f"characters ({answer[:20]!r}); the training prompt would differ from the inference one")
        answer_ids = [*text_ids[len(prompt_ids):], ids.eos]
    at = prompt_ids.index(ids.box)
    prompt_ids[at:at + 1] = [ids.box] * region_tokens
    input_ids = head + prompt_ids + answer_ids
    if answer is None:
        return input_ids, None
    return input_ids, [IGNORE_INDEX] * (len(head) + len(prompt_ids)) + answer_ids


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


# --- processor -------------------------------------------------------------------------------------------

class CLVNetProcessor:
    """Tokenizer + input settings → CLV-Net samples and batches.

    Settings (names of ``CLVNetConfig``): ``vision_image_size`` R, ``patch_size``, ``hd_num``,
    ``region_tokens`` K, ``sam_image_size`` S, ``bos_position``; the §8 box rule's ``box_union_prob`` (0.5) and
    ``box_jitter`` (0.1); ``box_targets`` (``"full"`` or ``"in_box"``: which caption and masks a box gets, read by
    the datasets of :mod:`clvnet.data`); ``query`` (:data:`CLVNET_QUERY`). ``tokens_per_side`` T = R / patch_size / 2.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, vision_image_size: int = 560, patch_size: int = 14,
                 hd_num: int = 9, region_tokens: int = 4, sam_image_size: int = 1024,
                 bos_position: str = "before_image", box_union_prob: float = 0.5, box_jitter: float = 0.1,
                 box_targets: str = "full", query: str = CLVNET_QUERY):
        if vision_image_size % (2 * patch_size):
            raise ValueError(f"vision_image_size {vision_image_size} must be a multiple of 2·patch_size "
                             f"({2 * patch_size}) for the 2×2 token merge")
        if bos_position not in BOS_POSITIONS:
            raise ValueError(f"bos_position must be one of {BOS_POSITIONS}, got {bos_position!r}")
        if not 0.0 <= box_union_prob <= 1.0 or not 0.0 <= box_jitter < 0.5:
            raise ValueError(f"need 0 ≤ box_union_prob ≤ 1 and 0 ≤ box_jitter < 0.5, got {box_union_prob}, "
                             f"{box_jitter}")
        if box_targets not in BOX_TARGETS:
            raise ValueError(f"box_targets must be one of {BOX_TARGETS}, got {box_targets!r}")
        self.tokenizer = tokenizer
        self.token_ids = TokenIds.of(tokenizer)
        self.vision_image_size = vision_image_size
        self.patch_size = patch_size
        self.hd_num = hd_num
        self.region_tokens = region_tokens
        self.sam_image_size = sam_image_size
        self.bos_position = bos_position
        self.box_union_prob = box_union_prob
        self.box_jitter = box_jitter
        self.box_targets = box_targets
        self.query = query
        render_sequence(tokenizer, self.token_ids, 0, region_tokens, None, query, bos_position)  # checks the query

    @classmethod
    def from_config(cls, config: Any, tokenizer: PreTrainedTokenizerBase) -> CLVNetProcessor:
        """The settings of a :class:`~clvnet.configuration.CLVNetConfig`; without the box prompt (``use_box_prompt``
        false, the "w/o prompt box" ablation) the query has no ``<BOX>``."""
        kwargs = {name: getattr(config, name) for name in ("hd_num", "sam_image_size", "bos_position",
                                                            "box_union_prob", "box_jitter", "box_targets")}
        return cls(tokenizer, vision_image_size=config.vision_config.image_size,
                   patch_size=config.vision_config.patch_size,
                   region_tokens=config.region_tokens if config.use_box_prompt else 0, **kwargs)

    @property
    def tokens_per_side(self) -> int:
        """T: merged tokens per side of one view."""
        return self.vision_image_size // self.patch_size // 2

    def __call__(self, image: np.ndarray, box: Any = None, answer: str | None = None,
                 masks: np.ndarray | None = None, *, train: bool = False, rng: np.random.Generator | None = None,
                 record: str = "sample") -> dict[str, torch.Tensor]:
        """One sample from an ``(H, W, 3)`` uint8 image.

        ``box``: ``xyxy`` pixels; ``None`` derives it from ``masks`` by the §8 rule (``train``: :func:`random_box`
        drawn from ``rng``; otherwise :func:`union_box`). ``answer``: grounded caption (training/teacher forcing;
        ``None`` = generation prompt). ``masks``: ``(N, H, W)`` bool, one per ``[SEG]`` of the answer.
        ``record`` names the sample in errors.

        Returns ``input_ids`` (L,) long, ``labels`` (L,) long (with ``answer``), ``clip_pixel_values``
        (1+h·w, 3, R, R), ``image_grid`` (2,) long ``(h, w)``, ``region_box`` (4,) and ``box_coords`` (4,)
        float32, ``sam_pixel_values`` (3, S, S), ``image_size`` (2,) long ``(H, W)``, ``box`` (4,) float32 and
        ``gt_masks`` (N, H, W) bool (with ``masks``).
        """
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"{record}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        if masks is not None:
            masks = np.asarray(masks).astype(bool)
            if masks.ndim != 3 or masks.shape[1:] != (height, width):
                raise ValueError(f"{record}: masks must be (N, {height}, {width}), got {masks.shape}")
        if box is None:
            if masks is None:
                raise ValueError(f"{record}: give a box prompt or the masks to derive it from (§8)")
            if train:
                rng = np.random.default_rng() if rng is None else rng
                box = random_box(masks, rng, self.box_union_prob, self.box_jitter)
            else:
                box = union_box(masks)
        box = check_box(box, width, height, record)
        views, layout = hd_transform(image, self.vision_image_size, self.hd_num)
        n_image = num_image_tokens(layout.grid, self.tokens_per_side)
        input_ids, labels = render_sequence(self.tokenizer, self.token_ids, n_image, self.region_tokens, answer,
                                            self.query, self.bos_position, record)
        sample = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "clip_pixel_values": views,
            "image_grid": torch.tensor(layout.grid, dtype=torch.long),
            "region_box": torch.tensor(layout.map_box(box), dtype=torch.float32),
            "box_coords": torch.tensor(box_coords(box, width, height), dtype=torch.float32),
            "sam_pixel_values": sam_transform(image, self.sam_image_size),
            "image_size": torch.tensor([height, width], dtype=torch.long),
            "box": torch.tensor(box, dtype=torch.float32),
        }
        if labels is not None:
            n_seg = labels.count(self.token_ids.seg)
            if masks is not None and n_seg != len(masks):
                raise ValueError(f"{record}: the answer has {n_seg} [SEG] tokens but {len(masks)} masks were given "
                                 "(one mask per [SEG], §7 point 2)")
            sample["labels"] = torch.tensor(labels, dtype=torch.long)
        if masks is not None:
            sample["gt_masks"] = torch.from_numpy(masks)
        return sample

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Batch samples (extra keys are ignored) into the model input of the interfaces file: ``input_ids``,
        ``attention_mask`` and (when every sample has them) ``labels`` ``(B, L)`` long, right-padded with the pad
        id / ``IGNORE_INDEX``; ``clip_pixel_values`` ``(ΣV, 3, R, R)``; ``image_grids`` ``(B, 2)``;
        ``region_boxes``, ``box_coords``, ``boxes`` ``(B, 4)`` float32; ``sam_pixel_values`` ``(B, 3, S, S)``;
        ``image_sizes`` ``(B, 2)``; ``gt_masks`` list of ``(N_i, H_i, W_i)`` bool (when every sample has them)."""
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        length = max(len(s["input_ids"]) for s in samples)
        batch_size = len(samples)
        input_ids = torch.full((batch_size, length), self.token_ids.pad, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        for i, s in enumerate(samples):
            input_ids[i, :len(s["input_ids"])] = s["input_ids"]
            attention_mask[i, :len(s["input_ids"])] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "clip_pixel_values": torch.cat([s["clip_pixel_values"] for s in samples]),
            "image_grids": torch.stack([s["image_grid"] for s in samples]),
            "region_boxes": torch.stack([s["region_box"] for s in samples]),
            "box_coords": torch.stack([s["box_coords"] for s in samples]),
            "sam_pixel_values": torch.stack([s["sam_pixel_values"] for s in samples]),
            "image_sizes": torch.stack([s["image_size"] for s in samples]),
            "boxes": torch.stack([s["box"] for s in samples]),
        }
        for key in ("labels", "gt_masks"):
            present = sum(key in s for s in samples)
            if present not in (0, batch_size):
                raise ValueError(f"{present} of {batch_size} samples have {key!r}; a batch needs all or none")
        if "labels" in samples[0]:
            labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
            for i, s in enumerate(samples):
                labels[i, :len(s["labels"])] = s["labels"]
            batch["labels"] = labels
        if "gt_masks" in samples[0]:
            batch["gt_masks"] = [s["gt_masks"] for s in samples]
        return batch


__all__ = ["ANSWER_CLOSE", "ASSISTANT_HEADER", "BOS_POSITIONS", "BOX_TARGETS", "CLIP_MEAN", "CLIP_STD",
           "CLVNetProcessor", "HDLayout", "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "PROMPT_HEADER", "box_coords",
           "check_box", "hd_scale", "hd_transform", "normalize", "num_image_tokens", "random_box", "render_sequence",
           "sam_transform", "union_box"]
