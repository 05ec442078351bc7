"""The Socket.IO server on the app's own port: python-socketio set up for audio
(orjson packets, events applied in order, long polls released at once) with the
``/realtime`` namespace mounted."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import socketio
from engineio.payload import Payload
from fastapi import FastAPI
from starlette.types import ASGIApp

from voxrelay.config import Settings
from voxrelay.origins import Origins
from voxrelay.transports.socketio import fast_websocket as fast_websocket_transport
from voxrelay.transports.socketio.framing import check_websocket_frames, guard_polling
from voxrelay.transports.socketio.inbound import guard_messages
from voxrelay.transports.socketio.namespace import MAX_PACKETS_PER_POLL, RealtimeNamespace
from voxrelay.transports.socketio.outbox import bound_outboxes
from voxrelay.transports.socketio.packets import NAMESPACE
from voxrelay.workers.ownership import SINGLE, Ownership


def _release_long_polls(sio: socketio.AsyncServer) -> None:
    """A client that closes a long-polling connection leaves its pending GET
    waiting in python-engineio until the ping interval and timeout pass (45 s),
    which also holds up a graceful shutdown as long: answer it at once."""
    eio = sio.eio
    handle_disconnect = eio.handlers["disconnect"]

    async def on_disconnect(eio_sid: str, reason: Any = None) -> None:
        await handle_disconnect(eio_sid, reason)
        if reason != eio.reason.CLIENT_DISCONNECT:
            return
        socket = eio.sockets.get(eio_sid)
        if socket is not None and socket.closing and not socket.upgraded:
            socket.queue.put_nowait(None)

    eio.on("disconnect", on_disconnect)


async def close_all(sio: socketio.AsyncServer, patience: float) -> None:
    """Disconnect every client, each given up to ``patience`` seconds to take what
    is queued for it (its session's end) first: a websocket at once, a
    long-polling client with its next GET. The close packet itself is not waited
    for on long-polling: python-engineio refuses every GET once the socket is
    closed, so only one already waiting can take it, and its own close would wait
    for good for a client between two polls, or gone without a word."""
    eio = sio.eio
    reason = eio.reason.SERVER_DISCONNECT

    async def close(socket: Any) -> None:
        if socket.closed:  # by its client: nothing more goes to it
            return
        if socket.upgraded:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(socket.close(reason=reason), patience)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(socket.queue.join(), patience)
        await socket.close(wait=False, reason=reason)

    await asyncio.gather(*(close(socket) for socket in list(eio.sockets.values())))
    eio.sockets.clear()


class _Json:
    """orjson for python-socketio's packets, in the shape of the ``json`` module it
    expects (every audio chunk a client sends is a JSON packet to decode)."""

    @staticmethod
    def dumps(value: Any, **_: Any) -> str:
        return orjson.dumps(value).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)


def create_server(
    settings: Settings, origins: Origins | None = None, *, fast_websocket: bool = True
) -> socketio.AsyncServer:
    """python-socketio set up for audio, with the checks and bounds of this package
    and no namespace yet. ``fast_websocket``: Engine.IO's websocket transport of
    ``fast_websocket`` where it can be used (False: python-engineio's own)."""
    max_payload = settings.socketio_max_payload_bytes
    # The maintainers' advice (python-engineio#142); it is process-wide.
    Payload.max_decode_packets = max(Payload.max_decode_packets, MAX_PACKETS_PER_POLL)
    sio = socketio.AsyncServer(
        async_mode="asgi",
        # One socket's events are applied one after another, in the order sent
        # (audio chunks must not overtake each other), and a busy socket reads
        # no further until the session has taken its request.
        async_handlers=False,
        # Checked before python-engineio sees a packet (``framing``); its own check
        # stays behind that.
        max_http_buffer_size=max_payload,
        namespaces=[NAMESPACE],
        json=_Json,
        # Checked on every request, the WebSocket transport's included; a page not
        # allowed gets 400 (polling) or a refused upgrade.
        cors_allowed_origins=(origins or Origins.parse("")).for_engineio(),
        # Tokens travel in ``auth`` or headers, never cookies.
        cors_credentials=False,
    )
    _release_long_polls(sio)
    guard_messages(sio, max_payload)
    # Engine.IO's websocket transport without a task per frame, when this
    # python-engineio is one it was checked against; else python-engineio's own.
    if not (fast_websocket and fast_websocket_transport.install(sio, max_payload)):
        check_websocket_frames(sio, max_payload)
    bound_outboxes(sio, settings.socketio_max_queued_events)
    return sio


def asgi_app(sio: socketio.AsyncServer, settings: Settings) -> ASGIApp:
    """The ASGI app serving ``sio`` (to mount at ``/socket.io``)."""
    max_payload = settings.socketio_max_payload_bytes
    return guard_polling(socketio.ASGIApp(sio, socketio_path=""), sio, max_payload)


def mount(
    app: FastAPI,
    settings: Settings,
    ownership: Ownership = SINGLE,
    origins: Origins | None = None,
) -> socketio.AsyncServer:
    """Serve Socket.IO at ``/socket.io/`` on the app's own port; returns the server.
    Engine.IO session ids are owned by this worker, so that a long-polling
    client's requests are handed here whichever worker they reach. ``origins``:
    the web pages that may connect (default: the server's own only)."""
    sio = create_server(settings, origins)
    if ownership.count > 1:
        sio.eio.generate_id = lambda: ownership.new_id("")
    RealtimeNamespace(sio, app)
    app.state.socketio = sio
    app.mount("/socket.io", asgi_app(sio, settings))
    return sio
