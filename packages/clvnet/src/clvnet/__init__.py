"""rs-clvnet: model code arrives with its own issue."""

__version__ = "0.1.0"
