"""A hostile or careless request gets a clear JSON error and harms nobody else: long
texts, deep or broken JSON, odd ids, a client that goes away mid-body."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
import socketio
from harness import RunningServer
from openai_ws.realtime_ws_client import connect, text_item

from voxrelay.client import ApiError, VoxrelayClient


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


async def test_a_text_longer_than_the_limit_is_refused_and_the_session_goes_on(
    launch,  # type: ignore[no-untyped-def]
) -> None:
    server: RunningServer = launch(max_text_chars=100)
    async with VoxrelayClient(server.url, await server.token()) as client:
        cid = (await client.create_session())["conversationId"]
        response = await client.http.post(
            "/realtime/text", json={"conversationId": cid, "text": "x" * 101}
        )
        _error(response, 413, "payload_too_large")
        assert "100 characters" in response.json()["error"]["message"]
        # Under the body limit, far over the text limit: refused as fast.
        big = await client.http.post(
            "/realtime/text", json={"conversationId": cid, "text": "word " * 150_000}
        )
        _error(big, 413, "payload_too_large")
        assert (await client.text(cid, "x" * 100))["itemId"]
        await client.end(cid)


@pytest.mark.parametrize("depth", [40, 5000])
async def test_json_nested_too_deep_is_a_400(client: VoxrelayClient, depth: int) -> None:
    body = '{"text": "hi", "conversationId": "c", "extra": ' + "[" * depth + "]" * depth + "}"
    response = await client.http.post(
        "/realtime/text", content=body, headers={"Content-Type": "application/json"}
    )
    _error(response, 400, "invalid_request")


async def test_json_nested_within_the_limit_is_taken(client: VoxrelayClient) -> None:
    cid = (await client.create_session())["conversationId"]
    nested = "[" * 20 + "]" * 20
    body = f'{{"text": "hi", "conversationId": "{cid}", "extra": {nested}}}'
    response = await client.http.post(
        "/realtime/text", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    await client.end(cid)


async def test_a_lone_surrogate_in_text_is_a_400(client: VoxrelayClient) -> None:
    cid = (await client.create_session())["conversationId"]
    body = f'{{"conversationId": "{cid}", "text": "hi \\ud800 there"}}'
    response = await client.http.post(
        "/realtime/text", content=body, headers={"Content-Type": "application/json"}
    )
    _error(response, 400, "invalid_request")
    assert (await client.text(cid, "hi 😀 there"))["itemId"]
    await client.end(cid)


async def test_a_negative_last_event_id_is_invalid(client: VoxrelayClient) -> None:
    response = await client.http.get("/realtime/stream", params={"lastEventId": -1})
    _error(response, 422, "invalid_request")


async def test_socketio_text_over_the_limit_answers_error_and_the_socket_stays_up(
    launch,  # type: ignore[no-untyped-def]
) -> None:
    server: RunningServer = launch(max_text_chars=100)
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session()
    sio = socketio.AsyncClient()
    errors: list[dict[str, object]] = []

    async def on_error(data: dict[str, object]) -> None:
        errors.append(data)

    sio.on("error", on_error, namespace="/realtime")
    await sio.connect(server.url, namespaces=["/realtime"], auth={"token": token})
    try:
        await sio.call("join-session", {"sessionId": session["id"]}, namespace="/realtime")
        refused = await sio.call("text-message", {"text": "y" * 101}, namespace="/realtime")
        assert refused["ok"] is False
        assert refused["error"]["code"] == "payload_too_large"
        taken = await sio.call("text-message", {"text": "short"}, namespace="/realtime")
        assert taken["ok"] is True
    finally:
        await sio.disconnect()
    assert [e["code"] for e in errors] == ["payload_too_large"]


async def test_compatible_websocket_text_over_the_limit_is_an_error_event(
    launch,  # type: ignore[no-untyped-def]
) -> None:
    server: RunningServer = launch(max_text_chars=100)
    token = await server.token()
    async with connect(server, token) as conversation:
        await conversation.until("conversation.created")
        await conversation.conn.conversation.item.create(item=text_item("z" * 101))
        got = await conversation.until("error", timeout=5)
        error = got[-1]
        assert error["error"]["code"] == "payload_too_large"
        await conversation.conn.conversation.item.create(item=text_item("short"))
        await conversation.conn.response.create()
        await conversation.until("response.done")


async def test_a_client_gone_mid_body_is_not_an_error_of_the_server(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        cid = (await client.create_session())["conversationId"]
    host, port = server.url.removeprefix("http://").split(":")
    with caplog.at_level(logging.INFO):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /realtime/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"conversationId": "'
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await asyncio.sleep(0.5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    async with VoxrelayClient(server.url, token) as client:
        assert (await client.text(cid, "still here"))["itemId"]
        await client.end(cid)


async def test_an_unreachable_upstream_is_not_named_to_the_client(
    launch,  # type: ignore[no-untyped-def]
) -> None:
    server: RunningServer = launch(
        provider="openai", openai_url="ws://127.0.0.1:1/v1/realtime", openai_api_key="sk-x"
    )
    async with VoxrelayClient(server.url, await server.token()) as client:
        with pytest.raises(ApiError) as refused:
            await client.create_session()
    assert (refused.value.status, refused.value.code) == (502, "upstream_unavailable")
    assert "127.0.0.1" not in refused.value.message and "ws://" not in refused.value.message
