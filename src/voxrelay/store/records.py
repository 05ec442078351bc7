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
