"""The SFT data mixture: a recipe of weighted sources → rendered training samples (spec §2.1, §2.2, §2.5, §3.3, §3.4).

A **recipe** is a list of source names with an optional weight suffix (the official ``data.json`` syntax):
``name*k`` repeats the source's records ``k`` times (exact integer copies), ``name%p`` keeps a random ``p`` %
subset drawn with ``random.Random(seed)``, a bare ``name`` takes every record once. The weighted sources are
concatenated; the training loop shuffles them globally (no per-batch task balancing, §2.1).

Sources are conversation files read by :func:`rs_shared.data.conversations.read_conversations` (LLaVA-style
or unified records). The embedded default is the synthetic SFT set of ``rs_shared``
(:func:`ensure_synthetic_sft`: counting / presence / location / scene-class / description QA, DOTA-class
detection as quadrilaterals and referring-expression grounding as horizontal boxes).

:class:`SFTDataset` turns a record into a :class:`~rscovlm.render.RenderedSample`:

- box coordinates written in a record's text (records with a ``coords`` frame) are rewritten into integer
  pixels of the resized frame the ViT sees (§3.3): every run of 4 or 8 comma-separated numbers, e.g.
  ``12,30,40,60`` or ``[12, 30, 40, 60]``;
- records with a ``coords`` frame (detection and grounding) are randomly resized with probability
  ``random_resize_prob`` (§3.4); records without boxes never are (the official resize is a no-op for
  them, pitfall §9.1). Evaluation datasets use ``random_resize_prob=0``;
- samples longer than the renderer's ``max_length`` are truncated (§1).

:class:`LengthGroupedBatches` groups samples of similar length into micro-batches (one dataset item per
micro-batch), for the shared training loop which owns the (shuffled) order of items.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rs_shared.data.common import image_size
from rs_shared.data.conversations import Conversation, TextItem, read_conversations
from rs_shared.data.geometry import FRAME_SCALE
from rs_shared.data.synthetic.export import ensure_synthetic

from .collate import LengthGroupedBatchSampler
from .render import ChatRenderer, RenderedSample
from .resize import ResizedFrame, random_resize

_ENTRY = re.compile(r"^(?P<name>[^*%]+?)(?:\*(?P<repeat>[0-9]+)|%(?P<percent>[0-9]+(?:\.[0-9]+)?))?$")
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_NUMBER_RUN = re.compile(rf"(?<![0-9.\-]){_NUMBER}(?:[ \t]*,[ \t]*{_NUMBER})+(?![0-9.])")
SYNTHETIC_SOURCE = "synthetic"


# --- the recipe (§2.1, §2.5) ------------------------------------------------------------------------------

@dataclass(frozen=True)
class MixtureEntry:
    """One recipe entry: source ``name`` repeated ``repeat`` times, or subsampled to ``percent`` %."""

    name: str
    repeat: int = 1
    percent: float = 100.0

    def apply(self, records: Sequence[Any], rng: random.Random) -> list[Any]:
        """The weighted records: ``repeat`` exact copies, or ``int(len · percent / 100)`` drawn without
        replacement by ``rng`` (kept in their original order)."""
        if self.percent < 100.0:
            keep = sorted(rng.sample(range(len(records)), int(len(records) * self.percent / 100)))
            return [records[i] for i in keep]
        return list(records) * self.repeat


def parse_entry(text: str) -> MixtureEntry:
    """``"dota*25"`` → repeat 25, ``"llava%10"`` → 10 %, ``"refgeo"`` → once. Raises ``ValueError`` on
    anything else (two suffixes, ``*0``, a percentage outside (0, 100])."""
    match = _ENTRY.match(text.strip())
    if not match:
        raise ValueError(f"mixture entry {text!r}: expected NAME, NAME*K (repeat K times) or NAME%P (keep P %)")
    name = match["name"].strip()
    if match["repeat"] is not None:
        repeat = int(match["repeat"])
        if repeat < 1:
            raise ValueError(f"mixture entry {text!r}: the repeat count must be at least 1")
        return MixtureEntry(name, repeat=repeat)
    if match["percent"] is not None:
        percent = float(match["percent"])
        if not 0 < percent <= 100:
            raise ValueError(f"mixture entry {text!r}: the percentage must be in (0, 100]")
        return MixtureEntry(name, percent=percent)
    return MixtureEntry(name)


def build_mixture(sources: Mapping[str, Sequence[Any]], recipe: Sequence[str], seed: int = 42) -> list[Any]:
    """Concatenate the weighted sources of ``recipe`` in recipe order. One ``random.Random(seed)`` draws
    every ``%p`` subset in turn (the official sampler, §2.5). Raises ``KeyError`` naming an unknown source."""
    if not recipe:
        raise ValueError("the mixture recipe is empty")
    rng = random.Random(seed)
    mixed: list[Any] = []
    for text in recipe:
        entry = parse_entry(text)
        if entry.name not in sources:
            raise KeyError(f"mixture entry {text!r}: unknown source {entry.name!r}; "
                           f"known sources: {', '.join(sorted(sources)) or 'none'}")
        mixed += entry.apply(sources[entry.name], rng)
    return mixed


def parse_sources(specs: Sequence[str]) -> dict[str, Path]:
    """``["name=path", …]`` → ``{name: path}``; a name may appear once."""
    out: dict[str, Path] = {}
    for spec in specs:
        name, eq, path = spec.partition("=")
        if not eq or not name.strip() or not path.strip():
            raise ValueError(f"data source {spec!r}: expected NAME=PATH (a conversation JSON/JSONL file or directory)")
        if name.strip() in out:
            raise ValueError(f"data source {name.strip()!r} is given twice")
        out[name.strip()] = Path(path.strip())
    return out


def load_sources(paths: Mapping[str, str | os.PathLike]) -> dict[str, list[Conversation]]:
    """Read each source's conversations (strictly: a broken record raises, naming file and record)."""
    loaded = {}
    for name, path in paths.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"data source {name!r}: {path} does not exist")
        loaded[name] = read_conversations(path)
        if not loaded[name]:
            raise ValueError(f"data source {name!r}: {path} holds no conversations")
    return loaded


