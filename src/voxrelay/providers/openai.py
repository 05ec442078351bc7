"""OpenAI Realtime and Azure OpenAI Realtime over WebSocket.

Two dialects of one protocol: ``"ga"`` (OpenAI's ``/v1/realtime`` and Azure's
``/openai/v1/realtime``) and ``"beta"`` (Azure's older ``/openai/realtime?api-version=``
preview). They differ in the ``session.update`` shape, the assistant text content type
and some server event names; the event reader accepts both sets of names whatever the
dialect, so a proxy that speaks the other one still works.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from picows import (
    WSCloseCode,
    WSError,
    WSHandshakeError,
    ws_connect,
)

from voxrelay.events import (
    ModelError,
)
from voxrelay.openai_realtime.fields import function_tools
from voxrelay.openai_realtime.model_events import model_event
from voxrelay.openai_realtime.protocol import (
    ITEM_ID_MAX,
    PCM_BETA,
    PCM_GA,
    SAMPLE_RATE,
    Dialect,
    RawListener,
    RawListeners,
)
from voxrelay.providers._openai_link import Link
from voxrelay.providers.base import (
    PERMANENT_ERRORS,
    EmitModelEvent,
    HistoryItem,
    HistoryMessage,
    ProviderError,
    SessionOptions,
    ToolOutput,
)

log = logging.getLogger(__name__)

# Older (api-version) Azure deployments reliably offer whisper-1 for input transcription.
_TRANSCRIBE_MODEL: dict[Dialect, str] = {"ga": "gpt-4o-mini-transcribe", "beta": "whisper-1"}
_STATUS_HINTS = {
    401: " (check the API key)",
    403: " (check the API key)",
    404: " (check the endpoint, model or deployment)",
}
# Keepalive pings while the upstream is silent; a link that stops answering is lost.
_PING_IDLE_SECONDS = 20.0
_MAX_MESSAGE_BYTES = 64 << 20
_READ_BUFFER_BYTES = 4096  # grown as frames need; an idle link holds this much
# The most audio one append carries (~170 ms at 24 kHz, an 11 KB message).
_APPEND_PIECE_BYTES = 8 << 10
_APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'
# An item id an upstream takes back as it is (the ids it makes itself, and ours).
_REUSABLE_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{ITEM_ID_MAX}}}")


class RealtimeProvider:
    """One live link to an OpenAI-protocol realtime model (see ``Provider``).

    ``on_raw``, when set, and every listener of ``raw_events`` see every upstream event
    (parsed, and as it came) before it is mapped, for transports that pass the upstream's
    own events through (see ``RawProvider``). Sends after the link
    has dropped are ignored: the loss is reported once, as a fatal ``ModelError``.

    The link runs on picows: each upstream frame is handled in the callback that
    parsed it and each send is one write, so an audio chunk costs no task switch and
    no future either way. A link whose writes back up (a stalled upstream) makes the
    sends wait until it drains.
    """

    input_rate = SAMPLE_RATE
    output_rate = SAMPLE_RATE

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        dialect: Dialect,
        *,
        name: str = "openai",
        on_raw: RawListener | None = None,
        open_timeout: float = 15.0,
        transcription_model: str | None = None,
    ) -> None:
        self.url = url
        self.dialect: Dialect = dialect
        self.name = name
        self.on_raw = on_raw
        self.raw_session: dict[str, Any] | None = None
        self.raw_session_settled = False
        self._raw_listeners = RawListeners()
        self.transcription_model = transcription_model or _TRANSCRIBE_MODEL[dialect]
        self._headers = dict(headers)
        self._open_timeout = open_timeout
        self._link: Link | None = None
        self._emit: EmitModelEvent | None = None
        self._closing = False
        self._reported_loss = False

    def __repr__(self) -> str:
        return f"RealtimeProvider({self.name}, {_redacted(self.url)}, {self.dialect})"

    async def open(
        self, options: SessionOptions, history: Sequence[HistoryItem], emit: EmitModelEvent
    ) -> None:
        where = f"{self.name} realtime at {_redacted(self.url)}"
        loop = asyncio.get_running_loop()
        first: asyncio.Future[bytes] = loop.create_future()
        try:
            async with asyncio.timeout(self._open_timeout):
                transport, link = await ws_connect(
                    lambda: Link(self, first),
                    self.url,
                    extra_headers=self._headers,
                    websocket_handshake_timeout=self._open_timeout,
                    # The key goes with every request: never to wherever a redirect points.
                    max_redirects=0,
                    enable_auto_ping=True,
                    auto_ping_idle_timeout=_PING_IDLE_SECONDS,
                    auto_ping_reply_timeout=_PING_IDLE_SECONDS,
                    max_frame_size=_MAX_MESSAGE_BYTES,
                    read_buffer_init_size=_READ_BUFFER_BYTES,
                    logger_name="voxrelay.upstream",
                )
        except WSHandshakeError as exc:
            response = exc.response
            if response is None:
                kind = type(exc).__name__
                raise ProviderError(f"{where} refused the connection: {kind}") from None
            status = int(response.status)
            hint = _STATUS_HINTS.get(status, "")
            raise ProviderError(
                f"{where} refused the connection: HTTP {status}{hint}",
                # A refused key stays refused; anything else may pass on a later try.
                permanent=status in (401, 403),
            ) from None
        except (OSError, TimeoutError, WSError) as exc:
            # Other exceptions' messages can quote the full URL, query and all: name them only.
            detail = (
                f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else type(exc).__name__
            )
            raise ProviderError(f"cannot connect to {where}: {detail}") from None
        assert isinstance(link, Link)
        try:
            async with asyncio.timeout(self._open_timeout):
                message = await first
            event = orjson.loads(message)
        except (TimeoutError, ConnectionError, ValueError) as exc:
            transport.disconnect()
            raise ProviderError(f"{where} did not start a session: {type(exc).__name__}") from None
        if isinstance(event, dict):
            self._raw(event, message)
        if not isinstance(event, dict) or event.get("type") != "session.created":
            transport.disconnect()
            error = (event.get("error") if isinstance(event, dict) else None) or {}
            said = error.get("message") or (event.get("type") if isinstance(event, dict) else None)
            raise ProviderError(
                f"{where} did not start a session: {said}",
                permanent=error.get("code") in PERMANENT_ERRORS,
            )
        self._link = link
        self._emit = emit
        link.opened()
        self._send(self._session_update(options))
        for earlier in history:
            for item in self._items(earlier):
                self._send({"type": "conversation.item.create", "item": item})
        await link.writable()

    def _session_update(self, options: SessionOptions) -> dict[str, Any]:
        transcription = {"model": self.transcription_model}
        if options.language:
            transcription["language"] = options.language
        turn_detection = {"type": "server_vad"} if options.turn_detection == "server_vad" else None
        session: dict[str, Any]
        if self.dialect == "beta":
            session = {
                "modalities": ["text", "audio"],
                "input_audio_format": PCM_BETA,
                "output_audio_format": PCM_BETA,
                "input_audio_transcription": transcription,
                "turn_detection": turn_detection,
            }
            if options.voice:
                session["voice"] = options.voice
        else:
            output: dict[str, Any] = {"format": dict(PCM_GA)}
            if options.voice:
                output["voice"] = options.voice
            session = {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": dict(PCM_GA),
                        "transcription": transcription,
                        "turn_detection": turn_detection,
                    },
                    "output": output,
                },
            }
        if options.instructions is not None:
            session["instructions"] = options.instructions
        if options.tools:
            # Beta knows function tools only: remote MCP servers are GA's.
            tools = list(options.tools)
            session["tools"] = function_tools(tools) if self.dialect == "beta" else tools
        return {"type": "session.update", "session": session}

    def _items(self, earlier: HistoryItem) -> list[dict[str, Any]]:
        """An earlier turn as conversation items: a message, or a function call and its
        output."""
        if isinstance(earlier, HistoryMessage):
            return [self._message(earlier)]
        call: dict[str, Any] = {
            "type": "function_call",
            "call_id": earlier.call_id,
            "name": earlier.name,
            "arguments": earlier.arguments,
        }
        if earlier.item_id and _REUSABLE_ID.fullmatch(earlier.item_id):
            call["id"] = earlier.item_id
        if earlier.output is None:
            return [call]  # its output may still come, for this call id
        output = {"type": "function_call_output", "call_id": earlier.call_id}
        return [call, {**output, "output": earlier.output}]

    def _message(self, message: HistoryMessage) -> dict[str, Any]:
        if message.role == "user":
            kind = "input_text"
        else:
            kind = "text" if self.dialect == "beta" else "output_text"
        item: dict[str, Any] = {
            "type": "message",
            "role": message.role,
            "content": [{"type": kind, "text": message.text}],
        }
        if message.item_id and _REUSABLE_ID.fullmatch(message.item_id):
            # The same id again, so that what a client knows of the item still holds.
            item["id"] = message.item_id
        return item

    async def send_audio(self, pcm: bytes) -> None:
        # Built by hand: base64 needs no JSON escaping, and a JSON encoder would rescan it.
        link = self._link
        if link is None:
            raise ProviderError(f"{self.name} realtime link is not open")
        if len(pcm) <= _APPEND_PIECE_BYTES:
            link.send(_APPEND_PREFIX + base64.b64encode(pcm) + b'"}')
        else:
            # The link's write buffer grows to its largest message and stays that
            # size: a burst (or a turn sent again to a new link) goes in pieces.
            with memoryview(pcm) as view:
                for at in range(0, len(pcm), _APPEND_PIECE_BYTES):
                    piece = view[at : at + _APPEND_PIECE_BYTES]
                    link.send(_APPEND_PREFIX + base64.b64encode(piece) + b'"}')
                    piece.release()
        await link.writable()

    async def commit(self) -> None:
        self._send({"type": "input_audio_buffer.commit"})
        self._send({"type": "response.create"})
        await self._writable()

    async def send_text(self, item_id: str, text: str) -> None:
        item = self._message(HistoryMessage(role="user", text=text))
        item["id"] = _upstream_item_id(item_id)
        self._send({"type": "conversation.item.create", "item": item})
        self._send({"type": "response.create"})
        await self._writable()

    async def update_tools(self, tools: Sequence[Mapping[str, Any]]) -> None:
        declared = [dict(tool) for tool in tools]
        if self.dialect == "beta":
            session: dict[str, Any] = {"tools": function_tools(declared)}
        else:
            session = {"type": "realtime", "tools": declared}
        self._send({"type": "session.update", "session": session})
        await self._writable()

    async def send_tool_outputs(self, outputs: Sequence[ToolOutput]) -> None:
        for result in outputs:
            item: dict[str, Any]
            if result.late:
                # The call has its output already (that the result would follow): the
                # result itself comes as a note of the system's.
                text = f"The result of {result.name} (call {result.call_id}): {result.output}"
                content = [{"type": "input_text", "text": text}]
                item = {"type": "message", "role": "system", "content": content}
            else:
                item = {"type": "function_call_output", "call_id": result.call_id}
                item["output"] = result.output
            self._send({"type": "conversation.item.create", "item": item})
        self._send({"type": "response.create"})
        await self._writable()

    async def cancel(self, item_id: str | None, played_ms: int | None) -> None:
        self._send({"type": "response.cancel"})
        if item_id is not None and played_ms is not None:
            self._send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": max(0, int(played_ms)),
                }
            )
        await self._writable()

    def raw_events(self, listener: RawListener) -> contextlib.AbstractContextManager[None]:
        """Call ``listener`` with every upstream event while the block runs."""
        return self._raw_listeners.subscribed(listener)

    def _raw(self, event: dict[str, Any], message: bytes) -> None:
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict):
                self.raw_session = session
            # The first session.updated answers the server's own session.update.
            self.raw_session_settled = self.raw_session_settled or kind == "session.updated"
        if self.on_raw is not None:
            self.on_raw(event, message)
        self._raw_listeners.tell(event, message)

    async def send_raw(self, event: Mapping[str, Any]) -> None:
        """Send an upstream event as is (for pass-through transports)."""
        self._send(event)
        await self._writable()

    async def close(self) -> None:
        self._closing = True
        link = self._link
        if link is not None:
            await link.close()

    def _send(self, event: Mapping[str, Any]) -> None:
        if self._link is None:
            raise ProviderError(f"{self.name} realtime link is not open")
        self._link.send(orjson.dumps(event))

    async def _writable(self) -> None:
        if self._link is not None:
            await self._link.writable()

    # -- what the upstream says (called by the link, from its frame callback) ---------------

    def _on_message(self, message: bytes) -> None:
        try:
            event = orjson.loads(message)
        except ValueError:
            assert self._link is not None
            self._link.fail(WSCloseCode.PROTOCOL_ERROR, "invalid JSON")
            self._lost(f"{self.name} sent invalid JSON")
            return
        if not isinstance(event, dict):
            log.warning("%s realtime: ignoring a message that is not an event", self.name)
            return
        self._raw(event, message)
        try:
            mapped = model_event(event)
        except (KeyError, TypeError, ValueError):
            # One malformed event should not end a conversation.
            log.warning("%s realtime: ignoring malformed %r event", self.name, event.get("type"))
            return
        if mapped is not None and not self._closing and self._emit is not None:
            self._emit(mapped)

    def _on_closed(self, close_code: int | None) -> None:
        if self._closing:
            return
        why = f"code {close_code}" if close_code is not None else "no close frame"
        self._lost(f"{self.name} realtime connection closed unexpectedly ({why})")

    def _lost(self, message: str) -> None:
        if self._reported_loss or self._closing or self._emit is None:
            return
        self._reported_loss = True
        self._emit(ModelError("upstream_failed", message, fatal=True))


def _upstream_item_id(item_id: str) -> str:
    if len(item_id) <= ITEM_ID_MAX:
        return item_id
    return "vr_" + hashlib.sha256(item_id.encode()).hexdigest()[: ITEM_ID_MAX - 3]


def _redacted(url: str) -> str:
    """The URL without its query, which a proxy URL might use for credentials."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
