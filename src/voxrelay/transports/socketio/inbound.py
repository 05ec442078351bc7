"""Client packets checked before python-socketio takes them.

python-socketio raises on a packet it cannot parse (bad JSON, an unknown type, a
message Engine.IO decoded as JSON), which python-engineio logs with a traceback.
And a binary packet waits for the attachments it announces, taking every later
message as one: one that never gets them leaves the socket deaf. Here such a
packet is refused with ``error`` (``invalid_request``, or ``payload_too_large``
for attachments past the payload limit) and the socket goes on: a binary packet
is handed on only once all its attachments are in, and a text packet arriving
before they are drops it.

A complete binary packet, parsed here already, goes straight to python-socketio's
event (or ack) dispatch, for the python-socketio versions this was checked
against (``CHECKED_SOCKETIO_VERSIONS``): handing it the packet's frames again
would parse them a second time. Other versions get the frames again. The packet
a client streams audio with, a binary event with no ack id whose data is its
name and one attachment (``451-/realtime,["audio-chunk",{"_placeholder":true,"num":0}]``,
the same text every 20 ms), is parsed once per distinct text (``_Streamed``): its
attachment then goes to the dispatch as the event's argument, as python-socketio
would put it in.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from socketio import packet as sio_packet

from voxrelay.transports.socketio.packets import NAMESPACE

log = logging.getLogger(__name__)

_MALFORMED = "not a valid Socket.IO packet"
CHECKED_SOCKETIO_VERSIONS = frozenset({"5.18.1"})
SOCKETIO_VERSION = importlib.metadata.version("python-socketio")

_INCOMPLETE = "a binary packet's attachments did not all arrive before the next packet; dropped"


# Distinct texts of streamed binary events remembered (a client sends one text), and
# the longest remembered: a client's event name is short, and a long one must not
# make the memory of 64 packets as long as the payload limit allows.
_MAX_STREAMED = 64
_MAX_STREAMED_TEXT = 256
_PLACEHOLDER = {"_placeholder": True, "num": 0}


@dataclass(eq=False)
class _Pending:
    """A binary packet waiting for its attachments."""

    head: str
    packet: sio_packet.Packet | _Streamed  # a ``_Streamed`` one: parsed once, before
    size: int
    parts: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Streamed:
    """A binary event with no ack id whose data is ``[name, <one attachment>]``."""

    namespace: str | None
    name: str

    @classmethod
    def of(cls, packet: sio_packet.Packet) -> _Streamed | None:
        data = packet.data
        if (
            packet.packet_type == sio_packet.BINARY_EVENT
            and packet.id is None
            and packet.attachment_count == 1
            and isinstance(data, list)
            and len(data) == 2
            and isinstance(data[0], str)
            and _is_first_placeholder(data[1])
        ):
            return cls(packet.namespace, data[0])
        return None


def _is_first_placeholder(value: Any) -> bool:
    """Exactly ``{"_placeholder": true, "num": 0}``; anything else (``"num": 0.0``, which
    python-socketio refuses, say) is left to python-socketio's own parsing."""
    return value == _PLACEHOLDER and value["_placeholder"] is True and type(value["num"]) is int


async def tell(sio: socketio.AsyncServer, eio_sid: str, code: str, message: str) -> bool:
    """Emit ``error`` to the socket's ``/realtime`` connection; False if it has none
    (the caller closes the socket instead)."""
    log.info(
        "socket.io packet refused: %s", message, extra={"transport": "socketio", "client": eio_sid}
    )
    sid = sio.manager.sid_from_eio_sid(eio_sid, NAMESPACE)
    if sid is None or not sio.manager.is_connected(sid, NAMESPACE):
        return False
    await sio.emit("error", {"code": code, "message": message}, to=sid, namespace=NAMESPACE)
    return True


async def close(sio: socketio.AsyncServer, eio_sid: str) -> None:
    """Close the Engine.IO socket without waiting for its queue to drain."""
    socket = sio.eio.sockets.get(eio_sid)
    if socket is not None and not socket.closing and not socket.closed:
        await socket.close(wait=False, abort=False, reason=sio.eio.reason.SERVER_DISCONNECT)


