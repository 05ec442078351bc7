"""Where an event log keeps its older events: a session's spool on disk.

A minute of a session's answer audio is megabytes of JSON; the replay window must
hold it, but resident memory need not. The log keeps a small tail in memory and
hands its older events here in blocks (one write per block). They are read back
only by a listener that fell behind that tail.

A spool is two files, each unlinked as soon as it is open (nothing is left on disk,
even after a crash). Writes go to one of them until it is big enough and the other
has nothing left in the window; the other is then emptied and takes the writes. So
the files together hold about the window twice over at most, however long the
session lives.

Per event, the index holds an offset, a time and a type code in arrays (18 bytes,
no Python object per event).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from array import array
from dataclasses import dataclass
from itertools import accumulate

log = logging.getLogger(__name__)

# (id, type, monotonic time, JSON), as the log keeps an event.
Record = tuple[int, str, float, bytes]


@dataclass(frozen=True, slots=True)
class Spill:
    """How a log spills: the bytes of JSON it keeps in memory before the oldest half
    goes to disk, the directory of its files (None: the OS's temporary one), and how
    big a file grows before writes may move to the other one."""

    memory_bytes: int
    directory: str | None = None
    segment_bytes: int = 1 << 20


def spill_for(memory_bytes: int, directory: str | None) -> Spill | None:
    """The settings' spill (``replay_memory_bytes`` 0: everything in memory)."""
    return Spill(memory_bytes, directory or None) if memory_bytes > 0 else None


class SpoolError(Exception):
    """The spool could not be written or read (a full disk, say)."""


class _Segment:
    __slots__ = ("ats", "fd", "first_id", "offsets", "size", "start", "types")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.first_id = 0
        # Events before ``start`` are out of the window (read by nobody any more).
        self.start = 0
        self.size = 0
        self.offsets = array("q")
        self.ats = array("d")
        self.types = array("H")

    @property
    def held(self) -> int:
        return len(self.offsets) - self.start

    def end_of(self, index: int) -> int:
        return self.offsets[index + 1] if index + 1 < len(self.offsets) else self.size

    def empty(self) -> None:
        """Forget every event and give the disk space back."""
        os.ftruncate(self.fd, 0)
        self.start = self.size = 0
        self.offsets, self.ats, self.types = array("q"), array("d"), array("H")


class Spool:
    def __init__(self, spill: Spill) -> None:
        self._spill = spill
        self._old: _Segment | None = None
        self._new: _Segment | None = None
        # The segment that holds the oldest event (None: none held).
        self._head: _Segment | None = None
        self._types: list[str] = []
        self._codes: dict[str, int] = {}
        self._unusable = False
        self.count = 0
        # Bytes of JSON held (in the window).
        self.bytes = 0

    @property
    def first_id(self) -> int:
        """The oldest id held (meaningful while ``count``)."""
        segment = self._head
        assert segment is not None
        return segment.first_id + segment.start

    def oldest_at(self) -> float:
        segment = self._head
        assert segment is not None
        return segment.ats[segment.start]

    def files_bytes(self) -> int:
        """What the spool takes on disk."""
        return sum(s.size for s in (self._old, self._new) if s is not None)

    def write(self, records: list[Record]) -> None:
        """Add events that follow the newest held, in one write."""
        if self._unusable:
            raise SpoolError("spool unusable")
        segment = self._writable()
        codes = self._codes
        types = [codes.get(record[1]) for record in records]
        if None in types:
            types = [self._code(record[1]) for record in records]
        block = b"".join([record[3] for record in records])
        try:
            write_all(segment.fd, block, segment.size)
        except OSError as error:
            raise SpoolError(str(error)) from error
        if not segment.offsets:
            segment.first_id = records[0][0]
        starts = list(accumulate([len(record[3]) for record in records], initial=segment.size))
        segment.size = starts.pop()
        segment.offsets.extend(starts)
        segment.ats.extend([record[2] for record in records])
        segment.types.extend(types)  # type: ignore[arg-type]
        if self._head is None:
            self._head = segment
        self.count += len(records)
        self.bytes += len(block)

    def drop_oldest(self) -> int:
        """Let the oldest event go; returns its JSON's length."""
        segment = self._head
        assert segment is not None
        index = segment.start
        offsets = segment.offsets
        end = offsets[index + 1] if index + 1 < len(offsets) else segment.size
        length = end - offsets[index]
        segment.start = index + 1
        self.count -= 1
        self.bytes -= length
        if index + 1 == len(offsets):
            self._empty(segment)
            # The older file is done with: the newer one holds the oldest events.
            self._head = self._new if self.count else None
        return length

    def read(self, first: int, max_bytes: int) -> list[Record]:
        """Held events from id ``first`` on, about ``max_bytes`` of them (one at least)."""
        taken: list[Record] = []
        for segment in (self._old, self._new):
            if segment is None or not segment.held:
                continue
            end_id = segment.first_id + len(segment.offsets)
            if first >= end_id:
                continue
            begin = max(first - segment.first_id, segment.start)
            stop = begin + 1
            limit = segment.offsets[begin] + max_bytes
            while stop < len(segment.offsets) and segment.offsets[stop] < limit:
                stop += 1
            base = segment.offsets[begin]
            length = segment.end_of(stop - 1) - base
            try:
                data = os.pread(segment.fd, length, base)
            except OSError as error:
                raise SpoolError(str(error)) from error
            if len(data) != length:
                raise SpoolError(f"short read: {len(data)} of {length} bytes")
            view = memoryview(data)
            types = self._types
            for index in range(begin, stop):
                start = segment.offsets[index] - base
                taken.append(
                    (
                        segment.first_id + index,
                        types[segment.types[index]],
                        segment.ats[index],
                        view[start : segment.end_of(index) - base].tobytes(),
                    )
                )
            max_bytes -= length
            first = segment.first_id + stop
            if max_bytes <= 0:
                break
        if not taken:
            raise SpoolError(f"event {first} is not held")
        return taken

    def clear(self) -> None:
        """Forget every event (what follows is not their continuation)."""
        for segment in (self._old, self._new):
            if segment is not None and segment.size:
                self._empty(segment)
        self._head = None
        self.count = self.bytes = 0

    def __del__(self) -> None:
        # A log dropped without being closed (a mirror replaced by another).
        self.close()

    def close(self) -> None:
        for segment in (self._old, self._new):
            if segment is not None:
                with contextlib.suppress(OSError):
                    os.close(segment.fd)
        self._old = self._new = self._head = None
        self.count = self.bytes = 0
        self._unusable = True

    def _writable(self) -> _Segment:
        new = self._new
        if new is None:
            new = self._new = _Segment(self._open())
        elif new.size >= self._spill.segment_bytes:
            old = self._old
            if old is None:
                old = _Segment(self._open())
            if not old.held:
                # The older file has nothing left in the window: it takes the writes.
                self._old, self._new = new, old
                return old
        return new

    def _empty(self, segment: _Segment) -> None:
        try:
            segment.empty()
        except OSError as error:
            # Kept as it is: the file is written over from its start all the same.
            log.warning("could not truncate a replay spool: %s", error)
            segment.start = segment.size = 0
            segment.offsets, segment.ats, segment.types = array("q"), array("d"), array("H")

    def _open(self) -> int:
        try:
            return open_unlinked(self._spill.directory)
        except OSError as error:
            self._unusable = True
            raise SpoolError(str(error)) from error

    def _code(self, kind: str) -> int:
        code = self._codes.get(kind)
        if code is None:
            if len(self._types) > 0xFFFF:
                raise SpoolError("too many event types")
            code = self._codes[kind] = len(self._types)
            self._types.append(kind)
        return code


def open_unlinked(directory: str | None) -> int:
    """A new file for reading and writing that has no name (gone when closed)."""
    where = directory or tempfile.gettempdir()
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if tmpfile:
        try:
            return os.open(where, tmpfile | os.O_RDWR, 0o600)
        except OSError:
            pass  # a file system without O_TMPFILE: a named file, unlinked at once
    fd, path = tempfile.mkstemp(prefix="voxrelay-replay-", dir=where)
    os.unlink(path)
    return fd


def write_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``; ``OSError`` if the disk refuses. Its views
    of ``data`` are released even then, so a bytearray can be resized after."""
    with memoryview(data) as whole:
        done = 0
        while done < len(whole):
            with whole[done:] as rest:
                done += os.pwrite(fd, rest, offset + done)
