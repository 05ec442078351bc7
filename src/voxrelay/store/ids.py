"""Identifiers, user ids and token secrets."""

from __future__ import annotations

import hashlib
import secrets

CONVERSATION_PREFIX = "conv_"
SESSION_PREFIX = "sess_"
MESSAGE_PREFIX = "msg_"
TOKEN_ID_PREFIX = "tok_"
TOKEN_PREFIX = "vxr_"

#: Longest id a caller may choose for a conversation or a session (or a user id).
MAX_ID_LENGTH = 128

#: User ids of this form are devices' own: no ``--user`` and no service may name one.
DEVICE_USER_PREFIX = "device:"


def new_id(prefix: str) -> str:
    """``prefix`` + 24 lowercase hex characters (96 random bits)."""
    return prefix + secrets.token_hex(12)


def new_token() -> str:
    """A fresh device token: ``vxr_`` + 43 url-safe characters (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a token: what is stored instead of the token.

    Tokens carry 256 random bits, so a fast unsalted hash is enough: there is
    nothing to brute-force, and it keeps the lookup a single indexed equality.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def storable(value: str) -> bool:
    """Whether the database can hold ``value``: PostgreSQL's text and JSONB cannot hold
    U+0000 (and refuse a query that names it), so no stored key holds one, and both
    databases take the same values."""
    return "\x00" not in value


def check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable() or value != value.strip():
        raise ValueError(f"{what} must be 1 to {MAX_ID_LENGTH} printable characters")
    return value


def device_user(token_id: str) -> str:
    """The user of its own that a device token created without ``--user`` acts for."""
    return DEVICE_USER_PREFIX + token_id


def is_device_user(user_id: str) -> bool:
    return user_id.startswith(DEVICE_USER_PREFIX)


def check_user_id(value: str) -> str:
    """A user id a person or a service may name: the rule of ids, and not a device's own."""
    check_id(value, "a user id")
    if is_device_user(value):
        raise ValueError(f"user ids starting with {DEVICE_USER_PREFIX!r} are devices' own")
    return value
