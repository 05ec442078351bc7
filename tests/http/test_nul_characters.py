"""U+0000 in what a request names or sends. PostgreSQL's text and JSONB cannot hold
it, so each of these answered 500 there (and a typed message holding one made the
session's transcript writer retry it forever, holding back every later message and
turning /readyz to 503). Now: an id holding one names nothing (404, like any unknown
id), and a userId, session setting or typed message holding one is refused (400), on
SQLite alike.

The schemathesis run in test_openapi_fuzz.py found the first ones on PostgreSQL
(``GET /conversations?before=%00``, and /readyz at 503 once a generated message
holding a NUL reached a live session); the rest were found by trying a NUL in every
field it draws strings for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import services
from harness import EventReader, RunningServer, stored_messages

from voxrelay.client import VoxrelayClient
from voxrelay.config import Settings

NUL = "a\x00b"


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with services.database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The servers stop before the database they use is dropped.
    return Settings(database_url=database_url, provider="echo")


@pytest.fixture
async def device(server: RunningServer) -> AsyncIterator[VoxrelayClient]:
    """A client with alice's device token."""
    async with VoxrelayClient(server.url, await server.token("watch", "alice")) as client:
        yield client


@pytest.fixture
async def service(server: RunningServer) -> AsyncIterator[VoxrelayClient]:
    """A client with a service token, the kind that may name ``userId``."""
    async with VoxrelayClient(server.url, await server.service_token()) as client:
        yield client


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


_PCM = {"content-type": "audio/pcm"}

# method, path, what httpx sends
Case = tuple[str, str, dict[str, Any]]

NAMED_BY_ID: list[Case] = [
    ("GET", "/conversations/a%00b", {}),
    ("DELETE", "/conversations/a%00b", {}),
    ("GET", "/realtime/session/a%00b", {}),
    ("POST", "/realtime/commit", {"params": {"conversationId": NUL}}),
    ("POST", "/realtime/interrupt", {"params": {"conversationId": NUL}}),
    ("POST", "/realtime/end", {"params": {"conversationId": NUL}}),
    ("POST", "/realtime/end", {"json": {"conversationId": NUL}}),
    ("POST", "/realtime/text", {"json": {"conversationId": NUL, "text": "hi"}}),
    (
        "POST",
        "/realtime/upload",
        {"params": {"conversationId": NUL}, "content": b"\0\0", "headers": _PCM},
    ),
]


async def _answers(client: VoxrelayClient, cases: list[Case]) -> list[Any]:
    """Each case with the status and error code it was answered."""
    answers = []
    for method, path, request_args in cases:
        response = await client.http.request(method, path, **request_args)
        error = response.json().get("error", {}) if response.text else {}
        answers.append((method, path, request_args, response.status_code, error.get("code")))
    return answers


async def test_an_id_holding_nul_names_nothing(device: VoxrelayClient) -> None:
    answers = await _answers(device, NAMED_BY_ID)
    assert [a for a in answers if a[3:] != (404, "not_found")] == []


async def test_a_before_cursor_holding_nul_is_no_cursor(device: VoxrelayClient) -> None:
    response = await device.http.get("/conversations", params={"before": NUL})
    _error(response, 400, "invalid_request")


USER_REFUSED: list[Case] = [
    ("GET", "/conversations", {"params": {"userId": NUL}}),
    ("POST", "/realtime/session", {"json": {"userId": NUL}}),
]
REFUSED: list[Case] = [
    ("POST", "/realtime/session", {"json": {"instructions": NUL}}),
    ("POST", "/realtime/session", {"json": {"voice": NUL}}),
    ("POST", "/realtime/session", {"json": {"language": NUL}}),
    ("GET", "/realtime/stream", {"params": {"instructions": NUL}}),
]


async def test_a_user_or_setting_holding_nul_is_refused(
    device: VoxrelayClient, service: VoxrelayClient
) -> None:
    answers = await _answers(device, REFUSED) + await _answers(service, USER_REFUSED)
    assert [a for a in answers if a[3:] != (400, "invalid_request")] == []


async def test_a_typed_message_holding_nul_is_refused_and_the_session_goes_on(
    server: RunningServer, device: VoxrelayClient
) -> None:
    service = device
    reader = EventReader(service.events())
    try:
        started = await reader.wait_for("conversation_started")
        conversation_id = started.data["conversationId"]
        response = await service.http.post(
            "/realtime/text", json={"conversationId": conversation_id, "text": NUL}
        )
        _error(response, 400, "invalid_request")
        await service.text(conversation_id, "still here?")
        await reader.wait_for("response_done")
        messages = await stored_messages(
            server, await server.token("watch", "alice"), conversation_id, 2
        )
        assert messages == [("user", "still here?"), ("assistant", "You said: still here?")]
        assert reader.of_type("error") == []
        assert (await service.http.get("/readyz")).status_code == 200
    finally:
        await reader.close()
