"""The storage API: tokens, conversations, messages, sessions, tool calls and usage.

One code path for SQLite (``sqlite+aiosqlite``) and PostgreSQL
(``postgresql+asyncpg``). Every method is one short transaction on a pooled
connection; nothing is held between calls. Writes that read too (``add_message``)
write first, which takes the row lock on PostgreSQL and the write lock on SQLite
before reading, so concurrent callers are serialised instead of racing.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Self

from sqlalchemy import text

from voxrelay.config import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE

from .conversations import ConversationStore
from .engine import check_schema, head_revision, open_engine, reporting
from .engine import migrate as migrate_schema
from .messages import MessageStore
from .sessions import SessionStore
from .tokens import TokenStore
from .tool_calls import ToolCallStore
from .usage import UsageStore

PING_TIMEOUT = 5.0

log = logging.getLogger(__name__)


class Store(TokenStore, ConversationStore, MessageStore, SessionStore, ToolCallStore, UsageStore):
    """Persistent state of voxrelay. Build it with :meth:`open`, release it with :meth:`close`.

    Its methods on tokens, conversations, messages, sessions and usage come from one
    part each (``TokenStore``, ``ConversationStore``, ``MessageStore``, ``SessionStore``,
    ``UsageStore``), all on the one engine."""

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        migrate: bool = True,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
    ) -> Store:
        """Connect to ``database_url`` and migrate the schema to the latest revision;
        with ``migrate=False`` only check it is there (:class:`SchemaNotCurrent` if not).

        A bad URL, a database that does not answer or a migration that fails raise
        :class:`CannotOpenDatabase`. ``pool_size`` and ``max_overflow`` size the
        PostgreSQL connection pool (see :func:`make_engine`).
        """
        engine = open_engine(database_url, pool_size=pool_size, max_overflow=max_overflow)
        try:
            if migrate:
                with reporting(engine, "migrate"):
                    before = await migrate_schema(engine)
                if before != head_revision():
                    log.info(
                        "database migrated from revision %s to %s",
                        before or "none",
                        head_revision(),
                    )
            else:
                with reporting(engine, "open"):
                    await check_schema(engine)
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
