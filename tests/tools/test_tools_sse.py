"""Server and client tools over SSE and HTTP, through the openai provider against the
fake upstream (which calls functions as the Realtime API does) and a real HTTP tool
server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, RunningServer, wait_until
from tool_server import ALERT_PARAMETERS, CAREGIVER_TOKEN, KEY, ToolServer, call_text, tools_file

from voxrelay.client import ApiError, VoxrelayClient

ALERT_TOOL = {
    "type": "function",
    "name": "show_on_screen",
    "description": "Show a note on the phone's screen.",
    "parameters": {"type": "object", "properties": {"note": {"type": "string"}}},
}


def outputs(fake: FakeRealtimeServer) -> list[dict[str, Any]]:
    """The ``function_call_output`` items the upstream was given, in order."""
    items = [e["item"] for e in fake.client_events("conversation.item.create")]
    return [item for item in items if item.get("type") == "function_call_output"]


def calls(fake: FakeRealtimeServer) -> list[dict[str, Any]]:
    """The function calls the fake model made, as ``response.output_item.done`` gave them."""
    done = fake.server_events("response.output_item.done")
    return [e["item"] for e in done if e["item"]["type"] == "function_call"]


async def _open(client: VoxrelayClient, **params: Any) -> tuple[EventReader, str]:
    reader = EventReader(client.events(**params))
    started = await reader.wait_for("conversation_started")
    return reader, started.data["conversationId"]


def _answer(reader: EventReader, words: str) -> Any:
    return reader.wait_for(
        "transcript",
        lambda e: (
            e.data.get("role") == "assistant"
            and e.data.get("final")
            and words in e.data.get("text", "")
        ),
        timeout=15,
    )


async def _stored_calls(
    client: VoxrelayClient, cid: str, count: int, messages: int = 0
) -> dict[str, Any]:
    """The conversation once ``count`` tool calls are stored and none is pending (and
    at least ``messages`` messages: the answer's is stored after its transcript went
    out, so it may come a moment later than the call's)."""
    for _ in range(250):
        conversation = await client.conversation(cid)
        found = conversation.get("toolCalls", [])
        done = len(found) >= count and all(c["status"] != "pending" for c in found)
        if done and len(conversation["messages"]) >= messages:
            return conversation
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"fewer than {count} finished tool calls (or {messages} messages): {conversation}"
    )


