"""The OpenAI-Realtime-compatible WebSocket: ``GET /v1/realtime``.

An unmodified OpenAI SDK pointed at this server, with a device token as its API key,
holds a conversation. Clients speak either dialect of the protocol (GA, or beta with
``OpenAI-Beta: realtime=v1``); ``voxrelay.openai_realtime`` translates between theirs and
the upstream's. Two modes, chosen by the session's provider:

- **Pass-through** (``openai``, ``azure``: the provider has a raw pass-through). Client
  events go upstream as they are, bar the settings the server owns (audio formats,
  input transcription, model); the upstream's events come back as they are. The session
  still owns the conversation: it stores transcripts and feeds every other listener.
- **Server speaks the protocol** (``echo``, ``local``). The transport maps client events
  onto session commands and projects the session's event log into OpenAI server events.

Either way the connection is one more listener of its session; see docs/behaviour.md
for what closing it does.
"""

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
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket

from voxrelay import logs, metrics
from voxrelay.audio import StreamResampler
from voxrelay.auth import Device, authenticate, bearer_token
from voxrelay.config import Settings
from voxrelay.errors import ApiError
from voxrelay.eventlog import Event, ReplayGap
from voxrelay.hub import SessionHub
from voxrelay.openai_realtime.errors import error_event
from voxrelay.openai_realtime.item_shapes import input_text
from voxrelay.openai_realtime.protocol import (
    AUDIO_DELTAS,
    CLIENT_EVENTS,
    ITEM_ID_MAX,
    PCM_GA,
    SAMPLE_RATE,
    Dialect,
)
from voxrelay.openai_realtime.server_owned import own_response_params, own_session_update
from voxrelay.openai_realtime.session_shapes import session_to_beta
from voxrelay.openai_realtime.translation import client_event, server_event
from voxrelay.providers.base import SessionOptions
from voxrelay.session import Reads, Session, SessionEnded, new_item_id
from voxrelay.store import Store
from voxrelay.transports.http import start_session

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_INVALID = 4400
CLOSE_FOR_REASON = {
    "client_end": 1000,
    "idle_timeout": 1000,
    "server_shutdown": 1012,
    "upstream_failed": 1011,
}
# Close codes a client sends when it is done: the conversation ends at once. Any other
# ending (a lost link) leaves the session its grace period, waiting for a reconnect.
# Not 1005: uvicorn reports a link lost without a close frame the same way as a
# close frame without a code, and a lost link must keep its grace period.
CLIENT_DONE = frozenset({1000, 1001})
# Errors the session itself reports (not the upstream's own error events, which a
# pass-through client already receives raw).
_RELAY_ERRORS = frozenset({"upstream_failed", "upstream_error"})
_KEY_PROTOCOL = "openai-insecure-api-key."
_BETA_PROTOCOL = "openai-beta.realtime-v1"
# Server events waiting for a slow client; past this the client is cut off.
_OUTBOX_LIMIT = 8192
_BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
_MIN_COMMIT_BYTES = 100 * _BYTES_PER_MS  # OpenAI refuses to commit less than 100 ms
_UNSUPPORTED = frozenset(
    {
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "transcription_session.update",
    }
)


# -- the route -------------------------------------------------------------------------------


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    offered = [str(p) for p in websocket.scope.get("subprotocols") or []]
    beta_header = websocket.headers.get("openai-beta", "").replace(" ", "")
    dialect: Dialect = (
        "beta" if "realtime=v1" in beta_header.split(",") or _BETA_PROTOCOL in offered else "ga"
    )
    app = websocket.app
    store: Store = app.state.store
    hub: SessionHub = app.state.hub
    settings: Settings = app.state.settings
    device: Device | None = None
    refusal = ""
    try:
        device = await authenticate(store, _token(websocket, offered))
    except ApiError as error:
        refusal = error.message
        client = websocket.client.host if websocket.client else None
        log.warning(
            "authentication refused: %s",
            refusal,
            extra={"transport": "websocket", "client": client},
        )
    # Browsers fail a connection whose server picks none of the offered subprotocols.
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    link = _Link(websocket, dialect)
    if device is None:
        # Accepted, then closed with 4401 after an error event: browsers see close codes
        # but never the HTTP status of a refused upgrade.
        await link.refuse(CLOSE_UNAUTHORIZED, "invalid_api_key", refusal)
        return
    logs.bind(transport="websocket", device=device.name)
    params = websocket.query_params
    user_id = device.acting_user(params.get("userId"))
    # ``?model=`` is accepted for compatibility and ignored: the server's provider
    # configuration decides the model.
    opening = await link.open(store, hub, user_id, params.get("conversationId"), SessionOptions())
    if opening is None:
        return
    session, fresh = opening
    with metrics.ACTIVE_STREAMS.labels(transport="websocket").track_inprogress():
        try:
            await link.run(session, fresh, settings)
        except Exception:
            log.exception("OpenAI-compatible WebSocket of %s failed", session.id)
            await link.close_now(1011, "internal error")


