"""How fast a client may send a session its audio: a token bucket counted in
seconds of audio.

A client speaking into a microphone sends one second of audio a second. One
that sends much faster is replaying a file or misbehaving, and every second it
sends costs upstream time: past ``factor`` times real time, sustained, its
chunks are refused (``AudioTooFast``) and not forwarded; the session goes on.
The bucket holds ``burst_seconds`` of audio, full at the start and refilled at
``factor`` seconds per second, so a client catching up after a stalled network
(sending what it recorded meanwhile at once) is served as long as what it
held back is within the burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from voxrelay.exceptions import AudioTooFast


class AudioPace:
    __slots__ = ("_at", "_burst", "_clock", "_factor", "_level")

    def __init__(
        self,
        factor: float,
        burst_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``factor`` 0 (or less) lets every chunk through."""
        self._factor = factor
        self._burst = burst_seconds
        self._clock = clock
        self._level = burst_seconds
        self._at = clock()

    @property
    def limits(self) -> tuple[float, float]:
        """The factor and the burst it was made with: another process's stand-in for
        the session paces what it relays the same way."""
        return self._factor, self._burst

    def take_base64(self, encoded_length: int, rate: int) -> None:
        """``take`` for audio still in base64 (an append's ``audio``), by its length."""
        self.take(encoded_length * 3 // 4, rate)

    def take(self, byte_count: int, rate: int) -> None:
        """Count ``byte_count`` bytes of PCM16 at ``rate`` Hz, or refuse them with
        ``AudioTooFast`` (they are then not counted)."""
        if self._factor <= 0 or byte_count <= 0:
            return
        now = self._clock()
        level = min(self._burst, self._level + (now - self._at) * self._factor)
        self._at = now
        seconds = byte_count / (2 * rate)
        if seconds > level:
            self._level = level
            raise AudioTooFast(
                f"audio is arriving faster than {self._factor:g} times real time;"
                " send it as it is recorded"
            )
        self._level = level - seconds


UNPACED = AudioPace(0.0, 0.0)
