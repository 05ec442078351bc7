"""The OpenAI ``error`` server event."""

from __future__ import annotations

from typing import Any


def error_event(
    code: str,
    message: str,
    *,
    kind: str = "invalid_request_error",
    client_event_id: str | None = None,
) -> dict[str, Any]:
    """An OpenAI ``error`` server event (the same in both dialects)."""
    return {
        "type": "error",
        "error": {
            "type": kind,
            "code": code,
            "message": message,
            "param": None,
            "event_id": client_event_id,
        },
    }
