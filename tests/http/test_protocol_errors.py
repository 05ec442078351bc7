"""Errors answered below the routes are JSON too (``{"error": {"code", "message"}}``):
uvicorn's invalid-HTTP 400, unknown routes and methods, WebSocket upgrades that
fail or go nowhere, a plain GET of the WebSocket endpoint, Engine.IO's refusals."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from harness import RunningServer

_UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


async def _raw(server: RunningServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is; the status, headers and body of the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    writer.close()
    return int(lines[0].split(" ")[1]), headers, body


def _json_error(headers: dict[str, str], body: bytes, code: str) -> str:
    assert headers["content-type"] == "application/json", (headers, body)
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /realtime/text HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
)
async def test_invalid_http_is_a_json_400(server: RunningServer, request_bytes: bytes) -> None:
    status, headers, body = await _raw(server, request_bytes)
    assert status == 400
    _json_error(headers, body, "invalid_request")
    assert headers["connection"] == "close"


async def test_unknown_routes_and_methods(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        missing = await http.get("/nothing/here")
        assert missing.status_code == 404
        _json_error(dict(missing.headers), missing.content, "not_found")
        wrong = await http.delete("/healthz")
        assert wrong.status_code == 405
        _json_error(dict(wrong.headers), wrong.content, "method_not_allowed")
        plain = await http.get("/v1/realtime")
        assert plain.status_code == 426
        assert plain.headers["upgrade"] == "websocket"
        _json_error(dict(plain.headers), plain.content, "upgrade_required")
        engineio = await http.get("/socket.io/", params={"EIO": "1"})
        assert engineio.status_code == 400
        message = _json_error(dict(engineio.headers), engineio.content, "invalid_request")
        assert "unsupported version" in message


async def test_a_websocket_upgrade_to_an_unknown_path_is_a_json_404(server: RunningServer) -> None:
    status, headers, body = await _raw(
        server,
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n" + _UPGRADE + b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    assert status == 404
    _json_error(headers, body, "not_found")


async def test_a_bad_websocket_handshake_is_a_json_400(server: RunningServer) -> None:
    status, headers, body = await _raw(
        server,
        b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n"
        + _UPGRADE
        + b"Sec-WebSocket-Version: 99\r\n\r\n",
    )
    assert status == 400
    assert "Sec-WebSocket-Version" in _json_error(headers, body, "invalid_request")
