"""The session's own tools, kept out of a pass-through client's view (either dialect).

A session declares tools upstream besides any a pass-through client declares itself:
the server's (function tools and remote MCP servers, credentials and all) and those a
client declared when it started the session. Their calls are answered by the server
or by that client, never by the pass-through client: it sees none of their items or
events, nor those tools in its session object. What it declares in ``session.update``
(or ``response.create``) is sent upstream together with them; a tool of its own that
takes the name of one of the session's is dropped (the session's wins).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from voxrelay.openai_realtime.fields import function_tools

_MCP_ITEMS = frozenset({"mcp_call", "mcp_list_tools", "mcp_approval_request"})
_SESSIONS = frozenset({"session.created", "session.updated"})
_RESPONSES = frozenset({"response.created", "response.done"})


class HiddenTools:
    def __init__(self, tools: Sequence[Mapping[str, Any]], dialect: str) -> None:
        self._beta = dialect == "beta"
        self._items: set[str] = set()
        self._calls: set[str] = set()
        # The tools a pass-through client declared itself, as it last sent them.
        self.client_tools: list[Any] = []
        self.declare(tools)

    def declare(self, tools: Sequence[Mapping[str, Any]]) -> None:
        """The session's own tools from now on (their calls so far stay hidden)."""
        self._tools = [dict(tool) for tool in tools]
        self._names = {str(t.get("name")) for t in tools if t.get("type", "function") == "function"}
        self._labels = {str(t.get("server_label")) for t in tools if t.get("type") == "mcp"}

    def __bool__(self) -> bool:
        return bool(self._tools)

    # -- what the client sends ---

    def merged(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """A client's ``session.update`` or ``response.create`` with the session's tools
        beside its own (the event as it is when it names no tools)."""
        key = {"session.update": "session", "response.create": "response"}.get(
            str(event.get("type"))
        )
        holder = event.get(key) if key else None
        if not self or key is None or not isinstance(holder, Mapping):
            return event
        if not isinstance(holder.get("tools"), list):
            return event
        own = [
            tool
            for tool in holder["tools"]
            if not (isinstance(tool, Mapping) and self._hidden_tool(tool))
        ]
        if key == "session":
            self.client_tools = own
        ours = function_tools(self._tools) if self._beta else self._tools
        return {**event, key: {**holder, "tools": [*own, *ours]}}

    # -- what the client hears ---

    def shown(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """``event`` as the client may see it: None to drop it, a copy where only part
        of it is hidden, or the event itself."""
        if not self:
            return event
        kind = event.get("type")
        if kind in _SESSIONS and isinstance(event.get("session"), Mapping):
            return {**event, "session": self.session(event["session"])}
        if kind in _RESPONSES and isinstance(event.get("response"), Mapping):
            response = event["response"]
            output = response.get("output")
            if isinstance(output, list) and any(self._hides(i) for i in output):
                kept = [i for i in output if not self._hides(i)]
                return {**event, "response": {**response, "output": kept}}
            return event
        item = event.get("item")
        if self._hides(item):
            return None
        if event.get("item_id") in self._items or event.get("call_id") in self._calls:
            return None
        return event

    def session(self, session: Mapping[str, Any]) -> dict[str, Any]:
        """A session object without the session's own tools."""
        out = dict(session)
        if isinstance(out.get("tools"), list):
            out["tools"] = [
                t for t in out["tools"] if not (isinstance(t, Mapping) and self._hidden_tool(t))
            ]
        return out

    def _hidden_tool(self, tool: Mapping[str, Any]) -> bool:
        if tool.get("type") == "mcp":
            return str(tool.get("server_label")) in self._labels
        return str(tool.get("name")) in self._names

    def _hides(self, item: Any) -> bool:
        """Whether ``item`` is one of the session's own (remembered, with its call)."""
        if not isinstance(item, Mapping):
            return False
        kind = item.get("type")
        item_id, call_id = item.get("id"), item.get("call_id")
        if item_id in self._items:
            return True
        hidden = (
            (kind == "function_call" and item.get("name") in self._names)
            or (kind == "function_call_output" and call_id in self._calls)
            or (kind in _MCP_ITEMS and item.get("server_label") in self._labels)
        )
        if hidden:
            if isinstance(item_id, str):
                self._items.add(item_id)
            if isinstance(call_id, str):
                self._calls.add(call_id)
        return hidden
