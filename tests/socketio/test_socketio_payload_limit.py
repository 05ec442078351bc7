"""``socketio_max_payload_bytes``: a Socket.IO packet (with its attachments) or a
long-polling body over it is refused; the socket that sent a websocket packet
goes on, and every other socket is untouched."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable

import httpx
import pytest
from harness import RunningServer
from raw import NS, PollingSocket, RawSocket
from sock import Sock

from voxrelay.client import VoxrelayClient

LIMIT = 64 << 10
# 48 KiB of PCM: some 65,600 characters once in base64 and in its packet.
OVER = base64.b64encode(b"\0\0" * (24 << 10)).decode()
UNDER = base64.b64encode(b"\0\0" * (16 << 10)).decode()


def _placeholder(num: int) -> dict[str, object]:
    return {"_placeholder": True, "num": num}


async def test_a_packet_over_the_payload_limit_is_refused(
    launch: Callable[..., RunningServer],
    socks: Callable[[str], Sock],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = launch(socketio_max_payload_bytes=LIMIT)
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session()
    sock = await socks("websocket").connect(server.url, token)
    await sock.join(session["id"])
    bystander = await socks("polling").connect(server.url, token)
    await bystander.join(session["id"])
    raw = await RawSocket.open(server.url, token)
    assert (await raw.call("join-session", {"sessionId": session["id"]}))["ok"]
    with caplog.at_level(logging.INFO):
        # Over a websocket: that packet is dropped with an error, the socket goes on.
        mark = len(sock.events)
        await sock.emit("audio-chunk", {"audio": OVER})
        error = await sock.wait_for("error", since=mark)
        assert error == {
            "code": "payload_too_large",
            "message": f"a packet must be at most {LIMIT} bytes",
        }
        assert await sock.call("audio-chunk", {"audio": UNDER}) == {
            "ok": True,
            "bytesReceived": 32 << 10,
        }

        # Attachments under the limit each, over it together.
        mark = len(raw.inbox.events)
        head = ["audio-chunk", {"audio": _placeholder(0), "more": _placeholder(1)}]
        await raw.send(f"452-{NS},{json.dumps(head)}")
        await raw.send(b"\0" * (40 << 10))
        await raw.send(b"\0" * (40 << 10))
        error = await raw.wait_for("error", since=mark)
        assert error["code"] == "payload_too_large"
        assert (await raw.call("audio-chunk", {"audio": UNDER}))["ok"] is True

        # Over long-polling: the body is refused (413), and that socket closed.
        async with httpx.AsyncClient(base_url=server.url) as http:
            polling = await PollingSocket.open(http, token)
            body = f'42{NS},["audio-chunk",{{"audio":"{OVER}"}}]'
            answer = await polling.post(body)
            assert answer.status_code == 413
            assert answer.json()["error"] == {
                "code": "payload_too_large",
                "message": f"a body must be at most {LIMIT} bytes",
            }
            await polling.wait_closed()
            # Its long poll ends: with the error and Engine.IO's close if it was waiting
            # already, else with a 400 for the closed session.
            await polling.wait_closed()
            assert (await polling.post(f'42{NS},["commit-audio"]')).status_code == 400

        # The sockets that sent nothing too large never noticed.
        assert bystander.of("error") == []
        assert await bystander.call("audio-chunk", {"audio": UNDER}) == {
            "ok": True,
            "bytesReceived": 32 << 10,
        }
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    await raw.close()
