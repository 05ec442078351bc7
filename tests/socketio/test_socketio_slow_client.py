"""A Socket.IO client that stops reading is dropped once more than
``socketio_max_queued_events`` packets wait for it; the other sockets and its
session carry on, and the client can come back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
from harness import RunningServer
from prometheus_client.parser import text_string_to_metric_families
from raw import PollingSocket, RawSocket, event
from sock import Sock

from voxrelay.client import VoxrelayClient

# A minute of the echo's answer audio: some 600 `ai-audio` packets, and as many words.
LONG_TEXT = "word " * 790


async def _metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _until(condition: Callable[[], Any], seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_socket_that_stops_reading_is_dropped_and_the_others_go_on(
    launch: Callable[..., RunningServer], socks: Callable[[str], Sock]
) -> None:
    server = launch(socketio_max_queued_events=50)
    token = await server.token()
    async with (
        VoxrelayClient(server.url, token) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        slow_session = await client.create_session()
        other_session = await client.create_session()
        slow = await RawSocket.open(server.url, token, rcvbuf=4096)
        assert (await slow.call("join-session", {"sessionId": slow_session["id"]}))["ok"]
        other = await socks("websocket").connect(server.url, token)
        await other.join(other_session["id"])
        drops = await _metric(http, "voxrelay_slow_client_drops_total", transport="socketio")
        streams = await _metric(http, "voxrelay_active_streams", transport="socketio")

        async def dropped() -> bool:
            now = await _metric(http, "voxrelay_slow_client_drops_total", transport="socketio")
            return now > drops

        # From now on the slow socket reads nothing; its session answers at length.
        answers = 0
        while not await _until(dropped, 2):
            assert answers < 5, "the socket that stopped reading was never dropped"
            await client.text(slow_session["conversationId"], LONG_TEXT)
            answers += 1
            # Meanwhile the other socket hears its own answers as usual.
            mark = len(other.events)
            assert (await other.call("text-message", {"text": f"turn {answers}"}))["ok"]
            await other.wait_for("response-done", since=mark)
        assert await _metric(http, "voxrelay_slow_client_drops_total", transport="socketio") == (
            drops + 1
        )

        # The dropped socket left its session, which lives on for its grace period.
        async def left() -> bool:
            now = await _metric(http, "voxrelay_active_streams", transport="socketio")
            return now == streams - 1

        assert await _until(left, 5)
        assert (await client.get_session(slow_session["id"]))["status"] == "active"
        mark = len(other.events)
        assert (await other.call("text-message", {"text": "after the drop"}))["ok"]
        await other.wait_for("response-done", since=mark)

        # The client comes back and carries on in the same session.
        back = await socks("websocket").connect(server.url, token)
        await back.join(slow_session["id"])
        assert (await back.call("text-message", {"text": LONG_TEXT}))["ok"]
        later = (await back.wait_for("response-done"))["responseId"]

        # Reading again, the old socket finds what was queued before the drop, the
        # reason for it, then the end; nothing of the answers given since.
        await slow.read_to_the_end(timeout=30)
        errors = slow.inbox.of("error")
        assert [error["code"] for error in errors] == ["slow_consumer"], errors
        assert slow.inbox.events[-1] == ("error", errors[0])
        heard = {audio["responseId"] for audio in slow.inbox.of("ai-audio")}
        assert heard and later not in heard
        await slow.close()


async def test_a_long_polling_socket_that_stops_polling_is_dropped(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(socketio_max_queued_events=50)
    token = await server.token()
    async with (
        VoxrelayClient(server.url, token) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        session = await client.create_session()
        polling = await PollingSocket.open(http, token, poll=False)
        assert (await polling.post(event("join-session", {"sessionId": session["id"]}))).is_success
        drops = await _metric(http, "voxrelay_slow_client_drops_total", transport="socketio")

        async def dropped() -> bool:
            now = await _metric(http, "voxrelay_slow_client_drops_total", transport="socketio")
            return now > drops

        # No GET comes to take the answer: it all waits on the server, up to the bound.
        await client.text(session["conversationId"], LONG_TEXT)
        assert await _until(dropped, 5)
        assert (await http.get("/socket.io/", params=polling.params)).status_code == 400
        assert (await client.get_session(session["id"]))["status"] == "active"