async def test_a_server_tool_runs_and_the_model_answers_aloud(
    relay: RunningServer, fake: FakeRealtimeServer, tool_server: ToolServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client)
        await client.text(cid, call_text("alert_caregiver", message="I fell", urgency="high"))
        answer = await _answer(reader, "alert_caregiver tool said")
        # The tool service got the arguments, with the header from the environment.
        [request] = tool_server.received("/alert")
        assert request.body == {"message": "I fell", "urgency": "high"}
        assert request.headers["authorization"] == f"Bearer {CAREGIVER_TOKEN}"
        # The upstream got its answer as the protocol wants: the output, then a response.
        [call] = calls(fake)
        [output] = outputs(fake)
        assert output["call_id"] == call["call_id"]
        assert json.loads(output["output"]) == {"sent": True, "received": request.body}
        kinds = [e["type"] for e in fake.client_events()]
        after = kinds[kinds.index("conversation.item.create", kinds.index("response.create")) :]
        assert after[:2] == ["conversation.item.create", "response.create"]
        assert "sent" in answer.data["text"]
        # Nobody listening hears of a server tool's call, nor of its credentials.
        assert reader.of_type("tool_call") == [] and reader.of_type("error") == []
        assert all(CAREGIVER_TOKEN not in json.dumps(e.data) for e in reader.events)
        conversation = await _stored_calls(client, cid, 1, messages=2)
        messages = conversation["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        [stored] = conversation["toolCalls"]
        assert stored["callId"] == call["call_id"] and stored["name"] == "alert_caregiver"
        assert stored["arguments"] == {"message": "I fell", "urgency": "high"}
        assert stored["output"] == {"sent": True, "received": request.body}
        assert (stored["status"], stored["runBy"], stored["error"]) == ("completed", "server", None)
        assert stored["afterMessageId"] == messages[0]["id"]
        assert set(stored) == {
            "id", "callId", "name", "arguments", "output", "status", "error", "runBy",
            "createdAt", "afterMessageId",
        }  # fmt: skip
        await reader.close()


@pytest.mark.parametrize(
    ("tool", "why"),
    [
        ("broken_lookup", "HTTP 500"),
        ("slow_lookup", "did not answer within 0.5 s"),
        ("garbage_lookup", "not JSON"),
    ],
)
async def test_a_tool_that_fails_gives_the_model_an_error_and_the_conversation_goes_on(
    relay: RunningServer, fake: FakeRealtimeServer, tool: str, why: str
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client)
        await client.text(cid, call_text(tool, message="hello", urgency="low"))
        error = await reader.wait_for("error", timeout=15)
        assert error.data["code"] == "tool_failed" and why in error.data["message"]
        await _answer(reader, f"{tool} tool said")
        [output] = outputs(fake)
        assert why in json.loads(output["output"])["error"]
        # The conversation goes on.
        await client.text(cid, "are you still there?")
        await _answer(reader, "You said: are you still there?")
        [stored] = (await _stored_calls(client, cid, 1))["toolCalls"]
        assert stored["status"] == "failed" and why in stored["error"]
        assert stored["output"] is None
        await reader.close()


async def test_arguments_that_do_not_fit_the_schema_never_reach_the_tool(
    relay: RunningServer, fake: FakeRealtimeServer, tool_server: ToolServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client)
        await client.text(cid, call_text("alert_caregiver", message="hi", urgency="whenever"))
        error = await reader.wait_for("error", timeout=15)
        assert error.data["code"] == "tool_failed" and "urgency" in error.data["message"]
        await _answer(reader, "alert_caregiver tool said")
        assert tool_server.received("/alert") == []
        [output] = outputs(fake)
        assert "urgency" in json.loads(output["output"])["error"]
        await reader.close()


async def test_a_call_of_a_tool_nobody_declared_gets_an_error_result(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client)
        await client.text(cid, call_text("launch_rockets", count=3))
        await _answer(reader, "launch_rockets tool said")
        [output] = outputs(fake)
        assert json.loads(output["output"]) == {"error": "there is no tool named launch_rockets"}
        assert (await reader.wait_for("error")).data["code"] == "tool_failed"
        await reader.close()


async def test_a_client_tool_is_called_over_sse_and_answered_over_http(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client, tools=json.dumps([ALERT_TOOL]))
        # The upstream was told of the client's tool beside the server's.
        [update] = fake.client_events("session.update")
        names = [t["name"] for t in update["session"]["tools"]]
        assert names[-1] == "show_on_screen" and "alert_caregiver" in names
        await client.text(cid, call_text("show_on_screen", note="take your pills"))
        event = await reader.wait_for("tool_call", timeout=15)
        # The call reaches the client as soon as it is whole, before its answer ends.
        await wait_until(lambda: fake.server_events("response.done"))
        [call] = calls(fake)
        assert event.data == {
            "callId": call["call_id"],
            "name": "show_on_screen",
            "arguments": {"note": "take your pills"},
            "responseId": fake.server_events("response.done")[0]["response"]["id"],
        }
        assert outputs(fake) == []  # the model waits for the client
        answered = await client.tool_result(cid, call["call_id"], {"shown": True})
        assert answered == {"ok": True}
        await _answer(reader, 'show_on_screen tool said: {"shown": true}')
        # A second result for the same call is refused; so is one for no call at all.
        with pytest.raises(ApiError) as again:
            await client.tool_result(cid, call["call_id"], {"shown": False})
        assert (again.value.status, again.value.code) == (409, "already_answered")
        with pytest.raises(ApiError) as unknown:
            await client.tool_result(cid, "call_nope", {})
        assert (unknown.value.status, unknown.value.code) == (404, "not_found")
        assert len(outputs(fake)) == 1
        [stored] = (await _stored_calls(client, cid, 1))["toolCalls"]
        assert (stored["runBy"], stored["output"], stored["status"]) == (
            "client",
            {"shown": True},
            "completed",
        )
        await client.end(cid)
        # After the session: no live session to take a result.
        with pytest.raises(ApiError) as ended:
            await client.tool_result(cid, call["call_id"], {})
        assert ended.value.status == 409
        await reader.close()


async def test_a_client_that_never_answers_its_tool_gives_the_model_an_error(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client, tools=json.dumps([ALERT_TOOL]))
        await client.text(cid, call_text("show_on_screen", note="hello"))
        await reader.wait_for("tool_call", timeout=15)
        error = await reader.wait_for("error", timeout=10)
        assert error.data["code"] == "tool_failed" and "did not answer" in error.data["message"]
        await _answer(reader, "show_on_screen tool said")
        assert "did not answer" in json.loads(outputs(fake)[0]["output"])["error"]
        await reader.close()


async def test_bad_tool_declarations_are_refused_with_invalid_tool(relay: RunningServer) -> None:
    bad = [
        [{"type": "function", "name": "no spaces allowed"}],
        [{"type": "function", "name": "x", "parameters": {"type": "nonsense"}}],
        [{"type": "function", "name": "alert_caregiver"}],  # the server's own
        [ALERT_TOOL, ALERT_TOOL],
        {"not": "a list"},
    ]
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        for tools in bad:
            with pytest.raises(ApiError) as refused:
                await client.create_session(tools=tools)
            assert (refused.value.status, refused.value.code) == (422, "invalid_tool"), tools
        with pytest.raises(ApiError) as garbled:
            async for _ in client.events(tools="[not json"):
                pass
        assert (garbled.value.status, garbled.value.code) == (422, "invalid_tool")
        # Nothing was created for any of them.
        assert await client.conversations() == []


async def test_an_async_tool_is_answered_at_once_and_its_result_told_later(
    launch: Callable[..., RunningServer],
    fake: FakeRealtimeServer,
    tool_server: ToolServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAREGIVER_TOKEN", CAREGIVER_TOKEN)
    tool_server.slow_seconds = 1.0
    later = f'[[tools]]\nname = "book_visit"\nurl = "{tool_server.url}/slow"\nasync = true\n'
    path = tools_file(tmp_path, tool_server, extra="\n" + later)
    relay = launch(provider="openai", openai_url=fake.url, openai_api_key=KEY, tools=str(path))
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client)
        await client.text(cid, call_text("book_visit", day="monday"))
        first = await _answer(reader, "book_visit tool said")
        assert "will follow" in first.data["text"]
        [pending] = outputs(fake)
        assert json.loads(pending["output"])["status"] == "pending"
        # The result, when it comes, is told to the model and answered aloud.
        second = await _answer(reader, "system tool said: The result of book_visit")
        assert '"sent": true' in second.data["text"]
        notes = [
            e["item"]
            for e in fake.client_events("conversation.item.create")
            if e["item"].get("role") == "system"
        ]
        assert len(notes) == 1 and len(outputs(fake)) == 1
        assert len(fake.client_events("response.create")) == 3  # the text, the output, the note
        [stored] = (await _stored_calls(client, cid, 1))["toolCalls"]
        assert stored["status"] == "completed" and stored["output"]["sent"] is True
        await reader.close()


async def test_ending_the_session_while_a_tool_runs_stores_the_call_as_failed(
    launch: Callable[..., RunningServer],
    fake: FakeRealtimeServer,
    tool_server: ToolServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAREGIVER_TOKEN", CAREGIVER_TOKEN)
    tool_server.slow_seconds = 5.0
    patient = f'[[tools]]\nname = "slow_ok"\nurl = "{tool_server.url}/slow"\ntimeout_s = 30\n'
    path = tools_file(tmp_path, tool_server, extra="\n" + patient)
    relay = launch(provider="openai", openai_url=fake.url, openai_api_key=KEY, tools=str(path))
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client)
        await client.text(cid, call_text("slow_ok"))
        await wait_until(lambda: tool_server.received("/slow"), seconds=10)
        ended = await client.end(cid)
        assert ended["status"] == "ended"
        assert (await reader.wait_for("conversation_ended")).data["reason"] == "client_end"
        [stored] = (await client.conversation(cid))["toolCalls"]
        assert stored["status"] == "failed" and "session ended" in stored["error"]
        assert outputs(fake) == []
        await reader.close()


async def test_a_resumed_conversation_tells_the_upstream_its_earlier_calls_in_order(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client)
        await client.text(cid, call_text("alert_caregiver", message="dizzy", urgency="low"))
        await _answer(reader, "alert_caregiver tool said")
        await _stored_calls(client, cid, 1)
        await wait_until(lambda: len(fake.server_events("response.done")) >= 2)
        await client.end(cid)
        await reader.close()
        [call] = calls(fake)
        reader, _ = await _open(client, conversationId=cid)
        await wait_until(lambda: len(fake.connections) == 2)
        await wait_until(lambda: len(fake.client_events("conversation.item.create", conn=1)) >= 4)
        items = [e["item"] for e in fake.client_events("conversation.item.create", conn=1)]
        kinds = [(i["type"], i.get("role")) for i in items]
        assert kinds == [
            ("message", "user"),
            ("function_call", None),
            ("function_call_output", None),
            ("message", "assistant"),
        ]
        assert items[1]["call_id"] == items[2]["call_id"] == call["call_id"]
        assert json.loads(items[1]["arguments"]) == {"message": "dizzy", "urgency": "low"}
        assert json.loads(items[2]["output"])["sent"] is True
        await reader.close()


def test_alert_parameters_are_a_schema() -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(ALERT_PARAMETERS)


async def test_a_call_waiting_for_its_result_survives_a_new_upstream_link(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        reader, cid = await _open(client, tools=json.dumps([ALERT_TOOL]))
        await client.text(cid, call_text("show_on_screen", note="doctor at 3"))
        called = await reader.wait_for("tool_call", timeout=15)
        await wait_until(lambda: fake.server_events("response.done"))
        fake.drop()
        await reader.wait_for("upstream_restored", timeout=15)

        # The new link knows the call (without a result yet) ...
        def created() -> list[dict[str, Any]]:
            return [e["item"] for e in fake.client_events("conversation.item.create", conn=1)]

        await wait_until(lambda: any(i["type"] == "function_call" for i in created()))
        items = created()
        [known] = [i for i in items if i["type"] == "function_call"]
        assert known["call_id"] == called.data["callId"]
        assert not [i for i in items if i["type"] == "function_call_output"]
        # ... so the result, when it comes, is taken there and answered.
        await client.tool_result(cid, called.data["callId"], "shown")
        await _answer(reader, 'show_on_screen tool said: "shown"')
        [output] = [
            e["item"]
            for e in fake.client_events("conversation.item.create", conn=1)
            if e["item"]["type"] == "function_call_output"
        ]
        assert output["call_id"] == called.data["callId"]
        await reader.close()
