"""Sessions reached through the worker that owns them.

Each worker listens on a Unix socket of the run directory for its siblings.
Over it, a worker that holds a client but not the client's session (a
Socket.IO socket joining a session of another worker, a request naming a
conversation only in its body) asks the owner to start, find, feed, commit,
answer, interrupt or end the session, and follows the session's event log: the
owner streams each new event, which lands in a local mirror of the log, so the
transports read a ``RemoteSession`` exactly as they read a local one.

Frames: ``!II`` (length of what follows, length of the header), a JSON header,
then raw bytes (audio, or packed log events). Frames sent in one turn of the
event loop leave in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from voxrelay import metrics
from voxrelay.errors import ApiError
from voxrelay.eventlog import Cursor, Event, EventLog
from voxrelay.providers.base import SessionOptions, TurnDetection
from voxrelay.session import EndReason, Reads, Session, SessionEnded
from voxrelay.workers.ownership import Ownership

if TYPE_CHECKING:
    from voxrelay.hub import SessionHub

log = logging.getLogger(__name__)

_FRAME = struct.Struct("!II")
# One log event: id, time, type length, JSON length; then the type and the JSON.
_EVENT = struct.Struct("!IdHI")
_MAX_FRAME = 64 << 20
_CONNECT_ATTEMPTS = 50

Header = dict[str, Any]


def socket_path(rundir: Path, worker: int) -> Path:
    return rundir / f"worker-{worker}.sock"


# -- framing ----------------------------------------------------------------------------


class _Channel(asyncio.Protocol):
    """Framed messages both ways on one connection between two workers."""

    def __init__(self, on_frame: Callable[[Header, bytes], None], on_lost: Callable[[], None]):
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= _FRAME.size:
            size, header_size = _FRAME.unpack_from(buffer, offset)
            if size > _MAX_FRAME or header_size > size:
                log.error("closing a worker link that sent a malformed frame")
                self.close()
                return
            start = offset + _FRAME.size
            if len(buffer) - start < size:
                break
            header = orjson.loads(memoryview(buffer)[start : start + header_size])
            payload = bytes(buffer[start + header_size : start + size])
            offset = start + size
            try:
                self._on_frame(header, payload)
            except Exception:
                log.exception("handling a frame from another worker failed")
        if offset:
            del buffer[:offset]

    def send(self, header: Header, payload: bytes = b"") -> None:
        if self.closed:
            return
        head = orjson.dumps(header)
        self._out.append(_FRAME.pack(len(head) + len(payload), len(head)) + head + payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost()


def _pack_events(entries: list[tuple[int, str, float, bytes]]) -> bytes:
    parts: list[bytes] = []
    for event_id, kind, at, json in entries:
        name = kind.encode()
        parts += (_EVENT.pack(event_id, at, len(name), len(json)), name, json)
    return b"".join(parts)


def _unpack_events(payload: bytes) -> Iterator[tuple[int, str, float, bytes]]:
    offset = 0
    while offset < len(payload):
        event_id, at, name_size, json_size = _EVENT.unpack_from(payload, offset)
        offset += _EVENT.size
        kind = payload[offset : offset + name_size].decode()
        offset += name_size
        yield event_id, kind, at, payload[offset : offset + json_size]
        offset += json_size


# -- a session this worker owns, described for another -------------------------------------


def describe(session: Session) -> Header:
    return {
        "id": session.id,
        "conversationId": session.conversation_id,
        "userId": session.user_id,
        "createdAt": session.created_at.isoformat(),
        "status": session.status,
        "inputRate": session.input_rate,
        "outputRate": session.output_rate,
        "turnDetection": session.turn_detection,
        "lastId": session.log.last_id,
    }


def _error(error: BaseException) -> Header:
    if isinstance(error, SessionEnded):
        return {"code": "no_active_session", "message": "the session has ended", "status": 409}
    if isinstance(error, RuntimeError):  # the owner is shutting down
        return {"code": "server_shutdown", "message": str(error), "status": 503}
    if isinstance(error, ApiError):
        return {"code": error.code, "message": error.message, "status": error.status}
    return {"code": "internal_error", "message": "the owning worker failed", "status": 500}


class _Served:
    """One sibling's connection to this worker: what it asked of our sessions."""

    def __init__(self, hub: SessionHub) -> None:
        self._hub = hub
        self.channel = _Channel(self._on_frame, self._on_lost)
        # Requests about one session apply in the order they came (audio before the
        # commit that ends its turn), through one task.
        self._ordered: deque[tuple[Header, bytes]] = deque()
        self._ordering: asyncio.Task[None] | None = None
        self._follows: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _on_frame(self, header: Header, payload: bytes) -> None:
        op = header.get("op")
        if op in ("audio", "commit", "text", "interrupt", "end", "end_if_last"):
            self._ordered.append((header, payload))
            if self._ordering is None or self._ordering.done():
                self._ordering = asyncio.get_running_loop().create_task(self._apply_in_order())
        elif op == "follow":
            self._follow(header)
        elif op == "unfollow":
            task = self._follows.pop(int(header["stream"]), None)
            if task is not None:
                task.cancel()
        else:
            task = asyncio.get_running_loop().create_task(self._answer(header))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, header: Header) -> None:
        reply: Header = {"op": "reply", "id": header.get("id")}
        try:
            reply.update(await self._handle(header))
        except Exception as error:
            if not isinstance(error, SessionEnded | ApiError | RuntimeError):
                log.exception("a request from another worker failed")
            reply["error"] = _error(error)
        self.channel.send(reply)

    async def _handle(self, header: Header) -> Header:
        hub = self._hub
        op = header.get("op")
        if op == "find":
            found: Session | None
            if "session" in header:
                found = hub.get(str(header["session"]))
            else:
                found = hub.for_conversation(str(header["conversation"]))
            if found is None or not found.active:
                return {"session": None}
            return {"session": describe(found)}
        if op == "metrics":
            return {"text": metrics.generate().decode()}
        if op == "start":
            session, new = await hub.start_anywhere(
                user_id=str(header["user"]),
                conversation_id=str(header["conversation"]),
                input_rate=int(header["inputRate"]),
                output_rate=int(header["outputRate"]),
                options=SessionOptions(**header["options"]),
                join_active=bool(header["joinActive"]),
            )
            assert isinstance(session, Session)  # this worker owns the conversation
            return {"session": describe(session), "new": new}
        raise ApiError(400, "invalid_request", f"unknown request {op!r}")

    async def _apply_in_order(self) -> None:
        while self._ordered:
            header, payload = self._ordered.popleft()
            op = header["op"]
            session = self._hub.get(str(header["session"]))
            try:
                if session is None:
                    raise SessionEnded(str(header["session"]))
                result: Any = None
                if op == "audio":
                    await session.send_audio(
                        payload,
                        int(header["rate"]) or None,
                        transport=str(header.get("transport", "")),
                        received_at=float(header.get("at", 0.0)),
                    )
                elif op == "commit":
                    await session.commit()
                elif op == "text":
                    result = await session.send_text(str(header["text"]), header.get("itemId"))
                elif op == "interrupt":
                    played = header.get("playedMs")
                    await session.interrupt(None if played is None else int(played))
                elif op == "end_if_last":
                    result = await session.end_if_last(header.get("reason") or "client_end")
                else:
                    reason: EndReason = header.get("reason") or "client_end"
                    await session.end(reason)
                if "id" in header:
                    self.channel.send({"op": "reply", "id": header["id"], "result": result})
            except Exception as error:
                if "id" in header:
                    self.channel.send({"op": "reply", "id": header["id"], "error": _error(error)})
                elif not isinstance(error, SessionEnded):
                    log.warning("audio from another worker was not taken: %s", error)

    def _follow(self, header: Header) -> None:
        stream = int(header["stream"])
        session = self._hub.get(str(header["session"]))
        if session is None or not session.active:
            self.channel.send({"op": "closed", "stream": stream})
            return
        cursor = session.log.cursor(int(header["after"]))
        task = asyncio.get_running_loop().create_task(self._stream(session, cursor, stream))
        self._follows[stream] = task

    async def _stream(self, session: Session, cursor: Cursor, stream: int) -> None:
        """Every new event of the session, to the worker that follows it (a listener of
        the session meanwhile, as a local stream would be)."""
        try:
            with session.attached():
                while await cursor.wait():
                    # A gap cannot happen here: this cursor started at the head.
                    entries = [
                        (item.id, item.type, item.at, item.json)
                        for item in cursor.take()
                        if isinstance(item, Event)
                    ]
                    if entries:
                        self.channel.send({"op": "events", "stream": stream}, _pack_events(entries))
            self.channel.send({"op": "closed", "stream": stream})
        finally:
            self._follows.pop(stream, None)

    def _on_lost(self) -> None:
        for task in list(self._follows.values()):
            task.cancel()
        self._follows.clear()


