"""rs-clvnet: CLV-Net box-prompted grounded captioning with masks for remote-sensing images."""

from .configuration import CLVNetConfig
from .modeling import CLVNetModel, CLVNetOutput, GroundedPrediction

__version__ = "0.1.0"

__all__ = ["CLVNetConfig", "CLVNetModel", "CLVNetOutput", "GroundedPrediction", "__version__"]
