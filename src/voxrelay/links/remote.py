"""A session of another process, seen from here: the surface transports use of a
``Session``, its requests sent to the owner and its log a mirror of the owner's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal, Protocol

import orjson

from voxrelay.eventlog import Event, EventLog
from voxrelay.exceptions import SessionEnded
from voxrelay.links.channel import Header, unpack_events
from voxrelay.openai_realtime.protocol import RawListener
from voxrelay.providers.base import TurnDetection
from voxrelay.sessions.live import EndReason, LiveSession, Reads
from voxrelay.sessions.pacing import AudioPace
from voxrelay.spool import Spill

# Where an owner is: a worker's index, or a cluster member's id.
Address = int | str


class OwnerLink(Protocol):
    """How a stand-in reaches the process that owns its session (``links.owners.Owners``)."""

    log_keep_seconds: float
    log_max_bytes: int
    log_spill: Spill | None
    # Whether the owner reads the same monotonic clock (a worker of this node): only
    # then does a chunk's arrival time mean anything there.
    same_clock: bool

    async def request(self, owner: Address, header: Header, payload: bytes = b"") -> Header: ...

    def post(self, owner: Address, header: Header, payload: bytes = b"") -> None: ...

    def follow(self, owner: Address, session: RemoteSession) -> int: ...

    def hold(self, owner: Address, session_id: str) -> int: ...

    def follow_raw(self, owner: Address, session_id: str, raw: RemoteRaw) -> int: ...

    def unfollow(self, owner: Address, stream: int) -> None: ...


def describe(session: LiveSession) -> Header:
    """A session this process owns, as another's ``RemoteSession`` is made from."""
    raw = session.raw
    return {
        "raw": None
        if raw is None
        else {
            "dialect": raw.dialect,
            "transcriptionModel": raw.transcription_model,
            "session": raw.raw_session,
            "settled": raw.raw_session_settled,
        },
        "id": session.id,
        "conversationId": session.conversation_id,
        "userId": session.user_id,
        "createdAt": session.created_at.isoformat(),
        "status": session.status,
        "inputRate": session.input_rate,
        "outputRate": session.output_rate,
        "turnDetection": session.turn_detection,
        "lastId": session.log.last_id,
        "opening": session.opening.json.decode(),
        "pace": list(session.pace.limits),
    }


