"""External services for tests: PostgreSQL and Redis on localhost.

Tests that need a service call :func:`require_or_skip` (a program they start
themselves, such as nginx: :func:`require_program_or_skip`): the test is skipped
when the service does not answer, unless ``VOXRELAY_REQUIRE_SERVICES=1``, in
which case it fails (CI sets it so a missing service cannot pass silently).

Import it as ``services`` (``tests/`` on ``sys.path``; see ``tests/store/conftest.py``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"  # trust authentication, no password
POSTGRES_ADMIN_DSN = f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

TEST_DATABASE_PREFIX = "voxrelay_test_"
_TIMEOUT = 2.0


def postgres_available() -> bool:
    """Whether a PostgreSQL server answers on 127.0.0.1:5432 (protocol-level check).

    Sends an SSLRequest, to which every PostgreSQL server replies with a single
    ``S`` or ``N`` byte, so an unrelated program on the port does not count.
    """
    try:
        with socket.create_connection((POSTGRES_HOST, POSTGRES_PORT), timeout=_TIMEOUT) as sock:
            sock.sendall(struct.pack("!ii", 8, 80877103))
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


def redis_available() -> bool:
    """Whether a Redis server answers ``PING`` on 127.0.0.1:6379."""
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=_TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # "+PONG", or an error such as "-NOAUTH": either way it is Redis answering.
    return reply.startswith((b"+PONG", b"-"))


_CHECKS = {
    "postgresql": postgres_available,
    "postgres": postgres_available,
    "redis": redis_available,
}


def service_available(service_name: str) -> bool:
    try:
        check = _CHECKS[service_name.lower()]
    except KeyError:
        raise ValueError(f"unknown service {service_name!r}; one of {sorted(_CHECKS)}") from None
    return check()


def services_required() -> bool:
    return os.environ.get("VOXRELAY_REQUIRE_SERVICES") == "1"


def require_or_skip(service_name: str, reason: str) -> None:
    """Skip the running test when ``service_name`` does not answer; with
    ``VOXRELAY_REQUIRE_SERVICES=1`` fail it instead."""
    if service_available(service_name):
        return
    if services_required():
        pytest.fail(f"{reason} (VOXRELAY_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


# Where Debian and others put daemons' binaries, often outside a user's PATH.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


def require_program_or_skip(name: str, reason: str) -> str:
    """The path of the program ``name`` (on PATH, or in an sbin directory); when it
    is not installed, skip the running test, or with ``VOXRELAY_REQUIRE_SERVICES=1``
    fail it."""
    found = shutil.which(name) or shutil.which(name, path=_SBIN)
    if found is not None:
        return found
    if services_required():
        pytest.fail(f"{reason} (VOXRELAY_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


async def create_postgres_database() -> str:
    """Create an empty database ``voxrelay_test_<random>``; return its SQLAlchemy async URL."""
    name = TEST_DATABASE_PREFIX + secrets.token_hex(6)
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=_TIMEOUT * 5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"


async def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`create_postgres_database` (given its URL or name)."""
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    if not name.startswith(TEST_DATABASE_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=_TIMEOUT * 5)
    try:
        force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"{force}')
    finally:
        await conn.close()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for the duration of the block."""
    url = await create_postgres_database()
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@asynccontextmanager
async def database(kind: str, folder: Path) -> AsyncIterator[str]:
    """The URL of an empty database for the block: ``sqlite`` (a file in ``folder``) or
    ``postgresql`` (a fresh database; the test is skipped, or failed, as
    :func:`require_or_skip` has it, when PostgreSQL does not answer)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{folder / 'voxrelay.db'}"
        return
    require_or_skip("postgresql", "PostgreSQL is not running on 127.0.0.1:5432")
    async with postgres_database() as url:
        yield url
