"""What a provider tells a session: one vocabulary for every upstream.

Providers translate whatever their upstream says into these events; the
session turns them into the client-facing event log and stored messages.
Audio travels as raw PCM16 bytes at the provider's ``output_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]
ResponseStatus = Literal["completed", "cancelled", "failed"]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str


@dataclass(frozen=True, slots=True)
class InputCommitted:
    """A user turn's audio became a conversation item (by VAD or by commit)."""

    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    role: Role
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    role: Role
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    pcm: bytes


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: ResponseStatus


@dataclass(frozen=True, slots=True)
class ModelError:
    """An upstream error. ``fatal`` means the upstream link is gone."""

    code: str
    message: str
    fatal: bool = False


ModelEvent = (
    SpeechStarted
    | SpeechStopped
    | InputCommitted
    | TranscriptDelta
    | TranscriptDone
    | ResponseStarted
    | AudioDelta
    | ResponseDone
    | ModelError
)