class RemoteSession:
    """A session living in another process; its log is filled while somebody here listens."""

    def __init__(self, link: OwnerLink, owner: Address, description: Header) -> None:
        self._link = link
        self.owner = owner
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
            keep_seconds=link.log_keep_seconds,
            max_bytes=link.log_max_bytes,
            spill=link.log_spill,
            last_id=int(description["lastId"]),
        )
        self.opening = Event(1, "conversation_started", 0.0, description["opening"].encode())
        self.listeners = 0
        # Audio relayed from here is paced here too: a chunk too fast is refused to
        # the client that sent it, as the owner refuses it (which paces all of it).
        self.pace = AudioPace(*description.get("pace", (0.0, 0.0)))
        self._stream: int | None = None
        given = description.get("raw")
        self._raw = RemoteRaw(link, owner, self.id, given) if given else None

    @property
    def raw(self) -> RemoteRaw | None:
        return self._raw

    @property
    def active(self) -> bool:
        return self.status == "active"

    @contextlib.contextmanager
    def attached(self, *, reads: Reads = "all", after: int | None = None) -> Iterator[None]:
        """Listen: the owner streams the session's events into ``log`` meanwhile (all
        of them, whatever ``reads`` says), and counts this as one of its listeners.
        A first listener that replays from ``after`` has the mirror start there. One that
        reads nothing (an upload) only counts at the owner: no events come for it."""
        if reads == "nothing":
            with self._held():
                yield
            return
        if after is not None and after < self.log.last_id and self._stream is None:
            self.log = EventLog(
                keep_seconds=self._link.log_keep_seconds,
                max_bytes=self._link.log_max_bytes,
                spill=self._link.log_spill,
                last_id=after,
            )
        self.listeners += 1
        if self._stream is None and self.active:
            self._stream = self._link.follow(self.owner, self)
        try:
            yield
        finally:
            self.listeners -= 1
            if self.listeners == 0 and self._stream is not None:
                self._link.unfollow(self.owner, self._stream)
                self._stream = None

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        hold = self._link.hold(self.owner, self.id)
        try:
            yield
        finally:
            self._link.unfollow(self.owner, hold)

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
        self.pace.take(len(pcm), rate or self.input_rate)
        header = {"op": "audio", "session": self.id, "rate": rate or 0, "transport": transport}
        if received_at and self._link.same_clock:
            header["at"] = received_at
        self._link.post(self.owner, header, pcm)

    async def audio_received(self) -> None:
        # Audio is posted without answers; a request in the same order answers after it.
        await self._ask({"op": "received"})

    async def commit(self) -> None:
        await self._ask({"op": "commit"})

    async def send_text(self, text: str, item_id: str | None = None) -> str:
        result = await self._ask({"op": "text", "text": text, "itemId": item_id})
        return str(result)

    async def interrupt(self, played_ms: int | None = None) -> None:
        await self._ask({"op": "interrupt", "playedMs": played_ms})

    async def tool_result(self, call_id: str, output: Any) -> None:
        await self._ask({"op": "tool_result", "callId": call_id, "output": output})

    async def set_tools(self, tools: tuple[dict[str, Any], ...]) -> None:
        await self._ask({"op": "tools", "tools": list(tools)})

    async def add_user_text(self, item_id: str, text: str) -> None:
        await self._ask({"op": "user_text", "itemId": item_id, "text": text})

    async def note_heard(self, item_id: str, played_ms: int) -> None:
        await self._ask({"op": "heard", "itemId": item_id, "playedMs": played_ms})

    async def send_raw(
        self, event: Mapping[str, Any], *, transport: str = "", received_at: float = 0.0
    ) -> None:
        if self._raw is None:
            raise TypeError("this session's provider has no raw pass-through")
        if received_at:  # an audio append: on its way, like send_audio
            if not self.active:
                raise SessionEnded()
            self.pace.take_base64(len(event.get("audio") or ""), self.input_rate)
            header: Header = {"op": "raw", "session": self.id, "transport": transport}
            if self._link.same_clock:
                header["at"] = received_at
            self._link.post(self.owner, header, orjson.dumps(event))
            return
        if not self.active:
            raise SessionEnded()
        await self._link.request(self.owner, {"op": "raw", "session": self.id}, orjson.dumps(event))

    async def end(self, reason: EndReason) -> None:
        with contextlib.suppress(SessionEnded):
            await self._ask({"op": "end", "reason": reason})
        self.lost(reason)

    async def end_if_last(self, reason: EndReason) -> bool:
        if not self.active or self.listeners > 1:
            return False
        # The owner counts this process's follow of the log as one listener.
        return bool(await self._ask({"op": "end_if_last", "reason": reason}))

    def can_restart(self) -> bool:
        return False  # the settings it opened with stay with the owner's session

    async def _ask(self, header: Header) -> Any:
        if not self.active:
            raise SessionEnded()
        reply = await self._link.request(self.owner, {**header, "session": self.id})
        return reply.get("result")


class RemoteRaw:
    """The upstream's own events of another process's session (``RawEvents``),
    streamed here while somebody listens."""

    def __init__(self, link: OwnerLink, owner: Address, session_id: str, given: Header) -> None:
        self._link = link
        self._owner = owner
        self._session_id = session_id
        self.dialect: str = given["dialect"]
        self.transcription_model: str = given["transcriptionModel"]
        self.raw_session: dict[str, Any] | None = given.get("session")
        self.raw_session_settled: bool = bool(given.get("settled"))
        self._listeners: list[RawListener] = []
        self._stream: int | None = None

    @contextlib.contextmanager
    def raw_events(self, listener: RawListener) -> Iterator[None]:
        self._listeners.append(listener)
        if self._stream is None:
            self._stream = self._link.follow_raw(self._owner, self._session_id, self)
        try:
            yield
        finally:
            self._listeners.remove(listener)
            if not self._listeners and self._stream is not None:
                self._link.unfollow(self._owner, self._stream)
                self._stream = None

    def copy_in(self, message: bytes) -> None:
        event = orjson.loads(message)
        kind = event.get("type")
        if kind in ("session.created", "session.updated") and isinstance(
            event.get("session"), dict
        ):
            self.raw_session = event["session"]
            self.raw_session_settled = self.raw_session_settled or kind == "session.updated"
        for listener in list(self._listeners):
            listener(event, message)
