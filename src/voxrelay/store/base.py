"""What every part of :class:`~voxrelay.store.Store` shares: the engine, whose
pooled connections each method borrows for one short transaction, and the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


def rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


class StoreBase:
    """The engine, and the sessions each method opens one transaction on."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._session = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
