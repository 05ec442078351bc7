"""A session of another worker, seen from here: the surface transports use of a
``Session``, its requests sent to the owner and its log a mirror of the owner's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal, Protocol

import orjson

from voxrelay.eventlog import EventLog
from voxrelay.exceptions import SessionEnded
from voxrelay.providers.base import TurnDetection
from voxrelay.sessions.live import EndReason, LiveSession, Reads
from voxrelay.workers.channel import Header, unpack_events


class OwnerLink(Protocol):
    """How a stand-in reaches the worker that owns its session (``Peers``)."""

    log_keep_seconds: float
    log_max_bytes: int

    async def request(self, worker: int, header: Header) -> Header: ...

    def post(self, worker: int, header: Header, payload: bytes = b"") -> None: ...

    def follow(self, worker: int, session: RemoteSession) -> int: ...

    def unfollow(self, worker: int, stream: int) -> None: ...


def describe(session: LiveSession) -> Header:
    """A session this worker owns, as a sibling's ``RemoteSession`` is made from."""
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


class RemoteSession:
    """A session living in another worker; its log is filled while somebody here listens."""

    def __init__(self, owner: OwnerLink, worker: int, description: Header) -> None:
        self._owner = owner
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
            keep_seconds=owner.log_keep_seconds,
            max_bytes=owner.log_max_bytes,
            last_id=int(description["lastId"]),
        )
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
            self._stream = self._owner.follow(self._worker, self)
        try:
            yield
        finally:
            self.listeners -= 1
            if self.listeners == 0 and self._stream is not None:
                self._owner.unfollow(self._worker, self._stream)
                self._stream = None

    def copy_in(self, payload: bytes) -> None:
        for event_id, kind, at, json in unpack_events(payload):
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
            raise SessionEnded()
        header = {"op": "audio", "session": self.id, "rate": rate or 0, "transport": transport}
        if received_at:
            header["at"] = received_at
        self._owner.post(self._worker, header, pcm)

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
        return False  # the settings it opened with stay with the owner's session

    async def _ask(self, header: Header) -> Any:
        if not self.active:
            raise SessionEnded()
        reply = await self._owner.request(self._worker, {**header, "session": self.id})
        return reply.get("result")
