"""A bound on what waits to be sent to one socket.

python-engineio queues every packet for a socket in an unbounded queue, which its
writer empties as fast as the client reads. A client that stops reading (gone
without closing, a stalled link) would grow it by every answer of the session.
Past ``socketio_max_queued_events`` waiting messages the socket is dropped: it
gets ``error`` ``slow_consumer`` first (if it ever reads again), then Engine.IO's
close, as any lost transport; the session outlives it by the grace period, so
the client can come back and join it again. Other sockets are not affected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import engineio
import socketio
from engineio import packet as eio_packet

from voxrelay import metrics
from voxrelay.transports.socketio.packets import NAMESPACE, error_packet

log = logging.getLogger(__name__)

_SLOW = "the client did not read what was sent to it; it may connect and join again"


class _Outbox(asyncio.Queue[Any]):
    """One socket's packets to send. Messages past ``limit`` waiting mean the client
    has stopped reading: ``on_full`` is told once, and later messages are not kept.
    Control packets (ping, close, the writer's stop) always pass, or the socket
    could not be closed."""

    def __init__(self, limit: int, on_full: Callable[[_Outbox], None]) -> None:
        super().__init__()
        self._limit = limit
        self._on_full = on_full
        self.overflowed = False

    def put_nowait(self, item: Any) -> None:
        if isinstance(item, eio_packet.Packet) and item.packet_type == eio_packet.MESSAGE:
            if self.overflowed:
                return
            if self.qsize() >= self._limit:
                self.overflowed = True
                self._on_full(self)
                return
        super().put_nowait(item)

    def last_word(self, item: Any) -> None:
        """Queue ``item`` past the bound (the one ``error`` a dropped socket gets)."""
        super().put_nowait(item)


def bound_outboxes(sio: socketio.AsyncServer, limit: int) -> None:
    """Give every Engine.IO socket of ``sio`` a queue of at most ``limit`` messages."""
    eio: engineio.AsyncServer = sio.eio
    closing: set[asyncio.Task[None]] = set()

    def on_full(outbox: _Outbox) -> None:
        socket = next((s for s in eio.sockets.values() if s.queue is outbox), None)
        if socket is None:
            return
        sid = sio.manager.sid_from_eio_sid(socket.sid, NAMESPACE)
        log.warning(
            "socket.io client too slow (%d packets unsent); dropping it",
            limit,
            extra={"transport": "socketio", "client": sid or socket.sid},
        )
        metrics.SLOW_CLIENT_DROPS.labels(transport="socketio").inc()
        if sid is not None:
            error = error_packet("slow_consumer", _SLOW)
            outbox.last_word(eio_packet.Packet(eio_packet.MESSAGE, error))
        # Not waiting for the queue to drain: it will not.
        task = asyncio.ensure_future(
            socket.close(wait=False, abort=False, reason=eio.reason.SERVER_DISCONNECT)
        )
        closing.add(task)
        task.add_done_callback(closing.discard)

    def create_queue(*args: Any, **kwargs: Any) -> _Outbox:
        return _Outbox(limit, on_full)

    # python-engineio's own hook for the queue of each socket.
    eio.create_queue = create_queue
