"""Lean benchmark clients, one per transport, plus a direct client of the
upstream for the baseline. Each streams 16 kHz PCM16 in real time in 20 ms
chunks and records when it sent each chunk and when answer audio arrived
(cumulative bytes at 24 kHz)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect

from voxrelay.audio import StreamResampler

_AUDIO = re.compile(r'"audio":\s*"([^"]*)"')
_DELTA = re.compile(r'"delta":\s*"([^"]*)"')
RATE_IN = 16000
CHUNK = RATE_IN // 50 * 2  # 20 ms at 16 kHz


@dataclass
class Trace:
    tag: str
    sent: list[float] = field(default_factory=list)  # one time per 20 ms chunk
    received: list[tuple[float, int]] = field(default_factory=list)  # (time, cumulative bytes)
    commit_at: list[float] = field(default_factory=list)
    first_after_commit: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _bytes: int = 0
    _awaiting_first: bool = False

    def got(self, count: int) -> None:
        now = time.monotonic()
        self._bytes += count
        self.received.append((now, self._bytes))
        if self._awaiting_first:
            self._awaiting_first = False
            self.first_after_commit.append(now)

    def committing(self) -> None:
        self._awaiting_first = True
        self.commit_at.append(time.monotonic())

    def as_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "sent": self.sent,
            "received": self.received,
            "commit_at": self.commit_at,
            "first_after_commit": self.first_after_commit,
            "errors": self.errors,
        }


def b64_bytes(text: str) -> int:
    return len(text) * 3 // 4 - text.endswith("=") - text.endswith("==")


async def pace(trace: Trace, audio: bytes, start: float, seconds: float, send: Any) -> None:
    """Send ``seconds`` of ``audio`` (looped) in 20 ms chunks on a real-time clock."""
    chunks = int(seconds * 50)
    loop = asyncio.get_running_loop()
    for k in range(chunks):
        due = start + k * 0.02
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        offset = (k * CHUNK) % (len(audio) - CHUNK)
        trace.sent.append(time.monotonic())
        await send(audio[offset : offset + CHUNK])


async def commit_turn(trace: Trace, audio: bytes, send: Any, commit: Any) -> None:
    """Half a second of speech, a pause for its echo to drain, then commit."""
    loop = asyncio.get_running_loop()
    await pace(Trace("scratch"), audio, loop.time(), 0.5, send)
    await asyncio.sleep(0.3)
    trace.committing()
    await commit()
    for _ in range(200):
        if not trace._awaiting_first:
            return
        await asyncio.sleep(0.01)
    trace.errors.append("no audio after commit")


class HttpClient:
    def __init__(self, url: str, token: str, tag: str) -> None:
        self.trace = Trace(tag)
        self._http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=None
        )
        self._conversation = ""
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._upload: asyncio.Task[Any] | None = None

    async def open(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), 30)

    async def _read(self) -> None:
        params = {
            "instructions": self.trace.tag,
            "inputSampleRate": RATE_IN,
            "outputSampleRate": 24000,
            "turnDetection": "manual",
        }
        async with self._http.stream("GET", "/realtime/stream", params=params) as response:
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "audio":
                        start = line.index('"audio":"') + 9
                        self.trace.got(b64_bytes(line[start : line.index('"', start)]))
                    elif event == "conversation_started":
                        self._conversation = json.loads(line[6:])["conversationId"]
                        self._ready.set()
                    elif event == "error":
                        self.trace.errors.append(line[6:])

    async def send(self, pcm: bytes) -> None:
        if self._upload is None:
            self._upload = asyncio.get_running_loop().create_task(
                self._http.post(
                    "/realtime/upload",
                    params={"conversationId": self._conversation},
                    content=self._body(),
                    headers={"Content-Type": "application/octet-stream"},
                )
            )
        await self._queue.put(pcm)

    async def _body(self) -> Any:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    async def commit(self) -> None:
        # The upload stays open, as a watch's does for the whole conversation.
        await self._http.post("/realtime/commit", params={"conversationId": self._conversation})

    async def _finish_upload(self) -> None:
        if self._upload is not None:
            await self._queue.put(None)
            await self._upload
            self._upload = None

    async def close(self) -> None:
        await self._finish_upload()
        await self._http.post("/realtime/end", params={"conversationId": self._conversation})
        if self._reader is not None:
            self._reader.cancel()
        await self._http.aclose()


class SocketIOClient:
    """Socket.IO (protocol v5 over Engine.IO v4, WebSocket transport) spoken
    directly on a WebSocket: the python-socketio client costs more CPU per
    chunk than the server under test, which would measure the client."""

    def __init__(self, url: str, token: str, tag: str) -> None:
        self.trace = Trace(tag)
        self._url, self._token = url, token
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[str]] = {}
        self._next_ack = 0

    async def open(self) -> None:
        async with httpx.AsyncClient(
            base_url=self._url, headers={"Authorization": f"Bearer {self._token}"}
        ) as http:
            response = await http.post(
                "/realtime/session",
                json={"instructions": self.trace.tag, "turnDetection": "manual"},
            )
            session = response.json()["session"]
        target = self._url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self._ws = await connect(target, max_size=None, compression=None)
        await self._ws.recv()  # Engine.IO open
        await self._ws.send("40/realtime," + json.dumps({"token": self._token}))
        while not (await self._ws.recv()).startswith("40/realtime"):
            pass
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self._call("join-session", {"sessionId": session["id"]})

    async def _read(self) -> None:
        async for message in self._ws:
            if isinstance(message, bytes):
                continue
            if message == "2":
                await self._ws.send("3")  # Engine.IO pong
            elif message.startswith('42/realtime,["ai-audio"'):
                match = _AUDIO.search(message)
                if match is not None:
                    self.trace.got(b64_bytes(match.group(1)))
            elif message.startswith("43/realtime,"):
                number = int(re.match(r"43/realtime,(\d+)", message).group(1))  # type: ignore[union-attr]
                future = self._acks.pop(number, None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.startswith('42/realtime,["error"'):
                self.trace.errors.append(message[:200])

    async def _call(self, event: str, data: dict[str, Any]) -> str:
        self._next_ack += 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._acks[self._next_ack] = future
        await self._ws.send(f"42/realtime,{self._next_ack}" + json.dumps([event, data]))
        return await asyncio.wait_for(future, 30)

    async def send(self, pcm: bytes) -> None:
        # A binary event: the packet with a placeholder, then the attachment.
        await self._ws.send('451-/realtime,["audio-chunk",{"_placeholder":true,"num":0}]')
        await self._ws.send(pcm)

    async def commit(self) -> None:
        await self._ws.send('42/realtime,["commit-audio",{}]')

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._call("end-session", {})
        if self._reader is not None:
            self._reader.cancel()
        await self._ws.close()


class RealtimeClient:
    """The OpenAI Realtime protocol over a WebSocket: to the relay's
    ``/v1/realtime``, or straight to the upstream for the baseline. The
    protocol's audio is 24 kHz, so this client resamples its 16 kHz itself."""

    def __init__(self, url: str, token: str, tag: str, *, direct: bool = False) -> None:
        self.trace = Trace(tag)
        self._url, self._token, self._direct = url, token, direct
        self._resampler = StreamResampler(RATE_IN, 24000)
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        target = self._url if self._direct else self._url.replace("http", "ws", 1) + "/v1/realtime"
        self._ws = await connect(
            f"{target}?model=bench",
            additional_headers={"Authorization": f"Bearer {self._token}"},
            max_size=None,
            compression=None,
        )
        update = {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": self.trace.tag},
        }
        await self._ws.send(json.dumps(update))
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if '"response.output_audio.delta"' in message:
                match = _DELTA.search(message)
                if match is not None:
                    self.trace.got(b64_bytes(match.group(1)))
            elif '"type":"error"' in message:
                self.trace.errors.append(message[:200])

    async def send(self, pcm: bytes) -> None:
        pcm = self._resampler.feed(pcm)
        audio = base64.b64encode(pcm).decode()
        await self._ws.send('{"type":"input_audio_buffer.append","audio":"' + audio + '"}')

    async def commit(self) -> None:
        await self._ws.send('{"type":"input_audio_buffer.commit"}')

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._ws.close()


CLIENTS = {"http": HttpClient, "socketio": SocketIOClient, "ws": RealtimeClient}
