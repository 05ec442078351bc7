"""A python-socketio client for tests: it keeps every event it receives, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio

NS = "/realtime"


class Sock:
    """A python-socketio client that keeps every event it receives, in order."""

    def __init__(self, transport: str = "websocket") -> None:
        self.transport = transport
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.refusal: Any = None
        self._changed = asyncio.Event()
        self.client.on("*", self._on_event, namespace=NS)
        self.client.on("connect_error", self._on_refused, namespace=NS)

    def _on_event(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))
        self._changed.set()

    def _on_refused(self, data: Any = None) -> None:
        self.refusal = data

    async def connect(
        self,
        url: str,
        token: str | None,
        *,
        headers: dict[str, str] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> Sock:
        if auth is None:
            auth = {"token": token} if token else None
        await self.client.connect(
            url,
            namespaces=[NS],
            auth=auth,
            headers=headers or {},
            transports=self.transport.split(","),
            wait_timeout=5,
        )
        await self.wait_for("connected")
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        if data is None:
            return await self.client.call(event, namespace=NS, timeout=timeout)
        return await self.client.call(event, data, namespace=NS, timeout=timeout)

    async def emit(self, event: str, data: Any = None) -> None:
        await self.client.emit(event, data, namespace=NS)

    async def join(self, session_id: str) -> dict[str, Any]:
        ack = await self.call("join-session", {"sessionId": session_id})
        assert ack["ok"] is True, ack
        return ack  # type: ignore[no-any-return]

    def of(self, event: str, since: int = 0) -> list[Any]:
        return [data for name, data in self.events[since:] if name == event]

    def names(self, since: int = 0) -> list[str]:
        return [name for name, _ in self.events[since:]]

    async def wait_for(
        self,
        event: str,
        predicate: Callable[[Any], bool] | None = None,
        *,
        since: int = 0,
        timeout: float = 10,
    ) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for name, data in self.events[since:]:
                if name == event and (predicate is None or predicate(data)):
                    return data
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} within {timeout}s; got {self.names()}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        await self.client.disconnect()
