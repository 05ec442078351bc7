"""Engine.IO frames checked before python-engineio decodes them.

python-engineio lets the decoding error of a garbled frame escape (a traceback; on
a websocket, a socket left half-open), and answers a long-polling POST to a
socket it is closing with a 500. Here, on a websocket, a frame it could not
decode, or one over ``socketio_max_payload_bytes``, is dropped with an ``error``
event and the socket goes on. A long-polling body that is too large (413) or
garbled (400) is refused with a JSON error and closes the socket, as a client
whose POST failed gives its transport up anyway; a request for a session that
is closed, closing or unknown answers 400.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qs

import orjson
import socketio
from engineio.payload import Payload
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxrelay.errors import error_body
from voxrelay.transports.socketio.inbound import close, tell

_DIGITS = frozenset("0123456789")
Problem = tuple[str, str]


def frame_problem(data: str | bytes, limit: int) -> Problem | None:
    """Why this Engine.IO packet is refused (``code``, ``message``), or None."""
    if len(data) > limit:
        return "payload_too_large", f"a packet must be at most {limit} bytes"
    if isinstance(data, bytes):
        return None
    if not data:
        return "invalid_request", "an empty Engine.IO packet"
    if data[0] == "b":
        try:
            base64.b64decode(data[1:])
        except (binascii.Error, ValueError):
            return "invalid_request", "a binary Engine.IO packet that is not base64"
    elif data[0] not in _DIGITS:
        return "invalid_request", "not an Engine.IO packet"
    return None


def check_websocket_frames(sio: socketio.AsyncServer, limit: int) -> None:
    """Refuse, one by one, the websocket frames python-engineio could not take."""
    eio = sio.eio
    base = eio._async["websocket"]

    class CheckedWebSocket(base):  # type: ignore[misc,valid-type]
        async def wait(self) -> Any:
            while True:
                data = await super().wait()
                problem = frame_problem(data, limit) if data is not None else None
                if problem is None:
                    return data
                # The Engine.IO socket this websocket serves.
                eio_sid = getattr(getattr(self.handler, "__self__", None), "sid", None)
                if eio_sid is None or not await tell(sio, eio_sid, *problem):
                    # Nothing to answer on: python-engineio closes the socket.
                    raise OSError(problem[1])

    # python-engineio picks the websocket class of its async mode from here; a copy,
    # as the mode's table is shared by every server of the process.
    eio._async = {**eio._async, "websocket": CheckedWebSocket}


def _payload_problem(body: bytes, limit: int) -> Problem | None:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return "invalid_request", "a long-polling body that is not UTF-8"
    if text.startswith("d="):  # the JSONP form
        given = parse_qs(text).get("d")
        if not given:
            return "invalid_request", "a JSONP body without its d field"
        text = given[0]
    if not text:
        return None
    packets = text.split("\x1e")
    if len(packets) > Payload.max_decode_packets:
        return "invalid_request", f"at most {Payload.max_decode_packets} packets in one body"
    for packet in packets:
        problem = frame_problem(packet, limit)
        if problem is not None:
            return problem
    return None


def guard_polling(app: ASGIApp, sio: socketio.AsyncServer, limit: int) -> ASGIApp:
    """``app`` (python-socketio's), with long-polling requests checked first: the
    session they name, and the body of a POST."""
    sockets: dict[str, Any] = sio.eio.sockets

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        sids = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("sid")
        if scope["type"] != "http" or method not in ("GET", "POST") or not sids:
            await app(scope, receive, send)
            return
        socket = sockets.get(sids[0])
        # python-engineio answers these too, but logs a client's stale sid as an
        # error, and answers a POST to a socket it is closing with a 500.
        if socket is None or socket.closed or (method == "POST" and socket.closing):
            message = "no such Engine.IO session (closed, or never opened); connect again"
            await _answer(send, 400, "invalid_request", message)
            return
        length = _content_length(scope)
        if method == "GET" or length is None:
            # python-engineio ignores a body of no length.
            await app(scope, receive, send)
            return
        if length > limit:
            await _refuse(
                sio,
                socket.sid,
                send,
                413,
                ("payload_too_large", f"a body must be at most {limit} bytes"),
            )
            return
        body = await _body(receive)
        if body is None:
            return  # the client went away in the middle of its body
        problem = _payload_problem(body, limit)
        if problem is not None:
            await _refuse(sio, socket.sid, send, 400, problem)
            return
        await app(scope, _replay(body, receive), send)

    return guarded


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(
    sio: socketio.AsyncServer, eio_sid: str, send: Send, status: int, problem: Problem
) -> None:
    # A long poll waiting for this socket carries the error, then Engine.IO's close;
    # a client with none waiting learns it from the status alone.
    await tell(sio, eio_sid, *problem)
    await close(sio, eio_sid)
    await _answer(send, status, *problem)


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps(error_body(code, message))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
