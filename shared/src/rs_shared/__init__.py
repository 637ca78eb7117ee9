"""rs-shared: the shared layer of rs-vlm."""

__version__ = "0.1.0"
