"""Function calling over chat completions, for the ``local`` provider: the session's
function tools in the chat request's form, the calls a streamed answer makes (in
pieces), and earlier calls and their results as chat messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxrelay.providers.base import HistoryItem, HistoryToolCall


def chat_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Realtime function tool declarations as chat completions takes them (other kinds
    of tool, such as remote MCP servers, are the Realtime API's alone)."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description") or "",
                "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
        if tool.get("type", "function") == "function" and isinstance(tool.get("name"), str)
    ]


@dataclass(slots=True)
class _Pieces:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatToolCalls:
    """The function calls of one answer, put together from its streamed deltas (or from
    a whole message)."""

    def __init__(self) -> None:
        self._calls: dict[int, _Pieces] = {}

    def feed(self, tool_calls: Any) -> None:
        for position, call in enumerate(tool_calls if isinstance(tool_calls, list) else ()):
            if not isinstance(call, Mapping):
                continue
            index = call.get("index", position)
            pieces = self._calls.setdefault(
                index if isinstance(index, int) else position, _Pieces()
            )
            if isinstance(call.get("id"), str):
                pieces.id = call["id"]
            function = call.get("function")
            if isinstance(function, Mapping):
                if isinstance(function.get("name"), str):
                    pieces.name += function["name"]
                if isinstance(function.get("arguments"), str):
                    pieces.arguments.append(function["arguments"])

    def calls(self) -> list[tuple[str, str, str]]:
        """Each call as (call id, name, arguments JSON text), in order."""
        return [
            (pieces.id, pieces.name, "".join(pieces.arguments) or "{}")
            for _, pieces in sorted(self._calls.items())
            if pieces.name
        ]


def chat_messages(history: Sequence[HistoryItem]) -> list[dict[str, Any]]:
    """The conversation as chat messages: turns as they were, each function call as an
    assistant message calling it and a ``tool`` message with its result."""
    messages: list[dict[str, Any]] = []
    for item in history:
        if not isinstance(item, HistoryToolCall):
            if item.text:
                messages.append({"role": item.role, "content": item.text})
            continue
        function = {"name": item.name, "arguments": item.arguments}
        call = {"id": item.call_id, "type": "function", "function": function}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        output = item.output if item.output is not None else '{"status": "no result yet"}'
        messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return messages
