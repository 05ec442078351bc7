"""The OpenAI-Realtime-compatible WebSocket from the client's side (GA dialect)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voxrelay.audio import StreamResampler
from voxrelay.client._events import ConnectionLost, Event, Options
from voxrelay.client.http import ApiError

RATE = 24000  # the protocol's PCM16 rate
# The server refuses after accepting (browsers never see an upgrade's HTTP status):
# its close codes, as the HTTP statuses the other transports answer.
_REFUSED = {4400: 400, 4401: 401, 4404: 404, 1012: 503, 1011: 500}
_ENDED = "conversation ended: "  # the close reason of a conversation the server ended
_GREETING_SECONDS = 30.0


class RealtimeConversation:
    def __init__(self, ws: ClientConnection, conversation_id: str, options: Options) -> None:
        self._ws = ws
        self.conversation_id = conversation_id
        self.input_rate = options.input_rate
        self.output_rate = options.output_rate
        self._manual = options.turn_detection == "manual"
        self._up = StreamResampler(options.input_rate, RATE)
        self._down = StreamResampler(RATE, options.output_rate)
        self._answer_item: str | None = None
        self._ended = False

    @classmethod
    async def open(cls, url: str, token: str, options: Options) -> RealtimeConversation:
        conversation_id = options.conversation_id or "conv_" + secrets.token_hex(12)
        query = urlencode({"model": "voxrelay", "conversationId": conversation_id})
        ws_url = url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/")
        try:
            ws = await connect(
                f"{ws_url}/v1/realtime?{query}",
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=None,
                compression=None,
            )
        except InvalidStatus as error:
            # voxrelay accepts every upgrade: a refused one is no voxrelay route.
            status = error.response.status_code
            raise ApiError(status, "error", f"no WebSocket at {ws_url}/v1/realtime") from None
        await _greeted(ws)
        session: dict[str, Any] = {"type": "realtime"}
        if options.instructions:
            session["instructions"] = options.instructions
        audio_in: dict[str, Any] = {
            "turn_detection": None if options.turn_detection == "manual" else {"type": "server_vad"}
        }
        if options.language:
            audio_in["transcription"] = {"language": options.language}
        session["audio"] = {"input": audio_in}
        if options.voice:
            session["audio"]["output"] = {"voice": options.voice}
        conversation = cls(ws, conversation_id, options)
        await conversation._send({"type": "session.update", "session": session})
        return conversation

    async def _send(self, event: dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(event))
        except ConnectionClosed as closed:
            raise ConnectionLost(_closed(closed)) from None

    async def send_audio(self, pcm: bytes) -> None:
        resampled = self._up.feed(pcm)
        if resampled:
            audio = base64.b64encode(resampled).decode("ascii")
            await self._send({"type": "input_audio_buffer.append", "audio": audio})

    async def commit(self) -> None:
        await self._send({"type": "input_audio_buffer.commit"})
        if self._manual:
            await self._send({"type": "response.create"})

    async def send_text(self, text: str) -> None:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        await self._send({"type": "conversation.item.create", "item": item})
        await self._send({"type": "response.create"})

    async def interrupt(self, played_ms: int | None = None) -> None:
        await self._send({"type": "response.cancel"})
        if played_ms is not None and self._answer_item is not None:
            await self._send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": self._answer_item,
                    "content_index": 0,
                    "audio_end_ms": played_ms,
                }
            )

    async def end(self) -> None:
        self._ended = True
        await self._ws.close()

    async def events(self) -> AsyncIterator[Event]:
        yield Event(
            "conversation_started",
            {
                "conversationId": self.conversation_id,
                "inputSampleRate": self.input_rate,
                "outputSampleRate": self.output_rate,
            },
        )
        try:
            async for message in self._ws:
                event = _to_stream_event(json.loads(message), self)
                if event is not None:
                    yield event
        except ConnectionClosed:
            pass
        frame = self._ws.protocol.close_rcvd
        if self._ended:
            reason = "client_end"
        elif frame is not None and frame.reason.startswith(_ENDED):
            reason = frame.reason.removeprefix(_ENDED)
        else:
            raise ConnectionLost(_closed(self._ws))
        yield Event(
            "conversation_ended", {"conversationId": self.conversation_id, "reason": reason}
        )

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


async def _greeted(ws: ClientConnection) -> None:
    """Wait for the server's first event, ``session.created``. A refusal (an
    ``error``, then a close) raises ``ApiError`` as the HTTP transport would."""
    error: dict[str, Any] = {}
    try:
        async with asyncio.timeout(_GREETING_SECONDS):
            first = json.loads(await ws.recv())
        if first.get("type") != "error":
            return
        error = first.get("error") or {}
        async for _ in ws:  # what is left before the close
            pass
    except ConnectionClosed:
        pass
    frame = ws.protocol.close_rcvd
    raise _refusal(frame.code if frame else 1006, error, error.get("message") or _closed(ws))


def _refusal(close_code: int, error: dict[str, Any], message: str) -> ApiError:
    code = error.get("code") or error.get("type") or "error"
    return ApiError(_REFUSED.get(close_code, 500), code, message)


def _closed(closed: ConnectionClosed | ClientConnection) -> str:
    """How the connection ended, in words."""
    frame = closed.rcvd if isinstance(closed, ConnectionClosed) else closed.protocol.close_rcvd
    if frame is None:
        return "the WebSocket dropped without a close frame"
    return f"the server closed the connection ({f'{frame.code} {frame.reason}'.strip()})"


def _to_stream_event(event: dict[str, Any], conversation: RealtimeConversation) -> Event | None:
    kind = event.get("type", "")
    if kind == "input_audio_buffer.speech_started":
        return Event("speech_started", {"itemId": event["item_id"]})
    if kind == "input_audio_buffer.speech_stopped":
        return Event("speech_stopped", {"itemId": event["item_id"]})
    if kind == "conversation.item.input_audio_transcription.delta":
        return Event(
            "transcript", {"role": "user", "itemId": event["item_id"], "delta": event["delta"]}
        )
    if kind == "conversation.item.input_audio_transcription.completed":
        data = {
            "role": "user",
            "itemId": event["item_id"],
            "text": event["transcript"],
            "final": True,
        }
        return Event("transcript", data)
    if kind == "response.created":
        return Event("response_started", {"responseId": event["response"]["id"]})
    if kind == "response.output_audio.delta":
        conversation._answer_item = event["item_id"]
        pcm = conversation._down.feed(base64.b64decode(event["delta"]))
        return Event("audio", {"responseId": event["response_id"]}, pcm)
    if kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
        data = {"role": "assistant", "itemId": event["item_id"], "delta": event["delta"]}
        return Event("transcript", data)
    if kind in ("response.output_audio_transcript.done", "response.output_text.done"):
        text = event.get("transcript", event.get("text", ""))
        data = {"role": "assistant", "itemId": event["item_id"], "text": text, "final": True}
        return Event("transcript", data)
    if kind == "response.done":
        response = event["response"]
        status = response.get("status")
        status = status if status in ("completed", "cancelled") else "failed"
        return Event("response_done", {"responseId": response["id"], "status": status})
    if kind == "error":
        error = event.get("error") or {}
        return Event(
            "error",
            {"code": error.get("code") or error.get("type"), "message": error.get("message", "")},
        )
    return None
