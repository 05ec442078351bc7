"""Turn detection for the ``local`` provider: webrtcvad over 20 ms frames, with
a start and a stop hangover. Cheap enough to run on the event loop."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import webrtcvad  # type: ignore[import-untyped]

from voxrelay.audio import SAMPLE_WIDTH
from voxrelay.providers._speech import INPUT_RATE

FRAME_MS = 20
FRAME_BYTES = INPUT_RATE * FRAME_MS // 1000 * SAMPLE_WIDTH
VAD_AGGRESSIVENESS = 3
START_WINDOW = 6  # frames: speech starts when 5 of the last 6 (~100 ms) are voiced
START_VOICED = 5
STOP_WINDOW = 30  # frames: it ends when at most 3 of the last 30 (600 ms) are voiced
STOP_VOICED = 3
PRE_ROLL_FRAMES = 15  # 300 ms of audio from before the start is kept in the turn
MAX_TURN_MS = 30_000  # a turn this long is ended, to bound what one decode holds


@dataclass(frozen=True, slots=True)
class VadEvent:
    """``start`` carries the pre-roll and first frames; ``audio`` a frame of the
    turn; ``stop`` ends the turn (its frame is part of the turn)."""

    kind: Literal["start", "audio", "stop"]
    pcm: bytes


class TurnDetector:
    """webrtcvad over 20 ms frames with a start and a stop hangover."""

    def __init__(self, aggressiveness: int = VAD_AGGRESSIVENESS) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._pending = bytearray()
        self._recent: deque[bytes] = deque(maxlen=PRE_ROLL_FRAMES + START_WINDOW)
        self._flags: deque[bool] = deque(maxlen=START_WINDOW)
        self.speaking = False
        self._turn_bytes = 0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        self._pending += pcm
        events: list[VadEvent] = []
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            event = self._frame(frame)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: bytes) -> VadEvent | None:
        voiced = bool(self._vad.is_speech(frame, INPUT_RATE))
        self._flags.append(voiced)
        if not self.speaking:
            self._recent.append(frame)
            if sum(self._flags) >= START_VOICED:
                self.speaking = True
                self._flags = deque(self._flags, maxlen=STOP_WINDOW)
                audio = b"".join(self._recent)
                self._recent.clear()
                self._turn_bytes = len(audio)
                return VadEvent("start", audio)
            return None
        self._turn_bytes += len(frame)
        if (
            len(self._flags) == STOP_WINDOW and sum(self._flags) <= STOP_VOICED
        ) or self._turn_bytes >= MAX_TURN_MS * INPUT_RATE // 1000 * SAMPLE_WIDTH:
            self.end()
            return VadEvent("stop", frame)
        return VadEvent("audio", frame)

    def end(self) -> None:
        """Forget the turn in progress (ended by VAD or by a commit)."""
        self.speaking = False
        self._flags = deque(maxlen=START_WINDOW)
        self._turn_bytes = 0

    def take_pre_roll(self) -> bytes:
        """The recent audio that is not yet part of a turn (for a manual commit)."""
        audio = b"".join(self._recent)
        self._recent.clear()
        return audio
