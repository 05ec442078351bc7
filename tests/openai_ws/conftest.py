from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import RunningServer
from realtime_ws_client import KEY


@pytest.fixture(params=["ga", "beta"])
def upstream_dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(upstream_dialect: str) -> Iterator[FakeRealtimeServer]:
    """The fake upstream: OpenAI GA, or Azure's preview (beta dialect) endpoint."""
    with FakeRealtimeServer(upstream_dialect, api_key=KEY) as server:  # type: ignore[arg-type]
        yield server
    assert server.validation_errors == []


@pytest.fixture
def relay(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, upstream_dialect: str
) -> RunningServer:
    if upstream_dialect == "ga":
        return launch(
            provider="openai", openai_url=fake.url, openai_api_key=KEY, openai_model="gpt-test"
        )
    return launch(
        provider="azure",
        azure_endpoint=fake.http_url,
        azure_api_key=KEY,
        azure_deployment="voice-dep",
        azure_api_version="2024-10-01-preview",
    )
