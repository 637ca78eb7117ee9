"""rs-icipnet: ICIPNet (image-conditioned instance prompts + bilateral information fusion) for referring
remote-sensing image segmentation, and its RMSIN baseline."""

from .configuration import IcipNetConfig
from .modeling import IcipNetModel, IcipNetOutput

__version__ = "0.1.0"

__all__ = ["IcipNetConfig", "IcipNetModel", "IcipNetOutput", "__version__"]
