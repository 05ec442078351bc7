"""The Socket.IO transport (namespace /realtime) driven by python-socketio's own
client, over websocket and over long-polling, against the echo provider."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import socketio
from harness import RunningServer, paced, read_pcm, silence
from prometheus_client import REGISTRY
from sock import NS, Sock

from voxrelay.client import VoxrelayClient
from voxrelay.store import Store

TRANSPORTS = ["websocket", "polling"]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _joined(
    server: RunningServer, client: VoxrelayClient, sock: Sock, **session: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    created = await client.create_session(**session)
    await sock.connect(server.url, await server.token("watch", "alice"))
    ack = await sock.join(created["id"])
    return created, ack


async def _stored(
    client: VoxrelayClient,
    conversation_id: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 5,
) -> list[dict[str, Any]]:
    """The stored messages, once ``until`` holds: a live session stores each turn
    a moment after its events went out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        messages: list[dict[str, Any]] = (await client.conversation(conversation_id))["messages"]
        if until(messages) or asyncio.get_running_loop().time() > deadline:
            return messages
        await asyncio.sleep(0.05)


_SOCKETIO_IN = {"direction": "in", "transport": "socketio"}


def _gauge(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- authentication -------------------------------------------------------------------------


async def test_connect_with_token_in_auth_header_or_query(
    server: RunningServer, socks: Callable[[str], Sock], transport: str
) -> None:
    token = await server.token()
    by_auth = await socks(transport).connect(server.url, token)
    connected = by_auth.of("connected")
    assert connected == [{"clientId": by_auth.client.get_sid(NS)}]
    assert by_auth.client.transport() == transport
    by_header = socks(transport)
    await by_header.connect(server.url, None, headers={"Authorization": f"Bearer {token}"})
    by_query = socks(transport)
    await by_query.connect(f"{server.url}?access_token={token}", None)
    ids = {s.of("connected")[0]["clientId"] for s in (by_auth, by_header, by_query)}
    assert len(ids) == 3


@pytest.mark.parametrize("case", ["missing", "unknown", "revoked"])
async def test_connection_refused_without_a_valid_token(
    server: RunningServer, socks: Callable[[str], Sock], transport: str, case: str
) -> None:
    token: str | None = None
    if case == "unknown":
        token = "vxr_not-a-token"
    elif case == "revoked":
        token = await server.token("old-phone", "alice")
        async with await Store.open(server.settings.database_url) as store:
            assert await store.revoke_token("old-phone") == 1
    sock = socks(transport)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sock.connect(server.url, token)
    assert sock.refusal["data"]["code"] == "unauthorized"
    assert sock.refusal["data"]["message"] == sock.refusal["message"]
    assert sock.of("connected") == []


# -- turns ----------------------------------------------------------------------------------


async def test_text_turn_with_events_and_acks(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock], transport: str
) -> None:
    sock = socks(transport)
    created, ack = await _joined(server, client, sock)
    joined = sock.of("session-joined")[0]
    assert joined == {
        "sessionId": created["id"],
        "conversationId": created["conversationId"],
        "status": "active",
        "inputSampleRate": 16000,
        "outputSampleRate": 24000,
        "turnDetection": "server_vad",
    }
    assert ack == {"ok": True, **joined}
    mark = len(sock.events)
    answer = await sock.call("text-message", {"text": "hello there"})
    assert answer["ok"] is True and answer["itemId"].startswith("item_")
    done = await sock.wait_for("response-done", since=mark)
    heard = sock.of("transcript", mark)[0]
    assert heard == {
        "role": "user",
        "itemId": answer["itemId"],
        "text": "hello there",
        "final": True,
    }
    started = sock.of("response-started", mark)[0]
    assert done == {"responseId": started["responseId"], "status": "completed"}
    audio = sock.of("ai-audio", mark)
    assert audio and all(
        a["responseId"] == started["responseId"] and a["sampleRate"] == 24000 for a in audio
    )
    deltas = [t["delta"] for t in sock.of("transcript", mark) if "delta" in t]
    final = [t for t in sock.of("transcript", mark) if t["role"] == "assistant" and t.get("final")]
    assert "".join(deltas) == final[0]["text"] == "You said: hello there"
    # The conversation is stored like any other.
    messages = await _stored(client, created["conversationId"], lambda m: len(m) >= 2)
    assert [(m["role"], m["text"]) for m in messages] == [
        ("user", "hello there"),
        ("assistant", "You said: hello there"),
    ]


