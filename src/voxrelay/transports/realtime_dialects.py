"""The two dialects of the OpenAI Realtime event protocol, and translation between them.

``"ga"`` is the current protocol (``/v1/realtime``; ``response.output_audio.delta``,
``conversation.item.added``/``.done``, a nested ``session.audio.input``/``.output`` with
``type: "realtime"``, ``output_modalities``, assistant content ``output_text``/``output_audio``).
``"beta"`` is the older one that clients select with ``OpenAI-Beta: realtime=v1`` and that
Azure's ``api-version`` endpoint still serves (``response.audio.delta``,
``conversation.item.created``, a flat session with ``input_audio_format``, ``voice``,
``turn_detection``, ``input_audio_transcription``, ``modalities``, content ``text``/``audio``).

Every name here follows the ``openai`` package's ``openai.types.realtime`` (GA) and
``openai.types.beta.realtime`` (beta) models. Translation is pure: events in, events out.
A server event may become several (beta's ``conversation.item.created`` of a finished item
is GA's ``conversation.item.added`` then ``conversation.item.done``) or none (GA events
the beta protocol has no word for). Fields the target dialect does not know are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

Dialect = Literal["ga", "beta"]

SAMPLE_RATE = 24000

# -- event names -----------------------------------------------------------------------

# Server events whose names differ: GA -> beta.
_SERVER_GA_TO_BETA = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
_SERVER_BETA_TO_GA = {beta: ga for ga, beta in _SERVER_GA_TO_BETA.items()}

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

# -- audio formats -----------------------------------------------------------------------

_FORMAT_TO_BETA = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_FORMAT_TO_GA = {beta: ga for ga, beta in _FORMAT_TO_BETA.items()}


def ga_format(beta_format: Any) -> dict[str, Any]:
    """A beta format name (``"pcm16"``) as a GA format object."""
    kind = _FORMAT_TO_GA.get(str(beta_format), "audio/pcm")
    return {"type": kind, "rate": SAMPLE_RATE} if kind == "audio/pcm" else {"type": kind}


def beta_format(ga: Any) -> str:
    """A GA format object as a beta format name."""
    kind = ga.get("type") if isinstance(ga, Mapping) else None
    return _FORMAT_TO_BETA.get(str(kind), "pcm16")


PCM_GA: dict[str, Any] = {"type": "audio/pcm", "rate": SAMPLE_RATE}
PCM_BETA = "pcm16"

# -- helpers ---------------------------------------------------------------------------------


def _pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: source[key] for key in keys if key in source}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _modalities_to_beta(modalities: Any) -> Any:
    # GA's ["audio"] is audio with its transcript, which beta spells ["text", "audio"].
    if isinstance(modalities, list):
        return ["text"] if modalities == ["text"] else ["text", "audio"]
    return modalities


def _modalities_to_ga(modalities: Any) -> Any:
    if isinstance(modalities, list):
        return ["text"] if "audio" not in modalities else ["audio"]
    return modalities


def _function_tools(tools: Any) -> Any:
    """Beta knows function tools only."""
    if not isinstance(tools, list):
        return tools
    return [
        _pick(tool, ("type", "name", "description", "parameters"))
        for tool in tools
        if isinstance(tool, Mapping) and tool.get("type", "function") == "function"
    ]


_TRANSCRIPTION_BETA_KEYS = ("model", "language", "prompt")
_TURN_DETECTION_BETA_KEYS = (
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "create_response",
    "interrupt_response",
    "eagerness",
)
_SERVER_VAD_GA_KEYS = (
    "type",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "create_response",
    "interrupt_response",
    "idle_timeout_ms",
)
_SEMANTIC_VAD_GA_KEYS = ("type", "eagerness", "create_response", "interrupt_response")


def _turn_detection_to_ga(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    out = dict(value)
    out.setdefault("type", "server_vad")
    keys = _SEMANTIC_VAD_GA_KEYS if out["type"] == "semantic_vad" else _SERVER_VAD_GA_KEYS
    return _pick(out, keys)


def _turn_detection_to_beta(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return _pick(value, _TURN_DETECTION_BETA_KEYS)


def _transcription_to_beta(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return _pick(value, _TRANSCRIPTION_BETA_KEYS)


def _noise_reduction_to_beta(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return _pick(value, ("type",))


# -- sessions --------------------------------------------------------------------------------


def session_to_beta(session: Mapping[str, Any], *, update: bool = False) -> dict[str, Any]:
    """A GA session object (``session.update``, ``session.created``/``updated``) in beta form."""
    out: dict[str, Any] = {}
    audio = _mapping(session.get("audio"))
    audio_in = _mapping(audio.get("input"))
    audio_out = _mapping(audio.get("output"))
    if not update and "id" in session:
        out["id"] = session["id"]
    model = session.get("model")
    if model in BETA_MODELS:
        out["model"] = model
    if "output_modalities" in session:
        out["modalities"] = _modalities_to_beta(session["output_modalities"])
    if "instructions" in session:
        out["instructions"] = session["instructions"]
    if "voice" in audio_out and (audio_out["voice"] is None or isinstance(audio_out["voice"], str)):
        out["voice"] = audio_out["voice"]
    if "format" in audio_in:
        out["input_audio_format"] = beta_format(audio_in["format"])
    if "format" in audio_out:
        out["output_audio_format"] = beta_format(audio_out["format"])
    if "noise_reduction" in audio_in:
        out["input_audio_noise_reduction"] = _noise_reduction_to_beta(audio_in["noise_reduction"])
    if "transcription" in audio_in:
        out["input_audio_transcription"] = _transcription_to_beta(audio_in["transcription"])
    if "turn_detection" in audio_in:
        out["turn_detection"] = _turn_detection_to_beta(audio_in["turn_detection"])
    if "speed" in audio_out:
        out["speed"] = audio_out["speed"]
    if "tools" in session:
        out["tools"] = _function_tools(session["tools"])
    if isinstance(session.get("tool_choice"), str):
        out["tool_choice"] = session["tool_choice"]
    if "tracing" in session:
        out["tracing"] = session["tracing"]
    if "max_output_tokens" in session:
        out["max_response_output_tokens"] = session["max_output_tokens"]
    return out


def session_to_ga(session: Mapping[str, Any], *, update: bool = False) -> dict[str, Any]:
    """A beta session object in GA form (``type: "realtime"``, nested ``audio``)."""
    out: dict[str, Any] = {"type": "realtime"}
    audio_in: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    if "model" in session and not update:
        out["model"] = session["model"]
    if "modalities" in session:
        out["output_modalities"] = _modalities_to_ga(session["modalities"])
    if "instructions" in session:
        out["instructions"] = session["instructions"]
    if "input_audio_format" in session:
        audio_in["format"] = ga_format(session["input_audio_format"])
    if "input_audio_noise_reduction" in session:
        audio_in["noise_reduction"] = session["input_audio_noise_reduction"]
    if "input_audio_transcription" in session:
        audio_in["transcription"] = session["input_audio_transcription"]
    if "turn_detection" in session:
        audio_in["turn_detection"] = _turn_detection_to_ga(session["turn_detection"])
    if "output_audio_format" in session:
        audio_out["format"] = ga_format(session["output_audio_format"])
    if "voice" in session:
        audio_out["voice"] = session["voice"]
    if "speed" in session:
        audio_out["speed"] = session["speed"]
    if audio_in or audio_out:
        out["audio"] = {
            **({"input": audio_in} if audio_in else {}),
            **({"output": audio_out} if audio_out else {}),
        }
    for key in ("tools", "tool_choice", "tracing"):
        if key in session:
            out[key] = session[key]
    if "max_response_output_tokens" in session:
        out["max_output_tokens"] = session["max_response_output_tokens"]
    return out


def convert_session(
    session: Mapping[str, Any], source: Dialect, target: Dialect, *, update: bool = False
) -> dict[str, Any]:
    if source == target:
        return dict(session)
    if target == "beta":
        return session_to_beta(session, update=update)
    return session_to_ga(session, update=update)


# -- conversation items ------------------------------------------------------------------------

_ASSISTANT_PART_TO_BETA = {"output_text": "text", "output_audio": "audio"}
_ASSISTANT_PART_TO_GA = {"text": "output_text", "audio": "output_audio"}
_BETA_PART_TYPES = frozenset({"input_text", "input_audio", "item_reference", "text", "audio"})


def item_to_beta(item: Mapping[str, Any]) -> dict[str, Any]:
    out = _pick(
        item,
        ("id", "object", "type", "status", "role", "call_id", "name", "arguments", "output"),
    )
    if isinstance(item.get("content"), list):
        content = []
        for part in item["content"]:
            if not isinstance(part, Mapping):
                continue
            kind = str(part.get("type"))
            kind = _ASSISTANT_PART_TO_BETA.get(kind, kind)
            if kind not in _BETA_PART_TYPES:
                continue  # e.g. input_image: beta has no such part
            content.append({**_pick(part, ("text", "audio", "transcript")), "type": kind})
        out["content"] = content
    return out


def item_to_ga(item: Mapping[str, Any]) -> dict[str, Any]:
    kind = item.get("type") or "message"
    base = _pick(item, ("id", "object", "status"))
    if kind == "function_call":
        return {
            **base,
            "type": kind,
            "call_id": item.get("call_id"),
            "name": item.get("name") or "",
            "arguments": item.get("arguments") or "",
        }
    if kind == "function_call_output":
        return {
            **base,
            "type": kind,
            "call_id": item.get("call_id") or "",
            "output": item.get("output") or "",
        }
    if kind != "message":
        return dict(item)
    role = item.get("role") or "user"
    content = []
    for part in item.get("content") or []:
        if not isinstance(part, Mapping):
            continue
        part_kind = str(part.get("type"))
        if role == "assistant":
            part_kind = _ASSISTANT_PART_TO_GA.get(part_kind, part_kind)
        elif part_kind == "item_reference":
            continue
        fields = ("text",) if role == "system" else ("text", "audio", "transcript")
        content.append({**_pick(part, fields), "type": part_kind})
    return {**base, "type": "message", "role": role, "content": content}


def convert_item(item: Any, source: Dialect, target: Dialect) -> Any:
    if source == target or not isinstance(item, Mapping):
        return item
    return item_to_beta(item) if target == "beta" else item_to_ga(item)


# -- responses ---------------------------------------------------------------------------------

_USAGE_INPUT_BETA_KEYS = ("audio_tokens", "cached_tokens", "text_tokens")


def _usage_to_beta(usage: Any) -> Any:
    if not isinstance(usage, Mapping):
        return usage
    out = dict(usage)
    details = usage.get("input_token_details")
    if isinstance(details, Mapping):
        out["input_token_details"] = _pick(details, _USAGE_INPUT_BETA_KEYS)
    return out


# Response fields spelled the same in both dialects.
_RESPONSE_KEYS = (
    "id",
    "object",
    "status",
    "status_details",
    "conversation_id",
    "max_output_tokens",
    "metadata",
)


def response_to_beta(response: Mapping[str, Any]) -> dict[str, Any]:
    """A GA ``response`` object (``response.created``/``response.done``) in beta form."""
    out = _pick(response, _RESPONSE_KEYS)
    if isinstance(response.get("output"), list):
        out["output"] = [item_to_beta(i) for i in response["output"] if isinstance(i, Mapping)]
    if "usage" in response:
        out["usage"] = _usage_to_beta(response["usage"])
    if "output_modalities" in response:
        out["modalities"] = _modalities_to_beta(response["output_modalities"])
    audio_out = _mapping(_mapping(response.get("audio")).get("output"))
    if audio_out:
        voice = audio_out.get("voice")
        if voice is None or isinstance(voice, str):
            out["voice"] = voice
        if "format" in audio_out:
            out["output_audio_format"] = beta_format(audio_out["format"])
    return out


def response_to_ga(response: Mapping[str, Any]) -> dict[str, Any]:
    out = _pick(response, (*_RESPONSE_KEYS, "usage"))
    if isinstance(response.get("output"), list):
        out["output"] = [item_to_ga(i) for i in response["output"] if isinstance(i, Mapping)]
    if "modalities" in response:
        out["output_modalities"] = _modalities_to_ga(response["modalities"])
    audio_out: dict[str, Any] = {}
    if "voice" in response:
        audio_out["voice"] = response["voice"]
    if "output_audio_format" in response:
        audio_out["format"] = ga_format(response["output_audio_format"])
    if audio_out:
        out["audio"] = {"output": audio_out}
    return out


def response_params_to_beta(params: Mapping[str, Any]) -> dict[str, Any]:
    """GA ``response.create`` parameters in beta form."""
    out = _pick(params, ("conversation", "instructions", "metadata"))
    if isinstance(params.get("input"), list):
        out["input"] = [item_to_beta(i) for i in params["input"] if isinstance(i, Mapping)]
    if "max_output_tokens" in params:
        out["max_response_output_tokens"] = params["max_output_tokens"]
    if "output_modalities" in params:
        out["modalities"] = _modalities_to_beta(params["output_modalities"])
    if "tools" in params:
        out["tools"] = _function_tools(params["tools"])
    if isinstance(params.get("tool_choice"), str):
        out["tool_choice"] = params["tool_choice"]
    audio_out = _mapping(_mapping(params.get("audio")).get("output"))
    if audio_out:
        if isinstance(audio_out.get("voice"), str):
            out["voice"] = audio_out["voice"]
        if "format" in audio_out:
            out["output_audio_format"] = beta_format(audio_out["format"])
    return out


def response_params_to_ga(params: Mapping[str, Any]) -> dict[str, Any]:
    out = _pick(params, ("conversation", "instructions", "metadata", "tools", "tool_choice"))
    if isinstance(params.get("input"), list):
        out["input"] = [item_to_ga(i) for i in params["input"] if isinstance(i, Mapping)]
    if "max_response_output_tokens" in params:
        out["max_output_tokens"] = params["max_response_output_tokens"]
    if "modalities" in params:
        out["output_modalities"] = _modalities_to_ga(params["modalities"])
    audio_out: dict[str, Any] = {}
    if "voice" in params:
        audio_out["voice"] = params["voice"]
    if "output_audio_format" in params:
        audio_out["format"] = ga_format(params["output_audio_format"])
    if audio_out:
        out["audio"] = {"output": audio_out}
    return out


# -- events --------------------------------------------------------------------------------------


def client_event(
    event: Mapping[str, Any], source: Dialect, target: Dialect
) -> dict[str, Any] | None:
    """A client event of dialect ``source`` as dialect ``target`` speaks it; None when the
    target has no such event (beta's ``transcription_session.update`` in GA). Events of
    unknown type pass unchanged, for the receiver to judge."""
    out = dict(event)
    if source == target:
        return out
    kind = event.get("type")
    if kind == "transcription_session.update":
        return None
    if kind == "session.update" and isinstance(event.get("session"), Mapping):
        out["session"] = convert_session(event["session"], source, target, update=True)
    elif kind == "conversation.item.create" and isinstance(event.get("item"), Mapping):
        out["item"] = convert_item(event["item"], source, target)
    elif kind == "response.create" and isinstance(event.get("response"), Mapping):
        convert = response_params_to_beta if target == "beta" else response_params_to_ga
        out["response"] = convert(event["response"])
    return out


def server_event(
    event: Mapping[str, Any], source: Dialect, target: Dialect
) -> list[dict[str, Any]]:
    """A server event of dialect ``source`` as the events dialect ``target`` sends for it
    (usually one, sometimes two or none)."""
    if source == target:
        return [dict(event)]
    kind = str(event.get("type"))
    out = dict(event)
    if target == "beta":
        if kind not in BETA_SERVER_EVENTS and kind not in _SERVER_GA_TO_BETA:
            return []  # GA only: conversation.item.done, mcp_*, timeouts, segments, DTMF
        out["type"] = _SERVER_GA_TO_BETA.get(kind, kind)
    else:
        if kind not in GA_SERVER_EVENTS and kind not in _SERVER_BETA_TO_GA:
            return []  # beta only: transcription_session.updated
        out["type"] = _SERVER_BETA_TO_GA.get(kind, kind)
    if "item" in event:
        out["item"] = convert_item(event["item"], source, target)
    if "response" in event and isinstance(event["response"], Mapping):
        convert = response_to_beta if target == "beta" else response_to_ga
        out["response"] = convert(event["response"])
    if kind in ("session.created", "session.updated") and isinstance(event.get("session"), Mapping):
        out["session"] = convert_session(event["session"], source, target)
    if target == "beta":
        if kind.startswith("conversation.item.input_audio_transcription."):
            out.pop("languages", None)
        elif kind == "response.function_call_arguments.done":
            out.pop("name", None)
        return [out]
    if kind == "response.function_call_arguments.done":
        out.setdefault("name", "")
    if kind == "conversation.item.created" and isinstance(out.get("item"), Mapping):
        out.setdefault("previous_item_id", None)
        if out["item"].get("status") == "completed":
            return [out, _item_done(out, event)]
    if kind == "response.output_item.done" and isinstance(out.get("item"), Mapping):
        # GA also says the conversation's item is done once its response item is.
        return [out, _item_done({"item": out["item"], "previous_item_id": None}, event)]
    return [out]


def _item_done(added: Mapping[str, Any], original: Mapping[str, Any]) -> dict[str, Any]:
    done: dict[str, Any] = {
        "type": "conversation.item.done",
        "previous_item_id": added.get("previous_item_id"),
        "item": added["item"],
    }
    if "event_id" in original:
        done = {"event_id": f"{original['event_id']}_done", **done}
    return done
