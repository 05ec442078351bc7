"""Engine.IO's websocket transport of ``fast_websocket``: the one serving websockets
(direct, or upgraded from long-polling) for the python-engineio it was checked
against, with python-engineio's protocol kept (order, ping timeout, frame limit,
disconnect reasons), and python-engineio's own transport for any other version."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import RunningServer, paced, read_pcm, silence
from node import run_client
from raw import NS, RawSocket
from sock import Sock

from voxrelay.client import VoxrelayClient
from voxrelay.transports.socketio import fast_websocket


def _eio(server: RunningServer) -> Any:
    return server.app.state.socketio.eio


def _reasons(server: RunningServer) -> list[tuple[str, Any]]:
    """Every Engine.IO disconnect from now on, with its reason, as the server gives it."""
    eio = _eio(server)
    handle = eio.handlers["disconnect"]
    seen: list[tuple[str, Any]] = []

    async def on_disconnect(eio_sid: str, reason: Any = None) -> None:
        seen.append((eio_sid, reason))
        await handle(eio_sid, reason)

    eio.on("disconnect", on_disconnect)
    return seen


async def _until(condition: Callable[[], bool], seconds: float = 5) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


async def _upgraded(server: RunningServer, sock: Sock) -> Any:
    """The server's Engine.IO socket of ``sock``, once on its websocket."""
    sid = sock.client.eio.sid
    socket = _eio(server).sockets[sid]
    assert await _until(lambda: socket.upgraded and sock.client.transport() == "websocket")
    return socket


def _binary_chunk(ack: int) -> str:
    head = ["audio-chunk", {"_placeholder": True, "num": 0}]
    return f"451-{NS},{ack}{json.dumps(head)}"


@pytest.mark.parametrize("transports", ["websocket", "polling,websocket"])
async def test_a_spoken_turn_over_the_fast_transport(
    server: RunningServer,
    client: VoxrelayClient,
    socks: Callable[[str], Sock],
    transports: str,
) -> None:
    assert fast_websocket.ENGINEIO_VERSION in fast_websocket.CHECKED_VERSIONS
    created = await client.create_session()
    sock = await socks(transports).connect(server.url, await server.token())
    await sock.join(created["id"])
    socket = await _upgraded(server, sock)
    assert fast_websocket.is_fast(socket)

    speech, rate = read_pcm("goforward.raw")
    async for chunk in paced(speech + silence(800, rate), rate, speed=20):
        await sock.emit("audio-chunk", chunk)
    last = await sock.call("audio-chunk", silence(20, rate))
    assert last == {"ok": True, "bytesReceived": len(silence(20, rate))}
    heard = await sock.wait_for("transcript", lambda t: t["role"] == "user")
    seconds = float(heard["text"].strip("()").split()[0])
    assert abs(seconds - len(speech) / 2 / rate) < 0.6
    done = await sock.wait_for("response-done")
    assert done["status"] == "completed"
    audio = [a for a in sock.of("ai-audio") if a["responseId"] == done["responseId"]]
    assert audio and all(a["sampleRate"] == 24000 for a in audio)
    # Events in the order the session logged them: the answer's audio, then its end.
    names = sock.names()
    assert names.index("response-started") < names.index("ai-audio") < names.index("response-done")


async def test_many_chunks_are_taken_and_answered_in_order(server: RunningServer) -> None:
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session()
    raw = await RawSocket.open(server.url, token)
    assert (await raw.call("join-session", {"sessionId": session["id"]}))["ok"]
    socket = next(iter(s for s in _eio(server).sockets.values() if s.upgraded))
    assert fast_websocket.is_fast(socket)
    # Sent all at once, each chunk a different size, each asking for its ack.
    count = 300
    for ack in range(100, 100 + count):
        await raw.send(_binary_chunk(ack))
        await raw.send(b"\0\0" * (ack - 99))
    await raw._read_until(lambda: len(raw.inbox.acks) >= count + 1, 20)
    answered = [(ack, data[0]) for ack, data in raw.inbox.acks.items() if ack >= 100]
    assert answered == [
        (ack, {"ok": True, "bytesReceived": 2 * (ack - 99)}) for ack in range(100, 100 + count)
    ]
    await raw.close()


async def test_a_silent_client_is_dropped_at_the_ping_timeout(server: RunningServer) -> None:
    eio = _eio(server)
    eio.ping_interval, eio.ping_timeout = 0.4, 0.4
    reasons = _reasons(server)
    token = await server.token()
    raw = await RawSocket.open(server.url, token)
    sid = next(s.sid for s in eio.sockets.values() if s.upgraded)
    assert fast_websocket.is_fast(eio.sockets[sid])
    # From now on the client answers no ping and sends nothing: the server gives
    # it up after the ping interval and timeout (whichever notices first, the
    # ping's deadline or the websocket's silence), and closes its websocket.
    async with asyncio.timeout(5):
        await raw.ws.wait_closed()
    assert reasons in (
        [(sid, eio.reason.PING_TIMEOUT)],
        [(sid, eio.reason.TRANSPORT_CLOSE)],
    )
    assert await _until(lambda: sid not in eio.sockets)

    # One that answers its pings stays, however long it says nothing else.
    answering = await RawSocket.open(server.url, token)
    with pytest.raises(TimeoutError):
        await answering._read_until(lambda: False, 2)
    refused = await answering.call("text-message", {"text": "still here"})
    assert refused["error"]["code"] == "not_joined"
    await answering.close()


