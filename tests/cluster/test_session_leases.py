"""A node's sessions in Redis, seen from the inside of one node: a new session is
held under its id before anybody can be told of it."""

from __future__ import annotations

from pathlib import Path

import redis
from services import REDIS_URL, require_or_skip

from voxrelay.app import create_app
from voxrelay.config import Settings
from voxrelay.providers.base import SessionOptions
from voxrelay.sessions import Directory


async def test_a_new_session_is_held_in_redis_before_its_start_returns(tmp_path: Path) -> None:
    require_or_skip("redis", "Redis does not answer on 127.0.0.1:6379")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'voxrelay.db'}", provider="echo", redis_url=REDIS_URL
    )
    app = create_app(settings)
    # A blocking client: while it asks, nothing else on the event loop runs, so what
    # it finds is what ``start`` left behind, not what a task finished meanwhile.
    check = redis.Redis.from_url(REDIS_URL)
    try:
        async with app.router.lifespan_context(app):
            directory: Directory = app.state.directory
            for _ in range(5):
                session, new = await directory.start(
                    "user-1",
                    None,
                    input_rate=16000,
                    output_rate=24000,
                    options=SessionOptions(turn_detection="manual"),
                )
                # A client told of the session (the 201 of POST /realtime/session)
                # may ask another node for it at once: that node looks here.
                holder = check.get(f"voxrelay:holder:{session.id}")
                assert new and holder is not None, "the session is not held yet"
                assert check.exists(f"voxrelay:member:{holder.decode()}")
                await session.end("client_end")
    finally:
        check.close()
