"""A session's function calls: who runs each one, its result, and when the model hears it.

The model calls a tool in an answer of its own (``FunctionCall``, then that answer's
``ResponseDone``). A server tool (``VOXRELAY_TOOLS``) is run here, in a task of its own
(its arguments checked against its schema first); a tool the session's client
declared is announced in the log (``tool_call``) and waits for the client's
``tool_result``; a call of a tool a pass-through client declared upstream itself is
that client's to answer, and is only recorded. Any other name gets an error result.

Once every call of an answer has its result and no other answer is being spoken, the
results go upstream together and the model is asked to answer (``send``). A tool that
fails, times out or answers garbage, and a client that does not answer in time, give
the model an error result and the listeners an ``error`` event (``tool_failed``); the
conversation goes on. An ``async`` server tool is answered at once that its result
will follow; the result is told to the model when it comes.

Every call and its result are stored with the conversation, in its place among the
messages, through the transcript writer (in order, retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from voxrelay.eventlog import EventLog
from voxrelay.events import FunctionCall
from voxrelay.exceptions import AlreadyAnswered, NotFound, TooLarge
from voxrelay.providers.base import HistoryToolCall, ToolOutput
from voxrelay.sessions.transcripts import TranscriptWriter
from voxrelay.tools import (
    NO_TOOLS,
    FunctionTool,
    Outcome,
    Toolbox,
    client_tools,
    output_text,
    run_tool,
)
from voxrelay.tools.running import MAX_OUTPUT_CHARS

log = logging.getLogger(__name__)

RunBy = Literal["server", "client"]
TOOL_FAILED = "tool_failed"
# What the model hears at once from an ``async`` tool.
_LATER = {"status": "pending", "message": "The result will follow when it is ready."}
# How long results wait for the answer they asked for to begin before others may ask.
_ASKED_SECONDS = 5.0


@dataclass(slots=True)
class _Call:
    event: FunctionCall
    run_by: RunBy
    record_id: str
    # A pass-through client's own tool: it answers upstream itself.
    passthrough: bool = False
    # The model has its answer (for an ``async`` tool: that the result will follow).
    answered: bool = False
    # Its result (or why it has none) is stored.
    finished: bool = False
    # ``async``: the model was told that the result will follow.
    later: bool = False
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Answer:
    """The calls of one answer of the model's, and the results they have so far."""

    calls: list[_Call] = field(default_factory=list)
    outputs: dict[str, ToolOutput] = field(default_factory=dict)
    done: bool = False


