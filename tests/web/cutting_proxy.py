"""A TCP proxy on loopback in front of a test server, that can drop the event
streams passing through it: what a phone walking out of Wi-Fi range does to a
page's EventSource. Everything else (the page, uploads, REST) goes on.

It runs its own event loop in a thread, so synchronous browser tests can use it.
A connection counts as a stream from the first request on it that asks for
``GET /realtime/stream`` (a browser may send one on a connection it kept alive)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_STREAM_REQUEST = b"GET /realtime/stream"


class CuttingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self._streams: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._released = asyncio.Event()
        self._connections: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port: int = self._call(self._start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_streams(self, *, hold: bool) -> int:
        """Close every stream's connection (both sides); with ``hold``, new streams wait
        (their requests unsent) until :meth:`release`. Answers how many were cut."""

        async def cut() -> int:
            if hold:
                self._released.clear()
            pairs = list(self._streams)
            self._streams.clear()
            for pair in pairs:
                for writer in pair:
                    writer.transport.abort()
            return len(pairs)

        return self._call(cut())

    def release(self) -> None:
        self._call(self._release())

    def close(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _start(self) -> int:
        self._released.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _release(self) -> None:
        self._released.set()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._released.set()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client.transport.abort()
            return
        pair = (client, upstream)

        async def to_server() -> None:
            while chunk := await client_reader.read(65536):
                if _STREAM_REQUEST in chunk:
                    await self._released.wait()
                    self._streams.add(pair)
                upstream.write(chunk)
                await upstream.drain()

        async def to_client() -> None:
            while chunk := await upstream_reader.read(65536):
                client.write(chunk)
                await client.drain()

        tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._streams.discard(pair)
            for writer in pair:
                writer.transport.abort()
