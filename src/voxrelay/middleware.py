"""ASGI layers around the whole app: a deadline for each wait on a request body,
and JSON for the error answers of parts that write their own.

- ``BodyIdleTimeout``: a request body that sends nothing for ``seconds`` while
  the app waits for it raises ``RequestTimeout`` (408 ``request_timeout``). Only
  waits count: an app busy with what it has read (or reading nothing at all, as
  an event stream) is never timed, so a chunked upload that streams audio in
  real time, however long, is never cut.
- ``JsonErrorBodies``: an error answer that is not JSON (python-engineio's
  plain-text 400s, Starlette's CORS refusal) becomes ``{"error": {"code",
  "message"}}`` with the same status and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
from http import HTTPStatus
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxrelay.errors import code_for, error_body
from voxrelay.exceptions import RequestTimeout

# Longest message kept from a plain-text error body.
_MAX_MESSAGE = 300


class BodyIdleTimeout:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        deadline = _BodyDeadline(receive, self.seconds)
        try:
            await self.app(scope, deadline.receive, send)
        finally:
            deadline.stop()


class _BodyDeadline:
    """One timer for a request (not one per chunk of a long upload, 50 a second): it
    goes off ``seconds`` after the wait that is still going on began, re-armed from
    there when a wait ended and another began meanwhile."""

    __slots__ = (
        "_body_done",
        "_expired",
        "_handle",
        "_loop",
        "_receive",
        "_seconds",
        "_since",
        "_task",
    )

    def __init__(self, receive: Receive, seconds: float) -> None:
        self._receive = receive
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._since: float | None = None  # when the current wait began, while it lasts
        self._task: asyncio.Task[Any] | None = None
        self._expired = False
        self._body_done = False

    async def receive(self) -> Message:
        if self._body_done:
            return await self._receive()  # waiting for a disconnect, not for a body
        self._since = now = self._loop.time()
        self._task = asyncio.current_task()
        if self._handle is None:
            self._handle = self._loop.call_at(now + self._seconds, self._check)
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            task = self._task
            if self._expired and task is not None and task.uncancel() == 0:
                raise RequestTimeout(
                    f"the request body sent nothing for {self._seconds:g} s; send it again"
                ) from None
            raise
        finally:
            self._since = None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_done = True
            self.stop()
        return message

    def _check(self) -> None:
        self._handle = None
        since = self._since
        if since is None:
            return  # not waiting: the next wait arms it again
        due = since + self._seconds
        if self._loop.time() >= due and self._task is not None:
            self._expired = True
            self._task.cancel()
            return
        self._handle = self._loop.call_at(due, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class JsonErrorBodies:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        body = bytearray()

        async def json_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and _needs_json(message):
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                await _send_json(send, held, bytes(body))

        await self.app(scope, receive, json_send)


def _needs_json(start: Message) -> bool:
    if int(start["status"]) < 400:
        return False
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return not bytes(value).lower().startswith(b"application/json")
    return True


async def _send_json(send: Send, start: Message, plain: bytes) -> None:
    status = int(start["status"])
    body = orjson.dumps(error_body(code_for(status), _message(status, plain)))
    headers: list[Any] = [
        (name, value)
        for name, value in start.get("headers", ())
        if name.lower() not in (b"content-type", b"content-length", b"transfer-encoding")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _message(status: int, plain: bytes) -> str:
    text = plain.decode("utf-8", "replace").strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        # python-engineio sends its messages as JSON strings.
        with contextlib.suppress(orjson.JSONDecodeError):
            text = str(orjson.loads(text))
    if not text:
        text = HTTPStatus(status).phrase
    return text[:_MAX_MESSAGE]
