"""Socket.IO transport (namespace ``/realtime``, protocol v5: socket.io-client
v3/v4, Dart ``socket_io_client``), served beside the HTTP routes at ``/socket.io/``.

A thin adapter: client events become requests to the session, and each joined
socket is a cursor over the session's event log, projected to kebab-case
Socket.IO events. It decides nothing the session does not already decide.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import socketio
from fastapi import FastAPI

from voxrelay import logs, metrics
from voxrelay.auth import Device, authenticate
from voxrelay.config import SAMPLE_RATES
from voxrelay.eventlog import Cursor, ReplayGap
from voxrelay.exceptions import NoActiveSession, Unauthorized, VoxrelayError
from voxrelay.revocation import Revocations
from voxrelay.sessions import Directory, LiveSession
from voxrelay.store import Store
from voxrelay.tools import client_tools
from voxrelay.transports.socketio.packets import NAMESPACE, event_packet

log = logging.getLogger(__name__)

# python-engineio drops (with a logged error, the POST still answered 200) a
# long-polling body of more than 16 packets by default. A polling client
# streaming 20 ms audio chunks sends 50-100 packets a second and batches all
# that waited behind the previous POST: on a slow link that is far more than 16.
# The body size stays bounded by ``socketio_max_payload_bytes``.
MAX_PACKETS_PER_POLL = 1024

# Log event type -> Socket.IO event name. Types not listed travel kebab-cased.
_EVENT_NAMES = {
    "transcript": "transcript",
    "audio": "ai-audio",
    "speech_started": "speech-started",
    "speech_stopped": "speech-stopped",
    "response_started": "response-started",
    "response_done": "response-done",
    "error": "error",
    "conversation_ended": "session-ended",
}
# The socket already learnt these at join (``session-joined``).
_NOT_FORWARDED = frozenset({"conversation_started"})

Ack = dict[str, Any]


class _RequestError(Exception):
    """A client event that cannot be applied: answered ``error``, the socket stays up."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> _RequestError:
    return _RequestError("invalid_request", message)


@dataclass(eq=False)
class _Joined:
    """One socket joined to one session: its listener slot and its forwarder."""

    session: LiveSession
    stack: contextlib.ExitStack
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Link:
    """What the server keeps about one connected socket."""

    device: Device
    requested_user: str | None
    joined: _Joined | None = None
    # The session this socket was in when that session ended, for clearer errors.
    ended: LiveSession | None = None
    closed: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Held while connected: the watch on the device's token.
    watching: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # What this socket's log lines are about (``extra=``).
    fields: dict[str, str] = field(default_factory=dict)


