"""Server CPU of the Socket.IO layers per audio chunk round trip: python-engineio's
own websocket transport against voxrelay's (``transports/socketio/fast_websocket``),
in one server process, in the same run.

The server process (this file with ``--serve``) mounts two python-socketio servers
set up as voxrelay sets them up (``create_server``: its checks, bounds and JSON),
one on each transport, each with a ``/realtime`` namespace that answers every
``audio-chunk`` with an ``ai-audio`` event carrying the chunk back in base64 (as
voxrelay writes ``ai-audio``). No session, no upstream, no resampling: only the
Socket.IO layers. The parent opens the connections (raw websockets speaking
Engine.IO v4 / Socket.IO v5, cheap on the client side) and, round after round,
alternating transports, has every connection send binary ``audio-chunk`` events
(the placeholder packet, then a 640-byte attachment: 20 ms of 16 kHz PCM16), each
waiting for its answer before the next. Over each round it reads the server
process's CPU time (user + system, its CPU-time clock, as ``time.process_time()``
reads it in that process) and divides by the round trips.

    uv run --frozen python benchmarks/socketio_layer.py
    uv run --frozen python benchmarks/socketio_layer.py --connections 50 --chunks 400 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# "bare": the same frames answered by a plain ASGI websocket app (Engine.IO's open
# and the namespace's connect written by hand, no python-socketio): what uvicorn,
# the websocket protocol, the event loop and the kernel cost, the floor of both.
VARIANTS = ("engineio", "fast", "bare")
_CHUNK = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms of 16 kHz PCM16
_HEAD = '451-/realtime,["audio-chunk",{"_placeholder":true,"num":0}]'
_ANSWER = '42/realtime,["ai-audio"'


# -- the server process ----------------------------------------------------------------


def _serve() -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from voxrelay.config import Settings
    from voxrelay.protocols import JsonRefusalsWebSocketProtocol
    from voxrelay.server import tune_garbage_collector
    from voxrelay.transports.socketio.packets import NAMESPACE, event_packet
    from voxrelay.transports.socketio.server import asgi_app, create_server

    settings = Settings()

    def echoing(fast: bool) -> Any:
        sio = create_server(settings, fast_websocket=fast)
        eio = sio.eio

        async def connect(sid: str, environ: Any, auth: Any = None) -> bool:
            return True

        async def audio(sid: str, data: Any) -> None:
            eio_sid = sio.manager.eio_sid_from_sid(sid, NAMESPACE)
            answer = b'{"audio":"' + base64.b64encode(data) + b'"}'
            await eio.send(eio_sid, event_packet("ai-audio", answer))

        sio.on("connect", connect, namespace=NAMESPACE)
        sio.on("audio-chunk", audio, namespace=NAMESPACE)
        return asgi_app(sio, settings)

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        opened = {"sid": "bare", "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000}
        await send({"type": "websocket.send", "text": "0" + json.dumps(opened)})
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                return
            data = event.get("bytes")
            if data is None:
                if event["text"].startswith("40"):
                    await send({"type": "websocket.send", "text": '40/realtime,{"sid":"bare"}'})
                continue  # the binary event's placeholder packet
            answer = b'{"audio":"' + base64.b64encode(data) + b'"}'
            await send({"type": "websocket.send", "text": "4" + event_packet("ai-audio", answer)})

    apps = {"engineio": echoing(False), "fast": echoing(True), "bare": bare}
    app = Starlette(routes=[Mount(f"/{name}/socket.io", apps[name]) for name in VARIANTS])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", ws=JsonRefusalsWebSocketProtocol
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            tune_garbage_collector()  # as ``voxrelay serve`` does
            print(self.servers[0].sockets[0].getsockname()[1], flush=True)  # the port

    server = Server(config)

    async def run() -> None:
        await server.serve()

    # The event loop ``voxrelay serve`` runs on (uvloop when installed).
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(run())


# -- the parent: clients and CPU ---------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """The process's user + system CPU time, and its user time alone (kernel ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    user = int(fields[11]) / tick
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
        with contextlib.suppress(OSError):
            return time.clock_gettime(clock.value), user
    return user + int(fields[12]) / tick, user


