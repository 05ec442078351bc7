"""What a provider tells a session: one vocabulary for every upstream.

Providers translate whatever their upstream says into these events; the
session turns them into the client-facing event log and stored messages.
Audio travels as raw PCM16 bytes at the provider's ``output_rate``.
"""

from __future__ import annotations

import base64
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
class TokenUsage:
    """What the model billed for one response, as the upstream reports it. Input counts
    include the cached part (a subset, split into text and audio where reported)."""

    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    cached_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TranscriptionUsage:
    """What the transcription of one user turn was billed: by tokens, or (a model
    billed by audio duration) by ``seconds``."""

    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    role: Role
    item_id: str
    text: str
    # A user turn's transcription, where the upstream reports what it cost.
    usage: TranscriptionUsage | None = None


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


class AudioDelta:
    """A piece of the answer's audio. An upstream that sends its audio as base64 hands
    the text over as it came (``encoded``): where the client takes the same rate, it
    goes out again as is, never decoded and encoded again."""

    __slots__ = ("_encoded", "_pcm", "item_id", "response_id")

    def __init__(
        self, response_id: str, item_id: str, pcm: bytes = b"", *, encoded: str | None = None
    ) -> None:
        self.response_id = response_id
        self.item_id = item_id
        self._pcm: bytes | None = pcm if encoded is None else None
        self._encoded = encoded

    @property
    def pcm(self) -> bytes:
        if self._pcm is None:
            self._pcm = base64.b64decode(self._encoded or "")
        return self._pcm

    @property
    def encoded(self) -> str:
        """The audio as base64."""
        if self._encoded is None:
            self._encoded = base64.b64encode(self.pcm).decode("ascii")
        return self._encoded

    @property
    def byte_count(self) -> int:
        if self._pcm is not None:
            return len(self._pcm)
        text = self._encoded or ""
        return len(text) * 3 // 4 - text[-2:].count("=")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AudioDelta):
            return NotImplemented
        return (self.response_id, self.item_id, self.pcm) == (
            other.response_id,
            other.item_id,
            other.pcm,
        )

    def __hash__(self) -> int:
        return hash((self.response_id, self.item_id, self.pcm))

    def __repr__(self) -> str:
        return f"AudioDelta({self.response_id!r}, {self.item_id!r}, {self.byte_count} bytes)"


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: ResponseStatus
    # What the response cost, where the provider reports it.
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """The model calls a function tool (its whole call: ``arguments`` as the JSON text
    it wrote); the answer it belongs to (``response_id``) ends without speech."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ModelError:
    """An upstream error. ``fatal`` means the upstream link is gone."""

    code: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class UpstreamReconnecting:
    """The link to the model dropped and is being opened again; the answer in progress
    (``response_id``, if any) is over."""

    reason: str
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamRestored:
    """A new link to the model holds the conversation so far; requests go on."""

    attempts: int


ModelEvent = (
    SpeechStarted
    | SpeechStopped
    | InputCommitted
    | TranscriptDelta
    | TranscriptDone
    | ResponseStarted
    | AudioDelta
    | ResponseDone
    | FunctionCall
    | ModelError
    | UpstreamReconnecting
    | UpstreamRestored
)
