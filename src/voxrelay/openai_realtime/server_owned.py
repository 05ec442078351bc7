"""What the server owns of a pass-through client's session and responses.

The session feeds its other listeners and stores transcripts from the same upstream
events, so the upstream's audio stays PCM16 at 24 kHz and its input transcription stays
on, with the server's model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voxrelay.openai_realtime.protocol import PCM_BETA, PCM_GA, Dialect


def own_session_update(
    session: Mapping[str, Any], dialect: Dialect, transcription_model: str | None
) -> dict[str, Any]:
    """A client's ``session.update`` (in the upstream's dialect) minus what the server
    owns: the model is dropped; audio formats stay PCM16 at 24 kHz; input transcription
    stays on with the server's model (the client may set its language, prompt and other
    options)."""
    out = dict(session)
    out.pop("model", None)
    if dialect == "ga":
        out["type"] = "realtime"
        audio = out.get("audio")
        if isinstance(audio, Mapping):
            audio = dict(audio)
            for side in ("input", "output"):
                part = audio.get(side)
                if not isinstance(part, Mapping):
                    continue
                part = dict(part)
                if "format" in part:
                    part["format"] = dict(PCM_GA)
                if side == "input" and "transcription" in part:
                    _own_transcription(part, "transcription", transcription_model)
                audio[side] = part
            out["audio"] = audio
    else:
        out.pop("client_secret", None)
        for key in ("input_audio_format", "output_audio_format"):
            if key in out:
                out[key] = PCM_BETA
        if "input_audio_transcription" in out:
            _own_transcription(out, "input_audio_transcription", transcription_model)
    return out


def _own_transcription(holder: dict[str, Any], key: str, model: str | None) -> None:
    if model is None:
        holder.pop(key)  # the upstream keeps what the server set
        return
    chosen = holder[key]
    holder[key] = {**(dict(chosen) if isinstance(chosen, Mapping) else {}), "model": model}


def own_response_params(params: Mapping[str, Any], dialect: Dialect) -> dict[str, Any]:
    """``response.create`` parameters minus a different output audio format."""
    out = dict(params)
    if dialect == "beta":
        out.pop("output_audio_format", None)
        return out
    audio = out.get("audio")
    if isinstance(audio, Mapping) and isinstance(audio.get("output"), Mapping):
        output = {k: v for k, v in audio["output"].items() if k != "format"}
        out["audio"] = {**audio, "output": output}
    return out
