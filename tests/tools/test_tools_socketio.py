"""Tools over Socket.IO (python-socketio client): a client tool declared with
``POST /realtime/session``, called as ``tool-call`` and answered with ``tool-result``;
a server tool answered without the socket hearing of its call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import socketio
from fakes.openai_realtime import FakeRealtimeServer
from harness import RunningServer
from test_tools_sse import ALERT_TOOL, outputs
from tool_server import ToolServer, call_text

NS = "/realtime"


class _Socket:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()
        self.client.on("*", self._on, namespace=NS)

    def _on(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))
        self._changed.set()

    async def wait_for(self, name: str, words: str = "", timeout: float = 15) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                for event, data in self.events:
                    if event == name and words in json.dumps(data):
                        return data
                self._changed.clear()
                await self._changed.wait()

    async def call(self, event: str, data: Any) -> Any:
        return await self.client.call(event, data, namespace=NS, timeout=10)


async def _joined(relay: RunningServer, **fields: Any) -> tuple[_Socket, dict[str, Any]]:
    token = await relay.token()
    async with httpx.AsyncClient(base_url=relay.url) as http:
        response = await http.post(
            "/realtime/session", json=fields, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 201, response.text
    session = response.json()["session"]
    sock = _Socket()
    await sock.client.connect(
        relay.url, namespaces=[NS], auth={"token": token}, transports=["websocket"]
    )
    ack = await sock.call("join-session", {"sessionId": session["id"]})
    assert ack["ok"] is True, ack
    return sock, session


async def test_a_client_tool_is_called_and_answered_over_socketio(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    sock, _ = await _joined(relay, tools=[ALERT_TOOL])
    try:
        ack = await sock.call("text-message", {"text": call_text("show_on_screen", note="hi")})
        assert ack["ok"] is True
        called = await sock.wait_for("tool-call")
        assert called["name"] == "show_on_screen" and called["arguments"] == {"note": "hi"}
        assert set(called) == {"callId", "name", "arguments", "responseId"}
        ack = await sock.call("tool-result", {"callId": called["callId"], "output": "shown"})
        assert ack == {"ok": True}
        await sock.wait_for("transcript", 'show_on_screen tool said: \\"shown\\"')
        [output] = outputs(fake)
        assert (output["call_id"], json.loads(output["output"])) == (called["callId"], "shown")
        # Answered twice, or with no call id: refused, and the socket stays up.
        again = await sock.call("tool-result", {"callId": called["callId"], "output": 1})
        assert again["ok"] is False and again["error"]["code"] == "already_answered"
        missing = await sock.call("tool-result", {"output": 1})
        assert missing["ok"] is False and missing["error"]["code"] == "invalid_request"
        unknown = await sock.call("tool-result", {"callId": "call_nope", "output": 1})
        assert unknown["ok"] is False and unknown["error"]["code"] == "not_found"
        assert len(outputs(fake)) == 1
    finally:
        await sock.client.disconnect()


async def test_a_server_tool_is_answered_without_the_socket_hearing_of_it(
    relay: RunningServer, fake: FakeRealtimeServer, tool_server: ToolServer
) -> None:
    sock, _ = await _joined(relay)
    try:
        text = call_text("alert_caregiver", message="no answer at the door", urgency="high")
        assert (await sock.call("text-message", {"text": text}))["ok"] is True
        await sock.wait_for("transcript", "alert_caregiver tool said")
        assert tool_server.received("/alert")[0].body["urgency"] == "high"
        assert [e for e, _ in sock.events if e in ("tool-call", "error")] == []
    finally:
        await sock.client.disconnect()


async def test_a_socket_declares_its_tools_with_an_event(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    sock, _ = await _joined(relay)
    try:
        ack = await sock.call("declare-tools", {"tools": [ALERT_TOOL]})
        assert ack == {"ok": True, "tools": ["show_on_screen"]}
        update = (await fake.wait_for("session.update", count=2))[-1]
        names = [t.get("name") for t in update["session"]["tools"]]
        assert "show_on_screen" in names and "alert_caregiver" in names
        text = call_text("show_on_screen", note="water the plants")
        assert (await sock.call("text-message", {"text": text}))["ok"] is True
        called = await sock.wait_for("tool-call")
        assert called["arguments"] == {"note": "water the plants"}
        assert (await sock.call("tool-result", {"callId": called["callId"], "output": 1}))["ok"]
        await sock.wait_for("transcript", "show_on_screen tool said: 1")
        # A bad declaration is refused, and the tools declared stay.
        bad = await sock.call("declare-tools", {"tools": [{"type": "function", "name": "a b"}]})
        assert bad["ok"] is False and bad["error"]["code"] == "invalid_tool"
        clash = await sock.call("declare-tools", {"tools": [{"name": "alert_caregiver"}]})
        assert clash["ok"] is False and clash["error"]["code"] == "invalid_tool"
        missing = await sock.call("declare-tools", {})
        assert missing["ok"] is False and missing["error"]["code"] == "invalid_request"
        assert len(fake.client_events("session.update")) == 2
    finally:
        await sock.client.disconnect()
