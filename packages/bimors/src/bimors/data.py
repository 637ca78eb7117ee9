"""BiMoRS inputs: CLIP's train/test image transforms, caption embeddings from the cache, and batching (spec §2).

:class:`BiMoRSDataset` turns a list of :class:`rs_shared.data.scene_cls.SceneSample` into items
``{"pixel_values" (3, S, S), "caption_embeds" (D,), "labels" ()}``; :func:`collate` stacks them into the
``BiMoRSModel.forward`` arguments. The caption embeddings of the whole list are looked up once, when the dataset is
built, so a missing caption fails at once with the command that fills the cache.

* train transform — RandomResizedCrop to the CLIP image size (scale 0.08–1, ratio 3/4–4/3, bicubic), horizontal
  flip p = 0.5, to tensor, CLIP mean/std;
* eval (test) transform — bicubic resize of the shorter side to S, centre crop S × S, to tensor, CLIP mean/std.

Augmentation draws from torch's global RNG; with ``num_workers=0`` that is the training process's RNG, which
``rs_shared.training`` checkpoints, so a resumed run continues with the same crops.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from rs_shared.data.common import read_image
from rs_shared.data.scene_cls import SceneSample
from torchvision import transforms as T

from .caption import CaptionCache, CaptionCacheError
from .datasets import SYNTHETIC, SceneDataset, is_dataset_path
from .protocols import NUM_SHOTS, Subsample, evaluation_split, training_split

CLIP_MEAN, CLIP_STD = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def train_transform(image_size: int) -> T.Compose:
    """PIL image → ``(3, image_size, image_size)`` float tensor with CLIP's training augmentation (spec §2)."""
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(p=0.5),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


def eval_transform(image_size: int) -> T.Compose:
    """PIL image → ``(3, image_size, image_size)``: bicubic shorter-side resize, centre crop, CLIP mean/std."""
    return T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


class BiMoRSDataset(torch.utils.data.Dataset):
    """Images of ``samples`` with their labels and caption embeddings.

    ``captions`` is the :class:`~bimors.caption.CaptionCache` of these images; ``None`` leaves ``caption_embeds`` out
    of the items (zero-shot CLIP needs no caption). ``mode`` picks :func:`train_transform` or :func:`eval_transform`
    at ``image_size``. ``name`` (e.g. ``"RSICD base test"``) prefixes a missing-caption error.
    """

    def __init__(self, samples: Sequence[SceneSample], classnames: Sequence[str], image_size: int,
                 mode: Literal["train", "eval"], captions: CaptionCache | None = None, name: str = ""):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.samples, self.classnames = tuple(samples), tuple(classnames)
        if not self.samples:
            raise ValueError(f"{name or 'dataset'}: no images")
        bad = [s for s in self.samples if not 0 <= s.label < len(self.classnames)]
        if bad:
            raise ValueError(f"{name or 'dataset'}: {bad[0].impath_rel} has label {bad[0].label}, outside the "
                             f"{len(self.classnames)} classes")
        self.transform = (train_transform if mode == "train" else eval_transform)(image_size)
        self.labels = torch.tensor([s.label for s in self.samples], dtype=torch.long)
        self.caption_embeds = None
        if captions is not None:
            try:
                self.caption_embeds = captions.lookup_many([s.path for s in self.samples])  # (N, D)
            except CaptionCacheError as error:
                raise CaptionCacheError(f"{name}: {error}" if name else str(error)) from None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        item = {"pixel_values": self.transform(read_image(sample.path, record=sample.impath_rel)),
                "labels": self.labels[index]}
        if self.caption_embeds is not None:
            item["caption_embeds"] = self.caption_embeds[index]
        return item


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into ``pixel_values`` ``(B, 3, S, S)``, ``labels`` ``(B,)`` and ``caption_embeds`` ``(B, D)``."""
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def open_caption_cache(dataset: SceneDataset, cache_dir: str | os.PathLike | None,
                       caption_dim: int | None = None) -> CaptionCache:
    """The caption cache of ``dataset``: ``cache_dir`` (built by ``bimors-caption``), or for the synthetic dataset
    without one, ``<dataset dir>/captions-d<caption_dim>`` filled from the generator's own captions embedded by a tiny
    synthetic BERT of width ``caption_dim`` (the model's ``config.caption_dim``; no BLIP-2 needed)."""
    if cache_dir:
        return CaptionCache(cache_dir)
    if dataset.name == SYNTHETIC:
        from .synthetic_captions import SYNTHETIC_BERT_HIDDEN, ensure_synthetic_caption_cache

        dim = caption_dim or SYNTHETIC_BERT_HIDDEN
        cache = dataset.directory / f"captions-d{dim}"
        return ensure_synthetic_caption_cache(dataset.directory, cache, hidden_size=dim)
    where = f"--dataset {dataset.name}" + ("" if is_dataset_path(dataset.name) else f" --root {dataset.directory.parent}")
    raise CaptionCacheError(
        f"{dataset.name}: no caption cache given. BiMoRS reads one BLIP-2 caption embedding per image: build the "
        f"cache once with bimors-caption --cache DIR --captioner <local BLIP-2 dir> --bert <local BERT dir> {where}, "
        f"then pass it (data.captions / --captions DIR). Without BLIP-2, a pipeline check only: bimors-caption "
        f"--cache DIR --fixed-caption 'a satellite image.' --synthetic-bert {caption_dim or 'D'} {where}")


def protocol_dataset(dataset: SceneDataset, part: Literal["train", "test"], subsample: Subsample, seed: int,
                     image_size: int, captions: CaptionCache | None, num_shots: int = NUM_SHOTS,
                     shots_dir: str | os.PathLike | None = None) -> BiMoRSDataset:
    """The images a protocol step reads (spec §2, §3.7): ``"train"`` — the seed's few-shot train images of the
    ``subsample`` classes with the train transform; ``"test"`` — the full test split of those classes (the classes
    the base/new rule picks from the seed's shots) with the eval transform. Labels index ``.classnames``."""
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    make_split = training_split if part == "train" else evaluation_split
    split = make_split(dataset, subsample, seed, num_shots, Path(shots_dir) if shots_dir else None)
    return BiMoRSDataset(split[part], split.classnames, image_size, "train" if part == "train" else "eval", captions,
                         name=f"{dataset.name} ({subsample} classes, {part})")


__all__ = ["CLIP_MEAN", "CLIP_STD", "BiMoRSDataset", "collate", "eval_transform", "open_caption_cache",
           "protocol_dataset", "train_transform"]
