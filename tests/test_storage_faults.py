"""The database refusing writes mid-conversation: loud (an error event, /readyz 503)
and lossless (every message and usage record lands, in order, once it takes writes again). Against a
real PostgreSQL made read-only and writable again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from harness import EventReader, RunningServer
from services import (
    POSTGRES_ADMIN_DSN,
    create_postgres_database,
    drop_postgres_database,
    require_or_skip,
)

from voxrelay.client import VoxrelayClient


@pytest.fixture
async def database() -> AsyncIterator[str]:
    require_or_skip("postgresql", "PostgreSQL does not answer on 127.0.0.1:5432")
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


async def _writable(url: str, writable: bool) -> None:
    """Make the database refuse writes (or take them again), for every connection."""
    name = url.rsplit("/", 1)[-1]
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        if writable:
            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        else:
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        # Open connections keep the setting they began with: end them.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()


async def _messages(client: VoxrelayClient, cid: str, count: int) -> list[tuple[str, str]]:
    for _ in range(300):
        messages = (await client.conversation(cid))["messages"]
        if len(messages) >= count:
            return [(m["role"], m["text"]) for m in messages]
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} messages: {messages}")


async def test_messages_wait_for_the_database_and_land_in_order(
    launch: Callable[..., RunningServer], database: str
) -> None:
    server = launch(database_url=database)
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        reader = EventReader(client.events(turnDetection="manual"))
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        await client.text(cid, "first")
        await reader.wait_for("response_done", timeout=10)
        assert len(await _messages(client, cid, 2)) == 2

        await _writable(database, False)
        await client.text(cid, "second")
        await client.text(cid, "third")
        failing = await reader.wait_for(
            "error", lambda e: e.data["code"] == "storage_unavailable", timeout=10
        )
        assert "retried" in failing.data["message"]
        async with httpx.AsyncClient(base_url=server.url) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "writes failing"

        await _writable(database, True)
        messages = await _messages(client, cid, 6)
        assert [text for role, text in messages if role == "user"] == ["first", "second", "third"]
        assert [role for role, _ in messages] == ["user", "assistant"] * 3
        for _ in range(100):
            async with httpx.AsyncClient(base_url=server.url) as http:
                if (await http.get("/readyz")).status_code == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("/readyz stayed 503 once writes landed")
        await client.end(cid)
        await reader.close()
        # Each answer's usage waited with the messages: all three landed, each once.
        usage = (await client.conversation(cid))["usage"]
        assert usage["responses"] == 3
        assert usage["inputTextTokens"] == 3  # a token per word typed (the echo provider)


async def test_a_database_file_deleted_from_under_the_server_is_noticed(
    launch: Callable[..., RunningServer], tmp_path: Path
) -> None:
    path = tmp_path / "gone.db"
    server = launch(database_url=f"sqlite+aiosqlite:///{path}")
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/readyz")).status_code == 200
        path.unlink()
        ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "file missing"
