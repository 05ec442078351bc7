"""The numbered log of a session's client-facing events.

A stream is nothing but a ``Cursor`` over this log: live delivery and
``Last-Event-ID`` replay are one code path, and any number of listeners cost
one append each. The log is bounded by age and bytes; a cursor that fell
behind its tail is told so with a ``ReplayGap`` and resumes at the oldest
event still held.

With a ``Spill``, only the newest events stay in memory; the older part of the
window is kept in a spool on disk (``voxrelay.spool``) and read back for a listener
that fell that far behind. Listeners that keep up never touch it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import weakref
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from voxrelay.spool import Spill, Spool, SpoolError

log = logging.getLogger(__name__)


class LogClosed(Exception):
    """An event was appended after the log's last one (``conversation_ended``)."""


class Event:
    """One event of the log, as a listener reads it: ``data`` is decoded from the
    JSON the log keeps, on first use."""

    __slots__ = ("_data", "_sse", "at", "id", "json", "type")

    def __init__(self, id: int, type: str, at: float, json: bytes) -> None:
        self.id = id
        self.type = type
        self.at = at
        self.json = json
        self._data: dict[str, Any] | None = None
        self._sse: bytes | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = orjson.loads(self.json)
        return self._data

    @property
    def sse(self) -> bytes:
        """The event as a Server-Sent Events frame."""
        if self._sse is None:
            self._sse = sse_frame(self.id, self.type, self.json)
        return self._sse

    def __repr__(self) -> str:
        return f"Event({self.id}, {self.type!r}, {self.json[:80]!r})"


# What the log keeps of an event: (id, type, monotonic time, JSON). Only atoms, so the
# garbage collector stops tracking it: a minute of audio for hundreds of sessions is
# close to a million entries, which a full collection would otherwise walk every time.
_Entry = tuple[int, str, float, bytes]
_ENTRY_OVERHEAD = 128
# How much of the spool one ``take`` reads back: a replay of a minute of audio goes
# out in pieces instead of all of it in memory at once.
_READ_BYTES = 256 << 10


def sse_frame(event_id: int, event_type: str, data: bytes) -> bytes:
    # JSON never holds a raw line break, so the data is always one line.
    return b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (event_id, event_type.encode(), data)


@dataclass(frozen=True, slots=True)
class ReplayGap:
    """The listener asked for events older than the log still holds."""

    requested_after: int
    resumed_at: int


def _exact(json: bytes) -> bytes:
    """``json`` in a buffer of its own size. orjson hands back its output in the
    buffer it wrote it into, 4 KiB at least: held in the log for a minute, that
    would be most of a session's memory."""
    return memoryview(json).tobytes()


