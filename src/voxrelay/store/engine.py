"""Engine construction and schema migrations (Alembic, run in-process)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from voxrelay.config import normalize_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Serialises concurrent migrations of one PostgreSQL database (several nodes
# starting together). Any constant works; this is "voxrelay" in ASCII, truncated.
_PG_MIGRATION_LOCK = 0x766F7872656C6179


def make_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``.

    Plain ``sqlite://`` / ``postgresql://`` URLs get the async driver. SQLite
    connections get foreign keys on, WAL journal and a busy timeout.
    """
    url = normalize_database_url(database_url)
    if url.startswith("postgresql"):
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # Wait for a writer instead of failing with "database is locked".
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        # Safe with WAL (a power cut may lose the last commits, never corrupts).
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


# Alembic keeps the running migration context in module globals, so two
# migrations in one process (tasks of one loop, or threads) must not interleave.
_MIGRATION_LOCK = threading.Lock()


@asynccontextmanager
async def migration_lock() -> AsyncIterator[None]:
    """Process-wide lock around :func:`upgrade`, usable from any event loop or thread."""
    # Polling, not a blocking acquire: waiting must not block the event loop,
    # and a cancelled wait must not leave the lock taken.
    while True:
        if _MIGRATION_LOCK.acquire(blocking=False):
            break
        await asyncio.sleep(0.005)
    try:
        yield
    finally:
        _MIGRATION_LOCK.release()


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` to ``revision`` (idempotent)."""
    async with migration_lock(), engine.begin() as conn:
        await conn.run_sync(upgrade, revision)


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config built in code (no alembic.ini).

    ``env.py`` uses ``connection`` when given (the runtime path), else ``url``.
    """
    cfg = Config()
    # ConfigParser interpolation: a literal '%' in the path must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the schema to ``revision`` on ``connection`` (inside its transaction).

    Meant for ``await async_conn.run_sync(upgrade)`` under :func:`migration_lock`
    (:func:`migrate` does both); a no-op when already there. Other processes
    migrating the same database wait: PostgreSQL through an advisory lock,
    SQLite through its write lock.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        # Take the write lock before reading the schema version (so this must
        # be the connection's first statement). DDL is transactional in SQLite.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
