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

    uv run python benchmarks/relay.py                      # the full sweep
    uv run python benchmarks/relay.py --sessions 10 --seconds 3 --transports http
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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

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


# -- the processes under test ------------------------------------------------------------


class Processes:
    def __init__(self, workdir: Path, workers: int = 1) -> None:
        self.workdir = workdir
        self.workers = workers
        self.upstream_port = free_port()
        self.server_port = free_port()
        self.upstream = subprocess.Popen(
            [sys.executable, str(HERE / "upstream.py"), "--port", str(self.upstream_port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.upstream.stdout is not None
        if self.upstream.stdout.readline().strip() != "ready":
            raise RuntimeError("the benchmark upstream did not start")
        self.database = f"sqlite:///{workdir / 'bench.db'}"
        env = {
            **os.environ,
            "VOXRELAY_PROVIDER": "openai",
            "VOXRELAY_OPENAI_URL": f"ws://127.0.0.1:{self.upstream_port}/v1/realtime",
            "OPENAI_API_KEY": "bench-upstream-key",
            "VOXRELAY_DATABASE_URL": self.database,
            "VOXRELAY_LOG_LEVEL": "warning",
        }
        command = [sys.executable, "-m", "voxrelay.cli", "serve", "--port", str(self.server_port)]
        self.server = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=env,
            stderr=open(workdir / "server.log", "w"),  # noqa: SIM115
        )
        self.url = f"http://127.0.0.1:{self.server_port}"
        self.upstream_url = f"ws://127.0.0.1:{self.upstream_port}/v1/realtime"
        for _ in range(400):
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError("voxrelay serve did not start")
        self.token = asyncio.run(self._token())

    def server_pids(self) -> list[int]:
        """The server's processes: the one started, and its workers if it has any."""
        pids = [self.server.pid]
        if self.workers > 1:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.server.pid:
                        pids.append(int(stat.parent.name))
        return pids

    async def _token(self) -> str:
        from voxrelay.store import Store

        store = await Store.open(self.database)
        try:
            return (await store.create_token("bench", "bench"))[1]
        finally:
            await store.close()

    def cpu_seconds(self) -> float:
        return sum(process_cpu(pid) for pid in self.server_pids())

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.server_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

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
        self.server.send_signal(signal.SIGTERM)
        try:
            self.server.wait(15)
        except subprocess.TimeoutExpired:
            self.server.kill()
        self.upstream.kill()
        self.upstream.wait(5)


# -- CPU -----------------------------------------------------------------------------------

_LIBC = ctypes.CDLL(None, use_errno=True)


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


def steady_window(start: float, seconds: float) -> tuple[float, float]:
    """The part of a streaming period when every session is connected and
    streaming: from 1 s after the shared start to 0.5 s before the end
    (proportionally less of a short period)."""
    return start + min(1.0, seconds * 0.25), start + seconds - min(0.5, seconds * 0.15)


class CpuProbe(threading.Thread):
    """CPU of the given processes (and of the machine) over a window of the
    shared monotonic clock."""

    def __init__(self, pids: dict[str, list[int]], window: tuple[float, float]) -> None:
        super().__init__(daemon=True)
        self.pids, self.window = pids, window
        self.cpu: dict[str, float] = {}
        self.seconds = 0.0

    def _sample(self) -> tuple[float, dict[str, float]]:
        cpu = {name: sum(process_cpu(pid) for pid in pids) for name, pids in self.pids.items()}
        cpu["machine"] = machine_busy()
        return time.monotonic(), cpu

    def run(self) -> None:
        time.sleep(max(0.0, self.window[0] - time.monotonic()))
        t0, before = self._sample()
        time.sleep(max(0.0, self.window[1] - time.monotonic()))
        t1, after = self._sample()
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
    processes: int = 0


def _worker(
    conn: Connection,
    kind: str,
    url: str,
    token: str,
    tags: list[str],
    seconds: float,
    commit: bool,
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
    url: str,
    token: str,
    tags: list[str],
    seconds: float,
    commit: bool,
    offsets: list[float],
) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    from clients import CLIENTS, RealtimeClient, Speech, commit_turn, stream

    audio = speech()
    if kind == "direct":
        clients = [RealtimeClient(url, "bench-upstream-key", tag, direct=True) for tag in tags]
    else:
        clients = [CLIENTS[kind](url, token, tag) for tag in tags]
    chunks = Speech(audio, int(seconds * 50))
    for encoding in {c.ENCODING for c in clients}:
        chunks.encoded(encoding)  # before the clock starts
    gate = asyncio.Semaphore(20)

    async def open_one(client: Any) -> None:
        async with gate:
            await client.open()

    await asyncio.gather(*(open_one(c) for c in clients))
    # Every worker's sessions are open: the parent sets the shared start.
    conn.send(("ready", time.monotonic()))
    start = await _receive(conn)
    loop = asyncio.get_running_loop()
    shift = loop.time() - time.monotonic()
    probe: list[tuple[float, float]] = []
    # No collector pauses while streaming (the traces only grow; cycles wait till after).
    gc.collect()
    gc.disable()
    try:
        if commit:
            await asyncio.gather(*(commit_turn(c.trace, audio, c.send, c.commit) for c in clients))
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
    url: str,
    token: str,
    tags: list[str],
    seconds: float,
    *,
    commit: bool = False,
    watch: dict[str, list[int]] | None = None,
) -> Run:
    """Run the clients in worker processes: each opens its sessions, then all
    start streaming together on the shared clock, their pacing timers spread
    evenly over the 20 ms period across workers. ``watch``: processes whose CPU
    to measure over the steady window."""
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
    try:
        for conn in conns:
            _expect(conn, "ready", 120 + len(tags) * 0.5)
        start = time.monotonic() + 0.3
        probe = CpuProbe(watch or {}, steady_window(start, seconds))
        if not commit:
            probe.start()
        for conn in conns:
            conn.send(start)
        results = [_expect(conn, "done", 120 + seconds + len(tags) * 0.2) for conn in conns]
    finally:
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
    run = Run([trace for r in results for trace in r["traces"]], processes=count)
    if not commit:
        probe.join()
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


def commit_latency(traces: list[dict[str, Any]]) -> list[float]:
    return [
        first - commit
        for trace in traces
        for commit, first in zip(trace["commit_at"], trace["first_after_commit"], strict=False)
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


def measure(processes: Processes, transport: str, n: int, seconds: float) -> dict[str, Any]:
    run_id = secrets.token_hex(3)
    relay_tags = [f"bench:{run_id}:{transport}:{i}" for i in range(n)]
    direct_tags = [f"bench:{run_id}:direct:{i}" for i in range(n)]
    watch = {"server": processes.server_pids(), "upstream": [processes.upstream.pid]}
    cpu_before = processes.cpu_seconds()
    relay = run_clients(transport, processes.url, processes.token, relay_tags, seconds, watch=watch)
    cpu = processes.cpu_seconds() - cpu_before
    direct = run_clients("direct", processes.upstream_url, "", direct_tags, seconds, watch=watch)
    records = asyncio.run(processes.upstream_records(f"bench:{run_id}:"))
    up_relay, down_relay, delivered = latencies(relay.traces, records, 960)
    up_direct, down_direct, _ = latencies(direct.traces, records, 960)
    server = relay.cpu["server"]
    window = relay.window
    result: dict[str, Any] = {
        "transport": transport,
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
        "steady_cpu": {
            "window_seconds": round(window, 3),
            "server_cores": round(server / window, 4),
            "server_us_per_chunk": round(server / (n * 50 * window) * 1e6, 2),
            "machine_cores": round(relay.cpu["machine"] / window, 4),
            "harness": {"relay": harness_cpu(relay, n), "direct": harness_cpu(direct, n)},
        },
    }
    for direction in ("upstream", "downstream"):
        r, d = result[direction]["relay"], result[direction]["direct"]
        result[direction]["added"] = {q: round(r[q] - d[q], 2) for q in ("p50", "p99", "max")}
    return result


def measure_commit(processes: Processes, transport: str, n: int) -> dict[str, Any]:
    run_id = secrets.token_hex(3)
    relay = run_clients(
        transport,
        processes.url,
        processes.token,
        [f"commit:{run_id}:{transport}:{i}" for i in range(n)],
        0,
        commit=True,
    )
    direct = run_clients(
        "direct",
        processes.upstream_url,
        "",
        [f"commit:{run_id}:direct:{i}" for i in range(n)],
        0,
        commit=True,
    )
    r, d = summary(commit_latency(relay.traces)), summary(commit_latency(direct.traces))
    return {
        "relay": r,
        "direct": d,
        "added": {q: round(r[q] - d[q], 2) for q in ("p50", "p99", "max")},
    }


def measure_idle_memory(processes: Processes, n: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {processes.token}"}
    with httpx.Client(base_url=processes.url, headers=headers, timeout=30) as http:
        http.post("/realtime/end", params={"conversationId": "warm"})
        warm = http.post("/realtime/session", json={}).json()["session"]
        http.post("/realtime/end", json={"conversationId": warm["conversationId"]})
        time.sleep(0.5)
        before = processes.rss_bytes()
        sessions = [http.post("/realtime/session", json={}).json()["session"] for _ in range(n)]
        time.sleep(1.0)
        after = processes.rss_bytes()
        for session in sessions:
            http.post("/realtime/end", json={"conversationId": session["conversationId"]})
    return {
        "sessions": n,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_session": (after - before) // n,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'transport':12} {'N':>4} {'deliv':>6} | {'up p50/p99/max added ms':>26} | "
        f"{'down p50/p99/max added ms':>27} | {'cpu s/sess-min':>14} {'cores':>5} | "
        f"{'harness us/chunk':>16}",
    ]
    for r in results:
        up, down = r["upstream"]["added"], r["downstream"]["added"]
        steady = r["steady_cpu"]
        harness = steady["harness"]["relay"]
        lines.append(
            f"{r['transport']:12} {r['sessions']:>4} {r['delivered']:>6.3f} | "
            f"{up['p50']:>7.2f} {up['p99']:>8.2f} {up['max']:>9.2f} | "
            f"{down['p50']:>7.2f} {down['p99']:>9.2f} {down['max']:>9.2f} | "
            f"{r['cpu_seconds_per_session_minute']:>14.3f} {steady['server_cores']:>5.2f} | "
            f"{harness['upstream_us_per_chunk']:>7.1f} {harness['clients_us_per_chunk']:>8.1f}"
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
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be more than 0")
    global CLIENT_PROCESSES
    CLIENT_PROCESSES = args.client_processes
    counts = [int(n) for n in args.sessions.split(",")]
    transports = args.transports.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        processes = Processes(Path(workdir), args.workers)
        try:
            memory = measure_idle_memory(processes, args.idle) if args.idle else None
            results = []
            commits = {}
            for transport in transports:
                commits[transport] = measure_commit(processes, transport, args.commit_sessions)
                for n in counts:
                    result = measure(processes, transport, n, args.seconds)
                    results.append(result)
                    print(table([result]).splitlines()[-1], flush=True)
        finally:
            processes.stop()
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
        for t in transports
    }
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "server_workers": args.workers,
        "results": results,
        "commit_to_first_audio_ms": commits,
        "idle_memory": memory,
        "sustained_sessions_p99_under_50ms": sustained,
    }
    (args.out / "relay.json").write_text(json.dumps(report, indent=2))
    print()
    print(table(results))
    print()
    for transport, c in commits.items():
        print(
            f"commit to first audio, {transport}: relay p50 {c['relay']['p50']} ms, "
            f"direct p50 {c['direct']['p50']} ms, "
            f"added p50 {c['added']['p50']} ms, p99 {c['added']['p99']} ms"
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
