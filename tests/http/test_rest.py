"""REST routes over a real socket with httpx: happy paths and every error code."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from harness import RunningServer

from voxrelay.client import ApiError, VoxrelayClient
from voxrelay.client.http import KEEPALIVE_SECONDS


async def _answered(client: VoxrelayClient, conversation_id: str, count: int) -> None:
    """Wait until ``count`` messages are stored: an end sent while the echo is still
    answering cuts its answer where it was."""
    for _ in range(250):
        if len((await client.conversation(conversation_id))["messages"]) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{conversation_id} never had {count} messages")


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text


async def test_the_client_lets_go_of_idle_connections_before_the_server_does(
    server: RunningServer, client: VoxrelayClient
) -> None:
    # Both at 5 s, a request sent on a connection idle that long raced the server
    # closing it, and failed with "Server disconnected without sending a response".
    pool = client.http._transport._pool  # type: ignore[attr-defined]
    assert pool._keepalive_expiry == KEEPALIVE_SECONDS
    assert server.server.config.timeout_keep_alive / 2 >= KEEPALIVE_SECONDS


async def test_create_session_defaults(client: VoxrelayClient) -> None:
    response = await client.http.post("/realtime/session")
    assert response.status_code == 201
    session = response.json()["session"]
    assert session["status"] == "active"
    assert session["id"].startswith("sess_")
    assert session["conversationId"].startswith("conv_")
    assert session["inputSampleRate"] == 16000
    assert session["outputSampleRate"] == 24000
    assert session["turnDetection"] == "server_vad"
    assert session["createdAt"].endswith("Z")
    again = await client.get_session(session["id"])
    assert again == session


async def test_create_session_with_every_field(client: VoxrelayClient) -> None:
    session = await client.create_session(
        conversationId="my-chat-1",
        instructions="Be brief.",
        voice="alloy",
        language="he",
        inputSampleRate=8000,
        outputSampleRate=48000,
        turnDetection="manual",
    )
    assert session["conversationId"] == "my-chat-1"
    assert (session["inputSampleRate"], session["outputSampleRate"]) == (8000, 48000)
    assert session["turnDetection"] == "manual"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (b"[1, 2]", "application/json", 400, "invalid_request"),
        (b'{"inputSampleRate": 44100}', "application/json", 422, "invalid_request"),
        (b'{"turnDetection": "sometimes"}', "application/json", 422, "invalid_request"),
        (
            b"inputSampleRate=16000",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        (
            b'{"conversationId": "has spaces/and slashes"}',
            "application/json",
            400,
            "invalid_request",
        ),
    ],
)
async def test_create_session_rejects_bad_bodies(
    client: VoxrelayClient, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = await client.http.post(
        "/realtime/session", content=body, headers={"Content-Type": content_type}
    )
    _error(response, status, code)


async def test_oversized_json_body_is_refused(launch) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = launch(max_body_bytes=1024)
    async with VoxrelayClient(server.url, await server.token()) as client:
        big = b'{"instructions": "' + b"x" * 4096 + b'"}'
        response = await client.http.post(
            "/realtime/session", content=big, headers={"Content-Type": "application/json"}
        )
        _error(response, 413, "payload_too_large")

        async def trickle():  # no Content-Length: the limit holds while reading too
            yield b'{"instructions": "'
            for _ in range(8):
                yield b"y" * 512
            yield b'"}'

        response = await client.http.post(
            "/realtime/session", content=trickle(), headers={"Content-Type": "application/json"}
        )
        _error(response, 413, "payload_too_large")


async def test_second_session_on_a_conversation_is_busy(client: VoxrelayClient) -> None:
    first = await client.create_session()
    response = await client.http.post(
        "/realtime/session", json={"conversationId": first["conversationId"]}
    )
    _error(response, 409, "conversation_busy")
    await client.end(first["conversationId"])
    resumed = await client.create_session(conversationId=first["conversationId"])
    assert resumed["id"] != first["id"]
    assert resumed["conversationId"] == first["conversationId"]
    assert (await client.get_session(first["id"]))["status"] == "ended"


async def test_unknown_ids_answer_not_found(client: VoxrelayClient) -> None:
    _error(await client.http.get("/realtime/session/sess_nope"), 404, "not_found")
    _error(await client.http.get("/conversations/conv_nope"), 404, "not_found")
    _error(await client.http.delete("/conversations/conv_nope"), 404, "not_found")
    _error(await client.http.post("/realtime/end", json={"conversationId": "x"}), 404, "not_found")
    _error(await client.http.get("/no/such/route"), 404, "not_found")
    _error(await client.http.put("/conversations"), 405, "method_not_allowed")


async def test_a_method_not_allowed_says_which_are(client: VoxrelayClient) -> None:
    answer = await client.http.put("/conversations")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert answer.json()["error"]["code"] == "method_not_allowed"


async def test_conversations_listing_order_and_paging(client: VoxrelayClient) -> None:
    ids = []
    for n in range(3):
        session = await client.create_session()
        await client.text(session["conversationId"], f"message number {n}")
        await _answered(client, session["conversationId"], 2)
        await client.end(session["conversationId"])
        ids.append(session["conversationId"])
        await asyncio.sleep(0.01)
    listing = await client.conversations()
    assert [c["id"] for c in listing] == ids[::-1]
    newest = listing[0]
    assert newest["messageCount"] == 2
    assert newest["lastMessage"]["role"] == "assistant"
    assert newest["lastMessage"]["text"] == "You said: message number 2"
    assert {"id", "createdAt", "updatedAt", "messageCount", "lastMessage"} <= newest.keys()

    page = await client.conversations(limit=2)
    assert [c["id"] for c in page] == ids[:0:-1]
    rest = await client.conversations(limit=2, before=page[-1]["id"])
    assert [c["id"] for c in rest] == ids[:1]
    by_time = await client.conversations(before=newest["updatedAt"])
    assert [c["id"] for c in by_time] == ids[1::-1]

    _error(await client.http.get("/conversations", params={"limit": 0}), 422, "invalid_request")
    _error(
        await client.http.get("/conversations", params={"limit": "many"}), 422, "invalid_request"
    )
    _error(
        await client.http.get("/conversations", params={"before": "conv_unknown"}),
        400,
        "invalid_request",
    )


async def test_conversation_messages_oldest_first_and_delete(client: VoxrelayClient) -> None:
    session = await client.create_session()
    conversation_id = session["conversationId"]
    await client.text(conversation_id, "first words")
    await _answered(client, conversation_id, 2)
    await client.text(conversation_id, "second words")
    await _answered(client, conversation_id, 4)
    ended = await client.end(conversation_id)
    assert ended == {"conversationId": conversation_id, "status": "ended", "messageCount": 4}
    conversation = await client.conversation(conversation_id)
    assert [(m["role"], m["text"]) for m in conversation["messages"]] == [
        ("user", "first words"),
        ("assistant", "You said: first words"),
        ("user", "second words"),
        ("assistant", "You said: second words"),
    ]
    assert all(m["id"].startswith("msg_") and m["createdAt"] for m in conversation["messages"])

    response = await client.http.delete(f"/conversations/{conversation_id}")
    assert response.status_code == 204
    assert response.content == b""
    with pytest.raises(ApiError) as gone:
        await client.conversation(conversation_id)
    assert gone.value.status == 404
    assert all(c["id"] != conversation_id for c in await client.conversations())


async def test_deleting_a_live_conversation_ends_its_session(client: VoxrelayClient) -> None:
    session = await client.create_session()
    response = await client.http.delete(f"/conversations/{session['conversationId']}")
    assert response.status_code == 204
    with pytest.raises(ApiError) as gone:
        await client.get_session(session["id"])
    assert gone.value.status == 404


async def test_end_is_idempotent(client: VoxrelayClient) -> None:
    session = await client.create_session()
    first = await client.end(session["conversationId"])
    again = await client.http.post(
        "/realtime/end", params={"conversationId": session["conversationId"]}
    )
    assert again.status_code == 200
    assert again.json() == first
    _error(await client.http.post("/realtime/end", json={}), 400, "invalid_request")


async def test_health_ready_metrics_and_openapi(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok"}
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "voxrelay_active_sessions" in metrics.text
        assert "voxrelay_audio_bytes_total" in metrics.text
        spec = (await http.get("/openapi.json")).json()
        for path in ("/realtime/session", "/realtime/stream", "/realtime/upload", "/conversations"):
            assert path in spec["paths"]


async def test_readyz_reports_an_unreachable_redis(launch) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = launch(redis_url="redis://127.0.0.1:1/0")
    async with httpx.AsyncClient(base_url=server.url) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "redis": "unavailable"}
    assert ready.json()["error"]["code"] == "not_ready"


async def test_readyz_checks_a_real_redis(launch) -> None:  # type: ignore[no-untyped-def]
    import services

    services.require_or_skip("redis", "Redis is not running on 127.0.0.1:6379")
    server: RunningServer = launch(redis_url=services.REDIS_URL)
    async with httpx.AsyncClient(base_url=server.url) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
