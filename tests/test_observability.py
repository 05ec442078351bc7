"""Operator observability: real turns over every transport move the Prometheus
metrics at ``/metrics`` by the expected amounts, and stored answers carry their
latency. Metrics are process-global, so every check compares before and after."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import socketio
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, RunningServer
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from voxrelay.client import ApiError, VoxrelayClient
from voxrelay.client.conversation import Conversation, Event, Options, Transport, connect

RATE = 24000
CHUNK = RATE // 50 * 2  # 20 ms of PCM16
KEY = "sk-upstream-secret-key"
# The transport label of client audio, and of events written to the client.
AUDIO_LABEL = {"http": "upload", "socketio": "socketio", "ws": "websocket"}
LISTENER_LABEL = {"http": "sse", "socketio": "socketio", "ws": "websocket"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(server: RunningServer) -> Samples:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Moved:
    """How far each metric moved from one scrape to another."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)

    def relay(self, direction: str, transport: str, part: str = "count") -> float:
        """``voxrelay_relay_latency_seconds``: its ``count`` or ``sum``."""
        name = f"voxrelay_relay_latency_seconds_{part}"
        return self(name, direction=direction, transport=transport)

    def streams(self, transport: str) -> float:
        return self("voxrelay_active_streams", transport=transport)


async def settled(
    server: RunningServer, check: Callable[[Samples], bool], seconds: float = 10
) -> Samples:
    """The metrics once ``check`` holds (what ends a session finishes after the client
    has heard ``conversation_ended``)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        samples = await scrape(server)
        if check(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.02)


def tone(ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return (np.sin(2 * math.pi * hz * t) * 6000).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return b"\0\0" * (RATE * ms // 1000)


async def send_chunks(conversation: Conversation, pcm: bytes) -> int:
    chunks = 0
    for start in range(0, len(pcm), CHUNK):
        await conversation.send_audio(pcm[start : start + CHUNK])
        chunks += 1
        await asyncio.sleep(0.001)
    return chunks


async def until_type(
    events: Any, wanted: str, seen: list[Event], timeout: float = 15
) -> list[Event]:
    async def read() -> list[Event]:
        async for event in events:
            seen.append(event)
            if event.type == wanted:
                break
        return seen

    return await asyncio.wait_for(read(), timeout)


# -- a turn of each kind over each transport ------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "socketio", "ws"])
@pytest.mark.parametrize("turn", ["vad", "commit", "text"])
async def test_a_turn_moves_every_metric_and_stores_its_latency(
    server: RunningServer, transport: Transport, turn: str
) -> None:
    token = await server.token()
    audio_label, listener_label = AUDIO_LABEL[transport], LISTENER_LABEL[transport]
    before = await scrape(server)
    options = Options(
        input_rate=RATE,
        output_rate=RATE,
        turn_detection="manual" if turn == "commit" else "server_vad",
    )
    conversation = await connect(server.url, token, transport, options)
    events = conversation.events()
    seen: list[Event] = []
    sent = chunks = 0
    try:
        await until_type(events, "conversation_started", seen)
        if transport != "ws":
            # The listener is attached before the turn (the socket already joined).
            during = Moved(before, await scrape(server))
            assert during("voxrelay_active_sessions") == 1
            assert during.streams(listener_label) == 1
        if turn == "text":
            await conversation.send_text("hello from the metrics test")
        else:
            speech = tone(600) + (silence(800) if turn == "vad" else b"")
            chunks = await send_chunks(conversation, speech)
            sent = len(speech)
            if turn == "commit":
                await conversation.commit()
        await until_type(events, "response_done", seen)
        await conversation.end()
        await until_type(events, "conversation_ended", seen)
    finally:
        await conversation.aclose()

    audio = [event for event in seen if event.type == "audio"]
    assert audio, [event.type for event in seen]
    moved = Moved(
        before,
        await settled(
            server,
            lambda s: (
                Moved(before, s)("voxrelay_active_sessions") == 0
                and Moved(before, s).relay("downstream", listener_label) >= len(audio)
            ),
        ),
    )

    assert moved("voxrelay_active_sessions") == 0
    for label in ("sse", "upload", "socketio", "websocket"):
        assert moved.streams(label) == 0, label
    # (A WebSocket asking for manual turns restarts the session it opened: 2 sessions.)
    started = moved("voxrelay_sessions_started_total")
    assert started == (2 if transport == "ws" and turn == "commit" else 1)
    assert moved("voxrelay_sessions_ended_total", reason="client_end") == started
    assert moved("voxrelay_upstream_connects_total", provider="echo") == started
    assert moved("voxrelay_upstream_failures_total", provider="echo", stage="open") == 0
    assert moved("voxrelay_turns_total") == 1
    assert moved("voxrelay_commit_to_first_audio_seconds_count") == 1
    assert 0 < moved("voxrelay_commit_to_first_audio_seconds_sum") < 5

    assert moved("voxrelay_audio_bytes_total", direction="in", transport=audio_label) == sent
    out = moved("voxrelay_audio_bytes_total", direction="out", transport="")
    assert out == sum(len(event.pcm) for event in audio)
    upstream = moved.relay("upstream", audio_label)
    if transport == "http":
        # The chunks of one upload body may reach the server merged.
        assert (1 <= upstream <= chunks) if chunks else upstream == 0
    else:
        assert upstream == chunks
    assert 0 <= moved.relay("upstream", audio_label, "sum") < 0.5 * max(upstream, 1)
    assert moved.relay("downstream", listener_label) == len(audio)
    assert 0 < moved.relay("downstream", listener_label, "sum") < 0.5 * len(audio)
    for other in {"sse", "socketio", "websocket"} - {listener_label}:
        assert moved.relay("downstream", other) == 0

    async with VoxrelayClient(server.url, token) as client:
        stored = await client.conversation(conversation.conversation_id)
    answers = [m for m in stored["messages"] if m["role"] == "assistant"]
    assert len(answers) == 1
    first_audio = answers[0]["latency"]["firstAudioMs"]
    assert 0 < first_audio < 5000
    assert stored["latency"] == {
        "turns": 1,
        "firstAudioMsP50": first_audio,
        "firstAudioMsMax": first_audio,
    }


async def test_the_conversation_latency_summarises_its_turns(server: RunningServer) -> None:
    async with VoxrelayClient(server.url, await server.token()) as client:
        reader = EventReader(client.events())
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        assert (await client.conversation(cid))["latency"] == {
            "turns": 0,
            "firstAudioMsP50": None,
            "firstAudioMsMax": None,
        }
        for n in range(3):
            last = reader.events[-1].id
            await client.text(cid, f"turn number {n}")
            await reader.wait_for("response_done", lambda e, last=last: e.id > last)
        await client.end(cid)
        stored = await client.conversation(cid)
        await reader.close()
    values = sorted(
        m["latency"]["firstAudioMs"] for m in stored["messages"] if m["role"] == "assistant"
    )
    assert len(values) == 3
    assert stored["latency"] == {
        "turns": 3,
        "firstAudioMsP50": values[1],
        "firstAudioMsMax": values[2],
    }


# -- listeners come and go -------------------------------------------------------------------


async def test_listener_gauges_follow_disconnects_and_errors(server: RunningServer) -> None:
    token = await server.token()
    base = await scrape(server)

    def streams(samples: Samples, transport: str) -> float:
        return Moved(base, samples).streams(transport)

    async def until(transport: str, count: int) -> float:
        return streams(await settled(server, lambda s: streams(s, transport) == count), transport)

    async with VoxrelayClient(server.url, token) as client:
        reader = EventReader(client.events())
        started = await reader.wait_for("conversation_started")
        cid, session_id = started.data["conversationId"], started.data["sessionId"]
        assert streams(await scrape(server), "sse") == 1

        gate = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield silence(20)
            await gate.wait()
            yield silence(20)

        # An upload the client gives up on mid-body.
        upload = asyncio.create_task(client.upload(cid, body()))
        assert await until("upload", 1) == 1
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
        assert await until("upload", 0) == 0

        # A Socket.IO socket that joins, then disconnects.
        sio = socketio.AsyncClient(reconnection=False)
        await sio.connect(
            server.url, auth={"token": token}, namespaces=["/realtime"], transports=["websocket"]
        )
        joined = await sio.call("join-session", {"sessionId": session_id}, namespace="/realtime")
        assert joined["ok"] is True
        assert streams(await scrape(server), "socketio") == 1
        await sio.disconnect()
        assert await until("socketio", 0) == 0

        # An upload refused half-way: its session ends while the body still flows.
        upload = asyncio.create_task(client.upload(cid, body()))
        assert await until("upload", 1) == 1
        await client.end(cid)
        gate.set()
        with pytest.raises(ApiError) as refused:
            await upload
        assert refused.value.status == 409
        assert await until("upload", 0) == 0
        assert await until("sse", 0) == 0  # the session's end closed the stream
        await reader.close()

        # A stream the client drops while its session lives on.
        reader = EventReader(client.events())
        await reader.wait_for("conversation_started")
        assert streams(await scrape(server), "sse") == 1
        await reader.close()
        assert await until("sse", 0) == 0

    # A WebSocket lost without a close frame.
    ws_url = server.url.replace("http://", "ws://") + "/v1/realtime"
    ws = await ws_connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"})
    await ws.recv()  # session.created
    assert streams(await scrape(server), "websocket") == 1
    ws.transport.abort()
    assert await until("websocket", 0) == 0


# -- replay ------------------------------------------------------------------------------------


async def test_replayed_events_count_and_add_no_relay_latency(server: RunningServer) -> None:
    async with VoxrelayClient(server.url, await server.token()) as client:
        reader = EventReader(client.events())
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        before = await scrape(server)
        await client.text(cid, "say something twice")
        await reader.wait_for("response_done")
        head = reader.events[-1].id
        live_audio = len(reader.of_type("audio"))
        assert live_audio > 0

        again = EventReader(client.events(cid, last_event_id=1))
        await again.wait_for("response_done", lambda e: e.id == head)
        assert len(again.of_type("audio")) == live_audio
        await again.close()
        moved = Moved(before, await scrape(server))
        await reader.close()
    assert moved("voxrelay_replayed_events_total") == head - 1
    # Replayed audio is not relay latency: only the live stream's audio counts.
    assert moved.relay("downstream", "sse") == live_audio


# -- upstream links ----------------------------------------------------------------------------


async def test_an_upstream_that_cannot_be_reached_counts_as_an_open_failure(
    launch: Callable[..., RunningServer],
) -> None:
    unreachable = launch(
        provider="openai", openai_url="ws://127.0.0.1:9/v1/realtime", openai_api_key=KEY
    )
    before = await scrape(unreachable)
    async with VoxrelayClient(unreachable.url, await unreachable.token()) as client:
        with pytest.raises(ApiError) as refused:
            await client.create_session()
        assert refused.value.code == "upstream_unavailable"
    moved = Moved(before, await scrape(unreachable))
    assert moved("voxrelay_upstream_failures_total", provider="openai", stage="open") == 1
    assert moved("voxrelay_upstream_connects_total", provider="openai") == 0
    assert moved("voxrelay_sessions_started_total") == 0


@pytest.fixture
def fake() -> Iterator[FakeRealtimeServer]:
    with FakeRealtimeServer("ga", api_key=KEY) as upstream:
        yield upstream


async def test_pass_through_websocket_is_measured_both_ways_and_a_drop_counts(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer
) -> None:
    relay = launch(provider="openai", openai_url=fake.url, openai_api_key=KEY, openai_model="m")
    token = await relay.token()
    before = await scrape(relay)
    options = Options(input_rate=RATE, output_rate=RATE)
    conversation = await connect(relay.url, token, "ws", options)
    events = conversation.events()
    seen: list[Event] = []
    try:
        await until_type(events, "conversation_started", seen)
        quiet = silence(100)
        chunks = await send_chunks(conversation, quiet)
        await conversation.send_text("hello upstream")
        await until_type(events, "response_done", seen)
        audio = [event for event in seen if event.type == "audio"]
        assert audio
        moved = Moved(
            before,
            await settled(
                relay, lambda s: Moved(before, s).relay("upstream", "websocket") >= chunks
            ),
        )
        assert moved("voxrelay_upstream_connects_total", provider="openai") == 1
        assert moved("voxrelay_audio_bytes_total", direction="in", transport="websocket") == len(
            quiet
        )
        assert moved.relay("upstream", "websocket") == chunks
        assert moved.relay("downstream", "websocket") == len(audio)
        assert moved("voxrelay_turns_total") == 1
        assert moved("voxrelay_commit_to_first_audio_seconds_count") == 1

        # The upstream drops the link and refuses the key from now on: a live failure.
        fake.refuse_status = 401
        fake.drop()
        await until_type(events, "conversation_ended", seen)
    finally:
        await conversation.aclose()
    moved = Moved(
        before,
        await settled(
            relay,
            lambda s: (
                Moved(before, s)(
                    "voxrelay_upstream_failures_total", provider="openai", stage="live"
                )
                >= 1
            ),
        ),
    )
    assert moved("voxrelay_upstream_failures_total", provider="openai", stage="live") == 1
    assert moved("voxrelay_sessions_ended_total", reason="upstream_failed") == 1
    async with VoxrelayClient(relay.url, token) as client:
        stored = await client.conversation(conversation.conversation_id)
    answers = [m for m in stored["messages"] if m["role"] == "assistant"]
    assert answers and answers[0]["latency"]["firstAudioMs"] > 0
    assert stored["latency"]["turns"] == 1
