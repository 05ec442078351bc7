"""Conversation items, responses and ``response.create`` parameters in each dialect.

Assistant content is ``output_text``/``output_audio`` in GA, ``text``/``audio`` in beta;
beta has no image parts and knows function tools only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voxrelay.openai_realtime.fields import (
    beta_format,
    function_tools,
    ga_format,
    mapping,
    modalities_to_beta,
    modalities_to_ga,
    pick,
)
from voxrelay.openai_realtime.protocol import Dialect

_ASSISTANT_PART_TO_BETA = {"output_text": "text", "output_audio": "audio"}
_ASSISTANT_PART_TO_GA = {"text": "output_text", "audio": "output_audio"}
_BETA_PART_TYPES = frozenset({"input_text", "input_audio", "item_reference", "text", "audio"})


def item_to_beta(item: Mapping[str, Any]) -> dict[str, Any]:
    out = pick(
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
            content.append({**pick(part, ("text", "audio", "transcript")), "type": kind})
        out["content"] = content
    return out


def item_to_ga(item: Mapping[str, Any]) -> dict[str, Any]:
    kind = item.get("type") or "message"
    base = pick(item, ("id", "object", "status"))
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
        content.append({**pick(part, fields), "type": part_kind})
    return {**base, "type": "message", "role": role, "content": content}


def convert_item(item: Any, source: Dialect, target: Dialect) -> Any:
    if source == target or not isinstance(item, Mapping):
        return item
    return item_to_beta(item) if target == "beta" else item_to_ga(item)


_USAGE_INPUT_BETA_KEYS = ("audio_tokens", "cached_tokens", "text_tokens")


def _usage_to_beta(usage: Any) -> Any:
    if not isinstance(usage, Mapping):
        return usage
    out = dict(usage)
    details = usage.get("input_token_details")
    if isinstance(details, Mapping):
        out["input_token_details"] = pick(details, _USAGE_INPUT_BETA_KEYS)
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
    out = pick(response, _RESPONSE_KEYS)
    if isinstance(response.get("output"), list):
        out["output"] = [item_to_beta(i) for i in response["output"] if isinstance(i, Mapping)]
    if "usage" in response:
        out["usage"] = _usage_to_beta(response["usage"])
    if "output_modalities" in response:
        out["modalities"] = modalities_to_beta(response["output_modalities"])
    audio_out = mapping(mapping(response.get("audio")).get("output"))
    if audio_out:
        voice = audio_out.get("voice")
        if voice is None or isinstance(voice, str):
            out["voice"] = voice
        if "format" in audio_out:
            out["output_audio_format"] = beta_format(audio_out["format"])
    return out


def response_to_ga(response: Mapping[str, Any]) -> dict[str, Any]:
    out = pick(response, (*_RESPONSE_KEYS, "usage"))
    if isinstance(response.get("output"), list):
        out["output"] = [item_to_ga(i) for i in response["output"] if isinstance(i, Mapping)]
    if "modalities" in response:
        out["output_modalities"] = modalities_to_ga(response["modalities"])
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
    out = pick(params, ("conversation", "instructions", "metadata"))
    if isinstance(params.get("input"), list):
        out["input"] = [item_to_beta(i) for i in params["input"] if isinstance(i, Mapping)]
    if "max_output_tokens" in params:
        out["max_response_output_tokens"] = params["max_output_tokens"]
    if "output_modalities" in params:
        out["modalities"] = modalities_to_beta(params["output_modalities"])
    if "tools" in params:
        out["tools"] = function_tools(params["tools"])
    if isinstance(params.get("tool_choice"), str):
        out["tool_choice"] = params["tool_choice"]
    audio_out = mapping(mapping(params.get("audio")).get("output"))
    if audio_out:
        if isinstance(audio_out.get("voice"), str):
            out["voice"] = audio_out["voice"]
        if "format" in audio_out:
            out["output_audio_format"] = beta_format(audio_out["format"])
    return out


def response_params_to_ga(params: Mapping[str, Any]) -> dict[str, Any]:
    out = pick(params, ("conversation", "instructions", "metadata", "tools", "tool_choice"))
    if isinstance(params.get("input"), list):
        out["input"] = [item_to_ga(i) for i in params["input"] if isinstance(i, Mapping)]
    if "max_response_output_tokens" in params:
        out["max_output_tokens"] = params["max_response_output_tokens"]
    if "modalities" in params:
        out["output_modalities"] = modalities_to_ga(params["modalities"])
    audio_out: dict[str, Any] = {}
    if "voice" in params:
        audio_out["voice"] = params["voice"]
    if "output_audio_format" in params:
        audio_out["format"] = ga_format(params["output_audio_format"])
    if audio_out:
        out["audio"] = {"output": audio_out}
    return out


def input_text(item: Mapping[str, Any]) -> str:
    """The typed text of a user message: its ``input_text`` parts (the same in both
    dialects), joined by spaces."""
    parts = item.get("content")
    if not isinstance(parts, list):
        return ""
    texts = [
        str(part.get("text") or "")
        for part in parts
        if isinstance(part, Mapping) and part.get("type") == "input_text"
    ]
    return " ".join(t for t in texts if t)
