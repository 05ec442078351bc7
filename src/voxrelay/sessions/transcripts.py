"""The transcript writer: a session's finished messages, stored in order off the audio path."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from voxrelay import logs
from voxrelay.store import Store

log = logging.getLogger(__name__)

_Write = Callable[[], Awaitable[None]]


class TranscriptWriter:
    """Queues a session's message writes and lands them in order from its own task,
    so a slow database never holds back audio."""

    def __init__(self, store: Store, conversation_id: str, session_id: str) -> None:
        self._store = store
        self._conversation_id = conversation_id
        self._session_id = session_id
        self._writes: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.messages = 0

    def start(self) -> None:
        # The writer's task logs as its session's, whichever request started it.
        context = logs.session_context(self._conversation_id, self._session_id)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"{self._session_id}-writes", context=context
        )

    def add(
        self, role: str, text: str, position: int, item_id: str, meta: dict[str, Any] | None = None
    ) -> str:
        """Queue a new message; its id comes back at once so later edits can name it."""
        message_id = "msg_" + secrets.token_hex(12)
        self.messages += 1

        async def write() -> None:
            await self._store.add_message(
                self._conversation_id,
                role=role,
                text=text,
                position=position,
                item_id=item_id,
                meta=meta,
                message_id=message_id,
            )

        self._writes.put_nowait(write)
        return message_id

    def update(self, message_id: str, text: str) -> None:
        async def write() -> None:
            await self._store.update_message(message_id, text=text)

        self._writes.put_nowait(write)

    async def close(self) -> None:
        """Store everything queued so far, then stop."""
        self._writes.put_nowait(None)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while (write := await self._writes.get()) is not None:
            for attempt in range(3):
                try:
                    await write()
                    break
                except Exception:
                    log.exception(
                        "storing a message of %s failed (try %d)", self._session_id, attempt + 1
                    )
                    await asyncio.sleep(0.2 * (attempt + 1))


def cut_to_fraction(text: str, fraction: float) -> str:
    """The words of ``text`` that fit in the heard ``fraction`` of its audio."""
    words = text.split()
    keep = round(len(words) * max(0.0, min(1.0, fraction)))
    return " ".join(words[:keep])
