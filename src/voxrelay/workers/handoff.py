"""Long-lived requests reach the worker that owns their session.

A worker reads the request line of each request before uvicorn parses it. When
the request names a conversation, session or Engine.IO socket that another
worker owns (an event stream, an upload, a commit, a WebSocket upgrade, a
Socket.IO poll...), the connection itself moves there: its socket goes to the
owner over a Unix socket (``SCM_RIGHTS``) with the bytes already read, and the
owner's uvicorn carries on as if it had accepted the connection. The audio then
flows straight between the client and the owner, at no cost per chunk.

This happens at request boundaries: at a connection's first request and at
each one that follows its predecessor's response (HTTP keep-alive). Requests
that a client pipelines behind an unfinished one stay where they are, as do
requests whose conversation is named only in the body; those reach their
session through ``link``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voxrelay.workers.ownership import Ownership

log = logging.getLogger(__name__)

# Longest request line looked at (the query may carry an access token).
_MAX_REQUEST_LINE = 16 << 10
_MAX_HANDED_BYTES = 256 << 10

# Routes whose query names the conversation (or, first, the session) they are about.
_BY_QUERY = {
    b"/realtime/stream": ("sessionId", "conversationId"),
    b"/realtime/upload": ("conversationId",),
    b"/realtime/commit": ("conversationId",),
    b"/realtime/interrupt": ("conversationId",),
    b"/realtime/end": ("conversationId",),
    b"/v1/realtime": ("conversationId",),
    # An Engine.IO socket's own id; before it has one, the session a client says it
    # will join (an optional ``sessionId`` in the connection's query, so that the
    # socket opens in the worker of its session).
    b"/socket.io/": ("sid", "sessionId"),
    b"/socket.io": ("sid", "sessionId"),
}
# Routes whose path ends with the id.
_BY_PATH = (b"/realtime/session/", b"/conversations/")


def route_key(target: bytes) -> str | None:
    """The id a request target is about, when it decides the worker; else None."""
    path, _, query = target.partition(b"?")
    names = _BY_QUERY.get(path)
    if names is not None:
        if not query:
            return None
        values = parse_qs(query.decode("latin-1"))
        for name in names:
            given = values.get(name)
            if given and given[0]:
                return given[0]
        return None
    for prefix in _BY_PATH:
        if path.startswith(prefix) and len(path) > len(prefix) and b"/" not in path[len(prefix) :]:
            return path[len(prefix) :].decode("latin-1")
    return None


def handoff_path(rundir: Path, worker: int) -> Path:
    return rundir / f"worker-{worker}.handoff"


class Handoff:
    """Sends connections to their owner, and adopts those sent here."""

    def __init__(self, ownership: Ownership, rundir: Path) -> None:
        self.ownership = ownership
        self._rundir = rundir
        self._senders: dict[int, socket.socket] = {}
        self._listener: socket.socket | None = None
        self._receivers: set[socket.socket] = set()

    def owner_for(self, request_line: bytes) -> int | None:
        """The worker that should serve this request, when it is not this one."""
        parts = request_line.split(b" ")
        if len(parts) != 3:
            return None
        key = route_key(parts[1])
        if key is None or self.ownership.owns(key):
            return None
        return self.ownership.owner(key)

    def send(self, owner: int, connection: socket.socket, data: bytes) -> bool:
        """Pass ``connection`` and the bytes read from it to ``owner``; False when that
        cannot be done at once (the caller then serves the request itself)."""
        if len(data) > _MAX_HANDED_BYTES:
            return False
        try:
            sender = self._senders.get(owner)
            if sender is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                sender.connect(str(handoff_path(self._rundir, owner)))
                sender.setblocking(False)
                self._senders[owner] = sender
            socket.send_fds(sender, [data], [connection.fileno()])
        except OSError as error:
            log.warning("could not hand a connection to worker %d: %s", owner, error)
            broken = self._senders.pop(owner, None)
            if broken is not None:
                broken.close()
            return False
        return True

    # -- receiving ---

    def listen(self, adopt: Callable[[socket.socket, bytes], None]) -> None:
        """Accept connections handed here; ``adopt(sock, data)`` takes each one."""
        path = handoff_path(self._rundir, self.ownership.index)
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(str(path))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        loop = asyncio.get_running_loop()

        def accept() -> None:
            try:
                receiver, _ = listener.accept()
            except BlockingIOError:
                return
            receiver.setblocking(False)
            self._receivers.add(receiver)
            loop.add_reader(receiver.fileno(), receive, receiver)

        def receive(receiver: socket.socket) -> None:
            while True:
                try:
                    data, fds, _, _ = socket.recv_fds(receiver, _MAX_HANDED_BYTES, 1)
                except BlockingIOError:
                    return
                except OSError:
                    data, fds = b"", []
                if not data and not fds:
                    loop.remove_reader(receiver.fileno())
                    self._receivers.discard(receiver)
                    receiver.close()
                    return
                for fd in fds[1:]:
                    os.close(fd)
                if fds:
                    adopt(socket.socket(fileno=fds[0]), data)

        loop.add_reader(listener.fileno(), accept)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in [self._listener, *self._receivers]:
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()


class HandingOffHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol that first reads where each request is going, and
    hands the connection to the owning worker when it is another one."""

    handoff: Handoff  # set on a subclass made for each server (``protocol_for``)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unrouted = b""
        self._at_request_start = True
        self._begun = 0
        self._completed = 0
        self._adopted_data: bytes | None = None

    def adopt(self, data: bytes) -> None:
        """This connection was handed here with ``data`` already read from it."""
        self._adopted_data = data
        self._at_request_start = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        data, self._adopted_data = self._adopted_data, None
        if data:
            # Before the transport reads anything more: the handed bytes come first.
            super().data_received(data)

    def data_received(self, data: bytes) -> None:
        if not self._at_request_start:
            super().data_received(data)
            return
        data = self._unrouted + data if self._unrouted else data
        end = data.find(b"\r\n")
        if end < 0 and len(data) < _MAX_REQUEST_LINE:
            self._unrouted = data  # the request line is still coming
            self._unset_keepalive_if_required()
            return
        self._unrouted = b""
        self._at_request_start = False
        owner = self.handoff.owner_for(data[:end] if end >= 0 else data)
        if owner is not None and self._hand_to(owner, data):
            return
        super().data_received(data)

    def _hand_to(self, owner: int, data: bytes) -> bool:
        connection = self.transport.get_extra_info("socket")
        if connection is None or self.transport.get_extra_info("sslcontext") is not None:
            return False
        if not self.handoff.send(owner, connection, data):
            return False
        # The owner holds the connection now: forget it here without closing it for
        # the client (this worker's copy of the socket only).
        self.connections.discard(self)
        self.transport.abort()
        return True

    def on_message_begin(self) -> None:
        self._begun += 1
        super().on_message_begin()

    def on_message_complete(self) -> None:
        self._completed += 1
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Keep-alive: the next bytes start a new request, unless some were pipelined.
        if self._begun == self._completed and not self.pipeline:
            self._at_request_start = True


def protocol_for(handoff: Handoff) -> type[HandingOffHttpProtocol]:
    """The protocol class a server's uvicorn makes connections with."""
    return type("HandingOffHttpProtocol", (HandingOffHttpProtocol,), {"handoff": handoff})