class _Client:
    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, port: int, variant: str) -> _Client:
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{port}/{variant}/socket.io/?EIO=4&transport=websocket"
        ws = await connect(url, compression=None, max_size=None, ping_interval=None)
        client = cls(ws)
        assert (await ws.recv()).startswith("0")  # Engine.IO open
        await ws.send("40/realtime,")
        assert (await client._next()).startswith("40/realtime,")
        return client

    async def _next(self) -> str:
        while True:
            message = await self.ws.recv()
            if message == "2":  # Engine.IO ping
                await self.ws.send("3")
                continue
            assert isinstance(message, str)
            return message

    async def chunks(self, count: int) -> None:
        ws = self.ws
        for _ in range(count):
            await ws.send(_HEAD)
            await ws.send(_CHUNK)
            answer = await self._next()
            assert answer.startswith(_ANSWER), answer[:80]

    async def close(self) -> None:
        await self.ws.close()


async def _measure(port: int, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    clients = {
        variant: [await _Client.open(port, variant) for _ in range(args.connections)]
        for variant in VARIANTS
    }
    per_chunk: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    user_per_chunk: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    try:
        for variant in VARIANTS:  # warm-up, not measured
            await asyncio.gather(*(c.chunks(args.warmup) for c in clients[variant]))
        for round_ in range(args.rounds):
            # Alternating which goes first, so that neither always follows the other.
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                before, user_before = _cpu_seconds(pid)
                await asyncio.gather(*(c.chunks(args.chunks) for c in clients[variant]))
                after, user_after = _cpu_seconds(pid)
                chunks = args.chunks * args.connections
                per_chunk[variant].append((after - before) / chunks * 1e6)
                user_per_chunk[variant].append((user_after - user_before) / chunks * 1e6)
    finally:
        for client in (c for group in clients.values() for c in group):
            with contextlib.suppress(Exception):
                await client.close()
    medians = {variant: statistics.median(values) for variant, values in per_chunk.items()}
    user = {variant: statistics.median(values) for variant, values in user_per_chunk.items()}
    return {
        "connections": args.connections,
        "chunks_per_connection_per_round": args.chunks,
        "rounds": args.rounds,
        "us_per_chunk": {
            variant: {
                "median": round(medians[variant], 1),
                "min": round(min(values), 1),
                "max": round(max(values), 1),
                "rounds": [round(value, 1) for value in values],
            }
            for variant, values in per_chunk.items()
        },
        "ratio_engineio_to_fast": round(medians["engineio"] / medians["fast"], 2),
        # Above the floor: what the Socket.IO layers themselves cost.
        "layers_us_per_chunk": {
            variant: round(medians[variant] - medians["bare"], 1) for variant in VARIANTS[:2]
        },
        # None when noise puts the fast path at or under the floor (a tiny run).
        "layers_ratio_engineio_to_fast": (
            round((medians["engineio"] - medians["bare"]) / (medians["fast"] - medians["bare"]), 2)
            if medians["fast"] > medians["bare"]
            else None
        ),
        # User time only: the Python layers, without the kernel's loopback TCP work
        # (the same for both, and counted above as system time of the server).
        "user_us_per_chunk": {variant: round(value, 1) for variant, value in user.items()},
        # None when a run is too short for the kernel's 10 ms ticks to see user time.
        "user_ratio_engineio_to_fast": (
            round(user["engineio"] / user["fast"], 2) if user["fast"] > 0 else None
        ),
    }


def _times(ratio: float | None) -> str:
    return "not measured (too short)" if ratio is None else f"{ratio:.2f}x"


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=500, help="per connection and round")
    parser.add_argument("--rounds", type=int, default=4, help="per transport")
    parser.add_argument("--warmup", type=int, default=50, help="chunks per connection")
    parser.add_argument("--out", type=Path, help="write the figures there as JSON too")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve()
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        report = asyncio.run(_measure(port, server.pid, args))
    finally:
        server.terminate()
        server.wait(10)
    for variant in VARIANTS:
        figures = report["us_per_chunk"][variant]
        print(
            f"{variant:>9}: {figures['median']:7.1f} µs/chunk round trip "
            f"(rounds {figures['min']:.1f}..{figures['max']:.1f})"
        )
    print(f"    ratio: {report['ratio_engineio_to_fast']:.2f}x (python-engineio's / fast)")
    layers = report["layers_us_per_chunk"]
    print(
        f"above the bare floor: engineio {layers['engineio']:.1f}, fast {layers['fast']:.1f} "
        f"µs/chunk, ratio {_times(report['layers_ratio_engineio_to_fast'])}"
    )
    user = report["user_us_per_chunk"]
    print(
        f"user CPU only: engineio {user['engineio']:.1f}, fast {user['fast']:.1f} µs/chunk, "
        f"ratio {_times(report['user_ratio_engineio_to_fast'])}"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
