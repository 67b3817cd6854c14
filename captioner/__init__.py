"""captioner: batch, offline, multilingual image captioning over object stores with Ray Data."""

__version__ = "0.1.0"
