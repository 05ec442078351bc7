"""The input audio a session keeps of the turn in progress, mostly on disk.

After an upstream link is lost, the new link is sent the speech not yet
committed (up to ``keep_audio_seconds``, 30 s: about a megabyte), and the turn
still waiting for its answer. Nearly always that audio is never read, so
``TurnAudio`` keeps only its newest part in memory. Once a turn outgrows that
part, the audio goes to a ring file (unlinked as soon as it is open, the size of
the bound) in blocks: byte ``n`` of the turn is at ``n % capacity``, so the file
never grows past the bound however long the turn, and the last ``capacity``
bytes can always be read back.

A disk that fails is not the session's end: the turn then keeps only what fits
in memory (a new link hears less of it), logged once per turn.
"""

from __future__ import annotations

import contextlib
import logging
import os

from voxrelay.spool import open_unlinked, write_all

log = logging.getLogger(__name__)

# Writes to the file go in blocks of this much (one ``pwrite`` per ~0.3-0.5 s of
# audio): what a long turn holds in memory.
BLOCK_BYTES = 16 << 10


class TurnAudio:
    """The last ``capacity`` bytes appended (fewer after ``keep_last``). Up to
    ``memory_bytes`` of them are kept in memory only (0: any number); past that a
    ring file in ``directory`` holds them, and memory only the block not yet
    written."""

    __slots__ = ("_buffer", "_capacity", "_directory", "_end", "_fd", "_memory", "_start")

    def __init__(self, capacity: int, memory_bytes: int, directory: str | None = None) -> None:
        self._capacity = max(capacity, 0)
        self._memory = capacity if memory_bytes <= 0 else min(memory_bytes, capacity)
        self._directory = directory
        # Positions count every byte appended: the bytes held are [_start, _end); the
        # buffer holds the newest of them, the file the ones before it.
        self._start = 0
        self._end = 0
        self._buffer = bytearray()
        self._fd: int | None = None

    def __len__(self) -> int:
        return self._end - self._start

    @property
    def on_disk(self) -> bool:
        """Whether a file is open (for tests and the curious)."""
        return self._fd is not None

    def append(self, pcm: bytes) -> None:
        buffer = self._buffer
        buffer += pcm
        self._end += len(pcm)
        if self._end - self._start > self._capacity:
            self._start = self._end - self._capacity
        if self._fd is None:
            held = self._end - self._start
            if len(buffer) > held:
                del buffer[: len(buffer) - held]
            if held > self._memory:
                self._spill()
        elif len(buffer) >= BLOCK_BYTES:
            self._flush()

    def keep_last(self, count: int) -> None:
        """Forget all but the newest ``count`` bytes."""
        self._start = max(self._start, self._end - max(count, 0))
        held = self._end - self._start
        if self._fd is None and len(self._buffer) > held:
            del self._buffer[: len(self._buffer) - held]

    def tail(self, count: int) -> bytes:
        """The newest ``count`` bytes held (all of them, if fewer are)."""
        count = min(count, len(self))
        if count <= 0:
            return b""
        buffer = self._buffer
        if count <= len(buffer):
            return bytes(buffer[len(buffer) - count :])
        from_disk = self._read(self._end - count, self._end - len(buffer))
        return from_disk + buffer

    def clear(self) -> None:
        """Forget every byte (the file, if any, stays open for the next turn)."""
        self._start = self._end
        self._buffer.clear()

    def close(self) -> None:
        self.clear()
        self._close_file()

    def __del__(self) -> None:
        # A turn dropped without being closed still gives its file back.
        self.close()

    # -- the file ---------------------------------------------------------------------

    def _close_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _spill(self) -> None:
        if self._memory >= self._capacity:
            return
        try:
            self._fd = open_unlinked(self._directory)
        except OSError as error:
            self._give_up_disk(f"could not open a file for the turn's audio: {error}")
            return
        self._flush()

    def _flush(self) -> None:
        fd, buffer, capacity = self._fd, self._buffer, self._capacity
        assert fd is not None
        # Of a buffer longer than the ring (a small bound), only its end is kept.
        skip = max(len(buffer) - capacity, 0)
        at = (self._end - len(buffer) + skip) % capacity
        first = min(len(buffer) - skip, capacity - at)
        failed = _write_all(fd, buffer, skip, skip + first, at)
        if not failed and skip + first < len(buffer):
            failed = _write_all(fd, buffer, skip + first, len(buffer), 0)
        if failed:
            self._give_up_disk(f"could not write the turn's audio: {failed}")
            return
        buffer.clear()

    def _read(self, begin: int, end: int) -> bytes:
        """Bytes [begin, end) from the file; those that cannot be read are left out."""
        fd = self._fd
        if fd is None:
            return b""
        capacity = self._capacity
        parts = []
        try:
            while begin < end:
                at = begin % capacity
                length = min(end - begin, capacity - at)
                data = os.pread(fd, length, at)
                if len(data) != length:
                    raise OSError(f"short read: {len(data)} of {length} bytes")
                parts.append(data)
                begin += length
        except OSError as error:
            self._give_up_disk(f"could not read the turn's audio back: {error}")
            return b""
        return b"".join(parts)

    def _give_up_disk(self, why: str) -> None:
        # What is in memory is kept, and from now on at most what fits there.
        log.warning("%s; keeping only the last %d bytes of the turn", why, self._memory)
        self._close_file()
        self._capacity = self._memory
        self._start = max(self._start, self._end - len(self._buffer))
        self.keep_last(self._memory)


def _write_all(fd: int, buffer: bytearray, begin: int, end: int, offset: int) -> str | None:
    """Write ``buffer[begin:end]`` at ``offset``; returns why it failed, if it did."""
    # The buffer's views are released before it is resized, even on an error.
    with memoryview(buffer) as whole, whole[begin:end] as view:
        try:
            write_all(fd, view, offset)
        except OSError as error:
            return str(error)
    return None
