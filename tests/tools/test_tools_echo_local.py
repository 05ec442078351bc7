"""Tools on the providers that are not the Realtime API: ``echo`` calls a tool when told
to (``call tool NAME {json}``), and ``local`` passes the tools to its chat-completions
model and runs the calls it makes (a fake chat-completions server on loopback stands in
for the model)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from harness import EventReader, RunningServer
from openai_ws.realtime_ws_client import connect, text_item
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from test_tools_sse import ALERT_TOOL
from tool_server import CAREGIVER_TOKEN, ToolServer

from voxrelay.client import VoxrelayClient


def _final(reader: EventReader, words: str) -> Any:
    return reader.wait_for(
        "transcript",
        lambda e: (
            e.data.get("role") == "assistant"
            and e.data.get("final")
            and words in e.data.get("text", "")
        ),
        timeout=30,
    )


async def test_echo_calls_a_server_tool_and_a_client_tool_when_told_to(
    launch: Callable[..., RunningServer], tools_path: Path, tool_server: ToolServer
) -> None:
    relay = launch(tools=str(tools_path))
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader = EventReader(client.events(tools=json.dumps([ALERT_TOOL])))
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        await client.text(cid, 'call tool alert_caregiver {"message": "hi", "urgency": "low"}')
        said = await _final(reader, "The alert_caregiver tool said:")
        assert '"sent": true' in said.data["text"]
        [request] = tool_server.received("/alert")
        assert request.headers["authorization"] == f"Bearer {CAREGIVER_TOKEN}"
        await client.text(cid, 'call tool show_on_screen {"note": "lunch"}')
        called = await reader.wait_for("tool_call")
        assert called.data["arguments"] == {"note": "lunch"}
        await client.tool_result(cid, called.data["callId"], {"shown": True})
        await _final(reader, 'The show_on_screen tool said: {"shown": true}')
        for _ in range(100):  # stored by the session's writer, in order, soon after
            stored = (await client.conversation(cid)).get("toolCalls", [])
            if len(stored) == 2:
                break
            await asyncio.sleep(0.05)
        assert [c["runBy"] for c in stored] == ["server", "client"]
        await reader.close()


async def test_a_server_tool_over_the_speaking_websocket_is_answered_aloud(
    launch: Callable[..., RunningServer], tools_path: Path, tool_server: ToolServer
) -> None:
    relay = launch(tools=str(tools_path))
    async with connect(relay, await relay.token()) as conversation:
        await conversation.until("conversation.created")
        text = 'call tool alert_caregiver {"message": "fell", "urgency": "high"}'
        await conversation.conn.conversation.item.create(item=text_item(text))
        await conversation.conn.response.create()
        done = await conversation.until("response.output_audio_transcript.done", timeout=20)
        assert done[-1]["transcript"].startswith("The alert_caregiver tool said:")
        assert tool_server.received("/alert")[0].body["message"] == "fell"
    assert conversation.problems == []


class _Chat:
    """A chat-completions server whose model calls ``alert_caregiver`` once, then
    answers in words with what the tool said."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        told = [m for m in body["messages"] if m["role"] == "tool"]

        async def stream() -> AsyncIterator[bytes]:
            if not told:
                arguments = json.dumps({"message": "she asked for help", "urgency": "high"})
                for index, piece in enumerate((arguments[:10], arguments[10:])):
                    call: dict[str, Any] = {"index": 0, "function": {"arguments": piece}}
                    if index == 0:  # the id and the name come with the first piece only
                        call.update(id="call_local1", type="function")
                        call["function"]["name"] = "alert_caregiver"
                    yield _chunk({"tool_calls": [call]})
                yield _chunk({}, "tool_calls")
            else:
                sent = json.loads(told[-1]["content"])["sent"]
                yield _chunk({"role": "assistant", "content": f"Done, sent is {sent}."})
                yield _chunk({}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return (
        b"data: "
        + json.dumps({"object": "chat.completion.chunk", "choices": [choice]}).encode()
        + b"\n\n"
    )


@pytest.fixture
async def chat() -> AsyncIterator[_Chat]:
    fake = _Chat()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.completions, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    fake.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    yield fake
    server.should_exit = True
    await task


async def test_the_local_provider_runs_the_calls_its_chat_model_makes(
    launch: Callable[..., RunningServer],
    tools_path: Path,
    tool_server: ToolServer,
    chat: _Chat,
) -> None:
    relay = launch(provider="local", local_llm_url=chat.url, tools=str(tools_path))
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader = EventReader(client.events())
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        await client.text(cid, "Please tell my daughter I need help.")
        await _final(reader, "Done, sent is True.")
        first, second = chat.requests
        # The model was offered the server's tools in chat completions' form.
        offered = {t["function"]["name"]: t for t in first["tools"]}
        assert offered["alert_caregiver"]["type"] == "function"
        assert offered["alert_caregiver"]["function"]["parameters"]["required"] == [
            "message",
            "urgency",
        ]
        assert tool_server.received("/alert")[0].body == {
            "message": "she asked for help",
            "urgency": "high",
        }
        # The next request carries the call and its result, as chat completions has them.
        call, result = second["messages"][-2:]
        assert call["role"] == "assistant" and call["tool_calls"][0]["id"] == "call_local1"
        assert call["tool_calls"][0]["function"]["name"] == "alert_caregiver"
        assert result["role"] == "tool" and result["tool_call_id"] == "call_local1"
        assert json.loads(result["content"])["sent"] is True
        for _ in range(100):  # the result is stored by the session's writer soon after
            stored = (await client.conversation(cid)).get("toolCalls", [])
            if stored and stored[-1]["status"] != "pending":
                break
            await asyncio.sleep(0.05)
        assert [(c["name"], c["status"]) for c in stored] == [("alert_caregiver", "completed")]
        await reader.close()
