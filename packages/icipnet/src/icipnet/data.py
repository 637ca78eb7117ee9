"""ICIPNet inputs: transforms, the random-box augmentation and the train/eval datasets (spec §4, §5).

Records come from :mod:`rs_shared.data.refseg` (RRSIS-D or RefSegRS, one record per (ref, expression));
this module turns them into model inputs:

* image: bilinear resize (PIL) to ``S × S``, scale to [0, 1], normalise with the ImageNet
  :data:`IMAGE_MEAN` / :data:`IMAGE_STD` → ``pixel_values`` float ``(3, S, S)``;
* mask: nearest resize to ``S × S`` with :func:`rs_shared.metrics.segmentation.resize_mask_nearest` (the
  evaluation's own ground-truth transform) → ``labels`` int64 ``(S, S)`` in {0, 1};
* expression: :func:`icipnet.tokenizer.tokenize_expressions` → ``input_ids``, ``attention_mask`` int64
  ``(N,)``; every expression is tokenised once, when the dataset is built.

Randomness never comes from a global generator: every draw for item ``i`` in epoch ``e`` uses
``numpy.random.default_rng([seed, e, i])``, so an item is the same whichever process or worker loads it
and a resumed run sees exactly the data of an uninterrupted one (call :meth:`RefSegTrainDataset.set_epoch`
at the start of every epoch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from rs_shared.data.errors import DataFormatError, Problems
from rs_shared.data.refseg import (
    Overlap,
    RefSegSample,
    detect_refsegrs,
    detect_rrsisd,
    group_by_ref,
    read_refsegrs,
    read_rrsisd,
)
from rs_shared.metrics.segmentation import resize_mask_nearest
from transformers import BertTokenizer

from .tokenizer import tokenize_expressions

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


# --- reading ---------------------------------------------------------------------------------------------

def load_split(root: str | os.PathLike, split: str, overlap: Overlap = "union",
               problems: Problems | None = None) -> list[RefSegSample]:
    """Records of ``split`` (``train``/``val``/``test``) of the RRSIS-D or RefSegRS dataset at ``root``.

    ``overlap`` applies to RRSIS-D masks: ``"official"`` reproduces the REFER loader (pixels covered by
    two polygon parts become background), ``"union"`` keeps them (see
    :class:`rs_shared.data.refseg.CocoMask`).
    """
    if detect_rrsisd(root):
        return read_rrsisd(root, split, problems, overlap=overlap)
    if detect_refsegrs(root):
        return read_refsegrs(root, split, problems)
    raise DataFormatError(root, "neither an RRSIS-D layout (rrsisd/refs(unc).p + rrsisd/instances.json) nor a "
                                "RefSegRS layout (images/, masks/, output_phrase_<split>.txt)")


def ensure_synthetic(root: str | os.PathLike, n: int, seed: int = 0, size: int = 64, object_scale: float = 1.0) -> Path:
    """The embedded default dataset: a synthetic RRSIS-D dataset of ``n`` ``size × size`` images at ``root``
    (objects ``object_scale`` times the generator's default size), generated when absent or empty, else checked
    against its manifest (:func:`rs_shared.data.synthetic.export.ensure_synthetic`)."""
    from rs_shared.data.synthetic.export import ensure_synthetic as ensure

    return ensure("refseg", root, n, seed=seed, size=size, object_scale=object_scale)


# --- transforms ------------------------------------------------------------------------------------------

def image_to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → normalised float ``(3, size, size)``: PIL bilinear resize, /255, mean/std."""
    resized = np.asarray(Image.fromarray(image, "RGB").resize((size, size), Image.BILINEAR), dtype=np.float32)
    normalised = (resized / 255.0 - np.asarray(IMAGE_MEAN, np.float32)) / np.asarray(IMAGE_STD, np.float32)
    return torch.from_numpy(normalised).permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """``(H, W)`` bool → int64 ``(size, size)`` in {0, 1}, nearest-resized exactly as the evaluation does."""
    return torch.from_numpy(resize_mask_nearest(np.asarray(mask, dtype=bool), (size, size)).astype(np.int64))


@dataclass(frozen=True)
class RandomBoxes:
    """RMSIN's "random boxes" augmentation (spec §4).

    A fixed ``fraction`` of the training refs (``int(fraction · n)`` of them, chosen once from the seed by
    :meth:`select`) is augmented: every time one of them is loaded, ``count[0]``–``count[1]`` (inclusive)
    black ``size × size`` squares are pasted at uniform random positions on the original-resolution image,
    before resizing. As in the official code both coordinates of a square's top-left corner are drawn
    from ``[0, W − size]`` with ``W`` the image **width** (squares reaching past the bottom of a
    non-square image are cut off). ``size`` is in original pixels: 32 suits the 800² / 512² tiles of the
    real datasets; scale it for small synthetic images.
    """

    fraction: float = 0.2
    count: tuple[int, int] = (20, 60)
    size: int = 32

    def __post_init__(self):
        if not 0 <= self.fraction <= 1 or not 0 <= self.count[0] <= self.count[1] or self.size < 1:
            raise ValueError(f"invalid RandomBoxes({self.fraction}, {self.count}, {self.size})")

    def select(self, num_refs: int, seed: int) -> frozenset[int]:
        """Indices (in ``range(num_refs)``) of the refs that get boxes, fixed for a seed."""
        chosen = np.random.default_rng(seed).choice(num_refs, size=int(num_refs * self.fraction), replace=False)
        return frozenset(int(i) for i in chosen)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A copy of ``(H, W, 3)`` ``image`` with the squares pasted."""
        out = image.copy()
        num = int(rng.integers(self.count[0], self.count[1] + 1))
        high = max(image.shape[1] - self.size, 0)
        for y, x in rng.integers(0, high + 1, size=(num, 2)):
            out[y:y + self.size, x:x + self.size] = 0
        return out


# --- datasets --------------------------------------------------------------------------------------------

class _RefSegBase(torch.utils.data.Dataset):
    """Records grouped by ref (:func:`rs_shared.data.refseg.group_by_ref`) with every expression tokenised."""

    def __init__(self, records: Sequence[RefSegSample], tokenizer: BertTokenizer, image_size: int,
                 max_text_len: int, seed: int, cache: bool = False):
        self.cache: dict[int, dict] | None = {} if cache else None
        self.groups = group_by_ref(records)
        self.records = [r for group in self.groups for r in group]  # grouped order; rows of the token tensors
        self.offsets = np.cumsum([0] + [len(g) for g in self.groups[:-1]]).tolist()
        self.input_ids, self.attention_mask = tokenize_expressions(
            tokenizer, [r.expression for r in self.records], max_text_len)
        self.image_size, self.seed = image_size, seed

    def _load(self, row: int) -> dict[str, Any]:
        """The record's image and mask, decoded once and kept when the dataset caches (per process)."""
        if self.cache is None:
            return self.records[row].load()
        if row not in self.cache:
            self.cache[row] = self.records[row].load()
        return self.cache[row]

    def _item(self, row: int, image: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        record = self.records[row]
        return {"pixel_values": image_to_tensor(image, self.image_size),
                "input_ids": self.input_ids[row], "attention_mask": self.attention_mask[row],
                "labels": mask_to_tensor(mask, self.image_size), "ref_id": record.ref_id,
                "sent_id": record.sent_id, "expression": record.expression}


class RefSegTrainDataset(_RefSegBase):
    """Training items, one per ref; each access draws one of the ref's expressions at random.

    Item ``i`` of epoch ``e`` (see :meth:`set_epoch`) is a dict with ``pixel_values`` float ``(3, S, S)``,
    ``input_ids`` / ``attention_mask`` int64 ``(N,)``, ``labels`` int64 ``(S, S)``, ``ref_id``, ``sent_id``
    and ``expression``; the expression choice and the random boxes (``random_boxes=None`` turns them off)
    come from ``default_rng([seed, e, i])``.
    """

    def __init__(self, records: Sequence[RefSegSample], tokenizer: BertTokenizer, image_size: int,
                 max_text_len: int, seed: int = 0, random_boxes: RandomBoxes | None = RandomBoxes(),
                 cache: bool = False):
        super().__init__(records, tokenizer, image_size, max_text_len, seed, cache)
        self.random_boxes = random_boxes
        self.boxed = random_boxes.select(len(self.groups), seed) if random_boxes is not None else frozenset()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of ``epoch`` from now on (call before each epoch, also after resuming)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        row = self.offsets[index] + int(rng.integers(len(self.groups[index])))
        sample = self._load(row)
        image = self.random_boxes(sample["image"], rng) if index in self.boxed else sample["image"]
        return self._item(row, image, sample["mask"])


class RefSegEvalDataset(_RefSegBase):
    """Evaluation items (same keys as :class:`RefSegTrainDataset`), no augmentation.

    ``mode="all"`` (test): every expression of every ref is its own item, in grouped record order.
    ``mode="per_ref"`` (the in-training validation): one item per ref with one expression drawn once
    from ``default_rng([seed, i])``, the same at every evaluation (the official code redraws it at
    every access; a fixed draw keeps successive validations comparable).
    """

    def __init__(self, records: Sequence[RefSegSample], tokenizer: BertTokenizer, image_size: int,
                 max_text_len: int, mode: Literal["per_ref", "all"] = "all", seed: int = 0, cache: bool = False):
        super().__init__(records, tokenizer, image_size, max_text_len, seed, cache)
        if mode == "all":
            self.rows = list(range(len(self.records)))
        elif mode == "per_ref":
            self.rows = [self.offsets[i] + int(np.random.default_rng([seed, i]).integers(len(g)))
                         for i, g in enumerate(self.groups)]
        else:
            raise ValueError(f"mode must be 'per_ref' or 'all', got {mode!r}")
        self.mode = mode

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        sample = self._load(row)
        return self._item(row, sample["image"], sample["mask"])


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: ``pixel_values`` ``(B, 3, S, S)`` float, ``input_ids`` / ``attention_mask``
    ``(B, N)`` int64, ``labels`` ``(B, S, S)`` int64, ``ref_id`` / ``sent_id`` ``(B,)`` int64 and
    ``expression`` (list of B str)."""
    batch: dict[str, Any] = {k: torch.stack([it[k] for it in items])
                             for k in ("pixel_values", "input_ids", "attention_mask", "labels")}
    batch["ref_id"] = torch.tensor([it["ref_id"] for it in items], dtype=torch.long)
    batch["sent_id"] = torch.tensor([it["sent_id"] for it in items], dtype=torch.long)
    batch["expression"] = [it["expression"] for it in items]
    return batch


__all__ = ["IMAGE_MEAN", "IMAGE_STD", "RandomBoxes", "RefSegEvalDataset", "RefSegTrainDataset", "collate",
           "ensure_synthetic", "image_to_tensor", "load_split", "mask_to_tensor"]