def ensure_synthetic_sft(directory: str | os.PathLike, n: int, seed: int = 0) -> Path:
    """The synthetic SFT set (``rs_shared`` ``synthesize("sft", …)``, 224² scenes) in ``directory``,
    generated when absent; returns the path of its ``sft.json``. An existing set generated with another
    ``n`` or ``seed`` is an error (:func:`rs_shared.data.synthetic.export.ensure_synthetic`)."""
    return ensure_synthetic("sft", directory, n, seed=seed) / "sft.json"


# --- scalable boxes in text (§3.3) ------------------------------------------------------------------------

def rescale_text_boxes(text: str, frame: ResizedFrame, coords: str) -> str:
    """Rewrite every run of 4 or 8 comma-separated numbers in ``text`` (boxes ``x1,y1,x2,y2`` or
    quadrilaterals, in the record's ``coords`` frame) as integer pixels of ``frame.resized``: ``pixel``
    coordinates by :meth:`ResizedFrame.to_resized`, ``normK`` ones as ``int(v · W_r / K)`` (§2.4). The
    separator (``,`` or ``, ``) is kept; runs of other lengths are left alone."""
    if coords != "pixel" and coords not in FRAME_SCALE:
        raise ValueError(f"unknown coordinate frame {coords!r}")

    def rewrite(match: re.Match) -> str:
        values = [float(v) for v in re.split(r"[ \t]*,[ \t]*", match.group(0))]
        if len(values) not in (4, 8):
            return match.group(0)
        if coords == "pixel":
            scaled = frame.to_resized(values)
        else:
            k = FRAME_SCALE[coords]
            w, h = frame.resized
            scaled = [int(v * (w if j % 2 == 0 else h) / k) for j, v in enumerate(values)]
        separator = ", " if ", " in match.group(0) else ","
        return separator.join(str(int(v)) for v in scaled)

    return _NUMBER_RUN.sub(rewrite, text)


# --- datasets ---------------------------------------------------------------------------------------------

