"""edgert: an on-device inference runtime with a hard per-frame deadline."""

__version__ = "0.1.0"
