"""voxrelay: real-time voice conversations between any device and an AI voice model."""

__version__ = "0.1.0"