async def test_a_frame_over_the_payload_limit_is_refused_and_the_socket_goes_on(
    launch: Callable[..., RunningServer],
) -> None:
    limit = 4096
    server = launch(socketio_max_payload_bytes=limit)
    token = await server.token()
    raw = await RawSocket.open(server.url, token)
    assert fast_websocket.is_fast(next(iter(_eio(server).sockets.values())))
    await raw.send(_binary_chunk(1))
    await raw.send(b"\0" * (limit + 1))
    error = await raw.wait_for("error")
    assert error == {
        "code": "payload_too_large",
        "message": f"a packet must be at most {limit} bytes",
    }
    # The announced packet never got its attachment: the next packet drops it.
    refused = await raw.call("commit-audio")
    assert refused["ok"] is False and refused["error"]["code"] == "not_joined"
    await raw.close()


async def test_disconnects_clean_up_with_their_reasons(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    eio = _eio(server)
    reasons = _reasons(server)
    token = await server.token()
    session = await client.create_session()

    # The client says goodbye (Engine.IO close).
    bye = await RawSocket.open(server.url, token)
    assert (await bye.call("join-session", {"sessionId": session["id"]}))["ok"]
    bye_sid = next(s.sid for s in eio.sockets.values() if s.upgraded)
    await bye.send("1")
    await bye.close()
    assert await _until(lambda: bye_sid not in eio.sockets)
    # The websocket gone without a word.
    raw = await RawSocket.open(server.url, token)
    assert (await raw.call("join-session", {"sessionId": session["id"]}))["ok"]
    raw_sid = next(s.sid for s in eio.sockets.values() if s.upgraded)
    raw.ws.transport.abort()
    assert await _until(lambda: raw_sid not in eio.sockets)
    # The server drops one.
    other = await socks("websocket").connect(server.url, token)
    other_socket = await _upgraded(server, other)
    await server.call_async(eio.disconnect(other_socket.sid))
    assert await _until(lambda: not other.client.connected)

    assert reasons == [
        (bye_sid, eio.reason.CLIENT_DISCONNECT),
        (raw_sid, eio.reason.TRANSPORT_CLOSE),
        (other_socket.sid, eio.reason.SERVER_DISCONNECT),
    ]
    assert eio.sockets == {}
    assert (await client.get_session(session["id"]))["status"] == "active"


@pytest.mark.parametrize("transports", ["websocket", ""])
async def test_the_npm_client_over_the_fast_transport(
    node_client: Path, server: RunningServer, client: VoxrelayClient, transports: str
) -> None:
    created = await client.create_session()
    token = await server.token("browser", "alice")
    eio = _eio(server)
    served: set[bool] = set()

    async def watch() -> None:
        while True:
            served.update(fast_websocket.is_fast(s) for s in eio.sockets.values() if s.upgraded)
            await asyncio.sleep(0.02)

    watcher = asyncio.ensure_future(watch())
    try:
        code, lines, stderr = await run_client(server, token, created["id"], "v4", transports)
    finally:
        watcher.cancel()
    assert code == 0, f"client failed ({code}):\n{lines}\n{stderr}"
    assert served == {True}
    names = [line["event"] for line in lines if "event" in line]
    assert "error" not in names
    assert names.count("response-done") == 2 and names[-1] == "session-ended"


async def test_another_python_engineio_keeps_its_own_transport(
    launch: Callable[..., RunningServer],
    socks: Callable[[str], Sock],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(fast_websocket, "ENGINEIO_VERSION", "4.99.0")
    with caplog.at_level(logging.WARNING, logger=fast_websocket.__name__):
        server = launch()
    warnings = [r.getMessage() for r in caplog.records if r.name == fast_websocket.__name__]
    assert len(warnings) == 1 and "4.99.0" in warnings[0] and "4.15.1" in warnings[0]
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session()
    sock = await socks("websocket").connect(server.url, token)
    await sock.join(session["id"])
    socket = await _upgraded(server, sock)
    assert not fast_websocket.is_fast(socket)
    assert await sock.call("audio-chunk", b"\0\0" * 320) == {"ok": True, "bytesReceived": 640}


async def test_a_client_that_reads_slowly_gets_every_packet_in_order(
    server: RunningServer, socks: Callable[[str], Sock]
) -> None:
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        session = await client.create_session()
        # A tiny receive buffer: once it stops reading, the server's writes wait.
        slow = await RawSocket.open(server.url, token, rcvbuf=4096)
        assert (await slow.call("join-session", {"sessionId": session["id"]}))["ok"]
        brisk = await socks("websocket").connect(server.url, token)
        await brisk.join(session["id"])
        mark = len(brisk.events)
        since = len(slow.inbox.events)
        # Some 300 `ai-audio` packets, and as many transcript deltas.
        await client.text(session["conversationId"], "word " * 400)
        await brisk.wait_for("response-done", since=mark, timeout=20)
        await asyncio.sleep(0.5)  # the slow socket read nothing meanwhile
        await slow.wait_for("response-done", since=since, timeout=20)
    heard = slow.inbox.events[since:]
    assert len(heard) > 300
    assert heard == brisk.events[mark : mark + len(heard)]
    await slow.close()
