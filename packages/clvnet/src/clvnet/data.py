"""CLV-Net datasets over GeoPixelD tiles (§3, §8) and the embedded synthetic dataset.

Records come from :class:`rs_shared.data.gcg.GCGDataset` (a ``GeoPixelD.json`` index, a directory holding it,
or a directory of per-tile files); an index can be restricted to one split (the directory of its tiles,
``train``/``test``). Each item is a :class:`clvnet.processing.CLVNetProcessor` sample of the tile with the
CLV-Net query (the file's instruction is kept as ``instruction``, for reference), plus the tile's ``id``,
``name``, ``phrases``, ``caption`` (cleaned) and ``markup`` (§3 "CLV-Net sample" [RECON]).

What a box gets as its answer follows the processor's ``box_targets`` (§8 open decision):

* ``"full"`` (GeoPixelD's only option): the tile's holistic caption and all its masks. Training draws the box by
  the §8 rule (:func:`clvnet.processing.random_box`); evaluation uses the union box of the tile's masks.
* ``"in_box"``: a box-conditioned caption of the tile (its ``regions``, see :mod:`rs_shared.data.gcg`; the
  synthetic generator writes them): only the phrases inside the region and their masks, prompted with the
  region's box. Training draws one region per item; evaluation uses region 0.

Random draws come from ``numpy.random.default_rng([seed, epoch, index])``, so an item is the same in whichever
worker loads it and an epoch is reproducible (call :meth:`GCGTrainDataset.set_epoch`). With ``wrong_box``
evaluation prompts with the *next* tile's box instead (cyclically; its union box or region-0 box), scaled to this
image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rs_shared.data.gcg import GCGDataset, GCGSample
from rs_shared.data.geometry import Boxes
from rs_shared.data.synthetic.export import ensure_synthetic

from .processing import CLVNetProcessor

SYNTHETIC_SIZE = 128  # side of the synthetic GCG tiles (the generator's default)
SYNTHETIC_REGIONS = 2  # box-conditioned captions per tile of the synthetic sets (tiny-synthetic, clvnet-eval)
RECORD_KEYS = ("id", "name", "phrases", "caption", "markup", "instruction")


def ensure_synthetic_gcg(out: str | os.PathLike, n: int = 40, seed: int = 0, size: int = SYNTHETIC_SIZE,
                         regions: int = 0) -> Path:
    """The embedded synthetic GeoPixelD dataset (``GeoPixelD.json`` + ``train/`` and ``test/`` tiles, 80/20) in
    ``out``, with ``regions`` box-conditioned captions per tile (needed by ``box_targets="in_box"``): generated when
    ``out`` is absent or empty, otherwise checked to be the same generation."""
    return ensure_synthetic("gcg", out, n, seed=seed, size=size, regions=regions)


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
        if self.in_box:
            bare = next((r for r in self.records if not r.regions), None)
            if bare is not None:
                raise ValueError(f"{path}: tile {bare.name} (id {bare.id}) has no box-conditioned captions, which "
                                 "box_targets 'in_box' needs ('regions' in the per-tile JSON, as the synthetic "
                                 "generator writes them with regions > 0); GeoPixelD has none, so use box_targets "
                                 "'full'")

    @property
    def in_box(self) -> bool:
        return self.processor.box_targets == "in_box"

    def __len__(self) -> int:
        return len(self.records)

    def _item(self, index: int, box: np.ndarray | None, answer: bool, region: int = 0, **kwargs) -> dict[str, Any]:
        """One processed item; with ``in_box`` the tile seen through its ``region`` (whose box is the prompt unless
        ``box`` is given)."""
        record = self.records[index]
        if self.in_box:
            record = record.region(region)
        tile = record.load()
        box = tile["box"] if box is None else box
        sample = self.processor(tile["image"], box, answer=tile["markup"] if answer else None, masks=tile["masks"],
                                record=f"tile {record.name} (id {record.id})", **kwargs)
        sample.update(id=record.id, name=record.name, phrases=tile["phrases"], caption=tile["caption"],
                      markup=tile["markup"], instruction=tile["instruction"])
        return sample


class GCGTrainDataset(_TileDataset):
    """Training items: the grounded caption as the answer (labels), the masks and the box: a §8 random box
    (``full``) or a random region's (``in_box``)."""

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
        region = int(rng.integers(len(self.records[index].regions))) if self.in_box else 0
        return self._item(index, None, answer=True, region=region, train=True, rng=rng)


class GCGEvalDataset(_TileDataset):
    """Evaluation items: the generation prompt (or, with ``with_answer``, the teacher-forced caption and
    labels), the ground-truth masks and the box: the union box of the tile's masks (``full``) or its region 0's box
    (``in_box``) — or, with ``wrong_box``, the next tile's box of that kind (in order, cyclically), scaled from that
    tile's size to this one's."""

    def __init__(self, path: str | os.PathLike, processor: CLVNetProcessor, split: str | None = None,
                 wrong_box: bool = False, with_answer: bool = False):
        super().__init__(path, processor, split)
        if wrong_box and len(self.records) < 2:
            raise ValueError("wrong_box needs at least two tiles (the box comes from another tile)")
        self.wrong_box = wrong_box
        self.with_answer = with_answer

    def box(self, index: int) -> np.ndarray | None:
        """The box prompt of item ``index`` in original pixels (``(4,)``), or ``None`` for its own box (the region's,
        or the union box of its masks derived by the processor)."""
        if not self.wrong_box:
            return None
        other = self.records[(index + 1) % len(self.records)]
        if self.in_box:
            box = Boxes(np.array([other.region(0).box]), "xyxy", "pixel", other.image_size)
            return box.resize(self.records[index].image_size).data[0]
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


__all__ = ["GCGEvalDataset", "GCGTrainDataset", "RECORD_KEYS", "SYNTHETIC_REGIONS", "SYNTHETIC_SIZE",
           "collate_with_records", "ensure_synthetic_gcg", "load_gcg_records"]
