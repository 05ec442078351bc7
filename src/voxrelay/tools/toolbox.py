"""The server's tools: each function tool with how it runs, and the remote MCP servers
passed to the upstream."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voxrelay.tools.declarations import FunctionTool


@dataclass(frozen=True)
class HttpEndpoint:
    """POST the arguments as JSON to ``url``; the JSON it answers is the result."""

    url: str
    # Values already resolved from the environment: secrets, never shown to a client.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class PythonCallable:
    """A function called with the arguments as keywords (sync ones on a worker thread);
    what it returns is the result."""

    path: str
    function: Callable[..., Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ServerTool:
    tool: FunctionTool
    runner: HttpEndpoint | PythonCallable
    timeout_s: float = 10.0
    # The model is answered at once that the result will follow, and told it later.
    later: bool = False


@dataclass(frozen=True)
class Toolbox:
    """Every session's server tools (``VOXRELAY_TOOLS``)."""

    functions: Mapping[str, ServerTool] = field(default_factory=dict)
    # ``{"type": "mcp", ...}`` as the upstream takes them, credentials included.
    mcp: tuple[Mapping[str, Any], ...] = ()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.functions)

    @property
    def mcp_labels(self) -> frozenset[str]:
        return frozenset(str(entry["server_label"]) for entry in self.mcp)

    def upstream(self) -> tuple[dict[str, Any], ...]:
        """What the upstream is told of them, in ``session.update``'s ``tools``."""
        functions = [server.tool.upstream() for server in self.functions.values()]
        return (*functions, *(dict(entry) for entry in self.mcp))


NO_TOOLS = Toolbox()