class EventLog:
    def __init__(
        self,
        *,
        keep_seconds: float,
        max_bytes: int,
        last_id: int = 0,
        spill: Spill | None = None,
    ) -> None:
        # The newest events; with a spill, the older ones are in ``_spool``.
        self._events: deque[_Entry] = deque()
        self._keep_seconds = keep_seconds
        self._max_bytes = max_bytes
        # What the log holds (memory and spool), and what of it is in memory.
        self._bytes = 0
        self._tail_bytes = 0
        self._spill = spill
        self._memory_bytes = sys.maxsize if spill is None else spill.memory_bytes
        self._spool: Spool | None = None
        self._spool_failed = False
        # Cursors that may still read the spool once the log is closed.
        self._cursors: weakref.WeakSet[Cursor] | None = None
        # A mirror of another worker's log starts where its reader joined.
        self._last_id = last_id
        self._closed = False
        # Cursors waiting for the next event, and those that wait through audio
        # (a listener with no use for audio is not woken 50 times a second).
        self._waiters: list[asyncio.Future[None]] = []
        self._control_waiters: list[asyncio.Future[None]] = []

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def oldest_id(self) -> int:
        spool = self._spool
        if spool is not None and spool.count:
            return spool.first_id
        return self._events[0][0] if self._events else self._last_id + 1

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def spooled(self) -> int:
        """Events held on disk rather than in memory."""
        return self._spool.count if self._spool is not None else 0

    def spool_file_bytes(self) -> int:
        """What the spool takes on disk (its files, out-of-window events included)."""
        return self._spool.files_bytes() if self._spool is not None else 0

    def append(self, type: str, data: dict[str, Any], *, at: float | None = None) -> Event:
        """Add an event (encoded to JSON now, once for every listener); ``at`` is when
        it happened, by ``time.monotonic()`` (default now)."""
        if self._closed:
            raise LogClosed("event log is closed")
        when = time.monotonic() if at is None else at
        entry = (self._last_id + 1, type, when, _exact(orjson.dumps(data)))
        self._add(entry)
        event = Event(*entry)
        event._data = data
        return event

    def copy_in(self, id: int, type: str, at: float, json: bytes) -> None:
        """Append an event of another log, by its own id (a log that mirrors a session
        living in another worker). After a gap in the ids, only what follows it is
        kept: a reader from before the gap is told with a ``ReplayGap``."""
        if self._closed:
            return
        if id != self._last_id + 1:
            self._events.clear()
            if self._spool is not None:
                self._spool.clear()
            self._bytes = self._tail_bytes = 0
        self._add((id, type, at, json))

    def _add(self, entry: _Entry) -> None:
        self._last_id = entry[0]
        self._events.append(entry)
        size = _ENTRY_OVERHEAD + len(entry[3])
        self._bytes += size
        self._tail_bytes += size
        self._trim(time.monotonic())
        if self._tail_bytes > self._memory_bytes:
            self._spill_oldest()
        if self._waiters:
            self._waiters = _wake(self._waiters)
        if self._control_waiters and entry[1] != "audio":
            self._control_waiters = _wake(self._control_waiters)

    def close(self) -> None:
        """No more events; listeners drain what is left and stop."""
        self._closed = True
        self._waiters = _wake(self._waiters)
        self._control_waiters = _wake(self._control_waiters)
        self._release_spool()

    def get(self, event_id: int) -> Event | None:
        tail = self._events
        index = event_id - (tail[0][0] if tail else self._last_id + 1)
        if 0 <= index < len(tail):
            return Event(*tail[index])
        if index < 0 and event_id >= self.oldest_id:
            spooled = self._read_spool(event_id, 1)
            if spooled:
                return spooled[0]
        return None

    def cursor(self, after: int | None = None) -> Cursor:
        """A reader of every event with an id above ``after`` (None: from now on; an
        id past the newest one is the newest one), then each new one."""
        last = self._last_id
        cursor = Cursor(self, (last if after is None else min(after, last)) + 1)
        if self._spill is not None:
            if self._cursors is None:
                self._cursors = weakref.WeakSet()
            self._cursors.add(cursor)
        return cursor

    def _trim(self, now: float) -> None:
        spool = self._spool
        while spool is not None and spool.count:
            if self._bytes <= self._max_bytes and now - spool.oldest_at() <= self._keep_seconds:
                return
            self._bytes -= _ENTRY_OVERHEAD + spool.drop_oldest()
        events = self._events
        while len(events) > 1 and (
            self._bytes > self._max_bytes or now - events[0][2] > self._keep_seconds
        ):
            size = _ENTRY_OVERHEAD + len(events.popleft()[3])
            self._bytes -= size
            self._tail_bytes -= size

    def _spill_oldest(self) -> None:
        """Move the oldest half of the memory tail to the spool, in one write; if the
        disk refuses it, those events and the spool's are dropped instead."""
        events = self._events
        block: list[_Entry] = []
        moved = 0
        keep = self._memory_bytes // 2
        while len(events) > 1 and self._tail_bytes - moved > keep:
            entry = events.popleft()
            block.append(entry)
            moved += _ENTRY_OVERHEAD + len(entry[3])
        if not block:
            return
        self._tail_bytes -= moved
        assert self._spill is not None
        if self._spool is None:
            self._spool = Spool(self._spill)
        try:
            self._spool.write(block)
        except SpoolError as error:
            self._bytes -= moved
            self._drop_spool(f"could not write the replay spool ({error})")

    def _read_spool(self, first: int, max_bytes: int) -> list[Event]:
        assert self._spool is not None
        try:
            return [Event(*record) for record in self._spool.read(first, max_bytes)]
        except SpoolError as error:
            self._drop_spool(f"could not read the replay spool ({error})")
            return []

    def _drop_spool(self, why: str) -> None:
        """Forget what the spool holds (its listeners get a ``ReplayGap``); the session
        goes on with its memory tail."""
        spool = self._spool
        assert spool is not None
        self._bytes -= spool.count * _ENTRY_OVERHEAD + spool.bytes
        spool.clear()
        if not self._spool_failed:
            self._spool_failed = True
            log.warning("%s: older events are dropped instead of kept for replay", why)

    def _release_spool(self) -> None:
        """Once closed, the spool goes when no cursor can read it any more."""
        spool = self._spool
        if spool is None or not self._closed:
            return
        if spool.count:
            first = self._events[0][0] if self._events else self._last_id + 1
            for cursor in self._cursors or ():
                if not cursor._stopped and cursor.next_id < first:
                    return
            self._bytes -= spool.count * _ENTRY_OVERHEAD + spool.bytes
        spool.close()
        self._spool = None


