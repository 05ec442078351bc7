"""Socket.IO `audio-chunk`s of any byte count, odd ones included, in each of the three
forms (base64 in JSON, binary, binary in JSON): each is acknowledged with its own byte
count and the upstream hears them as one contiguous stream, a half sample at a border
joining the next chunk's first byte.

Against the ``echo`` provider in manual mode at 24 kHz in and out, whose answer to a
committed turn is exactly the audio it heard."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import pytest
import socketio
from harness import RunningServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxrelay.client import VoxrelayClient

NS = "/realtime"

FORMS = ("base64", "binary", "binary-in-json")


@st.composite
def chunks(draw: st.DrawFn) -> list[tuple[bytes, str]]:
    """Up to 0.1 s of audio (one whole sample at least: the turn is not empty) cut at
    arbitrary offsets, each piece sent in one of the three forms."""
    audio = draw(st.binary(min_size=2, max_size=4800))
    offsets = draw(st.lists(st.integers(0, len(audio)), max_size=8))
    bounds = [0, *sorted(offsets), len(audio)]
    return [(audio[a:b], draw(st.sampled_from(FORMS))) for a, b in itertools.pairwise(bounds)]


def _payload(piece: bytes, form: str) -> Any:
    if form == "binary":
        return piece
    if form == "binary-in-json":
        return {"audio": piece}
    return {"audio": base64.b64encode(piece).decode("ascii"), "sampleRate": 24000}


@pytest.fixture
def token(server: RunningServer) -> str:
    return server.call(server.token())


# One server for every example (each uses a session and a socket of its own).
@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=chunks())
async def test_odd_chunks_are_acknowledged_and_heard_whole(
    server: RunningServer, token: str, pieces: list[tuple[bytes, str]]
) -> None:
    async with VoxrelayClient(server.url, token) as client:
        created = await client.create_session(inputSampleRate=24000, turnDetection="manual")
    sock = socketio.AsyncClient(reconnection=False)
    audio: list[Any] = []
    errors: list[Any] = []
    done = asyncio.Event()
    sock.on("ai-audio", audio.append, namespace=NS)
    sock.on("error", errors.append, namespace=NS)
    sock.on("response-done", lambda _: done.set(), namespace=NS)
    await sock.connect(server.url, namespaces=[NS], auth={"token": token}, wait_timeout=5)
    try:
        joined = await sock.call("join-session", {"sessionId": created["id"]}, namespace=NS)
        assert joined["ok"] is True and joined["outputSampleRate"] == 24000, joined
        for piece, form in pieces:
            ack = await sock.call("audio-chunk", _payload(piece, form), namespace=NS, timeout=10)
            assert ack == {"ok": True, "bytesReceived": len(piece)}
        assert await sock.call("commit-audio", namespace=NS) == {"ok": True}
        await asyncio.wait_for(done.wait(), 10)
        heard = b"".join(base64.b64decode(a["audio"]) for a in audio)
        sent = b"".join(piece for piece, _ in pieces)
        assert heard == sent[: len(sent) & ~1]
        assert errors == []
        assert (await sock.call("end-session", namespace=NS))["ok"] is True
    finally:
        await sock.disconnect()
