"""Exceptions raised by the store."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class ConversationExists(StoreError):
    """``create_conversation`` was given an id that is already taken (by anyone)."""


class SessionExists(StoreError):
    """``create_session`` was given an id that is already taken."""


class MessageExists(StoreError):
    """``add_message`` was given a ``message_id`` already used in another conversation."""


class InvalidCursor(StoreError, ValueError):
    """``list_conversations(before=...)`` got neither a known conversation id nor a timestamp."""


class NotFound(StoreError, LookupError):
    """The row a write refers to does not exist (any more)."""


class ConversationNotFound(NotFound):
    pass


class MessageNotFound(NotFound):
    pass
