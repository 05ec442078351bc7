"""Whole WebSocket messages from picows frames, fragmented or not."""

from __future__ import annotations

from picows import WSMsgType
from picows.picows import _make_test_ws_frame

from voxrelay.ws_messages import WholeMessages


def frame(kind: WSMsgType, payload: bytes, *, fin: bool = True) -> object:
    return _make_test_ws_frame(kind, payload, fin, False)


def test_a_message_in_one_frame_comes_at_once() -> None:
    messages = WholeMessages()
    assert messages.add(frame(WSMsgType.TEXT, b'{"a":1}')) == b'{"a":1}'  # type: ignore[arg-type]
    assert messages.add(frame(WSMsgType.BINARY, b"\x00\x01")) == b"\x00\x01"  # type: ignore[arg-type]


def test_a_fragmented_message_comes_whole_with_its_last_frame() -> None:
    messages = WholeMessages()
    parts = [
        frame(WSMsgType.TEXT, b'{"type":', fin=False),
        frame(WSMsgType.CONTINUATION, b'"x",', fin=False),
        frame(WSMsgType.PING, b""),  # control frames may come between fragments
        frame(WSMsgType.CONTINUATION, b'"y":2}'),
    ]
    got = [messages.add(part) for part in parts]  # type: ignore[arg-type]
    assert got == [None, None, None, b'{"type":"x","y":2}']
    # And the next message starts afresh.
    assert messages.add(frame(WSMsgType.TEXT, b"next")) == b"next"  # type: ignore[arg-type]


def test_a_continuation_without_a_start_is_dropped() -> None:
    messages = WholeMessages()
    assert messages.add(frame(WSMsgType.CONTINUATION, b"stray")) is None  # type: ignore[arg-type]
    assert messages.add(frame(WSMsgType.CLOSE, b"\x03\xe8")) is None  # type: ignore[arg-type]
