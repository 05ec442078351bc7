"""Packets no Socket.IO client would send, written by hand: each is refused with an
`error` event (or, for a long-polling body, a JSON 4xx), never a traceback, and
the socket, or at least every other socket, goes on."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from harness import RunningServer
from raw import NS, PLACEHOLDER, PollingSocket, RawSocket
from websockets.asyncio.client import connect


def _no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, caplog.text


async def _a_turn_goes_through(sock: RawSocket) -> None:
    mark = len(sock.inbox.events)
    assert (await sock.call("text-message", {"text": "still here"}))["ok"] is True
    await sock.wait_for("response-done", since=mark)


@pytest.mark.parametrize(
    "head, attachments",
    [
        (f'451-{NS},["audio-chunk",{json.dumps(PLACEHOLDER)}]', []),
        (f'452-{NS},["audio-chunk",{json.dumps(PLACEHOLDER)}]', [b"\0\0"]),
        # Announcing no attachment at all: python-socketio would wait forever.
        (f'45{NS},["audio-chunk",{json.dumps(PLACEHOLDER)}]', []),
    ],
)
async def test_a_binary_packet_whose_attachments_never_come_is_dropped(
    raw: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
    head: str,
    attachments: list[bytes],
) -> None:
    sock: RawSocket = await raw()
    with caplog.at_level(logging.INFO):
        await sock.send(head)
        for attachment in attachments:
            await sock.send(attachment)
        # The next text packet is taken as itself, not as the missing attachment.
        await _a_turn_goes_through(sock)
        errors = sock.inbox.of("error")
        assert [e["code"] for e in errors] == ["invalid_request"], errors
        # A whole binary packet still goes through.
        await sock.send(f'451-{NS},7["audio-chunk",{json.dumps(PLACEHOLDER)}]')
        await sock.send(b"\0\0" * 160)
        await sock._read_until(lambda: 7 in sock.inbox.acks, 10)
        assert sock.inbox.acks[7] == [{"ok": True, "bytesReceived": 320}]
    _no_server_errors(caplog)


GARBLED: list[str | bytes] = [
    f'42{NS},["text-message",',  # JSON cut short
    f"49{NS},[]",  # no such Socket.IO packet type
    f"44{NS},{{}}",  # CONNECT_ERROR is the server's to send
    "4true",  # Engine.IO hands this on as JSON, no Socket.IO packet
    "4 5",  # ... and this as the number 5 (a binary event, to python-socketio)
    f"42{NS},5",
    f"42{NS},[]",
    f'42{NS},[{{"an": "object"}}]',
    "",  # an empty Engine.IO packet
    "x garbage",  # no Engine.IO packet type
    "bQQ",  # binary in base64 that is not base64
    b"\x00\x01\x02",  # an attachment no packet announced
]


async def test_garbled_packets_answer_error_and_the_socket_goes_on(
    raw: Callable[[], Any], caplog: pytest.LogCaptureFixture
) -> None:
    sock: RawSocket = await raw()
    with caplog.at_level(logging.INFO):
        for frame in GARBLED:
            mark = len(sock.inbox.events)
            await sock.send(frame)
            error = await sock.wait_for("error", since=mark)
            assert error["code"] == "invalid_request", (frame, error)
            assert "event" not in error, (frame, error)
        await _a_turn_goes_through(sock)
    _no_server_errors(caplog)


@pytest.mark.parametrize("name", ["connect", "disconnect"])
async def test_client_events_named_connect_or_disconnect_are_unknown_events(
    raw: Callable[[], Any], caplog: pytest.LogCaptureFixture, name: str
) -> None:
    # python-socketio hands them to the namespace's own connect/disconnect handlers.
    sock: RawSocket = await raw()
    fake_environ = {"HTTP_AUTHORIZATION": "Bearer vxr_someone-else", "QUERY_STRING": ""}
    with caplog.at_level(logging.INFO):
        answer = await sock.call(name, fake_environ)
        assert answer == {
            "ok": False,
            "error": {"code": "invalid_request", "message": f"unknown event {name!r}"},
        }
        assert sock.inbox.of("error")[-1]["event"] == name
        # Still connected, still joined.
        await _a_turn_goes_through(sock)
    _no_server_errors(caplog)


@pytest.mark.parametrize(
    "body",
    [b"x garbage", b"\xff\xfe not UTF-8", b"4" + b"\x1e" * 3, b"d=", b"bQQ"],
)
async def test_a_garbled_long_polling_body_answers_400_and_closes_that_socket(
    server: RunningServer, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    token = await server.token()
    async with httpx.AsyncClient(base_url=server.url) as http:
        garbled = await PollingSocket.open(http, token)
        other = await PollingSocket.open(http, token)
        with caplog.at_level(logging.INFO):
            answer = await garbled.post(body)
            assert answer.status_code == 400
            assert answer.json()["error"]["code"] == "invalid_request"
            # Its long poll ends (with the error and Engine.IO's close if it was waiting
            # already, else with a 400 for the closed session), and so does the socket.
            await garbled.wait_closed()
            assert (await garbled.post(f'42{NS},["commit-audio"]')).status_code == 400
            # Any other socket carries on.
            assert (await other.call("commit-audio")) == {
                "ok": False,
                "error": {"code": "not_joined", "message": "join a session first (join-session)"},
            }
        await garbled.close()
        await other.close()
    _no_server_errors(caplog)


async def test_a_garbled_packet_in_a_good_long_polling_body_answers_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = await server.token()
    async with httpx.AsyncClient(base_url=server.url) as http:
        sock = await PollingSocket.open(http, token)
        with caplog.at_level(logging.INFO):
            mark = len(sock.inbox.events)
            assert (await sock.post(f'42{NS},["text-message",\x1e4true')).status_code == 200
            await asyncio.wait_for(_errors(sock, mark, 2), 10)
            assert (await sock.call("commit-audio"))["error"]["code"] == "not_joined"
        await sock.close()
    _no_server_errors(caplog)


async def _errors(sock: PollingSocket, since: int, count: int) -> None:
    while len(sock.inbox.of("error", since)) < count:
        sock.inbox.changed.clear()
        if len(sock.inbox.of("error", since)) >= count:
            return
        await sock.inbox.changed.wait()
    assert {e["code"] for e in sock.inbox.of("error", since)} == {"invalid_request"}


async def test_a_post_over_the_limit_then_another_answer_4xx(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = await server.token()
    over = f'42{NS},["audio-chunk",{{"audio":"{"A" * (4 << 20)}"}}]'
    async with httpx.AsyncClient(base_url=server.url) as http:
        # No long poll waiting: python-engineio used to hold the first POST until one
        # came, and answer the second with a 500.
        sock = await PollingSocket.open(http, token, poll=False)
        other = await PollingSocket.open(http, token)
        with caplog.at_level(logging.INFO):
            first = asyncio.create_task(sock.post(over))
            await asyncio.wait({first}, timeout=3)
            second = await sock.post(f'42{NS},["commit-audio"]')
            assert second.status_code == 400, second.text
            assert second.json()["error"]["code"] == "invalid_request"
            answer = await asyncio.wait_for(first, 5)
            assert answer.status_code == 413, answer.text
            assert answer.json()["error"] == {
                "code": "payload_too_large",
                "message": f"a body must be at most {4 << 20} bytes",
            }
            assert (await other.call("commit-audio"))["error"]["code"] == "not_joined"
        await other.close()
    _no_server_errors(caplog)


async def test_garbage_before_joining_the_namespace_closes_the_socket(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    with caplog.at_level(logging.INFO):
        async with connect(url, ping_interval=None) as ws:
            assert str(await ws.recv()).startswith("0{")
            await ws.send(f'42{NS},["text-message",')  # no error event to answer with
            # Engine.IO's close, on which a client closes its websocket.
            assert await asyncio.wait_for(ws.recv(), 10) == "1"
    _no_server_errors(caplog)
