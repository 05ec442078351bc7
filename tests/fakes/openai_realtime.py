"""A fake OpenAI Realtime server, faithful to the published protocol, for tests only.

It speaks either dialect: ``"ga"`` (``/v1/realtime``, ``response.output_audio.delta``,
``conversation.item.added``/``done``, nested ``session.audio``) or ``"beta"`` (the older
preview that Azure's ``api-version`` endpoint still serves: ``response.audio.delta``,
``conversation.item.created``, flat ``input_audio_format`` and friends).

Every event it sends is validated against the ``openai`` package's server-event models
and every event it receives against the client-event models, including a check that no
field outside the models slipped through (the models allow extras, so plain validation
would not catch a misspelt name). Failures land in ``validation_errors``; a test that
drives the fake should end with ``assert fake.validation_errors == []``.

Usage is reported as OpenAI reports it, with numbers of the fake's own that differ from
turn to turn: every ``response.done`` carries ``usage`` (see ``_usage``), every input
transcription its ``usage`` (by duration for whisper-1, else by tokens).

Use it in the test's own loop::

    async with FakeRealtimeServer(dialect="ga") as fake:
        ...

or, when the code under test runs its own loop in another thread::

    fake = FakeRealtimeServer().start_in_thread()   # or: with FakeRealtimeServer() as fake:
    ...
    fake.stop()
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import re
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pydantic
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Dialect = Literal["ga", "beta"]

SAMPLE_RATE = 24000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
# OpenAI refuses to commit less than this much audio.
MIN_COMMIT_MS = 100
# OpenAI rejects longer client-chosen item ids.
ITEM_ID_MAX = 32

DEFAULT_INSTRUCTIONS = "You are a helpful, witty, and friendly AI."
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}


def default_transcribe(pcm: bytes) -> str:
    return f"heard {len(pcm) / (SAMPLE_RATE * 2):.2f} seconds"


def default_reply(user_text: str) -> str:
    return f"You said: {user_text}" if user_text else "Hello."


def default_tool_reply(name: str, output: str) -> str:
    return f"The {name} tool said: {output}"


def sine_pcm(start_sample: int, samples: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """PCM16 24 kHz sine, phase-continuous across calls by ``start_sample``."""
    t = (np.arange(samples) + start_sample) / SAMPLE_RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype("<i2").tobytes()


@dataclass(frozen=True)
class ConnectionRecord:
    index: int
    path: str
    """Path and query string exactly as requested."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    status: int
    """101 when accepted, else the HTTP status it was refused with."""

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}


@dataclass(frozen=True)
class ReceivedEvent:
    conn: int
    t: float
    """``time.monotonic()`` when it arrived."""
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event.get("type"))


@dataclass(frozen=True)
class SentEvent:
    conn: int
    t: float
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event["type"])


# --- protocol validation ---------------------------------------------------------------


@functools.cache
def _adapters(dialect: Dialect, side: Literal["server", "client"]) -> dict[str, Any]:
    """Event type -> TypeAdapter of that one event model (clearer errors than the union)."""
    if dialect == "ga":
        from openai.types import realtime as mod
    else:
        from openai.types.beta import realtime as mod
    union = mod.RealtimeServerEvent if side == "server" else mod.RealtimeClientEvent
    out: dict[str, Any] = {}
    for member in typing.get_args(typing.get_args(union)[0]):
        for literal in typing.get_args(member.model_fields["type"].annotation):
            out[literal] = pydantic.TypeAdapter(member)
    return out


