"""Batching rendered samples: padding and length-grouped batches (spec §2.3, §8).

The model receives ``mm_token_type_ids`` and builds the 3-D mRoPE positions itself
(``Qwen2_5_VLModel.get_rope_index``, which skips padding through the attention mask), so no position ids are
precomputed here. Packing is off in the paper recipe and not implemented.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .render import IGNORE_INDEX, RenderedSample


def collate(samples: Sequence[RenderedSample], pad_id: int, padding_side: str = "right",
            pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """Stack samples into model inputs, ``B`` samples padded to length ``L``.

    Returns ``input_ids`` ``(B, L)`` padded with ``pad_id``, ``attention_mask`` ``(B, L)`` (1 on tokens, 0 on
    padding), ``labels`` ``(B, L)`` padded with ``-100``, ``mm_token_type_ids`` ``(B, L)`` padded with 0, and,
    when any sample has images, ``pixel_values`` ``(ΣP, 1176)`` and ``image_grid_thw`` ``(Σn_images, 3)``
    concatenated in sample order. ``padding_side="left"`` is for batched generation.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    length = max(len(s) for s in samples)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    fills = {"input_ids": pad_id, "labels": IGNORE_INDEX, "mm_token_type_ids": 0}
    batch = {key: torch.full((len(samples), length), fill, dtype=torch.long) for key, fill in fills.items()}
    batch["attention_mask"] = torch.zeros((len(samples), length), dtype=torch.long)
    for row, sample in enumerate(samples):
        n = len(sample)
        span = slice(0, n) if padding_side == "right" else slice(length - n, length)
        batch["input_ids"][row, span] = sample.input_ids
        batch["labels"][row, span] = sample.labels
        batch["mm_token_type_ids"][row, span] = sample.mm_token_type_ids
        batch["attention_mask"][row, span] = 1
    with_images = [s for s in samples if s.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([s.pixel_values for s in with_images])
        batch["image_grid_thw"] = torch.cat([s.image_grid_thw for s in with_images])
    return batch


def length_grouped_indices(lengths: Sequence[int], batch_size: int, generator: torch.Generator | None = None,
                           mega_batch_mult: int = 50) -> list[int]:
    """A random permutation in which neighbours have similar lengths (less padding per batch).

    The shuffled indices are cut into mega-batches of ``mega_batch_mult · batch_size``, each sorted by
    decreasing length; consecutive ``batch_size`` slices then form the batches. The longest sample goes to
    the first batch so an out-of-memory error shows up at once.
    """
    if batch_size < 1 or mega_batch_mult < 1:
        raise ValueError(f"batch_size and mega_batch_mult must be positive, got {batch_size}, {mega_batch_mult}")
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = batch_size * mega_batch_mult
    megas = [sorted(order[i:i + size], key=lambda k: -lengths[k]) for i in range(0, len(order), size)]
    if megas:
        longest = max(range(len(megas)), key=lambda m: lengths[megas[m][0]])
        megas[0][0], megas[longest][0] = megas[longest][0], megas[0][0]
    return [i for mega in megas for i in mega]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices with similar lengths, reshuffled each epoch (``set_epoch``) from ``seed``; for
    ``DataLoader(dataset, batch_sampler=…)``. The last batch may be short unless ``drop_last``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, drop_last: bool = False,
                 mega_batch_mult: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = length_grouped_indices(self.lengths, self.batch_size, generator, self.mega_batch_mult)
        for i in range(0, len(order), self.batch_size):
            batch = order[i:i + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


__all__ = ["LengthGroupedBatchSampler", "collate", "length_grouped_indices"]
