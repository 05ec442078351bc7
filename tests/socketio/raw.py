"""Socket.IO spoken by hand, over a websocket (the ``websockets`` package) or over
long-polling (``httpx``), so that tests can send what no Socket.IO client would:
garbled frames, lost attachments, bodies over the limit, or stop reading."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import httpx
from sock import NS
from websockets.asyncio.client import ClientConnection, connect

# What a binary packet puts where its first attachment goes.
PLACEHOLDER = {"_placeholder": True, "num": 0}


def event(name: str, data: Any = None, ack: int | None = None) -> str:
    """The Engine.IO message of a Socket.IO event of the namespace."""
    args = [name] if data is None else [name, data]
    return f"42{NS},{'' if ack is None else ack}{json.dumps(args)}"


class Inbox:
    """What the server sent, parsed: events, acks, and whether it closed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.acks: dict[int, Any] = {}
        self.closed = False
        self.changed = asyncio.Event()

    def take(self, message: str | bytes) -> str | None:
        """Keep one Engine.IO message; returns the answer it needs (a pong), if any."""
        if isinstance(message, bytes):
            return None
        if message == "2":
            return "3"
        if message == "1":
            self.closed = True
        elif message.startswith(f"42{NS},"):
            name, *args = json.loads(message[len(NS) + 3 :])
            self.events.append((name, args[0] if args else None))
        elif message.startswith(f"43{NS},"):
            body = message[len(NS) + 3 :]
            ack_id, _, rest = body.partition("[")
            self.acks[int(ack_id)] = json.loads("[" + rest)
        self.changed.set()
        return None

    def of(self, name: str, since: int = 0) -> list[Any]:
        return [data for event_name, data in self.events[since:] if event_name == name]


class RawSocket:
    """One Socket.IO client over a websocket, written by hand."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox = Inbox()
        self._next_ack = 0

    @classmethod
    async def open(cls, url: str, token: str, *, rcvbuf: int | None = None) -> RawSocket:
        """Connected to ``/realtime``, after ``connected``. With ``rcvbuf`` the TCP
        receive buffer is that small, and the client holds at most one frame
        unread: once it stops reading, the server's writes soon stop going out."""
        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        # Uncompressed, so that what the server writes is what fills the buffers.
        options: dict[str, Any] = {"ping_interval": None, "max_size": None, "compression": None}
        if rcvbuf is not None:
            host, port = url.removeprefix("http://").split(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.connect((host, int(port)))
            options.update(sock=sock, max_queue=1)
        raw = cls(await connect(ws_url, **options))
        opened = await raw.ws.recv()
        assert isinstance(opened, str) and opened.startswith("0{"), opened
        await raw.send(f"40{NS},{json.dumps({'token': token})}")
        await raw.wait_for("connected")
        return raw

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def emit(self, name: str, data: Any = None) -> None:
        await self.send(event(name, data))

    async def call(self, name: str, data: Any = None, timeout: float = 10) -> Any:
        self._next_ack += 1
        ack = self._next_ack
        await self.send(event(name, data, ack))
        await self._read_until(lambda: ack in self.inbox.acks, timeout)
        return self.inbox.acks[ack][0]

    async def wait_for(self, name: str, *, since: int = 0, timeout: float = 10) -> Any:
        await self._read_until(lambda: bool(self.inbox.of(name, since)), timeout)
        return self.inbox.of(name, since)[0]

    async def read_to_the_end(self, timeout: float = 10) -> None:
        """Read until the server closes the socket (Engine.IO close, or the websocket's)."""
        await self._read_until(lambda: self.inbox.closed, timeout)

    async def _read_until(self, done: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                try:
                    message = await self.ws.recv()
                except Exception:
                    self.inbox.closed = True
                    raise
                answer = self.inbox.take(message)
                if answer is not None:
                    await self.ws.send(answer)

    async def close(self) -> None:
        await self.ws.close()


class PollingSocket:
    """One Socket.IO client over long-polling, written by hand; its long polls run
    in the background (as a real client's do) and fill ``inbox``."""

    def __init__(self, http: httpx.AsyncClient, sid: str) -> None:
        self.http = http
        self.sid = sid
        self.inbox = Inbox()
        self.polls: list[httpx.Response] = []
        self._poller: asyncio.Task[None] | None = None
        self._next_ack = 0

    @classmethod
    async def open(cls, http: httpx.AsyncClient, token: str, *, poll: bool = True) -> PollingSocket:
        """Connected to ``/realtime``, after ``connected``; without ``poll`` no long
        poll is left waiting (the socket's packets stay queued on the server)."""
        handshake = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        sid = json.loads(handshake.text[1:])["sid"]
        polling = cls(http, sid)
        assert (await polling.post(f"40{NS},{json.dumps({'token': token})}")).status_code == 200
        while not polling.inbox.of("connected"):
            await polling._poll_once()
        if poll:
            polling._poller = asyncio.get_running_loop().create_task(polling._poll())
        return polling

    @property
    def params(self) -> dict[str, str]:
        return {"EIO": "4", "transport": "polling", "sid": self.sid}

    async def post(self, body: str | bytes) -> httpx.Response:
        return await self.http.post("/socket.io/", params=self.params, content=body)

    async def call(self, name: str, data: Any = None, timeout: float = 10) -> Any:
        self._next_ack += 1
        ack = self._next_ack
        assert (await self.post(event(name, data, ack))).status_code == 200
        await self._until(lambda: ack in self.inbox.acks, timeout)
        return self.inbox.acks[ack][0]

    async def _poll(self) -> None:
        while not self.inbox.closed:
            await self._poll_once()

    async def _poll_once(self) -> None:
        response = await self.http.get("/socket.io/", params=self.params, timeout=60)
        self.polls.append(response)
        if response.status_code != 200:
            self.inbox.closed = True
            self.inbox.changed.set()
            return
        for message in response.text.split("\x1e"):
            answer = self.inbox.take(message)
            if answer is not None:
                await self.post(answer)

    async def wait_for(self, name: str, *, since: int = 0, timeout: float = 10) -> Any:
        await self._until(lambda: bool(self.inbox.of(name, since)), timeout)
        return self.inbox.of(name, since)[0]

    async def wait_closed(self, timeout: float = 10) -> None:
        await self._until(lambda: self.inbox.closed, timeout)

    async def _until(self, done: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                self.inbox.changed.clear()
                if done():
                    return
                await self.inbox.changed.wait()

    async def close(self) -> None:
        """Engine.IO's close, as a client leaving sends it: the server then answers
        the long poll at once (which would hold up its shutdown otherwise)."""
        if not self.inbox.closed:
            await self.post("1")
        if self._poller is not None:
            try:
                await asyncio.wait_for(self._poller, 5)
            except (TimeoutError, httpx.HTTPError):
                pass
