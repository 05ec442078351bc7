"""Binary events as clients stream audio with them: the placeholder packet and one
attachment, the same text every chunk. That text is parsed once (``inbound``'s
``_Streamed``); every other binary packet goes through python-socketio's own
parsing. Both end in the same event handler with the same arguments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from harness import RunningServer
from prometheus_client import REGISTRY
from raw import NS, PLACEHOLDER, RawSocket

STREAMED = f'451-{NS},["audio-chunk",{json.dumps(PLACEHOLDER)}]'


def _audio_in() -> float:
    value = REGISTRY.get_sample_value(
        "voxrelay_audio_bytes_total", {"direction": "in", "transport": "socketio"}
    )
    return value or 0.0


@pytest.fixture
def binary_heads_parsed(server: RunningServer) -> AsyncIterator[list[str]]:
    """Every binary packet head python-socketio's packet class parses from now on (the
    Socket.IO packet: its Engine.IO message less the leading ``4``)."""
    sio = server.app.state.socketio
    plain = sio.packet_class
    parsed: list[str] = []

    class Counting(plain):  # type: ignore[misc,valid-type]
        def decode(self, encoded_packet: Any) -> Any:
            if isinstance(encoded_packet, str) and encoded_packet[:1] in ("5", "6"):
                parsed.append(encoded_packet)
            return super().decode(encoded_packet)

    sio.packet_class = Counting
    yield parsed
    sio.packet_class = plain


async def test_streamed_chunks_are_parsed_once_and_every_byte_is_taken(
    raw: Callable[[], Any], binary_heads_parsed: list[str]
) -> None:
    sock: RawSocket = await raw()
    before = _audio_in()
    sizes = [2 * n for n in range(1, 101)]
    for size in sizes:
        await sock.send(STREAMED)
        await sock.send(b"\1\0" * (size // 2))
    # An ack'd chunk after them: its answer comes once those before it were taken.
    await sock.send(f'451-{NS},9["audio-chunk",{json.dumps(PLACEHOLDER)}]')
    await sock.send(b"\0\0" * 160)
    await sock._read_until(lambda: 9 in sock.inbox.acks, 10)
    assert sock.inbox.acks[9] == [{"ok": True, "bytesReceived": 320}]
    assert _audio_in() - before == sum(sizes) + 320
    assert sock.inbox.of("error") == []
    # A hundred identical heads parsed once; the one with an ack id on its own.
    assert binary_heads_parsed.count(STREAMED[1:]) <= 1
    assert len(binary_heads_parsed) <= 2


async def test_other_binary_events_are_parsed_by_python_socketio_and_answered(
    raw: Callable[[], Any], binary_heads_parsed: list[str]
) -> None:
    sock: RawSocket = await raw()
    # Binary audio inside an object, with its rate, and an ack.
    head = ["audio-chunk", {"audio": PLACEHOLDER, "sampleRate": 24000}]
    await sock.send(f"451-{NS},3{json.dumps(head)}")
    await sock.send(b"\0\0" * 240)
    await sock._read_until(lambda: 3 in sock.inbox.acks, 10)
    assert sock.inbox.acks[3] == [{"ok": True, "bytesReceived": 480}]
    # The streamed shape under a name no handler has: unknown, each time.
    unknown = f'451-{NS},["no-such-event",{json.dumps(PLACEHOLDER)}]'
    for _ in range(2):
        await sock.send(unknown)
        await sock.send(b"\0\0")
    await sock._read_until(lambda: len(sock.inbox.of("error")) >= 2, 10)
    errors = sock.inbox.of("error")
    assert [(e["code"], e["event"]) for e in errors] == [
        ("invalid_request", "no-such-event"),
        ("invalid_request", "no-such-event"),
    ]
    assert binary_heads_parsed.count(unknown[1:]) <= 1
    assert f"51-{NS},3{json.dumps(head)}" in binary_heads_parsed


async def test_a_long_streamed_packet_is_parsed_each_time_not_remembered(
    raw: Callable[[], Any], binary_heads_parsed: list[str]
) -> None:
    sock: RawSocket = await raw()
    # The shape of a streamed chunk under a name far longer than any client's: what
    # is remembered stays small whatever the payload limit lets through.
    long = f'451-{NS},["{"x" * 2000}",{json.dumps(PLACEHOLDER)}]'
    for _ in range(3):
        await sock.send(long)
        await sock.send(b"\0\0")
    await sock._read_until(lambda: len(sock.inbox.of("error")) >= 3, 10)
    assert [e["code"] for e in sock.inbox.of("error")] == ["invalid_request"] * 3
    assert binary_heads_parsed.count(long[1:]) == 3


async def test_a_placeholder_python_socketio_refuses_is_refused_in_the_streamed_shape_too(
    raw: Callable[[], Any],
) -> None:
    sock: RawSocket = await raw()
    # ``num`` as a float: python-socketio cannot index the attachments with it.
    await sock.send(f'451-{NS},["audio-chunk",{{"_placeholder":true,"num":0.0}}]')
    await sock.send(b"\0\0")
    await sock._read_until(lambda: len(sock.inbox.of("error")) >= 1, 10)
    assert [e["code"] for e in sock.inbox.of("error")] == ["invalid_request"]
    # The socket goes on: the usual chunk is taken.
    await sock.send(f'451-{NS},5["audio-chunk",{json.dumps(PLACEHOLDER)}]')
    await sock.send(b"\0\0")
    await sock._read_until(lambda: 5 in sock.inbox.acks, 10)
    assert sock.inbox.acks[5] == [{"ok": True, "bytesReceived": 2}]
