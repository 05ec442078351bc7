"""Revoking a device's token cuts every connection open with it, on every transport,
with that transport's own refusal; other devices' connections go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import socketio
from harness import EventReader, RunningServer, silence
from openai_ws.realtime_ws_client import connect
from websockets.exceptions import ConnectionClosed

from voxrelay.auth import Device, KnownTokens
from voxrelay.client import ApiError, VoxrelayClient
from voxrelay.store import Store

CHECK_SECONDS = 0.2


@pytest.fixture
def server(launch) -> RunningServer:  # type: ignore[no-untyped-def]
    running: RunningServer = launch(revocation_check_seconds=CHECK_SECONDS)
    return running


async def _revoke(server: RunningServer, device: str) -> None:
    store = await Store.open(server.settings.database_url)
    try:
        assert await store.revoke_token(device) == 1
    finally:
        await store.close()


async def test_an_event_stream_ends_with_unauthorized(server: RunningServer) -> None:
    token = await server.token("watch", "alice")
    other = await server.token("phone", "alice")
    async with VoxrelayClient(server.url, token) as client, VoxrelayClient(server.url, other) as o:
        reader = EventReader(client.events())
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        bystander = EventReader(o.events(cid))
        await bystander.wait_for("conversation_started")
        await _revoke(server, "watch")
        refused = await reader.wait_for("error", timeout=5)
        assert refused.data["code"] == "unauthorized"
        for _ in range(100):
            if reader.closed:
                break
            await asyncio.sleep(0.05)
        assert reader.closed, "the stream ended"
        with pytest.raises(ApiError) as again:
            await client.text(cid, "hello")
        assert again.value.status == 401
        # Another device of the same user goes on.
        await o.text(cid, "still here")
        await bystander.wait_for("response_done", timeout=10)
        await o.end(cid)
        await reader.close()
        await bystander.close()


async def test_a_chunked_upload_is_answered_401(server: RunningServer) -> None:
    token = await server.token("watch", "alice")
    async with VoxrelayClient(server.url, token) as client:
        cid = (await client.create_session(inputSampleRate=16000))["conversationId"]
        sent = asyncio.Event()

        async def endless() -> AsyncIterator[bytes]:
            # An HTTP/1.1 client reads the answer once its body is sent: a few seconds.
            for _ in range(100):
                yield silence(20, 16000)
                sent.set()
                await asyncio.sleep(0.02)

        uploading = asyncio.ensure_future(client.upload(cid, endless()))
        await sent.wait()
        await _revoke(server, "watch")
        with pytest.raises(ApiError) as refused:
            await asyncio.wait_for(uploading, 15)
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")


async def test_a_socketio_socket_is_told_and_dropped(server: RunningServer) -> None:
    token = await server.token("watch", "alice")
    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session()
    sio = socketio.AsyncClient(reconnection=False)
    errors: list[dict[str, object]] = []
    gone = asyncio.Event()

    async def on_error(data: dict[str, object]) -> None:
        errors.append(data)

    async def on_disconnect(*_: object) -> None:
        gone.set()

    sio.on("error", on_error, namespace="/realtime")
    sio.on("disconnect", on_disconnect, namespace="/realtime")
    await sio.connect(server.url, namespaces=["/realtime"], auth={"token": token})
    try:
        joined = await sio.call("join-session", {"sessionId": session["id"]}, namespace="/realtime")
        assert joined["ok"]
        await _revoke(server, "watch")
        await asyncio.wait_for(gone.wait(), 5)
    finally:
        await sio.disconnect()
    assert [e["code"] for e in errors] == ["unauthorized"]


async def test_the_compatible_websocket_closes_with_4401(server: RunningServer) -> None:
    token = await server.token("watch", "alice")
    async with connect(server, token) as conversation:
        await conversation.until("conversation.created")
        await _revoke(server, "watch")
        error = (await conversation.until("error", timeout=5))[-1]
        assert error["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            await conversation.next(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def _token_checks(metrics: str) -> dict[str, float]:
    counts = {}
    for line in metrics.splitlines():
        if line.startswith("voxrelay_token_checks_total{"):
            source = line.split('source="')[1].split('"')[0]
            counts[source] = float(line.rsplit(" ", 1)[1])
    return counts


async def test_a_known_token_needs_no_query_and_a_revoked_one_is_refused_within_a_second(
    launch,  # type: ignore[no-untyped-def]
) -> None:
    server: RunningServer = launch()  # the default check interval
    token = await server.token("watch", "alice")
    async with httpx.AsyncClient(base_url=server.url) as http:
        before = _token_checks((await http.get("/metrics")).text)
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(5):
            assert (await http.get("/conversations", headers=headers)).status_code == 200
        after = _token_checks((await http.get("/metrics")).text)
        assert after.get("database", 0) - before.get("database", 0) == 1
        assert after["known"] - before.get("known", 0) == 4
        await _revoke(server, "watch")
        revoked = time.monotonic()
        while (await http.get("/conversations", headers=headers)).status_code == 200:
            assert time.monotonic() - revoked < 1.0, "a revoked token was let in a second later"
            await asyncio.sleep(0.02)


def test_known_tokens_trust_only_what_the_last_check_found_valid() -> None:
    known = KnownTokens(trust_seconds=60)
    watch, phone = Device("watch", "alice", "tok_1"), Device("phone", "alice", "tok_2")
    known.add("hash-watch", watch)
    known.add("hash-phone", phone)
    check = known.checking()
    assert check.token_ids == {"tok_1", "tok_2"}
    tablet = Device("tablet", "alice", "tok_3")
    known.add("hash-tablet", tablet)  # let in while the check ran
    known.checked(check, active={"tok_1"})
    assert known.get("hash-watch") == watch
    assert known.get("hash-phone") is None  # revoked: looked up again
    assert known.get("hash-tablet") == tablet


def test_known_tokens_go_stale_without_a_check_and_are_bounded() -> None:
    stale = KnownTokens(trust_seconds=0.0)
    stale.add("hash", Device("watch", "alice", "tok_1"))
    time.sleep(0.01)
    assert stale.get("hash") is None
    few = KnownTokens(trust_seconds=60, capacity=2)
    for n in range(3):
        few.add(f"hash-{n}", Device(f"d{n}", "alice", f"tok_{n}"))
    assert few.get("hash-0") is None
    assert few.get("hash-2") is not None
