from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import alone
import pytest
from harness import RunningServer, start_server
from hypothesis import settings as hypothesis_settings

from voxrelay.client import VoxrelayClient
from voxrelay.config import Settings

# Property tests: few examples each, no per-example deadline (a loaded machine would
# make one flaky), and on a failure the blob that replays it. CI draws the same
# examples every run (derandomize), so a failure there is reproducible at home with
# HYPOTHESIS_PROFILE=ci; elsewhere each run explores new ones and keeps failures in
# .hypothesis/ to replay first.
hypothesis_settings.register_profile("dev", max_examples=25, deadline=None, print_blob=True)
hypothesis_settings.register_profile(
    "ci", parent=hypothesis_settings.get_profile("dev"), derandomize=True, database=None
)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """Each test, with what it sets up and tears down, holds the workers' lock: shared,
    or exclusive when marked ``alone`` (see alone.py). Taken outside the other
    plugins' wrappers, so the wait for it does not count towards a test's timeout."""
    folder = alone.lock_folder(item.config)
    if folder is None:
        return (yield)
    with alone.hold(folder, exclusive=item.get_closest_marker(alone.MARK) is not None):
        return (yield)


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
