"""Limits per user (``VOXRELAY_QUOTA_TOKENS_PER_DAY``, ``VOXRELAY_QUOTA_MINUTES_PER_DAY``,
``VOXRELAY_MAX_SESSIONS_PER_USER``, ``VOXRELAY_MAX_CONVERSATION_SECONDS``): reached at
start, a 429 ``quota_exceeded`` (or the transport's error event); reached mid-session, an
end at the next turn boundary with ``conversation_ended`` ``quota_exceeded``, nothing
already said lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import socketio
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, RunningServer, stored_messages
from openai_ws.realtime_ws_client import connect, text_item
from websockets.exceptions import ConnectionClosed

from voxrelay.client import ApiError, VoxrelayClient

KEY = "sk-upstream-secret-key"


def _quota_error(response: httpx.Response) -> str:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    return str(error["message"])


async def _refused_on_every_transport(server: RunningServer, token: str, **start: Any) -> str:
    """A new session refused over REST, the event stream and ``/v1/realtime``."""
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        message = _quota_error(await http.post("/realtime/session", json=start))
        query = {"conversationId": start["conversationId"]} if start else {}
        assert _quota_error(await http.get("/realtime/stream", params=query)) == message
    # The official openai client: the protocol's error event, then close 4429.
    async with connect(server, token, **query) as conversation:
        error = await conversation.next()
        assert error["type"] == "error"
        assert (error["error"]["code"], error["error"]["message"]) == ("quota_exceeded", message)
        with pytest.raises(ConnectionClosed):
            await conversation.next()
        assert conversation.raw.close_code == 4429
    return message


async def _ended_for_quota(reader: EventReader) -> None:
    error = await reader.wait_for("error", lambda e: e.data["code"] == "quota_exceeded")
    ended = await reader.wait_for("conversation_ended")
    assert ended.data["reason"] == "quota_exceeded"
    assert reader.events.index(error) < reader.events.index(ended)


async def test_tokens_per_day_end_the_session_at_a_turn_boundary(
    launch: Callable[..., RunningServer],
) -> None:
    # The echo provider's answer to "hello there": 2 tokens in, 4 words and 13 audio
    # tokens out; two such answers pass 30.
    server = launch(quota_tokens_per_day=30)
    token = await server.token("phone", "alice")
    async with VoxrelayClient(server.url, token) as client:
        reader = EventReader(client.events(turnDetection="manual"))
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        await client.text(cid, "hello there")
        await reader.wait_for("response_done")
        await asyncio.sleep(0.3)
        assert not reader.of_type("conversation_ended")  # 19 tokens: within the quota
        await client.text(cid, "hello there")
        await _ended_for_quota(reader)
        assert (await client.conversation(cid))["usage"]["outputTokens"] == 2 * 17
        assert (
            await stored_messages(server, token, cid, 4)
            == [
                ("user", "hello there"),
                ("assistant", "You said: hello there"),
            ]
            * 2
        )
        message = await _refused_on_every_transport(server, token)
        assert "daily quota of 30 tokens" in message
        # The quota is the user's: another device of alice's is refused too, bob is not.
        async with VoxrelayClient(server.url, await server.token("tablet", "alice")) as tablet:
            with pytest.raises(ApiError) as refused:
                await tablet.create_session()
            assert (refused.value.status, refused.value.code) == (429, "quota_exceeded")
        async with VoxrelayClient(server.url, await server.token("tablet", "bob")) as bob:
            await bob.end((await bob.create_session())["conversationId"])
        await reader.close()


async def test_minutes_per_day_end_a_session_that_talks_too_long(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(quota_minutes_per_day=0.04)  # 2.4 seconds
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        started = time.monotonic()
        reader = EventReader(client.events(turnDetection="manual"))
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        await client.text(cid, "still talking")
        await reader.wait_for("response_done")
        await _ended_for_quota(reader)
        assert 2.3 < time.monotonic() - started < 8
        assert await stored_messages(server, token, cid, 2) == [
            ("user", "still talking"),
            ("assistant", "You said: still talking"),
        ]
        assert (await client.conversation(cid))["usage"]["sessionSeconds"] >= 2.3
        message = await _refused_on_every_transport(server, token)
        assert "daily quota of 0.04 minutes" in message
        await reader.close()


@pytest.fixture
def slow_fake() -> Iterator[FakeRealtimeServer]:
    """An upstream whose every answer takes about two seconds to say."""
    reply = "one two three four five six seven eight nine ten"
    with FakeRealtimeServer("ga", api_key=KEY, delta_delay=0.2, reply=lambda _: reply) as fake:
        yield fake
    assert fake.validation_errors == []


async def test_a_conversation_at_its_longest_ends_after_the_answer_being_said(
    launch: Callable[..., RunningServer], slow_fake: FakeRealtimeServer
) -> None:
    server = launch(
        provider="openai",
        openai_url=slow_fake.url,
        openai_api_key=KEY,
        max_conversation_seconds=1.0,
    )
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        reader = EventReader(client.events(turnDetection="manual"))
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        await client.text(cid, "count to ten")
        await _ended_for_quota(reader)
        # The limit came mid-answer: the answer was said to its end, then the session ended.
        done = reader.of_type("response_done")
        assert [d.data["status"] for d in done] == ["completed"]
        ended = reader.of_type("conversation_ended")[0]
        assert reader.events.index(done[0]) < reader.events.index(ended)
        reply = slow_fake.reply("")
        assert await stored_messages(server, token, cid, 2) == [
            ("user", "count to ten"),
            ("assistant", reply),
        ]
        # Resuming it is refused; a new conversation is not.
        message = await _refused_on_every_transport(server, token, conversationId=cid)
        assert "longest length (1 s)" in message
        await client.end((await client.create_session())["conversationId"])
        await reader.close()


async def test_live_sessions_per_user_count_every_device_and_service(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(max_sessions_per_user=2)
    phone = await server.token("phone", "alice")
    async with VoxrelayClient(server.url, phone) as client:
        first = await client.create_session()
        async with VoxrelayClient(server.url, await server.token("tablet", "alice")) as tablet:
            await tablet.create_session()
        message = await _refused_on_every_transport(server, phone)
        assert "already has 2 live sessions" in message
        # A service acting for alice is held to alice's limit; for bob, it is not.
        service = await server.service_token()
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {service}"}
        ) as backend:
            _quota_error(await backend.post("/realtime/session", json={"userId": "alice"}))
            answer = await backend.post("/realtime/session", json={"userId": "bob"})
            assert answer.status_code == 201
        # Joining a live session starts none, and is served.
        events = client.events(first["conversationId"])
        assert (await anext(events)).type == "conversation_started"
        await events.aclose()
        # Ending one makes room.
        await client.end(first["conversationId"])
        await client.create_session()


async def test_socketio_hears_the_quota_end(launch: Callable[..., RunningServer]) -> None:
    server = launch(quota_tokens_per_day=10)
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session(turnDetection="manual")
    sio = socketio.AsyncClient(reconnection=False)
    heard: list[tuple[str, dict[str, Any]]] = []
    ended = asyncio.Event()

    def keep(name: str) -> Callable[[dict[str, Any]], Any]:
        async def on(data: dict[str, Any]) -> None:
            heard.append((name, data))
            if name == "session-ended":
                ended.set()

        return on

    for name in ("error", "response-done", "session-ended"):
        sio.on(name, keep(name), namespace="/realtime")
    await sio.connect(
        server.url, namespaces=["/realtime"], auth={"token": token}, transports=["websocket"]
    )
    try:
        await sio.call("join-session", {"sessionId": session["id"]}, namespace="/realtime")
        await sio.call("text-message", {"text": "hello"}, namespace="/realtime")
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        await sio.disconnect()
    names = [name for name, _ in heard]
    assert names == ["response-done", "error", "session-ended"], heard
    assert heard[1][1]["code"] == "quota_exceeded"
    assert heard[2][1] == {"conversationId": session["conversationId"], "reason": "quota_exceeded"}


async def test_realtime_websocket_hears_the_quota_end(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(quota_tokens_per_day=10)
    async with connect(server, await server.token()) as conversation:
        await conversation.until("session.created")
        await conversation.conn.conversation.item.create(item=text_item("hello"))
        await conversation.conn.response.create()
        await conversation.until("response.done")
        error = (await conversation.until("error"))[-1]
        assert error["error"]["code"] == "quota_exceeded"
        with pytest.raises(ConnectionClosed):
            await conversation.next()
        assert conversation.raw.close_code == 4429
        assert conversation.problems == []
