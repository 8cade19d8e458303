"""mimkit: masked image modeling with attention-guided masks."""

__version__ = "0.1.0"
