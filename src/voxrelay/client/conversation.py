"""One live conversation over any transport, seen the same way.

``connect(url, token, transport=...)`` returns a ``Conversation`` whatever the
wire: its ``events()`` yields the contract's stream vocabulary
(``transcript``, ``audio``, ``response_done``, …) with audio already decoded
to PCM16 bytes at ``output_rate``, and ``send_audio``/``commit``/``send_text``/
``interrupt``/``end`` act on it. The CLI's ``talk`` and the benchmarks use it.

A refusal at the start (a bad token, no such conversation, no voxrelay at the
URL) raises ``ApiError`` on every transport; a connection that drops later
raises ``ConnectionLost``. A conversation the server ends (``server_shutdown``,
``idle_timeout``, ...) is a ``conversation_ended`` event with its reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

from voxrelay.client._events import ConnectionLost, Event, Options
from voxrelay.client._http_stream import HttpConversation

__all__ = [
    "TRANSPORTS",
    "ConnectionLost",
    "Conversation",
    "Event",
    "Options",
    "Transport",
    "connect",
]

Transport = Literal["http", "socketio", "ws"]
TRANSPORTS: tuple[Transport, ...] = ("http", "socketio", "ws")


class Conversation(Protocol):
    conversation_id: str
    input_rate: int
    output_rate: int

    async def send_audio(self, pcm: bytes) -> None: ...
    async def commit(self) -> None: ...
    async def send_text(self, text: str) -> None: ...
    async def interrupt(self, played_ms: int | None = None) -> None: ...
    async def end(self) -> None: ...
    def events(self) -> AsyncIterator[Event]: ...
    async def aclose(self) -> None: ...


async def connect(
    url: str, token: str, transport: Transport = "http", options: Options | None = None
) -> Conversation:
    options = options or Options()
    if transport == "http":
        return await HttpConversation.open(url, token, options)
    if transport == "socketio":
        from voxrelay.client._socketio import SocketIOConversation

        return await SocketIOConversation.open(url, token, options)
    if transport == "ws":
        from voxrelay.client._realtime_ws import RealtimeConversation

        conversation: Conversation = await RealtimeConversation.open(url, token, options)
        return conversation
    raise ValueError(f"unknown transport {transport!r}; one of {', '.join(TRANSPORTS)}")
