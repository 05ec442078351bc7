"""The database as an operator meets it: ``voxrelay db upgrade`` and ``db current``
run as separate processes, ``migrate_on_start`` off, the PostgreSQL pool from the
settings. On SQLite and on PostgreSQL (skipped when it does not answer)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import services
from sqlalchemy import text

from voxrelay.app import create_app
from voxrelay.config import Settings
from voxrelay.store import make_engine
from voxrelay.store.engine import SchemaNotCurrent, head_revision

VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))
TABLES = {"alembic_version", "conversations", "device_tokens", "messages", "sessions"}
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/voxrelay"  # nothing listens on port 1


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file not made yet, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'voxrelay.db'}"
        return
    services.require_or_skip("postgresql", "PostgreSQL does not answer on 127.0.0.1:5432")
    async with services.postgres_database() as url:
        yield url


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXRELAY_")}
    return {
        **env,
        "VOXRELAY_DATABASE_URL": database_url,
        "VOXRELAY_PROVIDER": "echo",
        "VOXRELAY_LOG_LEVEL": "warning",
        **extra,
    }


async def _voxrelay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command in a thread, so the event loop of async fixtures is not held."""

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [VOXRELAY, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    return await asyncio.to_thread(run)


async def _tables(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            names: set[str] = await conn.run_sync(lambda c: set(c.dialect.get_table_names(c)))
            if "alembic_version" in names:
                version = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).all()
                assert [v[0] for v in version] == [head_revision()]
    finally:
        await engine.dispose()
    return names


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("voxrelay: ")
    return lines[0]


async def test_db_upgrade_creates_the_schema_and_may_run_again(database_url: str) -> None:
    env = _env(database_url)
    before = await _voxrelay("db", "current", env=env)
    assert before.returncode == 1
    assert "no schema yet" in before.stdout and "voxrelay db upgrade" in before.stdout

    first = await _voxrelay("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"database at revision {head_revision()} (head), upgraded from an empty database"
    )
    assert await _tables(database_url) >= TABLES

    again = await _voxrelay("db", "upgrade", env=env)
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout.strip() == f"database at revision {head_revision()} (head), already up to date"
    )

    current = await _voxrelay("db", "current", env=env)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == f"database at revision {head_revision()} (head)"


async def test_db_upgrade_takes_the_url_as_a_flag(tmp_path: Path) -> None:
    env = _env(f"sqlite:///{tmp_path / 'not-this-one.db'}")
    after = f"sqlite:///{tmp_path / 'after.db'}"
    before = f"sqlite:///{tmp_path / 'before.db'}"
    assert (await _voxrelay("db", "upgrade", "--database-url", after, env=env)).returncode == 0
    assert (await _voxrelay("db", "--database-url", before, "upgrade", env=env)).returncode == 0
    assert await _tables(after) >= TABLES
    assert await _tables(before) >= TABLES
    assert not (tmp_path / "not-this-one.db").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (UNREACHABLE, "cannot migrate the database at postgresql+asyncpg://postgres@127.0.0.1:1"),
        ("sqlite:////nonexistent-directory/voxrelay.db", "unable to open database file"),
        ("mysql://user@localhost/voxrelay", "unsupported database 'mysql'"),
        ("not a url", "invalid database URL"),
    ],
)
async def test_db_upgrade_of_a_database_it_cannot_use_says_so_in_one_line(
    url: str, expected: str
) -> None:
    result = await _voxrelay("db", "upgrade", env=_env(url))
    assert expected in _one_error_line(result)
    assert result.stdout == ""


async def test_db_current_of_an_unreachable_database_says_so_in_one_line() -> None:
    result = await _voxrelay("db", "current", env=_env(UNREACHABLE))
    assert "cannot open the database at" in _one_error_line(result)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_without_migrating_refuses_an_empty_database(database_url: str) -> None:
    env = _env(database_url, VOXRELAY_MIGRATE_ON_START="false")
    refused = await _voxrelay("serve", "--port", str(_free_port()), env=env)
    line = _one_error_line(refused)
    assert "no schema yet" in line and "run `voxrelay db upgrade`" in line
    assert await _tables(database_url) == set()
    # The flag says the same as the variable.
    flagged = await _voxrelay(
        "serve", "--port", str(_free_port()), "--migrate-on-start", "no", env=_env(database_url)
    )
    assert "run `voxrelay db upgrade`" in _one_error_line(flagged)

    assert (await _voxrelay("db", "upgrade", env=env)).returncode == 0
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        VOXRELAY,
        "serve",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(300):
                if process.returncode is not None:
                    output = await process.stdout.read() if process.stdout else b""
                    raise AssertionError(f"the server exited: {output.decode()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the server did not become ready")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
    assert process.returncode == 0


async def test_serve_migrates_at_start_by_default(database_url: str) -> None:
    """The server's own start, not the command's check, creates the schema."""
    settings = Settings(database_url=database_url, provider="echo")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.store.ping()
    assert await _tables(database_url) >= TABLES


async def test_the_app_without_migrating_refuses_an_empty_database(database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, provider="echo", migrate_on_start=False))
    with pytest.raises(SchemaNotCurrent, match="voxrelay db upgrade"):
        async with app.router.lifespan_context(app):
            pass
    assert await _tables(database_url) == set()


async def test_the_pool_size_setting_reaches_the_postgresql_engine() -> None:
    services.require_or_skip("postgresql", "PostgreSQL does not answer on 127.0.0.1:5432")
    async with services.postgres_database() as url:
        settings = Settings.from_env(
            {
                "VOXRELAY_DATABASE_URL": url,
                "VOXRELAY_PROVIDER": "echo",
                "VOXRELAY_DATABASE_POOL_SIZE": "4",
                "VOXRELAY_DATABASE_MAX_OVERFLOW": "1",
            }
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            pool = app.state.store.engine.pool
            assert pool.size() == 4
            assert pool._max_overflow == 1
