"""Converters from a researcher's own data — a folder of images plus one annotation file — into the on-disk formats
the model packages read (``rs-data convert``):

* :func:`labels_to_scene` — ``image,label`` table → CoOp scene classification layout (BiMoRS)
* :func:`masks_to_refsegrs` — images, object masks and an ``image,mask,expression`` table → RefSegRS (ICIPNet)
* :func:`captions_to_geopixeld` — captions whose phrases carry polygons (JSON) → GeoPixelD (CLV-Net)
* :func:`qa_to_sft` — ``image,question,answer`` table → LLaVA chat/SFT conversations (RSCoVLM)

Tables are CSV/TSV or JSON (:mod:`.table`); every error names the file, the row and what was expected.
"""

from .gcg import captions_to_geopixeld
from .refseg import masks_to_refsegrs
from .scene import labels_to_scene
from .sft import qa_to_sft

__all__ = ["captions_to_geopixeld", "labels_to_scene", "masks_to_refsegrs", "qa_to_sft"]
