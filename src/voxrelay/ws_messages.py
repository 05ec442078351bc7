"""Whole WebSocket messages out of picows frames.

picows hands its listener each frame as it arrives, and a message may come
split into a first frame and continuations. Every picows listener here (the
upstream link, the benchmark's clients and upstream) gathers them the same way.
"""

from __future__ import annotations

from picows import WSFrame, WSMsgType

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


class WholeMessages:
    """Feed it every frame; it answers with a message once the message is whole."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] | None = None

    def add(self, frame: WSFrame) -> bytes | None:
        """The message this data frame completes; None for a frame that does not
        end one (or that is not a data frame: close, ping, pong)."""
        kind = frame.msg_type
        if kind in _DATA:
            if frame.fin:
                return frame.get_payload_as_bytes()
            self._parts = [frame.get_payload_as_bytes()]
        elif kind is WSMsgType.CONTINUATION and self._parts is not None:
            self._parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                parts, self._parts = self._parts, None
                return b"".join(parts)
        return None
