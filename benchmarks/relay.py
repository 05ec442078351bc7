"""What the relay adds to a voice conversation, per transport.

Starts a realtime echo upstream (``upstream.py``) and ``voxrelay serve`` in
front of it, then for each transport and each session count N runs N clients
that stream 16 kHz speech in real time in 20 ms chunks and receive 24 kHz
audio back, and the same N clients talking to the upstream directly, in the
same run. Reports, per transport and N: latency per chunk upstream and
downstream (p50, p99, max) through the relay and direct, their difference
(what the relay adds), commit-to-first-audio, server CPU seconds per
session-minute in the steady state (every session connected and streaming),
what the benchmark's own processes (the upstream, the clients) cost per
chunk in that state, resident memory per idle session, and the largest N
that keeps the added p99 under 50 ms. Writes a table, JSON and a PNG plot.

With ``--nodes 2`` it starts two nodes, A and B, sharing Redis and one database
(PostgreSQL when it answers, else SQLite), and measures each N twice through the
relay in the same run: each session on one node (half of them on A, half on B,
so that both paths have the same processes and load), and across the nodes with
the session held by A and the client's requests on B (``--cross``: both
directions cross, or only the audio, or only the answers). The cross-node hop is
the difference.

Unless ``--no-node-floor``, it also starts the node floor (``floor.py``: a
verbatim WebSocket relay on Node's ``ws`` package) in front of the same upstream
and measures it like the ``ws`` transport, with the same sessions and seconds;
``vs_node_floor`` is each path's server CPU per chunk over the floor's at that N.

    uv run python benchmarks/relay.py                      # the full sweep
    uv run python benchmarks/relay.py --sessions 10 --seconds 3 --transports http
    uv run python benchmarks/relay.py --nodes 2 --sessions 10,50,100 --transports http
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import ctypes
import gc
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import floor
import httpx
import orjson
from picows import WSListener, WSMsgType, WSTransport, ws_connect

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEECH = [
    ROOT.parent / "shared/data/speech/goforward.raw",
    ROOT / "tests/data/speech/goforward.raw",
]
SLACK = 32  # bytes: the resampler may hold a few samples back
WARM_UP_CHUNKS = 10
TARGET_P99_MS = 50.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def speech() -> bytes:
    for path in SPEECH:
        if path.exists():
            return path.read_bytes()
    raise FileNotFoundError("goforward.raw")


# -- the shared services of several nodes ---------------------------------------------------

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"  # trust authentication
BENCH_DATABASE_PREFIX = "voxrelay_bench_"


def redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_pid(url: str) -> int | None:
    """The local redis-server listening on the URL's port, if it is on this machine."""
    port = f":{urlsplit(url).port or 6379}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            # redis-server rewrites its title: "redis-server 127.0.0.1:6379", one argument.
            args = cmdline.read_bytes().replace(b"\0", b" ").split()
            if args and args[0].endswith(b"redis-server") and any(a.endswith(port) for a in args):
                return int(cmdline.parent.name)
    return None


def postgres_answers() -> bool:
    """Whether PostgreSQL answers on 127.0.0.1:5432 (an SSLRequest gets one byte back)."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2) as sock:
            sock.sendall(struct.pack("!ii", 8, 80877103))
            return sock.recv(1) in (b"S", b"N")
    except OSError:
        return False


async def create_postgres_database() -> str:
    import asyncpg

    name = BENCH_DATABASE_PREFIX + secrets.token_hex(6)
    conn = await asyncpg.connect(POSTGRES_ADMIN, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_postgres_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    if not name.startswith(BENCH_DATABASE_PREFIX):
        raise ValueError(f"not a benchmark database: {name!r}")
    conn = await asyncpg.connect(POSTGRES_ADMIN, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- the processes under test ------------------------------------------------------------


@dataclass
class Node:
    """One ``voxrelay serve`` process (and its workers, if it has any)."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    workers: int

    def pids(self) -> list[int]:
        pids = [self.process.pid]
        if self.workers > 1:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.process.pid:
                        pids.append(int(stat.parent.name))
        return pids

    def stop(self) -> None:
        floor.stop_process(self.process, 15)


