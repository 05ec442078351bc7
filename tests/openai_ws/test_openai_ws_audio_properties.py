"""`input_audio_buffer.append` with any byte count, odd ones included, on
``/v1/realtime``: never an error, and the audio is heard as one contiguous stream.

Where the server speaks the protocol itself (``echo``), a half sample at a border waits
for the next append, like every other transport. In pass-through mode the appends go
upstream as the client sent them (the upstream keeps its own input buffer), so the
upstream's buffer holds exactly the client's bytes, odd ones included."""

from __future__ import annotations

import base64
import itertools
from typing import Any

from fakes.openai_realtime import FakeRealtimeServer
from harness import RunningServer, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realtime_ws_client import connect

_MANUAL = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}


@st.composite
def cut_audio(draw: st.DrawFn, min_size: int) -> tuple[bytes, list[bytes]]:
    audio = draw(st.binary(min_size=min_size, max_size=min_size + 2401))
    offsets = draw(st.lists(st.integers(0, len(audio)), max_size=8))
    bounds = [0, *sorted(offsets), len(audio)]
    return audio, [audio[a:b] for a, b in itertools.pairwise(bounds)]


async def _append(conversation: Any, pieces: list[bytes]) -> None:
    for piece in pieces:
        await conversation.conn.input_audio_buffer.append(
            audio=base64.b64encode(piece).decode("ascii")
        )


# One server for every example (each on a connection, so a conversation, of its own).
# 4800 bytes at least: the 100 ms that a commit needs.
@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=cut_audio(min_size=4800))
async def test_odd_appends_are_heard_whole_by_a_server_speaking_the_protocol(
    server: RunningServer, cut: tuple[bytes, list[bytes]]
) -> None:
    audio, pieces = cut
    async with connect(server, server.call(server.token())) as conversation:
        await conversation.until("session.created")
        await conversation.conn.session.update(session=_MANUAL)
        await conversation.until("session.updated")
        await _append(conversation, pieces)
        await conversation.conn.input_audio_buffer.commit()
        events = await conversation.until("response.done")
    assert [e for e in events if e["type"] == "error"] == []
    assert events[-1]["response"]["status"] == "completed"
    heard = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert heard == audio[: len(audio) & ~1]
    assert conversation.problems == []


@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=cut_audio(min_size=1))
async def test_odd_appends_reach_a_pass_through_upstream_byte_for_byte(
    relay: RunningServer, fake: FakeRealtimeServer, cut: tuple[bytes, list[bytes]]
) -> None:
    audio, pieces = cut
    async with connect(relay, relay.call(relay.token())) as conversation:
        await conversation.until("session.created")
        await _append(conversation, pieces)
        await wait_until(lambda: len(fake.audio_received()) >= len(audio), seconds=5)
        assert fake.audio_received() == audio
        # Answered in order after the appends: any error they caused has arrived by now.
        await conversation.conn.input_audio_buffer.clear()
        events = await conversation.until("input_audio_buffer.cleared")
    assert [e for e in events if e["type"] == "error"] == []
    assert conversation.problems == []
