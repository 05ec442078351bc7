"""Open connections end when their token is revoked.

Every long-lived connection (an event stream, an upload, a Socket.IO socket, a
WebSocket) is watched by the token it presented. Every few seconds one query
asks the database which of the watched tokens are still valid; the connections
of the others are told and closed, each the way its transport refuses a bad
token. Every process checks its own connections against the shared database, so
a revocation reaches every worker and node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from voxrelay.auth import Device
from voxrelay.store import Store

log = logging.getLogger(__name__)

OnRevoked = Callable[[], None]


class Revocations:
    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._watched: dict[str, set[OnRevoked]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="revocations")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    @contextlib.contextmanager
    def watch(self, device: Device, on_revoked: OnRevoked) -> Iterator[None]:
        """Call ``on_revoked`` (once) if ``device``'s token is revoked while the block runs."""
        callbacks = self._watched.setdefault(device.token_id, set())
        callbacks.add(on_revoked)
        try:
            yield
        finally:
            callbacks.discard(on_revoked)
            if not callbacks and self._watched.get(device.token_id) is callbacks:
                del self._watched[device.token_id]

    async def check(self) -> None:
        """Tell the connections of every watched token that is no longer valid."""
        watched = [token_id for token_id, callbacks in self._watched.items() if callbacks]
        if not watched:
            return
        active = await self._store.active_token_ids(watched)
        for token_id in watched:
            if token_id in active:
                continue
            callbacks = self._watched.pop(token_id, set())
            log.info("token revoked: closing %d connections", len(callbacks))
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("closing a connection of a revoked token failed")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception as error:
                log.warning("checking for revoked tokens failed: %s", error)
