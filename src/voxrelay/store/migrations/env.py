"""Alembic environment for voxrelay.

At runtime ``Store.open`` passes its own (sync) connection through
``config.attributes["connection"]``; migrations then run inside that
connection's transaction. For development (e.g. autogenerating a revision)::

    from alembic import command
    from voxrelay.store.engine import alembic_config
    command.revision(alembic_config(url="sqlite:///dev.db"), "message", autogenerate=True)
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from voxrelay.store.engine import make_engine
from voxrelay.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("VOXRELAY_DATABASE_URL")
    )
    if not url:
        raise RuntimeError("no database URL: pass a connection, a url attribute or -x url=...")
    return str(url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_url(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_with_url(_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
