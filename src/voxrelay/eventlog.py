"""The numbered log of a session's client-facing events.

A stream is nothing but a ``Cursor`` over this log: live delivery and
``Last-Event-ID`` replay are one code path, and any number of listeners cost
one append each. The log is bounded by age and bytes; a cursor that fell
behind its tail is told so with a ``ReplayGap`` and resumes at the oldest
event still held.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson


@dataclass(slots=True)
class Event:
    id: int
    type: str
    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    _json: bytes | None = None
    _sse: bytes | None = None

    @property
    def json(self) -> bytes:
        """``data`` as UTF-8 JSON, encoded once however many listeners send it."""
        if self._json is None:
            self._json = orjson.dumps(self.data)
        return self._json

    @property
    def sse(self) -> bytes:
        """The event as a Server-Sent Events frame, also encoded once."""
        if self._sse is None:
            self._sse = sse_frame(self.id, self.type, self.json)
        return self._sse

    @property
    def size(self) -> int:
        audio = self.data.get("audio")
        return 128 + (len(audio) if isinstance(audio, str) else 0)


def sse_frame(event_id: int, event_type: str, data: bytes) -> bytes:
    # JSON never holds a raw line break, so the data is always one line.
    return b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (event_id, event_type.encode(), data)


@dataclass(frozen=True, slots=True)
class ReplayGap:
    """The listener asked for events older than the log still holds."""

    requested_after: int
    resumed_at: int


class EventLog:
    def __init__(self, *, keep_seconds: float, max_bytes: int) -> None:
        self._events: deque[Event] = deque()
        self._keep_seconds = keep_seconds
        self._max_bytes = max_bytes
        self._bytes = 0
        self._last_id = 0
        self._closed = False
        self._appended = asyncio.Event()

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def oldest_id(self) -> int:
        return self._events[0].id if self._events else self._last_id + 1

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, type: str, data: dict[str, Any]) -> Event:
        if self._closed:
            raise RuntimeError("event log is closed")
        self._last_id += 1
        event = Event(self._last_id, type, data)
        self._events.append(event)
        self._bytes += event.size
        self._trim(event.at)
        self._wake()
        return event

    def close(self) -> None:
        """No more events; listeners drain what is left and stop."""
        self._closed = True
        self._wake()

    def get(self, event_id: int) -> Event | None:
        index = event_id - self.oldest_id
        if 0 <= index < len(self._events):
            return self._events[index]
        return None

    def cursor(self, after: int) -> Cursor:
        """A reader of every event with an id above ``after``, then each new one."""
        return Cursor(self, after + 1)

    async def follow(self, after: int) -> AsyncIterator[Event | ReplayGap]:
        """Every event with an id above ``after``, then each new one as it comes."""
        cursor = self.cursor(after)
        while await cursor.wait():
            for item in cursor.take():
                yield item

    def _wake(self) -> None:
        # Waking every waiter then re-arming: each waiter already holds its own
        # resolved future, so clearing at once loses no wake-up.
        self._appended.set()
        self._appended.clear()

    def _trim(self, now: float) -> None:
        events = self._events
        while len(events) > 1 and (
            self._bytes > self._max_bytes or now - events[0].at > self._keep_seconds
        ):
            self._bytes -= events.popleft().size


class Cursor:
    """One listener's place in an ``EventLog``: ``take`` what is new, ``wait`` for more.

    A listener that takes everything pending at once writes a backlog in one go
    instead of one event at a time.
    """

    __slots__ = ("_log", "next_id")

    def __init__(self, log: EventLog, next_id: int) -> None:
        self._log = log
        self.next_id = next_id

    def take(self) -> list[Event | ReplayGap]:
        """The events after this cursor (a ``ReplayGap`` first if some are gone)."""
        log = self._log
        oldest = log.oldest_id
        taken: list[Event | ReplayGap] = []
        if self.next_id < oldest:
            taken.append(ReplayGap(requested_after=self.next_id - 1, resumed_at=oldest))
            self.next_id = oldest
        last = log._last_id
        if self.next_id <= last:
            start = self.next_id - oldest
            taken.extend(islice(log._events, start, start + last - self.next_id + 1))
            self.next_id = last + 1
        return taken

    async def wait(self) -> bool:
        """Wait until there is something to take; False once the log is closed and
        everything was taken."""
        log = self._log
        while self.next_id > log._last_id:
            if log._closed:
                return False
            await log._appended.wait()
        return True
