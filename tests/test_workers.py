"""``voxrelay serve --workers 2``: two worker processes behind one port, each session
living in one of them, whichever worker each of a client's connections reaches."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import socketio
from harness import EventReader, read_pcm, silence, stored_messages
from openai_ws.realtime_ws_client import connect, conversation_id, text_item

from voxrelay.client import VoxrelayClient
from voxrelay.client._events import Options
from voxrelay.client._socketio import SocketIOConversation
from voxrelay.store import Store
from voxrelay.workers.handoff import route_key
from voxrelay.workers.ownership import Ownership

T = TypeVar("T")
VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))
WORKERS = 2


@dataclass
class Cluster:
    process: subprocess.Popen[str]
    url: str
    token: str
    log: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1)

    def owner(self, key: str) -> int:
        return zlib.crc32(key.encode()) % WORKERS


async def _on_both_workers(
    cluster: Cluster, count: int, make: Callable[[], Awaitable[T]], conversation: Callable[[T], str]
) -> list[T]:
    """``count`` conversations at once, and as many again while all of them landed on
    one worker: the kernel hands each connection to a worker at random (eight all on
    one: about one time in a hundred), and these tests are about both."""
    made = list(await asyncio.gather(*(make() for _ in range(count))))
    for _ in range(4):
        if {cluster.owner(conversation(each)) for each in made} == set(range(WORKERS)):
            return made
        made += await asyncio.gather(*(make() for _ in range(count)))
    raise AssertionError("every conversation landed on one worker")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(tmp: Path, **env: str) -> Cluster:
    port = _free_port()
    database = f"sqlite:///{tmp / 'workers.db'}"
    log = tmp / "server.log"
    full = {
        **os.environ,
        "VOXRELAY_DATABASE_URL": database,
        "VOXRELAY_PROVIDER": "echo",
        "VOXRELAY_LOG_FORMAT": "text",
        **env,
    }
    process = subprocess.Popen(
        [VOXRELAY, "serve", "--port", str(port), "--workers", str(WORKERS)],
        env=full,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            # Both workers up: each answers its own metrics merged with the other's.
            if httpx.get(url + "/healthz").status_code == 200 and _workers_answering(url) == {
                "0",
                "1",
            }:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        raise AssertionError("the workers did not start:\n" + log.read_text())

    async def token() -> str:
        store = await Store.open(database)
        try:
            return (await store.create_token("watch", "alice"))[1]
        finally:
            await store.close()

    return Cluster(process, url, asyncio.run(token()), log)


def _workers_answering(url: str) -> set[str]:
    """Which workers answer fresh connections (the access log names each)."""
    seen = set()
    for _ in range(20):
        with httpx.Client(base_url=url) as http:
            seen.add(http.get("/healthz").headers.get("x-voxrelay-worker", "?"))
    return seen


def _stop(cluster: Cluster) -> int:
    if cluster.process.poll() is None:
        cluster.process.send_signal(signal.SIGTERM)
        try:
            return cluster.process.wait(30)
        except subprocess.TimeoutExpired:
            cluster.process.kill()
            cluster.process.wait(10)
            raise
    return cluster.process.returncode


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A short head deadline, for the test of it (heads on loopback take microseconds);
    # one token stands for a dozen devices at once here, so no per-device limit.
    running = _start(
        tmp_path_factory.mktemp("workers"),
        VOXRELAY_HEADER_TIMEOUT_SECONDS="2",
        VOXRELAY_MAX_SESSIONS_PER_DEVICE="0",
    )
    yield running
    assert _stop(running) == 0
    log = running.log.read_text()
    assert "Traceback" not in log, log


# -- which worker owns what ----------------------------------------------------------------


def test_every_id_has_one_owner_and_new_ids_belong_to_their_maker() -> None:
    workers = [Ownership(i, 3) for i in range(3)]
    for key in ("conv_1", "sess_abc", "d3adbeef"):
        assert sum(w.owns(key) for w in workers) == 1
        assert {w.owner(key) for w in workers} == {workers[0].owner(key)}
    for worker in workers:
        assert all(worker.owns(worker.new_id("conv_")) for _ in range(50))
    assert Ownership().owns("anything")


def test_the_request_line_names_what_decides_the_worker() -> None:
    assert route_key(b"/realtime/stream?conversationId=conv_1&lastEventId=3") == "conv_1"
    assert route_key(b"/realtime/stream?conversationId=conv_1&sessionId=sess_2") == "sess_2"
    assert route_key(b"/realtime/upload?conversationId=conv_9&sampleRate=16000") == "conv_9"
    assert route_key(b"/v1/realtime?model=x&conversationId=conv_7") == "conv_7"
    assert route_key(b"/socket.io/?EIO=4&transport=polling&sid=abc") == "abc"
    assert route_key(b"/realtime/session/sess_5") == "sess_5"
    assert route_key(b"/conversations/conv_3") == "conv_3"
    # New conversations, lists and unrelated routes stay with whoever accepted them.
    for target in (b"/realtime/stream", b"/v1/realtime?model=x", b"/conversations", b"/healthz"):
        assert route_key(target) is None
    assert route_key(b"/socket.io/?EIO=4&transport=websocket") is None
    # A socket may say which session it will join, so that it opens at its owner.
    assert route_key(b"/socket.io/?EIO=4&transport=websocket&sessionId=sess_8") == "sess_8"
    assert route_key(b"/socket.io/?EIO=4&transport=polling&sid=abc&sessionId=sess_8") == "abc"


# -- the transports, across workers ----------------------------------------------------------


async def _http_conversation(cluster: Cluster) -> tuple[str, list[str]]:
    """A watch's whole conversation: stream, spoken turn, typed turn, end. Every
    request is a new connection, so each may reach either worker."""
    speech, rate = read_pcm("goforward.raw")
    async with VoxrelayClient(cluster.url, cluster.token) as client:
        reader = EventReader(client.events(inputSampleRate=rate))
        started = await reader.wait_for("conversation_started")
        cid = started.data["conversationId"]

        async def paced() -> object:
            body = speech + silence(800, rate)
            step = rate // 50 * 2
            for offset in range(0, len(body), step):
                yield body[offset : offset + step]
                await asyncio.sleep(0.002)

        async with VoxrelayClient(cluster.url, cluster.token) as uploader:
            uploaded = await uploader.upload(cid, paced())
        assert uploaded["bytesReceived"] == len(speech) + len(silence(800, rate))
        await reader.wait_for("response_done", timeout=20)
        async with VoxrelayClient(cluster.url, cluster.token) as texter:
            await texter.text(cid, "and then turn left")
        said = await reader.wait_for(
            "transcript",
            lambda e: e.data.get("role") == "assistant" and "turn left" in e.data.get("text", ""),
            timeout=20,
        )
        assert said.data["final"] is True
        async with VoxrelayClient(cluster.url, cluster.token) as ender:
            ended = await ender.end(cid)
        assert (await reader.wait_for("conversation_ended")).data["reason"] == "client_end"
        assert ended["status"] == "ended"
        await reader.close()
    return cid, [e.type for e in reader.events]


async def test_http_conversations_whichever_worker_each_request_reaches(cluster: Cluster) -> None:
    results = await _on_both_workers(
        cluster, 12, lambda: _http_conversation(cluster), lambda result: result[0]
    )
    for cid, types in results:
        assert types[0] == "conversation_started" and types[-1] == "conversation_ended"
        assert "audio" in types
        messages = await stored_messages(cluster, cluster.token, cid, 4)  # type: ignore[arg-type]
        assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant"]


async def _socketio_conversation(cluster: Cluster, transports: list[str]) -> tuple[str, int]:
    """``POST /realtime/session`` reaches one worker, the socket maybe the other."""
    async with httpx.AsyncClient(
        base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.token}"}
    ) as http:
        response = await http.post("/realtime/session", json={"turnDetection": "manual"})
    session = response.json()["session"]
    sio = socketio.AsyncClient()
    audio: list[dict[str, object]] = []
    done, ended = asyncio.Event(), asyncio.Event()

    async def on_audio(data: dict[str, object]) -> None:
        audio.append(data)

    async def on_done(data: dict[str, object]) -> None:
        done.set()

    async def on_ended(data: dict[str, object]) -> None:
        ended.set()

    sio.on("ai-audio", on_audio, namespace="/realtime")
    sio.on("response-done", on_done, namespace="/realtime")
    sio.on("session-ended", on_ended, namespace="/realtime")
    await sio.connect(
        cluster.url, namespaces=["/realtime"], auth={"token": cluster.token}, transports=transports
    )
    try:
        joined = await sio.call("join-session", {"sessionId": session["id"]}, namespace="/realtime")
        assert joined["ok"], joined
        speech, rate = read_pcm("goforward.raw")
        step = rate // 50 * 2
        for offset in range(0, rate // 2 * 2, step):  # half a second
            await sio.emit("audio-chunk", speech[offset : offset + step], namespace="/realtime")
        assert (await sio.call("commit-audio", {}, namespace="/realtime"))["ok"]
        await asyncio.wait_for(done.wait(), 20)
        assert (await sio.call("end-session", {}, namespace="/realtime"))["ok"]
        await asyncio.wait_for(ended.wait(), 20)
    finally:
        await sio.disconnect()
    assert audio and all(a["sampleRate"] == session["outputSampleRate"] for a in audio)
    return session["conversationId"], len(audio)


async def test_socketio_sockets_join_sessions_of_either_worker(cluster: Cluster) -> None:
    kinds = itertools.cycle([["websocket"], ["websocket"], ["polling", "websocket"]])
    results = await _on_both_workers(
        cluster,
        12,
        lambda: _socketio_conversation(cluster, next(kinds)),
        lambda result: result[0],
    )
    for cid, _ in results:
        messages = await stored_messages(cluster, cluster.token, cid, 2)  # type: ignore[arg-type]
        assert [role for role, _ in messages] == ["user", "assistant"]


async def test_the_client_package_opens_its_socket_in_the_worker_of_its_session(
    cluster: Cluster,
) -> None:
    # Else half of its sockets would relay every chunk through the other worker.
    opened = await _on_both_workers(
        cluster,
        8,
        lambda: SocketIOConversation.open(cluster.url, cluster.token, Options()),
        lambda conversation: conversation.conversation_id,
    )
    try:
        for conversation in opened:
            assert cluster.owner(conversation.socket_id) == cluster.owner(conversation.session_id)
    finally:
        for conversation in opened:
            await conversation.end()
            await conversation.aclose()


async def test_a_conversation_resumes_over_the_compatible_websocket_at_its_owner(
    cluster: Cluster,
) -> None:
    async def resume() -> str:
        async with VoxrelayClient(cluster.url, cluster.token) as client:
            session = await client.create_session()
            cid = session["conversationId"]
            await client.text(cid, "remember the lighthouse")
            await client.end(cid)
        async with connect(cluster, cluster.token, conversationId=cid) as conversation:  # type: ignore[arg-type]
            await conversation.until("conversation.created")
            assert conversation_id(conversation) == cid
            await conversation.conn.conversation.item.create(item=text_item("what did I say?"))
            await conversation.conn.response.create()
            await conversation.until("response.done")
        assert conversation.problems == []
        return cid

    cids = await _on_both_workers(cluster, 8, resume, lambda cid: cid)
    for cid in cids:
        messages = await stored_messages(cluster, cluster.token, cid, 4)  # type: ignore[arg-type]
        assert messages[2] == ("user", "what did I say?")


async def _pipelined_upload(cluster: Cluster, cid: str, seq: int, body: bytes) -> tuple[str, str]:
    """A ``seq`` upload pipelined behind a ``/healthz`` on one connection, so that it is
    served by whichever worker took the connection (it is not handed to the owner);
    returns that worker and the upload's response body."""
    host, port = cluster.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            + f"POST /realtime/upload?conversationId={cid}&seq={seq} HTTP/1.1\r\n".encode()
            + f"Host: x\r\nAuthorization: Bearer {cluster.token}\r\n".encode()
            + b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        answers = []
        for _ in range(2):
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
            headers = dict(
                line.lower().split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line
            )
            length = int(headers["content-length"])
            answers.append(
                (headers.get("x-voxrelay-worker", "?"), await reader.readexactly(length))
            )
        assert head.startswith("HTTP/1.1 200"), head
        return answers[1][0], answers[1][1].decode()
    finally:
        writer.close()


