"""The OpenAI-shaped objects the server-speaking mode works with, in GA form, as pure
functions: the session, conversation items, content parts, responses and the events of a
turn and its answer, built from plain data; and the options a ``session.update`` asks for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from voxrelay.openai_realtime.errors import error_event
from voxrelay.openai_realtime.fields import mapping
from voxrelay.openai_realtime.protocol import PCM_GA, Dialect
from voxrelay.openai_realtime.session_shapes import session_to_beta
from voxrelay.providers.base import SessionOptions, TurnDetection

_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


def conversation_created(conversation_id: str) -> dict[str, Any]:
    return {
        "type": "conversation.created",
        "conversation": {"id": conversation_id, "object": "realtime.conversation"},
    }


def session_object(
    provider: str, options: SessionOptions, turn_detection: TurnDetection, *, text_only: bool
) -> dict[str, Any]:
    """The session as a server-speaking ``provider`` runs it."""
    transcription: dict[str, Any] = {"model": f"voxrelay-{provider}"}
    if options.language:
        transcription["language"] = options.language
    return {
        "type": "realtime",
        "model": f"voxrelay-{provider}",
        "output_modalities": ["text"] if text_only else ["audio"],
        "instructions": options.instructions or "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": {
                "format": dict(PCM_GA),
                "transcription": transcription,
                "noise_reduction": None,
                "turn_detection": dict(_VAD) if turn_detection == "server_vad" else None,
            },
            "output": {
                "format": dict(PCM_GA),
                "voice": options.voice or "alloy",
                "speed": 1.0,
            },
        },
    }


def session_event(
    kind: str, session: dict[str, Any], dialect: Dialect, session_id: str
) -> dict[str, Any]:
    """``session.created`` or ``session.updated`` of a GA session object, in ``dialect``
    (beta sessions carry their id)."""
    if dialect == "ga":
        return {"type": kind, "session": session}
    beta = session_to_beta(session)
    beta["id"] = session_id
    return {"type": kind, "session": beta}


def input_text_parts(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A client's user message's ``input_text`` parts, with only their text."""
    return [
        {"type": "input_text", "text": str(part.get("text") or "")}
        for part in item.get("content") or []
        if isinstance(part, Mapping) and part.get("type") == "input_text"
    ]


def user_message(item_id: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": content,
    }


def assistant_message(item_id: str, status: str, text: str, *, text_only: bool) -> dict[str, Any]:
    """The answer's item; its content part once it is no longer in progress."""
    part = (
        {"type": "output_text", "text": text}
        if text_only
        else {"type": "output_audio", "transcript": text}
    )
    content = [part] if status != "in_progress" else []
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def content_part(text: str, *, text_only: bool) -> dict[str, Any]:
    """The answer's content part as ``response.content_part.*`` events carry it."""
    return {"type": "text", "text": text} if text_only else {"type": "audio", "transcript": text}


def response_object(
    response_id: str,
    status: str,
    output: list[dict[str, Any]],
    *,
    conversation_id: str,
    text_only: bool,
    voice: str | None,
    barge_in: bool,
) -> dict[str, Any]:
    """A response; a cancelled one says whether the user's speech (``barge_in``) or the
    client cancelled it."""
    details: dict[str, Any] | None = None
    if status == "cancelled":
        reason = "turn_detected" if barge_in else "client_cancelled"
        details = {"type": "cancelled", "reason": reason}
    elif status == "failed":
        details = {"type": "failed"}
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": details,
        "output": output,
        "conversation_id": conversation_id,
        "output_modalities": ["text"] if text_only else ["audio"],
        "audio": {"output": {"format": dict(PCM_GA), "voice": voice or "alloy"}},
        "max_output_tokens": "inf",
        "metadata": None,
        "usage": None,
    }


def failed_response(response_id: str, conversation_id: str) -> dict[str, Any]:
    """``response.done`` for an answer the upstream link dropped in the middle of."""
    response = response_object(
        response_id,
        "failed",
        [],
        conversation_id=conversation_id,
        text_only=False,
        voice=None,
        barge_in=False,
    )
    response["status_details"] = {
        "type": "failed",
        "error": {"type": "server_error", "code": "upstream_reconnecting"},
    }
    return {"type": "response.done", "response": response}


