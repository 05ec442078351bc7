"""The session object (``session.update``, ``session.created``/``updated``) in each dialect.

GA nests the audio settings (``audio.input``/``audio.output``, ``type: "realtime"``); beta
keeps them flat (``input_audio_format``, ``voice``, ``turn_detection``,
``input_audio_transcription``). Fields the target dialect does not know are dropped.
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
from voxrelay.openai_realtime.protocol import BETA_MODELS, Dialect

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
    return pick(out, keys)


def _turn_detection_to_beta(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return pick(value, _TURN_DETECTION_BETA_KEYS)


def _transcription_to_beta(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return pick(value, _TRANSCRIPTION_BETA_KEYS)


def _noise_reduction_to_beta(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    return pick(value, ("type",))


def session_to_beta(session: Mapping[str, Any], *, update: bool = False) -> dict[str, Any]:
    """A GA session object (``session.update``, ``session.created``/``updated``) in beta form."""
    out: dict[str, Any] = {}
    audio = mapping(session.get("audio"))
    audio_in = mapping(audio.get("input"))
    audio_out = mapping(audio.get("output"))
    if not update and "id" in session:
        out["id"] = session["id"]
    model = session.get("model")
    if model in BETA_MODELS:
        out["model"] = model
    if "output_modalities" in session:
        out["modalities"] = modalities_to_beta(session["output_modalities"])
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
        out["tools"] = function_tools(session["tools"])
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
        out["output_modalities"] = modalities_to_ga(session["modalities"])
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