@pytest.mark.parametrize("encoding", ["base64", "binary", "binary-in-json"])
async def test_spoken_turn_with_real_speech(
    server: RunningServer,
    client: VoxrelayClient,
    socks: Callable[[str], Sock],
    transport: str,
    encoding: str,
) -> None:
    speech, rate = read_pcm("goforward.raw")
    output_rate = 48000 if encoding == "binary" else 24000
    sock = socks(transport)
    created, _ = await _joined(server, client, sock, outputSampleRate=output_rate)
    bytes_in = _gauge("voxrelay_audio_bytes_total", **_SOCKETIO_IN)
    sent = 0
    async for chunk in paced(speech + silence(800, rate), rate, speed=20):
        payload: Any
        if encoding == "base64":
            payload = {"audio": base64.b64encode(chunk).decode()}
        elif encoding == "binary":
            payload = chunk
        else:
            payload = {"audio": chunk}
        await sock.emit("audio-chunk", payload)
        sent += len(chunk)
    # An ack on the last chunk: every chunk before it has been taken, in order.
    last = await sock.call("audio-chunk", silence(20, rate))
    assert last == {"ok": True, "bytesReceived": len(silence(20, rate))}
    sent += len(silence(20, rate))
    assert _gauge("voxrelay_audio_bytes_total", **_SOCKETIO_IN) - bytes_in == sent

    started_speech = await sock.wait_for("speech-started")
    stopped = await sock.wait_for("speech-stopped")
    assert started_speech == {"itemId": stopped["itemId"]}
    heard = await sock.wait_for("transcript", lambda t: t["role"] == "user")
    assert heard["itemId"] == stopped["itemId"] and heard["final"] is True
    assert heard["text"].endswith("seconds of audio)")
    done = await sock.wait_for("response-done")
    started = sock.of("response-started")[0]
    assert done == {"responseId": started["responseId"], "status": "completed"}
    audio = sock.of("ai-audio")
    assert all(a["sampleRate"] == output_rate for a in audio)
    pcm = b"".join(base64.b64decode(a["audio"]) for a in audio)
    # The echo answers with the user's own audio, at the session's output rate.
    spoken_seconds = len(pcm) / 2 / output_rate
    assert 2.0 < spoken_seconds < len(speech) / 2 / rate + 1.2
    answer = await sock.wait_for("transcript", lambda t: t["role"] == "assistant" and "text" in t)
    messages = await _stored(client, created["conversationId"], lambda m: len(m) >= 2)
    assert [(m["role"], m["text"]) for m in messages] == [
        ("user", heard["text"]),
        ("assistant", answer["text"]),
    ]


