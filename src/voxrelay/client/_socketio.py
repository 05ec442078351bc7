"""The Socket.IO transport from the client's side (namespace ``/realtime``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import socketio
from socketio.exceptions import SocketIOError

from voxrelay.client._events import ConnectionLost, Event, Options, decode
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
_LOST = "_lost"  # queued when the connection drops, for events() to raise


class SocketIOConversation:
    def __init__(
        self,
        sio: socketio.AsyncClient,
        session: dict[str, Any],
        queue: asyncio.Queue[Event],
        lost: asyncio.Event,
    ) -> None:
        self._sio = sio
        self.socket_id: str = sio.eio.sid  # the Engine.IO socket's, which its worker owns
        self._queue = queue
        self._lost = lost
        self.session_id: str = session["id"]
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
        lost = asyncio.Event()
        sio = socketio.AsyncClient(reconnection=False)
        for wire_name, name in _EVENTS.items():
            sio.on(wire_name, _forward(queue, name), namespace=NAMESPACE)

        async def disconnected(reason: object = None) -> None:
            lost.set()
            queue.put_nowait(Event(_LOST, {"reason": str(reason)}))

        sio.on("disconnect", disconnected, namespace=NAMESPACE)
        # Naming the session it will join opens the socket in the worker holding it
        # (the server's connection hand-off), instead of relaying through another.
        await sio.connect(
            url + "?" + urlencode({"sessionId": session["id"]}),
            auth={"token": token},
            namespaces=[NAMESPACE],
            transports=["websocket"],
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
        return cls(sio, session, queue, lost)

    async def send_audio(self, pcm: bytes) -> None:
        if self._lost.is_set():
            raise ConnectionLost(_GONE)
        try:
            await self._sio.emit("audio-chunk", pcm, namespace=NAMESPACE)
        except SocketIOError:
            raise ConnectionLost(_GONE) from None

    async def _call(self, event: str, payload: dict[str, Any]) -> None:
        """``sio.call``, which would wait out its whole timeout on a dropped link."""
        if self._lost.is_set():
            raise ConnectionLost(_GONE)
        call = asyncio.ensure_future(self._sio.call(event, payload, namespace=NAMESPACE))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({call, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            call.cancel()
            lost.cancel()
        if call not in done:
            raise ConnectionLost(_GONE)
        try:
            call.result()
        except SocketIOError:
            raise ConnectionLost(_GONE) from None

    async def commit(self) -> None:
        await self._call("commit-audio", {})

    async def send_text(self, text: str) -> None:
        await self._call("text-message", {"text": text})

    async def interrupt(self, played_ms: int | None = None) -> None:
        await self._call("interrupt", {} if played_ms is None else {"playedMs": played_ms})

    async def end(self) -> None:
        await self._call("end-session", {})

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            if event.type == _LOST:
                raise ConnectionLost(f"{_GONE} ({event.data['reason']})")
            yield event
            if event.type == "conversation_ended":
                return

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._sio.disconnect()


_GONE = "the Socket.IO connection dropped"


def _forward(queue: asyncio.Queue[Event], name: str) -> Any:
    async def handler(data: Any = None) -> None:
        queue.put_nowait(decode(name, data if isinstance(data, dict) else {}))

    return handler
