"""The storage API: device tokens, conversations, messages and sessions.

One code path for SQLite (``sqlite+aiosqlite``) and PostgreSQL
(``postgresql+asyncpg``). Every method is one short transaction on a pooled
connection; nothing is held between calls. Writes that read too (``add_message``)
write first, which takes the row lock on PostgreSQL and the write lock on SQLite
before reading, so concurrent callers are serialised instead of racing.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from sqlalchemy import text

from .conversations import ConversationStore
from .engine import make_engine, migrate
from .messages import MessageStore
from .sessions import SessionStore
from .tokens import TokenStore

PING_TIMEOUT = 5.0


class Store(TokenStore, ConversationStore, MessageStore, SessionStore):
    """Persistent state of voxrelay. Build it with :meth:`open`, release it with :meth:`close`.

    Its methods on device tokens, conversations, messages and sessions come from one
    part each (``TokenStore``, ``ConversationStore``, ``MessageStore``, ``SessionStore``),
    all on the one engine."""

    @classmethod
    async def open(cls, database_url: str) -> Store:
        """Connect to ``database_url`` and migrate the schema to the latest revision."""
        engine = make_engine(database_url)
        try:
            await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query (within ``PING_TIMEOUT`` s)."""
        async with asyncio.timeout(PING_TIMEOUT), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
