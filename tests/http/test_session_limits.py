"""What one device may hold and send: live sessions per device token
(``VOXRELAY_MAX_SESSIONS_PER_DEVICE``) and how fast its audio may arrive
(``VOXRELAY_MAX_UPLOAD_REALTIME_FACTOR``), on every transport."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import httpx
import pytest
import socketio
from harness import RunningServer, silence
from openai_ws.realtime_ws_client import connect, ws_base
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from voxrelay.client import ApiError, VoxrelayClient
from voxrelay.exceptions import AudioTooFast
from voxrelay.sessions.pacing import AudioPace


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code


# -- live sessions per device -------------------------------------------------------------


async def test_a_device_may_hold_only_so_many_live_sessions(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(max_sessions_per_device=2)
    token = await server.token("phone", "alice")
    async with VoxrelayClient(server.url, token) as client:
        first = await client.create_session()
        await client.create_session()
        with pytest.raises(ApiError) as refused:
            await client.create_session()
        assert (refused.value.status, refused.value.code) == (429, "too_many_sessions")

        # An event stream that would start one is refused the same way...
        _error(await client.http.get("/realtime/stream"), 429, "too_many_sessions")
        # ...but one that joins a live session starts nothing, and is served.
        events = client.events(first["conversationId"])
        assert (await anext(events)).type == "conversation_started"
        await events.aclose()

        # /v1/realtime: the protocol's error event, then close 4429.
        url = f"{ws_base(server)}/realtime?model=gpt-realtime"
        async with ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            error = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert error["type"] == "error" and error["error"]["code"] == "too_many_sessions"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429

        # Another device of the same user has its own count.
        async with VoxrelayClient(server.url, await server.token("tablet", "alice")) as other:
            await other.end((await other.create_session())["conversationId"])

        # Ending one makes room for a new one.
        await client.end(first["conversationId"])
        await client.create_session()


# -- how fast audio may arrive ------------------------------------------------------------


def test_the_pace_allows_a_burst_then_factor_times_real_time() -> None:
    now = [0.0]
    pace = AudioPace(8, 2, clock=lambda: now[0])
    second = 2 * 16000
    pace.take(2 * second, 16000)  # a stalled client catching up: the whole burst at once
    with pytest.raises(AudioTooFast):
        pace.take(second // 10, 16000)
    now[0] += 0.125  # an eighth of a second refills one second of audio
    pace.take(second, 16000)
    with pytest.raises(AudioTooFast):
        pace.take(2, 16000)
    for _ in range(100):  # sustained at 8 times real time: always taken
        now[0] += 0.125
        pace.take(second, 16000)
    now[0] += 60  # never more than the burst, however long the pause
    with pytest.raises(AudioTooFast):
        pace.take(2 * second + 2, 16000)
    pace.take(2 * second, 16000)
    AudioPace(0, 0).take(100 * second, 16000)  # 0: no limit


@pytest.fixture
def fast_limited(launch: Callable[..., RunningServer]) -> RunningServer:
    return launch(max_upload_realtime_factor=4, upload_burst_seconds=1)


async def test_an_upload_faster_than_allowed_is_a_429(fast_limited: RunningServer) -> None:
    async with VoxrelayClient(fast_limited.url, await fast_limited.token()) as client:
        cid = (await client.create_session(inputSampleRate=16000))["conversationId"]
        with pytest.raises(ApiError) as refused:
            await client.upload(cid, silence(3000, 16000))
        assert (refused.value.status, refused.value.code) == (429, "audio_too_fast")
        await asyncio.sleep(0.3)  # refills more than the next upload
        assert (await client.upload(cid, silence(500, 16000)))["bytesReceived"] == 16000
        assert (await client.text(cid, "still here"))["itemId"]
        await client.end(cid)


async def test_socketio_audio_too_fast_is_an_error_event(fast_limited: RunningServer) -> None:
    token = await fast_limited.token()
    async with VoxrelayClient(fast_limited.url, token) as client:
        session = await client.create_session(inputSampleRate=16000)
    sio = socketio.AsyncClient(reconnection=False)
    errors: list[dict[str, object]] = []

    async def on_error(data: dict[str, object]) -> None:
        errors.append(data)

    sio.on("error", on_error, namespace="/realtime")
    await sio.connect(
        fast_limited.url, namespaces=["/realtime"], auth={"token": token}, transports=["websocket"]
    )
    try:
        await sio.call("join-session", {"sessionId": session["id"]}, namespace="/realtime")
        chunk = base64.b64encode(silence(3000, 16000)).decode()
        refused = await sio.call("audio-chunk", {"audio": chunk}, namespace="/realtime")
        assert refused["ok"] is False and refused["error"]["code"] == "audio_too_fast"
        short = base64.b64encode(silence(200, 16000)).decode()
        taken = await sio.call("audio-chunk", {"audio": short}, namespace="/realtime")
        assert taken == {"ok": True, "bytesReceived": 6400}
        await sio.call("end-session", namespace="/realtime")
    finally:
        await sio.disconnect()
    assert [e["code"] for e in errors] == ["audio_too_fast"]


async def test_realtime_websocket_audio_too_fast_is_an_error_event(
    fast_limited: RunningServer,
) -> None:
    async with connect(fast_limited, await fast_limited.token()) as conversation:
        await conversation.until("conversation.created")
        await conversation.conn.input_audio_buffer.append(
            audio=base64.b64encode(silence(3000, 24000)).decode()
        )
        error = (await conversation.until("error"))[-1]
        assert error["error"]["code"] == "audio_too_fast"
        # The session goes on: a short chunk is taken, and a typed turn is answered.
        await conversation.conn.input_audio_buffer.append(
            audio=base64.b64encode(silence(200, 24000)).decode()
        )
        await conversation.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await conversation.conn.response.create()
        await conversation.until("response.done")
        assert len(conversation.of_type("error")) == 1
