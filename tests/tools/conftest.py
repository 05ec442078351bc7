"""What the tool tests share: a real HTTP tool server on loopback, a fake upstream whose
model calls a function when the user's words say ``call NAME {json}``, and a server
whose tools file names the tool server's tools."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import RunningServer
from tool_server import CAREGIVER_TOKEN, KEY, ToolServer, called, tools_file


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with ToolServer() as server:
        yield server


@pytest.fixture
def tools_path(tmp_path: Path, tool_server: ToolServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAREGIVER_TOKEN", CAREGIVER_TOKEN)
    return tools_file(tmp_path, tool_server)


@pytest.fixture
def fake() -> Iterator[FakeRealtimeServer]:
    with FakeRealtimeServer("ga", api_key=KEY, call_tool=called) as server:
        yield server
    assert server.validation_errors == []


@pytest.fixture
def relay(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, tools_path: Path
) -> RunningServer:
    return launch(
        provider="openai",
        openai_url=fake.url,
        openai_api_key=KEY,
        openai_model="gpt-test",
        tools=str(tools_path),
        client_tool_timeout_seconds=3.0,
    )
