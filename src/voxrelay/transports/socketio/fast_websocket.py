"""Engine.IO's WebSocket transport, without a task per frame.

python-engineio (``AsyncSocket._websocket_handler``) reads every frame through a
new task (``asyncio.wait_for`` around the read, for the ping timeout) and sends
every packet through a queue emptied by a writer task: a binary ``audio-chunk``
(two frames) and its answer cost four task switches and as many timers. Here,
for the Engine.IO versions this was checked against (``CHECKED_VERSIONS``):

- frames are read in the connection's own task, with one silence timer for the
  whole connection (re-armed from the time of the last frame only when it goes
  off), which ends the transport after ``ping_interval + ping_timeout`` without a
  frame, as python-engineio's read timeout does;
- a packet is written to the websocket at once, in the sender's task, when no
  write is waiting (through the server's synchronous send, ``protocols.SEND_NOW``,
  where it has one); only when the client's connection is backed up does a task
  take over, and packets queue behind it in the socket's queue (the bounded
  outbox, ``outbox``) until it has written them all, in order.

The protocol is python-engineio's own: the same upgrade (probe ``ping``/``pong``,
``upgrade``), the same packets handed to ``AsyncSocket.receive`` (messages
straight to the message handler), the same close and disconnect reasons, and
the frame checks of ``framing``. For any other version python-engineio's
transport is kept (with ``framing``'s checks), and one warning says so.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
import time
from collections.abc import Coroutine, Generator
from typing import Any

import socketio
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from voxrelay.protocols import SendNow, send_now_of
from voxrelay.transports.socketio.framing import frame_problem
from voxrelay.transports.socketio.inbound import tell

log = logging.getLogger(__name__)

CHECKED_VERSIONS = frozenset({"4.15.1"})
ENGINEIO_VERSION = importlib.metadata.version("python-engineio")

_MESSAGE = eio_packet.MESSAGE
_SEND = "websocket.send"


def install(sio: socketio.AsyncServer, limit: int) -> bool:
    """Serve ``sio``'s websockets with this transport; False (and a warning) when
    the installed python-engineio is not one it was checked against."""
    if ENGINEIO_VERSION not in CHECKED_VERSIONS:
        log.warning(
            "python-engineio %s is not one the fast websocket transport was checked "
            "against (%s); using python-engineio's own",
            ENGINEIO_VERSION,
            ", ".join(sorted(CHECKED_VERSIONS)),
        )
        return False
    eio = sio.eio
    base = eio._async["websocket"]

    class FastWebSocket(base):  # type: ignore[misc,valid-type]
        async def __call__(self, environ: dict[str, Any]) -> str:
            socket = getattr(self.handler, "__self__", None)
            if socket is None:  # not an Engine.IO socket's handler: leave it be
                result: str = await super().__call__(environ)
                return result
            self.asgi_receive = environ["asgi.receive"]
            self.asgi_send = environ["asgi.send"]
            self.send_now = send_now_of(environ["asgi.scope"])
            await self.asgi_send({"type": "websocket.accept"})
            await _Connection(sio, socket, self, limit).run()
            return ""  # the response was the websocket itself

    # A copy: the async mode's table is shared by every server of the process.
    eio._async = {**eio._async, "websocket": FastWebSocket}
    return True


def is_fast(socket: Any) -> bool:
    """Whether this Engine.IO socket's packets go through this transport's writer."""
    return isinstance(getattr(socket.send, "__self__", None), _Writer)


class _Closed(Exception):
    """The websocket has nothing more to read (closed, silent too long, refused)."""


class _Silence:
    """One timer for a connection: when it goes off and no frame came for
    ``seconds``, the reading task is cancelled (only while it waits for a frame)."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._seconds = seconds
        self.last = self._loop.time()
        self.reading = False
        self.expired = False
        self._handle = self._loop.call_at(self.last + seconds, self._check)

    def heard(self) -> None:
        """A frame came."""
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        deadline = self.last + self._seconds
        if not self.reading:
            # Busy with what it read (not silence): its next wait starts afresh.
            self.last = now
            deadline = now + self._seconds
        elif deadline <= now and self._task is not None:
            self.expired = True
            self._task.cancel()
            return
        self._handle = self._loop.call_at(deadline, self._check)

    def stop(self) -> None:
        self._handle.cancel()


