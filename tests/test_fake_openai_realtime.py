"""The fake OpenAI Realtime server, driven by the official ``openai`` client in both dialects."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from fakes.openai_realtime import FakeRealtimeServer, sine_pcm
from openai import AsyncAzureOpenAI, AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

SILENCE_600MS = bytes(24000 * 2 * 6 // 10)


def speech_then_silence() -> bytes:
    return sine_pcm(0, 24000 // 2) + SILENCE_600MS  # 0.5 s tone, 0.6 s silence


def chunks(pcm: bytes, size: int = 960) -> list[str]:
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]


async def until(conn: Any, *last: str) -> list[Any]:
    """Server events up to and including the first of each type in ``last``."""
    seen, wanted = [], set(last)
    async with asyncio.timeout(10):
        async for event in conn:
            seen.append(event)
            wanted.discard(event.type)
            if not wanted:
                return seen
    raise AssertionError(f"connection ended before {wanted}")


def without_audio(events: list[Any]) -> list[str]:
    return [e.type for e in events if not e.type.endswith("audio.delta")]


async def test_ga_vad_turn_with_the_official_client() -> None:
    async with FakeRealtimeServer("ga") as fake:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=fake.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
            transcription = {"model": "gpt-4o-mini-transcribe"}
            await conn.session.update(
                session={"type": "realtime", "audio": {"input": {"transcription": transcription}}}
            )
            updated = await conn.recv()
            assert updated.type == "session.updated"
            for audio in chunks(speech_then_silence()):
                await conn.input_audio_buffer.append(audio=audio)
            events = await until(conn, "response.done")

    assert without_audio(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    by_type = {e.type: e for e in events}
    # 300 ms prefix padding reaches back to the start; 500 ms of silence ends the turn.
    assert by_type["input_audio_buffer.speech_started"].audio_start_ms == 0
    assert by_type["input_audio_buffer.speech_stopped"].audio_end_ms == 1000
    completed = by_type["conversation.item.input_audio_transcription.completed"]
    assert completed.transcript == "heard 1.00 seconds"
    transcript_done = by_type["response.output_audio_transcript.done"]
    assert transcript_done.transcript == "You said: heard 1.00 seconds"
    audio = b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )
    assert len(audio) == len("You said: heard 1.00 seconds") * 40 * 48
    assert by_type["response.done"].response.status == "completed"
    record = fake.connections[0]
    assert record.path == "/v1/realtime?model=gpt-realtime"
    assert record.headers["authorization"] == "Bearer sk-test"
    assert fake.audio_received() == speech_then_silence()
    assert fake.validation_errors == []


async def test_beta_vad_turn_with_the_official_beta_client() -> None:
    async with FakeRealtimeServer("beta") as fake:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=fake.base_url)
        async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session={"input_audio_transcription": {"model": "whisper-1"}})
            assert (await conn.recv()).type == "session.updated"
            for audio in chunks(speech_then_silence()):
                await conn.input_audio_buffer.append(audio=audio)
            events = await until(conn, "response.done")

    types = without_audio(events)
    assert types[:4] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
    ]
    # whisper-1 transcribes in one piece.
    assert types[4] == "conversation.item.input_audio_transcription.completed"
    assert "response.audio_transcript.done" in types
    assert any(e.type == "response.audio.delta" for e in events)
    assert not any(t.startswith("response.output_audio") for t in types)
    assert events[-1].response.status == "completed"
    assert fake.connections[0].headers["openai-beta"] == "realtime=v1"
    assert fake.validation_errors == []


async def test_azure_preview_path_with_the_azure_client() -> None:
    async with FakeRealtimeServer("beta") as fake:
        client = AsyncAzureOpenAI(
            api_key="azure-key",
            api_version="2024-10-01-preview",
            azure_endpoint=fake.http_url,
            websocket_base_url=fake.http_url.replace("http", "ws") + "/openai",
        )
        async with client.beta.realtime.connect(model="my-deployment") as conn:
            assert (await conn.recv()).type == "session.created"
    record = fake.connections[0]
    assert record.path.startswith("/openai/realtime?")
    assert record.query == {"api-version": "2024-10-01-preview", "deployment": "my-deployment"}
    assert record.headers["api-key"] == "azure-key"


async def test_ga_manual_turn_text_cancel_and_truncate() -> None:
    async with FakeRealtimeServer("ga", delta_delay=0.02) as fake:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=fake.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            await conn.session.update(
                session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
            )
            assert (await conn.recv()).type == "session.updated"

            # Manual mode: no VAD events, commit makes the item, no automatic response.
            for audio in chunks(speech_then_silence()):
                await conn.input_audio_buffer.append(audio=audio)
            await conn.input_audio_buffer.commit()
            events = await until(conn, "conversation.item.done")
            assert [e.type for e in events] == [
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
            ]

            await conn.conversation.item.create(
                item={
                    "id": "msg_1",
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "tell me a long story now"}],
                }
            )
            added = await conn.recv()
            assert added.type == "conversation.item.added"
            assert added.item.id == "msg_1"
            await until(conn, "conversation.item.done")
            await conn.response.create()
            events = await until(conn, "response.output_audio.delta")
            item_id = events[-1].item_id
            await conn.response.cancel()
            await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=50)
            events = await until(conn, "response.done", "conversation.item.truncated")

    done = next(e for e in events if e.type == "response.done")
    assert done.response.status == "cancelled"
    assert done.response.status_details.reason == "client_cancelled"
    said = next(e for e in events if e.type == "response.output_audio_transcript.done").transcript
    assert said and "You said: tell me a long story now".startswith(said)
    assert said != "You said: tell me a long story now"
    truncated = next(e for e in events if e.type == "conversation.item.truncated")
    assert truncated.audio_end_ms == 50
    assert fake.validation_errors == []


async def test_protocol_errors_look_like_openai() -> None:
    async with FakeRealtimeServer("ga") as fake:
        client = AsyncOpenAI(api_key="sk-test", websocket_base_url=fake.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            await conn.input_audio_buffer.commit()
            empty = await conn.recv()
            await conn.response.cancel()
            not_active = await conn.recv()
            await conn.send({"type": "response.bogus"})  # type: ignore[arg-type]
            unknown = await conn.recv()

    assert empty.type == "error"
    assert empty.error.code == "input_audio_buffer_commit_empty"
    assert not_active.error.code == "response_cancel_not_active"
    assert unknown.error.type == "invalid_request_error"
    assert unknown.error.param == "type"
    assert fake.validation_errors == ["client: unknown client event type 'response.bogus'"]


async def test_refuses_with_401_on_a_wrong_key() -> None:
    async with FakeRealtimeServer("ga", api_key="right") as fake:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(fake.url + "?model=m", additional_headers={"api-key": "wrong"}):
                pass
        assert refused.value.response.status_code == 401
        async with connect(fake.url, additional_headers={"api-key": "right"}) as ws:
            assert '"session.created"' in str(await ws.recv())
        fake.refuse_status = 503
        with pytest.raises(InvalidStatus):
            async with connect(fake.url, additional_headers={"api-key": "right"}):
                pass
    assert [c.status for c in fake.connections] == [401, 101, 503]


async def test_drops_abruptly_from_another_thread() -> None:
    with FakeRealtimeServer("ga", drop_on="response.create") as fake:
        async with connect(fake.url) as ws:
            await ws.recv()
            await ws.send('{"type":"response.create"}')
            with pytest.raises(ConnectionClosedError):
                await ws.recv()
        fake.drop_on = None
        async with connect(fake.url) as ws:
            await ws.recv()
            fake.drop()
            with pytest.raises(ConnectionClosedError):
                await ws.recv()
    assert len(fake.connections) == 2
    assert [e["type"] for e in fake.client_events()] == ["response.create"]


async def test_drops_one_connection_and_leaves_the_others() -> None:
    with FakeRealtimeServer("ga") as fake:
        async with connect(fake.url) as first, connect(fake.url) as second:
            await first.recv()
            await second.recv()
            assert fake.live == [0, 1]
            fake.drop(conn=0)
            with pytest.raises(ConnectionClosedError):
                await first.recv()
            await second.send('{"type":"input_audio_buffer.clear"}')
            assert '"input_audio_buffer.cleared"' in str(await second.recv())
            for _ in range(200):  # the fake forgets the aborted one in its own thread
                if fake.live == [1]:
                    break
                await asyncio.sleep(0.01)
            assert fake.live == [1]
    assert fake.validation_errors == []
