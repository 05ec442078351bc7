"""Engine construction and schema migrations (Alembic, run in-process)."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event, exc, make_url, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from voxrelay.config import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE, normalize_database_url

from .errors import StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DIALECTS = ("sqlite", "postgresql")
UPGRADE_HINT = "run `voxrelay db upgrade` (or start with VOXRELAY_MIGRATE_ON_START=true)"

# Serialises concurrent migrations of one PostgreSQL database (several nodes
# starting together). Any constant works; this is "voxrelay" in ASCII, truncated.
_PG_MIGRATION_LOCK = 0x766F7872656C6179


class CannotOpenDatabase(StoreError):
    """The database cannot be used: a bad URL, no answer, a schema that is not this
    version's. The message is one line, for the operator; the cause is chained."""


class SchemaNotCurrent(CannotOpenDatabase):
    """The schema is not at the latest revision, and this open was not to migrate it."""


def make_engine(
    database_url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    **kwargs: Any,
) -> AsyncEngine:
    """An async engine for ``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``.

    Plain ``sqlite://`` / ``postgresql://`` URLs get the async driver. PostgreSQL
    gets a pool of ``pool_size`` connections kept open and up to ``max_overflow``
    more at a peak. SQLite ignores both; its connections get foreign keys on, WAL
    journal and a busy timeout.
    """
    url = normalize_database_url(database_url)
    if url.startswith("postgresql"):
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", pool_size)
        kwargs.setdefault("max_overflow", max_overflow)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def open_engine(
    database_url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> AsyncEngine:
    """:func:`make_engine` for a URL an operator gave: one that is not a usable
    SQLite or PostgreSQL URL raises :class:`CannotOpenDatabase`. Connects nothing yet."""
    try:
        url = make_url(normalize_database_url(database_url))
    except (exc.ArgumentError, ValueError) as error:
        raise CannotOpenDatabase(f"invalid database URL: {_one_line(error)}") from error
    if url.get_backend_name() not in DIALECTS:
        raise CannotOpenDatabase(
            f"unsupported database {url.get_backend_name()!r} in the database URL:"
            " use sqlite:///PATH or postgresql://USER@HOST/DATABASE"
        )
    try:
        return make_engine(database_url, pool_size=pool_size, max_overflow=max_overflow)
    except (exc.ArgumentError, exc.InvalidRequestError, ImportError, ValueError) as error:
        raise CannotOpenDatabase(f"cannot use database URL {_shown(url)}: {error}") from error


@contextmanager
def reporting(engine: AsyncEngine, doing: str) -> Iterator[None]:
    """Turn the database not answering (or failing to migrate) into one line:
    ``CannotOpenDatabase("cannot {doing} the database at URL: reason")``."""
    try:
        yield
    except CannotOpenDatabase:
        raise
    except (OSError, exc.DBAPIError, CommandError) as error:
        message = f"cannot {doing} the database at {_shown(engine.url)}: {_one_line(error)}"
        raise CannotOpenDatabase(message) from error


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


async def sqlite_threads_finished() -> None:
    """Wait (a moment at most) for aiosqlite's connection threads to end.

    For a one-shot command, before its event loop closes: aiosqlite leaves the
    clean-up of a connection that failed to open to its thread without waiting,
    and that thread reports "Event loop is closed" when the loop is gone first.
    """
    threads = [t for t in threading.enumerate() if t.name.endswith("(_connection_worker_thread)")]
    if threads:
        # Joined off the loop, which must keep running to take their last callbacks.
        await asyncio.to_thread(_join, threads, 2.0)


def _join(threads: list[threading.Thread], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


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


async def migrate(engine: AsyncEngine, revision: str = "head") -> str | None:
    """Migrate the database of ``engine`` to ``revision`` (idempotent); returns the
    revision it was at before (``None``: no schema yet)."""
    async with migration_lock(), engine.begin() as conn:
        before: str | None = await conn.run_sync(upgrade, revision)
    return before


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


def upgrade(connection: Connection, revision: str = "head") -> str | None:
    """Bring the schema to ``revision`` on ``connection`` (inside its transaction);
    returns the revision it was at before.

    Meant for ``await async_conn.run_sync(upgrade)`` under :func:`migration_lock`
    (:func:`migrate` does both); a no-op when already there. Other processes
    migrating the same database wait: PostgreSQL through an advisory lock,
    SQLite through its write lock. A schema at a revision this version does not
    know (a newer version migrated it) raises :class:`SchemaNotCurrent`.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        # Take the write lock before reading the schema version (so this must
        # be the connection's first statement). DDL is transactional in SQLite.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    before = current_revision(connection)
    if before is not None and before not in known_revisions():
        raise SchemaNotCurrent(describe_schema(before))
    command.upgrade(alembic_config(connection), revision)
    return before


def current_revision(connection: Connection) -> str | None:
    """The schema's revision (``None``: no voxrelay schema yet)."""
    return MigrationContext.configure(connection).get_current_revision()


async def schema_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        revision: str | None = await conn.run_sync(current_revision)
    return revision


async def check_schema(engine: AsyncEngine) -> None:
    """Raise :class:`SchemaNotCurrent` unless the schema is at the latest revision."""
    require_servable(await schema_revision(engine), migrate=False)


def require_servable(revision: str | None, *, migrate: bool) -> None:
    """Raise :class:`SchemaNotCurrent` unless this version can serve a schema at
    ``revision``: the latest, or, when it may ``migrate``, none or an older one."""
    if revision == head_revision():
        return
    if migrate and (revision is None or revision in known_revisions()):
        return
    raise SchemaNotCurrent(describe_schema(revision))


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The latest revision of the migrations this version ships."""
    head = _scripts().get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return head


def known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def describe_schema(revision: str | None) -> str:
    """One line on a schema at ``revision``, saying what to do unless it is the head."""
    head = head_revision()
    if revision == head:
        return f"database at revision {head} (head)"
    if revision is None:
        return f"database has no schema yet (head is {head}): {UPGRADE_HINT}"
    if revision not in known_revisions():
        return (
            f"database at revision {revision}, which this voxrelay does not know"
            f" (its head is {head}): a newer version migrated it"
        )
    return f"database at revision {revision}, behind {head} (head): {UPGRADE_HINT}"


async def database_revision(database_url: str) -> str | None:
    """Connect once and return the schema's revision (``None``: no schema yet);
    :class:`CannotOpenDatabase` if that fails."""
    engine = open_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with reporting(engine, "open"):
            return await schema_revision(engine)
    finally:
        await engine.dispose()


async def upgrade_database(database_url: str) -> str | None:
    """Migrate the database at ``database_url`` to the latest revision; returns the
    revision it was at before. :class:`CannotOpenDatabase` if that fails."""
    engine = open_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with reporting(engine, "migrate"):
            return await migrate(engine)
    finally:
        await engine.dispose()
