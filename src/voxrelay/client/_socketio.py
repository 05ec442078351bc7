"""The Socket.IO transport from the client's side (namespace ``/realtime``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import socketio

from voxrelay.client._events import Event, Options, decode
from voxrelay.client.http import ApiError, VoxrelayClient

NAMESPACE = "/realtime"
# Socket.IO event name -> the stream vocabulary every transport shares.
_EVENTS = {
    "transcript": "transcript",
    "ai-audio": "audio",
    "speech-started": "speech_started",
    "speech-stopped": "speech_stopped",
    "response-started": "response_started",
    "response-done": "response_done",
    "session-ended": "conversation_ended",
    "error": "error",
}


class SocketIOConversation:
    def __init__(
        self, sio: socketio.AsyncClient, session: dict[str, Any], queue: asyncio.Queue[Event]
    ) -> None:
        self._sio = sio
        self._queue = queue
        self.conversation_id: str = session["conversationId"]
        self.input_rate: int = session["inputSampleRate"]
        self.output_rate: int = session["outputSampleRate"]

    @classmethod
    async def open(cls, url: str, token: str, options: Options) -> SocketIOConversation:
        async with VoxrelayClient(url, token) as rest:
            session = await rest.create_session(
                conversationId=options.conversation_id,
                inputSampleRate=options.input_rate,
                outputSampleRate=options.output_rate,
                turnDetection=options.turn_detection,
                language=options.language,
                voice=options.voice,
                instructions=options.instructions,
            )
        queue: asyncio.Queue[Event] = asyncio.Queue()
        sio = socketio.AsyncClient(reconnection=False)
        for wire_name, name in _EVENTS.items():
            sio.on(wire_name, _forward(queue, name), namespace=NAMESPACE)
        await sio.connect(
            url, auth={"token": token}, namespaces=[NAMESPACE], transports=["websocket"]
        )
        answer = await sio.call("join-session", {"sessionId": session["id"]}, namespace=NAMESPACE)
        if not answer or not answer.get("ok"):
            await sio.disconnect()
            error = (answer or {}).get("error") or {}
            raise ApiError(0, error.get("code", "error"), error.get("message", "join failed"))
        queue.put_nowait(
            Event(
                "conversation_started",
                {
                    "conversationId": session["conversationId"],
                    "sessionId": session["id"],
                    "inputSampleRate": session["inputSampleRate"],
                    "outputSampleRate": session["outputSampleRate"],
                },
            )
        )
        return cls(sio, session, queue)

    async def send_audio(self, pcm: bytes) -> None:
        await self._sio.emit("audio-chunk", pcm, namespace=NAMESPACE)

    async def commit(self) -> None:
        await self._sio.call("commit-audio", {}, namespace=NAMESPACE)

    async def send_text(self, text: str) -> None:
        await self._sio.call("text-message", {"text": text}, namespace=NAMESPACE)

    async def interrupt(self, played_ms: int | None = None) -> None:
        payload = {} if played_ms is None else {"playedMs": played_ms}
        await self._sio.call("interrupt", payload, namespace=NAMESPACE)

    async def end(self) -> None:
        await self._sio.call("end-session", {}, namespace=NAMESPACE)

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            yield event
            if event.type == "conversation_ended":
                return

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._sio.disconnect()


def _forward(queue: asyncio.Queue[Event], name: str) -> Any:
    async def handler(data: Any = None) -> None:
        queue.put_nowait(decode(name, data if isinstance(data, dict) else {}))

    return handler