def _extra_fields(value: Any, path: str) -> list[str]:
    if isinstance(value, pydantic.BaseModel):
        found = [f"{path}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _extra_fields(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _extra_fields(v, f"{path}[{i}]")]
    return []


def validate_event(dialect: Dialect, side: Literal["server", "client"], event: Any) -> str | None:
    """None when ``event`` is a well-formed event of that side and dialect, else why not."""
    if not isinstance(event, dict):
        return f"not a JSON object: {event!r}"[:200]
    adapter = _adapters(dialect, side).get(event.get("type"))  # type: ignore[arg-type]
    if adapter is None:
        return f"unknown {side} event type {event.get('type')!r}"
    try:
        model = adapter.validate_python(event)
    except pydantic.ValidationError as exc:
        return f"{event['type']}: {exc}"
    extras = _extra_fields(model, event["type"])
    return f"{event['type']}: fields not in the protocol: {extras}" if extras else None


# --- per-connection state --------------------------------------------------------------


@dataclass
class _Response:
    id: str
    item_id: str
    text: str
    cancel_reason: str | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class _Conn:
    index: int
    ws: ServerConnection
    session: dict[str, Any]
    conversation_id: str
    buffer: bytearray = field(default_factory=bytearray)
    buffer_start: int = 0  # absolute byte offset of buffer[0] in the session's audio
    total: int = 0  # bytes appended over the session
    vad_pos: int = 0  # absolute byte offset of the next frame to analyse
    loud_frames: int = 0
    quiet_ms: int = 0
    speech_start: int | None = None  # absolute byte offset where speech began
    speech_item: str | None = None
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    audio_ms: dict[str, int] = field(default_factory=dict)  # assistant item -> audio length
    input_ms: dict[str, int] = field(default_factory=dict)  # user audio item -> its length
    # The previous response's input tokens (text, audio): the prefix a new one finds cached.
    last_input: tuple[int, int] = (0, 0)
    last_user_text: str = ""
    response: _Response | None = None
    # Function calls made on this connection (or told of it), by call id: their names.
    calls: dict[str, str] = field(default_factory=dict)
    # What the next response says, after a function call's output (or a system note).
    after_tools: list[str] = field(default_factory=list)

    @property
    def last_item_id(self) -> str | None:
        return next(reversed(self.items), None)


_EXPIRED = "Your session hit the maximum duration of 60 minutes."


class FakeRealtimeServer:
    """A websockets server on 127.0.0.1 that plays OpenAI Realtime (see module docstring).

    Constructor options (all keyword-only apart from ``dialect``):

    - ``transcribe(pcm) -> str``: transcript of a committed user turn.
    - ``reply(user_text) -> str``: the assistant's reply to the last user input.
    - ``speech_rms``: RMS (int16 scale) above which a 20 ms frame counts as speech.
    - ``speech_start_ms``: speech this long starts a turn.
    - ``delta_delay``: seconds slept between a response's deltas.
    - ``ms_per_char``: reply audio length per character of reply text.
    - ``chunk_ms``: largest audio delta.
    - ``api_key``: when set, connections without ``Authorization: Bearer <key>`` or
      ``api-key: <key>`` are refused with 401.
    - ``refuse_status``: refuse every connection with this HTTP status (settable later).
    - ``drop_on``: abort the TCP connection (no close frame) when a client event of this
      type arrives (settable later); ``drop()`` does it right now, to every live
      connection or (``drop(conn=index)``) to one of them (``live`` lists them).
    - ``max_session_seconds``: each session ends after this long as at OpenAI's
      60-minute limit (see ``expire``); ``close_all`` closes with another code.
    - ``call_tool(user_text, tools) -> (name, arguments) | None``: the model's choice to
      call a function (of the session's ``tools``) instead of speaking; its answer is
      the call, streamed as the API does (``response.output_item.added`` with a
      ``function_call`` item, ``response.function_call_arguments.delta``/``.done``,
      ``response.output_item.done``, ``response.done``).
    - ``tool_reply(name, output) -> str``: what the response after a call's
      ``function_call_output`` says (for a system note, the name is ``"system"``).
    """

    def __init__(
        self,
        dialect: Dialect = "ga",
        *,
        transcribe: Callable[[bytes], str] = default_transcribe,
        reply: Callable[[str], str] = default_reply,
        speech_rms: float = 500.0,
        speech_start_ms: int = 60,
        delta_delay: float = 0.0,
        ms_per_char: int = 40,
        chunk_ms: int = 100,
        api_key: str | None = None,
        refuse_status: int | None = None,
        drop_on: str | None = None,
        max_session_seconds: float | None = None,
        call_tool: Callable[[str, list[dict[str, Any]]], tuple[str, dict[str, Any]] | None]
        | None = None,
        tool_reply: Callable[[str, str], str] = default_tool_reply,
    ) -> None:
        if dialect not in ("ga", "beta"):
            raise ValueError(f"dialect must be 'ga' or 'beta', not {dialect!r}")
        self.dialect: Dialect = dialect
        self.transcribe = transcribe
        self.reply = reply
        self.speech_rms = speech_rms
        self.speech_start_ms = speech_start_ms
        self.delta_delay = delta_delay
        self.ms_per_char = ms_per_char
        self.chunk_ms = chunk_ms
        self.api_key = api_key
        self.refuse_status = refuse_status
        self.drop_on = drop_on
        self.max_session_seconds = max_session_seconds
        self.call_tool = call_tool
        self.tool_reply = tool_reply
        self.port = 0

        self._lock = threading.Lock()
        self._connections: list[ConnectionRecord] = []
        self._received: list[ReceivedEvent] = []
        self._sent: list[SentEvent] = []
        self._audio: dict[int, bytearray] = {}
        self._validation_errors: list[str] = []
        self._ids = itertools.count(1)
        self._live: dict[int, _Conn] = {}
        self._live_indexes: set[int] = set()  # the keys of ``_live``, for other threads
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- addresses ---

    @property
    def url(self) -> str:
        """The OpenAI-style endpoint, e.g. for ``VOXRELAY_OPENAI_URL``."""
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def base_url(self) -> str:
        """For ``AsyncOpenAI(websocket_base_url=...)``, which appends ``/realtime``."""
        return f"ws://127.0.0.1:{self.port}/v1"

    @property
    def http_url(self) -> str:
        """For ``AZURE_OPENAI_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    # --- recorded data (thread-safe snapshots) ---

    @property
    def connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._connections)

    @property
    def received(self) -> list[ReceivedEvent]:
        with self._lock:
            return list(self._received)

    @property
    def sent(self) -> list[SentEvent]:
        with self._lock:
            return list(self._sent)

    @property
    def validation_errors(self) -> list[str]:
        with self._lock:
            return list(self._validation_errors)

    def client_events(
        self, type: str | None = None, conn: int | None = None
    ) -> list[dict[str, Any]]:
        """Client events received, in order, optionally of one type / one connection."""
        return [
            r.event
            for r in self.received
            if (type is None or r.type == type) and (conn is None or r.conn == conn)
        ]

    def server_events(
        self, type: str | None = None, conn: int | None = None
    ) -> list[dict[str, Any]]:
        return [
            s.event
            for s in self.sent
            if (type is None or s.type == type) and (conn is None or s.conn == conn)
        ]

    def audio_received(self, conn: int = -1) -> bytes:
        """Every byte appended on connection ``conn`` (default: the latest accepted)."""
        with self._lock:
            if not self._audio:
                return b""
            key = sorted(self._audio)[conn] if conn < 0 else conn
            return bytes(self._audio.get(key, b""))

    async def wait_for(
        self, type: str, *, count: int = 1, seconds: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait (from any loop) until ``count`` client events of ``type`` have arrived."""
        deadline = time.monotonic() + seconds
        while True:
            found = self.client_events(type)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake saw {len(found)} {type!r} events, wanted {count}")
            await asyncio.sleep(0.005)

    # --- failure injection ---

    def drop(self, conn: int | None = None) -> None:
        """Abort every live connection (or only connection ``conn``, by its index in
        ``connections``) without a close frame, as a network failure would."""
        loop = self._loop
        if loop is None:
            return
        if self._thread is not None:
            loop.call_soon_threadsafe(self._abort, conn)
        else:
            self._abort(conn)

    def _abort(self, index: int | None) -> None:
        for conn in list(self._live.values()):
            if index is None or conn.index == index:
                conn.ws.transport.abort()

    @property
    def live(self) -> list[int]:
        """Indexes (in ``connections``) of the connections open now."""
        with self._lock:
            return sorted(self._live_indexes)

    def close_all(self, code: int = 1011, reason: str = "") -> None:
        """Close every live connection with a close frame, as a restarting server would."""
        self._on_loop(lambda: self._close_all(code, reason))

    def expire(self) -> None:
        """End every live session as OpenAI does at its longest duration: an ``error``
        event ``session_expired``, then close code 1001."""
        self._on_loop(self._expire_all)

    def _on_loop(self, make: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(make(), loop).result(10)
        else:
            loop.create_task(make())

    async def _close_all(self, code: int, reason: str) -> None:
        for conn in list(self._live.values()):
            await conn.ws.close(code, reason)

    async def _expire_all(self) -> None:
        for conn in list(self._live.values()):
            await self._expire(conn)

    async def _expire(self, conn: _Conn) -> None:
        await self._error(conn, "session_expired", _EXPIRED, None)
        await conn.ws.close(1001, _EXPIRED)

    # --- lifecycle ---

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start_in_thread(self) -> Self:
        """Run the server on its own loop in a daemon thread; returns once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai-realtime", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            max_size=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def _stop(self) -> None:
        for conn in list(self._live.values()):
            if conn.response is not None and conn.response.task is not None:
                conn.response.task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # --- connection handling ---

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        status = self.refuse_status
        if status is None and self.api_key is not None:
            offered = {headers.get("api-key"), headers.get("authorization")}
            if not offered & {self.api_key, f"Bearer {self.api_key}"}:
                status = 401
        with self._lock:
            index = len(self._connections)
            self._connections.append(ConnectionRecord(index, request.path, headers, status or 101))
        connection.fake_index = index  # type: ignore[attr-defined]
        if status is None:
            return None
        body = json.dumps(
            {
                "error": {
                    "message": "Incorrect API key provided." if status == 401 else "Refused.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key" if status == 401 else None,
                    "param": None,
                }
            }
        )
        response = connection.respond(HTTPStatus(status), body)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        index: int = ws.fake_index  # type: ignore[attr-defined]
        with self._lock:
            query = self._connections[index].query
        model = query.get("model") or query.get("deployment") or "gpt-realtime"
        conn = _Conn(index, ws, self._default_session(model), f"conv_{next(self._ids)}")
        with self._lock:
            self._audio[index] = bytearray()
        self._live[index] = conn
        with self._lock:
            self._live_indexes.add(index)
        expiry = None
        if self.max_session_seconds is not None:
            expiry = asyncio.get_running_loop().call_later(
                self.max_session_seconds, lambda: asyncio.ensure_future(self._expire(conn))
            )
        try:
            await self._send(conn, {"type": "session.created", "session": conn.session})
            async for message in ws:
                await self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            self._live.pop(index, None)
            with self._lock:
                self._live_indexes.discard(index)
            if conn.response is not None and conn.response.task is not None:
                conn.response.task.cancel()

    async def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        now = time.monotonic()
        try:
            event = json.loads(message)
        except ValueError:
            self._invalid(f"client sent non-JSON: {message[:80]!r}")
            await self._error(conn, "invalid_json", "The server could not parse the JSON.", None)
            return
        with self._lock:
            self._received.append(ReceivedEvent(conn.index, now, event))
        if (
            self.drop_on is not None
            and isinstance(event, dict)
            and event.get("type") == self.drop_on
        ):
            conn.ws.transport.abort()
            return
        problem = validate_event(self.dialect, "client", event)
        if problem is not None:
            self._invalid(f"client: {problem}")
            etype = event.get("type") if isinstance(event, dict) else None
            if isinstance(etype, str) and etype not in _adapters(self.dialect, "client"):
                supported = ", ".join(repr(t) for t in _adapters(self.dialect, "client"))
                message_ = f"Invalid value: {etype!r}. Supported values are: {supported}."
                await self._error(conn, "invalid_value", message_, event, param="type")
            else:
                await self._error(conn, "invalid_value", problem, event)
            return
        handler = getattr(self, "_on_" + event["type"].replace(".", "_"), None)
        if handler is None:
            await self._error(conn, "unsupported", f"{event['type']} is not faked.", event)
            return
        await handler(conn, event)

    def _invalid(self, problem: str) -> None:
        with self._lock:
            self._validation_errors.append(problem)

    async def _send(self, conn: _Conn, event: dict[str, Any]) -> None:
        event = {"event_id": f"event_{next(self._ids)}", **event}
        problem = validate_event(self.dialect, "server", event)
        if problem is not None:
            self._invalid(f"server: {problem}")
        with self._lock:
            self._sent.append(SentEvent(conn.index, time.monotonic(), event))
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(json.dumps(event))

    async def _error(
        self,
        conn: _Conn,
        code: str,
        message: str,
        event: Any,
        *,
        param: str | None = None,
    ) -> None:
        client_event_id = event.get("event_id") if isinstance(event, dict) else None
        error = {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        }
        await self._send(conn, {"type": "error", "error": error})

    # --- sessions ---

    def _default_session(self, model: str) -> dict[str, Any]:
        if self.dialect == "beta":
            return {
                "id": f"sess_{next(self._ids)}",
                # The beta models only accept known model names; Azure reports the base model.
                "model": "gpt-4o-realtime-preview",
                "modalities": ["text", "audio"],
                "instructions": DEFAULT_INSTRUCTIONS,
                "voice": "alloy",
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": None,
                "turn_detection": dict(DEFAULT_TURN_DETECTION),
                "tools": [],
                "tool_choice": "auto",
                "temperature": 0.8,
                "max_response_output_tokens": "inf",
            }
        return {
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": DEFAULT_INSTRUCTIONS,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": {**DEFAULT_TURN_DETECTION, "idle_timeout_ms": None},
                },
                "output": {
                    "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                    "voice": "marin",
                    "speed": 1.0,
                },
            },
        }

    def _turn_detection(self, conn: _Conn) -> dict[str, Any] | None:
        if self.dialect == "beta":
            td = conn.session.get("turn_detection")
        else:
            td = ((conn.session.get("audio") or {}).get("input") or {}).get("turn_detection")
        return td if isinstance(td, dict) else None

    def _transcription(self, conn: _Conn) -> dict[str, Any] | None:
        if self.dialect == "beta":
            tr = conn.session.get("input_audio_transcription")
        else:
            tr = ((conn.session.get("audio") or {}).get("input") or {}).get("transcription")
        return tr if isinstance(tr, dict) else None

    def _voice(self, conn: _Conn) -> Any:
        if self.dialect == "beta":
            return conn.session.get("voice")
        return ((conn.session.get("audio") or {}).get("output") or {}).get("voice")

    async def _on_session_update(self, conn: _Conn, event: dict[str, Any]) -> None:
        _merge(conn.session, event["session"])
        await self._send(conn, {"type": "session.updated", "session": conn.session})

    # --- input audio ---

    async def _on_input_audio_buffer_append(self, conn: _Conn, event: dict[str, Any]) -> None:
        pcm = base64.b64decode(event["audio"])
        with self._lock:
            self._audio[conn.index] += pcm
        conn.buffer += pcm
        conn.total += len(pcm)
        td = self._turn_detection(conn)
        if td is None or td.get("type") != "server_vad":
            conn.vad_pos = conn.total
            return
        while conn.total - conn.vad_pos >= FRAME_BYTES:
            start = conn.vad_pos - conn.buffer_start
            conn.vad_pos += FRAME_BYTES
            # A copy: a view would pin the bytearray, which the commit below resizes.
            frame = np.frombuffer(bytes(conn.buffer[start : start + FRAME_BYTES]), dtype="<i2")
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) >= self.speech_rms
            await self._vad_frame(conn, td, loud)

    async def _vad_frame(self, conn: _Conn, td: dict[str, Any], loud: bool) -> None:
        if conn.speech_start is None:
            conn.loud_frames = conn.loud_frames + 1 if loud else 0
            if conn.loud_frames * FRAME_MS < self.speech_start_ms:
                return
            onset = conn.vad_pos - conn.loud_frames * FRAME_BYTES
            padding = int(td.get("prefix_padding_ms") or 0) * BYTES_PER_MS
            conn.speech_start = max(conn.buffer_start, onset - padding)
            conn.speech_item = f"item_{next(self._ids)}"
            conn.quiet_ms = 0
            await self._send(
                conn,
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": conn.speech_start // BYTES_PER_MS,
                    "item_id": conn.speech_item,
                },
            )
            if conn.response is not None and td.get("interrupt_response", True) is not False:
                conn.response.cancel_reason = "turn_detected"
            return
        conn.quiet_ms = 0 if loud else conn.quiet_ms + FRAME_MS
        silence = td.get("silence_duration_ms")
        if conn.quiet_ms < (500 if silence is None else int(silence)):
            return
        item_id, start, end = conn.speech_item or "", conn.speech_start, conn.vad_pos
        conn.speech_start, conn.speech_item, conn.loud_frames = None, None, 0
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end // BYTES_PER_MS,
                "item_id": item_id,
            },
        )
        pcm = bytes(conn.buffer[start - conn.buffer_start : end - conn.buffer_start])
        del conn.buffer[: end - conn.buffer_start]
        conn.buffer_start = end
        await self._commit_audio(conn, item_id, pcm)
        if td.get("create_response", True) is not False and conn.response is None:
            self._start_response(conn)

    async def _on_input_audio_buffer_commit(self, conn: _Conn, event: dict[str, Any]) -> None:
        have_ms = len(conn.buffer) / BYTES_PER_MS
        if have_ms < MIN_COMMIT_MS:
            message = (
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {have_ms:.2f}ms of audio."
            )
            await self._error(conn, "input_audio_buffer_commit_empty", message, event)
            return
        item_id = conn.speech_item or f"item_{next(self._ids)}"
        pcm = bytes(conn.buffer)
        conn.buffer.clear()
        conn.buffer_start = conn.vad_pos = conn.total
        conn.speech_start, conn.speech_item, conn.loud_frames = None, None, 0
        await self._commit_audio(conn, item_id, pcm)

    async def _on_input_audio_buffer_clear(self, conn: _Conn, event: dict[str, Any]) -> None:
        conn.buffer.clear()
        conn.buffer_start = conn.vad_pos = conn.total
        conn.speech_start, conn.speech_item, conn.loud_frames = None, None, 0
        await self._send(conn, {"type": "input_audio_buffer.cleared"})

    async def _commit_audio(self, conn: _Conn, item_id: str, pcm: bytes) -> None:
        previous = conn.last_item_id
        await self._send(
            conn,
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            },
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        conn.items[item_id] = item
        conn.input_ms[item_id] = len(pcm) // BYTES_PER_MS
        await self._item_added(conn, item, previous, done=True)
        transcript = self.transcribe(pcm)
        conn.last_user_text = transcript
        conn.after_tools.clear()
        item["content"][0]["transcript"] = transcript
        transcription = self._transcription(conn)
        if transcription is None:
            return  # OpenAI only transcribes input when the session asks for it.
        if transcription.get("model") != "whisper-1":  # whisper-1 has no incremental output
            for word in re.findall(r"\S+\s*", transcript):
                await self._send(
                    conn,
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item_id,
                        "content_index": 0,
                        "delta": word,
                    },
                )
        await self._send(
            conn,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": _transcription_usage(transcription.get("model"), pcm, transcript),
            },
        )

    async def _item_added(
        self, conn: _Conn, item: dict[str, Any], previous: str | None, *, done: bool
    ) -> None:
        """Announce a new conversation item the way each dialect does."""
        if self.dialect == "beta":
            await self._send(
                conn,
                {"type": "conversation.item.created", "previous_item_id": previous, "item": item},
            )
            return
        await self._send(
            conn, {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
        )
        if done:
            await self._send(
                conn, {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )

    # --- conversation items ---

    async def _on_conversation_item_create(self, conn: _Conn, event: dict[str, Any]) -> None:
        item = dict(event["item"])
        item_id = item.get("id") or f"item_{next(self._ids)}"
        if len(item_id) > ITEM_ID_MAX:
            message = (
                "Invalid 'item.id': string too long. Expected a string with maximum length "
                f"{ITEM_ID_MAX}, but got a string with length {len(item_id)} instead."
            )
            await self._error(conn, "string_above_max_length", message, event, param="item.id")
            return
        kind = item.get("type", "message")
        if kind == "function_call_output" and item.get("call_id") not in conn.calls:
            # A client bug: the API knows no such call in this conversation.
            self._invalid(f"client: function_call_output for unknown call {item.get('call_id')}")
        previous = conn.last_item_id
        item.update(id=item_id, object="realtime.item", status="completed")
        conn.items[item_id] = item
        texts = [c.get("text") or "" for c in item.get("content") or [] if c.get("text")]
        if kind == "function_call":
            conn.calls[str(item.get("call_id"))] = str(item.get("name"))
        elif kind == "function_call_output":
            name = conn.calls.get(str(item.get("call_id")), "")
            conn.after_tools.append(self.tool_reply(name, str(item.get("output"))))
        elif item.get("role") == "system" and texts:
            conn.after_tools.append(self.tool_reply("system", " ".join(texts)))
        elif item.get("role") == "user" and texts:
            conn.last_user_text = " ".join(texts)
            conn.after_tools.clear()
        await self._item_added(conn, item, previous, done=True)

    async def _on_conversation_item_truncate(self, conn: _Conn, event: dict[str, Any]) -> None:
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        if item_id not in conn.audio_ms:
            message = f"Item with item_id '{item_id}' not found or has no audio."
            await self._error(conn, "invalid_value", message, event, param="item_id")
            return
        if end_ms > conn.audio_ms[item_id]:
            message = (
                f"Audio content of {conn.audio_ms[item_id]}ms is already shorter than {end_ms}ms"
            )
            await self._error(conn, "invalid_value", message, event, param="audio_end_ms")
            return
        conn.audio_ms[item_id] = end_ms
        await self._send(
            conn,
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": event["content_index"],
                "audio_end_ms": end_ms,
            },
        )

    async def _on_conversation_item_delete(self, conn: _Conn, event: dict[str, Any]) -> None:
        if conn.items.pop(event["item_id"], None) is None:
            message = f"Item with item_id '{event['item_id']}' not found"
            await self._error(conn, "invalid_value", message, event, param="item_id")
            return
        await self._send(conn, {"type": "conversation.item.deleted", "item_id": event["item_id"]})

    def conversation(self, conn: int = -1) -> list[dict[str, Any]]:
        """Items of a live connection's conversation (for assertions; best read in-loop)."""
        live = sorted(self._live)
        if not live:
            return []
        key = live[conn] if conn < 0 else conn
        return [dict(item) for item in self._live[key].items.values()]

    # --- responses ---

    async def _on_response_create(self, conn: _Conn, event: dict[str, Any]) -> None:
        if conn.response is not None:
            message = (
                f"Conversation already has an active response in progress: {conn.response.id}. "
                "Wait until the response is finished before creating a new one."
            )
            await self._error(conn, "conversation_already_has_active_response", message, event)
            return
        self._start_response(conn)

    async def _on_response_cancel(self, conn: _Conn, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if conn.response is None or (wanted and wanted != conn.response.id):
            message = "Cancellation failed: no active response found"
            await self._error(conn, "response_cancel_not_active", message, event)
            return
        conn.response.cancel_reason = "client_cancelled"

    def _start_response(self, conn: _Conn) -> None:
        call = None
        if conn.after_tools:
            text = " ".join(conn.after_tools)
            conn.after_tools.clear()
        else:
            text = self.reply(conn.last_user_text)
            if self.call_tool is not None:
                tools = [t for t in conn.session.get("tools") or [] if t.get("type") == "function"]
                call = self.call_tool(conn.last_user_text, tools)
        response = _Response(f"resp_{next(self._ids)}", f"item_{next(self._ids)}", text)
        conn.response = response
        run = (
            self._run_response(conn, response)
            if call is None
            else self._run_call(conn, response, call[0], json.dumps(call[1]))
        )
        response.task = asyncio.get_running_loop().create_task(run)

    async def _run_call(self, conn: _Conn, response: _Response, name: str, arguments: str) -> None:
        """An answer that calls a function, event by event as the API streams it."""
        created = self._response_object(conn, response, "in_progress", [])
        await self._send(conn, {"type": "response.created", "response": created})
        previous = conn.last_item_id
        call_id = f"call_{next(self._ids)}"
        conn.calls[call_id] = name
        item: dict[str, Any] = {
            "id": response.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        conn.items[response.item_id] = item
        ids = {"response_id": response.id, "item_id": response.item_id, "output_index": 0}
        await self._send(
            conn,
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": 0,
                "item": dict(item),
            },
        )
        await self._item_added(conn, dict(item), previous, done=False)
        half = len(arguments) // 2
        for piece in (arguments[:half], arguments[half:]):
            delta = {"type": "response.function_call_arguments.delta", **ids, "call_id": call_id}
            await self._send(conn, {**delta, "delta": piece})
            await asyncio.sleep(self.delta_delay)
        done = {"type": "response.function_call_arguments.done", **ids, "call_id": call_id}
        if self.dialect == "ga":
            done["name"] = name
        await self._send(conn, {**done, "arguments": arguments})
        item.update(status="completed", arguments=arguments)
        await self._send(
            conn,
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": 0,
                "item": dict(item),
            },
        )
        if self.dialect == "ga":
            await self._send(
                conn, {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )
        usage = {
            "total_tokens": 30,
            "input_tokens": 20,
            "output_tokens": 10,
            "input_token_details": {"text_tokens": 20, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": 10, "audio_tokens": 0},
        }
        finished = self._response_object(conn, response, "completed", [dict(item)], usage)
        conn.response = None
        await self._send(conn, {"type": "response.done", "response": finished})

    def _response_object(
        self,
        conn: _Conn,
        response: _Response,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        details = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": response.cancel_reason}
        obj: dict[str, Any] = {
            "id": response.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": conn.conversation_id,
            "max_output_tokens": "inf",
            "metadata": None,
            "usage": usage,
        }
        if self.dialect == "beta":
            obj.update(
                modalities=["text", "audio"],
                voice=self._voice(conn),
                output_audio_format="pcm16",
                temperature=0.8,
            )
        else:
            audio_format = {"type": "audio/pcm", "rate": SAMPLE_RATE}
            obj.update(
                output_modalities=["audio"],
                audio={"output": {"format": audio_format, "voice": self._voice(conn)}},
            )
        return obj

    def _usage(self, conn: _Conn, response: _Response, said: str, audio_ms: int) -> dict[str, Any]:
        """``response.done``'s ``usage`` as OpenAI counts it: the input is the whole
        conversation before the answer (instructions, every item's text, and audio: user
        audio at one token per 100 ms, earlier answers' at one per 50 ms), of which the
        previous response's input is cached; the output is the answer's words and its
        audio at one token per 50 ms. So every turn's numbers differ."""
        text = len(str(conn.session.get("instructions") or "").split())
        audio = 0
        for item_id, item in conn.items.items():
            if item_id == response.item_id:
                continue
            for part in item.get("content") or []:
                text += len(str(part.get("text") or "").split())
                if item.get("role") == "assistant":
                    text += len(str(part.get("transcript") or "").split())
            audio += conn.input_ms.get(item_id, 0) // 100 + conn.audio_ms.get(item_id, 0) // 50
        cached_text, cached_audio = min(conn.last_input[0], text), min(conn.last_input[1], audio)
        conn.last_input = (text, audio)
        details: dict[str, Any] = {
            "text_tokens": text,
            "audio_tokens": audio,
            "cached_tokens": cached_text + cached_audio,
        }
        if self.dialect == "ga":
            details["cached_tokens_details"] = {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": 0,
            }
        words, audio_out = len(said.split()), audio_ms // 50
        return {
            "total_tokens": text + audio + words + audio_out,
            "input_tokens": text + audio,
            "output_tokens": words + audio_out,
            "input_token_details": details,
            "output_token_details": {"text_tokens": words, "audio_tokens": audio_out},
        }

    async def _run_response(self, conn: _Conn, response: _Response) -> None:
        beta = self.dialect == "beta"
        audio_delta = "response.audio.delta" if beta else "response.output_audio.delta"
        audio_done = "response.audio.done" if beta else "response.output_audio.done"
        transcript_prefix = (
            "response.audio_transcript" if beta else "response.output_audio_transcript"
        )
        ids = {"response_id": response.id, "item_id": response.item_id, "output_index": 0}
        part_ids = {**ids, "content_index": 0}

        created = self._response_object(conn, response, "in_progress", [])
        await self._send(conn, {"type": "response.created", "response": created})
        previous = conn.last_item_id
        item: dict[str, Any] = {
            "id": response.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        conn.items[response.item_id] = item
        conn.audio_ms[response.item_id] = 0
        await self._send(
            conn,
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            },
        )
        await self._item_added(conn, item, previous, done=False)
        part = {"type": "audio", "transcript": ""}
        await self._send(conn, {"type": "response.content_part.added", **part_ids, "part": part})

        said, samples = "", 0
        for word in re.findall(r"\S+\s*", response.text):
            if response.cancel_reason is not None:
                break
            await self._send(
                conn, {"type": f"{transcript_prefix}.delta", **part_ids, "delta": word}
            )
            said += word
            word_samples = len(word) * self.ms_per_char * SAMPLE_RATE // 1000
            chunk = max(1, self.chunk_ms * SAMPLE_RATE // 1000)
            for offset in range(0, word_samples, chunk):
                n = min(chunk, word_samples - offset)
                delta = base64.b64encode(sine_pcm(samples, n)).decode("ascii")
                samples += n
                conn.audio_ms[response.item_id] = samples * 1000 // SAMPLE_RATE
                await self._send(conn, {"type": audio_delta, **part_ids, "delta": delta})
            await asyncio.sleep(self.delta_delay)

        cancelled = response.cancel_reason is not None
        await self._send(conn, {"type": audio_done, **part_ids})
        await self._send(
            conn, {"type": f"{transcript_prefix}.done", **part_ids, "transcript": said}
        )
        part = {"type": "audio", "transcript": said}
        await self._send(conn, {"type": "response.content_part.done", **part_ids, "part": part})
        item.update(
            status="incomplete" if cancelled else "completed",
            content=[{"type": "audio" if beta else "output_audio", "transcript": said}],
        )
        await self._send(
            conn,
            {
                "type": "response.output_item.done",
                "response_id": response.id,
                "output_index": 0,
                "item": item,
            },
        )
        if not beta:
            await self._send(
                conn, {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )
        status = "cancelled" if cancelled else "completed"
        usage = self._usage(conn, response, said, samples * 1000 // SAMPLE_RATE)
        done = self._response_object(conn, response, status, [item], usage)
        conn.response = None
        await self._send(conn, {"type": "response.done", "response": done})


def _transcription_usage(model: Any, pcm: bytes, transcript: str) -> dict[str, Any]:
    """What OpenAI bills a transcription: whisper-1 by the audio's duration, the
    gpt-4o transcribe models by tokens (audio at one per 100 ms in, words out)."""
    ms = len(pcm) // BYTES_PER_MS
    if model == "whisper-1":
        return {"type": "duration", "seconds": round(ms / 1000, 3)}
    audio, words = ms // 100, len(transcript.split())
    return {
        "type": "tokens",
        "input_tokens": audio,
        "output_tokens": words,
        "total_tokens": audio + words,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio},
    }


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply a ``session.update`` the way OpenAI does: only the fields present change."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
