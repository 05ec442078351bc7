"""uvicorn's own protocols with two changes: a deadline for the request head, and
JSON for the answers uvicorn and the WebSocket library write themselves.

uvicorn waits for a request head as long as a client takes to send it: a client
trickling one header byte at a time holds its connection (and a file
descriptor) for ever, and a thousand such clients hold a thousand. Its only
timer, ``timeout_keep_alive``, runs between requests and stops at the first
byte of the next one. Here a connection gets ``head_timeout`` seconds from its
opening (or from the first byte of each further request) to finish the head,
else it is closed: with a 408 when part of a head had come, silently when
nothing had (a browser's speculative connection).

The answers written below the application, for a request that never reaches
it, are JSON like every other error (``{"error": {"code", "message"}}``): an
unparsable request (400) and a refused WebSocket handshake (a bad
``Sec-WebSocket-Version``, a socket the application closed before accepting it,
a failure before the handshake).
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.http11 import Request, Response

from voxrelay.errors import code_for, error_body

# The scope extension under which an accepted WebSocket offers ``send_now``.
SEND_NOW = "voxrelay.websocket.send_now"
SendNow = Callable[[str | bytes], bool]


def send_now_of(scope: Mapping[str, Any]) -> SendNow | None:
    """A WebSocket's synchronous send (``JsonRefusalsWebSocketProtocol.send_now``),
    where the server running the app offers one."""
    send_now: SendNow | None = scope.get("extensions", {}).get(SEND_NOW)
    return send_now


def _json_error(status: int, message: str) -> bytes:
    return orjson.dumps(error_body(code_for(status), message))


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for each request head."""

    # Set on a subclass made for each server (``http_protocol``); 0: no deadline.
    head_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_begun = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Before uvicorn's own: a connection handed over from another worker comes
        # with bytes that may complete its head at once.
        self._await_head()
        super().connection_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            # Bytes between requests begin the next head (uvicorn may not parse them
            # yet: the worker hand-off reads the request line first).
            self._await_head()
            self._head_begun = True
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._await_head()  # a pipelined request's head is timed too
        self._head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        body = _json_error(400, "the request is not valid HTTP/1.1")
        self._write_and_close(400, body)

    def _await_head(self) -> None:
        if self._head_timer is None and self.head_timeout > 0:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_begun = False

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            message = f"the request head did not arrive within {self.head_timeout:g} s"
            self._write_and_close(408, _json_error(408, message))
        else:
            self.transport.close()

    def _write_and_close(self, status: int, body: bytes) -> None:
        content = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.append(b"content-type: application/json\r\n")
        content.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        content.append(body)
        self.transport.write(b"".join(content))
        self.transport.close()


def http_protocol(
    head_timeout: float, *bases: type[HttpToolsProtocol]
) -> type[GuardedHttpProtocol]:
    """The HTTP protocol class of one server: ``head_timeout`` seconds for each head,
    over ``bases`` (uvicorn's own protocol when none is given)."""
    return type(
        "VoxrelayHttpProtocol", (GuardedHttpProtocol, *bases), {"head_timeout": head_timeout}
    )


class JsonRefusalsWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol whose refused handshakes answer JSON, and which
    offers the application a synchronous send (scope extension ``SEND_NOW``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain = self.conn.reject

        def reject(status: http.HTTPStatus | int, text: str) -> Response:
            response = plain(status, text)
            message = text.strip() or http.HTTPStatus(response.status_code).phrase
            body = _json_error(response.status_code, message)
            headers = Headers(
                (name, value)
                for name, value in response.headers.raw_items()
                if name.lower() not in ("content-type", "content-length")
            )
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(body))
            return Response(response.status_code, response.reason_phrase, headers, body)

        # Every refusal of the library's (a bad handshake) and uvicorn's (403, 500)
        # is made here.
        self.conn.reject = reject  # type: ignore[method-assign]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # else the handshake was refused
            scope["extensions"][SEND_NOW] = self.send_now

    def send_now(self, data: str | bytes) -> bool:
        """Write a text frame (a binary one for bytes) now, as ``send`` of ``websocket.send``
        does but without a coroutine: a server sending a frame per 20 ms of audio saves a
        task step per frame. False when the socket cannot take it at once (writing paused,
        not open yet, closing): the caller then sends it the usual way, which waits or
        raises."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
        ):
            return False
        try:
            if isinstance(data, str):
                self.conn.send_text(data.encode())
            else:
                self.conn.send_binary(data)
        except InvalidState:
            return False
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # uvicorn's protocol does not count a refusal the app answered itself as
            # the end of the handshake, and logs an error when the app returns.
            self.handshake_complete = True
