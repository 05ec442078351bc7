"""Who listens to a session: the count that keeps it from idling out, and whether
anyone reads (or may come back for) the answer audio in its log."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from voxrelay.sessions.live import Reads


class Listeners:
    __slots__ = ("_audio_readers", "_audio_replayable", "count", "on_active", "on_idle")

    def __init__(self) -> None:
        self.count = 0
        self._audio_readers = 0
        self._audio_replayable = False
        # Called when the first listener comes, and when the last one leaves.
        self.on_active: Callable[[], None] | None = None
        self.on_idle: Callable[[], None] | None = None

    @property
    def read_audio(self) -> bool:
        """Whether answer audio must go into the log: somebody reads it there now, or a
        stream that reads it may come back for what it missed."""
        return bool(self._audio_readers) or self._audio_replayable

    @contextlib.contextmanager
    def attached(self, reads: Reads) -> Iterator[None]:
        self.count += 1
        reads_audio = reads in ("all", "replays")
        if reads_audio:
            self._audio_readers += 1
        if reads == "replays":
            self._audio_replayable = True
        if self.count == 1 and self.on_active is not None:
            self.on_active()
        try:
            yield
        finally:
            self.count -= 1
            if reads_audio:
                self._audio_readers -= 1
            if self.count == 0 and self.on_idle is not None:
                self.on_idle()