class RealtimeNamespace:
    """Handlers of the ``/realtime`` namespace of one app."""

    def __init__(self, sio: socketio.AsyncServer, app: FastAPI) -> None:
        self._sio = sio
        self._app = app
        self._links: dict[str, _Link] = {}
        handlers: dict[str, Callable[[_Link, str, tuple[Any, ...]], Awaitable[Ack]]] = {
            "join-session": self._join,
            "audio-chunk": self._audio,
            "commit-audio": self._commit,
            "text-message": self._text,
            "interrupt": self._interrupt,
            "tool-result": self._tool_result,
            "declare-tools": self._declare_tools,
            "end-session": self._end,
        }
        sio.on("connect", self._connect, namespace=NAMESPACE)
        sio.on("disconnect", self._disconnect, namespace=NAMESPACE)
        for name, handler in handlers.items():
            sio.on(name, self._request(name, handler), namespace=NAMESPACE)
        sio.on("*", self._unknown, namespace=NAMESPACE)

    @property
    def _store(self) -> Store:
        store: Store = self._app.state.store
        return store

    @property
    def _directory(self) -> Directory:
        directory: Directory = self._app.state.directory
        return directory

    # -- connection ------------------------------------------------------------------

    def _from_client(self, sid: str) -> bool:
        """Whether a ``connect``/``disconnect`` call is a client event of that name,
        which python-socketio hands to the same handlers: a socket is never connected
        while its own connect or disconnect is handled."""
        connected: bool = self._sio.manager.is_connected(sid, NAMESPACE)
        return connected

    async def _connect(self, sid: str, environ: Any = None, auth: Any = None) -> Ack | None:
        if self._from_client(sid):
            return await self._unknown("connect", sid)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        given = auth if isinstance(auth, dict) else {}
        try:
            device = await authenticate(
                self._store, _token(given, environ, query), self._app.state.revocations.known
            )
        except Unauthorized as error:
            client = (environ.get("asgi.scope") or {}).get("client") or (None,)
            log.warning(
                "authentication refused: %s",
                error.message,
                extra={"transport": "socketio", "client": client[0]},
            )
            raise _refused(error.code, error.message) from None
        except Exception:
            log.exception("socket.io connect of %s failed", sid)
            raise _refused("internal_error", "the server could not check the token") from None
        user = given.get("userId")
        if not isinstance(user, str) or not user:
            users = query.get("userId")
            user = users[0] if users else None
        if user:
            try:
                device.acting_user(user)  # refused now rather than at every join
            except VoxrelayError as error:
                raise _refused(error.code, error.message) from None
        link = self._links[sid] = _Link(
            device, user, fields={"transport": "socketio", "device": device.name}
        )
        revocations: Revocations = self._app.state.revocations
        link.watching.enter_context(
            revocations.watch(device, lambda: self._spawn(link, self._revoked(sid)))
        )
        # The namespace's CONNECT reply goes out once this handler returns;
        # ``connected`` must follow it, so it is sent from a task.
        self._spawn(self._links[sid], self._greet(sid))
        return None

    async def _greet(self, sid: str) -> None:
        for _ in range(200):
            if self._sio.manager.is_connected(sid, NAMESPACE):
                await self._emit(sid, "connected", {"clientId": sid})
                return
            if sid not in self._links:
                return
            await asyncio.sleep(0.005)

    async def _revoked(self, sid: str) -> None:
        """The device's token was revoked: say so, then drop the socket."""
        message = "the device token was revoked"
        await self._emit(sid, "error", {"code": "unauthorized", "message": message})
        await self._sio.disconnect(sid, namespace=NAMESPACE)

    async def _disconnect(self, sid: str, reason: Any = None) -> Ack | None:
        if self._from_client(sid):
            return await self._unknown("disconnect", sid)
        link = self._links.pop(sid, None)
        if link is None:
            return None
        link.closed = True
        link.watching.close()
        await self._leave(link)
        for task in list(link.tasks):
            task.cancel()
        return None

    def _spawn(self, link: _Link, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)

    # -- client events -----------------------------------------------------------------

    def _request(
        self, name: str, handler: Callable[[_Link, str, tuple[Any, ...]], Awaitable[Ack]]
    ) -> Callable[..., Awaitable[Ack]]:
        """Every client event answers its ack; a failure also emits ``error``."""

        async def run(sid: str, *args: Any) -> Ack:
            link = self._links.get(sid)
            try:
                if link is None:
                    raise _RequestError("not_connected", "the socket is not connected")
                return {"ok": True, **await handler(link, sid, args)}
            except _RequestError as error:
                return await self._refuse(sid, name, error.code, error.message)
            except NoActiveSession:
                return await self._refuse(sid, name, "no_active_session", "the session has ended")
            except VoxrelayError as error:
                return await self._refuse(sid, name, error.code, error.message)
            except Exception:
                log.exception(
                    "socket.io %s from %s failed", name, sid, extra=link.fields if link else None
                )
                message = "the server failed to handle this event"
                return await self._refuse(sid, name, "internal_error", message)

        return run

    async def _refuse(self, sid: str, event: str, code: str, message: str) -> Ack:
        error = {"code": code, "message": message}
        await self._emit(sid, "error", {**error, "event": event})
        return {"ok": False, "error": error}

    async def _unknown(self, event: str, sid: str, *args: Any) -> Ack:
        return await self._refuse(sid, event, "invalid_request", f"unknown event {event!r}")

    async def _join(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        data = _payload(args, required=True)
        session_id = data.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            raise _invalid("sessionId (a string) is required")
        # A service names its user here or at connect; a device may name only its own.
        user = data.get("userId")
        if user is not None and not isinstance(user, str):
            raise _invalid("userId must be a string")
        user_id = link.device.acting_user(user or link.requested_user)
        session = await self._directory.session(session_id, user_id)
        if session is None:
            raise _RequestError("not_found", "session not found")
        joined_data = _joined_json(session)
        current = link.joined
        if current is not None and current.session is session:
            await self._emit(sid, "session-joined", joined_data)
            return joined_data
        await self._leave(link)
        stack = contextlib.ExitStack()
        stack.enter_context(session.attached())
        gauge = metrics.ACTIVE_STREAMS.labels(transport="socketio")
        gauge.inc()
        stack.callback(gauge.dec)
        joined = link.joined = _Joined(session, stack)
        link.ended = None
        link.fields.update(conversation_id=session.conversation_id, session_id=session.id)
        # From now on: a device that joins late hears no old audio.
        cursor = session.log.cursor()
        await self._emit(sid, "session-joined", joined_data)
        if link.joined is joined and not link.closed:
            joined.task = asyncio.get_running_loop().create_task(
                self._forward(sid, link, joined, cursor), name=f"socketio-{sid}"
            )
        return joined_data

    async def _audio(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        received_at = time.monotonic()
        rate: int | None = None
        data = args[0] if len(args) == 1 else None
        if isinstance(data, bytes | bytearray | memoryview):
            pcm = bytes(data)
        elif isinstance(data, dict):
            audio = data.get("audio")
            if isinstance(audio, bytes | bytearray | memoryview):
                pcm = bytes(audio)
            elif isinstance(audio, str):
                try:
                    pcm = base64.b64decode(audio, validate=True)
                except (binascii.Error, ValueError):
                    raise _invalid("audio is not valid base64") from None
            else:
                raise _invalid("audio (base64 PCM16 or binary) is required")
            given_rate = data.get("sampleRate")
            if given_rate is not None:
                if type(given_rate) is not int or given_rate not in SAMPLE_RATES:
                    rates = ", ".join(map(str, SAMPLE_RATES))
                    raise _invalid(f"sampleRate must be one of {rates}")
                rate = given_rate
        else:
            raise _invalid('send {"audio": "<base64>"} or binary PCM16 bytes')
        session = self._session(link)
        if pcm:
            metrics.AUDIO_IN["socketio"].inc(len(pcm))
            await session.send_audio(pcm, rate, transport="socketio", received_at=received_at)
        return {"bytesReceived": len(pcm)}

    async def _commit(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        _payload(args, required=False)
        await self._session(link).commit()
        return {}

    async def _text(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        data = _payload(args, required=True)
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _invalid("text (a non-empty string) is required")
        item_id = await self._session(link).send_text(text)
        return {"itemId": item_id}

    async def _interrupt(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        data = _payload(args, required=False)
        played = data.get("playedMs")
        if played is not None and (
            isinstance(played, bool) or not isinstance(played, int | float) or played < 0
        ):
            raise _invalid("playedMs must be a number of milliseconds, 0 or more")
        await self._session(link).interrupt(None if played is None else int(played))
        return {}

    async def _tool_result(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        data = _payload(args, required=True)
        call_id = data.get("callId")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid("callId (a string) is required")
        if "output" not in data:
            raise _invalid("output (any JSON value) is required")
        await self._session(link).tool_result(call_id, data["output"])
        return {}

    async def _declare_tools(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        data = _payload(args, required=True)
        if not isinstance(data.get("tools"), list):
            raise _invalid("tools (a list of function tools) is required")
        tools = client_tools(data["tools"])
        await self._session(link).set_tools(tuple(tool.upstream() for tool in tools))
        return {"tools": [tool.name for tool in tools]}

    async def _end(self, link: _Link, sid: str, args: tuple[Any, ...]) -> Ack:
        _payload(args, required=False)
        joined = link.joined
        if joined is None and link.ended is not None:
            # Ending an ended session answers the same (as POST /realtime/end does).
            return {"conversationId": link.ended.conversation_id, "status": "ended"}
        session = self._session(link)
        await session.end("client_end")
        # ``session-ended`` reaches the socket before this ack does.
        if joined is not None and joined.task is not None:
            await asyncio.wait({joined.task}, timeout=5)
        return {"conversationId": session.conversation_id, "status": "ended"}

    def _session(self, link: _Link) -> LiveSession:
        if link.joined is None:
            if link.ended is not None:
                raise _RequestError("no_active_session", "the session has ended")
            raise _RequestError("not_joined", "join a session first (join-session)")
        session = link.joined.session
        if not session.active:
            raise _RequestError("no_active_session", "the session has ended")
        return session

    # -- server events -----------------------------------------------------------------

    async def _forward(self, sid: str, link: _Link, joined: _Joined, cursor: Cursor) -> None:
        session = joined.session
        logs.bind(**link.fields)
        latency = metrics.DOWNSTREAM_LATENCY["socketio"]
        eio = self._sio.eio
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        audio_rate = b',"sampleRate":%d}' % session.output_rate
        try:
            while await cursor.wait():
                for item in cursor.take():
                    if isinstance(item, ReplayGap):
                        # This socket fell further behind than the log holds.
                        message = (
                            f"events {item.requested_after + 1}..{item.resumed_at - 1} are no"
                            f" longer held; resuming at {item.resumed_at}"
                        )
                        await self._emit(sid, "error", {"code": "replay_gap", "message": message})
                    elif item.type == "audio":
                        # The log's JSON, not encoded again: a Socket.IO EVENT packet
                        # written straight to the socket's Engine.IO queue.
                        await eio.send(eio_sid, event_packet("ai-audio", item.json, audio_rate))
                        latency.observe(time.monotonic() - item.at)
                    elif item.type not in _NOT_FORWARDED:
                        await eio.send(eio_sid, event_packet(_event_name(item.type), item.json))
            link.ended = session
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("forwarding session %s to socket %s failed", session.id, sid)
        finally:
            if link.joined is joined:
                link.joined = None
            joined.stack.close()

    async def _leave(self, link: _Link) -> None:
        joined, link.joined = link.joined, None
        if joined is None:
            return
        task = joined.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})
        joined.stack.close()

    async def _emit(self, sid: str, event: str, data: dict[str, Any]) -> None:
        await self._sio.emit(event, data, to=sid, namespace=NAMESPACE)


def _token(
    auth: dict[str, Any], environ: dict[str, Any], query: dict[str, list[str]]
) -> str | None:
    given = auth.get("token")
    if isinstance(given, str) and given.strip():
        scheme, _, value = given.strip().partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else given.strip()
    scheme, _, value = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    tokens = query.get("access_token")
    return tokens[0] if tokens else None


def _refused(code: str, message: str) -> Exception:
    """Refuses the connection: the client's ``connect_error`` gets ``message``, and
    ``data`` ``{"code", "message"}`` (``err.data`` in socket.io-client)."""
    error: Exception = socketio.exceptions.ConnectionRefusedError(
        message, {"code": code, "message": message}
    )
    return error


def _payload(args: tuple[Any, ...], *, required: bool) -> dict[str, Any]:
    """The one JSON object an event carries (optional for bare commands)."""
    if not args or (len(args) == 1 and args[0] is None):
        if required:
            raise _invalid("this event needs a JSON object payload")
        return {}
    if len(args) != 1 or not isinstance(args[0], dict):
        raise _invalid("the payload must be one JSON object")
    data: dict[str, Any] = args[0]
    return data


def _joined_json(session: LiveSession) -> dict[str, Any]:
    return {
        "sessionId": session.id,
        "conversationId": session.conversation_id,
        "status": "active",
        "inputSampleRate": session.input_rate,
        "outputSampleRate": session.output_rate,
        "turnDetection": session.turn_detection,
    }


def _event_name(log_type: str) -> str:
    return _EVENT_NAMES.get(log_type) or log_type.replace("_", "-")
