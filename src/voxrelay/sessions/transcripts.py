"""The transcript writer: a session's finished messages (and its usage records), stored in
order off the audio path.

A write the database refuses is kept, with every one after it, and tried again
with backoff for as long as the session lives (and for a bounded time once it
ends): nothing is dropped while the database is away, and once it answers again
every message lands, in order. Meanwhile the session's listeners are told
(``storage_unavailable``) and ``/readyz`` answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from voxrelay import logs
from voxrelay.providers.base import HistoryItem, HistoryMessage, HistoryToolCall
from voxrelay.store import Store

log = logging.getLogger(__name__)

_Write = Callable[[], Awaitable[None]]
# What a session's listeners are told while its messages wait for the database.
STORAGE_UNAVAILABLE = (
    "storage_unavailable",
    "messages are not being stored right now; they are kept and retried",
)
_FIRST_RETRY_SECONDS = 0.2
_LAST_RETRY_SECONDS = 5.0


class WriteHealth:
    """Whether this process's message writes land: the sessions whose writes fail now."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    @property
    def ok(self) -> bool:
        return not self.failing


class TranscriptWriter:
    """Queues a session's message writes and lands them in order from its own task,
    so a slow database never holds back audio."""

    def __init__(
        self,
        store: Store,
        conversation_id: str,
        session_id: str,
        *,
        health: WriteHealth,
        retry_after_end_seconds: float,
    ) -> None:
        self._store = store
        self._conversation_id = conversation_id
        self._session_id = session_id
        self._health = health
        # Called when writes start failing (the session tells its listeners).
        self.on_failing: Callable[[], None] = lambda: None
        # Called as the writer closes, to queue the session's last writes (its usage).
        self.on_closing: list[Callable[[], None]] = []
        self._retry_after_end = retry_after_end_seconds
        self._give_up_at: float | None = None
        self._writes: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.messages = 0
        # Every message of this session as it stands, stored yet or not: what a new
        # upstream link is told of the conversation.
        self._said: dict[str, tuple[int, HistoryItem]] = {}

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
        self._said[message_id] = (position, HistoryMessage(role, text, item_id))  # type: ignore[arg-type]

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
        if message_id in self._said:
            position, said = self._said[message_id]
            assert isinstance(said, HistoryMessage)
            self._said[message_id] = (position, HistoryMessage(said.role, text, said.item_id))

        async def write() -> None:
            await self._store.update_message(message_id, text=text)

        self._writes.put_nowait(write)

    def later(self, write: _Write) -> None:
        """Queue another write of the session's (a usage record), in order with its
        messages and retried as they are; it must be safe to repeat."""
        self._writes.put_nowait(write)

    def add_tool_call(self, call: HistoryToolCall, position: int, fields: dict[str, Any]) -> str:
        """Queue a new tool call (``fields`` as ``Store.add_tool_call`` takes them); its id
        comes back at once."""
        record_id = "tool_" + secrets.token_hex(12)
        self._said[record_id] = (position, call)

        async def write() -> None:
            await self._store.add_tool_call(
                self._conversation_id,
                session_id=self._session_id,
                position=position,
                tool_call_id=record_id,
                **fields,
            )

        self._writes.put_nowait(write)
        return record_id

    def finish_tool_call(self, record_id: str, output: str, fields: dict[str, Any]) -> None:
        """Queue a tool call's result (``output`` as the model reads it, ``fields`` as
        ``Store.finish_tool_call`` takes them)."""
        if record_id in self._said:
            position, call = self._said[record_id]
            assert isinstance(call, HistoryToolCall)
            self._said[record_id] = (
                position,
                HistoryToolCall(call.call_id, call.name, call.arguments, output, call.item_id),
            )

        async def write() -> None:
            await self._store.finish_tool_call(record_id, **fields)

        self._writes.put_nowait(write)

    def said(self) -> list[HistoryItem]:
        """This session's messages so far, in conversation order."""
        return [message for _, message in sorted(self._said.values(), key=lambda m: m[0])]

    async def close(self) -> None:
        """Store everything queued so far (a failing database is tried for a bounded
        time more), then stop."""
        for closing in self.on_closing:
            closing()
        self._give_up_at = time.monotonic() + self._retry_after_end
        self._writes.put_nowait(None)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._health.failing.discard(self._session_id)

    async def _run(self) -> None:
        while (write := await self._writes.get()) is not None:
            if not await self._land(write):
                lost = self._writes.qsize()  # the None that ends the queue included
                log.error(
                    "gave up storing %d writes of %s: the database does not take them",
                    lost,
                    self._session_id,
                )
                return

    async def _land(self, write: _Write) -> bool:
        """Store one message, however many tries it takes; False only once the session
        has ended and the database still refuses past the bounded time."""
        delay = _FIRST_RETRY_SECONDS
        failing = False
        while True:
            try:
                await write()
            except Exception as error:
                if not failing:
                    failing = True
                    log.error(
                        "storing a write of %s failed; keeping it and trying again: %s",
                        self._session_id,
                        error,
                    )
                    self._health.failing.add(self._session_id)
                    self.on_failing()
                if self._give_up_at is not None and time.monotonic() > self._give_up_at:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, _LAST_RETRY_SECONDS)
                continue
            if failing:
                log.info("messages of %s are stored again", self._session_id)
                self._health.failing.discard(self._session_id)
            return True


def cut_to_fraction(text: str, fraction: float) -> str:
    """The words of ``text`` that fit in the heard ``fraction`` of its audio."""
    words = text.split()
    keep = round(len(words) * max(0.0, min(1.0, fraction)))
    return " ".join(words[:keep])