def guard_messages(sio: socketio.AsyncServer, max_payload_bytes: int) -> None:
    """Check each client message before python-socketio's handler sees it."""
    eio = sio.eio
    handle: Callable[[str, Any], Awaitable[None]] = eio.handlers["message"]
    handle_disconnect = eio.handlers["disconnect"]
    pending: dict[str, _Pending] = {}
    dispatch_parsed = SOCKETIO_VERSION in CHECKED_SOCKETIO_VERSIONS
    streamed: dict[str, _Streamed] = {}

    async def refuse(eio_sid: str, code: str, message: str) -> None:
        if not await tell(sio, eio_sid, code, message):
            await close(sio, eio_sid)

    async def hand_on(eio_sid: str, *messages: Any) -> None:
        try:
            for message in messages:
                await handle(eio_sid, message)
        except Exception as error:
            # python-socketio could not parse or dispatch it: the client's packet.
            log.debug("socket.io packet not understood: %s: %s", type(error).__name__, error)
            await refuse(eio_sid, "invalid_request", _MALFORMED)

    async def announce(eio_sid: str, data: str) -> None:
        known = streamed.get(data)
        if known is not None:
            pending[eio_sid] = _Pending(data, known, len(data))
            return
        try:
            head = sio.packet_class(encoded_packet=data)
        except Exception:
            await refuse(eio_sid, "invalid_request", _MALFORMED)
            return
        if head.attachment_count < 1:
            await refuse(
                eio_sid, "invalid_request", "a binary packet must announce its attachments"
            )
            return
        kind = _Streamed.of(head) if dispatch_parsed else None
        if kind is not None and len(data) <= _MAX_STREAMED_TEXT:
            if len(streamed) >= _MAX_STREAMED:
                streamed.clear()
            streamed[data] = kind
        pending[eio_sid] = _Pending(data, kind or head, len(data))

    async def attachment(eio_sid: str, data: bytes) -> None:
        waiting = pending.get(eio_sid)
        if waiting is None:
            await refuse(eio_sid, "invalid_request", "a binary attachment no packet announced")
            return
        waiting.size += len(data)
        if waiting.size > max_payload_bytes:
            del pending[eio_sid]
            message = f"a packet with its attachments must be at most {max_payload_bytes} bytes"
            await refuse(eio_sid, "payload_too_large", message)
            return
        packet = waiting.packet
        if isinstance(packet, _Streamed):
            del pending[eio_sid]
            await dispatch(eio_sid, packet.namespace, None, [packet.name, data])
            return
        waiting.parts.append(data)
        if len(waiting.parts) < packet.attachment_count:
            return
        del pending[eio_sid]
        try:
            # python-socketio would stay waiting if these failed it half-way.
            for part in waiting.parts:
                packet.add_attachment(part)
        except Exception:
            await refuse(eio_sid, "invalid_request", _MALFORMED)
            return
        if dispatch_parsed:
            event = packet.packet_type == sio_packet.BINARY_EVENT
            await dispatch(eio_sid, packet.namespace, packet.id, packet.data, event=event)
        else:
            await hand_on(eio_sid, waiting.head, *waiting.parts)

    async def dispatch(
        eio_sid: str, namespace: str | None, id: int | None, data: Any, *, event: bool = True
    ) -> None:
        """What python-socketio does with a binary event (or ack) once complete."""
        try:
            if not sio.manager.sid_from_eio_sid(eio_sid, namespace or "/"):
                raise ValueError("Unexpected binary packet")
            if event:
                await sio._handle_event(eio_sid, namespace, id, data)
            else:
                await sio._handle_ack(eio_sid, namespace, id, data)
        except Exception as error:
            log.debug("socket.io packet not understood: %s: %s", type(error).__name__, error)
            await refuse(eio_sid, "invalid_request", _MALFORMED)

    async def on_message(eio_sid: str, data: Any) -> None:
        if isinstance(data, bytes):
            await attachment(eio_sid, data)
            return
        if pending.pop(eio_sid, None) is not None:
            await refuse(eio_sid, "invalid_request", _INCOMPLETE)
        if not isinstance(data, str):
            # Engine.IO took the message for JSON: no Socket.IO packet looks like that.
            await refuse(eio_sid, "invalid_request", _MALFORMED)
        elif data[:1] in ("5", "6"):
            await announce(eio_sid, data)
        else:
            await hand_on(eio_sid, data)

    async def on_disconnect(eio_sid: str, reason: Any = None) -> None:
        pending.pop(eio_sid, None)
        await handle_disconnect(eio_sid, reason)

    eio.on("message", on_message)
    eio.on("disconnect", on_disconnect)
