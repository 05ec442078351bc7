"""Opening a store: migrating or only checking the schema, the PostgreSQL pool,
and the one-line errors of a database that cannot be used."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from voxrelay.config import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from voxrelay.store import Store, make_engine
from voxrelay.store.engine import (
    CannotOpenDatabase,
    SchemaNotCurrent,
    database_revision,
    head_revision,
    sqlite_threads_finished,
    upgrade_database,
)


async def _tables(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
    finally:
        await engine.dispose()
    return names


async def test_without_migrating_an_empty_database_is_refused(database_url: str) -> None:
    with pytest.raises(SchemaNotCurrent) as refused:
        await Store.open(database_url, migrate=False)
    message = str(refused.value)
    assert "voxrelay db upgrade" in message and "\n" not in message
    assert await _tables(database_url) == set()


async def test_without_migrating_a_current_schema_opens(database_url: str) -> None:
    async with await Store.open(database_url) as store:
        conv = await store.create_conversation("u")
    async with await Store.open(database_url, migrate=False) as store:
        assert await store.get_conversation(conv.id) == conv


async def test_upgrade_database_reports_the_revision_before(database_url: str) -> None:
    assert await database_revision(database_url) is None
    assert await upgrade_database(database_url) is None
    assert await database_revision(database_url) == head_revision()
    assert await upgrade_database(database_url) == head_revision()
    assert {"device_tokens", "conversations", "messages", "sessions"} <= await _tables(database_url)


async def test_a_schema_from_a_newer_version_is_refused(database_url: str) -> None:
    await upgrade_database(database_url)
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await engine.dispose()
    for migrate in (True, False):
        with pytest.raises(SchemaNotCurrent, match=r"9999.*newer version"):
            await Store.open(database_url, migrate=migrate)
    assert await database_revision(database_url) == "9999"


async def test_pool_size_reaches_the_postgresql_engine(database_url: str) -> None:
    async with await Store.open(database_url, pool_size=3, max_overflow=2) as sized:
        await sized.ping()
        async with await Store.open(database_url) as default:
            await default.ping()
            if sized.engine.dialect.name == "postgresql":
                assert sized.engine.pool.size() == 3  # type: ignore[attr-defined]
                assert sized.engine.pool._max_overflow == 2  # type: ignore[attr-defined]
                assert default.engine.pool.size() == DEFAULT_POOL_SIZE  # type: ignore[attr-defined]
                assert default.engine.pool._max_overflow == DEFAULT_MAX_OVERFLOW  # type: ignore[attr-defined]


async def test_sqlite_ignores_the_pool_settings() -> None:
    # In memory SQLite has a one-connection pool that takes no size at all.
    async with await Store.open("sqlite+aiosqlite://", pool_size=3, max_overflow=0) as store:
        conv = await store.create_conversation("u")
        assert await store.get_conversation(conv.id) == conv


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:1/voxrelay", "cannot migrate the database at"),
        ("sqlite:////nonexistent-directory/voxrelay.db", "unable to open database file"),
        ("mysql://user@localhost/voxrelay", "unsupported database 'mysql'"),
        ("not a url", "invalid database URL"),
    ],
)
async def test_a_database_that_cannot_be_used_is_one_line(url: str, expected: str) -> None:
    with pytest.raises(CannotOpenDatabase) as failed:
        await Store.open(url)
    await sqlite_threads_finished()  # before this test's loop closes
    assert expected in str(failed.value)
    assert "\n" not in str(failed.value)


async def test_the_password_is_not_shown() -> None:
    with pytest.raises(CannotOpenDatabase) as failed:
        await Store.open("postgresql://voxrelay:hunter2@127.0.0.1:1/voxrelay")
    assert "hunter2" not in str(failed.value)
    assert "voxrelay:***@127.0.0.1:1" in str(failed.value)