class Cursor:
    """One listener's place in an ``EventLog``: ``take`` what is new, ``wait`` for more.

    A listener that takes everything pending at once writes a backlog in one go
    instead of one event at a time.
    """

    __slots__ = ("__weakref__", "_log", "_stopped", "_waiter", "head", "next_id")

    def __init__(self, log: EventLog, next_id: int) -> None:
        self._log = log
        self.next_id = next_id
        # The newest id when the cursor was made: what it takes up to there is a replay.
        self.head = log.last_id
        self._stopped = False
        self._waiter: asyncio.Future[None] | None = None

    def stop(self) -> None:
        """End this listener's ``wait`` (with False) whatever the log does."""
        self._stopped = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._log._release_spool()

    def take(self) -> list[Event | ReplayGap]:
        """The events after this cursor (a ``ReplayGap`` first if some are gone)."""
        log = self._log
        taken: list[Event | ReplayGap] = []
        while True:
            oldest = log.oldest_id
            if self.next_id < oldest:
                taken.append(ReplayGap(requested_after=self.next_id - 1, resumed_at=oldest))
                self.next_id = oldest
            tail = log._events
            if tail and self.next_id < tail[0][0]:
                # Behind the memory tail: a piece of the spool (the rest next time).
                spooled = log._read_spool(self.next_id, _READ_BYTES)
                if not spooled:
                    continue  # the spool is gone: a gap, then the tail
                taken.extend(spooled)
                self.next_id = spooled[-1].id + 1
                if self.next_id < tail[0][0]:
                    return taken
                if log._closed:
                    log._release_spool()
            break
        last = log._last_id
        if self.next_id <= last:
            # From the newer end: a live listener takes the last event or few of a log
            # that may hold a minute of audio (a deque is walked from its nearer end).
            newest = list(islice(reversed(tail), last - self.next_id + 1))
            taken.extend(Event(*entry) for entry in reversed(newest))
            self.next_id = last + 1
        return taken

    async def wait(self, *, audio: bool = True) -> bool:
        """Wait until there is something to take; False once the log is closed and
        everything was taken. With ``audio=False``, audio events alone do not end
        the wait: they are taken with the next event of another type."""
        log = self._log
        while self.next_id > log._last_id:
            if log._closed or self._stopped:
                return False
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            (log._waiters if audio else log._control_waiters).append(waiter)
            await waiter
        return not self._stopped


def _wake(waiters: list[asyncio.Future[None]]) -> list[asyncio.Future[None]]:
    """Resolve every waiter; returns the empty list that replaces them."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    return []
