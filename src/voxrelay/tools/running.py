"""Running a server tool: an HTTP POST or a Python call, bounded by the tool's timeout,
its answer checked to be JSON a model can be given."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from voxrelay.tools.toolbox import HttpEndpoint, PythonCallable, ServerTool

log = logging.getLogger(__name__)

# The largest result a model is given (as JSON text).
MAX_OUTPUT_CHARS = 64 << 10


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a tool answered (``output``, any JSON value), or why it gave nothing usable
    (``error``, safe to tell the model and the client)."""

    output: Any = None
    error: str | None = None


async def run_tool(tool: ServerTool, arguments: dict[str, Any], http: httpx.AsyncClient) -> Outcome:
    """Run ``tool`` with ``arguments``; every failure is an ``Outcome`` with its error."""
    name = tool.tool.name
    try:
        async with asyncio.timeout(tool.timeout_s):
            if isinstance(tool.runner, HttpEndpoint):
                outcome = await _post(tool.runner, arguments, http)
            else:
                outcome = await _call(tool.runner, arguments)
    except TimeoutError:
        return Outcome(error=f"the tool {name} did not answer within {tool.timeout_s:g} s")
    except httpx.HTTPError as error:
        log.warning("tool %s could not be reached: %r", name, error)
        return Outcome(error=f"the tool {name} could not be reached")
    except Exception as error:
        log.warning("tool %s failed: %r", name, error)
        return Outcome(error=f"the tool {name} failed")
    if outcome.error is None:
        try:
            text = json.dumps(outcome.output, allow_nan=False)
        except (TypeError, ValueError):
            return Outcome(error=f"the tool {name} answered something that is not JSON")
        if len(text) > MAX_OUTPUT_CHARS:
            return Outcome(
                error=f"the tool {name} answered more than {MAX_OUTPUT_CHARS} characters"
            )
    return outcome


async def _post(
    endpoint: HttpEndpoint, arguments: dict[str, Any], http: httpx.AsyncClient
) -> Outcome:
    response = await http.post(endpoint.url, json=arguments, headers=dict(endpoint.headers))
    if not 200 <= response.status_code < 300:
        return Outcome(error=f"the tool answered HTTP {response.status_code}")
    try:
        return Outcome(output=response.json())
    except ValueError:
        return Outcome(error="the tool answered something that is not JSON")


async def _call(runner: PythonCallable, arguments: dict[str, Any]) -> Outcome:
    function = runner.function
    if inspect.iscoroutinefunction(function):
        return Outcome(output=await function(**arguments))
    # A blocking function must not hold up the event loop (a timeout cannot stop the
    # thread, only stop waiting for it).
    result = await asyncio.to_thread(function, **arguments)
    if inspect.isawaitable(result):
        result = await result
    return Outcome(output=result)


def output_text(outcome: Outcome) -> str:
    """The result as the model reads it: the tool's JSON, or ``{"error": ...}``."""
    if outcome.error is not None:
        return json.dumps({"error": outcome.error})
    return json.dumps(outcome.output, allow_nan=False)