class Processes:
    """The echo upstream and the nodes under test. With several nodes they share
    Redis (``redis_url``) and one database: a PostgreSQL database made for the run
    when PostgreSQL answers (``database="auto"``), else one SQLite file."""

    def __init__(
        self,
        workdir: Path,
        workers: int = 1,
        nodes: int = 1,
        *,
        redis_url: str = REDIS_URL,
        database: str = "auto",
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.nodes: list[Node] = []
        self.redis_url = redis_url if nodes > 1 else None
        self._postgres: str | None = None
        self.floor: floor.Floor | None = None
        self.upstream_port = free_port()
        self.upstream = subprocess.Popen(
            [sys.executable, str(HERE / "upstream.py"), "--port", str(self.upstream_port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self._start(nodes, database)
        except BaseException:
            self.stop()
            raise

    def _start(self, nodes: int, database: str) -> None:
        assert self.upstream.stdout is not None
        if self.upstream.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark upstream did not start")
        if self.redis_url is not None and not redis_answers(self.redis_url):
            raise RuntimeError(f"several nodes need Redis, and {self.redis_url} does not answer")
        if database == "postgresql" or (database == "auto" and nodes > 1 and postgres_answers()):
            self._postgres = asyncio.run(create_postgres_database())
            self.database = self._postgres
            self.database_kind = f"PostgreSQL (database {self._postgres.rsplit('/', 1)[1]})"
        else:
            self.database = f"sqlite:///{self.workdir / 'bench.db'}"
            self.database_kind = "SQLite (one file)"
        self.upstream_url = f"ws://127.0.0.1:{self.upstream_port}/v1/realtime"
        env = {
            **os.environ,
            "VOXRELAY_PROVIDER": "openai",
            "VOXRELAY_OPENAI_URL": self.upstream_url,
            "OPENAI_API_KEY": "bench-upstream-key",
            "VOXRELAY_DATABASE_URL": self.database,
            "VOXRELAY_LOG_LEVEL": "warning",
            # Every simulated client shares one token: one device with hundreds of sessions.
            "VOXRELAY_MAX_SESSIONS_PER_DEVICE": "0",
        }
        env.pop("VOXRELAY_REDIS_URL", None)
        if self.redis_url is not None:
            env["VOXRELAY_REDIS_URL"] = self.redis_url
        # One after the other: the first creates the database's tables.
        for index in range(nodes):
            self._start_node("AB"[index] if nodes <= 2 else str(index), env)
        self.url = self.nodes[0].url
        self.node_urls = [node.url for node in self.nodes]
        self.token = asyncio.run(self._token())

    def _start_node(self, name: str, env: dict[str, str]) -> None:
        port = free_port()
        command = [sys.executable, "-m", "voxrelay.cli", "serve", "--host", "127.0.0.1"]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--workers", str(self.workers)],
            env=env,
            stderr=open(self.workdir / f"server-{name}.log", "w"),  # noqa: SIM115
        )
        node = Node(name, process, f"http://127.0.0.1:{port}", self.workers)
        self.nodes.append(node)  # stopped with the others should it fail to start
        # With Redis, ready means a cluster member too.
        ready = node.url + ("/readyz" if self.redis_url else "/healthz")
        for _ in range(400):
            if process.poll() is not None:
                break
            try:
                if httpx.get(ready).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        log = (self.workdir / f"server-{name}.log").read_text()[-2000:]
        raise RuntimeError(f"voxrelay serve (node {name}) did not start:\n{log}")

    def start_floor(self) -> str | None:
        """Start the node floor in front of the upstream; why not, if it cannot."""
        started = floor.start(
            self.upstream_url, "bench-upstream-key", self.workdir / "node-floor.log"
        )
        if isinstance(started, str):
            return started
        self.floor = started
        return None

    def server_pids(self, kind: str = "") -> list[int]:
        """The processes serving a path: the node floor's, or every node's."""
        if kind == floor.NAME:
            assert self.floor is not None
            return [self.floor.pid]
        return [pid for node in self.nodes for pid in node.pids()]

    async def _token(self) -> str:
        from voxrelay.store import Store

        store = await Store.open(self.database)
        try:
            return (await store.create_token("bench", "bench"))[1]
        finally:
            await store.close()

    def cpu_seconds(self, kind: str = "") -> float:
        return sum(process_cpu(pid) for pid in self.server_pids(kind))

    def rss_bytes(self, pids: list[int] | None = None) -> int:
        return rss_bytes(self.server_pids() if pids is None else pids)

    def watch(self, kind: str = "") -> dict[str, list[int]]:
        """The processes whose CPU a measurement of a path reads over its steady window."""
        watch = {"server": self.server_pids(kind), "upstream": [self.upstream.pid]}
        if kind == floor.NAME:
            return watch
        if len(self.nodes) > 1:
            for node in self.nodes:
                watch[f"node {node.name}"] = node.pids()
        if self.redis_url is not None:
            pid = redis_pid(self.redis_url)
            if pid is not None:
                watch["redis"] = [pid]
        return watch

    def holders(self, conversations: list[str]) -> dict[str, int]:
        """How many of these conversations each node holds, by their Redis leases."""
        counts: dict[str, int] = {}
        if self.redis_url is None or not conversations:
            return counts
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            values = client.mget([f"voxrelay:holder:{c}" for c in conversations])
        finally:
            client.close()
        by_pid = {pid: node.name for node in self.nodes for pid in node.pids()}
        for value in values:
            member = value.decode() if isinstance(value, bytes) else value
            # A member is named "<host>-<pid>-<random>".
            pid = int(member.rsplit("-", 2)[1]) if member else 0
            name = by_pid.get(pid, "another" if value else "none")
            counts[name] = counts.get(name, 0) + 1
        return counts

    async def upstream_records(self, prefix: str) -> dict[str, Any]:
        """The upstream's records of the tags starting with ``prefix``, which it
        then forgets (a long sweep would otherwise pile them up)."""
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        class Control(WSListener):  # type: ignore[misc]
            def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
                if frame.msg_type is WSMsgType.TEXT:
                    loop.call_soon(replies.put_nowait, frame.get_payload_as_bytes())

        url = f"ws://127.0.0.1:{self.upstream_port}/control"
        transport, _ = await ws_connect(Control, url, max_frame_size=1 << 31)
        try:
            transport.send(WSMsgType.TEXT, f"dump {prefix}".encode())
            records: dict[str, Any] = orjson.loads(await asyncio.wait_for(replies.get(), 60))
            transport.send(WSMsgType.TEXT, f"forget {prefix}".encode())
            await asyncio.wait_for(replies.get(), 60)
        finally:
            transport.send_close()
            transport.disconnect()
        return records

    def stop(self) -> None:
        if self.floor is not None:
            self.floor.stop()
        for node in self.nodes:
            node.stop()
        self.upstream.kill()
        self.upstream.wait(5)
        if self._postgres is not None:
            with contextlib.suppress(Exception):
                asyncio.run(drop_postgres_database(self._postgres))
            self._postgres = None


# -- CPU -----------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def process_cpu(pid: int) -> float:
    """User+system CPU seconds of a process so far (its CPU-time clock: exact,
    and counting threads that have ended)."""
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) == 0:
        with contextlib.suppress(OSError):
            return time.clock_gettime(clock.value)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, not idle or waiting)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_stalled() -> float:
    """Seconds during which some runnable task waited for a CPU (Linux's pressure
    stall information, ``/proc/pressure/cpu``); 0 where the kernel has none."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        line = Path("/proc/pressure/cpu").read_text().split("\n", 1)[0]
        return int(line.rsplit("total=", 1)[1]) / 1e6
    return 0.0


def steady_window(start: float, seconds: float) -> tuple[float, float]:
    """The part of a streaming period when every session is connected and
    streaming: from 1 s after the shared start to 0.5 s before the end
    (proportionally less of a short period)."""
    return start + min(1.0, seconds * 0.25), start + seconds - min(0.5, seconds * 0.15)


class RedisProbe(threading.Thread):
    """Redis's round trip (a PING every 100 ms) while a measurement runs: the nodes
    share the machine's Redis with whatever else uses it, and a slow or paused
    Redis shows here rather than only as a slow hop."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.rtts: list[float] = []
        self.failures = 0

    def run(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            while not self.stopping.wait(0.1):
                t0 = time.monotonic()
                try:
                    client.ping()
                except redis.RedisError:
                    self.failures += 1
                    continue
                self.rtts.append(time.monotonic() - t0)
        finally:
            client.close()

    def __enter__(self) -> RedisProbe:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.join(10)

    def summary(self) -> dict[str, float]:
        return {**summary(self.rtts), "failures": self.failures}


class CpuProbe(threading.Thread):
    """CPU of the given processes (and of the machine) over a window of the
    shared monotonic clock."""

    def __init__(self, pids: dict[str, list[int]], window: tuple[float, float]) -> None:
        super().__init__(daemon=True)
        self.pids, self.window = pids, window
        self.cpu: dict[str, float] = {}
        self.seconds = 0.0
        # The server's resident memory at the end of the window, every session streaming.
        self.server_rss = 0

    def _sample(self) -> tuple[float, dict[str, float]]:
        cpu = {name: sum(process_cpu(pid) for pid in pids) for name, pids in self.pids.items()}
        cpu["machine"] = machine_busy()
        cpu["stalled"] = cpu_stalled()
        return time.monotonic(), cpu

    def run(self) -> None:
        time.sleep(max(0.0, self.window[0] - time.monotonic()))
        t0, before = self._sample()
        time.sleep(max(0.0, self.window[1] - time.monotonic()))
        t1, after = self._sample()
        self.server_rss = rss_bytes(self.pids.get("server", []))
        self.cpu = {name: after[name] - before[name] for name in before}
        self.seconds = t1 - t0


# -- client workers (separate processes, so the clients do not share the server's core) --

SESSIONS_PER_PROCESS = 300
MAX_PROCESSES = 2
PACING_SLOTS = 20  # pacing timers per worker process, spread over the 20 ms period
# Set by --client-processes; 0: one process per 300 sessions, at most two.
CLIENT_PROCESSES = 0


def client_processes(sessions: int) -> int:
    if CLIENT_PROCESSES:
        return CLIENT_PROCESSES
    return max(1, min(MAX_PROCESSES, -(-sessions // SESSIONS_PER_PROCESS)))


@dataclass
class Run:
    traces: list[dict[str, Any]]
    # CPU seconds over the steady window: the watched processes, "machine", and
    # "clients" (all worker processes, each measured over its own view of the window).
    cpu: dict[str, float] = field(default_factory=dict)
    window: float = 0.0
    server_rss: int = 0
    processes: int = 0
    # With several nodes: how many of the run's conversations each node held.
    holders: dict[str, int] = field(default_factory=dict)


def _worker(
    conn: Connection,
    kind: str,
    url: str | list[str],
    token: str,
    tags: list[str],
    seconds: float,
    commit: float | None,
    offsets: list[float],
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        result = asyncio.run(_run_clients(conn, kind, url, token, tags, seconds, commit, offsets))
        conn.send(("done", result))
    except BaseException:
        conn.send(("failed", traceback.format_exc()))
    finally:
        conn.close()


async def _receive(conn: Connection) -> Any:
    """The next message from the parent, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
        # The loop made the pipe non-blocking; the results go back in blocking writes.
        os.set_blocking(conn.fileno(), True)
    return conn.recv()


async def _run_clients(
    conn: Connection,
    kind: str,
    url: str | list[str],
    token: str,
    tags: list[str],
    seconds: float,
    commit: float | None,
    offsets: list[float],
) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from clients import CLIENTS, CROSS_NODE, RealtimeClient, Speech, commit_turn, stream

    audio = speech()
    clients: list[Any]
    if kind in CROSS_NODE:  # nodes A and B
        clients = [CROSS_NODE[kind](url[0], url[1], token, tag) for tag in tags]
    elif kind == "direct":
        assert isinstance(url, str)
        clients = [RealtimeClient(url, "bench-upstream-key", tag, direct=True) for tag in tags]
    else:
        # Several nodes: each session on one of them, in turn.
        urls = [url] if isinstance(url, str) else url
        clients = [CLIENTS[kind](urls[i % len(urls)], token, tag) for i, tag in enumerate(tags)]
    chunks = Speech(audio, int(seconds * 50))
    for encoding in {c.ENCODING for c in clients}:
        chunks.encoded(encoding)  # before the clock starts
    gate = asyncio.Semaphore(20)

    async def open_one(client: Any) -> None:
        async with gate:
            await client.open()

    await asyncio.gather(*(open_one(c) for c in clients))
    # Every worker's sessions are open: the parent sets the shared start.
    conn.send(("ready", [c.conversation for c in clients if c.conversation]))
    start = await _receive(conn)
    loop = asyncio.get_running_loop()
    shift = loop.time() - time.monotonic()
    probe: list[tuple[float, float]] = []
    # No collector pauses while streaming (the traces only grow; cycles wait till after).
    gc.collect()
    gc.disable()
    try:
        if commit is not None:

            async def turn(index: int, client: Any) -> None:
                await asyncio.sleep(index * commit)
                for _ in range(COMMIT_TURNS):
                    await commit_turn(client.trace, audio, client.send, client.commit)

            await asyncio.gather(*(turn(i, c) for i, c in enumerate(clients)))
        else:
            for at in steady_window(start, seconds):
                loop.call_at(
                    at + shift, lambda: probe.append((time.monotonic(), time.process_time()))
                )
            await stream(clients, chunks, start + shift, offsets)
            await asyncio.sleep(0.5)  # let the last answers arrive
    finally:
        gc.enable()
    traces = [c.trace.as_dict() for c in clients]
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return {"traces": traces, "cpu": probe}


def _expect(conn: Connection, what: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"a client worker sent no {what!r} in {timeout:.0f} s")
    status, value = conn.recv()
    if status == "failed":
        raise RuntimeError(f"a client worker failed:\n{value}")
    if status != what:
        raise RuntimeError(f"a client worker sent {status!r}, not {what!r}")
    return value


def run_clients(
    kind: str,
    url: str | list[str],
    token: str,
    tags: list[str],
    seconds: float,
    *,
    commit: float | None = None,
    watch: dict[str, list[int]] | None = None,
    holders: Callable[[list[str]], dict[str, int]] | None = None,
) -> Run:
    """Run the clients in worker processes: each opens its sessions, then all
    start streaming together on the shared clock, their pacing timers spread
    evenly over the 20 ms period across workers. ``url``: the server, or nodes A
    and B for a ``CROSS_NODE`` kind. ``watch``: processes whose CPU to measure
    over the steady window. ``holders``: who holds the open conversations (read
    before streaming starts)."""
    context = get_context("spawn")
    count = client_processes(len(tags))
    groups = [tags[i::count] for i in range(count) if tags[i::count]]
    count = len(groups)
    conns: list[Connection] = []
    workers = []
    for w, group in enumerate(groups):
        slots = min(PACING_SLOTS, len(group))
        offsets = [0.02 * (j * count + w) / (PACING_SLOTS * count) for j in range(slots)]
        mine, theirs = context.Pipe()
        worker = context.Process(
            target=_worker,
            args=(theirs, kind, url, token, group, seconds, commit, offsets),
            daemon=True,
        )
        worker.start()
        theirs.close()
        conns.append(mine)
        workers.append(worker)
    held: dict[str, int] = {}
    try:
        conversations = [c for conn in conns for c in _expect(conn, "ready", 120 + len(tags) * 0.5)]
        if holders is not None:
            held = holders(conversations)
        start = time.monotonic() + 0.3
        probe = CpuProbe(watch or {}, steady_window(start, seconds))
        if commit is None:
            probe.start()
        for conn in conns:
            conn.send(start)
        results = [_expect(conn, "done", 120 + seconds + len(tags) * 0.2) for conn in conns]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    run = Run([trace for r in results for trace in r["traces"]], processes=count, holders=held)
    if commit is None:
        probe.join()
        run.server_rss = probe.server_rss
        run.window = probe.seconds
        run.cpu = dict(probe.cpu)
        # Each worker measured itself; scale its share to the parent's window.
        run.cpu["clients"] = sum(
            (r["cpu"][1][1] - r["cpu"][0][1]) / (r["cpu"][1][0] - r["cpu"][0][0]) * run.window
            for r in results
            if len(r["cpu"]) == 2
        )
    return run


# -- statistics --------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50) * 1000, 2),
        "p99": round(percentile(values, 99) * 1000, 2),
        "max": round(max(values) * 1000, 2) if values else float("nan"),
        "count": len(values),
    }


def latencies(
    traces: list[dict[str, Any]], records: dict[str, Any], bytes_per_chunk: int
) -> tuple[list[float], list[float], float]:
    """Per-chunk upstream and downstream latencies, and the share of chunks delivered."""
    up: list[float] = []
    down: list[float] = []
    expected = delivered = 0
    for trace in traces:
        record = records.get(trace["tag"], {})
        arrivals = record.get("in", [])
        arrival_bytes = [b for _, b in arrivals]
        for k, sent in enumerate(trace["sent"]):
            if k < WARM_UP_CHUNKS:
                continue
            expected += 1
            index = bisect.bisect_left(arrival_bytes, (k + 1) * bytes_per_chunk - SLACK)
            if index < len(arrivals):
                delivered += 1
                up.append(arrivals[index][0] - sent)
        received = trace["received"]
        received_bytes = [b for _, b in received]
        for n, (sent_at, cumulative) in enumerate(record.get("out", [])):
            if n < WARM_UP_CHUNKS:
                continue
            index = bisect.bisect_left(received_bytes, cumulative - SLACK)
            if index < len(received):
                down.append(received[index][0] - sent_at)
    return up, down, (delivered / expected if expected else 0.0)


def commit_latency(traces: list[dict[str, Any]], *, turns: slice = slice(None)) -> list[float]:
    return [
        first - commit
        for trace in traces
        for commit, first in list(
            zip(trace["commit_at"], trace["first_after_commit"], strict=False)
        )[turns]
    ]


# -- the run ---------------------------------------------------------------------------


def harness_cpu(run: Run, sessions: int) -> dict[str, Any]:
    """What the upstream and the client processes cost over the steady window:
    cores, and microseconds per chunk round trip (one 20 ms chunk up, its echo down)."""
    round_trips = sessions * 50 * run.window
    return {
        "upstream_cores": round(run.cpu["upstream"] / run.window, 4),
        "upstream_us_per_chunk": round(run.cpu["upstream"] / round_trips * 1e6, 2),
        "clients_cores": round(run.cpu["clients"] / run.window, 4),
        "clients_us_per_chunk": round(run.cpu["clients"] / round_trips * 1e6, 2),
        "client_processes": run.processes,
    }


# With two nodes, the route of each transport's two-node path, per --cross: the
# session held by node A, the client's requests (some or all) on node B.
CROSS_KINDS: dict[str, dict[str, str]] = {
    "http": {"both": "http-cross", "up": "http-cross-up", "down": "http-cross-down"},
    "socketio": {"both": "socketio-cross"},
}
ROUTES = {
    "http-cross": "session held by A; stream and upload on B (audio B->A, answers A->B)",
    "http-cross-up": "session held by A; stream on A, upload on B (audio B->A)",
    "http-cross-down": "session held by A; stream on B, upload on A (answers A->B)",
    "socketio-cross": "session started on A; socket on B (audio B->A, answers A->B)",
}
CROSSES = {
    "http-cross": ["upstream", "downstream"],
    "http-cross-up": ["upstream"],
    "http-cross-down": ["downstream"],
    "socketio-cross": ["upstream", "downstream"],
}
CROSS_NODE_KINDS = set(ROUTES)


def one_node_route(processes: Processes) -> str:
    if len(processes.nodes) > 1:
        return "each session on one node, half on A and half on B: every request there"
    return "one node: every request"


FLOOR_ROUTE = "the node floor (benchmarks/node_floor): every frame forwarded verbatim"


def cross_kind(transport: str, cross: str) -> str | None:
    return CROSS_KINDS.get(transport, {}).get(cross)


def paths(processes: Processes, transport: str, cross: str) -> list[str]:
    """What a transport's measurement runs against one direct baseline: the
    transport, its two-node path with two nodes, and the node floor beside ws."""
    if transport == floor.NAME:
        return [transport]
    kinds = [transport]
    two_nodes = cross_kind(transport, cross) if len(processes.nodes) > 1 else None
    if two_nodes is not None:
        kinds.append(two_nodes)
    if transport == "ws" and processes.floor is not None:
        kinds.append(floor.NAME)
    return kinds


def _urls(processes: Processes, kind: str) -> str | list[str]:
    """Where a path's clients go: the floor; nodes A and B for a two-node path (the
    session on A, requests on B); and for a one-node path with two nodes, each
    session's every request to one node, half of the sessions on each: the same
    processes and load as the two-node path, nothing crossing."""
    if kind == floor.NAME:
        assert processes.floor is not None
        return processes.floor.url
    if len(processes.node_urls) > 1:
        return processes.node_urls[:2]
    return processes.url


# Sessions of the unmeasured run before each path's first N, for the memory figure.
WARM_UP_SESSIONS = 10


@dataclass
class MemoryReference:
    """A path's server resident memory with ``sessions`` streaming, at the last steady
    window: what the next N's growth is measured from."""

    sessions: int
    rss: int


def memory_reference(
    processes: Processes, kind: str, references: dict[str, MemoryReference], n: int
) -> MemoryReference:
    """The reference for ``kind``: its last steady window, or else an unmeasured run
    of ``WARM_UP_SESSIONS`` (at most half of ``n``), so that what a server allocates
    once, at its first conversations, is not counted as every session's."""
    if kind not in references:
        count = min(WARM_UP_SESSIONS, n // 2)
        if count == 0:
            return MemoryReference(0, processes.rss_bytes(processes.watch(kind)["server"]))
        tags = [f"warm:{secrets.token_hex(3)}:{kind}:{i}" for i in range(count)]
        urls = _urls(processes, kind)
        run = run_clients(kind, urls, processes.token, tags, 2.0, watch=processes.watch(kind))
        references[kind] = MemoryReference(count, run.server_rss)
    return references[kind]


def measure(
    processes: Processes,
    transport: str,
    n: int,
    seconds: float,
    cross: str = "both",
    memory: dict[str, MemoryReference] | None = None,
) -> list[dict[str, Any]]:
    """One row per path (``paths``): the transport on one node, its two-node
    path with two nodes, the node floor beside ws; all against the same direct
    baseline. ``memory``: each path's last steady memory, updated here (the
    sweep's Ns in rising order)."""
    run_id = secrets.token_hex(3)
    kinds = paths(processes, transport, cross)
    holders = processes.holders if processes.redis_url else None
    relays: dict[str, tuple[Run, float]] = {}
    memory = {} if memory is None else memory
    # The server's resident memory per session streaming: its growth from the last
    # steady window of fewer sessions, over the sessions added. A server keeps what
    # it allocated for the sessions before, so growth from the memory before the
    # run would count only those beyond the last run's peak.
    streaming_rss: dict[str, int | None] = {}
    pings: dict[str, dict[str, float]] = {}
    for kind in kinds:
        reference = memory_reference(processes, kind, memory, n)
        tags = [f"bench:{run_id}:{kind}:{i}" for i in range(n)]
        watch = processes.watch(kind)
        cpu_before = processes.cpu_seconds(kind)
        with contextlib.ExitStack() as stack:
            redis = None
            if processes.redis_url is not None:
                redis = stack.enter_context(RedisProbe(processes.redis_url))
            run = run_clients(
                kind,
                _urls(processes, kind),
                processes.token,
                tags,
                seconds,
                watch=watch,
                holders=holders,
            )
        relays[kind] = run, processes.cpu_seconds(kind) - cpu_before
        added = n - reference.sessions
        if added > 0:
            streaming_rss[kind] = (run.server_rss - reference.rss) // added
            memory[kind] = MemoryReference(n, run.server_rss)
        else:
            streaming_rss[kind] = None
        if redis is not None:
            pings[kind] = redis.summary()
    direct_tags = [f"bench:{run_id}:direct:{i}" for i in range(n)]
    direct = run_clients(
        "direct", processes.upstream_url, "", direct_tags, seconds, watch=processes.watch()
    )
    records = asyncio.run(processes.upstream_records(f"bench:{run_id}:"))
    up_direct, down_direct, _ = latencies(direct.traces, records, 960)
    rows = []
    for kind, (relay, cpu) in relays.items():
        up_relay, down_relay, delivered = latencies(relay.traces, records, 960)
        server = relay.cpu["server"]
        window = relay.window
        steady: dict[str, Any] = {
            "window_seconds": round(window, 3),
            "server_cores": round(server / window, 4),
            "server_us_per_chunk": round(server / (n * 50 * window) * 1e6, 2),
            "machine_cores": round(relay.cpu["machine"] / window, 4),
            # The machine's busy time that none of the benchmark's processes (nor
            # Redis) accounts for: the kernel's network processing, and whatever
            # else runs on the machine meanwhile.
            "other_cores": round(
                (
                    relay.cpu["machine"]
                    - server
                    - relay.cpu["upstream"]
                    - relay.cpu["clients"]
                    - relay.cpu.get("redis", 0.0)
                )
                / window,
                4,
            ),
            # The share of the window in which some runnable task waited for a core.
            "cpu_pressure": round(relay.cpu["stalled"] / window, 4),
            "harness": {"relay": harness_cpu(relay, n), "direct": harness_cpu(direct, n)},
        }
        nodes = {
            name.removeprefix("node "): round(value / window, 4)
            for name, value in relay.cpu.items()
            if name.startswith("node ")
        }
        if nodes:
            steady["node_cores"] = nodes
        if "redis" in relay.cpu:
            # The machine's Redis: other programs using it are counted too.
            steady["redis_cores"] = round(relay.cpu["redis"] / window, 4)
        result: dict[str, Any] = {
            "transport": kind,
            "nodes": 2 if kind in CROSS_NODE_KINDS else 1,
            "route": FLOOR_ROUTE
            if kind == floor.NAME
            else ROUTES.get(kind, one_node_route(processes)),
            "sessions": n,
            "seconds": seconds,
            "delivered": round(delivered, 4),
            "errors": sum(len(t["errors"]) for t in relay.traces),
            "upstream": {"relay": summary(up_relay), "direct": summary(up_direct)},
            "downstream": {"relay": summary(down_relay), "direct": summary(down_direct)},
            # Over the steady window: every session connected and streaming.
            "cpu_seconds_per_session_minute": round(server / (n * window / 60), 4),
            # Over the whole run, including the connect and close of every session.
            "cpu_seconds_per_session_minute_whole_run": round(cpu / (n * seconds / 60), 4),
            "steady_cpu": steady,
            "streaming_memory_bytes_per_session": streaming_rss[kind],
        }
        if relay.holders:
            result["held_by"] = relay.holders
        if kind in pings:
            result["redis_ping_ms"] = pings[kind]
        for direction in ("upstream", "downstream"):
            r, d = result[direction]["relay"], result[direction]["direct"]
            result[direction]["added"] = {q: round(r[q] - d[q], 2) for q in ("p50", "p99", "max")}
        rows.append(result)
    return rows


def hop(one: dict[str, Any], two: dict[str, Any]) -> dict[str, Any]:
    """What the two-node path adds to the one-node path, in the same run: the
    cross-node hop (relay percentiles subtracted; the direct baseline is shared)."""
    result: dict[str, Any] = {
        "transport": one["transport"],
        "path": two["transport"],
        "route": two["route"],
        "crosses": CROSSES[two["transport"]],
        "sessions": one["sessions"],
    }
    for direction in ("upstream", "downstream"):
        r1, r2 = one[direction]["relay"], two[direction]["relay"]
        result[direction] = {q: round(r2[q] - r1[q], 2) for q in ("p50", "p99")}
    us1 = one["steady_cpu"]["server_us_per_chunk"]
    us2 = two["steady_cpu"]["server_us_per_chunk"]
    result["server_us_per_chunk"] = {
        "one_node": us1,
        "two_nodes": us2,
        "added": round(us2 - us1, 2),
    }
    # Well above the kernel's share, this is other work on the machine: disturbed figures.
    result["other_cores"] = [one["steady_cpu"]["other_cores"], two["steady_cpu"]["other_cores"]]
    result["cpu_pressure"] = [one["steady_cpu"]["cpu_pressure"], two["steady_cpu"]["cpu_pressure"]]
    result["redis_ping_ms"] = two.get("redis_ping_ms")
    return result


# Commits one after the other, this far apart: what one user waits for, with the
# other sessions still streaming. ``measure_commit(..., together=True)`` commits them
# all at once instead, which adds the wait behind the others' requests.
COMMIT_SPACING_S = 0.06
# Turns per conversation in the commit measurement. A conversation's first request on
# a connection that reached another worker moves the connection to the session's
# worker (``workers.handoff``); its later turns find it there. Both are reported.
COMMIT_TURNS = 3


def measure_commit(
    processes: Processes, kind: str, n: int, *, together: bool = False
) -> dict[str, Any]:
    run_id = secrets.token_hex(3)
    spacing = 0.0 if together else COMMIT_SPACING_S
    relay = run_clients(
        kind,
        _urls(processes, kind),
        processes.token,
        [f"commit:{run_id}:{kind}:{i}" for i in range(n)],
        0,
        commit=spacing,
    )
    direct = run_clients(
        "direct",
        processes.upstream_url,
        "",
        [f"commit:{run_id}:direct:{i}" for i in range(n)],
        0,
        commit=spacing,
    )
    r, d = summary(commit_latency(relay.traces)), summary(commit_latency(direct.traces))
    first = summary(commit_latency(relay.traces, turns=slice(1)))
    first_direct = summary(commit_latency(direct.traces, turns=slice(1)))
    return {
        "turns": COMMIT_TURNS,
        "relay": r,
        "direct": d,
        "added": {q: round(r[q] - d[q], 2) for q in ("p50", "p99", "max")},
        "first_turn_added": {
            q: round(first[q] - first_direct[q], 2) for q in ("p50", "p99", "max")
        },
    }


def measure_idle_memory(processes: Processes, n: int) -> dict[str, Any]:
    """Resident memory per idle session, on node A (the only node with several)."""
    headers = {"Authorization": f"Bearer {processes.token}"}
    pids = processes.nodes[0].pids()
    with httpx.Client(base_url=processes.url, headers=headers, timeout=30) as http:
        http.post("/realtime/end", params={"conversationId": "warm"})
        warm = http.post("/realtime/session", json={}).json()["session"]
        http.post("/realtime/end", json={"conversationId": warm["conversationId"]})
        time.sleep(0.5)
        before = processes.rss_bytes(pids)
        sessions = [http.post("/realtime/session", json={}).json()["session"] for _ in range(n)]
        time.sleep(1.0)
        after = processes.rss_bytes(pids)
        for session in sessions:
            http.post("/realtime/end", json={"conversationId": session["conversationId"]})
    return {
        "sessions": n,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_session": (after - before) // n,
    }


def floor_ratios(rows: list[dict[str, Any]], measured: list[dict[str, Any]]) -> None:
    """Set each row's ``vs_node_floor``: its server CPU per chunk round trip over
    the node floor's at the same N (None while the floor has no row at that N)."""
    floors = {
        r["sessions"]: r["steady_cpu"]["server_us_per_chunk"]
        for r in measured
        if r["transport"] == floor.NAME
    }
    for row in rows:
        us = floors.get(row["sessions"])
        own = row["steady_cpu"]["server_us_per_chunk"]
        row["vs_node_floor"] = round(own / us, 2) if us else None


def _kib(size: int | None) -> str:
    return "-" if size is None else f"{size / 1024:.0f}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'transport':15} {'N':>4} {'deliv':>6} | {'up p50/p99/max added ms':>26} | "
        f"{'down p50/p99/max added ms':>27} | {'cpu s/sess-min':>14} {'cores':>5} "
        f"{'us/chunk':>8} {'vs floor':>8} | {'harness us/chunk':>16} | {'KiB/sess':>8}",
    ]
    for r in results:
        up, down = r["upstream"]["added"], r["downstream"]["added"]
        steady = r["steady_cpu"]
        harness = steady["harness"]["relay"]
        ratio = r.get("vs_node_floor")
        lines.append(
            f"{r['transport']:15} {r['sessions']:>4} {r['delivered']:>6.3f} | "
            f"{up['p50']:>7.2f} {up['p99']:>8.2f} {up['max']:>9.2f} | "
            f"{down['p50']:>7.2f} {down['p99']:>9.2f} {down['max']:>9.2f} | "
            f"{r['cpu_seconds_per_session_minute']:>14.3f} {steady['server_cores']:>5.2f} "
            f"{steady['server_us_per_chunk']:>8.1f} "
            f"{'-' if ratio is None else f'{ratio:.2f}x':>8} | "
            f"{harness['upstream_us_per_chunk']:>7.1f} {harness['clients_us_per_chunk']:>8.1f} | "
            f"{_kib(r['streaming_memory_bytes_per_session']):>8}"
        )
    return "\n".join(lines)


def hop_table(hops: list[dict[str, Any]]) -> str:
    lines = [
        f"{'cross-node hop':15} {'N':>4} | {'up p50/p99 ms':>15} | {'down p50/p99 ms':>15} | "
        f"{'server us/chunk: 1 node, 2 nodes':>32} | {'other cores':>11} | {'cpu stall':>9} | "
        "redis ping max",
    ]
    for h in hops:
        up, down, us = h["upstream"], h["downstream"], h["server_us_per_chunk"]
        lines.append(
            f"{h['path']:15} {h['sessions']:>4} | {up['p50']:>7.2f} {up['p99']:>7.2f} | "
            f"{down['p50']:>7.2f} {down['p99']:>7.2f} | "
            f"{us['one_node']:>15.1f} {us['two_nodes']:>16.1f} | "
            f"{h['other_cores'][0]:>5.2f} {h['other_cores'][1]:>5.2f} | "
            f"{h['cpu_pressure'][0]:>4.0%} {h['cpu_pressure'][1]:>4.0%} | "
            f"{(h['redis_ping_ms'] or {}).get('max', float('nan')):>8.2f} ms"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, direction in zip(axes, ("upstream", "downstream"), strict=True):
        for transport in sorted({r["transport"] for r in results}):
            rows = [r for r in results if r["transport"] == transport]
            ax.plot(
                [r["sessions"] for r in rows],
                [r[direction]["added"]["p99"] for r in rows],
                marker="o",
                label=f"{transport} p99",
            )
            ax.plot(
                [r["sessions"] for r in rows],
                [r[direction]["added"]["p50"] for r in rows],
                marker=".",
                linestyle="--",
                label=f"{transport} p50",
            )
        ax.axhline(TARGET_P99_MS, color="grey", linewidth=0.8)
        # Milliseconds and, past saturation, seconds on one readable axis.
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)  # a difference of noise can dip below 0; the JSON keeps it
        ax.set_title(f"relay-added latency, {direction}")
        ax.set_xlabel("concurrent sessions")
        ax.set_ylabel("ms")
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def start_node_floor(processes: Processes) -> dict[str, Any]:
    """Start the node floor, saying in one line what runs, or why it does not."""
    reason = processes.start_floor()
    if reason is not None:
        print(f"node floor skipped: {reason}", flush=True)
        return {"measured": False, "skipped": reason}
    assert processes.floor is not None
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    masking = "native" if processes.floor.native_masking else "JS"
    print(
        f"node floor: {processes.floor.url}, node {version}, ws with {masking} masking",
        flush=True,
    )
    return {"measured": True, "node": version, "native_masking": processes.floor.native_masking}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sessions", default="10,50,100,200,300", help="comma-separated session counts"
    )
    parser.add_argument("--transports", default="http,socketio,ws")
    parser.add_argument("--seconds", type=float, default=8.0, help="streaming time per measurement")
    parser.add_argument("--idle", type=int, default=100, help="idle sessions for the memory figure")
    parser.add_argument("--commit-sessions", type=int, default=10)
    parser.add_argument(
        "--client-processes",
        type=int,
        default=0,
        help="client worker processes per run (default: one per 300 sessions, at most two)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="voxrelay serve --workers (default 1)"
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        choices=(1, 2),
        help="2: two nodes sharing Redis and one database; each N is measured on one "
        "node and across both",
    )
    parser.add_argument(
        "--cross",
        default="both",
        choices=("both", "up", "down"),
        help="with --nodes 2, what crosses from node B to the session's node A in the "
        "http two-node path: both directions (stream and upload on B), only the audio "
        "(upload on B), or only the answers (stream on B)",
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help="with --nodes 2")
    parser.add_argument(
        "--database",
        default="auto",
        choices=("auto", "sqlite", "postgresql"),
        help="auto: with --nodes 2, a PostgreSQL database made for the run when "
        "PostgreSQL answers on 127.0.0.1:5432, else one SQLite file; one node: SQLite",
    )
    parser.add_argument(
        "--no-node-floor",
        dest="node_floor",
        action="store_false",
        help="do not measure the node floor (a verbatim ws relay on Node) beside ws",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be more than 0")
    global CLIENT_PROCESSES
    CLIENT_PROCESSES = args.client_processes
    # Rising: each N's memory figure is its growth from the one before.
    counts = sorted({int(n) for n in args.sessions.split(",")})
    transports = args.transports.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    hops: list[dict[str, Any]] = []
    node_floor: dict[str, Any] = {"measured": False}
    with tempfile.TemporaryDirectory() as workdir:
        processes = Processes(
            Path(workdir),
            args.workers,
            args.nodes,
            redis_url=args.redis_url,
            database=args.database,
        )
        try:
            if args.nodes > 1:
                print(
                    f"two nodes, A {processes.node_urls[0]} and B {processes.node_urls[1]}, "
                    f"sharing Redis {processes.redis_url} and {processes.database_kind}",
                    flush=True,
                )
                for transport in transports:
                    kind = cross_kind(transport, args.cross)
                    print(f"  {transport}: " + (ROUTES[kind] if kind else "one node only"))
            if args.node_floor:
                node_floor = start_node_floor(processes)
            memory = measure_idle_memory(processes, args.idle) if args.idle else None
            results: list[dict[str, Any]] = []
            memory_references: dict[str, MemoryReference] = {}
            commits = {}
            bursts = {}
            # The floor rides with ws (same direct baseline); without ws, on its own.
            groups = list(transports)
            if processes.floor is not None and "ws" not in groups:
                groups.append(floor.NAME)
            for transport in groups:
                for kind in paths(processes, transport, args.cross):
                    commits[kind] = measure_commit(processes, kind, args.commit_sessions)
                    bursts[kind] = measure_commit(
                        processes, kind, args.commit_sessions, together=True
                    )
                for n in counts:
                    rows = measure(
                        processes, transport, n, args.seconds, args.cross, memory_references
                    )
                    results.extend(rows)
                    floor_ratios(rows, results)
                    for line in table(rows).splitlines()[1:]:
                        print(line, flush=True)
                    for row in rows:
                        held = row.get("held_by", {})
                        expected = (
                            held.get("A", 0) == n
                            if row["transport"] in CROSS_NODE_KINDS
                            else set(held) <= {"A", "B"}
                        )
                        if held and not expected:
                            print(f"  {row['transport']}: held by {row['held_by']}", flush=True)
                    if len(rows) > 1 and rows[1]["transport"] in CROSS_NODE_KINDS:
                        hops.append(hop(rows[0], rows[1]))
                        print(hop_table(hops[-1:]).splitlines()[-1], flush=True)
        finally:
            processes.stop()
    floor_ratios(results, results)
    kinds = list(dict.fromkeys(r["transport"] for r in results))
    sustained = {
        t: max(
            (
                r["sessions"]
                for r in results
                if r["transport"] == t
                and r["delivered"] >= 0.99
                and r["upstream"]["added"]["p99"] < TARGET_P99_MS
                and r["downstream"]["added"]["p99"] < TARGET_P99_MS
            ),
            default=0,
        )
        for t in kinds
    }
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "server_workers": args.workers,
        "nodes": args.nodes,
        "results": results,
        "commit_to_first_audio_ms": commits,
        "commit_to_first_audio_together_ms": bursts,
        "idle_memory": memory,
        "sustained_sessions_p99_under_50ms": sustained,
        "node_floor": node_floor,
    }
    if args.nodes > 1:
        report["cluster"] = {
            "redis": processes.redis_url,
            "database": processes.database_kind,
            "cross": args.cross,
        }
        # Two-node path minus one-node path, per transport and N, in the same run.
        report["cross_node_hop_ms"] = hops
    (args.out / "relay.json").write_text(json.dumps(report, indent=2))
    print()
    print(table(results))
    if hops:
        print()
        print(hop_table(hops))
    print()
    for transport, c in commits.items():
        b = bursts[transport]
        print(
            f"commit to first audio, {transport}: relay p50 {c['relay']['p50']} ms, "
            f"direct p50 {c['direct']['p50']} ms, "
            f"added p50 {c['added']['p50']} ms, p99 {c['added']['p99']} ms "
            f"(first turns: p50 {c['first_turn_added']['p50']} ms); "
            f"{args.commit_sessions} at once: added p50 {b['added']['p50']} ms, "
            f"p99 {b['added']['p99']} ms"
        )
    if memory:
        print(
            f"resident memory per idle session: {memory['bytes_per_session'] / 1024:.0f} KiB"
            f" ({memory['sessions']} sessions)"
        )
    print(f"largest N with added p99 < {TARGET_P99_MS:.0f} ms: {sustained}")
    if plot(results, args.out / "latency.png"):
        print(f"wrote {args.out / 'relay.json'} and {args.out / 'latency.png'}")
    else:
        print(f"wrote {args.out / 'relay.json'} (install matplotlib for the plot)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