class _Resumed:
    """The rest of a coroutine whose first step ran in another task: awaiting this
    (in a task of its own) drives it on from the future it stopped at."""

    __slots__ = ("_coroutine", "_waiting")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coroutine = coroutine
        self._waiting = waiting

    def __await__(self) -> Generator[Any, None, None]:
        coroutine, waiting = self._coroutine, self._waiting
        while True:
            try:
                try:
                    yield waiting
                except BaseException as error:  # cancelled while it waited
                    waiting = coroutine.throw(error)
                else:
                    waiting = coroutine.send(None)
            except StopIteration:
                return


class _Writer:
    """A socket's packets to its websocket, in order. Installed as the socket's
    ``send``; keeps python-engineio's checks before each packet."""

    def __init__(self, socket: Any, send: Any, send_now: SendNow | None = None) -> None:
        self._socket = socket
        self._queue: asyncio.Queue[Any] = socket.queue
        self._send = send
        self._send_now = send_now
        self._task: asyncio.Task[None] | None = None
        self.broken = False
        self.done = False

    async def send(self, pkt: eio_packet.Packet) -> None:
        socket = self._socket
        if socket.closed:
            raise eio_exceptions.SocketIsClosedError()
        last_ping = socket.last_ping
        # python-engineio's check, awaited only when it has something to do.
        if (
            last_ping
            and time.time() - last_ping > socket.server.ping_timeout
            and not await socket.check_ping_timeout()
        ):
            return
        if self.done or self.broken:
            return  # the transport is ending: nothing more is read from the queue
        if self._task is not None or self._queue.qsize():
            self._queue.put_nowait(pkt)  # the outbox's bound applies
        else:
            self._write(pkt)

    def flush(self) -> None:
        """Write what the queue holds, until a write has to wait."""
        queue = self._queue
        while self._task is None and not self.broken and queue.qsize():
            pkt = queue.get_nowait()
            queue.task_done()
            if pkt is None:  # python-engineio's stop for its writer
                continue
            self._write(pkt)

    def _write(self, pkt: eio_packet.Packet) -> None:
        data = pkt.encode()
        # Nothing waits to be written before it: written at once, when the socket takes it.
        if self._send_now is not None and self._send_now(data):
            return
        # Else run in this task until the write completes or has to wait.
        coroutine = self._send(_message(data))
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return
        except Exception as error:
            self._broke(error)
            return
        self._task = asyncio.get_running_loop().create_task(self._finish(coroutine, waiting))

    async def _finish(self, coroutine: Coroutine[Any, Any, Any], waiting: Any) -> None:
        queue = self._queue
        try:
            await _Resumed(coroutine, waiting)
            while not self.broken and queue.qsize():
                pkt = queue.get_nowait()
                queue.task_done()
                if pkt is not None:
                    await self._send(_message(pkt.encode()))
        except Exception as error:
            self._broke(error)
        finally:
            self._task = None

    def _broke(self, error: Exception) -> None:
        log.debug("socket.io websocket write failed: %s", error)
        self.broken = True
        self.discard()

    def discard(self) -> None:
        """Drop what waits (as sent), so that nothing waits for it to be written."""
        queue = self._queue
        while queue.qsize():
            queue.get_nowait()
            queue.task_done()

    async def end(self, patience: float) -> None:
        """Let a waiting write finish (at most ``patience`` seconds), then stop."""
        self.done = True
        task = self._task
        if task is not None:
            await asyncio.wait({task}, timeout=patience)
            task.cancel()
        self.discard()


def _message(data: str | bytes) -> dict[str, Any]:
    if isinstance(data, bytes):
        return {"type": _SEND, "bytes": data, "text": None}
    return {"type": _SEND, "bytes": None, "text": data}


