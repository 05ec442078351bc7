"""ORM tables. Keep in step with ``migrations/versions``: a test compares the two."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .ids import MAX_ID_LENGTH

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ROLES = ("user", "assistant")
TOOL_CALL_STATUSES = ("pending", "completed", "failed")
TOOL_RUNNERS = ("server", "client")
SESSION_STATUSES = ("active", "ended")
# A device token always has its user; a service token never has one.
TOKEN_KIND_CHECK = (
    "(kind = 'device' AND user_id IS NOT NULL) OR (kind = 'service' AND user_id IS NULL)"
)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime`` on every backend.

    PostgreSQL keeps it in ``timestamptz``. SQLite has no time zones: the value
    is stored as naive UTC text (which also sorts and compares correctly) and
    comes back with ``tzinfo=UTC`` attached.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the store; use an aware (UTC) datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONDict = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# Any JSON value, not only objects.
JSONValue = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Id = String(MAX_ID_LENGTH)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONDict}


class DeviceTokenRow(Base):
    # Services' tokens live here too (``kind``); the table and the name's column keep
    # the names they had when every token was a device's.
    __tablename__ = "device_tokens"
    __table_args__ = (CheckConstraint(TOKEN_KIND_CHECK, name="kind"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column("device", String, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ConversationRow(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # Serves ``user_id`` lookups and the newest-first listing with its cursor.
        Index(None, "user_id", "updated_at", "id"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index(None, "conversation_id", "position"),
        CheckConstraint("role IN ('user', 'assistant')", name="role"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        Id, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    item_id: Mapped[str | None] = mapped_column(String)
    meta: Mapped[dict[str, Any] | None]


class SessionRow(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'ended')", name="status"),
        # A user's live sessions (the per-user limit).
        Index(None, "user_id", "status"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        Id, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String)
    input_sample_rate: Mapped[int] = mapped_column(Integer)
    output_sample_rate: Mapped[int] = mapped_column(Integer)
    turn_detection: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict[str, Any] | None]


class UsageRecordRow(Base):
    """What one response (or the rest of a session after its last one) used. Not tied to
    its conversation by a foreign key: usage outlives a deleted conversation, so
    deleting one neither hides what it cost nor gives a user's quota back."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index(None, "user_id", "created_at"),
        Index(None, "conversation_id"),
        Index(None, "session_id"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    user_id: Mapped[str] = mapped_column(String)
    conversation_id: Mapped[str] = mapped_column(Id)
    session_id: Mapped[str] = mapped_column(Id)
    response_id: Mapped[str | None] = mapped_column(String)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime]
    input_tokens: Mapped[int] = mapped_column(Integer)
    output_tokens: Mapped[int] = mapped_column(Integer)
    input_text_tokens: Mapped[int] = mapped_column(Integer)
    input_audio_tokens: Mapped[int] = mapped_column(Integer)
    input_cached_tokens: Mapped[int] = mapped_column(Integer)
    output_text_tokens: Mapped[int] = mapped_column(Integer)
    output_audio_tokens: Mapped[int] = mapped_column(Integer)
    transcription_input_tokens: Mapped[int] = mapped_column(Integer)
    transcription_output_tokens: Mapped[int] = mapped_column(Integer)
    transcription_seconds: Mapped[float] = mapped_column(Float)
    audio_in_seconds: Mapped[float] = mapped_column(Float)
    audio_out_seconds: Mapped[float] = mapped_column(Float)
    # Wall-clock time of the session since its previous record (or its start).
    session_seconds: Mapped[float] = mapped_column(Float)
    # USD, from the price table in force when it was recorded; None: not priced.
    cost: Mapped[float | None] = mapped_column(Float)


class ToolCallRow(Base):
    __tablename__ = "tool_calls"
    __table_args__ = (
        Index(None, "conversation_id", "position"),
        CheckConstraint("status IN ('pending', 'completed', 'failed')", name="status"),
        CheckConstraint("run_by IN ('server', 'client')", name="run_by"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        Id, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    session_id: Mapped[str | None] = mapped_column(Id)
    # Among the conversation's messages: the same numbering.
    position: Mapped[int] = mapped_column(Integer)
    call_id: Mapped[str] = mapped_column(String)
    name: Mapped[str] = mapped_column(String)
    # As the model wrote them (JSON text): what a resumed conversation is told again.
    arguments_text: Mapped[str] = mapped_column(Text)
    arguments: Mapped[dict[str, Any] | None]
    # Any JSON value the tool answered (a JSON column, not only objects).
    output: Mapped[Any | None] = mapped_column(JSONValue)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    run_by: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
