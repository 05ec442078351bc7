"""What a connection and the mode that speaks for it know of each other.

A connection (``connection.Connection``) owns the socket, its outbox and the session it
listens to; its mode decides what the client's events do and what the client hears.
The route picks the mode for the session's provider and hands it to the connection, so
neither side imports the other.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from voxrelay.eventlog import Event
from voxrelay.openai_realtime.protocol import Dialect
from voxrelay.providers.base import SessionOptions
from voxrelay.sessions import LiveSession

# Errors the session itself reports (not the upstream's own error events, which a
# pass-through client already receives raw); ``quota_exceeded`` comes just before the
# conversation ends for a limit of the user's.
RELAY_ERRORS = frozenset(
    {"upstream_failed", "upstream_error", "upstream_unavailable", "quota_exceeded"}
)


class Link(Protocol):
    """What a mode may do with its connection."""

    @property
    def dialect(self) -> Dialect:
        """The dialect the client speaks."""
        ...

    @property
    def received_at(self) -> float:
        """When the client event being handled arrived (the relay latency of its audio)."""
        ...

    def send(self, event: dict[str, Any]) -> None:
        """Queue a server event already in the client's dialect."""
        ...

    def send_text(self, text: str) -> None:
        """Queue a server event already encoded (with its ``event_id``)."""
        ...

    def send_ga(self, event: dict[str, Any]) -> None:
        """Queue a server event written in GA form, in the client's dialect."""
        ...

    def written(self, at: float) -> None:
        """Measure the relay latency of the audio event just queued, from ``at``."""
        ...

    def announce(self, session: LiveSession) -> None:
        """Name the conversation to the client, after ``session.created``."""
        ...

    def error(self, code: str, message: str, *, kind: str = ..., about: Any = None) -> None:
        """Queue an ``error`` event, about the client event ``about`` when given."""
        ...

    async def restart(self, options: SessionOptions) -> LiveSession | None:
        """End the fresh session and start another with ``options``; None when that
        failed (the client has been told and the connection is closing)."""
        ...


class Mode(Protocol):
    """What a connection needs of the mode that speaks for it."""

    @property
    def follows_audio(self) -> bool:
        """Whether the client hears the answer audio of the session's log."""
        ...

    def attach(self, session: LiveSession, stack: contextlib.ExitStack) -> None:
        """Start speaking for ``session``; what is entered on ``stack`` ends on detach."""
        ...

    async def on_event(self, event: dict[str, Any]) -> None:
        """Handle one valid client event, in the client's dialect (an append carries its
        decoded audio as ``_pcm``)."""
        ...

    def on_log(self, event: Event) -> None:
        """Handle one event of the session's log (``conversation_ended`` excepted)."""
        ...
