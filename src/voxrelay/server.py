"""Running the app under uvicorn, with a shutdown that ends every session
cleanly (``conversation_ended`` with reason ``server_shutdown``) before
connections close."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG

from voxrelay import logs
from voxrelay.app import create_app
from voxrelay.config import Settings
from voxrelay.protocols import JsonRefusalsWebSocketProtocol, http_protocol
from voxrelay.transports import socketio
from voxrelay.workers import Worker
from voxrelay.workers.handoff import HandingOffHttpProtocol, Handoff, protocol_for

log = logging.getLogger(__name__)


class Server(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, *, tune_gc: bool = False, handoff: Handoff | None = None
    ) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutting_down = False
        self._tune_gc = tune_gc
        self._handoff = handoff

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._handoff is not None:
            self._handoff.listen(self._adopt)
        if self._tune_gc:
            tune_garbage_collector()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._handoff is not None:
            self._handoff.close()
        await super().shutdown(sockets)

    def _adopt(self, connection: socket.socket, data: bytes) -> None:
        """Serve a connection another worker handed here, as if accepted here."""
        protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        assert isinstance(protocol, HandingOffHttpProtocol)
        protocol.adopt(data)
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(lambda: protocol, connection))
        task.add_done_callback(_log_adoption_failure)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._shutting_down:
            # Sessions are ending already. A second Ctrl+C cuts that short; anything
            # else (a supervisor passing on the same request) waits for it.
            if sig == signal.SIGINT:
                super().handle_exit(sig, frame)
            return
        if self._loop is None:
            return super().handle_exit(sig, frame)
        self._shutting_down = True
        self._loop.call_soon_threadsafe(self._end_sessions_then_exit, sig, frame)

    def _end_sessions_then_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        if not isinstance(app, FastAPI) or getattr(app.state, "registry", None) is None:
            self.should_exit = True
            return
        ending = asyncio.get_running_loop().create_task(_end_everything(app))
        # Not uvicorn's handle_exit: it would re-raise the signal once serving
        # stops, and a shutdown that ended every session cleanly should exit 0.
        ending.add_done_callback(lambda _: setattr(self, "should_exit", True))

    def stop(self) -> None:
        """Shut down gracefully, from any thread (tests run servers in threads)."""
        self.handle_exit(signal.SIGTERM, None)


def _log_adoption_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a connection handed from another worker was lost: %s", task.exception())


async def _end_everything(app: FastAPI) -> None:
    """End every session (each listener gets ``conversation_ended``), then drop
    Socket.IO clients, whose long-polling requests would otherwise hold the
    shutdown open until uvicorn's timeout."""
    await app.state.registry.end_all("server_shutdown")
    sio = getattr(app.state, "socketio", None)
    if sio is not None:
        patience = app.state.settings.socketio_close_seconds
        with contextlib.suppress(Exception):
            await socketio.close_all(sio, patience)


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
    worker: Worker | None = None,
) -> Server:
    """A server for ``app``; uvicorn logs as ``log_config`` says (default: its own way).
    As one of several ``worker`` processes it hands connections to their owner."""
    handoff = Handoff(worker.ownership, worker.rundir) if worker is not None else None
    handing_off = (protocol_for(handoff),) if handoff is not None else ()
    config = uvicorn.Config(
        app or create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=log_config if log_config is not None else LOGGING_CONFIG,
        timeout_graceful_shutdown=5,
        lifespan="on",
        # uvicorn's own protocols, with a deadline for request heads and JSON refusals
        # (protocols.py), and for a worker the hand-off to the owner of a request.
        http=http_protocol(settings.header_timeout_seconds, *handing_off),
        ws=JsonRefusalsWebSocketProtocol,
        ws_per_message_deflate=settings.websocket_compression,
        # Which worker answered, on every response (for operators, at no cost per chunk).
        headers=[("X-Voxrelay-Worker", str(worker.ownership.index))] if worker else None,
    )
    return Server(config, tune_gc=tune_gc, handoff=handoff)


def run(settings: Settings) -> int:
    """Serve in this one process until told to stop; returns the exit status.
    Several worker processes are the supervisor's (``workers.supervisor.serve``)."""
    # Before the app is made, so its own start-up lines are formatted too.
    log_config = logs.configure(settings)
    make_server(settings, log_config=log_config, tune_gc=True).run()
    return 0
