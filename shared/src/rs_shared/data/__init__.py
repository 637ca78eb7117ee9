"""Remote-sensing datasets in their official on-disk formats, and synthetic scenes written in them.

Readers (typed records + a torch ``Dataset`` + ``to_hf_dataset`` each):

* :mod:`.scene_cls` — folder-per-class images + CoOp split JSON; Dassl few-shot; base/new classes
* :mod:`.refseg` — RRSIS-D (REFER pickle + COCO JSON) and RefSegRS referring segmentation
* :mod:`.gcg` — GeoPixelD grounded captions (``<p> phrase </p> [SEG]``) with polygon/RLE masks
* :mod:`.dota` — DOTA ``labelTxt`` oriented boxes; tiling of large images
* :mod:`.conversations` — chat/SFT records (LLaVA-style or unified messages) with image references

Shared pieces: :mod:`.geometry` (box formats, frames and angle conventions, made explicit),
:mod:`.masks`, :mod:`.errors`, :mod:`.formats` (detection registry for ``rs-data``), :mod:`.convert`,
:mod:`.ingest` (your own images + one annotation table → the formats above),
:mod:`.synthetic` (procedural aerial scenes, the embedded default of every CLI).
"""

from .errors import DataFormatError, Problems
from .geometry import Boxes

__all__ = ["Boxes", "DataFormatError", "Problems"]
