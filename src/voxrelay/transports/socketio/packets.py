"""Socket.IO packets of the ``/realtime`` namespace written by hand: events whose
JSON is at hand already (the session log's), and the ``error`` events the
transport's own guards send outside any event handler."""

from __future__ import annotations

import orjson

NAMESPACE = "/realtime"


def event_packet(name: str, data: bytes, extra: bytes = b"") -> str:
    """A Socket.IO EVENT packet of this namespace, ``[name, data]``, from the data's JSON
    object (``extra``, when given, replaces its closing brace with more fields)."""
    if extra:
        data = data[:-1] + extra
    return f'2{NAMESPACE},["{name}",{data.decode()}]'


def error_packet(code: str, message: str) -> str:
    """An ``error`` event ``{"code", "message"}`` (about no client event in particular)."""
    return event_packet("error", orjson.dumps({"code": code, "message": message}))
