"""Sessions reached through the worker that owns them: the workers' ``Elsewhere``.

Each worker listens on a Unix socket of the run directory for its siblings.
Over it, a worker that holds a client but not the client's session (a
Socket.IO socket joining a session of another worker, a request naming a
conversation only in its body) asks the owner to start, find, feed, commit,
answer, interrupt or end the session, and follows the session's event log: the
owner streams each new event, which lands in a local mirror of the log, so the
transports read a ``RemoteSession`` exactly as they read a local one.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from voxrelay.exceptions import OwnerUnavailable
from voxrelay.sessions import Registry, StartRequest
from voxrelay.workers.channel import Channel, Header, error_from, socket_path
from voxrelay.workers.ownership import Ownership
from voxrelay.workers.remote import RemoteSession
from voxrelay.workers.serving import Served

_CONNECT_ATTEMPTS = 50


class _Client:
    """This worker's connection to one sibling: requests and the streams it follows."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers
        self.channel = Channel(self._on_frame, self._on_lost)
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
                future.set_exception(OwnerUnavailable("a worker went away"))
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
        registry: Registry,
        *,
        log_keep_seconds: float,
        log_max_bytes: int,
    ) -> None:
        self.ownership = ownership
        self.log_keep_seconds = log_keep_seconds
        self.log_max_bytes = log_max_bytes
        self._rundir = rundir
        self._registry = registry
        self._server: asyncio.AbstractServer | None = None
        self._served: set[Served] = set()
        self._clients: dict[int, _Client] = {}
        self._connecting: dict[int, asyncio.Task[_Client]] = {}
        self._ids = itertools.count(1)

    async def listen(self) -> None:
        path = socket_path(self._rundir, self.ownership.index)
        path.unlink(missing_ok=True)

        def serve() -> Channel:
            served = Served(self._registry)
            self._served.add(served)
            return served.channel

        self._server = await asyncio.get_running_loop().create_unix_server(serve, str(path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self._clients.values()):
            client.channel.close()
        for served in self._served:
            served.close()

    # -- Elsewhere ---

    def owns(self, key: str) -> bool:
        return self.ownership.owns(key)

    def new_id(self, prefix: str) -> str:
        return self.ownership.new_id(prefix)

    async def find(
        self, *, session_id: str | None = None, conversation_id: str | None = None
    ) -> RemoteSession | None:
        key = {"session": session_id} if session_id else {"conversation": conversation_id}
        worker = self.ownership.owner(str(session_id or conversation_id))
        reply = await self.request(worker, {"op": "find", **key})
        description = reply.get("session")
        return RemoteSession(self, worker, description) if description else None

    async def start(self, request: StartRequest) -> tuple[RemoteSession, bool]:
        worker = self.ownership.owner(request.conversation_id)
        reply = await self.request(worker, {"op": "start", "request": request.to_dict()})
        return RemoteSession(self, worker, reply["session"]), bool(reply["new"])

    async def call(self, key: str, name: str, args: dict[str, Any]) -> Any:
        worker = self.ownership.owner(key)
        reply = await self.request(worker, {"op": "call", "name": name, "args": args})
        return reply.get("result")

    # -- what every worker answers ---

    async def metrics_of_others(self) -> list[bytes]:
        """Every other worker's metrics (those that answer within a second)."""
        others = [w for w in range(self.ownership.count) if w != self.ownership.index]

        async def of(worker: int) -> bytes:
            reply = await asyncio.wait_for(self.request(worker, {"op": "metrics"}), 1.0)
            return str(reply["text"]).encode()

        answers = await asyncio.gather(*(of(w) for w in others), return_exceptions=True)
        return [answer for answer in answers if isinstance(answer, bytes)]

    # -- OwnerLink: how a RemoteSession reaches its owner ---

    async def request(self, worker: int, header: Header) -> Header:
        client = await self._client(worker)
        request_id = next(self._ids)
        future: asyncio.Future[Header] = asyncio.get_running_loop().create_future()
        client.pending[request_id] = future
        client.channel.send({**header, "id": request_id})
        reply = await future
        error = reply.get("error")
        if error:
            raise error_from(error)
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
        raise OwnerUnavailable(f"worker {worker} is not answering")


async def _connect_unix(channel: Channel, path: str) -> None:
    await asyncio.get_running_loop().create_unix_connection(lambda: channel, path)
