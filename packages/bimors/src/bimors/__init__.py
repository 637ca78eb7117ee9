"""rs-bimors: BiMoRS, caption-conditioned prompt learning for CLIP on remote-sensing scene classification."""

from .configuration import BiMoRSConfig
from .modeling import BiMoRSModel, BiMoRSOutput

__version__ = "0.1.0"

__all__ = ["BiMoRSConfig", "BiMoRSModel", "BiMoRSOutput", "__version__"]
