"""The WebSocket protocol's synchronous send (``protocols.SEND_NOW``): it
writes while the socket takes frames at once, refuses while it does not (before the
handshake, writing paused by a client that does not read, after the close), and
frames written through it and through the ASGI ``send`` arrive in the order sent."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from websockets.asyncio.client import connect

from voxrelay.protocols import SEND_NOW, JsonRefusalsWebSocketProtocol

FRAMES = 400
# Random, so that compression does not shrink it: 400 such frames (26 MB) are far
# more than socket buffers hold.
PADDING = base64.b64encode(os.urandom(49_152)).decode()


class Sender:
    """An ASGI app that sends FRAMES numbered frames, text and binary in turn, each at
    once when it can."""

    def __init__(self) -> None:
        self.before_accept: bool | None = None
        self.now = 0
        self.waited = 0
        self.after_close: bool | None = None
        self.done = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert scope["type"] == "websocket"
        send_now: Callable[[str | bytes], bool] = scope["extensions"][SEND_NOW]
        await receive()  # websocket.connect
        self.before_accept = send_now("too early")
        await send({"type": "websocket.accept"})
        for index in range(FRAMES):
            text = f"{index:06d}{PADDING}"
            frame: str | bytes = text if index % 2 else text.encode()
            if send_now(frame):
                self.now += 1
            else:
                self.waited += 1
                key = "text" if isinstance(frame, str) else "bytes"
                await send({"type": "websocket.send", key: frame})
        await send({"type": "websocket.close", "code": 1000})
        self.after_close = send_now("too late")
        self.done.set()


@contextlib.asynccontextmanager
async def serving(app: Sender) -> AsyncIterator[str]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=JsonRefusalsWebSocketProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await task


async def test_frames_sent_now_and_sent_later_arrive_in_order() -> None:
    app = Sender()
    async with serving(app) as url, connect(url, max_size=None, max_queue=4) as client:
        # Not reading for a while: the server's buffers fill and its writing pauses.
        await asyncio.sleep(0.5)
        received = [message async for message in client]
    await asyncio.wait_for(app.done.wait(), 10)
    assert [int(message[:6]) for message in received] == list(range(FRAMES))
    assert [isinstance(message, str) for message in received] == [i % 2 == 1 for i in range(FRAMES)]
    assert app.before_accept is False and app.after_close is False
    # Both ways were taken: at once while the socket took frames, the ASGI send after
    # writing paused.
    assert app.now > 0 and app.waited > 0, (app.now, app.waited)
