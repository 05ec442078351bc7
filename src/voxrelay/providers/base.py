"""The one small interface every upstream adapter implements."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from voxrelay.events import ModelEvent, Role
from voxrelay.openai_realtime.protocol import RawListener

TurnDetection = Literal["server_vad", "manual"]
# Where a provider delivers its events.
EmitModelEvent = Callable[[ModelEvent], None]


@dataclass(frozen=True, slots=True)
class SessionOptions:
    instructions: str | None = None
    voice: str | None = None
    language: str | None = None
    turn_detection: TurnDetection = "server_vad"
    # Tools the model may call, as ``session.update`` declares them (function tools,
    # and for an OpenAI-protocol upstream remote MCP servers).
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """An earlier turn, replayed upstream when a conversation resumes."""

    role: Role
    text: str
    # The item id the conversation knew it by, when the upstream may take it again.
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryToolCall:
    """An earlier function call, with its result (JSON text) once it has one."""

    call_id: str
    name: str
    arguments: str
    output: str | None = None
    item_id: str | None = None


HistoryItem = HistoryMessage | HistoryToolCall


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The result of a function call, for the model (JSON text). ``late``: the call
    was answered already (that its result would follow); this is the result itself."""

    call_id: str
    output: str
    name: str = ""
    late: bool = False


class ProviderError(Exception):
    """The upstream could not be reached or refused the session. ``permanent``: trying
    again will not help (the key is refused, the account has no quota)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# Upstream error codes that no reconnect can cure: the link is not opened again.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "account_deactivated",
        "organization_deactivated",
        "billing_hard_limit_reached",
        "model_not_found",
    }
)
# The upstream closing a session that reached its longest duration (OpenAI: 60 minutes).
SESSION_EXPIRED = "session_expired"


class Provider(Protocol):
    """One live link to an upstream voice model, owned by one session.

    ``input_rate`` is the PCM16 rate ``send_audio`` expects; ``output_rate``
    the rate of every ``AudioDelta`` it emits.

    Events are pushed, not pulled: from ``open`` until ``close`` the provider calls
    ``emit`` with each event, in order, on the event loop, and never from inside one
    of its own methods (a provider that learns something while the session calls it
    emits it with ``loop.call_soon``). An upstream handing its events straight to the
    session costs no task switch per audio chunk. A link that drops is reported once,
    as a fatal ``ModelError``; after ``close`` nothing more is emitted.
    """

    input_rate: int
    output_rate: int

    async def open(
        self, options: SessionOptions, history: Sequence[HistoryItem], emit: EmitModelEvent
    ) -> None: ...

    async def send_audio(self, pcm: bytes) -> None: ...

    async def commit(self) -> None:
        """End the user's turn: commit buffered audio and ask for a response."""
        ...

    async def send_text(self, item_id: str, text: str) -> None:
        """Add a typed user message with this item id and ask for a response."""
        ...

    async def cancel(self, item_id: str | None, played_ms: int | None) -> None:
        """Stop the response in progress; with ``played_ms``, forget the unheard rest
        of assistant item ``item_id``."""
        ...

    async def send_tool_outputs(self, outputs: Sequence[ToolOutput]) -> None:
        """Give the model the results of its function calls, then ask for a response
        (with no outputs: only ask for it)."""
        ...

    async def update_tools(self, tools: Sequence[Mapping[str, Any]]) -> None:
        """Replace the tools the model may call (``SessionOptions.tools``' form)."""
        ...

    async def close(self) -> None: ...


class RawEvents(Protocol):
    """An OpenAI-protocol upstream's own events, as the compatible WebSocket's
    pass-through reads them (here, or mirrored from the process holding the link).

    ``dialect`` (``"ga"`` or ``"beta"``) says which names and shapes it uses;
    ``raw_session`` is the upstream's latest session object (``session.created`` /
    ``session.updated``), ``raw_session_settled`` true once the upstream has answered the
    server's own ``session.update``; ``raw_events`` subscribes to every upstream event
    while its block runs."""

    dialect: str
    transcription_model: str
    raw_session: dict[str, Any] | None
    raw_session_settled: bool

    def raw_events(self, listener: RawListener) -> contextlib.AbstractContextManager[None]: ...


@runtime_checkable
class RawProvider(Provider, RawEvents, Protocol):
    """A provider that speaks the OpenAI Realtime protocol upstream (openai, azure):
    its own events (``RawEvents``), and ``send_raw`` to send one as it is."""

    async def send_raw(self, event: Mapping[str, Any]) -> None: ...
