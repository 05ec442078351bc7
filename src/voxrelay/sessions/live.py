"""What a transport may ask of a live session, wherever the session runs.

A session lives in the process that holds its upstream link. Transports see it
through ``LiveSession``: the ``Session`` itself when it runs here, or a stand-in
for one that runs elsewhere (another worker), whose log mirrors the owner's.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from voxrelay.eventlog import Event, EventLog
from voxrelay.exceptions import InvalidRequest, TooLarge
from voxrelay.providers.base import RawEvents, SessionOptions, TurnDetection
from voxrelay.sessions.pacing import AudioPace
from voxrelay.store.ids import storable

EndReason = Literal[
    "client_end", "idle_timeout", "server_shutdown", "upstream_failed", "quota_exceeded"
]
# What a listener reads from the log (``LiveSession.attached``): everything from now on
# (``all``), everything and, after a reconnect, what it missed (``replays``: an SSE
# stream), nothing of the audio (``no_audio``: a pass-through WebSocket, which hears
# the upstream's own audio events), or nothing at all (``nothing``: an upload).
Reads = Literal["all", "replays", "no_audio", "nothing"]


@dataclass(frozen=True, slots=True)
class StartRequest:
    """A session to start (or join) on a conversation that exists and is the user's."""

    user_id: str
    conversation_id: str
    input_rate: int
    output_rate: int
    options: SessionOptions
    # Return the conversation's active session instead of refusing with ConversationBusy.
    join_active: bool = False
    # The device (its token's id) that asks: a new session counts against its limit.
    device: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StartRequest:
        options = dict(data["options"])
        options["tools"] = tuple(options.get("tools") or ())
        return cls(**{**data, "options": SessionOptions(**options)})


class LiveSession(Protocol):
    """A live session as transports use it."""

    id: str
    conversation_id: str
    user_id: str
    created_at: datetime
    input_rate: int
    output_rate: int
    turn_detection: TurnDetection
    status: Literal["active", "ended"]
    log: EventLog
    # ``conversation_started``: what every listener gets first.
    opening: Event
    # How fast its clients may send audio (``AudioTooFast`` past it).
    pace: AudioPace

    @property
    def active(self) -> bool: ...

    def attached(
        self, *, reads: Reads = "all", after: int | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Count a listener while the block runs; ``after``: the id a replaying listener
        reads on from (re-read ``log`` inside the block)."""
        ...

    async def send_audio(
        self, pcm: bytes, rate: int | None = None, *, transport: str = "", received_at: float = 0.0
    ) -> None: ...

    async def audio_received(self) -> None:
        """Return once every ``send_audio`` before it has reached the session itself
        (for another process's session, the owner has taken it): what a request that
        ends after its audio answers after, so the client's next request comes later."""
        ...

    async def commit(self) -> None: ...

    async def send_text(self, text: str, item_id: str | None = None) -> str: ...

    async def interrupt(self, played_ms: int | None = None) -> None: ...

    async def tool_result(self, call_id: str, output: Any) -> None:
        """A client's result for a call of one of its own tools (``NotFound`` for a call
        it does not have, ``AlreadyAnswered`` for one answered already)."""
        ...

    async def set_tools(self, tools: tuple[dict[str, Any], ...]) -> None:
        """Replace the function tools the session's clients declared."""
        ...

    async def add_user_text(self, item_id: str, text: str) -> None:
        """Store and publish a typed user message the client sends upstream itself."""
        ...

    async def note_heard(self, item_id: str, played_ms: int) -> None:
        """Cut a stored answer to what was heard, telling nothing upstream."""
        ...

    @property
    def raw(self) -> RawEvents | None:
        """The upstream's own events, for an OpenAI-protocol provider; else None."""
        ...

    async def send_raw(
        self, event: Mapping[str, Any], *, transport: str = "", received_at: float = 0.0
    ) -> None:
        """Send an upstream event as it is, in order with every other request."""
        ...

    async def end(self, reason: EndReason) -> None: ...

    async def end_if_last(self, reason: EndReason) -> bool:
        """End when the caller is the only listener left; returns whether it ended."""
        ...

    def can_restart(self) -> bool:
        """Whether the session may still be replaced by one with other settings."""
        ...


def check_text(text: str, max_chars: int) -> None:
    """A typed message the session may take: not too long, valid Unicode, storable."""
    if len(text) > max_chars:
        raise TooLarge(f"a message may hold at most {max_chars} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("the text is not valid Unicode (a lone surrogate)") from None
    if not storable(text):
        # Taken, it would never be stored: its writer would retry it for good.
        raise InvalidRequest("the text must not hold a NUL character")


def new_item_id() -> str:
    return "item_" + secrets.token_hex(12)