class SFTDataset(torch.utils.data.Dataset):
    """Conversations → :class:`RenderedSample` (see the module docstring).

    Item ``i`` of epoch ``e`` draws its random resize from ``numpy.random.default_rng([seed, e, i])``, so a
    sample does not depend on the order of access or on the process that loads it. ``meta`` of a sample
    holds ``id``, ``source`` and ``frames`` (each image's original and resized size)."""

    def __init__(self, records: Sequence[Conversation], renderer: ChatRenderer, random_resize_prob: float = 0.0,
                 area_as_linear: bool = True, seed: int = 0):
        if not 0 <= random_resize_prob <= 1:
            raise ValueError(f"random_resize_prob must be in [0, 1], got {random_resize_prob}")
        self.records = list(records)
        self.renderer = renderer
        self.random_resize_prob = random_resize_prob
        self.area_as_linear = area_as_linear
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def messages(self, index: int, images: Sequence[np.ndarray] | None = None) -> list[dict[str, Any]]:
        """The unified messages of record ``index`` as rendered: boxes rewritten into the resized frame and
        the chosen frame pinned on each image item (``resized_width`` / ``resized_height``)."""
        record = self.records[index]
        loaded = record.load() if images is None else {"messages": _messages(record), "images": images}
        sizes = [(a.shape[1], a.shape[0]) for a in loaded["images"]]
        settings = self.renderer.image_settings
        rng = np.random.default_rng([self.seed, self.epoch, index])
        frames = []
        for options in _image_items(loaded["messages"]):
            width, height = sizes[options["index"]]
            if record.coords is not None and rng.random() < self.random_resize_prob:  # §3.4
                frame = random_resize(width, height, rng, settings.min_pixels, settings.max_pixels,
                                      self.area_as_linear, settings.factor)
            else:
                frame = settings.frame(width, height, {k: v for k, v in options.items() if k not in ("type", "index")})
            options.update(resized_width=frame.resized[0], resized_height=frame.resized[1])
            frames.append(frame)
        if record.coords is not None:
            if not frames:
                raise ValueError(f"record {record.id}: has coords={record.coords!r} but no image")
            for message in loaded["messages"]:
                message["content"] = [
                    {**item, "text": rescale_text_boxes(item["text"], frames[0], record.coords)}
                    if item["type"] == "text" else item for item in message["content"]]
        return loaded["messages"]

    def __getitem__(self, index: int) -> RenderedSample:
        record = self.records[index]
        loaded = record.load()
        try:
            sample = self.renderer.render(self.messages(index, loaded["images"]), loaded["images"])
        except ValueError as e:
            raise ValueError(f"record {record.id} (source {record.source}): {e}") from None
        sample.meta = {"id": record.id, "source": record.source, "index": index}
        return sample

    def estimated_lengths(self) -> list[int]:
        """Token count of each record without random resizing, from the image headers and the text
        (cheap: no pixels are decoded; exact unless images carry per-item size options), for length grouping."""
        settings = self.renderer.image_settings
        lengths = []
        tokenizer = self.renderer.tokenizer
        for record in self.records:
            counts = [settings.frame(*image_size(p, record.id)).num_image_tokens(settings.patch_size,
                                                                                 settings.merge_size)
                      for p in record.images]
            pieces = self.renderer.pieces(_messages(record), counts)
            lengths.append(sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text, _ in pieces))
        max_length = self.renderer.max_length
        return [min(n, max_length) if max_length else n for n in lengths]


class LengthGroupedBatches(torch.utils.data.Dataset):
    """Micro-batches of ``batch_size`` samples of similar length (:class:`LengthGroupedBatchSampler`),
    regrouped each epoch; item ``k`` is the list of samples of batch ``k``. Train with a loop batch size
    of 1 and :func:`collate_grouped`."""

    def __init__(self, dataset: SFTDataset, batch_size: int, seed: int = 0, lengths: Sequence[int] | None = None):
        self.dataset = dataset
        self.sampler = LengthGroupedBatchSampler(lengths or dataset.estimated_lengths(), batch_size, seed=seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.batches = list(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, index: int) -> list[RenderedSample]:
        return [self.dataset[i] for i in self.batches[index]]


def _messages(record: Conversation) -> list[dict[str, Any]]:
    """A record's unified messages without reading its images (as ``Conversation.load()`` gives them)."""
    out = []
    for message in record.messages:
        content = [{"type": "text", "text": item.text} if isinstance(item, TextItem)
                   else {"type": "image", "index": item.index, **item.options} for item in message.content]
        out.append({"role": message.role, "content": content})
    return out


def _image_items(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The image items of ``messages`` in order (the dicts themselves, so options can be pinned on them)."""
    return [item for m in messages if isinstance(m["content"], list) for item in m["content"] if item["type"] == "image"]


__all__ = ["SYNTHETIC_SOURCE", "LengthGroupedBatches", "MixtureEntry", "SFTDataset", "build_mixture",
           "ensure_synthetic_sft", "load_sources", "parse_entry", "parse_sources", "rescale_text_boxes"]
