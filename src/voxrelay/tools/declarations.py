"""Function tools as the Realtime API declares them: a name, a description and the JSON
Schema of their arguments; and the arguments a model wrote, checked against it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator, SchemaError

from voxrelay.exceptions import InvalidTool

# What OpenAI accepts as a function name.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}
# Client tools one session may declare.
MAX_CLIENT_TOOLS = 64


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_EMPTY_OBJECT))

    def upstream(self) -> dict[str, Any]:
        """The tool as a ``session.update`` declares it."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }

    def check(self, arguments: str) -> tuple[dict[str, Any], str | None]:
        """The arguments a model wrote (JSON text) as an object, and why they do not fit
        the schema (None when they do)."""
        try:
            parsed = json.loads(arguments or "{}")
        except ValueError:
            return {}, "the arguments are not valid JSON"
        if not isinstance(parsed, dict):
            return {}, "the arguments are not a JSON object"
        problem = next(iter(_validator(self.parameters).iter_errors(parsed)), None)
        if problem is not None:
            where = "/".join(str(p) for p in problem.absolute_path) or "arguments"
            return parsed, f"{where}: {problem.message}"
        return parsed, None


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(dict(schema))


def function_tool(raw: Any, where: str) -> FunctionTool:
    """One function tool from its declaration; ``InvalidTool`` says what is wrong."""
    if not isinstance(raw, Mapping):
        raise InvalidTool(f"{where} must be an object")
    if raw.get("type", "function") != "function":
        raise InvalidTool(f"{where}: type must be 'function'")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidTool(f"{where}: name must be 1-64 letters, digits, _ or -")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise InvalidTool(f"{where} ({name}): description must be a string")
    parameters = raw.get("parameters", _EMPTY_OBJECT)
    if not isinstance(parameters, Mapping):
        raise InvalidTool(f"{where} ({name}): parameters must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(dict(parameters))
    except SchemaError as error:
        message = f"{where} ({name}): parameters is not a JSON Schema: {error.message}"
        raise InvalidTool(message) from None
    return FunctionTool(name, description, dict(parameters))


def client_tools(raw: Any, reserved: frozenset[str] = frozenset()) -> tuple[FunctionTool, ...]:
    """The function tools a client declares for its session (``tools``); none of them
    may take the name of one in ``reserved`` (the server's own)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidTool("tools must be a list of function tools")
    if len(raw) > MAX_CLIENT_TOOLS:
        raise InvalidTool(f"a session may declare at most {MAX_CLIENT_TOOLS} tools")
    tools = tuple(function_tool(entry, f"tools[{i}]") for i, entry in enumerate(raw))
    names = [tool.name for tool in tools]
    for name in names:
        if names.count(name) > 1:
            raise InvalidTool(f"tools: {name!r} is declared twice")
        if name in reserved:
            raise InvalidTool(f"tools: {name!r} is the name of one of the server's tools")
    return tools


def tool_name(declaration: Mapping[str, Any]) -> str | None:
    """The name of a function tool declaration (None for another kind of tool)."""
    if declaration.get("type", "function") != "function":
        return None
    name = declaration.get("name")
    return name if isinstance(name, str) else None