class _Connection:
    """One Engine.IO socket served on one websocket (``_websocket_handler``'s part)."""

    def __init__(self, sio: socketio.AsyncServer, socket: Any, ws: Any, limit: int) -> None:
        self._sio = sio
        self._socket = socket
        self._server = socket.server
        self._ws = ws
        self._limit = limit
        self._receive = ws.asgi_receive
        self._silence: _Silence | None = None
        self._handler: Any = None
        self._handler_is_async = False

    async def _read(self) -> str | bytes:
        silence = self._silence
        assert silence is not None
        while True:
            silence.reading = True
            try:
                event = await self._receive()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if silence.expired and task is not None and task.uncancel() == 0:
                    raise _Closed("no frame within the ping interval and timeout") from None
                raise
            finally:
                silence.reading = False
            silence.heard()
            if event["type"] != "websocket.receive":
                raise _Closed("the client closed the websocket")
            data = event.get("bytes")
            if data is None:
                data = event.get("text")
                if data is None:
                    raise _Closed("a websocket message with no data")
            problem = frame_problem(data, self._limit)
            if problem is None:
                return data  # type: ignore[no-any-return]
            if not await tell(self._sio, self._socket.sid, *problem):
                # Nothing to answer on: the socket is closed, as python-engineio does.
                raise _Closed(problem[1])

    async def run(self) -> None:
        server = self._server
        self._silence = _Silence(server.ping_interval + server.ping_timeout)
        try:
            if not await self._open():
                return
            writer = _Writer(self._socket, self._ws.asgi_send, self._ws.send_now)
            self._socket.send = writer.send
            writer.flush()  # what was queued before (the open packet, during the upgrade)
            server.logger.info("%s: Upgrade to websocket successful", self._socket.sid)
            try:
                await self._serve()
            finally:
                await writer.end(server.ping_timeout)
                await self._ws.close()
                await self._socket.close(
                    wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE
                )
        finally:
            self._silence.stop()

    async def _open(self) -> bool:
        """A direct connect, or the upgrade of a long-polling socket; False if the
        upgrade failed."""
        socket, server = self._socket, self._server
        if not socket.connected:
            socket.connected = True
            socket.upgraded = True
            return True
        socket.upgrading = True  # python-engineio holds packets back meanwhile
        try:
            probe = eio_packet.Packet(encoded_packet=await self._read())
            if probe.packet_type != eio_packet.PING or probe.data != "probe":
                server.logger.info("%s: Failed websocket upgrade, no PING packet", socket.sid)
                return False
            await self._ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            await socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the poll
            upgrade = eio_packet.Packet(encoded_packet=await self._read())
            if upgrade.packet_type != eio_packet.UPGRADE:
                socket.upgraded = False
                server.logger.info(
                    "%s: Failed websocket upgrade, expected UPGRADE packet, received %s instead.",
                    socket.sid,
                    upgrade.data,
                )
                return False
            socket.upgraded = True
            return True
        except _Closed:
            return False
        finally:
            socket.upgrading = False

    async def _serve(self) -> None:
        socket, server = self._socket, self._server
        async_handlers = server.async_handlers
        while True:
            try:
                data = await self._read()
            except _Closed:
                return
            try:
                if isinstance(data, bytes):
                    await self._message(data, async_handlers)
                elif data[0] == "4" and data[1:2].isdigit():
                    # What Engine.IO decodes to a string: every Socket.IO packet.
                    await self._message(data[1:], async_handlers)
                else:
                    await socket.receive(eio_packet.Packet(encoded_packet=data))
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                server.logger.info("Receive error -- socket is closed")
                return
            except Exception:
                server.logger.exception("Unknown receive error")

    async def _message(self, data: str | bytes, async_handlers: bool) -> None:
        """``AsyncSocket.receive`` of a message, straight to the message handler."""
        handler = self._server.handlers.get("message")
        if async_handlers or handler is None:
            await self._socket.receive(eio_packet.Packet(_MESSAGE, data=data))
            return
        if handler is not self._handler:
            self._handler = handler
            self._handler_is_async = inspect.iscoroutinefunction(handler)
        try:
            if self._handler_is_async:
                await handler(self._socket.sid, data)
            else:
                handler(self._socket.sid, data)
        except Exception:
            self._server.logger.exception("message async handler error")
