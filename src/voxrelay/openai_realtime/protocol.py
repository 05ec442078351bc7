"""The OpenAI Realtime protocol's names and constants, in both dialects.

Every name here follows the ``openai`` package's ``openai.types.realtime`` (GA) and
``openai.types.beta.realtime`` (beta) models.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

Dialect = Literal["ga", "beta"]

# An upstream event, parsed and as it came (UTF-8 JSON).
RawListener = Callable[[dict[str, Any], bytes], None]

_log = logging.getLogger(__name__)


class RawListeners:
    """Who hears an upstream's own events: each listener while its block runs, each
    told in turn (one that fails does not keep the event from the others)."""

    def __init__(self) -> None:
        self._listeners: list[RawListener] = []

    @contextlib.contextmanager
    def subscribed(self, listener: RawListener) -> Iterator[None]:
        self._listeners.append(listener)
        try:
            yield
        finally:
            self._listeners.remove(listener)

    def tell(self, event: dict[str, Any], raw: bytes) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, raw)
            except Exception:
                _log.exception("a listener of the upstream's events failed")


# The protocol's PCM audio is 16-bit at 24 kHz, the only rate it takes.
SAMPLE_RATE = 24000
PCM_GA: dict[str, Any] = {"type": "audio/pcm", "rate": SAMPLE_RATE}
PCM_BETA = "pcm16"

# OpenAI rejects longer client-chosen item ids.
ITEM_ID_MAX = 32

# -- event names -----------------------------------------------------------------------

AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
ASSISTANT_TEXT_DELTAS = frozenset(
    {
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
        "response.output_text.delta",
        "response.text.delta",
    }
)
# Done event -> the field holding the full text.
ASSISTANT_TEXT_DONE = {
    "response.output_audio_transcript.done": "transcript",
    "response.audio_transcript.done": "transcript",
    "response.output_text.done": "text",
    "response.text.done": "text",
}

# Server events whose names differ: GA -> beta.
SERVER_GA_TO_BETA = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
SERVER_BETA_TO_GA = {beta: ga for ga, beta in SERVER_GA_TO_BETA.items()}

GA_SERVER_EVENTS = frozenset(
    {
        "conversation.created",
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.deleted",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.input_audio_transcription.segment",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "error",
        "input_audio_buffer.cleared",
        "input_audio_buffer.committed",
        "input_audio_buffer.dtmf_event_received",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.timeout_triggered",
        "mcp_list_tools.completed",
        "mcp_list_tools.failed",
        "mcp_list_tools.in_progress",
        "output_audio_buffer.cleared",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "rate_limits.updated",
        "response.content_part.added",
        "response.content_part.done",
        "response.created",
        "response.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_text.delta",
        "response.output_text.done",
        "session.created",
        "session.updated",
    }
)
BETA_SERVER_EVENTS = frozenset(
    {
        "conversation.created",
        "conversation.item.created",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "error",
        "input_audio_buffer.cleared",
        "input_audio_buffer.committed",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "output_audio_buffer.cleared",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "rate_limits.updated",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.created",
        "response.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.text.delta",
        "response.text.done",
        "session.created",
        "session.updated",
        "transcription_session.updated",
    }
)
_SHARED_CLIENT_EVENTS = frozenset(
    {
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "input_audio_buffer.append",
        "input_audio_buffer.clear",
        "input_audio_buffer.commit",
        "output_audio_buffer.clear",
        "response.cancel",
        "response.create",
        "session.update",
    }
)
CLIENT_EVENTS: dict[Dialect, frozenset[str]] = {
    "ga": _SHARED_CLIENT_EVENTS,
    "beta": _SHARED_CLIENT_EVENTS | {"transcription_session.update"},
}
SERVER_EVENTS: dict[Dialect, frozenset[str]] = {"ga": GA_SERVER_EVENTS, "beta": BETA_SERVER_EVENTS}

# The beta session's ``model`` only takes these names.
BETA_MODELS = frozenset(
    {
        "gpt-realtime",
        "gpt-realtime-2025-08-28",
        "gpt-4o-realtime-preview",
        "gpt-4o-realtime-preview-2024-10-01",
        "gpt-4o-realtime-preview-2024-12-17",
        "gpt-4o-realtime-preview-2025-06-03",
        "gpt-4o-mini-realtime-preview",
        "gpt-4o-mini-realtime-preview-2024-12-17",
    }
)
