"""A small client for voxrelay's HTTP API, shared by the CLI, tests and benchmarks."""

from voxrelay.client.http import ApiError, StreamEvent, VoxrelayClient

__all__ = ["ApiError", "StreamEvent", "VoxrelayClient"]
