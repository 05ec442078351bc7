"""What a pass-through client sees of the session's own tools: nothing of their calls,
their outputs or the server's MCP servers, and its own tools beside them upstream."""

from __future__ import annotations

from voxrelay.openai_realtime.hidden_tools import HiddenTools

SERVER = {"type": "function", "name": "alert_caregiver", "parameters": {"type": "object"}}
MCP = {"type": "mcp", "server_label": "calendar", "server_url": "https://x", "headers": {"A": "s"}}
OWN = {"type": "function", "name": "get_weather"}


def test_calls_outputs_and_mcp_items_of_the_session_are_dropped() -> None:
    hidden = HiddenTools([SERVER, MCP], "ga")
    call = {"id": "item_1", "type": "function_call", "name": "alert_caregiver", "call_id": "c1"}
    mine = {"id": "item_2", "type": "function_call", "name": "get_weather", "call_id": "c2"}
    listed = {"id": "item_3", "type": "mcp_list_tools", "server_label": "calendar", "tools": []}
    assert hidden.shown({"type": "response.output_item.added", "item": call}) is None
    delta = {"type": "response.function_call_arguments.delta", "item_id": "item_1", "delta": "{"}
    assert hidden.shown(delta) is None
    output = {"type": "function_call_output", "id": "item_9", "call_id": "c1", "output": "{}"}
    assert hidden.shown({"type": "conversation.item.added", "item": output}) is None
    assert hidden.shown({"type": "conversation.item.added", "item": listed}) is None
    assert hidden.shown({"type": "mcp_list_tools.completed", "item_id": "item_3"}) is None
    done = {"type": "response.done", "response": {"id": "r", "output": [call, mine]}}
    assert hidden.shown(done) == {
        "type": "response.done",
        "response": {"id": "r", "output": [mine]},
    }
    own = {"type": "response.output_item.added", "item": mine}
    assert hidden.shown(own) is own
    updated = {"type": "session.updated", "session": {"tools": [OWN, SERVER, MCP]}}
    assert hidden.shown(updated) == {"type": "session.updated", "session": {"tools": [OWN]}}


def test_the_clients_tools_go_upstream_beside_the_sessions_own() -> None:
    hidden = HiddenTools([SERVER, MCP], "ga")
    clash = {"type": "function", "name": "alert_caregiver", "description": "mine"}
    update = {"type": "session.update", "session": {"tools": [OWN, clash]}}
    assert hidden.merged(update) == {
        "type": "session.update",
        "session": {"tools": [OWN, SERVER, MCP]},
    }
    untouched = {"type": "session.update", "session": {"instructions": "hi"}}
    assert hidden.merged(untouched) is untouched
    # Beta knows function tools only.
    beta = HiddenTools([SERVER, MCP], "beta").merged(update)
    assert beta["session"]["tools"] == [OWN, {k: SERVER[k] for k in ("type", "name", "parameters")}]
