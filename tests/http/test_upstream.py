"""The watch flow end to end through the openai and azure providers, against
a fake upstream that speaks OpenAI's Realtime protocol."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, RunningServer, paced, read_pcm, silence, wait_until

from voxrelay.client import ApiError, VoxrelayClient

KEY = "sk-upstream-secret-key"


@pytest.fixture
def fake() -> Iterator[FakeRealtimeServer]:
    with FakeRealtimeServer("ga", api_key=KEY) as server:
        yield server
    assert server.validation_errors == []


@pytest.fixture
def relay(launch: Callable[..., RunningServer], fake: FakeRealtimeServer) -> RunningServer:
    return launch(
        provider="openai", openai_url=fake.url, openai_api_key=KEY, openai_model="gpt-test"
    )


async def _open(client: VoxrelayClient, **params: object) -> tuple[EventReader, str]:
    reader = EventReader(client.events(**params))  # type: ignore[arg-type]
    started = await reader.wait_for("conversation_started")
    return reader, started.data["conversationId"]


async def test_upstream_hears_audio_before_the_upload_ends(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, conversation_id = await _open(client)
        first = b"\x10\x00" * 2400  # 100 ms at 24 kHz

        async def body():  # type: ignore[no-untyped-def]
            yield first
            # Still inside the request body: the upstream must already have it.
            appended = await fake.wait_for("input_audio_buffer.append", seconds=10)
            assert base64.b64decode(appended[0]["audio"]) == first
            yield b"\x20\x00" * 2400

        result = await client.upload(conversation_id, body())
        assert result["bytesReceived"] == 9600
        await wait_until(lambda: len(fake.audio_received()) >= 9600, seconds=5)
        assert fake.audio_received() == first + b"\x20\x00" * 2400
        await reader.close()


async def test_numbered_uploads_and_odd_chunks_arrive_exactly_once(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    audio = bytes(range(256)) * 40  # 10240 bytes at the upstream's own 24 kHz
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, conversation_id = await _open(client, turnDetection="manual")
        pieces = [audio[:3001], audio[3001:3002], audio[3002:7777], audio[7777:]]
        for seq, piece in enumerate(pieces):
            answer = await client.upload(conversation_id, piece, seq=seq)
            assert answer == {
                "conversationId": conversation_id,
                "seq": seq,
                "bytesReceived": len(piece),
            }
        # A retried seq answers the same and is not forwarded twice.
        again = await client.upload(conversation_id, pieces[1], seq=1)
        assert again == {"conversationId": conversation_id, "seq": 1, "bytesReceived": 1}
        await client.commit(conversation_id)
        await fake.wait_for("input_audio_buffer.commit")
        assert fake.audio_received() == audio
        await reader.close()


async def test_input_is_resampled_to_the_upstream_rate(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    speech, rate = read_pcm("goforward.raw")
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, conversation_id = await _open(client, inputSampleRate=rate, turnDetection="manual")
        await client.upload(conversation_id, paced(speech, rate, speed=50))
        await client.commit(conversation_id)
        await fake.wait_for("input_audio_buffer.commit")
        upstream = fake.audio_received()
        expected = len(speech) * 24000 // rate
        assert abs(len(upstream) - expected) <= 64
        # A ?sampleRate= override resamples that upload from its own rate.
        before = len(fake.audio_received())
        await client.upload(conversation_id, b"\x00\x10" * 8000, sample_rate=8000)
        await client.commit(conversation_id)
        await fake.wait_for("input_audio_buffer.commit", count=2)
        assert abs(len(fake.audio_received()) - before - 48000) <= 64
        await reader.close()


async def test_spoken_turn_is_relayed_and_stored(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    fake.transcribe = lambda pcm: "go forward ten meters"
    speech, rate = read_pcm("goforward.raw")
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, conversation_id = await _open(client, inputSampleRate=rate, outputSampleRate=16000)
        await client.upload(conversation_id, paced(speech + silence(1000, rate), rate, speed=20))
        started = await reader.wait_for("speech_started")
        stopped = await reader.wait_for("speech_stopped")
        assert started.data["itemId"] == stopped.data["itemId"]
        heard = await reader.wait_for(
            "transcript", lambda e: e.data.get("role") == "user" and e.data.get("final")
        )
        assert heard.data == {
            "role": "user",
            "itemId": started.data["itemId"],
            "text": "go forward ten meters",
            "final": True,
        }
        done = await reader.wait_for("response_done")
        assert done.data["status"] == "completed"
        answer = await reader.wait_for(
            "transcript", lambda e: e.data.get("role") == "assistant" and e.data.get("final")
        )
        sent_audio = b"".join(
            base64.b64decode(e["delta"]) for e in fake.server_events("response.output_audio.delta")
        )
        received = b"".join(base64.b64decode(e.data["audio"]) for e in reader.of_type("audio"))
        # 24 kHz upstream audio arrives resampled to the 16 kHz asked for.
        assert abs(len(received) - len(sent_audio) * 2 // 3) <= 64
        fake_reply = fake.server_events("response.output_audio_transcript.done")[0]["transcript"]
        assert answer.data["text"] == fake_reply
        await client.end(conversation_id)
        await reader.wait_for("conversation_ended")
        messages = (await client.conversation(conversation_id))["messages"]
        assert [(m["role"], m["text"]) for m in messages] == [
            ("user", "go forward ten meters"),
            ("assistant", fake_reply),
        ]
        assert messages[1]["latency"]["firstAudioMs"] >= 0


async def test_session_settings_reach_the_upstream(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        await client.create_session(
            instructions="Speak Hebrew slowly.",
            voice="coral",
            language="he",
            turnDetection="manual",
        )
    connection = fake.connections[-1]
    assert connection.headers["authorization"] == f"Bearer {KEY}"
    assert connection.query == {"model": "gpt-test"}
    update = fake.client_events("session.update")[-1]["session"]
    assert update["instructions"] == "Speak Hebrew slowly."
    assert update["audio"]["output"]["voice"] == "coral"
    assert update["audio"]["input"]["transcription"]["language"] == "he"
    assert update["audio"]["input"]["turn_detection"] is None


async def test_resuming_sends_earlier_turns_upstream_first(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, conversation_id = await _open(client)
        await client.text(conversation_id, "my name is Dana")
        await reader.wait_for("response_done")
        await client.end(conversation_id)
        await reader.close()
        stored = (await client.conversation(conversation_id))["messages"]
        first = fake.connections[-1].index

        again, same_id = await _open(client, conversation_id=conversation_id)
        assert same_id == conversation_id

        def history_of(conn: int) -> list[dict[str, Any]]:
            return [e["item"] for e in fake.client_events("conversation.item.create", conn=conn)]

        # The stream may start before the new link has taken the history: wait for it.
        await wait_until(
            lambda: (
                fake.connections[-1].index != first
                and len(history_of(fake.connections[-1].index)) >= 2
            )
        )
        history = history_of(fake.connections[-1].index)
        assert [(i["role"], i["content"][0]["type"], i["content"][0]["text"]) for i in history] == [
            ("user", "input_text", stored[0]["text"]),
            ("assistant", "output_text", stored[1]["text"]),
        ]
        await again.close()


async def test_interrupt_cancels_and_truncates_upstream(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    fake.delta_delay = 0.05
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, conversation_id = await _open(client)
        await client.text(conversation_id, "tell me a long story about a lighthouse keeper")
        # Two 100 ms deltas heard: the 120 ms played is within what was sent (more than
        # was sent is cut to what was).
        await reader.wait_for("audio", lambda _: len(reader.of_type("audio")) >= 2)
        await client.interrupt(conversation_id, played_ms=120)
        done = await reader.wait_for("response_done")
        assert done.data["status"] == "cancelled"
        await fake.wait_for("response.cancel")
        truncate = (await fake.wait_for("conversation.item.truncate"))[0]
        assert truncate["audio_end_ms"] == 120
        assert truncate["content_index"] == 0
        final = await reader.wait_for(
            "transcript", lambda e: e.data.get("role") == "assistant" and e.data.get("final")
        )
        await client.end(conversation_id)
        messages = (await client.conversation(conversation_id))["messages"]
        full = fake.reply("tell me a long story about a lighthouse keeper")
        assert len(messages[-1]["text"]) < len(full)
        assert messages[-1]["text"] == final.data["text"]
        await reader.close()


async def test_upstream_refusal_is_a_json_502(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    fake.refuse_status = 401
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        with pytest.raises(ApiError) as refused:
            await client.create_session()
        assert (refused.value.status, refused.value.code) == (502, "upstream_unavailable")
        assert KEY not in refused.value.message
        response = await client.http.get("/realtime/stream")
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unavailable"
        fake.refuse_status = None
        assert (await client.create_session())["status"] == "active"


async def test_unreachable_upstream_is_a_json_502(launch: Callable[..., RunningServer]) -> None:
    server = launch(
        provider="openai", openai_url="ws://127.0.0.1:1/v1/realtime", openai_api_key=KEY
    )
    async with VoxrelayClient(server.url, await server.token()) as client:
        with pytest.raises(ApiError) as refused:
            await client.create_session()
        assert (refused.value.status, refused.value.code) == (502, "upstream_unavailable")


@pytest.mark.parametrize("api_version", [None, "2025-04-01-preview"])
async def test_azure_through_the_relay(
    launch: Callable[..., RunningServer], api_version: str | None
) -> None:
    dialect = "beta" if api_version else "ga"
    with FakeRealtimeServer(dialect, api_key="azure-key") as fake:
        server = launch(
            provider="azure",
            azure_endpoint=fake.http_url + "/",
            azure_api_key="azure-key",
            azure_deployment="my-realtime",
            azure_api_version=api_version,
        )
        async with VoxrelayClient(server.url, await server.token()) as client:
            reader, conversation_id = await _open(client)
            await client.text(conversation_id, "hello azure")
            done = await reader.wait_for("response_done")
            assert done.data["status"] == "completed"
            assert reader.of_type("audio")
            await reader.wait_for(
                "transcript", lambda e: e.data.get("role") == "assistant" and e.data.get("final")
            )
            await reader.close()
        connection = fake.connections[-1]
        assert connection.headers["api-key"] == "azure-key"
        if api_version:
            assert urlsplit(connection.path).path == "/openai/realtime"
            assert connection.query == {"api-version": api_version, "deployment": "my-realtime"}
        else:
            assert urlsplit(connection.path).path == "/openai/v1/realtime"
            assert connection.query == {"model": "my-realtime"}
        assert fake.validation_errors == []
