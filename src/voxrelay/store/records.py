"""Plain, immutable records returned by :class:`~voxrelay.store.Store` (never ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class DeviceToken:
    id: str
    device: str
    user_id: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


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
