"""Usage as the OpenAI Realtime protocol reports it (both dialects), in the server's own
vocabulary: ``response.done``'s ``usage`` and each input transcription's."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.openai_realtime import validate_event

from voxrelay.events import ResponseDone, TokenUsage, TranscriptDone, TranscriptionUsage
from voxrelay.openai_realtime.model_events import model_event

USAGE: dict[str, Any] = {
    "total_tokens": 420,
    "input_tokens": 300,
    "output_tokens": 120,
    "input_token_details": {"text_tokens": 100, "audio_tokens": 200, "cached_tokens": 64},
    "output_token_details": {"text_tokens": 20, "audio_tokens": 100},
}


def _done(dialect: str, usage: Any) -> dict[str, Any]:
    response: dict[str, Any] = {
        "id": "resp_1",
        "object": "realtime.response",
        "status": "completed",
        "status_details": None,
        "output": [],
        "usage": usage,
    }
    if dialect == "ga":
        response["conversation_id"] = "conv_1"
    return {"event_id": "event_1", "type": "response.done", "response": response}


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_response_done_carries_its_usage(dialect: str) -> None:
    usage = dict(USAGE)
    if dialect == "ga":
        details = {**USAGE["input_token_details"]}
        details["cached_tokens_details"] = {"text_tokens": 40, "audio_tokens": 24}
        usage["input_token_details"] = details
    event = _done(dialect, usage)
    assert validate_event(dialect, "server", event) is None  # type: ignore[arg-type]
    split = (40, 24) if dialect == "ga" else (0, 0)
    assert model_event(event) == ResponseDone(
        "resp_1",
        "completed",
        TokenUsage(
            input_tokens=300,
            output_tokens=120,
            input_text_tokens=100,
            input_audio_tokens=200,
            cached_tokens=64,
            cached_text_tokens=split[0],
            cached_audio_tokens=split[1],
            output_text_tokens=20,
            output_audio_tokens=100,
        ),
    )


def test_a_response_without_usage_has_none() -> None:
    assert model_event(_done("ga", None)) == ResponseDone("resp_1", "completed")
    # Counts that are not counts are none.
    odd = _done("ga", {"input_tokens": "many", "output_tokens": -3})
    assert model_event(odd) == ResponseDone("resp_1", "completed", TokenUsage())


@pytest.mark.parametrize("dialect", ["ga", "beta"])
@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "type": "tokens",
                "input_tokens": 30,
                "output_tokens": 4,
                "total_tokens": 34,
                "input_token_details": {"text_tokens": 2, "audio_tokens": 28},
            },
            TranscriptionUsage(
                input_tokens=30, output_tokens=4, input_text_tokens=2, input_audio_tokens=28
            ),
        ),
        ({"type": "duration", "seconds": 2.5}, TranscriptionUsage(seconds=2.5)),
    ],
)
def test_a_transcription_carries_its_usage(
    dialect: str, usage: dict[str, Any], expected: TranscriptionUsage
) -> None:
    event = {
        "event_id": "event_2",
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_1",
        "content_index": 0,
        "transcript": "go forward",
        "usage": usage,
    }
    assert validate_event(dialect, "server", event) is None  # type: ignore[arg-type]
    assert model_event(event) == TranscriptDone("user", "item_1", "go forward", expected)
