"""Tools through ``/v1/realtime`` in pass-through mode, with the official ``openai``
client: its own function tools pass through untouched (it answers their calls itself);
the server's tools and MCP servers are declared upstream beside them, and their calls
and credentials never reach the client."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import RunningServer, wait_until
from openai_ws.realtime_ws_client import Conversation, connect, text_item
from test_tools_sse import outputs
from tool_server import CAREGIVER_TOKEN, KEY, ToolServer, call_text, tools_file

from voxrelay.client import VoxrelayClient

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather where the user is.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
MCP_SECRET = "mcp-calendar-secret-91"
MCP = """
[[tools]]
type = "mcp"
server_label = "calendar"
server_url = "https://calendar.example.test/mcp"
headers = { Authorization = "Bearer ${CALENDAR_TOKEN}" }
"""


@pytest.fixture
def relay(
    launch: Callable[..., RunningServer],
    fake: FakeRealtimeServer,
    tool_server: ToolServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> RunningServer:
    monkeypatch.setenv("CAREGIVER_TOKEN", CAREGIVER_TOKEN)
    monkeypatch.setenv("CALENDAR_TOKEN", MCP_SECRET)
    path = tools_file(tmp_path, tool_server, extra=MCP)
    return launch(provider="openai", openai_url=fake.url, openai_api_key=KEY, tools=str(path))


def _tool_names(session: dict[str, Any]) -> list[str]:
    return [t.get("name") or t.get("server_label") for t in session.get("tools") or []]


def _no_secret(conversation: Conversation) -> None:
    text = json.dumps(conversation.events)
    assert MCP_SECRET not in text and CAREGIVER_TOKEN not in text
    for event in conversation.events:
        assert "calendar" not in json.dumps(event), event


async def _say(conversation: Conversation, text: str) -> list[dict[str, Any]]:
    await conversation.conn.conversation.item.create(item=text_item(text))
    await conversation.conn.response.create()
    return await conversation.until("response.done")


async def test_the_clients_own_tool_passes_through_and_it_answers_the_call(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with connect(relay, token) as conversation:
        await conversation.until("conversation.created")
        await conversation.conn.session.update(session={"type": "realtime", "tools": [WEATHER]})
        update = (await fake.wait_for("session.update", count=2))[-1]
        # Upstream: the client's tool, and the server's beside it (MCP credentials too).
        upstream = update["session"]["tools"]
        assert upstream[0] == WEATHER
        assert "alert_caregiver" in _tool_names(update["session"])
        [mcp] = [t for t in upstream if t.get("type") == "mcp"]
        assert mcp["headers"] == {"Authorization": f"Bearer {MCP_SECRET}"}
        while True:
            updated = (await conversation.until("session.updated"))[-1]
            if _tool_names(updated["session"]):
                break
        assert _tool_names(updated["session"]) == ["get_weather"]

        turn = await _say(conversation, call_text("get_weather", city="Haifa"))
        kinds = [e["type"] for e in turn]
        assert "response.function_call_arguments.delta" in kinds
        done = next(e for e in turn if e["type"] == "response.function_call_arguments.done")
        assert (done["name"], json.loads(done["arguments"])) == ("get_weather", {"city": "Haifa"})
        [call] = turn[-1]["response"]["output"]
        assert call["type"] == "function_call" and call["call_id"] == done["call_id"]

        # The client answers its own call, as the protocol has it.
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '"sunny"'}
        await conversation.conn.conversation.item.create(item=output)
        await conversation.conn.response.create()
        answer = await conversation.until("response.output_audio_transcript.done")
        assert answer[-1]["transcript"] == 'The get_weather tool said: "sunny"'
        await conversation.until("response.done")
        _no_secret(conversation)
        cid = conversation.of_type("conversation.created")[0]["conversation"]["id"]
    assert conversation.problems == []
    async with VoxrelayClient(relay.url, token) as client:
        for _ in range(200):
            stored = (await client.conversation(cid)).get("toolCalls", [])
            if stored and stored[0]["status"] == "completed":
                break
            await wait_until(lambda: True)
        [one] = stored
        assert (one["name"], one["runBy"], one["output"]) == ("get_weather", "client", "sunny")


async def test_a_server_tool_is_answered_without_the_client_seeing_its_call(
    relay: RunningServer, fake: FakeRealtimeServer, tool_server: ToolServer
) -> None:
    token = await relay.token()
    async with connect(relay, token) as conversation:
        await conversation.until("conversation.created")
        await conversation.conn.session.update(session={"type": "realtime", "tools": [WEATHER]})
        await fake.wait_for("session.update", count=2)
        text = call_text("alert_caregiver", message="I need help", urgency="high")
        await conversation.conn.conversation.item.create(item=text_item(text))
        await conversation.conn.response.create()
        # The call's answer ends with nothing in it; the model then speaks its answer.
        first = await conversation.until("response.done")
        assert first[-1]["response"]["output"] == []
        spoken = await conversation.until("response.output_audio_transcript.done")
        assert spoken[-1]["transcript"].startswith("The alert_caregiver tool said")
        await conversation.until("response.done")
        assert tool_server.received("/alert")[0].body["message"] == "I need help"
        assert len(outputs(fake)) == 1
        hidden = {"function_call", "function_call_output"}
        for event in conversation.events:
            assert not event["type"].startswith("response.function_call")
            item = event.get("item") or {}
            assert item.get("type") not in hidden, event
        _no_secret(conversation)
    assert conversation.problems == []
