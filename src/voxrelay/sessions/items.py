"""A session's view of its conversation's items: where each one sits, and the
assistant's answers that an interrupt may still cut."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from voxrelay.audio import duration_ms
from voxrelay.sessions.transcripts import cut_to_fraction


@dataclass(slots=True)
class AssistantItem:
    item_id: str
    response_id: str
    position: int
    audio_bytes: int = 0
    text: str = ""
    heard_fraction: float | None = None
    message_id: str | None = None

    def hear(self, played_ms: int, rate: int) -> int:
        """Only ``played_ms`` of this answer's audio (at ``rate``) was heard: keep that
        fraction, and cut the text already complete to it; returns the heard ms."""
        total_ms = duration_ms(self.audio_bytes, rate)
        heard_ms = int(min(max(played_ms, 0), total_ms))
        self.heard_fraction = heard_ms / total_ms if total_ms > 0 else 0.0
        if self.message_id is not None:
            self.text = cut_to_fraction(self.text, self.heard_fraction)
        return heard_ms


@dataclass(slots=True)
class Turn:
    """Timing of the answer to one user turn, stored with the answer."""

    committed_at: float = field(default_factory=time.monotonic)
    first_audio_ms: float | None = None

    def latency(self) -> dict[str, float] | None:
        """What an answer's message keeps of its timing."""
        if self.first_audio_ms is None:
            return None
        return {"firstAudioMs": round(self.first_audio_ms, 1)}


class Items:
    def __init__(self, next_position: int) -> None:
        self._next_position = next_position
        self._positions: dict[str, int] = {}
        self._answers: dict[str, AssistantItem] = {}
        # The latest answer: the only one an interrupt can still cut.
        self.latest: AssistantItem | None = None

    def position_of(self, item_id: str) -> int:
        """Messages are ordered by when their item first appeared, not when its
        transcript finished (a user transcript may land after the answer began)."""
        position = self._positions.get(item_id)
        if position is None:
            position = self._positions[item_id] = self._next_position
            self._next_position += 1
        return position

    def answer(self, item_id: str, response_id: str) -> AssistantItem:
        """The assistant item ``item_id``, made the latest when it is new."""
        item = self._answers.get(item_id)
        if item is None:
            item = AssistantItem(item_id, response_id, self.position_of(item_id))
            self._answers[item_id] = item
            self.latest = item
            # Only the latest answer can still be interrupted; forget the stored rest.
            for old in [k for k, v in self._answers.items() if v.message_id and k != item_id]:
                del self._answers[old]
        return item

    def answers(self) -> Iterator[AssistantItem]:
        return iter(list(self._answers.values()))
