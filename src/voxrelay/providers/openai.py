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
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from voxrelay.config import Settings
from voxrelay.events import (
    AudioDelta,
    InputCommitted,
    ModelError,
    ModelEvent,
    ResponseDone,
    ResponseStarted,
    ResponseStatus,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
)
from voxrelay.providers.base import HistoryMessage, ProviderError, SessionOptions

log = logging.getLogger(__name__)

Dialect = Literal["ga", "beta"]
RawListener = Callable[[dict[str, Any]], None]

SAMPLE_RATE = 24000
# Older (api-version) Azure deployments reliably offer whisper-1 for input transcription.
_TRANSCRIBE_MODEL: dict[Dialect, str] = {"ga": "gpt-4o-mini-transcribe", "beta": "whisper-1"}
# OpenAI rejects longer client-chosen item ids.
_ITEM_ID_MAX = 32
_STATUS: dict[str, ResponseStatus] = {"completed": "completed", "cancelled": "cancelled"}
_STATUS_HINTS = {
    401: " (check the API key)",
    403: " (check the API key)",
    404: " (check the endpoint, model or deployment)",
}
# A cancel that races the natural end of a response; nothing was lost.
_BENIGN_ERRORS = frozenset({"response_cancel_not_active"})


class RealtimeProvider:
    """One live link to an OpenAI-protocol realtime model (see ``Provider``).

    ``on_raw``, when set, sees every upstream event as parsed JSON before it is mapped,
    for transports that pass the upstream's own events through. Sends after the link
    has dropped are ignored: ``events()`` reports the loss once, as a fatal ``ModelError``.
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
        self.transcription_model = transcription_model or _TRANSCRIBE_MODEL[dialect]
        self._headers = dict(headers)
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._closing = False

    def __repr__(self) -> str:
        return f"RealtimeProvider({self.name}, {_redacted(self.url)}, {self.dialect})"

    async def open(self, options: SessionOptions, history: Sequence[HistoryMessage]) -> None:
        where = f"{self.name} realtime at {_redacted(self.url)}"
        try:
            ws = await connect(
                self.url,
                additional_headers=self._headers,
                open_timeout=self._open_timeout,
                max_size=None,
                # Base64 audio hardly compresses; deflating every chunk would only cost CPU.
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = _STATUS_HINTS.get(status, "")
            raise ProviderError(f"{where} refused the connection: HTTP {status}{hint}") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            # Other exceptions' messages can quote the full URL, query and all: name them only.
            detail = (
                f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else type(exc).__name__
            )
            raise ProviderError(f"cannot connect to {where}: {detail}") from None
        try:
            first = await asyncio.wait_for(ws.recv(), self._open_timeout)
            event = json.loads(first)
        except (TimeoutError, ConnectionClosed, ValueError) as exc:
            await ws.close()
            raise ProviderError(f"{where} did not start a session: {type(exc).__name__}") from None
        if self.on_raw is not None:
            self.on_raw(event)
        if event.get("type") != "session.created":
            await ws.close()
            error = event.get("error") or {}
            detail = error.get("message") or event.get("type")
            raise ProviderError(f"{where} did not start a session: {detail}")
        self._ws = ws
        await self._send(self._session_update(options))
        for message in history:
            await self._send({"type": "conversation.item.create", "item": self._message(message)})

    def _session_update(self, options: SessionOptions) -> dict[str, Any]:
        transcription = {"model": self.transcription_model}
        if options.language:
            transcription["language"] = options.language
        turn_detection = {"type": "server_vad"} if options.turn_detection == "server_vad" else None
        session: dict[str, Any]
        if self.dialect == "beta":
            session = {
                "modalities": ["text", "audio"],
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": turn_detection,
            }
            if options.voice:
                session["voice"] = options.voice
        else:
            output: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}}
            if options.voice:
                output["voice"] = options.voice
            session = {
                "type": "realtime",
                "output_modalities": ["audio"],
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
                        "transcription": transcription,
                        "turn_detection": turn_detection,
                    },
                    "output": output,
                },
            }
        if options.instructions is not None:
            session["instructions"] = options.instructions
        return {"type": "session.update", "session": session}

    def _message(self, message: HistoryMessage) -> dict[str, Any]:
        if message.role == "user":
            kind = "input_text"
        else:
            kind = "text" if self.dialect == "beta" else "output_text"
        return {
            "type": "message",
            "role": message.role,
            "content": [{"type": kind, "text": message.text}],
        }

    async def send_audio(self, pcm: bytes) -> None:
        # Built by hand: base64 needs no JSON escaping, and json.dumps would rescan it.
        audio = base64.b64encode(pcm).decode("ascii")
        await self._send_text('{"type":"input_audio_buffer.append","audio":"' + audio + '"}')

    async def commit(self) -> None:
        await self._send({"type": "input_audio_buffer.commit"})
        await self._send({"type": "response.create"})

    async def send_text(self, item_id: str, text: str) -> None:
        item = self._message(HistoryMessage(role="user", text=text))
        item["id"] = _upstream_item_id(item_id)
        await self._send({"type": "conversation.item.create", "item": item})
        await self._send({"type": "response.create"})

    async def cancel(self, item_id: str | None, played_ms: int | None) -> None:
        await self._send({"type": "response.cancel"})
        if item_id is not None and played_ms is not None:
            await self._send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": max(0, int(played_ms)),
                }
            )

    async def send_raw(self, event: Mapping[str, Any]) -> None:
        """Send an upstream event as is (for pass-through transports)."""
        await self._send(event)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    async def _send(self, event: Mapping[str, Any]) -> None:
        await self._send_text(json.dumps(event, separators=(",", ":")))

    async def _send_text(self, message: str) -> None:
        if self._ws is None:
            raise ProviderError(f"{self.name} realtime link is not open")
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(message)

    async def events(self) -> AsyncIterator[ModelEvent]:
        ws = self._ws
        if ws is None:
            raise ProviderError(f"{self.name} realtime link is not open")
        try:
            async for message in ws:
                event = json.loads(message)
                if self.on_raw is not None:
                    self.on_raw(event)
                try:
                    mapped = _map(event)
                except (KeyError, TypeError, ValueError):
                    # One malformed event should not end a conversation.
                    log.warning(
                        "%s realtime: ignoring malformed %r event", self.name, event.get("type")
                    )
                    continue
                if mapped is not None:
                    yield mapped
        except ConnectionClosed:
            pass
        except ValueError:
            await ws.close(1002, "invalid JSON")
            if not self._closing:
                yield ModelError("upstream_failed", f"{self.name} sent invalid JSON", fatal=True)
            return
        if not self._closing:
            why = f"code {ws.close_code}" if ws.close_code is not None else "no close frame"
            message_ = f"{self.name} realtime connection closed unexpectedly ({why})"
            yield ModelError("upstream_failed", message_, fatal=True)


_ASSISTANT_DELTA = frozenset(
    {
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
        "response.output_text.delta",
        "response.text.delta",
    }
)
# Done event -> the field holding the full text.
_ASSISTANT_DONE = {
    "response.output_audio_transcript.done": "transcript",
    "response.audio_transcript.done": "transcript",
    "response.output_text.done": "text",
    "response.text.done": "text",
}


def _map(event: dict[str, Any]) -> ModelEvent | None:
    """One upstream event (either dialect) as an internal event, or None to ignore it."""
    kind = event.get("type")
    if kind in ("response.output_audio.delta", "response.audio.delta"):
        pcm = base64.b64decode(event["delta"])
        return AudioDelta(event["response_id"], event["item_id"], pcm)
    if kind in _ASSISTANT_DELTA:
        return TranscriptDelta("assistant", event["item_id"], event["delta"])
    if kind in _ASSISTANT_DONE:
        return TranscriptDone("assistant", event["item_id"], event[_ASSISTANT_DONE[kind]])
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(event["item_id"])
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(event["item_id"])
    if kind == "input_audio_buffer.committed":
        return InputCommitted(event["item_id"])
    if kind == "conversation.item.input_audio_transcription.delta":
        delta = event.get("delta")
        return TranscriptDelta("user", event["item_id"], delta) if delta else None
    if kind == "conversation.item.input_audio_transcription.completed":
        return TranscriptDone("user", event["item_id"], event["transcript"])
    if kind == "conversation.item.input_audio_transcription.failed":
        error = event.get("error") or {}
        code = error.get("code") or "transcription_failed"
        return ModelError(code, error.get("message") or "input transcription failed")
    if kind == "response.created":
        return ResponseStarted(event["response"]["id"])
    if kind == "response.done":
        response = event["response"]
        return ResponseDone(response["id"], _STATUS.get(response.get("status"), "failed"))
    if kind == "error":
        error = event.get("error") or {}
        code = error.get("code") or error.get("type") or "error"
        if code in _BENIGN_ERRORS:
            return None
        return ModelError(code, error.get("message") or "")
    return None


def _upstream_item_id(item_id: str) -> str:
    if len(item_id) <= _ITEM_ID_MAX:
        return item_id
    return "vr_" + hashlib.sha256(item_id.encode()).hexdigest()[: _ITEM_ID_MAX - 3]


def _redacted(url: str) -> str:
    """The URL without its query, which a proxy URL might use for credentials."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _ws_scheme(url: str) -> str:
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url.removeprefix(http)
    return url