class ToolCalls:
    def __init__(
        self,
        writer: TranscriptWriter,
        *,
        toolbox: Toolbox = NO_TOOLS,
        client: Mapping[str, FunctionTool] | None = None,
        http: httpx.AsyncClient,
        client_timeout: float = 30.0,
    ) -> None:
        self._writer = writer
        self._toolbox = toolbox
        self._client = dict(client or {})
        self._http = http
        self._client_timeout = client_timeout
        self._calls: dict[str, _Call] = {}
        self._answers: dict[str, _Answer] = {}
        # Results due to the model (``late`` ones included), sent when nothing is spoken.
        self._due: list[ToolOutput] = []
        self._responding: str | None = None
        self._sending: asyncio.Task[None] | None = None
        # Results went upstream and the answer they asked for has not begun yet.
        self._asked: asyncio.TimerHandle | None = None
        # Tools a pass-through client declared upstream itself.
        self._passthrough: set[str] = set()
        self._closed = False
        # Set by the session: its log, how results reach the model, its error events.
        self.log: EventLog | None = None
        self.send: Callable[[list[ToolOutput]], Awaitable[None]] | None = None
        self.publish_error: Callable[[str, str], None] = lambda code, message: None

    # -- the model's side --------------------------------------------------------------

    def on_call(self, event: FunctionCall, position: int) -> None:
        if self._closed or event.call_id in self._calls:
            return
        server = self._toolbox.functions.get(event.name)
        client = self._client.get(event.name)
        passthrough = server is None and client is None and event.name in self._passthrough
        declared = server.tool if server is not None else client
        arguments, problem = declared.check(event.arguments) if declared else ({}, None)
        run_by: RunBy = "server" if server is not None else "client"
        fields = {
            "call_id": event.call_id,
            "name": event.name,
            "arguments_text": event.arguments,
            "arguments": arguments,
            "run_by": run_by,
        }
        history = HistoryToolCall(event.call_id, event.name, event.arguments, None, event.item_id)
        record_id = self._writer.add_tool_call(history, position, fields)
        call = _Call(event, run_by, record_id, passthrough=passthrough)
        self._calls[event.call_id] = call
        if passthrough:
            return
        self._answers.setdefault(event.response_id, _Answer()).calls.append(call)
        if declared is None:
            self._fail(call, f"there is no tool named {event.name}")
        elif problem is not None:
            self._fail(call, f"the arguments do not fit the tool's parameters: {problem}")
        elif server is not None:
            if server.later:
                call.later = True
                self._give(call, json.dumps(_LATER))
            run = self._run(call, arguments)
            call.task = asyncio.get_running_loop().create_task(run, name=f"tool-{event.name}")
        else:
            self._ask_client(call, arguments)

    def response_started(self, response_id: str) -> None:
        self._responding = response_id
        if self._asked is not None:
            self._asked.cancel()
            self._asked = None

    def response_done(self, response_id: str) -> None:
        if self._responding == response_id:
            self._responding = None
        answer = self._answers.get(response_id)
        if answer is not None:
            answer.done = True
            self._settle(response_id)
        self._flush()

    # -- the client's side -------------------------------------------------------------

    def declare(self, tools: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        """The client's tools from now on (calls made already keep theirs); returns every
        tool the model may call, as the upstream is told them."""
        declared = client_tools(list(tools), self._toolbox.names)
        self._client = {tool.name: tool for tool in declared}
        return (*self._toolbox.upstream(), *(tool.upstream() for tool in declared))

    def result(self, call_id: str, output: Any) -> None:
        """A client's result for one of its tools' calls (any JSON value)."""
        call = self._calls.get(call_id)
        if call is None or call.run_by != "client" or call.passthrough:
            raise NotFound("tool call")
        if call.answered:
            raise AlreadyAnswered()
        text = json.dumps(output, allow_nan=False)
        if len(text) > MAX_OUTPUT_CHARS:
            raise TooLarge(f"a tool result may hold at most {MAX_OUTPUT_CHARS} characters")
        if call.timer is not None:
            call.timer.cancel()
        self._finish(call, Outcome(output=output))

    def note_raw(self, event: Mapping[str, Any]) -> None:
        """An event a pass-through client sends upstream: the tools it declares, and the
        results it gives its own calls (stored like every other)."""
        kind = event.get("type")
        holder = event.get("session") if kind == "session.update" else event.get("response")
        if isinstance(holder, Mapping) and isinstance(holder.get("tools"), list):
            self._passthrough.update(
                str(tool["name"])
                for tool in holder["tools"]
                if isinstance(tool, Mapping) and tool.get("type", "function") == "function"
            )
        item = event.get("item") if kind == "conversation.item.create" else None
        if isinstance(item, Mapping) and item.get("type") == "function_call_output":
            call = self._calls.get(str(item.get("call_id")))
            if call is not None and call.passthrough and not call.answered:
                call.answered = True
                text = str(item.get("output") or "")
                self._store(call, text, Outcome(output=_parsed(text)))

    # -- results -----------------------------------------------------------------------

    async def _run(self, call: _Call, arguments: dict[str, Any]) -> None:
        server = self._toolbox.functions[call.event.name]
        outcome = await run_tool(server, arguments, self._http)
        if not self._closed:
            self._finish(call, outcome)

    def _ask_client(self, call: _Call, arguments: dict[str, Any]) -> None:
        if self.log is not None:
            event = call.event
            data = {
                "callId": event.call_id,
                "name": event.name,
                "arguments": arguments,
                "responseId": event.response_id,
            }
            self.log.append("tool_call", data)
        call.timer = asyncio.get_running_loop().call_later(
            self._client_timeout,
            self._fail,
            call,
            f"the client did not answer within {self._client_timeout:g} s",
        )

    def _fail(self, call: _Call, why: str) -> None:
        if not call.finished:
            self._finish(call, Outcome(error=why))

    def _finish(self, call: _Call, outcome: Outcome) -> None:
        text = output_text(outcome)
        if outcome.error is not None:
            log.warning(
                "tool call %s of %s failed: %s", call.event.call_id, call.event.name, outcome.error
            )
            self.publish_error(TOOL_FAILED, outcome.error)
        self._store(call, text, outcome)
        if call.later:
            event = call.event
            self._due.append(ToolOutput(event.call_id, text, event.name, late=True))
            self._flush()
        else:
            self._give(call, text)

    def _store(self, call: _Call, text: str, outcome: Outcome) -> None:
        call.finished = True
        fields: dict[str, Any] = {"status": "failed" if outcome.error else "completed"}
        fields.update(output=outcome.output, error=outcome.error)
        self._writer.finish_tool_call(call.record_id, text, fields)

    def _give(self, call: _Call, text: str) -> None:
        """The model's answer to ``call``: due once its answer's other calls have theirs."""
        call.answered = True
        response_id = call.event.response_id
        answer = self._answers.get(response_id)
        if answer is not None:
            answer.outputs[call.event.call_id] = ToolOutput(
                call.event.call_id, text, call.event.name
            )
            self._settle(response_id)
        self._flush()

    def _settle(self, response_id: str) -> None:
        answer = self._answers[response_id]
        if answer.done and len(answer.outputs) == len(answer.calls):
            del self._answers[response_id]
            self._due.extend(answer.outputs[c.event.call_id] for c in answer.calls)

    def _flush(self) -> None:
        if self._closed or not self._due or self._responding is not None or self.send is None:
            return
        if self._asked is not None or (self._sending is not None and not self._sending.done()):
            return  # the next flush follows the answer asked for
        due, self._due = self._due, []
        self._sending = asyncio.get_running_loop().create_task(self._send(due))

    async def _send(self, due: list[ToolOutput]) -> None:
        assert self.send is not None
        try:
            await self.send(due)
        except Exception as error:  # the session has told its listeners
            log.warning("tool results did not reach the model: %s", error)
            return
        # Until the answer begins, asking again would be refused (one answer at a
        # time); an upstream that never begins it does not hold later results back.
        self._asked = asyncio.get_running_loop().call_later(_ASKED_SECONDS, self._unstick)

    def _unstick(self) -> None:
        self._asked = None
        self._flush()

    async def close(self) -> None:
        """The session ends: calls still running are stopped, and every call without
        its result is stored as failed."""
        self._closed = True
        if self._asked is not None:
            self._asked.cancel()
        for call in self._calls.values():
            if call.timer is not None:
                call.timer.cancel()
            if call.task is not None:
                call.task.cancel()
            if not call.finished:
                why = "the session ended before the call had its result"
                self._store(call, output_text(Outcome(error=why)), Outcome(error=why))
        tasks = [c.task for c in self._calls.values() if c.task is not None]
        if self._sending is not None:
            tasks.append(self._sending)
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
