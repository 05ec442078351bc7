"""Audio uploaded over HTTP, cut at arbitrary byte offsets (half a PCM16 sample on
either side of a border included), reaches the upstream as one contiguous stream.

Through a real server and the ``echo`` provider in manual mode: at 24 kHz in and out
nothing is resampled, and echo answers a committed turn with exactly the audio it was
given, so the answer's audio is the byte-exact record of what the provider heard."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator

import pytest
from harness import EventReader, RunningServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxrelay.client import VoxrelayClient

_PCM = {"content-type": "application/octet-stream"}


@st.composite
def cut_audio(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Up to 0.1 s of 24 kHz audio (at least one whole sample, so the turn is not
    empty), cut at arbitrary offsets; an odd total leaves a half sample at the end."""
    audio = draw(st.binary(min_size=2, max_size=4800))
    offsets = draw(st.lists(st.integers(0, len(audio)), max_size=8))
    bounds = [0, *sorted(offsets), len(audio)]
    return audio, [audio[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.fixture
def token(server: RunningServer) -> str:
    return server.call(server.token())


async def _chunked(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
        await asyncio.sleep(0)  # each piece its own write, so its own HTTP chunk


async def _upload(
    client: VoxrelayClient, conversation_id: str, pieces: list[bytes], numbered: bool
) -> None:
    if numbered:
        for seq, piece in enumerate(pieces):
            response = await client.http.post(
                "/realtime/upload",
                params={"conversationId": conversation_id, "seq": seq},
                content=piece,
                headers=_PCM,
            )
            assert response.status_code == 200, response.text
            assert response.json()["bytesReceived"] == len(piece)
        return
    response = await client.http.post(
        "/realtime/upload",
        params={"conversationId": conversation_id},
        content=_chunked(pieces),
        headers=_PCM,
    )
    assert response.status_code == 200, response.text
    assert response.json()["bytesReceived"] == sum(map(len, pieces))


# One server for every example (each uses a conversation of its own).
@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=cut_audio(), numbered=st.booleans())
async def test_uploaded_audio_reaches_the_provider_whole_and_in_order(
    server: RunningServer, token: str, cut: tuple[bytes, list[bytes]], numbered: bool
) -> None:
    audio, pieces = cut
    async with VoxrelayClient(server.url, token) as client:
        reader = EventReader(client.events(turnDetection="manual"))
        try:
            started = await reader.wait_for("conversation_started")
            conversation_id = started.data["conversationId"]
            assert started.data["inputSampleRate"] == started.data["outputSampleRate"] == 24000
            await _upload(client, conversation_id, pieces, numbered)
            await client.commit(conversation_id)
            response = await reader.wait_for("response_started")
            response_id = response.data["responseId"]
            await reader.wait_for("response_done")
            heard = b"".join(
                base64.b64decode(e.data["audio"])
                for e in reader.of_type("audio")
                if e.data["responseId"] == response_id
            )
            # Every whole sample, in order; a trailing half sample still waits.
            assert heard == audio[: len(audio) & ~1]
            await client.end(conversation_id)
        finally:
            await reader.close()
