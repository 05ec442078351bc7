"""Several nodes sharing one Redis: this member's ``Elsewhere``.

A member is one server process (a node, or one worker of a node). The member that
holds a conversation's lease holds its session and upstream link; every other
member reaches it through the bus: requests, audio and owner calls go to the
holder, and the session's event log is streamed back into a ``RemoteSession``,
exactly as between the workers of one node. A member renews its leases every
third of the lease time and watches the members it deals with: when one's lease
lapses (it died), the sessions followed from it end ``upstream_failed`` here,
and its conversations may be started anew by any member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from voxrelay.cluster.bus import Bus, Role
from voxrelay.cluster.leases import Leases
from voxrelay.exceptions import OwnerUnavailable
from voxrelay.links.channel import Header
from voxrelay.links.owners import OwnerClient, Owners
from voxrelay.links.remote import Address, RemoteSession
from voxrelay.links.serving import Served
from voxrelay.sessions import LiveSession, Registry, Session, StartRequest
from voxrelay.spool import Spill
from voxrelay.workers.ownership import Ownership

log = logging.getLogger(__name__)


def new_member_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Cluster:
    def __init__(
        self,
        redis: Redis,
        registry: Registry,
        ownership: Ownership,
        *,
        lease_seconds: float,
        log_keep_seconds: float,
        log_max_bytes: int,
        log_spill: Spill | None = None,
    ) -> None:
        self.member = new_member_id()
        self.leases = Leases(redis, self.member, lease_seconds)
        self._lease_seconds = lease_seconds
        self._registry = registry
        self._ownership = ownership
        self._bus = Bus(redis, self.member, self._on_frame)
        self.owners = Owners(
            self._connect,
            log_keep_seconds=log_keep_seconds,
            log_max_bytes=log_max_bytes,
            log_spill=log_spill,
            # Other nodes may run on other machines.
            same_clock=False,
        )
        self._served: dict[str, Served] = {}
        self._watching: asyncio.Task[None] | None = None
        self._joined = False
        self._tasks: set[asyncio.Task[None]] = set()
        registry.before_announcing.append(self._hold)
        registry.on_ended.append(self._ended)

    async def join(self) -> None:
        """Become a member; while Redis does not answer, keep trying in the background
        (the node answers 503 on ``/readyz`` meanwhile)."""
        try:
            await self._join_once()
        except RedisError as error:
            log.warning("cannot join the cluster yet, Redis does not answer: %s", error)
        self._watching = asyncio.get_running_loop().create_task(self._keep_alive())

    async def _join_once(self) -> None:
        await self.leases.renew()
        await self._bus.start()
        self._joined = True

    async def leave(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(BaseException):
                await self._watching
        with contextlib.suppress(Exception):
            await self.leases.leave()
        await self._bus.close()

    # -- Elsewhere ---

    async def here(self, key: str, *, claim: bool = False) -> bool:
        if self._registry.get(key) or self._registry.for_conversation(key):
            return True  # held here: no need to ask Redis (which may not be answering)
        with _redis_answers():
            if claim:
                return await self.leases.claim(key) == self.member
            holder = await self.leases.holder(key)
        return holder is None or holder == self.member

    async def release(self, key: str) -> None:
        with _redis_answers():
            await self.leases.release(key)

    def new_id(self, prefix: str) -> str:
        # Within a node, the worker an id hashes to is the one its requests reach.
        return self._ownership.new_id(prefix)

    async def find(
        self, *, session_id: str | None = None, conversation_id: str | None = None
    ) -> RemoteSession | None:
        key = str(session_id or conversation_id)
        with _redis_answers():
            holder = await self.leases.holder(key)
        if holder is None or holder == self.member:
            return None
        which = {"session": session_id} if session_id else {"conversation": conversation_id}
        reply = await self._ask(holder, {"op": "find", **which})
        description = reply.get("session")
        return RemoteSession(self.owners, holder, description) if description else None

    async def start(self, request: StartRequest) -> tuple[LiveSession, bool]:
        with _redis_answers():
            holder = await self.leases.claim(request.conversation_id)
        if holder == self.member:  # the holder went away since the directory asked
            return await self._registry.start(request)
        reply = await self._ask(holder, {"op": "start", "request": request.to_dict()})
        return RemoteSession(self.owners, holder, reply["session"]), bool(reply["new"])

    async def call(self, key: str, name: str, args: dict[str, Any]) -> Any:
        with _redis_answers():
            holder = await self.leases.holder(key)
        if holder is None:
            raise OwnerUnavailable("no live process holds this conversation")
        if holder == self.member:
            return await self._registry.calls[name](args)
        reply = await self._ask(holder, {"op": "call", "name": name, "args": args})
        return reply.get("result")

    async def _ask(self, holder: str, header: Header) -> Header:
        try:
            async with asyncio.timeout(max(self._lease_seconds * 2, 5.0)):
                return await self.owners.request(holder, header)
        except TimeoutError:
            log.warning("cluster member %s did not answer %r in time", holder, header.get("op"))
            raise OwnerUnavailable() from None

    # -- the bus ---

    async def _connect(self, member: Address) -> OwnerClient:
        return OwnerClient(self._bus.sender(str(member), "serve"))

    def _on_frame(self, sender: str, role: Role, header: Header, payload: bytes) -> None:
        if role == "serve":
            served = self._served.get(sender)
            if served is None:
                served = self._served[sender] = Served(
                    self._registry, self._bus.sender(sender, "client")
                )
            served.on_frame(header, payload)
        else:
            client = self.owners.clients.get(sender)
            if client is not None:
                client.on_frame(header, payload)

    # -- leases ---

    async def _hold(self, session: Session) -> None:
        """Hold a new session's id before its client hears of it: a client told of the
        session may ask another node for it at once (a Socket.IO client joining it
        there), and that node finds it by this lease."""
        try:
            await self.leases.hold(session.id)
        except RedisError as error:
            # Held all the same: the renewal writes it once Redis answers again.
            self.leases.held.add(session.id)
            log.warning("holding session %s in Redis failed: %s", session.id, error)

    def _ended(self, session: Session) -> None:
        async def release() -> None:
            await self.leases.release(session.id)
            await self.leases.release(session.conversation_id)

        self._spawn(release())

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            try:
                if not self._joined:
                    await self._join_once()
                    log.info("joined the cluster")
                for key in await self.leases.renew():
                    self._lost_to_another(key)
                await self._forget_the_dead()
            except Exception as error:
                log.warning("renewing this member's leases failed: %s", error)

    def _lost_to_another(self, key: str) -> None:
        """Another member holds ``key`` now (this one's lease lapsed while Redis was
        away): one session per conversation, so this one ends."""
        session = self._registry.get(key) or self._registry.for_conversation(key)
        if session is not None and session.active:
            log.warning("another member holds %s now; ending the session here", key)
            self._spawn(session.end("upstream_failed"))

    async def _forget_the_dead(self) -> None:
        others = set(self.owners.clients) | set(self._served)
        for member in others:
            if await self.leases.alive(str(member)):
                continue
            log.warning("cluster member %s is gone", member)
            # Its sessions died with their upstream links.
            self.owners.forget(member, "upstream_failed")
            served = self._served.pop(str(member), None)
            if served is not None:
                served.lost()


@contextlib.contextmanager
def _redis_answers() -> Iterator[None]:
    """Redis not answering is the cluster not answering: the client is told so."""
    try:
        yield
    except RedisError as error:
        log.warning("Redis does not answer: %s", error)
        raise OwnerUnavailable("the cluster's shared state is not answering") from None
