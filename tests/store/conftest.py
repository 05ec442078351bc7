"""Fixtures for storage tests: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# Rootless test layout: make tests/services.py importable from this folder too.
_TESTS_DIR = str(Path(__file__).resolve().parent.parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from services import create_postgres_database, drop_postgres_database, require_or_skip  # noqa: E402

from voxrelay.store import Store  # noqa: E402

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a temp SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'voxrelay.db'}"
        return
    require_or_skip("postgresql", "PostgreSQL does not answer on 127.0.0.1:5432")
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()
