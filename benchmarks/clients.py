"""Lean benchmark clients, one per transport, plus a direct client of the
upstream for the baseline. Each streams 16 kHz PCM16 in real time in 20 ms
chunks and records when it sent each chunk and when answer audio arrived
(cumulative bytes at 24 kHz).

The clients are built to cost as little CPU per chunk as the protocol allows,
so that a few hundred of them fit beside the server on a small machine:

- the WebSocket clients (Socket.IO, OpenAI realtime) run on picows and read
  each frame in its callback, with no task or coroutine per message;
- the HTTP client reads its event stream with a plain ``asyncio.Protocol``
  (HTTP/1.1 response head, chunked framing, SSE frames) and writes its upload
  as one long chunked POST, each 20 ms chunk one HTTP chunk;
- answer audio is counted from the length of its base64 text, sliced out of
  the frame, without a JSON parse; other events are parsed in full;
- every chunk is encoded once per process (``Speech``), not once per client;
- ``stream`` paces many clients with a few timers, each sending for a group
  of clients, instead of one sleeping coroutine per client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from voxrelay.audio import StreamResampler
from voxrelay.ws_messages import WholeMessages

RATE_IN = 16000
RATE_OUT = 24000
CHUNK = RATE_IN // 50 * 2  # 20 ms at 16 kHz
PERIOD = 0.02

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CLOSE = WSMsgType.CLOSE
_QUOTE = ord('"')
_PAD = ord("=")
_SPACE = ord(" ")
_APPEND = b'{"type":"input_audio_buffer.append","audio":"'
_COMMIT = b'{"type":"input_audio_buffer.commit"}'
_DELTA_TYPE = b'{"type":"response.output_audio.delta"'
_SIO_AUDIO = b'42/realtime,["ai-audio",'
_SIO_ACK = b"43/realtime,"
_SIO_ERROR = b'42/realtime,["error"'
# A binary event: the packet with a placeholder, then the attachment.
_SIO_CHUNK = b'451-/realtime,["audio-chunk",{"_placeholder":true,"num":0}]'
_SIO_COMMIT = b'42/realtime,["commit-audio",{}]'


@dataclass(slots=True)
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


def b64_bytes(text: str | bytes) -> int:
    """How many bytes a (padded) base64 text decodes to."""
    pad = text[-2:].count("=" if isinstance(text, str) else b"=")
    return len(text) * 3 // 4 - pad


def _b64_at(message: bytes, key: bytes, start: int = 0, stop: int | None = None) -> int:
    """The decoded size of the base64 string value of ``key`` (``b'"audio":'``)
    in a JSON text (between ``start`` and ``stop``), found without parsing it;
    -1 when it is not there."""
    stop = len(message) if stop is None else stop
    at = message.find(key, start, stop)
    if at < 0:
        return -1
    at += len(key)
    while at < stop and message[at] == _SPACE:
        at += 1
    if at >= stop or message[at] != _QUOTE:
        return -1
    at += 1
    end = message.find(b'"', at, stop)
    if end < 0:
        return -1
    return (end - at) * 3 // 4 - (message[end - 1] == _PAD) - (message[end - 2] == _PAD)


# -- what the clients send ------------------------------------------------------------------


class Speech:
    """``chunks`` consecutive 20 ms chunks of ``audio`` (looped), each encoded
    once per process for every transport: the same bytes every client of a
    kind would have made for itself."""

    def __init__(self, audio: bytes, chunks: int) -> None:
        span = len(audio) - CHUNK
        self.pcm = [audio[(k * CHUNK) % span : (k * CHUNK) % span + CHUNK] for k in range(chunks)]
        self._encoded: dict[str, list[bytes]] = {}

    def __len__(self) -> int:
        return len(self.pcm)

    def encoded(self, encoding: str) -> list[bytes]:
        frames = self._encoded.get(encoding)
        if frames is None:
            frames = self._encoded[encoding] = ENCODERS[encoding](self.pcm)
        return frames


def _http_chunks(pcm: Sequence[bytes]) -> list[bytes]:
    return [b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in pcm]


def _appends(pcm: Sequence[bytes]) -> list[bytes]:
    # One resampler for the whole sequence: what each client's own would make.
    resampler = StreamResampler(RATE_IN, RATE_OUT)
    return [_APPEND + base64.b64encode(resampler.feed(chunk)) + b'"}' for chunk in pcm]


ENCODERS: dict[str, Callable[[Sequence[bytes]], list[bytes]]] = {
    "pcm": list,
    "http": _http_chunks,
    "append": _appends,
}


class Client:
    """What ``stream`` needs of a client: ``write`` sends one chunk already
    encoded as ``ENCODING`` says, synchronously. ``conversation``: the id of its
    conversation once open, when the transport tells it."""

    ENCODING = "pcm"
    trace: Trace
    conversation = ""

    def write(self, data: bytes) -> None:
        raise NotImplementedError


def stream(
    clients: Sequence[Client], speech: Speech, start: float, offsets: Sequence[float]
) -> asyncio.Future[None]:
    """Send every chunk of ``speech`` from every client on a real-time clock.

    The clients are dealt into ``len(offsets)`` groups; group ``j`` sends chunk
    ``k`` at loop time ``start + offsets[j] + k * 20 ms``, from one timer for
    the whole group. A timer that fires late sends at once and the next keeps
    to the schedule. The returned future is done when every chunk is sent."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    frames = {kind: speech.encoded(kind) for kind in {c.ENCODING for c in clients}}
    count = len(speech)
    groups = [
        [(c.trace.sent.append, c.write, frames[c.ENCODING]) for c in clients[j :: len(offsets)]]
        for j in range(len(offsets))
    ]
    groups = [g for g in groups if g]
    pending = len(groups)
    if not pending or not count:
        done.set_result(None)
        return done
    monotonic = time.monotonic

    def tick(group: list[Any], base: float, k: int) -> None:
        nonlocal pending
        for record, write, encoded in group:
            record(monotonic())
            write(encoded[k])
        k += 1
        if k < count:
            loop.call_at(base + k * PERIOD, tick, group, base, k)
        else:
            pending -= 1
            if not pending and not done.done():
                done.set_result(None)

    for group, offset in zip(groups, offsets, strict=False):
        loop.call_at(start + offset, tick, group, start + offset, 0)
    return done