def openai_provider(settings: Settings, *, on_raw: RawListener | None = None) -> RealtimeProvider:
    """OpenAI: ``VOXRELAY_OPENAI_URL`` with ``?model=``, bearer auth, GA events."""
    if not settings.openai_api_key:
        raise ProviderError("the openai provider needs OPENAI_API_KEY")
    url = _with_query(_ws_scheme(settings.openai_url), model=settings.openai_model)
    headers = {"Authorization": f"Bearer {settings.openai_api_key}"}
    return RealtimeProvider(url, headers, "ga", name="openai", on_raw=on_raw)


def azure_provider(settings: Settings, *, on_raw: RawListener | None = None) -> RealtimeProvider:
    """Azure OpenAI: the GA ``/openai/v1/realtime`` endpoint, or with
    ``AZURE_OPENAI_API_VERSION`` the preview ``/openai/realtime`` one and its beta events."""
    endpoint = (settings.azure_endpoint or "").strip()
    key = settings.azure_api_key or ""
    deployment = settings.azure_deployment or ""
    required = {
        "AZURE_OPENAI_ENDPOINT": endpoint,
        "AZURE_OPENAI_API_KEY": key,
        "AZURE_OPENAI_DEPLOYMENT": deployment,
    }
    missing = [env for env, value in required.items() if not value]
    if missing:
        raise ProviderError(f"the azure provider needs {', '.join(missing)}")
    base = _ws_scheme(endpoint).rstrip("/")
    headers = {"api-key": key}
    if settings.azure_api_version:
        query = urlencode({"api-version": settings.azure_api_version, "deployment": deployment})
        url = f"{base}/openai/realtime?{query}"
        return RealtimeProvider(url, headers, "beta", name="azure", on_raw=on_raw)
    url = f"{base}/openai/v1/realtime?{urlencode({'model': deployment})}"
    return RealtimeProvider(url, headers, "ga", name="azure", on_raw=on_raw)
