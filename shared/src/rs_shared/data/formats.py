"""The registry of on-disk formats: how ``rs-data`` recognises a dataset directory, validates it, lists its
records and draws one of them.

Each :class:`Format` names its reader module; modules are imported when a format is used, so the CLI
starts fast. Detection runs in :data:`FORMATS` order (RRSIS-D before RefSegRS, GeoPixelD before plain
conversations, whose index files look alike).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import Problems


@dataclass(frozen=True)
class Format:
    name: str
    task: str
    description: str
    module: str
    detect: str  # function names in ``module``
    check: str
    records: Callable[[Any, Path, Problems], dict[str, list]]
    preview: Callable[[Any], Image.Image]

    def _call(self, fn: str, *args: Any) -> Any:
        return getattr(importlib.import_module(self.module), fn)(*args)

    def is_at(self, root: str | os.PathLike) -> bool:
        return bool(self._call(self.detect, Path(root)))

    def validate(self, root: str | os.PathLike, problems: Problems) -> dict[str, Any]:
        """Validate every record; return counts (problems go to ``problems``)."""
        return self._call(self.check, Path(root), problems)

    def read(self, root: str | os.PathLike, problems: Problems | None = None) -> dict[str, list]:
        """Every record of the dataset by split (``"all"`` for formats without splits), in file order."""
        module = importlib.import_module(self.module)
        return self.records(module, Path(root), Problems() if problems is None else problems)


# --- records of each format, by split ------------------------------------------------------------------

def _scene_records(m, root: Path, problems: Problems) -> dict[str, list]:
    files = m.split_files(root)
    out: dict[str, list] = {}
    for f in files:
        split = m.read_split(f, root / "images", problems)
        prefix = "" if len(files) == 1 else f"{f.stem}_"
        out.update({prefix + name: list(split[name]) for name in m.SPLITS})
    return out


def _rrsisd_records(m, root: Path, problems: Problems) -> dict[str, list]:
    return {split: m.read_rrsisd(root, split, problems) for split in m.SPLITS}


def _refsegrs_records(m, root: Path, problems: Problems) -> dict[str, list]:
    return {split: m.read_refsegrs(root, split, problems) for split in m.SPLITS
            if (root / f"output_phrase_{split}.txt").is_file()}


def _gcg_records(m, root: Path, problems: Problems) -> dict[str, list]:
    if (root / m.INDEX_NAME).is_file():
        samples = m.read_geopixeld(root / m.INDEX_NAME, problems)
    else:
        dirs = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
        samples = [s for d in dirs if any(d.glob("*.json")) for s in m.read_tiles(d, problems)]
    out: dict[str, list] = {}
    for sample in samples:  # GeoPixelD keeps each split's tiles in a folder named after it
        out.setdefault(sample.image_path.parent.name, []).append(sample)
    return out


def _dota_records(m, root: Path, problems: Problems) -> dict[str, list]:
    return {"all": m.read_dota(root, m.DOTA_V2_0, problems)}


def _sft_records(m, root: Path, problems: Problems) -> dict[str, list]:
    return {"all": m.read_conversations(root, problems=problems)}


# --- previews: one record drawn as a picture ------------------------------------------------------------

def _scene_preview(sample) -> Image.Image:
    from .. import viz

    return viz.draw_caption(sample.load()["image"], f"{sample.classname} (label {sample.label})")


def _refseg_preview(sample) -> Image.Image:
    from .. import viz

    item = sample.load()
    return viz.draw_caption(viz.draw_masks(item["image"], item["mask"][None]), item["expression"],
                            phrases=[item["expression"]], colors=viz.palette(1))


def _gcg_preview(sample) -> Image.Image:
    from .. import viz

    item = sample.load()
    colors = viz.palette(len(item["phrases"]))
    drawn = viz.draw_masks(item["image"], item["masks"], colors=colors)
    return viz.draw_caption(drawn, item["caption"], phrases=list(item["phrases"]), colors=colors)


def _dota_preview(sample) -> Image.Image:
    from .. import viz

    item = sample.load()
    names = sorted(set(sample.labels))
    table = viz.palette(len(names))
    colors = [table[names.index(label)] for label in sample.labels]
    labels = [f"{label}{' (difficult)' if flag else ''}" for label, flag in zip(sample.labels, sample.difficult)]
    drawn = viz.draw_boxes(item["image"], sample.boxes, labels=labels, colors=colors)
    return viz.draw_caption(drawn, f"{sample.name}: {len(sample.labels)} objects")


def _sft_preview(conversation) -> Image.Image:
    from .. import viz
    from .conversations import TextItem

    item = conversation.load()
    lines = []
    for message in conversation.messages:
        text = " ".join(c.text if isinstance(c, TextItem) else "<image>" for c in message.content)
        lines.append(f"{message.role}: {text}")
    images = item["images"] or [Image.new("RGB", (256, 64), "white")]
    picture = images[0] if len(images) == 1 else viz.compose(images)
    return viz.draw_caption(picture, "\n".join(lines))


FORMATS: tuple[Format, ...] = (
    Format("rrsisd", "refseg", "RRSIS-D (REFER layout: refs(unc).p + instances.json + JPEGImages)",
           "rs_shared.data.refseg", "detect_rrsisd", "check", _rrsisd_records, _refseg_preview),
    Format("refsegrs", "refseg", "RefSegRS (images/, masks/, output_phrase_<split>.txt)",
           "rs_shared.data.refseg", "detect_refsegrs", "check", _refsegrs_records, _refseg_preview),
    Format("geopixeld", "gcg", "GeoPixelD grounded captions (GeoPixelD.json + per-tile JSON + PNG)",
           "rs_shared.data.gcg", "detect", "check", _gcg_records, _gcg_preview),
    Format("dota", "dota", "DOTA (images/ + labelTxt/ oriented boxes)",
           "rs_shared.data.dota", "detect", "check", _dota_records, _dota_preview),
    Format("coop", "scene", "scene classification (images/<class>/ + CoOp split JSON)",
           "rs_shared.data.scene_cls", "detect", "check", _scene_records, _scene_preview),
    Format("llava", "sft", "chat/SFT conversations (LLaVA-style or unified messages, JSON/JSONL)",
           "rs_shared.data.conversations", "detect", "check", _sft_records, _sft_preview),
)
BY_NAME = {f.name: f for f in FORMATS}


def detect_format(root: str | os.PathLike) -> Format | None:
    """The first format whose layout is at ``root``, or ``None``."""
    return next((f for f in FORMATS if f.is_at(root)), None)