# -- another worker's session, seen from here ---------------------------------------------


class RemoteSession:
    """A session living in another worker, with the surface transports use of a
    ``Session``: its log is a mirror, filled while somebody here listens."""

    def __init__(self, peers: Peers, worker: int, description: Header) -> None:
        self._peers = peers
        self._worker = worker
        self.id: str = description["id"]
        self.conversation_id: str = description["conversationId"]
        self.user_id: str = description["userId"]
        self.created_at = datetime.fromisoformat(description["createdAt"])
        self.status: Literal["active", "ended"] = (
            "active" if description["status"] == "active" else "ended"
        )
        self.end_reason: EndReason | None = None
        self.input_rate: int = description["inputRate"]
        self.output_rate: int = description["outputRate"]
        self.turn_detection: TurnDetection = description["turnDetection"]
        self.log = EventLog(
            keep_seconds=peers.log_keep_seconds,
            max_bytes=peers.log_max_bytes,
            last_id=int(description["lastId"]),
        )
        # Upload ``seq`` numbers this worker forwarded (a retry that reaches the
        # owner instead is not known here).
        self.seqs_taken: dict[int, int] = {}
        self.listeners = 0
        self._stream: int | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    @contextlib.contextmanager
    def attached(self, *, reads: Reads = "all") -> Iterator[None]:
        """Listen: the owner streams the session's events into ``log`` meanwhile (all
        of them, whatever ``reads`` says), and counts this as one of its listeners."""
        self.listeners += 1
        if self._stream is None and self.active:
            self._stream = self._peers.follow(self._worker, self)
        try:
            yield
        finally:
            self.listeners -= 1
            if self.listeners == 0 and self._stream is not None:
                self._peers.unfollow(self._worker, self._stream)
                self._stream = None

    def copy_in(self, payload: bytes) -> None:
        for event_id, kind, at, json in _unpack_events(payload):
            self.log.copy_in(event_id, kind, at, json)
            if kind == "conversation_ended":
                self.status = "ended"
                self.end_reason = orjson.loads(json).get("reason")
                self.log.close()

    def lost(self, reason: EndReason = "server_shutdown") -> None:
        """The owner stopped streaming (the session ended, or the owner went away)."""
        self._stream = None
        if self.log.closed:
            return
        if self.status == "active":
            self.status = "ended"
            self.end_reason = reason
            self.log.append(
                "conversation_ended", {"conversationId": self.conversation_id, "reason": reason}
            )
        self.log.close()

    async def send_audio(
        self, pcm: bytes, rate: int | None = None, *, transport: str = "", received_at: float = 0.0
    ) -> None:
        if not self.active:
            raise SessionEnded(self.id)
        header = {"op": "audio", "session": self.id, "rate": rate or 0, "transport": transport}
        if received_at:
            header["at"] = received_at
        self._peers.post(self._worker, header, pcm)

    async def commit(self) -> None:
        await self._ask({"op": "commit"})

    async def send_text(self, text: str, item_id: str | None = None) -> str:
        result = await self._ask({"op": "text", "text": text, "itemId": item_id})
        return str(result)

    async def interrupt(self, played_ms: int | None = None) -> None:
        await self._ask({"op": "interrupt", "playedMs": played_ms})

    async def end(self, reason: EndReason) -> None:
        with contextlib.suppress(SessionEnded):
            await self._ask({"op": "end", "reason": reason})
        self.lost(reason)

    async def end_if_last(self, reason: EndReason) -> bool:
        if not self.active or self.listeners > 1:
            return False
        # The owner counts this worker's follow of the log as one listener.
        return bool(await self._ask({"op": "end_if_last", "reason": reason}))

    def can_restart(self) -> bool:
        return False  # settings chosen at opening stay with the owner's session

    async def _ask(self, header: Header) -> Any:
        if not self.active:
            raise SessionEnded(self.id)
        reply = await self._peers.request(self._worker, {**header, "session": self.id})
        return reply.get("result")