def _token(websocket: WebSocket, offered: list[str]) -> str | None:
    token = bearer_token(websocket)
    if token:
        return token
    for protocol in offered:
        if protocol.startswith(_KEY_PROTOCOL) and len(protocol) > len(_KEY_PROTOCOL):
            return protocol.removeprefix(_KEY_PROTOCOL)
    return websocket.query_params.get("access_token") or None


# -- one connection --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class _Link:
    """One client connection: its outbox (one sender task, so frames never interleave),
    the session it is attached to, and the mode that speaks for it."""

    def __init__(self, websocket: WebSocket, dialect: Dialect) -> None:
        self.ws = websocket
        self.dialect: Dialect = dialect
        # A float after an audio frame is when its audio reached the session: once the
        # frame is written, the relay latency is measured from it.
        self.outbox: asyncio.Queue[str | _Close | float] = asyncio.Queue()
        self._marks = 0  # floats in the outbox
        # When the client event being handled arrived (the relay latency of its audio).
        self.received_at = 0.0
        self.closing = False
        self.session: Session | None = None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)
        self._attachment: contextlib.ExitStack | None = None
        self._follower: asyncio.Task[None] | None = None
        self._mode: _PassThrough | _Speaker | None = None
        self._store: Store | None = None
        self._hub: SessionHub | None = None
        self._user_id = ""
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
        self.outbox.put_nowait(text)
        if self.outbox.qsize() - self._marks > _OUTBOX_LIMIT:
            log.warning("OpenAI-compatible client too slow; closing")
            self.close(1008, "client too slow")

    def written(self, at: float) -> None:
        """Measure the downstream relay latency of the audio frame just queued, from
        ``at`` (``time.monotonic()``) until it is written."""
        if not self.closing:
            self._marks += 1
            self.outbox.put_nowait(at)

    def send_ga(self, event: dict[str, Any]) -> None:
        """Queue a server event written in GA form, in the client's dialect."""
        for translated in server_event(event, "ga", self.dialect):
            self.send(translated)

    def announce(self, session: Session) -> None:
        """Name the conversation (its voxrelay id, for ``?conversationId=`` and the REST
        routes) with the protocol's own ``conversation.created``, after ``session.created``."""
        conversation = {"id": session.conversation_id, "object": "realtime.conversation"}
        self.send({"type": "conversation.created", "conversation": conversation})

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
        while True:
            item = await self.outbox.get()
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
        store: Store,
        hub: SessionHub,
        user_id: str,
        conversation_id: str | None,
        options: SessionOptions,
    ) -> tuple[Session, bool] | None:
        """Start or join the conversation's session; on failure tell the client and close."""
        self._store, self._hub, self._user_id = store, hub, user_id
        try:
            session, fresh = await start_session(
                store,
                hub,
                user_id,
                conversation_id,
                SAMPLE_RATE,
                SAMPLE_RATE,
                options,
                join_active=True,
            )
        except ApiError as error:
            if error.code == "server_shutdown":
                await self.refuse(1012, "server_shutdown", error.message)
            elif error.status == 404:
                await self.refuse(CLOSE_NOT_FOUND, "not_found", error.message)
            elif error.status < 500:
                await self.refuse(CLOSE_INVALID, "invalid_request", error.message)
            else:
                await self.refuse(1011, error.code, error.message)
            return None
        except RuntimeError as error:  # the server is shutting down
            await self.refuse(1012, "server_shutdown", str(error))
            return None
        if not isinstance(session, Session):
            # The upgrade reached a worker that does not own the conversation, which
            # the hand-off of connections prevents unless requests were pipelined.
            await self.refuse(1013, "try_again", "the conversation is served elsewhere; reconnect")
            return None
        return session, fresh

    def attach(self, session: Session, fresh: bool) -> None:
        """Listen to ``session``: hold it active, follow its log (and raw events)."""
        assert self._mode is not None
        stack = contextlib.ExitStack()
        reads: Reads = "all" if self._mode.follows_audio else "no_audio"
        stack.enter_context(session.attached(reads=reads))
        self.session = session
        self._attachment = stack
        self._mode.attach(session, stack)
        # A session this connection started is followed from its start (its opening
        # event is the protocol's own session.created); a joined one from now on.
        after = 1 if fresh else session.log.last_id
        self._follower = asyncio.get_running_loop().create_task(self._follow(session, after))

    def detach(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            self._follower = None
        if self._attachment is not None:
            self._attachment.close()
            self._attachment = None

    async def restart(self, options: SessionOptions) -> Session | None:
        """End the fresh session and start another with ``options`` (server-speaks mode
        only: its providers take their settings when they open)."""
        old = self.session
        assert old is not None and self._store is not None and self._hub is not None
        self.detach()
        await old.end("client_end")
        opening = await self.open(
            self._store, self._hub, self._user_id, old.conversation_id, options
        )
        if opening is None:
            return None
        session, _ = opening
        self.attach(session, fresh=True)
        return session

    async def _follow(self, session: Session, after: int) -> None:
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

    async def run(self, session: Session, fresh: bool, settings: Settings) -> None:
        if session.raw_dialect is not None:
            self._mode = _PassThrough(self)
        else:
            self._mode = _Speaker(self, settings, SessionOptions() if fresh else None)
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


# -- pass-through mode -----------------------------------------------------------------------


class _PassThrough:
    """Client and upstream speak to each other; the session still keeps the record."""

    # The client hears the upstream's own audio events, not the log's.
    follows_audio = False

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.upstream: Dialect = "ga"
        self.session: Session | None = None
        # Upstream events held until the upstream has applied the server's own settings.
        self.held: list[dict[str, Any]] | None = None
        self.release_timer: asyncio.TimerHandle | None = None

    def attach(self, session: Session, stack: contextlib.ExitStack) -> None:
        self.session = session
        self.upstream = "beta" if session.raw_dialect == "beta" else "ga"
        # The conversation opens with the upstream's session as the server configured
        # it: a session that has not yet answered the server's own session.update waits
        # for that answer, which becomes the client's session.created (so the client
        # never sees a session.updated it did not ask for). No await happens between
        # the snapshot and the subscription, so no event slips in between.
        if session.raw_session_settled:
            self._open(session.raw_session)
        else:
            self.held = []
            self.release_timer = asyncio.get_running_loop().call_later(
                _SETTLE_SECONDS, self._release
            )
            stack.callback(self.release_timer.cancel)
        stack.enter_context(session.raw_events(self.on_raw))

    def _open(self, snapshot: dict[str, Any] | None, event_id: Any = None) -> None:
        assert self.session is not None
        if snapshot is None:
            snapshot = {"type": "realtime"} if self.upstream == "ga" else {}
        created: dict[str, Any] = {"type": "session.created", "session": snapshot}
        if isinstance(event_id, str):
            created["event_id"] = event_id
        self._forward(created)
        self.link.announce(self.session)

    def _release(self, settled: dict[str, Any] | None = None) -> None:
        held, self.held = self.held, None
        if held is None or self.session is None:
            return
        if self.release_timer is not None:
            self.release_timer.cancel()
        if settled is not None:
            self._open(settled.get("session"), settled.get("event_id"))
        else:
            self._open(self.session.raw_session)
        for event in held:
            self._forward(event)

    def on_raw(self, event: dict[str, Any], raw: bytes) -> None:
        if self.held is not None:
            kind = event.get("type")
            if kind == "session.updated":
                self._release(event)
                return
            self.held.append(event)
            if kind == "error":
                self._release()
            return
        audio = event.get("type") in AUDIO_DELTAS
        received_at = time.monotonic() if audio else 0.0
        if self.upstream == self.link.dialect and "event_id" in event:
            # Nothing to translate: the upstream's own words, not encoded again.
            self.link.send_text(raw.decode())
        else:
            self._forward(event)
        if audio:
            self.link.written(received_at)

    def _forward(self, event: dict[str, Any]) -> None:
        for translated in server_event(event, self.upstream, self.link.dialect):
            self.link.send(translated)

    def on_log(self, event: Event) -> None:
        if event.type == "error" and event.data.get("code") in _RELAY_ERRORS:
            self.link.send(
                error_event(
                    str(event.data["code"]), str(event.data.get("message")), kind="server_error"
                )
            )

    async def on_event(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        event.pop("_pcm", None)
        kind = event["type"]
        # A transcription session would no longer answer: the server owns that choice.
        translated = (
            None
            if kind == "transcription_session.update"
            else client_event(event, self.link.dialect, self.upstream)
        )
        if translated is None:
            self.link.error("unsupported_event", f"{kind} has no equivalent upstream", about=event)
            return
        if kind == "session.update" and isinstance(translated.get("session"), Mapping):
            translated["session"] = own_session_update(
                translated["session"], self.upstream, session.raw_transcription_model
            )
        elif kind == "response.create" and isinstance(translated.get("response"), Mapping):
            translated["response"] = own_response_params(translated["response"], self.upstream)
        elif kind == "conversation.item.create":
            await self._record_user_text(session, translated)
        if kind == "input_audio_buffer.append":
            await session.send_raw(
                translated, transport="websocket", received_at=self.link.received_at
            )
        else:
            await session.send_raw(translated)
        if kind == "conversation.item.truncate":
            item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
            if isinstance(item_id, str) and isinstance(end_ms, int):
                await session.note_heard(item_id, end_ms)

    async def _record_user_text(self, session: Session, event: dict[str, Any]) -> None:
        """A typed user message is stored like every other transport's (the upstream
        gets the item with the same id, chosen here when the client chose none)."""
        item = event.get("item")
        if not isinstance(item, Mapping) or item.get("role") != "user":
            return
        if item.get("type", "message") != "message":
            return
        text = input_text(item)
        if not text.strip():
            return
        item = dict(item)
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            item_id = item["id"] = new_item_id()
            event["item"] = item
        if len(item_id) <= ITEM_ID_MAX:  # longer ids the upstream refuses
            await session.add_user_text(item_id, text)


# How long a new pass-through connection waits for the upstream to apply the server's
# settings before it opens with the session as it stands.
_SETTLE_SECONDS = 3.0


def _obj(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# -- server-speaks-the-protocol mode -----------------------------------------------------------

_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


@dataclass(slots=True)
class _Answer:
    """A response being projected into OpenAI events."""

    id: str
    text_only: bool
    item_id: str | None = None
    previous_item_id: str | None = None
    transcript: str = ""
    final: str | None = None
    audio: bool = False
    barge_in: bool = False


@dataclass(slots=True)
class _Turns:
    """What the client has said and the conversation's items, as the client sees them."""

    appended: int = 0  # bytes appended over the connection
    uncommitted: int = 0  # bytes since the last turn ended
    speaking: bool = False
    commit_pending: bool = False
    absorb_response_create: bool = False
    pending_texts: list[tuple[str, str]] = field(default_factory=list)
    last_item: str | None = None
    announced: set[str] = field(default_factory=set)
    own_items: set[str] = field(default_factory=set)
    speech_items: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)


class _Speaker:
    """Speaks the OpenAI protocol itself for providers without a raw pass-through:
    client events become session commands, the session's log becomes server events.
    Everything is written in GA form and translated for beta clients."""

    follows_audio = True

    def __init__(self, link: _Link, settings: Settings, options: SessionOptions | None) -> None:
        self.link = link
        self.settings = settings
        # The options the running session opened with, when this connection opened it.
        self.options = options
        self.text_only = False
        self.session: Session | None = None
        self.turns = _Turns()
        self.answer: _Answer | None = None
        self.resampler: StreamResampler | None = None
        self.touched = False  # any input reached the session
        self.fresh = options is not None

    def attach(self, session: Session, stack: contextlib.ExitStack) -> None:
        first = self.session is None
        self.session = session
        self.turns = _Turns()
        self.answer = None
        self.resampler = (
            StreamResampler(session.output_rate, SAMPLE_RATE)
            if session.output_rate != SAMPLE_RATE
            else None
        )
        if first:
            self.link.send(self._session_event("session.created"))
            self.link.announce(session)

    # -- the session object ---

    def _session_ga(self) -> dict[str, Any]:
        session = self.session
        assert session is not None
        options = self.options or SessionOptions(turn_detection=session.turn_detection)
        transcription: dict[str, Any] = {"model": f"voxrelay-{self.settings.provider}"}
        if options.language:
            transcription["language"] = options.language
        return {
            "type": "realtime",
            "model": f"voxrelay-{self.settings.provider}",
            "output_modalities": ["text"] if self.text_only else ["audio"],
            "instructions": options.instructions or "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "audio": {
                "input": {
                    "format": dict(PCM_GA),
                    "transcription": transcription,
                    "noise_reduction": None,
                    "turn_detection": (
                        dict(_VAD) if session.turn_detection == "server_vad" else None
                    ),
                },
                "output": {
                    "format": dict(PCM_GA),
                    "voice": options.voice or "alloy",
                    "speed": 1.0,
                },
            },
        }

    def _session_event(self, kind: str) -> dict[str, Any]:
        assert self.session is not None
        ga = self._session_ga()
        if self.link.dialect == "ga":
            return {"type": kind, "session": ga}
        beta = session_to_beta(ga)
        beta["id"] = self.session.id
        return {"type": kind, "session": beta}

    # -- client events ---

    async def on_event(self, event: dict[str, Any]) -> None:
        pcm = event.pop("_pcm", None)
        kind = event["type"]
        if kind in _UNSUPPORTED:
            self.link.error(
                "unsupported_event", f"{kind} is not supported by this server", about=event
            )
            return
        ga = client_event(event, self.link.dialect, "ga")
        assert ga is not None
        session = self.session
        assert session is not None
        if kind == "input_audio_buffer.append":
            assert isinstance(pcm, bytes)
            self.touched = True
            self.turns.appended += len(pcm)
            self.turns.uncommitted += len(pcm)
            await session.send_audio(
                pcm, SAMPLE_RATE, transport="websocket", received_at=self.link.received_at
            )
        elif kind == "input_audio_buffer.commit":
            await self._commit(ga)
        elif kind == "session.update":
            await self._update(ga)
        elif kind == "conversation.item.create":
            await self._create_item(ga)
        elif kind == "response.create":
            await self._respond(ga)
        elif kind == "response.cancel":
            if self.answer is None:
                self.link.error(
                    "response_cancel_not_active", "no response is in progress", about=event
                )
                return
            await session.interrupt()
        elif kind == "conversation.item.truncate":
            await self._truncate(ga)

    async def _commit(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        turns = self.turns
        if turns.uncommitted < _MIN_COMMIT_BYTES and not turns.speaking:
            have = turns.uncommitted / _BYTES_PER_MS
            self.link.error(
                "input_audio_buffer_commit_empty",
                f"the input audio buffer holds {have:.0f} ms of audio; commit needs 100 ms",
                about=event,
            )
            return
        self.touched = True
        # The session commits and answers at once; a response.create right after is
        # the same request (OpenAI clients send both).
        turns.commit_pending = True
        turns.absorb_response_create = True
        await session.commit()

    async def _update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, Mapping):
            self.link.error("invalid_event", "session.update needs a 'session' object", about=event)
            return
        session = self.session
        assert session is not None
        current = self.options or SessionOptions(turn_detection=session.turn_detection)
        wanted = current
        if "instructions" in update and (
            update["instructions"] is None or isinstance(update["instructions"], str)
        ):
            wanted = replace(wanted, instructions=update["instructions"] or None)
        audio = _obj(update.get("audio"))
        audio_in, audio_out = _obj(audio.get("input")), _obj(audio.get("output"))
        if isinstance(audio_out.get("voice"), str):
            wanted = replace(wanted, voice=audio_out["voice"])
        if "turn_detection" in audio_in:
            detection = audio_in["turn_detection"]
            wanted = replace(wanted, turn_detection="manual" if detection is None else "server_vad")
        transcription = audio_in.get("transcription")
        if isinstance(transcription, Mapping) and "language" in transcription:
            language = transcription["language"]
            wanted = replace(wanted, language=language if isinstance(language, str) else None)
        modalities = update.get("output_modalities")
        if isinstance(modalities, list):
            self.text_only = "audio" not in modalities
        # Otherwise the running provider keeps its settings: session.updated says what
        # is in effect.
        if wanted != current and self._can_restart(session):
            if await self.link.restart(wanted) is None:
                return
            self.options = wanted
        self.link.send(self._session_event("session.updated"))

    def _can_restart(self, session: Session) -> bool:
        """Settings that a provider takes when it opens can still change while the
        session this connection started has heard nothing and nobody else listens."""
        return self.fresh and not self.touched and session.can_restart()

    async def _create_item(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        session = self.session
        assert session is not None
        if not isinstance(item, Mapping):
            self.link.error(
                "invalid_event", "conversation.item.create needs an 'item'", about=event
            )
            return
        text = input_text(item)
        if item.get("type", "message") != "message" or item.get("role") != "user" or not text:
            self.link.error(
                "unsupported_item",
                "this server takes user messages with input_text content only",
                about=event,
            )
            return
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            item_id = new_item_id()
        turns = self.turns
        if item_id in turns.announced:
            self.link.error("item_exists", f"item {item_id} already exists", about=event)
            return
        self.touched = True
        content = [
            {"type": "input_text", "text": str(part.get("text") or "")}
            for part in item.get("content") or []
            if isinstance(part, Mapping) and part.get("type") == "input_text"
        ]
        turns.own_items.add(item_id)
        self._announce_item(
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": content,
            }
        )
        turns.pending_texts.append((item_id, text))
        await session.add_user_text(item_id, text)

    async def _respond(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        turns = self.turns
        if turns.pending_texts:
            texts = turns.pending_texts
            turns.pending_texts = []
            turns.absorb_response_create = False
            # Each text item is already stored; the provider hears them as one turn.
            await session.send_text("\n".join(t for _, t in texts), texts[-1][0])
            return
        if turns.absorb_response_create:
            turns.absorb_response_create = False
            return
        if self.answer is not None:
            self.link.error(
                "conversation_already_has_active_response",
                f"a response is already in progress: {self.answer.id}",
                about=event,
            )
            return
        if turns.uncommitted >= _MIN_COMMIT_BYTES or turns.speaking:
            self.touched = True
            turns.commit_pending = True
            await session.commit()
            return
        self.link.error(
            "no_pending_input",
            "response.create needs a user message or audio to answer on this server",
            about=event,
        )

    async def _truncate(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        end_ms = event.get("audio_end_ms")
        item_id = event.get("item_id")
        if not isinstance(end_ms, int) or end_ms < 0 or not isinstance(item_id, str):
            self.link.error(
                "invalid_event",
                "conversation.item.truncate needs item_id and a non-negative audio_end_ms",
                about=event,
            )
            return
        await session.interrupt(played_ms=end_ms)
        content_index = event.get("content_index")
        self.link.send_ga(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": content_index if isinstance(content_index, int) else 0,
                "audio_end_ms": end_ms,
            }
        )

    # -- the log, projected ---

    def on_log(self, event: Event) -> None:
        data = event.data
        kind = event.type
        if kind == "speech_started":
            self._speech_started(str(data["itemId"]))
        elif kind == "speech_stopped":
            item_id = str(data["itemId"])
            self.turns.speech_items.add(item_id)
            self.link.send_ga(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": self.turns.appended // _BYTES_PER_MS,
                    "item_id": item_id,
                }
            )
            self._announce_audio(item_id)
        elif kind == "transcript":
            if data.get("role") == "user":
                self._user_transcript(data)
            else:
                self._assistant_transcript(data)
        elif kind == "response_started":
            self._response_started(str(data["responseId"]))
        elif kind == "audio":
            self._audio(data, event.at)
        elif kind == "response_done":
            self._response_done(str(data["responseId"]), str(data.get("status")))
        elif kind == "error":
            code = str(data.get("code"))
            if code == "input_audio_buffer_commit_empty":
                self.turns.commit_pending = False
                self.turns.absorb_response_create = False
            kind_ = "server_error" if code in _RELAY_ERRORS else "invalid_request_error"
            self.link.send_ga(error_event(code, str(data.get("message") or ""), kind=kind_))

    def _speech_started(self, item_id: str) -> None:
        turns = self.turns
        turns.speaking = True
        turns.speech_items.add(item_id)
        if self.answer is not None:
            self.answer.barge_in = True
        self.link.send_ga(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": max(0, turns.appended // _BYTES_PER_MS - 60),
                "item_id": item_id,
            }
        )

    def _announce_item(self, item: dict[str, Any]) -> None:
        turns = self.turns
        previous = turns.last_item
        turns.last_item = item["id"]
        turns.announced.add(item["id"])
        for kind in ("conversation.item.added", "conversation.item.done"):
            self.link.send_ga({"type": kind, "previous_item_id": previous, "item": item})

    def _announce_audio(self, item_id: str) -> None:
        turns = self.turns
        if item_id in turns.announced:
            return
        turns.seconds[item_id] = round(turns.uncommitted / (SAMPLE_RATE * 2), 3)
        turns.uncommitted = 0
        turns.speaking = False
        turns.commit_pending = False
        self.link.send_ga(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": turns.last_item,
                "item_id": item_id,
            }
        )
        self._announce_item(
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            }
        )

    def _user_transcript(self, data: Mapping[str, Any]) -> None:
        turns = self.turns
        item_id = str(data["itemId"])
        if item_id in turns.own_items:
            return  # a text item this client created: already announced
        spoken = turns.commit_pending or item_id in turns.speech_items
        if item_id not in turns.announced:
            if spoken or not data.get("final"):
                self._announce_audio(item_id)
            else:
                # A typed message from another device of this conversation.
                text = str(data.get("text") or "")
                self._announce_item(
                    {
                        "id": item_id,
                        "object": "realtime.item",
                        "type": "message",
                        "status": "completed",
                        "role": "user",
                        "content": [{"type": "input_text", "text": text}],
                    }
                )
                return
        if not data.get("final"):
            self.link.send_ga(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": str(data.get("delta") or ""),
                }
            )
            return
        if item_id not in turns.seconds:
            return  # a text item announced earlier
        self.link.send_ga(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": str(data.get("text") or ""),
                "usage": {"type": "duration", "seconds": turns.seconds[item_id]},
            }
        )

    def _response_object(
        self, answer: _Answer, status: str, output: list[dict[str, Any]]
    ) -> dict[str, Any]:
        assert self.session is not None
        options = self.options or SessionOptions()
        details: dict[str, Any] | None = None
        if status == "cancelled":
            reason = "turn_detected" if answer.barge_in else "client_cancelled"
            details = {"type": "cancelled", "reason": reason}
        elif status == "failed":
            details = {"type": "failed"}
        return {
            "id": answer.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": self.session.conversation_id,
            "output_modalities": ["text"] if answer.text_only else ["audio"],
            "audio": {"output": {"format": dict(PCM_GA), "voice": options.voice or "alloy"}},
            "max_output_tokens": "inf",
            "metadata": None,
            "usage": None,
        }

    def _response_started(self, response_id: str) -> None:
        # (A commit's answer may start, even finish, before the client's response.create
        # arrives: that one is still absorbed.)
        answer = _Answer(response_id, self.text_only)
        self.answer = answer
        response = self._response_object(answer, "in_progress", [])
        self.link.send_ga({"type": "response.created", "response": response})

    def _assistant_item(self, answer: _Answer, status: str) -> dict[str, Any]:
        assert answer.item_id is not None
        text = answer.final if answer.final is not None else answer.transcript
        part = (
            {"type": "output_text", "text": text}
            if answer.text_only
            else {"type": "output_audio", "transcript": text}
        )
        content = [part] if status != "in_progress" else []
        return {
            "id": answer.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _open_item(self, answer: _Answer, item_id: str) -> bool:
        """Announce the answer's item on its first output; False for another item."""
        if answer.item_id is not None:
            return answer.item_id == item_id
        answer.item_id = item_id
        item = self._assistant_item(answer, "in_progress")
        previous = answer.previous_item_id = self.turns.last_item
        self.turns.last_item = item_id
        ids = {"response_id": answer.id, "output_index": 0}
        self.link.send_ga({"type": "response.output_item.added", **ids, "item": item})
        self.link.send_ga(
            {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
        )
        part = (
            {"type": "text", "text": ""}
            if answer.text_only
            else {"type": "audio", "transcript": ""}
        )
        self.link.send_ga(
            {
                "type": "response.content_part.added",
                **ids,
                "item_id": item_id,
                "content_index": 0,
                "part": part,
            }
        )
        return True

    def _part_ids(self, answer: _Answer) -> dict[str, Any]:
        return {
            "response_id": answer.id,
            "item_id": answer.item_id,
            "output_index": 0,
            "content_index": 0,
        }

    def _audio(self, data: Mapping[str, Any], at: float) -> None:
        answer = self.answer
        if answer is None or answer.text_only or data.get("responseId") != answer.id:
            return
        item_id = str(data.get("itemId") or answer.item_id or new_item_id())
        if not self._open_item(answer, item_id):
            return
        audio = str(data["audio"])
        if self.resampler is not None:
            pcm = self.resampler.feed(base64.b64decode(audio))
            if not pcm:
                return
            audio = base64.b64encode(pcm).decode("ascii")
        answer.audio = True
        self.link.send_ga(
            {"type": "response.output_audio.delta", **self._part_ids(answer), "delta": audio}
        )
        self.link.written(at)

    def _assistant_transcript(self, data: Mapping[str, Any]) -> None:
        answer = self.answer
        if answer is None:
            return  # a transcript cut after its answer ended (an interrupt)
        item_id = str(data["itemId"])
        if data.get("final"):
            if self._open_item(answer, item_id):
                answer.final = str(data.get("text") or "")
            return
        if not self._open_item(answer, item_id):
            return
        delta = str(data.get("delta") or "")
        answer.transcript += delta
        kind = (
            "response.output_text.delta"
            if answer.text_only
            else ("response.output_audio_transcript.delta")
        )
        self.link.send_ga({"type": kind, **self._part_ids(answer), "delta": delta})

    def _response_done(self, response_id: str, status: str) -> None:
        answer = self.answer
        if answer is None or answer.id != response_id:
            answer = _Answer(response_id, self.text_only)
        self.answer = None
        if status not in ("completed", "cancelled", "failed"):
            status = "failed"
        output: list[dict[str, Any]] = []
        if answer.item_id is not None:
            item_status = "completed" if status == "completed" else "incomplete"
            item = self._assistant_item(answer, item_status)
            text = answer.final if answer.final is not None else answer.transcript
            ids = self._part_ids(answer)
            if answer.text_only:
                self.link.send_ga({"type": "response.output_text.done", **ids, "text": text})
                part = {"type": "text", "text": text}
            else:
                if answer.audio:
                    self.link.send_ga({"type": "response.output_audio.done", **ids})
                self.link.send_ga(
                    {"type": "response.output_audio_transcript.done", **ids, "transcript": text}
                )
                part = {"type": "audio", "transcript": text}
            self.link.send_ga({"type": "response.content_part.done", **ids, "part": part})
            self.link.send_ga(
                {
                    "type": "response.output_item.done",
                    "response_id": answer.id,
                    "output_index": 0,
                    "item": item,
                }
            )
            self.link.send_ga(
                {
                    "type": "conversation.item.done",
                    "previous_item_id": answer.previous_item_id,
                    "item": item,
                }
            )
            output.append(item)
        response = self._response_object(answer, status, output)
        self.link.send_ga({"type": "response.done", "response": response})
