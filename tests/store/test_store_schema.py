"""Opening, migrations, connection settings, time zones."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from voxrelay.store import Store, alembic_config, make_engine
from voxrelay.store.engine import head_revision
from voxrelay.store.models import Base

VERSION_QUERY = "SELECT version_num FROM alembic_version"
TABLES = {
    "alembic_version",
    "conversations",
    "device_tokens",
    "messages",
    "sessions",
    "tool_calls",
    "usage_records",
}


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _table_names(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
    return names


async def test_open_creates_schema_at_head(store: Store) -> None:
    assert _head() == head_revision() == "0004"
    assert await _table_names(store) >= TABLES
    async with store.engine.connect() as conn:
        versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    assert [v[0] for v in versions] == [head_revision()]


async def test_migrations_are_idempotent_on_reopen(database_url: str) -> None:
    first = await Store.open(database_url)
    try:
        conv = await first.create_conversation("u")
        await first.add_message(conv.id, role="user", text="kept")
        _, token = await first.create_token("phone", "u")
    finally:
        await first.close()

    for _ in range(2):
        again = await Store.open(database_url)
        try:
            assert [m.text for m in await again.list_messages(conv.id)] == ["kept"]
            assert await again.authenticate(token) is not None
            async with again.engine.connect() as conn:
                versions = (await conn.execute(text(VERSION_QUERY))).all()
            assert [v[0] for v in versions] == [head_revision()]
        finally:
            await again.close()


async def test_concurrent_opens_of_a_fresh_database(database_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(database_url) for _ in range(4)))
    try:
        for store in stores:
            conv = await store.create_conversation("u")
            assert await stores[0].get_conversation(conv.id) == conv
        async with stores[0].engine.connect() as conn:
            versions = (await conn.execute(text(VERSION_QUERY))).all()
        assert [v[0] for v in versions] == [head_revision()]
    finally:
        for store in stores:
            await store.close()


async def test_models_match_migrations(store: Store) -> None:
    """The ORM tables and the migrated schema agree (no autogenerate diff)."""

    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(
            sync_conn,  # type: ignore[arg-type]
            opts={"compare_type": True, "target_metadata": Base.metadata},
        )
        return list(compare_metadata(context, Base.metadata))

    async with store.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_ping(store: Store) -> None:
    await store.ping()


async def test_ping_fails_when_the_database_does_not_answer() -> None:
    # Nothing listens on port 1: opening a connection is refused at once.
    unreachable = Store(make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/voxrelay"))
    try:
        with pytest.raises(OSError):
            await unreachable.ping()
    finally:
        await unreachable.close()


async def test_sqlite_connection_settings(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with store.engine.connect() as conn:
            fk = (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one()
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
        assert fk == 1
        assert str(journal).lower() == "wal"
    finally:
        await store.close()


async def test_plain_sqlite_url_is_accepted(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        assert store.engine.dialect.driver == "aiosqlite"
        conv = await store.create_conversation("u")
        assert await store.get_conversation(conv.id) == conv
    finally:
        await store.close()


async def test_timestamps_are_utc_aware_and_stored_as_utc(store: Store) -> None:
    before = datetime.now(UTC)
    conv = await store.create_conversation("u")
    msg = await store.add_message(conv.id, role="user", text="hi")
    sess = await store.create_session(
        conversation_id=conv.id,
        user_id="u",
        input_sample_rate=16000,
        output_sample_rate=24000,
        turn_detection="server_vad",
    )
    await store.end_session(sess.id, "client_end")
    await store.create_token("phone", "u")
    await store.revoke_token("phone")
    after = datetime.now(UTC)

    got_conv = await store.get_conversation(conv.id)
    [got_msg] = await store.list_messages(conv.id)
    got_sess = await store.get_session(sess.id)
    [got_token] = await store.list_tokens()
    [summary] = await store.list_conversations("u")
    assert got_conv is not None and got_sess is not None
    stamps = [
        got_conv.created_at,
        got_conv.updated_at,
        got_msg.created_at,
        got_sess.created_at,
        got_sess.ended_at,
        got_token.created_at,
        got_token.revoked_at,
        summary.created_at,
        summary.updated_at,
        msg.created_at,
    ]
    for stamp in stamps:
        assert stamp is not None
        assert stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
        assert before <= stamp <= after

    # At rest the value is UTC too, whatever the session time zone.
    async with store.engine.connect() as conn:
        if store.engine.dialect.name == "postgresql":
            await conn.execute(text("SET TIME ZONE 'Asia/Jerusalem'"))
            utc_clock = "to_char(created_at AT TIME ZONE 'UTC', 'HH24:MI:SS')"
            query = text(f"SELECT {utc_clock} FROM conversations")
            raw = (await conn.execute(query)).scalar_one()
        else:
            raw = (await conn.execute(text("SELECT created_at FROM conversations"))).scalar_one()
            raw = str(raw)[11:19]
    assert raw == conv.created_at.strftime("%H:%M:%S")


async def test_store_as_context_manager(database_url: str) -> None:
    async with await Store.open(database_url) as store:
        await store.ping()
