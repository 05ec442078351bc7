"""Fields spelled differently by the two dialects wherever they appear (sessions,
responses, ``response.create``): audio formats, output modalities, tools."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voxrelay.openai_realtime.protocol import PCM_BETA, PCM_GA

_FORMAT_TO_BETA = {"audio/pcm": PCM_BETA, "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
_FORMAT_TO_GA = {beta: ga for ga, beta in _FORMAT_TO_BETA.items()}


def ga_format(beta_format: Any) -> dict[str, Any]:
    """A beta format name (``"pcm16"``) as a GA format object."""
    kind = _FORMAT_TO_GA.get(str(beta_format), "audio/pcm")
    return dict(PCM_GA) if kind == "audio/pcm" else {"type": kind}


def beta_format(ga: Any) -> str:
    """A GA format object as a beta format name."""
    kind = ga.get("type") if isinstance(ga, Mapping) else None
    return _FORMAT_TO_BETA.get(str(kind), PCM_BETA)


def pick(source: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: source[key] for key in keys if key in source}


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def modalities_to_beta(modalities: Any) -> Any:
    # GA's ["audio"] is audio with its transcript, which beta spells ["text", "audio"].
    if isinstance(modalities, list):
        return ["text"] if modalities == ["text"] else ["text", "audio"]
    return modalities


def modalities_to_ga(modalities: Any) -> Any:
    if isinstance(modalities, list):
        return ["text"] if "audio" not in modalities else ["audio"]
    return modalities


def function_tools(tools: Any) -> Any:
    """Beta knows function tools only."""
    if not isinstance(tools, list):
        return tools
    return [
        pick(tool, ("type", "name", "description", "parameters"))
        for tool in tools
        if isinstance(tool, Mapping) and tool.get("type", "function") == "function"
    ]