async def test_a_retried_seq_is_recognised_by_the_owner_whichever_worker_took_the_first_try(
    cluster: Cluster,
) -> None:
    cid = next(f"conv_seq{n}" for n in range(100) if cluster.owner(f"conv_seq{n}") == 0)
    async with VoxrelayClient(cluster.url, cluster.token) as client:
        await client.create_session(conversationId=cid, inputSampleRate=16000)
        reader = EventReader(client.events(conversationId=cid))
        await reader.wait_for("conversation_started")
        first = silence(200, 16000)
        # The first try reaches the worker that does not own the session.
        for _ in range(40):
            worker, answer = await _pipelined_upload(cluster, cid, 7, first)
            if worker == "1":
                break
        else:
            pytest.skip("the kernel never gave a connection to worker 1")
        assert json.loads(answer)["bytesReceived"] == len(first)
        # The retry (a new connection, handed to the owner) is known there.
        retried = await client._call(
            "POST",
            "/realtime/upload",
            params={"conversationId": cid, "seq": 7},
            content=b"\0\0",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert retried == {"conversationId": cid, "seq": 7, "bytesReceived": len(first)}
        await client.end(cid)
        await reader.close()


async def test_tool_results_reach_the_owner_whichever_worker_takes_them(
    cluster: Cluster,
) -> None:
    screen = {"type": "function", "name": "show_on_screen", "parameters": {"type": "object"}}
    async with VoxrelayClient(cluster.url, cluster.token) as client:
        reader = EventReader(client.events(tools=json.dumps([screen])))
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        answered_by = set()
        for turn in range(8):
            await client.text(cid, f'call tool show_on_screen {{"turn": {turn}}}')
            called = await reader.wait_for(
                "tool_call", lambda e, turn=turn: e.data["arguments"] == {"turn": turn}
            )
            # A new connection each time, with the conversation named only in the body:
            # it stays with whichever worker accepted it.
            async with httpx.AsyncClient(base_url=cluster.url) as http:
                response = await http.post(
                    "/realtime/tool-result",
                    json={"conversationId": cid, "callId": called.data["callId"], "output": turn},
                    headers={"Authorization": f"Bearer {cluster.token}"},
                )
            assert response.json() == {"ok": True}, response.text
            answered_by.add(response.headers.get("x-voxrelay-worker"))
            await reader.wait_for(
                "transcript",
                lambda e, turn=turn: (
                    e.data.get("final") is True
                    and e.data.get("text") == f"The show_on_screen tool said: {turn}"
                ),
                timeout=20,
            )
        await client.end(cid)
        await reader.close()
    if answered_by == {str(cluster.owner(cid))}:
        pytest.skip("every result happened to reach the owner's worker")
    assert answered_by == {"0", "1"}


async def test_a_stalled_request_head_is_cut_off_by_either_worker(cluster: Cluster) -> None:
    """A request line still coming (read by the hand-off, not yet by uvicorn), and a
    head handed to its owner worker unfinished: both closed at the deadline."""
    host, port = cluster.url.removeprefix("http://").split(":")
    stalled = []
    for start in (
        b"GET /realtime/stream?conversationId=",
        b"GET /realtime/stream?conversationId=c1 HTTP/1.1\r\nHost: x\r\n",
        b"GET /realtime/stream?conversationId=c4 HTTP/1.1\r\nHost: x\r\n",
    ):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(start)
        stalled.append((reader, writer))
    async with httpx.AsyncClient(base_url=cluster.url) as http:
        assert (await http.get("/healthz")).status_code == 200
    for reader, writer in stalled:
        answer = await asyncio.wait_for(reader.read(), 20)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
        writer.close()


async def test_metrics_add_up_every_worker(cluster: Cluster) -> None:
    async with VoxrelayClient(cluster.url, cluster.token) as client:
        readers = [EventReader(client.events()) for _ in range(6)]
        cids = [(await r.wait_for("conversation_started")).data["conversationId"] for r in readers]
        assert {cluster.owner(cid) for cid in cids} == {0, 1} or len(set(cids)) == 6
        for _ in range(6):  # fresh connections: either worker answers, with the same sums
            async with httpx.AsyncClient(base_url=cluster.url) as http:
                text = (await http.get("/metrics")).text
            assert "\nvoxrelay_active_sessions 6.0\n" in text, text[:2000]
            assert 'voxrelay_active_streams{transport="sse"} 6.0' in text
        for cid in cids:
            await client.end(cid)
        for reader in readers:
            await reader.close()


# -- limits per user ---------------------------------------------------------------------------


async def test_live_sessions_per_user_are_counted_over_every_worker(tmp_path: Path) -> None:
    cluster = await asyncio.to_thread(
        _start, tmp_path, VOXRELAY_MAX_SESSIONS_PER_USER="2", VOXRELAY_MAX_SESSIONS_PER_DEVICE="0"
    )
    try:
        names = [f"conv_q{n}" for n in range(100)]
        on_0 = [cid for cid in names if cluster.owner(cid) == 0]
        on_1 = [cid for cid in names if cluster.owner(cid) == 1]
        async with VoxrelayClient(cluster.url, cluster.token) as client:
            await client.create_session(conversationId=on_0[0])
            await client.create_session(conversationId=on_1[0])
            # A third, held by either worker, would be one too many for alice.
            for cid in (on_0[1], on_1[1]):
                answer = await client.http.post("/realtime/session", json={"conversationId": cid})
                assert answer.status_code == 429, answer.text
                assert answer.json()["error"]["code"] == "quota_exceeded"
            await client.end(on_0[0])
            await client.end(on_1[0])

            # Six starting at once on both workers: never more than two get through.
            tries = on_0[2:5] + on_1[2:5]
            answers = await asyncio.gather(
                *(client.http.post("/realtime/session", json={"conversationId": c}) for c in tries)
            )
            statuses = sorted(a.status_code for a in answers)
            assert 1 <= statuses.count(201) <= 2, statuses
            assert set(statuses) <= {201, 429}
    finally:
        assert _stop(cluster) == 0


# -- stopping and failing ----------------------------------------------------------------------


async def test_sigterm_ends_every_session_on_every_worker_and_exits_0(tmp_path: Path) -> None:
    cluster = await asyncio.to_thread(_start, tmp_path)
    try:
        async with VoxrelayClient(cluster.url, cluster.token) as client:

            async def listen() -> tuple[EventReader, str]:
                reader = EventReader(client.events())
                started = await reader.wait_for("conversation_started")
                return reader, started.data["conversationId"]

            listening = await _on_both_workers(cluster, 8, listen, lambda each: each[1])
            cluster.process.send_signal(signal.SIGTERM)
            for reader, _ in listening:
                ended = await reader.wait_for("conversation_ended", timeout=20)
                assert ended.data["reason"] == "server_shutdown"
        assert cluster.process.wait(30) == 0
    finally:
        _stop(cluster)


async def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    cluster = await asyncio.to_thread(_start, tmp_path)
    try:
        pids = _worker_pids(cluster.process.pid)
        assert len(pids) == WORKERS
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _worker_pids(cluster.process.pid)
            if len(now) == WORKERS and pids[0] not in now:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the worker was not started again")
        await asyncio.to_thread(_until_both_answer, cluster.url)
        _, types = await _http_conversation(cluster)
        assert types[-1] == "conversation_ended"
    finally:
        assert _stop(cluster) == 0


def _until_both_answer(url: str) -> None:
    deadline = time.monotonic() + 30
    while _workers_answering(url) != {"0", "1"}:
        assert time.monotonic() < deadline, "a worker is not answering"
        time.sleep(0.2)


def _worker_pids(parent: int) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    command = ["pgrep", "-P", str(parent), "-f", "spawn_main"]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    return [int(pid) for pid in out.stdout.split()]
