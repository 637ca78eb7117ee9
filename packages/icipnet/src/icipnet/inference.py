"""Segment images from referring expressions with a trained ICIPNet (what ``icipnet-predict`` runs).

:class:`ReferringSegmenter` loads a ``save_pretrained`` directory (weights, config and tokenizer, as
``icipnet-train`` writes it) and segments one image for one or more expressions::

    segmenter = ReferringSegmenter.from_pretrained("runs/icipnet-tiny/best")
    result = segmenter(image, ["the red car", "the leftmost ship"])
    result.masks          # (N, H, W) bool at the image's own size
    result.probabilities  # (N, H, W) float32 foreground probability (softmax of the two logits)

The image is preprocessed exactly as in training and evaluation (bilinear resize to the model's input
size, ImageNet normalisation); the prediction (foreground logit larger than background) is made at the
model's resolution and nearest-resized back to the image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rs_shared.metrics.segmentation import resize_mask_nearest

from .data import image_to_tensor
from .modeling import IcipNetModel
from .tokenizer import load_tokenizer, tokenize_expressions


@dataclass
class Segmentation:
    """Masks and probabilities for ``N`` expressions on one ``H × W`` image."""

    expressions: list[str]
    masks: np.ndarray  # (N, H, W) bool
    probabilities: np.ndarray  # (N, H, W) float32 in [0, 1]


class ReferringSegmenter:
    """A trained model and its tokenizer, ready to segment images (CPU or GPU)."""

    def __init__(self, model: IcipNetModel, tokenizer, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer, self.device = tokenizer, torch.device(device)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> ReferringSegmenter:
        """Load weights, config and tokenizer from an ``icipnet-train`` output directory."""
        return cls(IcipNetModel.from_pretrained(directory), load_tokenizer(directory), device)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, expressions: Sequence[str]) -> Segmentation:
        """Segment ``image`` (``(H, W, 3)`` uint8 RGB) once per expression."""
        if not expressions:
            raise ValueError("give at least one referring expression")
        config = self.model.config
        pixels = image_to_tensor(np.asarray(image, dtype=np.uint8), config.image_size)
        input_ids, attention_mask = tokenize_expressions(self.tokenizer, list(expressions), config.max_text_len)
        n = len(expressions)
        logits = self.model(pixels.expand(n, -1, -1, -1).to(self.device), input_ids.to(self.device),
                            attention_mask.to(self.device)).logits.float()
        probabilities = logits.softmax(dim=1)[:, 1].cpu().numpy()
        masks = (logits[:, 1] > logits[:, 0]).cpu().numpy()
        h, w = image.shape[:2]
        full_masks = np.stack([resize_mask_nearest(m, (h, w)) for m in masks])
        full_probabilities = np.stack([_resize_bilinear(p, (h, w)) for p in probabilities])
        return Segmentation(list(expressions), full_masks, full_probabilities)


def _resize_bilinear(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(values)[None, None]
    return torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


__all__ = ["ReferringSegmenter", "Segmentation"]
