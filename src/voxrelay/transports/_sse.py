"""A lean ``text/event-stream`` response.

The stream's producer writes whole frames with ``write``; the response adds
what every Server-Sent Events stream needs around it: the headers, a comment
line after each quiet ``keepalive`` seconds (proxies close silent
connections), and an end to the producer as soon as the client goes away.

Each frame costs one ASGI ``send`` and nothing else. A general SSE response
(sse-starlette's) also opens a cancel scope around every send and encodes
each frame as it goes; on a stream of 50 audio events a second per session
that was a large share of the server's CPU, and the frames here are already
encoded, once per event, by the event log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Write = Callable[[bytes], Awaitable[None]]
Producer = Callable[[Write], Coroutine[Any, Any, None]]

KEEPALIVE_FRAME = b": keepalive\r\n\r\n"


class EventStreamResponse(Response):
    """``produce(write)`` writes the frames; the body ends when it returns."""

    media_type = "text/event-stream"

    def __init__(
        self,
        produce: Producer,
        *,
        keepalive: float,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        # No body and no content-length: the stream is chunked.
        self.status_code = status_code
        self.background = background
        self.init_headers(headers)
        self._produce = produce
        self._keepalive = keepalive
        self._last_write = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        loop = asyncio.get_running_loop()
        self._last_write = loop.time()

        async def write(frame: bytes) -> None:
            self._last_write = loop.time()
            await send({"type": "http.response.body", "body": frame, "more_body": True})

        producing = loop.create_task(self._produce(write))
        watching = loop.create_task(_until_disconnect(receive))
        tasks = {producing, watching}
        if self._keepalive > 0:
            tasks.add(loop.create_task(self._keep_alive(write)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if watching.done() and not watching.cancelled():
            return  # the client went away: nobody is left to finish the body for
        error = None if producing.cancelled() else producing.exception()
        if error is not None:
            raise error
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _keep_alive(self, write: Write) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self._last_write + self._keepalive - loop.time()))
            if loop.time() - self._last_write >= self._keepalive:
                await write(KEEPALIVE_FRAME)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
