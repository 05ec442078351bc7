"""Clients that stop sending: a request head that never completes
(``VOXRELAY_HEADER_TIMEOUT_SECONDS``) and a body that goes quiet
(``VOXRELAY_BODY_IDLE_TIMEOUT_SECONDS``). Real sockets against a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
from harness import RunningServer, silence

from voxrelay.client import VoxrelayClient

# Far more than any timeout below: a connection still open after it was not closed.
_WAIT = 15


async def _open(server: RunningServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _answer(reader: asyncio.StreamReader) -> tuple[int | None, bytes]:
    """The status of what the server sends until it closes (None: closed silently)."""
    data = await asyncio.wait_for(reader.read(), _WAIT)
    if not data:
        return None, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_a_request_head_that_never_completes_is_cut_off(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(header_timeout_seconds=0.5)
    trickling = []
    for _ in range(20):
        reader, writer = await _open(server)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        trickling.append((reader, writer))
    silent = await _open(server)  # opens, sends nothing at all

    # Meanwhile, everybody else is served.
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).status_code == 200

    for reader, writer in trickling:
        status, body = await _answer(reader)
        assert status == 408
        assert json.loads(body)["error"]["code"] == "request_timeout"
        writer.close()
    assert await _answer(silent[0]) == (None, b"")
    silent[1].close()


async def test_the_head_deadline_also_holds_on_a_kept_alive_connection(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(header_timeout_seconds=0.5)
    reader, writer = await _open(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), _WAIT)
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # the next request stalls
    status, _ = await _answer(reader)
    assert status == 408
    writer.close()


async def test_a_body_that_goes_quiet_answers_408(launch: Callable[..., RunningServer]) -> None:
    server = launch(body_idle_timeout_seconds=0.5)
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        cid = (await client.create_session())["conversationId"]
    reader, writer = await _open(server)
    writer.write(
        b"POST /realtime/text HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"conversationId": "'
    )
    status, body = await _answer(reader)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    writer.close()

    # A chunked upload that stops sending: ended the same way.
    reader, writer = await _open(server)
    writer.write(
        f"POST /realtime/upload?conversationId={cid} HTTP/1.1\r\nHost: x\r\n".encode()
        + f"Authorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"640\r\n"
        + bytes(1600)
        + b"\r\n"
    )
    status, body = await _answer(reader)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"
    writer.close()

    async with VoxrelayClient(server.url, token) as client:
        assert (await client.text(cid, "still here"))["itemId"]
        await client.end(cid)


async def test_a_chunked_upload_in_real_time_outlasts_the_body_timeout(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(body_idle_timeout_seconds=0.5)
    token = await server.token()

    async def real_time() -> AsyncIterator[bytes]:
        for _ in range(15):  # 1.5 s of audio, 100 ms at a time, as spoken
            yield silence(100, 16000)
            await asyncio.sleep(0.1)

    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session(inputSampleRate=16000)
        cid = session["conversationId"]
        sent = await client.upload(cid, real_time())
        assert sent["bytesReceived"] == 15 * 3200
        await client.end(cid)


async def test_an_event_stream_is_not_a_body_waiting(launch: Callable[..., RunningServer]) -> None:
    server = launch(body_idle_timeout_seconds=0.3)
    async with VoxrelayClient(server.url, await server.token()) as client:
        events = client.events()
        first = await anext(events)
        assert first.type == "conversation_started"
        await asyncio.sleep(1)
        cid = first.data["conversationId"]
        await client.text(cid, "hello")
        async for event in events:
            if event.type == "transcript" and event.data.get("final"):
                break
        await events.aclose()
        await client.end(cid)
