"""Framed messages between two processes, over a stream (a Unix socket between
workers) or as whole messages (Redis between nodes).

Frames: ``!II`` (length of what follows, length of the header), a JSON header,
then raw bytes (audio, or packed log events). Frames sent in one turn of the
event loop leave in one write. Core errors travel as their class name and message.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import orjson

from voxrelay.exceptions import BY_NAME, VoxrelayError

log = logging.getLogger(__name__)

_FRAME = struct.Struct("!II")
# One log event: id, time, type length, JSON length; then the type and the JSON.
_EVENT = struct.Struct("!IdHI")
_MAX_FRAME = 64 << 20

Header = dict[str, Any]


class Send(Protocol):
    """Where a frame goes: a stream's ``Channel.send``, or a message to a member."""

    def __call__(self, header: Header, payload: bytes = b"") -> None: ...


def frame(header: Header, payload: bytes = b"") -> bytes:
    head = orjson.dumps(header)
    return _FRAME.pack(len(head) + len(payload), len(head)) + head + payload


def read_frames(buffer: bytearray | bytes) -> tuple[list[tuple[Header, bytes]], int]:
    """The whole frames at the start of ``buffer`` and how many bytes they took;
    ``ValueError`` for a frame no peer of ours would send."""
    frames: list[tuple[Header, bytes]] = []
    offset = 0
    while len(buffer) - offset >= _FRAME.size:
        size, header_size = _FRAME.unpack_from(buffer, offset)
        if size > _MAX_FRAME or header_size > size:
            raise ValueError("malformed frame")
        start = offset + _FRAME.size
        if len(buffer) - start < size:
            break
        header = orjson.loads(memoryview(buffer)[start : start + header_size])
        frames.append((header, bytes(buffer[start + header_size : start + size])))
        offset = start + size
    return frames, offset


class Channel(asyncio.Protocol):
    """Framed messages both ways on one stream connection."""

    def __init__(self) -> None:
        self._on_frame: Callable[[Header, bytes], None] = lambda header, payload: None
        self._on_lost: Callable[[], None] = lambda: None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def deliver_to(
        self, on_frame: Callable[[Header, bytes], None], on_lost: Callable[[], None]
    ) -> None:
        """Where what arrives goes, and who hears that the connection is gone."""
        self._on_frame, self._on_lost = on_frame, on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            frames, used = read_frames(buffer)
        except ValueError:
            log.error("closing a link that sent a malformed frame")
            self.close()
            return
        if used:
            del buffer[:used]
        for header, payload in frames:
            try:
                self._on_frame(header, payload)
            except Exception:
                log.exception("handling a frame from another process failed")

    def send(self, header: Header, payload: bytes = b"") -> None:
        if self.closed:
            return
        self._out.append(frame(header, payload))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost()


def pack_events(entries: list[tuple[int, str, float, bytes]]) -> bytes:
    parts: list[bytes] = []
    for event_id, kind, at, json in entries:
        name = kind.encode()
        parts += (_EVENT.pack(event_id, at, len(name), len(json)), name, json)
    return b"".join(parts)


def unpack_events(payload: bytes) -> Iterator[tuple[int, str, float, bytes]]:
    offset = 0
    while offset < len(payload):
        event_id, at, name_size, json_size = _EVENT.unpack_from(payload, offset)
        offset += _EVENT.size
        kind = payload[offset : offset + name_size].decode()
        offset += name_size
        yield event_id, kind, at, payload[offset : offset + json_size]
        offset += json_size


def error_header(error: VoxrelayError) -> Header:
    return {"kind": type(error).__name__, "message": error.message}


def error_from(header: Header) -> VoxrelayError:
    """The core error a sibling reported, as the same class here."""
    kind = BY_NAME.get(str(header.get("kind")), VoxrelayError)
    error = kind.__new__(kind)
    VoxrelayError.__init__(error, str(header.get("message", "")))
    return error
