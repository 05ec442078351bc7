"""Persistent storage: tokens (devices' and services'), conversations, messages, sessions,
usage.

SQLAlchemy 2 async on SQLite (``sqlite+aiosqlite:///path``) or PostgreSQL
(``postgresql+asyncpg://...``); the schema is migrated by Alembic at
:meth:`Store.open`.
"""

from .engine import alembic_config, make_engine, migrate, upgrade
from .errors import (
    AmbiguousToken,
    ConversationExists,
    ConversationNotFound,
    InvalidCursor,
    MessageExists,
    MessageNotFound,
    NotFound,
    SessionExists,
    StoreError,
)
from .ids import hash_token, new_id, new_token
from .records import (
    Conversation,
    ConversationSummary,
    DeviceToken,
    Message,
    SessionRecord,
    TokenKind,
    ToolCall,
    Usage,
    UsageRecord,
)
from .store import Store

__all__ = [
    "AmbiguousToken",
    "Conversation",
    "ConversationExists",
    "ConversationNotFound",
    "ConversationSummary",
    "DeviceToken",
    "InvalidCursor",
    "Message",
    "MessageExists",
    "MessageNotFound",
    "NotFound",
    "SessionExists",
    "SessionRecord",
    "Store",
    "StoreError",
    "TokenKind",
    "ToolCall",
    "Usage",
    "UsageRecord",
    "alembic_config",
    "hash_token",
    "make_engine",
    "migrate",
    "new_id",
    "new_token",
    "upgrade",
]
