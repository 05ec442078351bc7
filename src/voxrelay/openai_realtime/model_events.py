"""Upstream events in the server's own vocabulary (``voxrelay.events``), either dialect."""

from __future__ import annotations

from typing import Any

from voxrelay.events import (
    AudioDelta,
    FunctionCall,
    InputCommitted,
    ModelError,
    ModelEvent,
    ResponseDone,
    ResponseStarted,
    ResponseStatus,
    SpeechStarted,
    SpeechStopped,
    TokenUsage,
    TranscriptDelta,
    TranscriptDone,
    TranscriptionUsage,
)
from voxrelay.openai_realtime.protocol import (
    ASSISTANT_TEXT_DELTAS,
    ASSISTANT_TEXT_DONE,
    AUDIO_DELTAS,
)

_STATUS: dict[str, ResponseStatus] = {"completed": "completed", "cancelled": "cancelled"}
# A cancel that races the natural end of a response: nothing was lost, and the
# interrupt the client asked for already holds.
_BENIGN_ERRORS = frozenset({"response_cancel_not_active"})


def model_event(event: dict[str, Any]) -> ModelEvent | None:
    """One upstream event (either dialect) as an internal event, or None to ignore it;
    a malformed event raises KeyError, TypeError or ValueError."""
    kind = event.get("type")
    if kind in AUDIO_DELTAS:
        delta = event["delta"]
        if not isinstance(delta, str):
            raise TypeError("delta is not base64 text")
        return AudioDelta(event["response_id"], event["item_id"], encoded=delta)
    if kind in ASSISTANT_TEXT_DELTAS:
        return TranscriptDelta("assistant", event["item_id"], event["delta"])
    if kind in ASSISTANT_TEXT_DONE:
        return TranscriptDone("assistant", event["item_id"], event[ASSISTANT_TEXT_DONE[kind]])
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(event["item_id"])
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(event["item_id"])
    if kind == "input_audio_buffer.committed":
        return InputCommitted(event["item_id"])
    if kind == "conversation.item.input_audio_transcription.delta":
        delta = event.get("delta")
        return TranscriptDelta("user", event["item_id"], delta) if delta else None
    if kind == "conversation.item.input_audio_transcription.completed":
        usage = transcription_usage(event.get("usage"))
        return TranscriptDone("user", event["item_id"], event["transcript"], usage)
    if kind == "conversation.item.input_audio_transcription.failed":
        error = event.get("error") or {}
        code = error.get("code") or "transcription_failed"
        return ModelError(code, error.get("message") or "input transcription failed")
    if kind == "response.output_item.done":
        item = event["item"]
        if item.get("type") != "function_call" or item.get("status") == "incomplete":
            return None  # an answer's message, or a call cut off before it was whole
        return FunctionCall(
            event["response_id"], item["id"], item["call_id"], item["name"], item["arguments"]
        )
    if kind == "response.created":
        return ResponseStarted(event["response"]["id"])
    if kind == "response.done":
        response = event["response"]
        status = _STATUS.get(response.get("status"), "failed")
        return ResponseDone(response["id"], status, response_usage(response.get("usage")))
    if kind == "error":
        error = event.get("error") or {}
        code = error.get("code") or error.get("type") or "error"
        if code in _BENIGN_ERRORS:
            return None
        return ModelError(code, error.get("message") or "")
    return None


def response_usage(usage: Any) -> TokenUsage | None:
    """A ``response.done``'s ``usage`` (the same in both dialects); None when absent."""
    if not isinstance(usage, dict):
        return None
    given = _details(usage, "input_token_details")
    cached = _details(given, "cached_tokens_details")
    output = _details(usage, "output_token_details")
    return TokenUsage(
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        input_text_tokens=_count(given, "text_tokens"),
        input_audio_tokens=_count(given, "audio_tokens"),
        cached_tokens=_count(given, "cached_tokens"),
        cached_text_tokens=_count(cached, "text_tokens"),
        cached_audio_tokens=_count(cached, "audio_tokens"),
        output_text_tokens=_count(output, "text_tokens"),
        output_audio_tokens=_count(output, "audio_tokens"),
    )


def transcription_usage(usage: Any) -> TranscriptionUsage | None:
    """A transcription's ``usage``: ``{"type": "tokens", ...}`` for the models billed by
    token, ``{"type": "duration", "seconds"}`` for those billed by audio time."""
    if not isinstance(usage, dict):
        return None
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            seconds = 0.0
        return TranscriptionUsage(seconds=max(0.0, float(seconds)))
    given = _details(usage, "input_token_details")
    return TranscriptionUsage(
        input_tokens=_count(usage, "input_tokens"),
        output_tokens=_count(usage, "output_tokens"),
        input_text_tokens=_count(given, "text_tokens"),
        input_audio_tokens=_count(given, "audio_tokens"),
    )


def _details(usage: dict[str, Any], name: str) -> dict[str, Any]:
    details = usage.get(name)
    return details if isinstance(details, dict) else {}


def _count(usage: dict[str, Any], name: str) -> int:
    """A token count; anything but a non-negative integer (absent, null) counts 0."""
    value = usage.get(name)
    return value if type(value) is int and value > 0 else 0
