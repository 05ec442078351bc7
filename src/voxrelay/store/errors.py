"""Exceptions raised by the store."""

from __future__ import annotations

from .records import DeviceToken


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


class AmbiguousToken(StoreError, LookupError):
    """``revoke_token`` matched the tokens of more than one owner, and revoked none."""

    def __init__(self, name: str, matches: list[DeviceToken]) -> None:
        owners = ", ".join(sorted({t.owner for t in matches}))
        super().__init__(f"{name!r} names the tokens of several owners: {owners}")
        self.name = name
        self.matches = matches
