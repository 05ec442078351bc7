"""Which web pages may use the server (``VOXRELAY_CORS_ALLOWED_ORIGINS``): closed by
default, one rule for REST and SSE (CORS), Socket.IO and ``/v1/realtime``; a client
that sends no ``Origin`` (a native app) is never refused for it."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
import socketio
from harness import RunningServer
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from voxrelay.origins import Origins

APP = "https://app.example"
EVIL = "https://evil.example"


def _preflight(origin: str, method: str = "POST", headers: str = "authorization") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_no_cross_origin_access_by_default(server: RunningServer) -> None:
    token = await server.token()
    async with httpx.AsyncClient(base_url=server.url) as http:
        refused = await http.options("/realtime/session", headers=_preflight(APP))
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["code"] == "invalid_request"
        assert "access-control-allow-origin" not in refused.headers
        # The request itself is served (a browser would not let the page read it)...
        sent = await http.get(
            "/conversations", headers={"Origin": APP, "Authorization": f"Bearer {token}"}
        )
        assert sent.status_code == 200
        assert "access-control-allow-origin" not in sent.headers
        # ...as it is for a native client, which sends no Origin.
        native = await http.get("/conversations", headers={"Authorization": f"Bearer {token}"})
        assert native.status_code == 200


async def test_an_allowed_origin_passes_preflight_and_reads_answers(
    launch: Callable[..., RunningServer],
) -> None:
    server = launch(cors_allowed_origins=f"{APP}, https://other.example")
    token = await server.token()
    async with httpx.AsyncClient(base_url=server.url) as http:
        preflight = await http.options(
            "/realtime/session", headers=_preflight(APP, headers="authorization, content-type")
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]

        # An event stream reconnecting with Last-Event-ID is preflighted too.
        stream = await http.options(
            "/realtime/stream", headers=_preflight(APP, "GET", "last-event-id, authorization")
        )
        assert stream.status_code == 200
        assert "last-event-id" in stream.headers["access-control-allow-headers"].lower()

        created = await http.post(
            "/realtime/session",
            json={},
            headers={"Origin": APP, "Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == APP
        # Error answers carry the header as well, so the page can read them.
        missing = await http.get("/conversations/nope", headers={"Origin": APP})
        assert missing.status_code == 401
        assert missing.headers["access-control-allow-origin"] == APP

        refused = await http.options("/realtime/session", headers=_preflight(EVIL))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        await http.post(
            "/realtime/end",
            json={"conversationId": created.json()["session"]["conversationId"]},
            headers={"Authorization": f"Bearer {token}"},
        )


async def test_any_origin(launch: Callable[..., RunningServer]) -> None:
    server = launch(cors_allowed_origins="*")
    async with httpx.AsyncClient(base_url=server.url) as http:
        preflight = await http.options("/conversations", headers=_preflight(EVIL, "GET"))
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"


async def _socketio_connects(server: RunningServer, token: str, origin: str | None) -> bool:
    sio = socketio.AsyncClient(reconnection=False)
    headers = {"Origin": origin} if origin else {}
    try:
        await sio.connect(
            server.url,
            namespaces=["/realtime"],
            auth={"token": token},
            headers=headers,
            transports=["websocket"],
            wait_timeout=5,
        )
    except socketio.exceptions.ConnectionError:
        return False
    await sio.disconnect()
    return True


@pytest.mark.parametrize("allowed", ["", APP])
async def test_socketio_checks_the_origin(
    launch: Callable[..., RunningServer], allowed: str
) -> None:
    server = launch(cors_allowed_origins=allowed)
    token = await server.token()
    assert await _socketio_connects(server, token, None)
    assert not await _socketio_connects(server, token, EVIL)
    assert await _socketio_connects(server, token, APP) is bool(allowed)
    # The server's own origin (a page it serves) is never refused.
    assert await _socketio_connects(server, token, server.url)

    # Long-polling: Engine.IO's refusal is JSON like every other error.
    async with httpx.AsyncClient(base_url=server.url) as http:
        poll = await http.get(
            "/socket.io/", params={"EIO": "4", "transport": "polling"}, headers={"Origin": EVIL}
        )
        assert poll.status_code == 400
        assert poll.headers["content-type"] == "application/json"
        assert "not an accepted origin" in poll.json()["error"]["message"]
        if allowed:
            opened = await http.get(
                "/socket.io/", params={"EIO": "4", "transport": "polling"}, headers={"Origin": APP}
            )
            assert opened.status_code == 200
            assert opened.headers["access-control-allow-origin"] == APP
            # Close the Engine.IO session (packet "1"), or it holds the shutdown open.
            sid = json.loads(opened.text[1:])["sid"]
            query = {"EIO": "4", "transport": "polling", "sid": sid}
            await http.post("/socket.io/", params=query, content=b"1")


def _realtime_url(server: RunningServer) -> str:
    return server.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime"


@pytest.mark.parametrize("allowed", ["", APP])
async def test_realtime_websocket_refuses_a_foreign_origin(
    launch: Callable[..., RunningServer], allowed: str
) -> None:
    server = launch(cors_allowed_origins=allowed)
    token = await server.token()
    auth = {"Authorization": f"Bearer {token}"}
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(_realtime_url(server), origin=EVIL, additional_headers=auth):  # type: ignore[arg-type]
            pass
    response = refused.value.response
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body)["error"]["code"] == "origin_not_allowed"

    # No Origin (a native app, an SDK), and an allowed one, are served.
    origins = [None, APP] if allowed else [None]
    for origin in origins:
        async with ws_connect(
            _realtime_url(server),
            origin=origin,  # type: ignore[arg-type]
            additional_headers=auth,
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"


def test_the_origin_rule() -> None:
    rule = Origins.parse(" https://a.example/ ,https://b.example,, ")
    assert rule.allowed == {"https://a.example", "https://b.example"} and not rule.any
    assert rule.allows(None) and rule.allows("")
    assert rule.allows("https://a.example") and rule.allows("https://b.example/")
    assert not rule.allows("https://c.example")
    assert not rule.allows("null")
    assert rule.allows("http://relay.example:8000", "relay.example:8000")
    assert not rule.allows("http://relay.example", "relay.example:8000")
    assert Origins.parse("*").allows("https://anything.example")
    assert not Origins.parse("").allows("https://a.example", "relay.example")