# -- this worker's links ------------------------------------------------------------------


class _Client:
    """This worker's connection to one sibling: requests and the streams it follows."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers
        self.channel = _Channel(self._on_frame, self._on_lost)
        self.pending: dict[int, asyncio.Future[Header]] = {}
        self.streams: dict[int, RemoteSession] = {}

    def _on_frame(self, header: Header, payload: bytes) -> None:
        op = header.get("op")
        if op == "events":
            session = self.streams.get(int(header["stream"]))
            if session is not None:
                session.copy_in(payload)
        elif op == "closed":
            session = self.streams.pop(int(header["stream"]), None)
            if session is not None:
                session.lost(session.end_reason or "server_shutdown")
        elif op == "reply":
            future = self.pending.pop(int(header["id"]), None)
            if future is not None and not future.done():
                future.set_result(header)

    def _on_lost(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ApiError(503, "upstream_unavailable", "a worker went away"))
        self.pending.clear()
        for session in self.streams.values():
            session.lost("server_shutdown")
        self.streams.clear()
        self._peers.forget(self)


class Peers:
    """This worker's side of the links between workers: the service it offers its
    siblings for the sessions it owns, and its connections to them."""

    def __init__(
        self,
        ownership: Ownership,
        rundir: Path,
        hub: SessionHub,
        *,
        log_keep_seconds: float,
        log_max_bytes: int,
    ) -> None:
        self.ownership = ownership
        self.log_keep_seconds = log_keep_seconds
        self.log_max_bytes = log_max_bytes
        self._rundir = rundir
        self._hub = hub
        self._server: asyncio.AbstractServer | None = None
        self._served: set[_Served] = set()
        self._clients: dict[int, _Client] = {}
        self._connecting: dict[int, asyncio.Task[_Client]] = {}
        self._ids = itertools.count(1)

    async def start(self) -> None:
        path = socket_path(self._rundir, self.ownership.index)
        path.unlink(missing_ok=True)

        def serve() -> _Channel:
            served = _Served(self._hub)
            self._served.add(served)
            return served.channel

        self._server = await asyncio.get_running_loop().create_unix_server(serve, str(path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self._clients.values()):
            client.channel.close()
        for served in self._served:
            served.channel.close()

    # -- requests to the owner of a session ---

    async def find(self, worker: int, **key: str) -> RemoteSession | None:
        reply = await self.request(worker, {"op": "find", **key})
        description = reply.get("session")
        return RemoteSession(self, worker, description) if description else None

    async def start_session(
        self,
        worker: int,
        *,
        user_id: str,
        conversation_id: str,
        input_rate: int,
        output_rate: int,
        options: SessionOptions,
        join_active: bool,
    ) -> tuple[RemoteSession, bool]:
        """Start (or join) the session of a conversation that ``worker`` owns."""
        reply = await self.request(
            worker,
            {
                "op": "start",
                "user": user_id,
                "conversation": conversation_id,
                "inputRate": input_rate,
                "outputRate": output_rate,
                "options": {
                    "instructions": options.instructions,
                    "voice": options.voice,
                    "language": options.language,
                    "turn_detection": options.turn_detection,
                },
                "joinActive": join_active,
            },
        )
        return RemoteSession(self, worker, reply["session"]), bool(reply["new"])

    async def metrics_of_others(self) -> list[bytes]:
        """Every other worker's metrics (those that answer within a second)."""
        others = [w for w in range(self.ownership.count) if w != self.ownership.index]

        async def of(worker: int) -> bytes:
            reply = await asyncio.wait_for(self.request(worker, {"op": "metrics"}), 1.0)
            return str(reply["text"]).encode()

        answers = await asyncio.gather(*(of(w) for w in others), return_exceptions=True)
        return [answer for answer in answers if isinstance(answer, bytes)]

    async def request(self, worker: int, header: Header) -> Header:
        client = await self._client(worker)
        request_id = next(self._ids)
        future: asyncio.Future[Header] = asyncio.get_running_loop().create_future()
        client.pending[request_id] = future
        client.channel.send({**header, "id": request_id})
        reply = await future
        error = reply.get("error")
        if error:
            if error.get("code") == "no_active_session":
                raise SessionEnded(str(header.get("session", "")))
            raise ApiError(
                int(error.get("status", 500)), str(error.get("code")), str(error.get("message"))
            )
        return reply

    def post(self, worker: int, header: Header, payload: bytes = b"") -> None:
        """Send without waiting for an answer (audio: the order is kept, failures
        surface as the session's error events)."""
        client = self._clients.get(worker)
        if client is None:
            asyncio.get_running_loop().create_task(self._post_later(worker, header, payload))
            return
        client.channel.send(header, payload)

    async def _post_later(self, worker: int, header: Header, payload: bytes) -> None:
        client = await self._client(worker)
        client.channel.send(header, payload)

    def follow(self, worker: int, session: RemoteSession) -> int:
        stream = next(self._ids)

        async def start() -> None:
            try:
                client = await self._client(worker)
            except Exception:
                session.lost()
                return
            client.streams[stream] = session
            header = {"op": "follow", "stream": stream, "session": session.id}
            client.channel.send({**header, "after": session.log.last_id})

        asyncio.get_running_loop().create_task(start())
        return stream

    def unfollow(self, worker: int, stream: int) -> None:
        client = self._clients.get(worker)
        if client is not None:
            client.streams.pop(stream, None)
            client.channel.send({"op": "unfollow", "stream": stream})

    def forget(self, client: _Client) -> None:
        for worker, known in list(self._clients.items()):
            if known is client:
                del self._clients[worker]

    async def _client(self, worker: int) -> _Client:
        client = self._clients.get(worker)
        if client is not None and not client.channel.closed:
            return client
        connecting = self._connecting.get(worker)
        if connecting is None:
            connecting = asyncio.get_running_loop().create_task(self._connect(worker))
            self._connecting[worker] = connecting
            connecting.add_done_callback(lambda _: self._connecting.pop(worker, None))
        return await asyncio.shield(connecting)

    async def _connect(self, worker: int) -> _Client:
        path = str(socket_path(self._rundir, worker))
        for attempt in range(_CONNECT_ATTEMPTS):
            client = _Client(self)
            try:
                await _connect_unix(client.channel, path)
            except OSError:
                # The sibling may still be starting.
                await asyncio.sleep(0.1 * min(attempt + 1, 10))
                continue
            self._clients[worker] = client
            return client
        raise ApiError(503, "upstream_unavailable", f"worker {worker} is not answering")


async def _connect_unix(channel: _Channel, path: str) -> None:
    await asyncio.get_running_loop().create_unix_connection(lambda: channel, path)
