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
from pathlib import Path
from typing import Any

from voxrelay.exceptions import OwnerUnavailable
from voxrelay.links.channel import Channel
from voxrelay.links.owners import OwnerClient, Owners
from voxrelay.links.remote import Address, RemoteSession
from voxrelay.links.serving import Served
from voxrelay.sessions import Registry, StartRequest
from voxrelay.spool import Spill
from voxrelay.workers.ownership import Ownership

_CONNECT_ATTEMPTS = 50


def socket_path(rundir: Path, worker: int) -> Path:
    return rundir / f"worker-{worker}.sock"


class Peers:
    """This worker's side of the links between workers: the service it offers its
    siblings for the sessions it owns, and its requests to theirs."""

    def __init__(
        self,
        ownership: Ownership,
        rundir: Path,
        registry: Registry,
        *,
        log_keep_seconds: float,
        log_max_bytes: int,
        log_spill: Spill | None = None,
    ) -> None:
        self.ownership = ownership
        self._rundir = rundir
        self._registry = registry
        self._server: asyncio.AbstractServer | None = None
        self._served: set[Channel] = set()
        self._channels: dict[Address, Channel] = {}
        self.owners = Owners(
            self._connect,
            log_keep_seconds=log_keep_seconds,
            log_max_bytes=log_max_bytes,
            log_spill=log_spill,
            same_clock=True,
        )

    async def listen(self) -> None:
        path = socket_path(self._rundir, self.ownership.index)
        path.unlink(missing_ok=True)

        def serve() -> Channel:
            channel = Channel()
            served = Served(self._registry, channel.send)
            channel.deliver_to(served.on_frame, served.lost)
            self._served.add(channel)
            return channel

        self._server = await asyncio.get_running_loop().create_unix_server(serve, str(path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for channel in [*self._channels.values(), *self._served]:
            channel.close()

    # -- Elsewhere ---

    async def here(self, key: str, *, claim: bool = False) -> bool:
        return self.ownership.owns(key)

    def new_id(self, prefix: str) -> str:
        return self.ownership.new_id(prefix)

    async def find(
        self, *, session_id: str | None = None, conversation_id: str | None = None
    ) -> RemoteSession | None:
        key = {"session": session_id} if session_id else {"conversation": conversation_id}
        worker = self.ownership.owner(str(session_id or conversation_id))
        reply = await self.owners.request(worker, {"op": "find", **key})
        description = reply.get("session")
        return RemoteSession(self.owners, worker, description) if description else None

    async def start(self, request: StartRequest) -> tuple[RemoteSession, bool]:
        worker = self.ownership.owner(request.conversation_id)
        reply = await self.owners.request(worker, {"op": "start", "request": request.to_dict()})
        return RemoteSession(self.owners, worker, reply["session"]), bool(reply["new"])

    async def call(self, key: str, name: str, args: dict[str, Any]) -> Any:
        worker = self.ownership.owner(key)
        reply = await self.owners.request(worker, {"op": "call", "name": name, "args": args})
        return reply.get("result")

    async def release(self, key: str) -> None:
        return None  # ownership is a hash: nothing to give back

    # -- what every worker answers ---

    async def metrics_of_others(self) -> list[bytes]:
        """Every other worker's metrics (those that answer within a second)."""
        others = [w for w in range(self.ownership.count) if w != self.ownership.index]

        async def of(worker: int) -> bytes:
            reply = await asyncio.wait_for(self.owners.request(worker, {"op": "metrics"}), 1.0)
            return str(reply["text"]).encode()

        answers = await asyncio.gather(*(of(w) for w in others), return_exceptions=True)
        return [answer for answer in answers if isinstance(answer, bytes)]

    async def _connect(self, worker: Address) -> OwnerClient:
        path = str(socket_path(self._rundir, int(worker)))
        for attempt in range(_CONNECT_ATTEMPTS):
            channel = Channel()
            client = OwnerClient(channel.send)
            channel.deliver_to(client.on_frame, client.lost)
            try:
                await _connect_unix(channel, path)
            except OSError:
                # The sibling may still be starting.
                await asyncio.sleep(0.1 * min(attempt + 1, 10))
                continue
            self._channels[worker] = channel
            return client
        raise OwnerUnavailable(f"worker {worker} is not answering")


async def _connect_unix(channel: Channel, path: str) -> None:
    await asyncio.get_running_loop().create_unix_connection(lambda: channel, path)
