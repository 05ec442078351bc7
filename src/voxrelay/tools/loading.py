"""The tools file (``VOXRELAY_TOOLS``): TOML, or JSON for a name ending ``.json``.

Each ``[[tools]]`` entry is a function tool (``name``, ``description``,
``parameters``, and ``url`` or ``callable``; optional ``headers``, ``timeout_s``,
``async``) or, with ``type = "mcp"``, a remote MCP server the upstream calls itself.
Header values (and an MCP server's ``authorization``) may name environment variables
as ``${NAME}``. Whatever is wrong with the file is said in one line, at start.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from voxrelay.exceptions import InvalidTool
from voxrelay.tools.declarations import function_tool
from voxrelay.tools.toolbox import NO_TOOLS, HttpEndpoint, PythonCallable, ServerTool, Toolbox

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FUNCTION_KEYS = frozenset(
    {
        "type",
        "name",
        "description",
        "parameters",
        "url",
        "callable",
        "headers",
        "timeout_s",
        "async",
    }
)
_MCP_KEYS = frozenset(
    {
        "type",
        "server_label",
        "server_url",
        "server_description",
        "headers",
        "authorization",
        "allowed_tools",
        "require_approval",
    }
)
_DEFAULT_TIMEOUT_S = 10.0


class ToolFileError(ValueError):
    """The tools file cannot be used; the message says why, in one line."""


def load_tools(path: str | None, env: Mapping[str, str] | None = None) -> Toolbox:
    """The toolbox the file at ``path`` declares (none without a path)."""
    if not path:
        return NO_TOOLS
    env = os.environ if env is None else env
    try:
        return _toolbox(_read(Path(path)), env)
    except InvalidTool as error:
        raise ToolFileError(f"tools file {path}: {error.message}") from None
    except ToolFileError as error:
        raise ToolFileError(f"tools file {path}: {error}") from None


def _read(path: Path) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        raise ToolFileError("YAML is not read; write the tools as TOML or JSON")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ToolFileError(f"cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ToolFileError("is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except ValueError as error:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ToolFileError(f"is not valid {kind}: {error}") from None


def _toolbox(data: Any, env: Mapping[str, str]) -> Toolbox:
    if not isinstance(data, dict) or not isinstance(data.get("tools"), list):
        raise ToolFileError('declares no tools: write [[tools]] entries (JSON: {"tools": [...]})')
    functions: dict[str, ServerTool] = {}
    mcp: list[dict[str, Any]] = []
    for index, entry in enumerate(data["tools"]):
        where = f"tools[{index}]"
        if isinstance(entry, dict) and entry.get("type") == "mcp":
            server = _mcp(entry, where, env)
            if any(other["server_label"] == server["server_label"] for other in mcp):
                raise ToolFileError(f"{where}: server_label {server['server_label']!r} is taken")
            mcp.append(server)
            continue
        tool = _function(entry, where, env)
        if tool.tool.name in functions:
            raise ToolFileError(f"{where}: the name {tool.tool.name!r} is taken")
        functions[tool.tool.name] = tool
    return Toolbox(functions, tuple(mcp))


def _function(entry: Any, where: str, env: Mapping[str, str]) -> ServerTool:
    declared = function_tool(entry, where)
    where = f"{where} ({declared.name})"
    _no_other_keys(entry, _FUNCTION_KEYS, where)
    url, path = entry.get("url"), entry.get("callable")
    runner: HttpEndpoint | PythonCallable
    if (url is None) == (path is None):
        raise ToolFileError(f"{where}: give either url or callable")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ToolFileError(f"{where}: url must be an http:// or https:// URL")
        runner = HttpEndpoint(url, _headers(entry.get("headers"), where, env))
    else:
        if "headers" in entry:
            raise ToolFileError(f"{where}: headers go with url, not callable")
        runner = PythonCallable(str(path), _import(path, where))
    timeout = entry.get("timeout_s", _DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ToolFileError(f"{where}: timeout_s must be a number of seconds above 0")
    later = entry.get("async", False)
    if not isinstance(later, bool):
        raise ToolFileError(f"{where}: async must be true or false")
    return ServerTool(declared, runner, float(timeout), later)


def _mcp(entry: dict[str, Any], where: str, env: Mapping[str, str]) -> dict[str, Any]:
    label = entry.get("server_label")
    if not isinstance(label, str) or not _LABEL.match(label):
        raise ToolFileError(f"{where}: server_label must be 1-64 letters, digits, _ or -")
    where = f"{where} ({label})"
    _no_other_keys(entry, _MCP_KEYS, where)
    url = entry.get("server_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ToolFileError(f"{where}: server_url must be an http:// or https:// URL")
    # Nobody is there to approve a call: the upstream must run them unasked.
    if entry.get("require_approval", "never") != "never":
        raise ToolFileError(f"{where}: require_approval must be 'never' (nobody approves calls)")
    server: dict[str, Any] = {
        "type": "mcp",
        "server_label": label,
        "server_url": url,
        "require_approval": "never",
    }
    description = entry.get("server_description")
    if description is not None:
        if not isinstance(description, str):
            raise ToolFileError(f"{where}: server_description must be a string")
        server["server_description"] = description
    if "headers" in entry:
        server["headers"] = dict(_headers(entry["headers"], where, env))
    if "authorization" in entry:
        if not isinstance(entry["authorization"], str):
            raise ToolFileError(f"{where}: authorization must be a string")
        server["authorization"] = _resolved(entry["authorization"], f"{where}: authorization", env)
    allowed = entry.get("allowed_tools")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(n, str) for n in allowed):
            raise ToolFileError(f"{where}: allowed_tools must be a list of tool names")
        server["allowed_tools"] = list(allowed)
    return server


def _no_other_keys(entry: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ToolFileError(f"{where}: unknown field {unknown[0]!r}")


def _headers(raw: Any, where: str, env: Mapping[str, str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ToolFileError(f"{where}: headers must map names to strings")
    return {name: _resolved(value, f"{where}: headers.{name}", env) for name, value in raw.items()}


def _resolved(value: str, where: str, env: Mapping[str, str]) -> str:
    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ToolFileError(f"{where} names ${{{name}}}, which is not set")
        return env[name]

    return _VARIABLE.sub(variable, value)


def _import(path: Any, where: str) -> Callable[..., Any]:
    if not isinstance(path, str) or path.count(":") != 1:
        raise ToolFileError(f"{where}: callable must be 'module:function'")
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as error:
        raise ToolFileError(f"{where}: cannot import {path}: {error}") from None
    if not callable(target):
        raise ToolFileError(f"{where}: {path} is not callable")
    result: Callable[..., Any] = target
    return result
