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
    TranscriptDelta,
    TranscriptDone,
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
        return TranscriptDone("user", event["item_id"], event["transcript"])
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
        return ResponseDone(response["id"], _STATUS.get(response.get("status"), "failed"))
    if kind == "error":
        error = event.get("error") or {}
        code = error.get("code") or error.get("type") or "error"
        if code in _BENIGN_ERRORS:
            return None
        return ModelError(code, error.get("message") or "")
    return None
