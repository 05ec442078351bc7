"""What every transport's client shares: the options a conversation is opened
with, the stream events it yields (audio decoded to PCM16 bytes), and the one
error a dropped connection raises whatever the wire."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal


class ConnectionLost(Exception):
    """The connection to the server dropped before the conversation ended: the
    server stopped, or the network between went away. Raised by ``events()`` and by
    anything sent afterwards, on every transport."""


@dataclass(frozen=True, slots=True)
class Event:
    """A stream event; for ``audio``, ``pcm`` holds the decoded samples."""

    type: str
    data: dict[str, Any]
    pcm: bytes = b""


@dataclass(frozen=True, slots=True)
class Options:
    conversation_id: str | None = None
    input_rate: int = 16000
    output_rate: int = 24000
    turn_detection: Literal["server_vad", "manual"] = "server_vad"
    language: str | None = None
    voice: str | None = None
    instructions: str | None = None


def decode(event_type: str, data: dict[str, Any]) -> Event:
    if event_type == "audio" and isinstance(data.get("audio"), str):
        return Event(event_type, data, base64.b64decode(data["audio"]))
    return Event(event_type, data)
