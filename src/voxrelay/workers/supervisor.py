"""Starting, watching and stopping the worker processes of ``voxrelay serve --workers N``.

The supervisor makes a run directory for the workers' Unix sockets and starts
one process per worker. Each binds the port with ``SO_REUSEPORT`` and serves
it with its own event loop; at start it marks ended the sessions an earlier
run left active that it would own. SIGTERM or Ctrl+C is passed to every
worker, which ends its sessions as a single server does. A worker that dies
is started again: its sessions are lost (their streams end).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from voxrelay import logs
from voxrelay.config import Settings
from voxrelay.workers import Worker
from voxrelay.workers.ownership import Ownership

log = logging.getLogger(__name__)

_STOP_SECONDS = 30.0
# A worker that fails this many times in a row, each time within this many seconds
# of its start, cannot start: the supervisor gives up.
_QUICK_FAILURE_SECONDS = 5.0
_QUICK_FAILURES = 3


def listening_socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    """The port, ``shared`` with the other workers: the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    return sock


def serve(settings: Settings) -> int:
    """Run ``settings.workers`` workers until told to stop; 0 after a clean stop."""
    logs.configure(settings)  # the supervisor's own lines; each worker sets up its own
    # Not shared, and at once let go: a port already served (by another voxrelay
    # sharing its port too) fails here, once, instead of being silently shared.
    try:
        listening_socket(settings.host, settings.port, shared=False).close()
    except OSError as error:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, error)
        return 1
    rundir = Path(tempfile.mkdtemp(prefix="voxrelay-"))
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    processes: dict[int, BaseProcess] = {}
    started: dict[int, float] = {}
    quick_failures: dict[int, int] = {}

    def start(index: int) -> None:
        process = context.Process(
            target=_worker_main,
            args=(settings, index, settings.workers, str(rundir), os.getpid()),
            name=f"voxrelay-worker-{index}",
        )
        process.start()
        processes[index] = process
        started[index] = time.monotonic()

    def stop(sig: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        for process in processes.values():
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    clean = True
    try:
        for index in range(settings.workers):
            start(index)
        while processes:
            sentinels = {process.sentinel: index for index, process in processes.items()}
            for ready in wait(list(sentinels), timeout=0.5):
                index = sentinels[ready]  # type: ignore[index]
                process = processes.pop(index)
                process.join()
                if stopping.is_set():
                    clean = clean and process.exitcode == 0
                    continue
                code = process.exitcode
                log.error("worker %d exited with code %s; starting it again", index, code)
                quick = time.monotonic() - started[index] < _QUICK_FAILURE_SECONDS
                quick_failures[index] = quick_failures.get(index, 0) + 1 if quick else 0
                if quick_failures[index] >= _QUICK_FAILURES:
                    log.error("worker %d keeps failing at start; stopping", index)
                    clean = False
                    stop(signal.SIGTERM, None)
                    continue
                start(index)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in processes.values():
            process.kill()
        shutil.rmtree(rundir, ignore_errors=True)
    return 0 if clean else 1


def _worker_main(settings: Settings, index: int, count: int, rundir: str, parent: int) -> None:
    # Here, not at the top: the supervisor serves nothing itself, and would spend
    # a second importing the app before it could start the first worker.
    from voxrelay.app import create_app
    from voxrelay.server import make_server

    logs.set_process_fields(worker=str(index))
    log_config = logs.configure(settings)
    worker = Worker(Ownership(index, count), Path(rundir))
    sock = listening_socket(settings.host, settings.port)
    server = make_server(
        settings,
        create_app(settings, worker=worker),
        log_config=log_config,
        tune_gc=True,
        worker=worker,
    )
    # A worker whose supervisor is gone (killed) stops too.
    threading.Thread(
        target=_watch_parent, args=(parent, server.stop), name="parent-watch", daemon=True
    ).start()
    server.run(sockets=[sock])
    sys.exit(0)


def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    stop()
