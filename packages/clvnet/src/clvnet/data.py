"""CLV-Net datasets over GeoPixelD tiles (§3, §8) and the embedded synthetic dataset.

Records come from :class:`rs_shared.data.gcg.GCGDataset` (a ``GeoPixelD.json`` index, a directory holding it,
or a directory of per-tile files); an index can be restricted to one split (the directory of its tiles,
``train``/``test``). Each item is a :class:`clvnet.processing.CLVNetProcessor` sample of the tile with the
CLV-Net query (the file's instruction is kept as ``instruction``, for reference), plus the tile's ``id``,
``name``, ``phrases``, ``caption`` (cleaned) and ``markup`` (§3 "CLV-Net sample" [RECON]).

Box prompts follow §8: training draws :func:`clvnet.processing.random_box` from
``numpy.random.default_rng([seed, epoch, index])``, so an item is the same in whichever worker loads it and an
epoch is reproducible (call :meth:`GCGTrainDataset.set_epoch`); evaluation uses the union box of the tile's
masks, or — with ``wrong_box`` — the union box of the *next* tile's masks (cyclically), scaled to this image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rs_shared.data.gcg import GCGDataset, GCGSample
from rs_shared.data.synthetic.export import ensure_synthetic

from .processing import CLVNetProcessor

SYNTHETIC_SIZE = 128  # side of the synthetic GCG tiles (the generator's default)
RECORD_KEYS = ("id", "name", "phrases", "caption", "markup", "instruction")


def ensure_synthetic_gcg(out: str | os.PathLike, n: int = 40, seed: int = 0,
                         size: int = SYNTHETIC_SIZE) -> Path:
    """The embedded synthetic GeoPixelD dataset (``GeoPixelD.json`` + ``train/`` and ``test/`` tiles, 80/20) in
    ``out``: generated when ``out`` is absent or empty, otherwise checked to be the same generation."""
    return ensure_synthetic("gcg", out, n, seed=seed, size=size)


def load_gcg_records(path: str | os.PathLike, split: str | None = None) -> list[GCGSample]:
    """The validated tiles at ``path`` (see module docstring); with ``split``, only the tiles whose image lies in
    a directory of that name. Raises ``ValueError`` when nothing is left."""
    records = GCGDataset(path).records
    if split is not None:
        records = [r for r in records if r.image_path.parent.name == split]
    if not records:
        raise ValueError(f"{path}: no GeoPixelD tiles{'' if split is None else f' in split {split!r}'}")
    return records


class _TileDataset(torch.utils.data.Dataset):
    def __init__(self, path: str | os.PathLike, processor: CLVNetProcessor, split: str | None = None):
        self.records = load_gcg_records(path, split)
        self.processor = processor

    def __len__(self) -> int:
        return len(self.records)

    def _item(self, index: int, box: np.ndarray | None, answer: bool, **kwargs) -> dict[str, Any]:
        record = self.records[index]
        tile = record.load()
        sample = self.processor(tile["image"], box, answer=tile["markup"] if answer else None, masks=tile["masks"],
                                record=f"tile {record.name} (id {record.id})", **kwargs)
        sample.update(id=record.id, name=record.name, phrases=tile["phrases"], caption=tile["caption"],
                      markup=tile["markup"], instruction=tile["instruction"])
        return sample


class GCGTrainDataset(_TileDataset):
    """Training items: the grounded caption as the answer (labels), the masks and a §8 random box."""

    def __init__(self, path: str | os.PathLike, processor: CLVNetProcessor, split: str | None = None,
                 seed: int = 0):
        super().__init__(path, processor, split)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the box draws of ``epoch`` (call at the start of every epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self._item(index, None, answer=True, train=True, rng=rng)


class GCGEvalDataset(_TileDataset):
    """Evaluation items: the generation prompt (or, with ``with_answer``, the teacher-forced caption and
    labels), the ground-truth masks and the union box of the tile's masks — or, with ``wrong_box``, of the next
    tile's (in order, cyclically), scaled from that tile's size to this one's."""

    def __init__(self, path: str | os.PathLike, processor: CLVNetProcessor, split: str | None = None,
                 wrong_box: bool = False, with_answer: bool = False):
        super().__init__(path, processor, split)
        if wrong_box and len(self.records) < 2:
            raise ValueError("wrong_box needs at least two tiles (the box comes from another tile)")
        self.wrong_box = wrong_box
        self.with_answer = with_answer

    def box(self, index: int) -> np.ndarray | None:
        """The box prompt of item ``index`` in original pixels (``(4,)``), or ``None`` for the union box of its
        own masks (derived by the processor)."""
        if not self.wrong_box:
            return None
        other = self.records[(index + 1) % len(self.records)]
        union = other.union_box()
        if not len(union):
            return np.array([0.0, 0.0, *self.records[index].image_size])
        return union.resize(self.records[index].image_size).data[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._item(index, self.box(index), answer=self.with_answer, train=False)


def collate_with_records(processor: CLVNetProcessor,
                         items: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(batch, records)``: :meth:`CLVNetProcessor.collate` of ``items`` and, per item, its
    :data:`RECORD_KEYS` (tile id, name, phrases, cleaned caption, markup, original instruction)."""
    return processor.collate(items), [{k: item[k] for k in RECORD_KEYS} for item in items]


__all__ = ["GCGEvalDataset", "GCGTrainDataset", "RECORD_KEYS", "SYNTHETIC_SIZE", "collate_with_records",
           "ensure_synthetic_gcg", "load_gcg_records"]
