from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RunningServer, start_server

from voxrelay.client import VoxrelayClient
from voxrelay.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'voxrelay.db'}", provider="echo")


@pytest.fixture
def launch(settings: Settings) -> Iterator[Callable[..., RunningServer]]:
    """Start servers with changed settings (or another provider); all stop at the end."""
    running: list[RunningServer] = []

    def start(make_provider: Any = None, **changes: Any) -> RunningServer:
        server = start_server(settings.with_changes(**changes), make_provider)
        running.append(server)
        return server

    yield start
    stopped = [_stopped(server) for server in running]
    assert all(stopped), "a server did not stop"


def _stopped(server: RunningServer) -> bool:
    try:
        server.stop()
    except AssertionError:
        return False
    return True


@pytest.fixture
def server(launch: Callable[..., RunningServer]) -> RunningServer:
    return launch()


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[VoxrelayClient]:
    async with VoxrelayClient(server.url, await server.token("watch", "alice")) as c:
        yield c
