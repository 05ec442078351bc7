"""Translation between the GA and beta dialects of the OpenAI Realtime protocol, checked
against the ``openai`` package's models (through the fake upstream's validator, which
also rejects fields the models do not know)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from fakes.openai_realtime import FakeRealtimeServer, sine_pcm, validate_event
from websockets.asyncio.client import connect

from voxrelay.openai_realtime.server_owned import own_response_params, own_session_update
from voxrelay.openai_realtime.session_shapes import session_to_beta, session_to_ga
from voxrelay.openai_realtime.translation import client_event, server_event

OTHER = {"ga": "beta", "beta": "ga"}


async def _drive(fake: FakeRealtimeServer) -> None:
    """A session with every kind of turn, so the fake sends most server events."""
    dialect = fake.dialect
    async with connect(fake.url) as ws:

        async def until(kind: str) -> None:
            async with asyncio.timeout(10):
                while json.loads(await ws.recv())["type"] != kind:
                    pass

        await until("session.created")
        if dialect == "ga":
            transcription = {"model": "gpt-4o-mini-transcribe"}
            update: dict[str, Any] = {
                "type": "realtime",
                "audio": {"input": {"transcription": transcription}},
            }
        else:
            update = {"input_audio_transcription": {"model": "whisper-1"}}
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        await until("session.updated")
        audio = sine_pcm(0, 12000) + bytes(28800)
        for start in range(0, len(audio), 4800):
            chunk = base64.b64encode(audio[start : start + 4800]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await until("response.done")
        item = {
            "id": "msg_t",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a rather long question for you"}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        await until("response.output_item.added")
        await ws.send(json.dumps({"type": "response.cancel"}))
        await until("response.done")
        await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_e"}))
        await until("error")


@pytest.mark.parametrize("source", ["ga", "beta"])
async def test_every_server_event_translates_to_a_valid_event(source: str) -> None:
    fake = FakeRealtimeServer(source, delta_delay=0.01)  # type: ignore[arg-type]
    async with fake:
        await _drive(fake)
    sent = fake.server_events()
    assert fake.validation_errors == []
    target = OTHER[source]
    translated = [t for event in sent for t in server_event(event, source, target)]  # type: ignore[arg-type]
    problems = [validate_event(target, "server", e) for e in translated]  # type: ignore[arg-type]
    assert [p for p in problems if p] == []
    kinds = {e["type"] for e in translated}
    if target == "beta":
        assert {"response.audio.delta", "response.audio_transcript.done"} <= kinds
        assert "conversation.item.created" in kinds
        assert not any(k.startswith("response.output_audio") for k in kinds)
        assert "conversation.item.done" not in kinds
    else:
        assert {"response.output_audio.delta", "response.output_audio_transcript.done"} <= kinds
        assert {"conversation.item.added", "conversation.item.done"} <= kinds
        assert "conversation.item.created" not in kinds
    # Identity within a dialect.
    assert all(server_event(e, source, source) == [e] for e in sent)  # type: ignore[arg-type]


def test_beta_item_created_becomes_added_and_done() -> None:
    user = {
        "id": "item_1",
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    created = {
        "event_id": "e1",
        "type": "conversation.item.created",
        "previous_item_id": None,
        "item": user,
    }
    out = server_event(created, "beta", "ga")
    assert [e["type"] for e in out] == ["conversation.item.added", "conversation.item.done"]
    assert out[1]["event_id"] == "e1_done"
    # An assistant item still in progress is only added; its output_item.done finishes it.
    assistant = {**user, "role": "assistant", "status": "in_progress", "content": []}
    assert [e["type"] for e in server_event({**created, "item": assistant}, "beta", "ga")] == [
        "conversation.item.added"
    ]
    finished = {
        **assistant,
        "status": "completed",
        "content": [{"type": "audio", "transcript": "hi"}],
    }
    done = {
        "event_id": "e2",
        "type": "response.output_item.done",
        "response_id": "r",
        "output_index": 0,
        "item": finished,
    }
    out = server_event(done, "beta", "ga")
    assert [e["type"] for e in out] == ["response.output_item.done", "conversation.item.done"]
    assert out[0]["item"]["content"] == [{"type": "output_audio", "transcript": "hi"}]
    assert all(validate_event("ga", "server", e) is None for e in out)


def test_ga_only_server_events_are_dropped_for_beta() -> None:
    for event in (
        {"event_id": "e", "type": "conversation.item.done", "item": {}, "previous_item_id": None},
        {
            "event_id": "e",
            "type": "input_audio_buffer.timeout_triggered",
            "item_id": "i",
            "audio_start_ms": 0,
            "audio_end_ms": 1,
        },
        {"event_id": "e", "type": "mcp_list_tools.in_progress", "item_id": "i"},
    ):
        assert server_event(event, "ga", "beta") == []
    updated = {"event_id": "e", "type": "transcription_session.updated", "session": {}}
    assert server_event(updated, "beta", "ga") == []


GA_CLIENT_EVENTS: list[dict[str, Any]] = [
    {
        "type": "session.update",
        "event_id": "c1",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Be kind.",
            "output_modalities": ["audio"],
            "max_output_tokens": 500,
            "tool_choice": "auto",
            "tools": [
                {"type": "function", "name": "f", "description": "d", "parameters": {}},
            ],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "noise_reduction": {"type": "near_field"},
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "he"},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.6,
                        "silence_duration_ms": 400,
                        "idle_timeout_ms": 5000,
                    },
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "coral", "speed": 1.1},
            },
        },
    },
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["text"],
            "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "low"}}},
        },
    },
    {
        "type": "conversation.item.create",
        "previous_item_id": None,
        "item": {
            "id": "a1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Earlier answer"}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {"type": "function_call_output", "call_id": "call_1", "output": "{}"},
    },
    {
        "type": "response.create",
        "response": {
            "instructions": "Shout.",
            "output_modalities": ["audio"],
            "audio": {"output": {"voice": "ash", "format": {"type": "audio/pcm", "rate": 24000}}},
            "max_output_tokens": "inf",
            "conversation": "auto",
            "metadata": {"k": "v"},
        },
    },
    {"type": "response.create"},
    {"type": "response.cancel", "response_id": "resp_1"},
    {"type": "input_audio_buffer.append", "audio": "AAAA"},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 5},
    {"type": "conversation.item.delete", "item_id": "i"},
]

BETA_CLIENT_EVENTS: list[dict[str, Any]] = [
    {
        "type": "session.update",
        "event_id": "c1",
        "session": {
            "model": "gpt-4o-realtime-preview",
            "modalities": ["text", "audio"],
            "instructions": "Be kind.",
            "voice": "alloy",
            "input_audio_format": "pcm16",
            "output_audio_format": "g711_alaw",
            "input_audio_noise_reduction": {"type": "far_field"},
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "eagerness": "auto"},
            "temperature": 0.7,
            "max_response_output_tokens": "inf",
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
            "tool_choice": "auto",
        },
    },
    {"type": "session.update", "session": {"turn_detection": None, "modalities": ["text"]}},
    {
        "type": "conversation.item.create",
        "item": {
            "id": "a1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Earlier answer"}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        },
    },
    {
        "type": "response.create",
        "response": {
            "modalities": ["text", "audio"],
            "voice": "verse",
            "output_audio_format": "pcm16",
            "temperature": 0.9,
            "max_response_output_tokens": 100,
            "instructions": "Whisper.",
        },
    },
    {"type": "input_audio_buffer.append", "audio": "AAAA"},
    {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 5},
]


@pytest.mark.parametrize(
    ("source", "events"), [("ga", GA_CLIENT_EVENTS), ("beta", BETA_CLIENT_EVENTS)]
)
def test_client_events_translate_to_valid_events(source: str, events: list[Any]) -> None:
    target = OTHER[source]
    for event in events:
        assert validate_event(source, "client", event) is None, event  # type: ignore[arg-type]
        translated = client_event(event, source, target)  # type: ignore[arg-type]
        assert translated is not None
        assert validate_event(target, "client", translated) is None, translated  # type: ignore[arg-type]
        assert translated.get("event_id") == event.get("event_id")


def test_session_shapes() -> None:
    ga = GA_CLIENT_EVENTS[0]["session"]
    beta = session_to_beta(ga, update=True)
    assert beta["voice"] == "coral"
    assert beta["input_audio_format"] == "pcm16"
    assert beta["output_audio_format"] == "g711_ulaw"
    assert beta["modalities"] == ["text", "audio"]
    assert beta["input_audio_transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": "he",
    }
    assert beta["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.6,
        "silence_duration_ms": 400,
    }
    assert beta["max_response_output_tokens"] == 500
    assert "model" in beta  # a beta model name
    back = session_to_ga(beta, update=True)
    assert back["type"] == "realtime"
    assert back["audio"]["output"] == {
        "format": {"type": "audio/pcmu"},
        "voice": "coral",
        "speed": 1.1,
    }
    assert back["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert back["output_modalities"] == ["audio"]
    assert "model" not in back  # a client's update never names the model
    # Text-only output and no turn detection.
    beta_text = {"modalities": ["text"], "turn_detection": None}
    ga_text = session_to_ga(beta_text)
    assert ga_text["output_modalities"] == ["text"]
    assert ga_text["audio"]["input"]["turn_detection"] is None
    # GA model names beta does not know are left out.
    assert "model" not in session_to_beta({"type": "realtime", "model": "gpt-test"})


def test_item_content_types() -> None:
    ga_item = GA_CLIENT_EVENTS[2]["item"]
    beta_event = client_event(GA_CLIENT_EVENTS[2], "ga", "beta")
    assert beta_event is not None
    assert beta_event["item"]["content"] == [{"type": "text", "text": "Earlier answer"}]
    back = client_event(beta_event, "beta", "ga")
    assert back is not None and back["item"]["content"] == ga_item["content"]


def test_transcription_session_update_has_no_ga_equivalent() -> None:
    event = {"type": "transcription_session.update", "session": {}}
    assert client_event(event, "beta", "ga") is None
    assert client_event(event, "beta", "beta") == event


def test_owned_session_settings_ga() -> None:
    update = GA_CLIENT_EVENTS[0]["session"]
    owned = own_session_update(update, "ga", "gpt-4o-mini-transcribe")
    assert "model" not in owned
    assert owned["type"] == "realtime"
    assert owned["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert owned["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert owned["audio"]["input"]["transcription"] == {
        "model": "gpt-4o-mini-transcribe",
        "language": "he",
    }
    # Everything else is the client's.
    assert owned["audio"]["output"]["voice"] == "coral"
    assert owned["audio"]["input"]["turn_detection"] == update["audio"]["input"]["turn_detection"]
    assert owned["instructions"] == "Be kind."
    assert validate_event("ga", "client", {"type": "session.update", "session": owned}) is None
    # Turning transcription off keeps it on, with the server's model.
    off = own_session_update(
        {"type": "realtime", "audio": {"input": {"transcription": None}}}, "ga", "m"
    )
    assert off["audio"]["input"]["transcription"] == {"model": "m"}
    # Without a known model the client's transcription setting is left out entirely.
    unknown = own_session_update(
        {"type": "realtime", "audio": {"input": {"transcription": None}}}, "ga", None
    )
    assert "transcription" not in unknown["audio"]["input"]
    # The caller's event is not changed.
    assert update["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert update["audio"]["output"]["format"] == {"type": "audio/pcmu"}


def test_owned_session_settings_beta() -> None:
    update = {
        "model": "gpt-4o-realtime-preview",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_alaw",
        "input_audio_transcription": {"model": "gpt-4o-transcribe", "prompt": "names"},
        "voice": "echo",
        "client_secret": {"expires_after": {"anchor": "created_at", "seconds": 60}},
    }
    owned = own_session_update(update, "beta", "whisper-1")
    assert owned == {
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_transcription": {"model": "whisper-1", "prompt": "names"},
        "voice": "echo",
    }


def test_owned_response_params() -> None:
    ga = {
        "audio": {"output": {"voice": "ash", "format": {"type": "audio/pcmu"}}},
        "instructions": "x",
    }
    assert own_response_params(ga, "ga") == {
        "audio": {"output": {"voice": "ash"}},
        "instructions": "x",
    }
    beta = {"output_audio_format": "g711_alaw", "voice": "ash"}
    assert own_response_params(beta, "beta") == {"voice": "ash"}