def reconnecting_error() -> dict[str, Any]:
    """The upstream link dropped and is being reopened; the conversation is kept."""
    return error_event(
        "upstream_reconnecting",
        "the voice model's connection dropped; reconnecting, the conversation is kept",
        kind="server_error",
    )


def part_ids(response_id: str, item_id: str | None) -> dict[str, Any]:
    """Where an answer's content part is: the fields of every event about it."""
    return {
        "response_id": response_id,
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
    }


def answer_opened(
    response_id: str, item: dict[str, Any], previous_item_id: str | None, *, text_only: bool
) -> list[dict[str, Any]]:
    """The events that announce an answer's item (still in progress) and its content part."""
    ids = {"response_id": response_id, "output_index": 0}
    return [
        {"type": "response.output_item.added", **ids, "item": item},
        {"type": "conversation.item.added", "previous_item_id": previous_item_id, "item": item},
        {
            "type": "response.content_part.added",
            **ids,
            "item_id": item["id"],
            "content_index": 0,
            "part": content_part("", text_only=text_only),
        },
    ]


def answer_closed(
    response_id: str,
    item: dict[str, Any],
    previous_item_id: str | None,
    text: str,
    *,
    text_only: bool,
    audio: bool,
) -> list[dict[str, Any]]:
    """The events that finish an answer's content part and item, in order (the audio's
    own done event only when it had audio)."""
    ids = part_ids(response_id, item["id"])
    events: list[dict[str, Any]] = []
    if text_only:
        events.append({"type": "response.output_text.done", **ids, "text": text})
    else:
        if audio:
            events.append({"type": "response.output_audio.done", **ids})
        events.append({"type": "response.output_audio_transcript.done", **ids, "transcript": text})
    events += [
        {
            "type": "response.content_part.done",
            **ids,
            "part": content_part(text, text_only=text_only),
        },
        {
            "type": "response.output_item.done",
            "response_id": response_id,
            "output_index": 0,
            "item": item,
        },
        {"type": "conversation.item.done", "previous_item_id": previous_item_id, "item": item},
    ]
    return events


def speech_started(item_id: str, start_ms: int) -> dict[str, Any]:
    return {
        "type": "input_audio_buffer.speech_started",
        "audio_start_ms": start_ms,
        "item_id": item_id,
    }


def speech_stopped(item_id: str, end_ms: int) -> dict[str, Any]:
    return {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item_id}


def input_committed(item_id: str, previous_item_id: str | None) -> dict[str, Any]:
    return {
        "type": "input_audio_buffer.committed",
        "previous_item_id": previous_item_id,
        "item_id": item_id,
    }


def item_truncated(item_id: str, content_index: int, end_ms: int) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "content_index": content_index,
        "audio_end_ms": end_ms,
    }


def input_transcription_delta(item_id: str, delta: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.delta",
        "item_id": item_id,
        "content_index": 0,
        "delta": delta,
    }


def input_transcription_completed(item_id: str, transcript: str, seconds: float) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item_id,
        "content_index": 0,
        "transcript": transcript,
        "usage": {"type": "duration", "seconds": seconds},
    }


def options_asked(update: Mapping[str, Any], current: SessionOptions) -> SessionOptions:
    """The options a GA ``session.update`` asks for, starting from ``current``: its
    instructions, voice, turn detection and input language."""
    wanted = current
    if "instructions" in update and (
        update["instructions"] is None or isinstance(update["instructions"], str)
    ):
        wanted = replace(wanted, instructions=update["instructions"] or None)
    audio = mapping(update.get("audio"))
    audio_in, audio_out = mapping(audio.get("input")), mapping(audio.get("output"))
    if isinstance(audio_out.get("voice"), str):
        wanted = replace(wanted, voice=audio_out["voice"])
    if "turn_detection" in audio_in:
        detection = audio_in["turn_detection"]
        wanted = replace(wanted, turn_detection="manual" if detection is None else "server_vad")
    transcription = audio_in.get("transcription")
    if isinstance(transcription, Mapping) and "language" in transcription:
        language = transcription["language"]
        wanted = replace(wanted, language=language if isinstance(language, str) else None)
    return wanted
