"""Open connections end when their token is revoked.

Every long-lived connection (an event stream, an upload, a Socket.IO socket, a
WebSocket) is watched by the token it presented. Every 0.4 s (by default) one
query asks the database which of the watched tokens, and of the tokens this
process has lately let in (``KnownTokens``), are still valid; the connections of
the others are told and closed, each the way its transport refuses a bad token,
and those tokens are looked up again at their next request. Every process checks
against the shared database, so a revocation reaches every worker and node
within a second, and a request with a known token needs no database (nor
the thread an SQLite query runs in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from voxrelay.auth import Device, KnownTokens
from voxrelay.store import Store

log = logging.getLogger(__name__)

OnRevoked = Callable[[], None]


class Revocations:
    def __init__(self, store: Store, interval: float) -> None:
        self._store = store
        self._interval = interval
        # Trusted for two checks' time: a check that fails (the database away) or
        # runs late leaves a known token looked up again, never trusted longer.
        self.known = KnownTokens(trust_seconds=2 * interval)
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
        """Tell the connections of every watched token that is no longer valid, and
        forget the known tokens that are not."""
        watched = [token_id for token_id, callbacks in self._watched.items() if callbacks]
        known = self.known.checking()
        if not watched and not known:
            return
        active = await self._store.active_token_ids({*watched, *known.token_ids})
        self.known.checked(known, active)
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
