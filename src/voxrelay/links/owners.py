"""This process's side of reaching sessions that others own: replies awaited and
streams followed per owner, and the requests a ``RemoteSession`` sends."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from voxrelay.exceptions import OwnerUnavailable
from voxrelay.links.channel import Header, Send, error_from
from voxrelay.links.remote import Address, RemoteRaw, RemoteSession
from voxrelay.sessions.live import EndReason
from voxrelay.spool import Spill


class OwnerClient:
    """What this process awaits from one owner: replies, and the streams it follows."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.pending: dict[int, asyncio.Future[Header]] = {}
        self.streams: dict[int, RemoteSession] = {}
        self.raw_streams: dict[int, RemoteRaw] = {}
        self.closed = False

    def on_frame(self, header: Header, payload: bytes) -> None:
        op = header.get("op")
        if op == "events":
            session = self.streams.get(int(header["stream"]))
            if session is not None:
                session.copy_in(payload)
        elif op == "raw":
            raw = self.raw_streams.get(int(header["stream"]))
            if raw is not None:
                raw.copy_in(payload)
        elif op == "closed":
            self.raw_streams.pop(int(header["stream"]), None)
            session = self.streams.pop(int(header["stream"]), None)
            if session is not None:
                session.lost(session.end_reason or "server_shutdown")
        elif op == "reply":
            future = self.pending.pop(int(header["id"]), None)
            if future is not None and not future.done():
                future.set_result(header)

    def lost(self, reason: EndReason = "server_shutdown") -> None:
        """The owner went away: what it was asked fails, what it streamed ends."""
        self.closed = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(OwnerUnavailable())
        self.pending.clear()
        for session in self.streams.values():
            session.lost(reason)
        self.streams.clear()
        self.raw_streams.clear()


Connect = Callable[[Address], Coroutine[Any, Any, OwnerClient]]


class Owners:
    """Requests to the owners of sessions, over whatever ``connect`` reaches them by
    (a Unix socket per worker, or Redis); ``RemoteSession``'s ``OwnerLink``."""

    def __init__(
        self,
        connect: Connect,
        *,
        log_keep_seconds: float,
        log_max_bytes: int,
        same_clock: bool,
        log_spill: Spill | None = None,
    ) -> None:
        self.same_clock = same_clock
        self.log_keep_seconds = log_keep_seconds
        self.log_max_bytes = log_max_bytes
        self.log_spill = log_spill
        self._connect = connect
        self.clients: dict[Address, OwnerClient] = {}
        self._connecting: dict[Address, asyncio.Task[OwnerClient]] = {}
        self._ids = itertools.count(1)

    async def request(self, owner: Address, header: Header, payload: bytes = b"") -> Header:
        client = await self.client(owner)
        request_id = next(self._ids)
        future: asyncio.Future[Header] = asyncio.get_running_loop().create_future()
        client.pending[request_id] = future
        client.send({**header, "id": request_id}, payload)
        reply = await future
        error = reply.get("error")
        if error:
            raise error_from(error)
        return reply

    def post(self, owner: Address, header: Header, payload: bytes = b"") -> None:
        """Send without waiting for an answer (audio: the order is kept, failures
        surface as the session's error events)."""
        client = self.clients.get(owner)
        if client is None or client.closed:
            asyncio.get_running_loop().create_task(self._post_later(owner, header, payload))
            return
        client.send(header, payload)

    async def _post_later(self, owner: Address, header: Header, payload: bytes) -> None:
        client = await self.client(owner)
        client.send(header, payload)

    def follow(self, owner: Address, session: RemoteSession) -> int:
        stream = next(self._ids)

        async def start() -> None:
            try:
                client = await self.client(owner)
            except Exception:
                session.lost()
                return
            client.streams[stream] = session
            header = {"op": "follow", "stream": stream, "session": session.id}
            client.send({**header, "after": session.log.last_id}, b"")

        asyncio.get_running_loop().create_task(start())
        return stream

    def follow_raw(self, owner: Address, session_id: str, raw: RemoteRaw) -> int:
        """Stream the upstream's own events of the owner's session into ``raw``."""
        stream = next(self._ids)

        async def start() -> None:
            try:
                client = await self.client(owner)
            except Exception:
                return  # the session's own stream reports the owner gone
            client.raw_streams[stream] = raw
            client.send({"op": "follow_raw", "stream": stream, "session": session_id}, b"")

        asyncio.get_running_loop().create_task(start())
        return stream

    def hold(self, owner: Address, session_id: str) -> int:
        """Count a listener of the owner's session that reads nothing (until unfollowed)."""
        stream = next(self._ids)
        self.post(owner, {"op": "hold", "stream": stream, "session": session_id})
        return stream

    def unfollow(self, owner: Address, stream: int) -> None:
        client = self.clients.get(owner)
        if client is not None:
            client.streams.pop(stream, None)
            client.raw_streams.pop(stream, None)
            client.send({"op": "unfollow", "stream": stream}, b"")

    def forget(self, owner: Address, reason: EndReason = "server_shutdown") -> None:
        """``owner`` is gone: fail what it was asked and end what it streamed."""
        client = self.clients.pop(owner, None)
        if client is not None:
            client.lost(reason)

    async def client(self, owner: Address) -> OwnerClient:
        client = self.clients.get(owner)
        if client is not None and not client.closed:
            return client
        connecting = self._connecting.get(owner)
        if connecting is None:
            connecting = asyncio.get_running_loop().create_task(self._connected(owner))
            self._connecting[owner] = connecting
            connecting.add_done_callback(lambda _: self._connecting.pop(owner, None))
        return await asyncio.shield(connecting)

    async def _connected(self, owner: Address) -> OwnerClient:
        # Known as the owner's client the moment it exists: a request starting in the
        # turn the connection is made finds it, rather than making a second one that
        # would take the replies meant for the first.
        client = self.clients[owner] = await self._connect(owner)
        return client
