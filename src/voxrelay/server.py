"""Running the app under uvicorn, with a shutdown that ends every session
cleanly (``conversation_ended`` with reason ``server_shutdown``) before
connections close."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from voxrelay import logs
from voxrelay.app import create_app
from voxrelay.config import Settings


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, tune_gc: bool = False) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutting_down = False
        self._tune_gc = tune_gc

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._tune_gc:
            tune_garbage_collector()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._shutting_down or self._loop is None:
            return super().handle_exit(sig, frame)
        self._shutting_down = True
        self._loop.call_soon_threadsafe(self._end_sessions_then_exit, sig, frame)

    def _end_sessions_then_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        if not isinstance(app, FastAPI) or getattr(app.state, "hub", None) is None:
            self.should_exit = True
            return
        ending = asyncio.get_running_loop().create_task(_end_everything(app))
        # Not uvicorn's handle_exit: it would re-raise the signal once serving
        # stops, and a shutdown that ended every session cleanly should exit 0.
        ending.add_done_callback(lambda _: setattr(self, "should_exit", True))

    def stop(self) -> None:
        """Shut down gracefully, from any thread (tests run servers in threads)."""
        import signal

        self.handle_exit(signal.SIGTERM, None)


async def _end_everything(app: FastAPI) -> None:
    """End every session (each listener gets ``conversation_ended``), then drop
    Socket.IO clients, whose long-polling requests would otherwise hold the
    shutdown open until uvicorn's timeout."""
    await app.state.hub.end_all("server_shutdown")
    sio = getattr(app.state, "socketio", None)
    if sio is not None:
        with contextlib.suppress(Exception):
            await sio.eio.disconnect()


def tune_garbage_collector() -> None:
    """Keep collection pauses off the audio path. Everything alive once the server has
    started (the imported libraries, the app) is moved out of the collector's sight
    for good, and the youngest generation is collected less often: a relay allocates
    a few short-lived objects per audio chunk, thousands a second, which the default
    threshold of 700 turns into hundreds of collections a second."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


_GC_YOUNG_THRESHOLD = 10_000


def make_server(
    settings: Settings,
    app: FastAPI | None = None,
    *,
    log_config: dict[str, Any] | None = None,
    tune_gc: bool = False,
) -> Server:
    """A server for ``app``; uvicorn logs as ``log_config`` says (default: its own way)."""
    config = uvicorn.Config(
        app or create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=log_config if log_config is not None else LOGGING_CONFIG,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    return Server(config, tune_gc=tune_gc)


def run(settings: Settings) -> None:
    # Before the app is made, so its own start-up lines are formatted too.
    log_config = logs.configure(settings)
    make_server(settings, log_config=log_config, tune_gc=True).run()
