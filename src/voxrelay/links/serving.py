"""What a process answers another about the sessions it owns: requests applied in
order, the session's log streamed to a process that follows it, and the starts,
finds and owner calls that the other's directory sends here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from voxrelay import metrics
from voxrelay.eventlog import Cursor, Event
from voxrelay.exceptions import AudioTooFast, InvalidRequest, SessionEnded, VoxrelayError
from voxrelay.links.channel import Header, Send, error_header, pack_events
from voxrelay.links.remote import describe
from voxrelay.sessions import Registry, Session, StartRequest

log = logging.getLogger(__name__)

_REFUSALS_KEPT = 256
_Apply = Callable[[Session, Header, bytes], Awaitable[Any]]


async def _audio(session: Session, header: Header, payload: bytes) -> None:
    await session.send_audio(
        payload,
        int(header["rate"]) or None,
        transport=str(header.get("transport", "")),
        received_at=float(header.get("at", 0.0)),
    )


async def _interrupt(session: Session, header: Header, _: bytes) -> None:
    played = header.get("playedMs")
    await session.interrupt(None if played is None else int(played))


async def _raw(session: Session, header: Header, payload: bytes) -> None:
    await session.send_raw(
        orjson.loads(payload),
        transport=str(header.get("transport", "")),
        received_at=float(header.get("at", 0.0)),
    )


# Requests about one session, applied in the order they came (audio before the
# commit that ends its turn).
_IN_ORDER: dict[str, _Apply] = {
    "audio": _audio,
    "received": lambda session, _, __: session.audio_received(),
    "commit": lambda session, _, __: session.commit(),
    "text": lambda session, header, _: session.send_text(str(header["text"]), header.get("itemId")),
    "interrupt": _interrupt,
    "user_text": lambda session, header, _: session.add_user_text(
        str(header["itemId"]), str(header["text"])
    ),
    "heard": lambda session, header, _: session.note_heard(
        str(header["itemId"]), int(header["playedMs"])
    ),
    "raw": _raw,
    "tool_result": lambda session, header, _: session.tool_result(
        str(header["callId"]), header.get("output")
    ),
    "tools": lambda session, header, _: session.set_tools(tuple(header["tools"])),
    "end": lambda session, header, _: session.end(header.get("reason") or "client_end"),
    "end_if_last": lambda session, header, _: session.end_if_last(
        header.get("reason") or "client_end"
    ),
}


class Served:
    """What one other process asked of our sessions; answers go out through ``send``."""

    def __init__(self, registry: Registry, send: Send) -> None:
        self._registry = registry
        self._send = send
        self._ordered: deque[tuple[Header, bytes]] = deque()
        self._ordering: asyncio.Task[None] | None = None
        self._follows: dict[int, asyncio.Task[None]] = {}
        # Raw-event follows and holds, by stream: closed when unfollowed or lost.
        self._subscriptions: dict[int, contextlib.ExitStack] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The first refusal of posted audio (too fast) by session, since it last asked
        # ``received``: an upload through another process answers it as the owner would.
        self._refused: dict[str, VoxrelayError] = {}
        self._answers: dict[str, Callable[[Header], Awaitable[Header]]] = {
            "find": self._find,
            "start": self._start,
            "call": self._call,
            "metrics": self._metrics,
        }

    def on_frame(self, header: Header, payload: bytes) -> None:
        op = str(header.get("op"))
        if op in _IN_ORDER:
            self._ordered.append((header, payload))
            if self._ordering is None or self._ordering.done():
                self._ordering = asyncio.get_running_loop().create_task(self._apply_in_order())
        elif op == "follow":
            self._follow(header)
        elif op == "follow_raw":
            self._follow_raw(header)
        elif op == "hold":
            session = self._registry.get(str(header["session"]))
            if session is not None and session.active:
                holding = contextlib.ExitStack()
                holding.enter_context(session.attached(reads="nothing"))
                self._subscriptions[int(header["stream"])] = holding
        elif op == "unfollow":
            task = self._follows.pop(int(header["stream"]), None)
            if task is not None:
                task.cancel()
            raw = self._subscriptions.pop(int(header["stream"]), None)
            if raw is not None:
                raw.close()
        else:
            task = asyncio.get_running_loop().create_task(self._answer(op, header))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, op: str, header: Header) -> None:
        reply: Header = {"op": "reply", "id": header.get("id")}
        try:
            answer = self._answers.get(op)
            if answer is None:
                raise InvalidRequest(f"unknown request {op!r}")
            reply.update(await answer(header))
        except Exception as error:
            reply["error"] = self._reported(error)
        self._send(reply)

    @staticmethod
    def _reported(error: Exception) -> Header:
        if not isinstance(error, VoxrelayError):
            log.exception("a request from another process failed", exc_info=error)
            error = VoxrelayError("the process owning the session failed")
        return error_header(error)

    async def _find(self, header: Header) -> Header:
        if "session" in header:
            found = self._registry.get(str(header["session"]))
        else:
            found = self._registry.for_conversation(str(header["conversation"]))
        if found is None or not found.active:
            return {"session": None}
        return {"session": describe(found)}

    async def _start(self, header: Header) -> Header:
        session, new = await self._registry.start(StartRequest.from_dict(header["request"]))
        return {"session": describe(session), "new": new}

    async def _call(self, header: Header) -> Header:
        call = self._registry.calls.get(str(header["name"]))
        if call is None:
            raise InvalidRequest(f"unknown owner call {header['name']!r}")
        return {"result": await call(header["args"])}

    async def _metrics(self, _: Header) -> Header:
        return {"text": metrics.generate().decode()}

    async def _apply_in_order(self) -> None:
        while self._ordered:
            header, payload = self._ordered.popleft()
            session = self._registry.get(str(header["session"]))
            try:
                if session is None:
                    raise SessionEnded()
                if header["op"] == "received":
                    refused = self._refused.pop(session.id, None)
                    if refused is not None:
                        raise refused
                result = await _IN_ORDER[header["op"]](session, header, payload)
                if "id" in header:
                    self._send({"op": "reply", "id": header["id"], "result": result})
            except Exception as error:
                if "id" in header:
                    reply = {"op": "reply", "id": header["id"], "error": self._reported(error)}
                    self._send(reply)
                elif isinstance(error, AudioTooFast):
                    self._refused.setdefault(str(header["session"]), error)
                    # Sessions whose senders never ask (a WebSocket's) must not pile up.
                    if len(self._refused) > _REFUSALS_KEPT:
                        del self._refused[next(iter(self._refused))]
                elif not isinstance(error, SessionEnded):
                    log.warning("audio from another process was not taken: %s", error)

    def _follow(self, header: Header) -> None:
        stream = int(header["stream"])
        session = self._registry.get(str(header["session"]))
        if session is None or not session.active:
            self._send({"op": "closed", "stream": stream})
            return
        cursor = session.log.cursor(int(header["after"]))
        task = asyncio.get_running_loop().create_task(self._stream(session, cursor, stream))
        self._follows[stream] = task

    async def _stream(self, session: Session, cursor: Cursor, stream: int) -> None:
        """Every new event of the session, to the process that follows it (a listener
        of the session meanwhile, as a local stream would be)."""
        try:
            with session.attached():
                while await cursor.wait():
                    # Past a gap (a replay from before what the log still holds),
                    # the ids jump: the mirror tells its late readers.
                    entries = [
                        (item.id, item.type, item.at, item.json)
                        for item in cursor.take()
                        if isinstance(item, Event)
                    ]
                    if entries:
                        self._send({"op": "events", "stream": stream}, pack_events(entries))
            self._send({"op": "closed", "stream": stream})
        finally:
            self._follows.pop(stream, None)

    def _follow_raw(self, header: Header) -> None:
        stream = int(header["stream"])
        session = self._registry.get(str(header["session"]))
        if session is None or session.raw is None or not session.active:
            return  # the session's own stream tells the other process it ended
        send = self._send

        def forward(event: dict[str, Any], message: bytes) -> None:
            send({"op": "raw", "stream": stream}, message)

        subscription = contextlib.ExitStack()
        subscription.enter_context(session.raw.raw_events(forward))
        self._subscriptions[stream] = subscription

    def lost(self) -> None:
        """The other process went away: stop streaming to it."""
        for task in list(self._follows.values()):
            task.cancel()
        self._follows.clear()
        for subscription in self._subscriptions.values():
            subscription.close()
        self._subscriptions.clear()
