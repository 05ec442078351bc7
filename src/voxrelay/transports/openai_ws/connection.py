"""One client connection to ``/v1/realtime``: the outbox, the session it listens to,
the log it follows, and the client events it parses for its mode."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import WebSocket

from voxrelay import metrics
from voxrelay.errors import http_status
from voxrelay.eventlog import ReplayGap
from voxrelay.exceptions import (
    Forbidden,
    NotFound,
    QuotaExceeded,
    ServerClosing,
    SessionEnded,
    TooManySessions,
    Unauthorized,
    VoxrelayError,
)
from voxrelay.openai_realtime.errors import error_event
from voxrelay.openai_realtime.protocol import CLIENT_EVENTS, SAMPLE_RATE, Dialect
from voxrelay.openai_realtime.translation import server_event
from voxrelay.protocols import SendNow, send_now_of
from voxrelay.providers.base import SessionOptions
from voxrelay.sessions import Directory, LiveSession, Reads
from voxrelay.transports.openai_ws.close_codes import (
    CLIENT_DONE,
    CLOSE_FOR_REASON,
    CLOSE_FORBIDDEN,
    CLOSE_INVALID,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
)
from voxrelay.transports.openai_ws.mode_interface import Mode
from voxrelay.transports.openai_ws.openai_objects import conversation_created

# One logger for the whole endpoint, whichever module logs.
log = logging.getLogger(__package__)

# Server events waiting for a slow client; past this the client is cut off.
_OUTBOX_LIMIT = 8192


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class Connection:
    """One client connection: its outbox (one sender task, so frames never interleave),
    the session it is attached to, and the mode that speaks for it."""

    def __init__(self, websocket: WebSocket, dialect: Dialect) -> None:
        self.ws = websocket
        self.dialect: Dialect = dialect
        # A float after an audio frame is when its audio reached the session: once the
        # frame is written, the relay latency is measured from it.
        self.outbox: asyncio.Queue[str | _Close | float] = asyncio.Queue()
        self._marks = 0  # floats in the outbox
        # The server's synchronous send, used while the sender waits on an empty
        # outbox: then a frame written at once keeps the order.
        self._send_now: SendNow | None = send_now_of(websocket.scope)
        self._sender_idle = False
        # When the client event being handled arrived (the relay latency of its audio).
        self.received_at = 0.0
        self.closing = False
        self.session: LiveSession | None = None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self._attachment: contextlib.ExitStack | None = None
        self._follower: asyncio.Task[None] | None = None
        self._mode: Mode | None = None
        self._directory: Directory | None = None
        self._user_id = ""
        self._device = ""
        self._running = False

    # -- sending ---

    def send(self, event: dict[str, Any]) -> None:
        """Queue a server event already in the client's dialect."""
        if self.closing:
            return
        if "event_id" not in event:
            event = {"event_id": f"event_vx{self._id_prefix}{next(self._ids)}", **event}
        self.send_text(orjson.dumps(event).decode())

    def send_text(self, text: str) -> None:
        """Queue a server event already encoded (with its ``event_id``)."""
        if self.closing:
            return
        if (
            self._sender_idle
            and self._send_now is not None
            and self.outbox.empty()
            and self._send_now(text)
        ):
            return
        self.outbox.put_nowait(text)
        if self.outbox.qsize() - self._marks > _OUTBOX_LIMIT:
            log.warning("OpenAI-compatible client too slow; closing")
            self.close(1008, "client too slow")

    def written(self, at: float) -> None:
        """Measure the downstream relay latency of the audio frame just queued, from
        ``at`` (``time.monotonic()``) until it is written."""
        if self.closing:
            return
        if self._sender_idle and self.outbox.empty():  # it was written at once
            metrics.DOWNSTREAM_LATENCY["websocket"].observe(time.monotonic() - at)
            return
        self._marks += 1
        self.outbox.put_nowait(at)

    def send_ga(self, event: dict[str, Any]) -> None:
        """Queue a server event written in GA form, in the client's dialect."""
        for translated in server_event(event, "ga", self.dialect):
            self.send(translated)

    def announce(self, session: LiveSession) -> None:
        """Name the conversation (its voxrelay id, for ``?conversationId=`` and the REST
        routes) with the protocol's own ``conversation.created``, after ``session.created``."""
        self.send(conversation_created(session.conversation_id))

    def error(
        self,
        code: str,
        message: str,
        *,
        kind: str = "invalid_request_error",
        about: Any = None,
    ) -> None:
        event_id = about.get("event_id") if isinstance(about, Mapping) else None
        self.send(
            error_event(
                code,
                message,
                kind=kind,
                client_event_id=event_id if isinstance(event_id, str) else None,
            )
        )

    def close(self, code: int, reason: str) -> None:
        """Close after every event queued so far."""
        if not self.closing:
            self.outbox.put_nowait(_Close(code, reason[:120]))
            self.closing = True

    def revoked(self) -> None:
        """The device's token was revoked: an ``error`` event, then close with 4401."""
        message = "the device token was revoked"
        self.send(error_event("invalid_api_key", message))
        self.close(CLOSE_UNAUTHORIZED, message)

    async def close_now(self, code: int, reason: str) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def refuse(self, code: int, error_code: str, message: str) -> None:
        """Send an ``error`` event, then close with ``code``."""
        kind = "server_error" if code in (1011, 1012) else "invalid_request_error"
        self.send(error_event(error_code, message, kind=kind))
        self.close(code, message)
        if not self._running:  # else the running sender delivers both
            await self._send_loop()

    async def _send_loop(self) -> None:
        try:
            await self._send_all()
        finally:
            self._sender_idle = False

    async def _send_all(self) -> None:
        while True:
            self._sender_idle = self.outbox.empty()
            item = await self.outbox.get()
            self._sender_idle = False
            if isinstance(item, float):
                self._marks -= 1
                metrics.DOWNSTREAM_LATENCY["websocket"].observe(time.monotonic() - item)
                continue
            if isinstance(item, _Close):
                with contextlib.suppress(Exception):
                    await self.ws.close(item.code, item.reason)
                return
            try:
                await self.ws.send_text(item)
            except Exception:
                self.closing = True
                return

    # -- sessions ---

    async def open(
        self,
        directory: Directory,
        user_id: str,
        conversation_id: str | None,
        options: SessionOptions,
        device: str | None = None,
    ) -> tuple[LiveSession, bool] | None:
        """Start or join the conversation's session (a new one counts against the limit
        of ``device``, its token's id); on failure tell the client and close."""
        self._directory, self._user_id = directory, user_id
        if device is not None:
            self._device = device
        try:
            session, fresh = await directory.start(
                user_id,
                conversation_id,
                input_rate=SAMPLE_RATE,
                output_rate=SAMPLE_RATE,
                options=options,
                join_active=True,
                device=self._device,
            )
        except VoxrelayError as error:
            await self.refuse_for(error)
            return None
        return session, fresh

    async def refuse_for(self, error: VoxrelayError) -> None:
        """The core's errors as close codes: the one place this transport maps them."""
        if isinstance(error, ServerClosing):
            await self.refuse(1012, error.code, error.message)
        elif isinstance(error, NotFound):
            await self.refuse(CLOSE_NOT_FOUND, error.code, error.message)
        elif isinstance(error, Unauthorized):
            await self.refuse(CLOSE_UNAUTHORIZED, "invalid_api_key", error.message)
        elif isinstance(error, Forbidden):
            await self.refuse(CLOSE_FORBIDDEN, error.code, error.message)
        elif isinstance(error, TooManySessions | QuotaExceeded):
            await self.refuse(CLOSE_TOO_MANY, error.code, error.message)
        elif http_status(error) < 500:
            await self.refuse(CLOSE_INVALID, "invalid_request", error.message)
        else:
            await self.refuse(1011, error.code, error.message)

    def attach(self, session: LiveSession, fresh: bool) -> None:
        """Listen to ``session``: hold it active, follow its log (and raw events)."""
        assert self._mode is not None
        stack = contextlib.ExitStack()
        reads: Reads = "all" if self._mode.follows_audio else "no_audio"
        # A session this connection started is followed from its start (its opening
        # event is the protocol's own session.created); a joined one from now on.
        after = 1 if fresh else None
        stack.enter_context(session.attached(reads=reads, after=after))
        self.session = session
        self._attachment = stack
        self._mode.attach(session, stack)
        self._follower = asyncio.get_running_loop().create_task(self._follow(session, after))

    def detach(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None
        if self._attachment is not None:
            self._attachment.close()
            self._attachment = None

    async def restart(self, options: SessionOptions) -> LiveSession | None:
        """End the fresh session and start another with ``options`` (server-speaks mode
        only: its providers take their settings when they open)."""
        old = self.session
        assert old is not None and self._directory is not None
        self.detach()
        await old.end("client_end")
        opening = await self.open(self._directory, self._user_id, old.conversation_id, options)
        if opening is None:
            return None
        session, _ = opening
        self.attach(session, fresh=True)
        return session

    async def _follow(self, session: LiveSession, after: int | None) -> None:
        mode = self._mode
        assert mode is not None
        cursor = session.log.cursor(after)
        while await cursor.wait(audio=mode.follows_audio):
            for item in cursor.take():
                if isinstance(item, ReplayGap):
                    continue
                if item.type == "conversation_ended":
                    reason = str(item.data.get("reason"))
                    if reason == "server_shutdown":
                        self.send(
                            error_event(
                                "server_shutdown",
                                "the server is shutting down",
                                kind="server_error",
                            )
                        )
                    self.close(CLOSE_FOR_REASON.get(reason, 1000), f"conversation ended: {reason}")
                    return
                mode.on_log(item)

    # -- the connection's life ---

    async def run(self, session: LiveSession, fresh: bool, mode: Mode) -> None:
        """Serve the client, ``mode`` speaking for it, until either side is done."""
        self._mode = mode
        self.attach(session, fresh)
        loop = asyncio.get_running_loop()
        self._running = True
        sender = loop.create_task(self._send_loop())
        reader = loop.create_task(self._receive_loop())
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                # The socket was closed from here (or a send failed): the client's own
                # close frame, if any, tells whether it was done.
                await asyncio.wait({reader}, timeout=1.0)
            if reader.done():
                code = reader.result()  # re-raises what broke the reader
                current = self.session
                if code in CLIENT_DONE and current is not None:
                    # An SDK client closing its connection is done with the conversation.
                    await current.end_if_last("client_end")
        finally:
            for task in (reader, sender):
                task.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)
            self.detach()

    async def _receive_loop(self) -> int:
        """Handle client frames until the client disconnects; returns its close code."""
        assert self._mode is not None
        while True:
            message = await self.ws.receive()
            self.received_at = time.monotonic()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1005)
            text = message.get("text")
            if text is None:
                self.error("invalid_event", "binary frames are not supported; send JSON events")
                continue
            event = self._parse(text)
            if event is None:
                continue
            try:
                await self._mode.on_event(event)
            except SessionEnded:
                pass  # its conversation_ended closes the socket
            except VoxrelayError as error:
                # A request the core refused (too long, not valid): the socket stays up.
                self.error(error.code, error.message, about=event)
            except Exception:
                log.exception("handling a client %r event failed", event.get("type"))
                self.error(
                    "internal_error",
                    "the server failed to handle this event",
                    kind="server_error",
                    about=event,
                )

    def _parse(self, text: str) -> dict[str, Any] | None:
        """A client event in the client's dialect, or None after answering ``error``."""
        try:
            event = orjson.loads(text)
        except ValueError as exc:
            self.error("invalid_json", f"the event is not valid JSON: {exc}")
            return None
        if not isinstance(event, dict):
            self.error("invalid_event", "an event must be a JSON object")
            return None
        kind = event.get("type")
        if not isinstance(kind, str):
            self.error("invalid_event", "the event has no 'type'", about=event)
            return None
        if kind not in CLIENT_EVENTS[self.dialect]:
            self.error("unknown_event", f"unknown client event type {kind!r}", about=event)
            return None
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if not isinstance(audio, str):
                self.error("invalid_audio", "'audio' must be a base64 string", about=event)
                return None
            try:
                pcm = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError):
                self.error("invalid_audio", "'audio' is not valid base64", about=event)
                return None
            metrics.AUDIO_IN["websocket"].inc(len(pcm))
            event["_pcm"] = pcm
        return event
