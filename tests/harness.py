"""A real voxrelay server for tests: uvicorn on a free loopback port, in its
own thread and event loop, so tests talk to it over real sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI

from voxrelay.app import create_app
from voxrelay.config import Settings
from voxrelay.providers.base import Provider
from voxrelay.server import Server, make_server
from voxrelay.sessions import Registry
from voxrelay.store import Store

T = TypeVar("T")

SPEECH_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
LOCAL_SPEECH_DIR = Path(__file__).resolve().parent / "data" / "speech"


def speech_file(name: str) -> Path:
    """A recording from shared/data/speech, or the copy kept with the tests."""
    for folder in (SPEECH_DIR, LOCAL_SPEECH_DIR):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(name)


@dataclass
class RunningServer:
    url: str
    settings: Settings
    app: FastAPI
    server: Server
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.registry
        return registry

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run a coroutine on the server's own event loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def call_async(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def token(self, device: str = "watch", user: str | None = "alice") -> str:
        """A device token: of ``user``, or (``None``) of a user of its own."""
        store = await Store.open(self.settings.database_url)
        try:
            _, token = await store.create_token(device, user)
        finally:
            await store.close()
        return token

    async def service_token(self, name: str = "backend") -> str:
        """A service token: it acts for the ``userId`` each request names."""
        store = await Store.open(self.settings.database_url)
        try:
            _, token = await store.create_token(name, kind="service")
        finally:
            await store.close()
        return token

    def stop(self, timeout: float = 15) -> None:
        if self.thread.is_alive():
            self.server.stop()
            self.thread.join(timeout)
        # A shutdown that hangs is a bug a user's server would have too.
        assert not self.thread.is_alive(), f"the server did not stop within {timeout} s"


def start_server(
    settings: Settings, make_provider: Callable[[], Provider] | None = None
) -> RunningServer:
    app = create_app(settings, make_provider=make_provider)
    server = make_server(settings.with_changes(port=0), app)
    loops: list[asyncio.AbstractEventLoop] = []

    def run() -> None:
        async def serve() -> None:
            loops.append(asyncio.get_running_loop())
            await server.serve()

        asyncio.run(serve())

    thread = threading.Thread(target=run, name="voxrelay-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningServer(f"http://127.0.0.1:{port}", settings, app, server, thread, loops[0])


class EventReader:
    """Reads a conversation's SSE stream in the background, keeping every event,
    so a test can wait for the one it expects while it uploads."""

    def __init__(self, events: Any) -> None:
        from voxrelay.client import StreamEvent

        self.events: list[StreamEvent] = []
        self._source = events
        self._changed = asyncio.Event()
        self.closed = False
        self.error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self._source:
                self.events.append(event)
                self._changed.set()
        except BaseException as error:  # surfaced by wait_for
            self.error = error
        finally:
            self.closed = True
            self._changed.set()

    async def wait_for(
        self, type: str, predicate: Callable[[Any], bool] | None = None, timeout: float = 10
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event.type == type and (predicate is None or predicate(event)):
                    return event
            seen = len(self.events)
            if self.closed:
                raise AssertionError(f"stream closed before {type!r}: {self.error!r}")
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                types = [e.type for e in self.events]
                raise AssertionError(f"no {type!r} within {timeout}s; got {types}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def of_type(self, type: str) -> list[Any]:
        return [e for e in self.events if e.type == type]

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except BaseException:
            pass
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except BaseException:
                pass


def read_pcm(name: str) -> tuple[bytes, int]:
    """PCM16 mono bytes and rate of a speech recording (.raw is 16 kHz)."""
    from voxrelay.audio import read_wav

    path = speech_file(name)
    if path.suffix == ".raw":
        return path.read_bytes(), 16000
    pcm = read_wav(str(path))
    return pcm.data, pcm.rate


def silence(ms: int, rate: int) -> bytes:
    return b"\0\0" * (rate * ms // 1000)


async def paced(pcm: bytes, rate: int, *, chunk_ms: int = 20, speed: float = 8.0) -> Any:
    """Yield PCM in ``chunk_ms`` chunks, ``speed`` times faster than real time."""
    step = rate * chunk_ms // 1000 * 2
    for start in range(0, len(pcm), step):
        yield pcm[start : start + step]
        await asyncio.sleep(chunk_ms / 1000 / speed)


async def wait_until(condition: Callable[[], Any], seconds: float = 10) -> None:
    """Poll ``condition`` until it holds; fail the test if it never does."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition()


async def stored_messages(
    server: RunningServer, token: str, conversation_id: str, count: int
) -> list[tuple[str, str]]:
    """(role, text) of a conversation's messages, once at least ``count`` are stored."""
    from voxrelay.client import VoxrelayClient

    async with VoxrelayClient(server.url, token) as client:
        for _ in range(250):
            messages = (await client.conversation(conversation_id))["messages"]
            if len(messages) >= count:
                return [(m["role"], m["text"]) for m in messages]
            await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} messages stored: {messages}")