async def test_a_burst_of_audio_over_long_polling_arrives_whole(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    # Emitted without waiting, the chunks queue up and travel in a few POSTs of
    # hundreds of packets each (a binary chunk is two packets).
    speech, rate = read_pcm("goforward.raw")
    audio = speech + silence(800, rate)
    sock = socks("polling")
    await _joined(server, client, sock)
    bytes_in = _gauge("voxrelay_audio_bytes_total", **_SOCKETIO_IN)
    step = rate // 50 * 2
    for start in range(0, len(audio), step):
        await sock.emit("audio-chunk", audio[start : start + step])
    assert (await sock.call("audio-chunk", b""))["ok"] is True
    assert _gauge("voxrelay_audio_bytes_total", **_SOCKETIO_IN) - bytes_in == len(audio)
    heard = await sock.wait_for("transcript", lambda t: t["role"] == "user")
    seconds = float(heard["text"].strip("()").split()[0])
    assert abs(seconds - len(speech) / 2 / rate) < 0.6
    await sock.wait_for("response-done")


async def test_commit_audio_in_manual_mode(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    speech, rate = read_pcm("goforward.raw")
    sock = socks("websocket")
    created, ack = await _joined(server, client, sock, turnDetection="manual")
    assert ack["turnDetection"] == "manual"
    # Nothing to commit yet: the upstream's complaint arrives as an `error` event.
    assert await sock.call("commit-audio") == {"ok": True}
    empty = await sock.wait_for("error")
    assert empty["code"] == "input_audio_buffer_commit_empty" and "event" not in empty
    for start in range(0, len(speech), 3200):
        await sock.emit(
            "audio-chunk", {"audio": base64.b64encode(speech[start : start + 3200]).decode()}
        )
    await asyncio.sleep(0.3)
    assert sock.of("speech-started") == [] and sock.of("response-started") == []
    assert await sock.call("commit-audio") == {"ok": True}
    heard = await sock.wait_for("transcript", lambda t: t["role"] == "user")
    assert heard["final"] is True
    done = await sock.wait_for("response-done")
    assert done["status"] == "completed"
    assert sock.of("speech-started") == []  # manual: no VAD events
    audio = b"".join(base64.b64decode(a["audio"]) for a in sock.of("ai-audio"))
    assert abs(len(audio) / 2 / 24000 - len(speech) / 2 / rate) < 0.1
    messages = await _stored(client, created["conversationId"], lambda m: len(m) >= 2)
    assert [m["role"] for m in messages] == ["user", "assistant"]


async def test_interrupt_with_played_ms_cuts_the_stored_answer(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    sock = socks("polling")
    created, _ = await _joined(server, client, sock)
    text = "one two three four five six"  # "You said: ..." is 8 words, 1.6 s of tone
    await sock.call("text-message", {"text": text})
    await sock.wait_for("response-done")
    final = await sock.wait_for("transcript", lambda t: t["role"] == "assistant" and "text" in t)
    assert final["text"] == f"You said: {text}"
    mark = len(sock.events)
    # The user heard a quarter of the answer: 2 of its 8 words are kept.
    assert await sock.call("interrupt", {"playedMs": 400}) == {"ok": True}
    cut = await sock.wait_for("transcript", since=mark)
    assert cut == {
        "role": "assistant",
        "itemId": final["itemId"],
        "text": "You said:",
        "final": True,
    }
    messages = await _stored(
        client, created["conversationId"], lambda m: bool(m) and m[-1]["text"] == "You said:"
    )
    assert messages[-1]["role"] == "assistant"
    assert messages[-1]["text"] == "You said:"
    # Without playedMs (nothing in progress) the interrupt is simply taken.
    assert await sock.call("interrupt") == {"ok": True}


async def test_end_session_keeps_messages(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock], transport: str
) -> None:
    sock = socks(transport)
    created, _ = await _joined(server, client, sock)
    await sock.call("text-message", {"text": "remember this"})
    await sock.wait_for("response-done")
    answer = await sock.call("end-session")
    assert answer == {"ok": True, "conversationId": created["conversationId"], "status": "ended"}
    # `session-ended` arrived before the ack.
    assert sock.of("session-ended") == [
        {"conversationId": created["conversationId"], "reason": "client_end"}
    ]
    assert (await client.get_session(created["id"]))["status"] == "ended"
    messages = (await client.conversation(created["conversationId"]))["messages"]
    assert [m["text"] for m in messages] == ["remember this", "You said: remember this"]
    # Ending again answers the same; audio now has no session to go to.
    assert await sock.call("end-session") == answer
    refused = await sock.call("audio-chunk", {"audio": ""})
    assert refused["error"]["code"] == "no_active_session"
    # The socket can join the conversation's next session.
    again = await client.create_session(conversationId=created["conversationId"])
    await sock.join(again["id"])
    mark = len(sock.events)
    assert (await sock.call("text-message", {"text": "still here"}))["ok"] is True
    await sock.wait_for("response-done", since=mark)


async def test_a_device_token_never_joins_another_users_session(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    alices = await client.create_session()
    own = await server.token("my-watch", None)
    refused = socks("websocket")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(server.url, None, auth={"token": own, "userId": "alice"})
    assert refused.refusal["data"]["code"] == "forbidden"

    sock = await socks("websocket").connect(server.url, own)
    named = await sock.call("join-session", {"sessionId": alices["id"], "userId": "alice"})
    assert named["error"]["code"] == "forbidden"
    unnamed = await sock.call("join-session", {"sessionId": alices["id"]})
    assert unnamed["error"]["code"] == "not_found"
    assert sock.of("session-joined") == []


async def test_a_service_token_joins_the_session_of_the_user_it_names(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    alices = await client.create_session()
    service = await server.service_token()
    at_connect = await socks("websocket").connect(
        server.url, None, auth={"token": service, "userId": "alice"}
    )
    assert (await at_connect.join(alices["id"]))["conversationId"] == alices["conversationId"]

    sock = await socks("websocket").connect(server.url, service)
    unnamed = await sock.call("join-session", {"sessionId": alices["id"]})
    assert unnamed["error"]["code"] == "invalid_request"
    other = await sock.call("join-session", {"sessionId": alices["id"], "userId": "bob"})
    assert other["error"]["code"] == "not_found"
    joined = await sock.call("join-session", {"sessionId": alices["id"], "userId": "alice"})
    assert joined["ok"] is True


# -- errors ---------------------------------------------------------------------------------


async def test_bad_requests_answer_error_and_the_socket_stays_usable(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock], transport: str
) -> None:
    own = await client.create_session()
    async with VoxrelayClient(server.url, await server.token("bobs-phone", "bob")) as bobs:
        bobs_session = await bobs.create_session()
    sock = await socks(transport).connect(server.url, await server.token("watch", "alice"))

    cases: list[tuple[str, Any, str]] = [
        ("audio-chunk", {"audio": base64.b64encode(b"\0\0").decode()}, "not_joined"),
        ("audio-chunk", b"\0\0\0\0", "not_joined"),
        ("commit-audio", None, "not_joined"),
        ("text-message", {"text": "hi"}, "not_joined"),
        ("join-session", {"sessionId": "sess_does_not_exist"}, "not_found"),
        ("join-session", {"sessionId": bobs_session["id"]}, "not_found"),
        ("join-session", {"sessionId": bobs_session["id"], "userId": "bob"}, "forbidden"),
        ("join-session", {"sessionId": own["id"], "userId": 7}, "invalid_request"),
        ("join-session", {}, "invalid_request"),
        ("join-session", "sess_x", "invalid_request"),
        ("join-session", None, "invalid_request"),
        ("no-such-event", {"x": 1}, "invalid_request"),
    ]
    for event, data, code in cases:
        mark = len(sock.events)
        answer = await sock.call(event, data)
        assert answer["ok"] is False, (event, data, answer)
        assert answer["error"]["code"] == code, (event, data, answer)
        error = await sock.wait_for("error", since=mark)
        assert error == {**answer["error"], "event": event}

    await sock.join(own["id"])
    joined_cases: list[tuple[str, Any, str]] = [
        ("audio-chunk", {"audio": "not base64!"}, "invalid_request"),
        ("audio-chunk", {"audio": 42}, "invalid_request"),
        ("audio-chunk", {}, "invalid_request"),
        ("audio-chunk", "AAAA", "invalid_request"),
        ("audio-chunk", {"audio": "AAAA", "sampleRate": 44100}, "invalid_request"),
        ("text-message", {}, "invalid_request"),
        ("text-message", {"text": "   "}, "invalid_request"),
        ("text-message", {"text": 7}, "invalid_request"),
        ("text-message", "hello", "invalid_request"),
        ("interrupt", {"playedMs": "a lot"}, "invalid_request"),
        ("interrupt", {"playedMs": -5}, "invalid_request"),
        ("interrupt", [1, 2], "invalid_request"),
    ]
    for event, data, code in joined_cases:
        mark = len(sock.events)
        answer = await sock.call(event, data)
        assert answer["ok"] is False and answer["error"]["code"] == code, (event, data, answer)
        assert (await sock.wait_for("error", since=mark))["event"] == event

    # Without an ack callback the `error` event alone answers.
    mark = len(sock.events)
    await sock.emit("audio-chunk", {"audio": "%%%"})
    error = await sock.wait_for("error", since=mark)
    assert error["code"] == "invalid_request" and error["event"] == "audio-chunk"

    # Still connected, still joined: a turn goes through.
    assert sock.client.connected
    mark = len(sock.events)
    assert (await sock.call("text-message", {"text": "after the errors"}))["ok"] is True
    await sock.wait_for("response-done", since=mark)
    messages = await _stored(client, own["conversationId"], lambda m: len(m) >= 2)
    assert [m["text"] for m in messages] == ["after the errors", "You said: after the errors"]


# -- several sockets, leaving and coming back ---------------------------------------------------


async def test_two_sockets_hear_the_same_answer(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    streams = _gauge("voxrelay_active_streams", transport="socketio")
    phone, tablet = socks("websocket"), socks("polling")
    created, _ = await _joined(server, client, phone)
    await phone.call("text-message", {"text": "first turn"})
    await phone.wait_for("response-done")
    # A device that joins later hears no old audio.
    await tablet.connect(server.url, await server.token("tablet", "alice"))
    await tablet.join(created["id"])
    assert _gauge("voxrelay_active_streams", transport="socketio") == streams + 2
    assert server.registry.get(created["id"]).listeners == 2  # type: ignore[union-attr]
    phone_mark, tablet_mark = len(phone.events), len(tablet.events)
    assert tablet.names() == ["connected", "session-joined"]
    await phone.call("text-message", {"text": "second turn"})
    for sock, mark in ((phone, phone_mark), (tablet, tablet_mark)):
        await sock.wait_for("response-done", since=mark)
    assert phone.events[phone_mark:] == tablet.events[tablet_mark:]
    assert tablet.of("ai-audio")
    await tablet.close()
    await asyncio.sleep(0.2)
    assert server.registry.get(created["id"]).listeners == 1  # type: ignore[union-attr]
    assert _gauge("voxrelay_active_streams", transport="socketio") == streams + 1


async def test_joining_another_session_leaves_the_first(
    server: RunningServer, client: VoxrelayClient, socks: Callable[[str], Sock]
) -> None:
    first = await client.create_session()
    second = await client.create_session()
    sock = await socks("websocket").connect(server.url, await server.token())
    await sock.join(first["id"])
    assert server.registry.get(first["id"]).listeners == 1  # type: ignore[union-attr]
    await sock.join(second["id"])
    assert server.registry.get(first["id"]).listeners == 0  # type: ignore[union-attr]
    assert server.registry.get(second["id"]).listeners == 1  # type: ignore[union-attr]
    # Joining the same session again is harmless: one listener, one stream of events.
    await sock.join(second["id"])
    assert server.registry.get(second["id"]).listeners == 1  # type: ignore[union-attr]
    mark = len(sock.events)
    await client.text(first["conversationId"], "to the first")
    ack = await sock.call("text-message", {"text": "to the second"})
    await sock.wait_for("response-done", since=mark)
    await asyncio.sleep(0.2)
    transcripts = [t for t in sock.of("transcript", mark) if "text" in t]
    assert [t["text"] for t in transcripts] == ["to the second", "You said: to the second"]
    assert transcripts[0]["itemId"] == ack["itemId"]
    assert len(sock.of("response-done", mark)) == 1


async def test_a_dropped_socket_does_not_end_the_session_before_the_grace_period(
    launch: Callable[..., RunningServer], socks: Callable[[str], Sock]
) -> None:
    server = launch(grace_seconds=1.5)
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        created = await client.create_session()
        sock = await socks("websocket").connect(server.url, token)
        await sock.join(created["id"])
        await asyncio.sleep(2.0)  # joined: not idle, however long
        assert (await client.get_session(created["id"]))["status"] == "active"
        await sock.close()
        await asyncio.sleep(0.5)
        assert (await client.get_session(created["id"]))["status"] == "active"
        # The device comes back within the grace period and carries on.
        back = await socks("polling").connect(server.url, token)
        await back.join(created["id"])
        await back.call("text-message", {"text": "back again"})
        await back.wait_for("response-done")
        await back.close()
        for _ in range(50):
            session = await client.get_session(created["id"])
            if session["status"] == "ended" and server.registry.get(created["id"]) is None:
                break
            await asyncio.sleep(0.1)
        assert session["status"] == "ended"
        assert server.registry.get(created["id"]) is None
        messages = (await client.conversation(created["conversationId"]))["messages"]
        assert [m["text"] for m in messages] == ["back again", "You said: back again"]


async def test_server_shutdown_ends_the_session_on_the_socket(
    launch: Callable[..., RunningServer], socks: Callable[[str], Sock], transport: str
) -> None:
    server = launch()
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        created = await client.create_session()
    sock = await socks(transport).connect(server.url, token)
    await sock.join(created["id"])
    stopping = asyncio.create_task(asyncio.to_thread(server.stop))
    ended = await sock.wait_for("session-ended")
    assert ended == {"conversationId": created["conversationId"], "reason": "server_shutdown"}
    await stopping
    assert not server.thread.is_alive()


@pytest.mark.parametrize("waiting", ["nothing", "a packet"])
async def test_a_polling_client_gone_without_a_word_does_not_hold_the_shutdown(
    launch: Callable[..., RunningServer], waiting: str
) -> None:
    # What is queued for it would wait for a GET that never comes: the server stops
    # anyway, having waited for it no longer than VOXRELAY_SOCKETIO_CLOSE_SECONDS.
    server = launch(socketio_close_seconds=0.2)
    async with httpx.AsyncClient(base_url=server.url) as http:
        params = {"EIO": "4", "transport": "polling"}
        handshake = await http.get("/socket.io/", params=params)
        assert handshake.status_code == 200
        if waiting == "a packet":
            # Joins the namespace without a token: its refusal waits for the next GET.
            sid = json.loads(handshake.text[1:])["sid"]
            joined = await http.post(
                "/socket.io/", params={**params, "sid": sid}, content="40/realtime,"
            )
            assert joined.status_code == 200
    await asyncio.to_thread(server.stop)
    assert not server.thread.is_alive()


async def test_a_polling_client_that_closed_is_not_waited_for_at_shutdown(
    launch: Callable[..., RunningServer],
) -> None:
    # Longer than the test server is given to stop: waiting for it would fail the test.
    server = launch(socketio_close_seconds=60)
    async with httpx.AsyncClient(base_url=server.url) as http:
        params = {"EIO": "4", "transport": "polling"}
        handshake = await http.get("/socket.io/", params=params)
        sid = json.loads(handshake.text[1:])["sid"]
        closed = await http.post("/socket.io/", params={**params, "sid": sid}, content="1")
        assert closed.status_code == 200
    await asyncio.to_thread(server.stop)
    assert not server.thread.is_alive()


async def test_socketio_lives_beside_the_http_routes(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        handshake = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert handshake.status_code == 200
        assert handshake.text.startswith("0{") and '"sid"' in handshake.text
