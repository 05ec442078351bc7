"""The picows side of an OpenAI Realtime upstream link: whole messages in, bytes
out, the close handshake and write flow control. What the messages mean is the
provider's (``voxrelay.providers.openai``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from voxrelay.ws_messages import WholeMessages

log = logging.getLogger("voxrelay.providers.openai")


class LinkOwner(Protocol):
    """What a link tells its provider (``RealtimeProvider``)."""

    @property
    def name(self) -> str: ...

    def _on_message(self, message: bytes) -> None: ...

    def _on_closed(self, close_code: int | None) -> None: ...


class Link(WSListener):
    """The picows side of one upstream link: whole messages in, bytes out, the close
    handshake and write flow control."""

    def __init__(self, provider: LinkOwner, first: asyncio.Future[bytes]) -> None:
        self._provider = provider
        self._first: asyncio.Future[bytes] | None = first
        self._transport: WSTransport | None = None
        self._messages = WholeMessages()
        self._open = False
        self._early: list[bytes] = []  # messages after the first, before the provider is open
        self._peer_close: int | None = None
        self._drained: asyncio.Event | None = None
        self._gone: asyncio.Event = asyncio.Event()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def opened(self) -> None:
        """The provider handles every message from now on (those that came early, soon)."""
        self._open = True
        early, self._early = self._early, []
        loop = asyncio.get_running_loop()
        for message in early:
            loop.call_soon(self._deliver, message)
        if self._gone.is_set():
            loop.call_soon(self._provider._on_closed, self._peer_close)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        message = self._messages.add(frame)
        if message is not None:
            self._deliver(message)
        elif frame.msg_type is WSMsgType.CLOSE:
            self._peer_close = int(frame.get_close_code().value)
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code())
            transport.disconnect()

    def _deliver(self, message: bytes) -> None:
        if self._open:
            try:
                self._provider._on_message(message)
            except Exception:
                log.exception("%s realtime: handling an upstream event failed", self._provider.name)
        elif self._first is not None and not self._first.done():
            self._first.set_result(message)
        else:
            self._early.append(message)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._gone.set()
        if self._drained is not None:
            self._drained.set()
        if self._first is not None and not self._first.done():
            self._first.set_exception(ConnectionError("the upstream closed the connection"))
        if self._open:
            self._provider._on_closed(self._peer_close)

    def pause_writing(self) -> None:
        self._drained = asyncio.Event()

    def resume_writing(self) -> None:
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    def send(self, message: bytes) -> None:
        transport = self._transport
        if transport is not None and not self._gone.is_set():
            transport.send(WSMsgType.TEXT, message)

    async def writable(self) -> None:
        """Return once the link can take more (at once, unless its writes backed up)."""
        drained = self._drained
        if drained is not None:
            await drained.wait()

    def fail(self, code: WSCloseCode, reason: str) -> None:
        if self._transport is not None:
            self._transport.send_close(code, reason.encode())
            self._transport.disconnect()

    async def close(self) -> None:
        """The close handshake: the upstream answers our close frame once it has read
        everything sent before it."""
        transport = self._transport
        if transport is None or self._gone.is_set():
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode.OK)
        try:
            async with asyncio.timeout(5):
                await self._gone.wait()
        except TimeoutError:
            transport.disconnect(graceful=False)
