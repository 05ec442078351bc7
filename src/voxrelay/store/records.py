"""Plain, immutable records returned by :class:`~voxrelay.store.Store` (never ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

#: A device token acts for its one user; a service token for the user each request names.
TokenKind = Literal["device", "service"]
TOKEN_KINDS: tuple[TokenKind, ...] = ("device", "service")


@dataclass(frozen=True, slots=True)
class DeviceToken:
    """A token of a device (``kind`` "device", ``user_id`` its user) or of a service
    (``kind`` "service", no ``user_id``); ``name`` is the device's or the service's."""

    id: str
    name: str
    kind: TokenKind
    user_id: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def owner(self) -> str:
        """Whose token it is, in words: ``user alice`` or ``service NAME``."""
        return f"user {self.user_id}" if self.kind == "device" else f"service {self.name}"


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    user_id: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str
    position: int
    role: str
    text: str
    created_at: datetime
    item_id: str | None
    meta: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    id: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    last_message: Message | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    conversation_id: str
    user_id: str
    status: str
    created_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    input_sample_rate: int
    output_sample_rate: int
    turn_detection: str
    options: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Usage:
    """Amounts of use: one record's, or the sum of many. Input token counts include
    their cached part; ``responses`` counts the records that closed a response."""

    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    transcription_input_tokens: int = 0
    transcription_output_tokens: int = 0
    transcription_seconds: float = 0.0
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    session_seconds: float = 0.0
    responses: int = 0
    # USD; None when nothing in it was priced.
    cost: float | None = None

    @property
    def tokens(self) -> int:
        """Every token billed: the model's input and output, and transcription's."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.transcription_input_tokens
            + self.transcription_output_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        sums = {
            name: getattr(self, name) + getattr(other, name)
            for name in USAGE_AMOUNTS
            if name != "cost"
        }
        if self.cost is None or other.cost is None:
            cost = other.cost if self.cost is None else self.cost
        else:
            cost = self.cost + other.cost
        return Usage(**sums, cost=cost)


USAGE_AMOUNTS = tuple(Usage.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one response used, or (``response_id`` None) the rest of a session after
    its last response."""

    id: str
    user_id: str
    conversation_id: str
    session_id: str
    response_id: str | None
    provider: str
    model: str
    created_at: datetime
    usage: Usage


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call of a conversation: ``position`` among its messages, ``output``
    any JSON value (None while ``pending``), ``run_by`` "server" or "client"."""

    id: str
    conversation_id: str
    session_id: str | None
    position: int
    call_id: str
    name: str
    arguments_text: str
    arguments: dict[str, Any] | None
    output: Any
    status: str
    error: str | None
    run_by: str
    created_at: datetime
    finished_at: datetime | None