async def pace(trace: Trace, audio: bytes, start: float, seconds: float, send: Any) -> None:
    """Send ``seconds`` of ``audio`` (looped) in 20 ms chunks on a real-time
    clock, one client by itself (``stream`` paces many more cheaply)."""
    chunks = int(seconds * 50)
    loop = asyncio.get_running_loop()
    for k in range(chunks):
        due = start + k * PERIOD
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


# -- plain HTTP/1.1 ----------------------------------------------------------------------


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _head(method: str, target: str, host: str, token: str, extra: str = "") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"{extra}\r\n"
    ).encode()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _dechunk(body: bytes) -> bytes:
    out = []
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            break
        size = int(body[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            break
        out.append(body[eol + 2 : eol + 2 + size])
        pos = eol + 4 + size
    return b"".join(out)


async def http_request(
    url: str, method: str, path: str, token: str, body: Any = None
) -> tuple[int, bytes]:
    """One request on its own connection (``Connection: close``): status and body.
    For the control calls, which are off the hot path."""
    host, port = _host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        data = b"" if body is None else orjson.dumps(body)
        extra = f"Connection: close\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            extra += "Content-Type: application/json\r\n"
        writer.write(_head(method, path, f"{host}:{port}", token, extra) + data)
        response = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, content = response.partition(b"\r\n\r\n")
    status, headers = _parse_head(head)
    if "chunked" in headers.get("transfer-encoding", ""):
        content = _dechunk(content)
    return status, content


class KeptAlive:
    """Requests one after another on one HTTP/1.1 connection, as URLSession, OkHttp
    and httpx send them: the control calls of a conversation (commit, end)."""

    def __init__(self, url: str, token: str) -> None:
        self._host, self._port = _host_port(url)
        self._token = token
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> None:
        self._streams = await asyncio.open_connection(self._host, self._port)

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        if self._streams is None:
            await self.open()
        assert self._streams is not None
        reader, writer = self._streams
        host = f"{self._host}:{self._port}"
        writer.write(_head(method, path, host, self._token, "Content-Length: 0\r\n"))
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head[:-4])
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class _EventStream(asyncio.Protocol):
    """``GET /realtime/stream``: an HTTP/1.1 response whose chunked body is a
    Server-Sent Events stream. Only what the benchmark needs is decoded: the
    base64 length of ``audio`` events, the ``conversationId`` of
    ``conversation_started`` and the data of ``error`` events."""

    def __init__(self, trace: Trace, started: asyncio.Future[str]) -> None:
        self.trace = trace
        self.started = started
        self.transport: asyncio.Transport | None = None
        self.head = b""  # the response head, until complete
        self.status = 0
        self.chunked = True
        self.raw = b""  # body bytes not yet de-chunked
        self.left = 0  # bytes left in the current HTTP chunk
        self.crlf = False  # the current HTTP chunk's CRLF is still to come
        self.events = b""  # de-chunked bytes not yet split into SSE frames
        self.eol = b""  # how the stream ends its lines, once seen
        self.audio_line = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status, headers = _parse_head(self.head[:end])
            self.chunked = "chunked" in headers.get("transfer-encoding", "")
            data, self.head = self.head[end + 4 :], b""
            if self.status != 200:
                if not self.started.done():
                    detail = data[:300].decode(errors="replace")
                    self.started.set_exception(
                        ConnectionError(f"GET /realtime/stream: HTTP {self.status} {detail}")
                    )
                assert self.transport is not None
                self.transport.close()
                return
        body = self._dechunk(data) if self.chunked else data
        if body:
            self._frames(body)

    def _dechunk(self, data: bytes) -> bytes:
        buf = self.raw + data if self.raw else data
        size = len(buf)
        pos = 0
        out = []
        while pos < size:
            if self.left:
                take = min(self.left, size - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.left -= take
                self.crlf = not self.left
            elif self.crlf:
                if size - pos < 2:
                    break
                pos += 2
                self.crlf = False
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                self.left = int(buf[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if not self.left:  # the last chunk: the stream is over
                    pos = size
        self.raw = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    def _frames(self, body: bytes) -> None:
        buf = self.events + body if self.events else body
        if not self.eol:
            line = buf.find(b"\n")
            if line < 0:
                self.events = buf
                return
            self.eol = b"\r\n" if buf[line - 1 : line] == b"\r" else b"\n"
            self.audio_line = b"event: audio" + self.eol
        blank = self.eol + self.eol
        pos = 0
        while True:
            end = buf.find(blank, pos)
            if end < 0:
                break
            self._frame(buf, pos, end)
            pos = end + len(blank)
        self.events = buf[pos:]

    def _frame(self, buf: bytes, start: int, end: int) -> None:
        eol = self.eol
        # The hot path: an audio event, counted without parsing its JSON.
        at = buf.find(self.audio_line, start, end + len(eol))
        if at >= 0:
            size = _b64_at(buf, b'"audio":', at, end)
            if size >= 0:
                self.trace.got(size)
                return
        event, data = "message", []
        for line in buf[start:end].split(eol):
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"event":
                event = value.decode()
            elif name == b"data":
                data.append(value)
        if not data:
            return
        text = b"\n".join(data)
        if event == "audio":
            audio = orjson.loads(text).get("audio")
            if isinstance(audio, str):
                self.trace.got(b64_bytes(audio))
        elif event == "conversation_started":
            if not self.started.done():
                self.started.set_result(orjson.loads(text)["conversationId"])
        elif event == "error":
            self.trace.errors.append(text.decode(errors="replace")[:200])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.started.done():
            self.started.set_exception(ConnectionError("the event stream ended before it began"))


class _Upload(asyncio.Protocol):
    """``POST /realtime/upload`` with ``Transfer-Encoding: chunked``, held open
    for the whole conversation; the response arrives once the body has ended."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response = b""
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.response += data
        head, found, body = self.response.partition(b"\r\n\r\n")
        if found:
            _, headers = _parse_head(head)
            length = headers.get("content-length")
            if length is not None and len(body) >= int(length) and not self.done.done():
                self.done.set_result(self.response)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.response)


class HttpClient(Client):
    """HTTP streaming: the session and its answers on ``GET /realtime/stream``
    (SSE), the speech on one long chunked ``POST /realtime/upload``, the commit
    and the end on a third connection, kept alive.

    With several nodes each part may go to another node: ``create_url`` starts
    the session there first (``POST /realtime/session``, so that node holds it)
    and the stream then joins it; the stream goes to ``stream_url``, the upload,
    commit and end to ``upload_url`` (each ``url`` unless given)."""

    ENCODING = "http"

    def __init__(
        self,
        url: str,
        token: str,
        tag: str,
        *,
        create_url: str | None = None,
        stream_url: str | None = None,
        upload_url: str | None = None,
    ) -> None:
        self.trace = Trace(tag)
        self._url, self._token = upload_url or url, token
        self._create_url = create_url
        self._stream_at = _host_port(stream_url or url)
        self._upload_at = _host_port(self._url)
        self._stream: _EventStream | None = None
        self._upload: _Upload | None = None
        self._control_connection = KeptAlive(self._url, token)
        self.write: Callable[[bytes], None] = self._not_open

    def _not_open(self, data: bytes) -> None:
        raise RuntimeError("the client is not open")

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[str] = loop.create_future()
        settings: dict[str, Any] = {
            "instructions": self.trace.tag,
            "inputSampleRate": RATE_IN,
            "outputSampleRate": RATE_OUT,
            "turnDetection": "manual",
        }
        if self._create_url is not None:
            status, body = await http_request(
                self._create_url, "POST", "/realtime/session", self._token, settings
            )
            if status != 201:
                raise RuntimeError(f"POST /realtime/session: HTTP {status} {body[:200]!r}")
            settings["conversationId"] = orjson.loads(body)["session"]["conversationId"]
        query = urlencode(settings)
        host, port = self._stream_at
        transport, self._stream = await loop.create_connection(
            lambda: _EventStream(self.trace, started), host, port
        )
        transport.write(
            _head(
                "GET",
                f"/realtime/stream?{query}",
                f"{host}:{port}",
                self._token,
                "Accept: text/event-stream\r\n",
            )
        )
        self.conversation = await asyncio.wait_for(started, 60)
        host, port = self._upload_at
        upload_transport, self._upload = await loop.create_connection(_Upload, host, port)
        target = "/realtime/upload?" + urlencode({"conversationId": self.conversation})
        extra = "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
        upload_transport.write(_head("POST", target, f"{host}:{port}", self._token, extra))
        self.write = upload_transport.write  # type: ignore[assignment]
        await self._control_connection.open()

    async def send(self, pcm: bytes) -> None:
        self.write(b"%x\r\n%b\r\n" % (len(pcm), pcm))

    async def commit(self) -> None:
        # The upload stays open, as a watch's does for the whole conversation.
        await self._control("/realtime/commit")

    async def _control(self, path: str) -> None:
        target = path + "?" + urlencode({"conversationId": self.conversation})
        status, body = await self._control_connection.request("POST", target)
        if status != 200:
            self.trace.errors.append(f"{path}: HTTP {status} {body[:200]!r}")

    async def close(self) -> None:
        upload = self._upload
        if upload is not None and upload.transport is not None:
            self._upload = None
            upload.transport.write(b"0\r\n\r\n")
            try:
                response = await asyncio.wait_for(upload.done, 30)
                if not response.startswith(b"HTTP/1.1 200"):
                    self.trace.errors.append(f"upload: {response[:200]!r}")
            finally:
                upload.transport.close()
        if self.conversation:
            await self._control("/realtime/end")
        self._control_connection.close()
        if self._stream is not None and self._stream.transport is not None:
            self._stream.transport.close()


# -- WebSocket clients on picows ------------------------------------------------------


class _Listener(WSListener):  # type: ignore[misc]
    """Frames in, whole messages to ``on_message`` (reassembled when fragmented),
    and the close handshake."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.messages = WholeMessages()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        message = self.messages.add(frame)
        if message is not None:
            self.on_message(message)
        elif frame.msg_type is _CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_message(self, message: bytes) -> None:
        raise NotImplementedError


async def _disconnect(transport: WSTransport | None) -> None:
    if transport is None or transport.is_disconnected:
        return
    transport.send_close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(transport.wait_disconnected(), 5)
    transport.disconnect()


class _SocketIOListener(_Listener):
    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace
        self.acks: dict[int, asyncio.Future[bytes]] = {}
        # Messages for ``open`` to wait on; None once the socket has joined.
        self.inbox: asyncio.Queue[bytes] | None = asyncio.Queue()

    def on_message(self, message: bytes) -> None:
        if message.startswith(_SIO_AUDIO):
            size = _b64_at(message, b'"audio":', len(_SIO_AUDIO))
            if size >= 0:
                self.trace.got(size)
        elif message == b"2":
            assert self.transport is not None
            self.transport.send(_TEXT, b"3")  # Engine.IO pong
        elif message.startswith(_SIO_ACK):
            match = re.match(rb"43/realtime,(\d+)", message)
            future = self.acks.pop(int(match.group(1)), None) if match else None
            if future is not None and not future.done():
                future.set_result(message)
        elif message.startswith(_SIO_ERROR):
            self.trace.errors.append(message[:200].decode(errors="replace"))
        elif self.inbox is not None:
            self.inbox.put_nowait(message)


class SocketIOClient(Client):
    """Socket.IO (protocol v5 over Engine.IO v4, WebSocket transport) spoken
    directly on a WebSocket: the python-socketio client costs more CPU per
    chunk than the server under test, which would measure the client. Audio
    goes up as binary events (a placeholder packet, then the attachment)."""

    ENCODING = "pcm"
    # Whether the connection names the session it joins (``?sessionId=``), which
    # opens the socket in the session's worker when the server runs several.
    NAMES_SESSION = False

    def __init__(self, url: str, token: str, tag: str, *, socket_url: str | None = None) -> None:
        self.trace = Trace(tag)
        self._url, self._token = url, token
        # With several nodes: the session starts on ``url``, the socket opens on this.
        self._socket_url = socket_url or url
        self._listener: _SocketIOListener | None = None
        self._transport: WSTransport | None = None
        self._next_ack = 0

    async def open(self) -> None:
        status, body = await http_request(
            self._url,
            "POST",
            "/realtime/session",
            self._token,
            {"instructions": self.trace.tag, "turnDetection": "manual"},
        )
        if status != 201:
            raise RuntimeError(f"POST /realtime/session: HTTP {status} {body[:200]!r}")
        session = orjson.loads(body)["session"]
        self.conversation = session["conversationId"]
        target = self._socket_url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        if self.NAMES_SESSION:
            target += "&sessionId=" + session["id"]
        trace = self.trace
        self._transport, listener = await ws_connect(
            lambda: _SocketIOListener(trace), target, websocket_handshake_timeout=60
        )
        self._listener = listener
        if not (await self._next()).startswith(b"0"):  # Engine.IO open
            raise RuntimeError("no Engine.IO open packet")
        self._transport.send(_TEXT, b"40/realtime," + orjson.dumps({"token": self._token}))
        while not (reply := await self._next()).startswith(b"40/realtime"):
            if reply.startswith(b"44/realtime"):
                raise RuntimeError(f"Socket.IO connect refused: {reply[:200]!r}")
        await self._call("join-session", {"sessionId": session["id"]})
        listener.inbox = None

    async def _next(self) -> bytes:
        assert self._listener is not None and self._listener.inbox is not None
        return await asyncio.wait_for(self._listener.inbox.get(), 60)

    async def _call(self, event: str, data: dict[str, Any]) -> bytes:
        assert self._listener is not None and self._transport is not None
        self._next_ack += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._listener.acks[self._next_ack] = future
        packet = b"42/realtime,%d" % self._next_ack + orjson.dumps([event, data])
        self._transport.send(_TEXT, packet)
        return await asyncio.wait_for(future, 30)

    def write(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        transport.send(_TEXT, _SIO_CHUNK)
        transport.send(_BINARY, data)

    async def send(self, pcm: bytes) -> None:
        self.write(pcm)

    async def commit(self) -> None:
        assert self._transport is not None
        self._transport.send(_TEXT, _SIO_COMMIT)

    async def close(self) -> None:
        if self._transport is None or self._transport.is_disconnected:
            return
        with contextlib.suppress(Exception):
            await self._call("end-session", {})
        await _disconnect(self._transport)


class _RealtimeListener(_Listener):
    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace
        # Set by the answer to the client's session.update.
        self.updated = asyncio.get_running_loop().create_future()

    def on_message(self, message: bytes) -> None:
        if message.startswith(_DELTA_TYPE):
            size = _b64_at(message, b'"delta":', len(_DELTA_TYPE))
            if size >= 0:
                self.trace.got(size)
                return
        event = orjson.loads(message)
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "response.output_audio.delta":
            self.trace.got(b64_bytes(event["delta"]))
        elif kind == "error":
            self.trace.errors.append(message[:200].decode(errors="replace"))
        elif kind == "session.updated" and not self.updated.done():
            session = event.get("session")
            if isinstance(session, dict) and session.get("instructions") == self.trace.tag:
                self.updated.set_result(None)


class RealtimeClient(Client):
    """The OpenAI Realtime protocol over a WebSocket: to the relay's
    ``/v1/realtime``, or straight to the upstream for the baseline. The
    protocol's audio is 24 kHz: the 16 kHz speech is resampled (``Speech``
    does it once per process for the paced chunks)."""

    ENCODING = "append"

    def __init__(self, url: str, token: str, tag: str, *, direct: bool = False) -> None:
        self.trace = Trace(tag)
        self._url, self._token, self._direct = url, token, direct
        self._resampler = StreamResampler(RATE_IN, RATE_OUT)
        self._transport: WSTransport | None = None

    async def open(self) -> None:
        target = self._url if self._direct else self._url.replace("http", "ws", 1) + "/v1/realtime"
        trace = self.trace
        self._transport, listener = await ws_connect(
            lambda: _RealtimeListener(trace),
            f"{target}?model=bench",
            extra_headers={"Authorization": f"Bearer {self._token}"},
            websocket_handshake_timeout=60,
            max_frame_size=64 << 20,
        )
        update = {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": self.trace.tag},
        }
        self._transport.send(_TEXT, orjson.dumps(update))
        # Open once the session has the client's settings, as an SDK client that
        # configures its session first: the audio measured is the steady state, not
        # the relay still connecting its upstream links.
        await asyncio.wait_for(listener.updated, 60)

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.send(_TEXT, data)

    async def send(self, pcm: bytes) -> None:
        self.write(_APPEND + base64.b64encode(self._resampler.feed(pcm)) + b'"}')

    async def commit(self) -> None:
        self.write(_COMMIT)

    async def close(self) -> None:
        await _disconnect(self._transport)


class SocketIONamingClient(SocketIOClient):
    """Socket.IO whose connection names its session (``?sessionId=``)."""

    NAMES_SESSION = True


CLIENTS: dict[str, type[Client]] = {
    "http": HttpClient,
    "socketio": SocketIOClient,
    "socketio-sid": SocketIONamingClient,
    "ws": RealtimeClient,
    # The node floor relays the same wire verbatim (benchmarks/floor.py).
    "node-floor": RealtimeClient,
}

# Clients of two nodes, A and B, whose session node A holds: (a, b, token, tag) -> client.
CrossNodeClient = Callable[[str, str, str, str], Client]
CROSS_NODE: dict[str, CrossNodeClient] = {
    # Both directions cross: audio B -> A, answers A -> B.
    "http-cross": lambda a, b, token, tag: HttpClient(
        a, token, tag, create_url=a, stream_url=b, upload_url=b
    ),
    # Only the audio crosses (B -> A); the stream reads on A.
    "http-cross-up": lambda a, b, token, tag: HttpClient(a, token, tag, stream_url=a, upload_url=b),
    # Only the answers cross (A -> B); the audio goes up on A.
    "http-cross-down": lambda a, b, token, tag: HttpClient(
        a, token, tag, create_url=a, stream_url=b, upload_url=a
    ),
    # The session starts on A, the socket (audio up, answers down) is on B.
    "socketio-cross": lambda a, b, token, tag: SocketIOClient(a, token, tag, socket_url=b),
}
