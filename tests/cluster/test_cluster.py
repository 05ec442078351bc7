"""Several ``voxrelay serve`` nodes sharing a real Redis and PostgreSQL: a session
lives on one node, and every request for it, on any node, reaches it there."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, read_pcm, silence
from openai_ws.realtime_ws_client import KEY, connect, conversation_id, text_item
from services import (
    REDIS_URL,
    create_postgres_database,
    drop_postgres_database,
    require_or_skip,
)

from voxrelay.client import ApiError, VoxrelayClient
from voxrelay.store import Store

VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))
# Short enough for the killed-node test, long enough that a busy 2-core machine
# does not miss a renewal (every third of it) and take a live member for dead.
LEASE_SECONDS = 2.0


@dataclass
class Node:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return self.process.returncode


@dataclass
class Nodes:
    database_url: str
    token: str
    tmp: Path
    nodes: list[Node] = field(default_factory=list)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def start(self, *args: str, **env: str) -> Node:
        node = _start_node(self.tmp, self.database_url, len(self.nodes), *args, **env)
        self.nodes.append(node)
        return node


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_node(tmp: Path, database_url: str, index: int, *args: str, **env: str) -> Node:
    port = _free_port()
    log = tmp / f"node-{index}.log"
    full = {
        **os.environ,
        "VOXRELAY_DATABASE_URL": database_url,
        "VOXRELAY_REDIS_URL": REDIS_URL,
        "VOXRELAY_LEASE_SECONDS": str(LEASE_SECONDS),
        "VOXRELAY_PROVIDER": "echo",
        "VOXRELAY_LOG_FORMAT": "text",
        **env,
    }
    process = subprocess.Popen(
        [VOXRELAY, "serve", "--port", str(port), *args],
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
            if httpx.get(url + "/readyz").status_code == 200:
                return Node(process, url, log)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the node did not start:\n" + log.read_text())


async def _cluster(tmp: Path, count: int) -> Nodes:
    require_or_skip("postgresql", "PostgreSQL does not answer on 127.0.0.1:5432")
    require_or_skip("redis", "Redis does not answer on 127.0.0.1:6379")
    database_url = await create_postgres_database()
    store = await Store.open(database_url)
    try:
        token = (await store.create_token("watch", "alice"))[1]
    finally:
        await store.close()
    nodes = Nodes(database_url, token, tmp)
    for _ in range(count):
        nodes.start()
    return nodes


async def _tear_down(nodes: Nodes) -> None:
    for node in nodes.nodes:
        node.stop()
    await drop_postgres_database(nodes.database_url)
    for node in nodes.nodes:
        log = node.log.read_text()
        assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    nodes = asyncio.run(_cluster(tmp_path_factory.mktemp("cluster"), 2))
    yield nodes
    asyncio.run(_tear_down(nodes))


@pytest.fixture
async def fresh(tmp_path: Path) -> AsyncIterator[Nodes]:
    """Nodes of a test's own, for tests that stop or kill one."""
    nodes = await _cluster(tmp_path, 2)
    try:
        yield nodes
    finally:
        for node in nodes.nodes:
            if node.process.poll() is None:
                node.stop()
        await drop_postgres_database(nodes.database_url)


async def _messages(url: str, token: str, cid: str, count: int) -> list[tuple[str, str]]:
    async with VoxrelayClient(url, token) as client:
        for _ in range(250):
            messages = (await client.conversation(cid))["messages"]
            if len(messages) >= count:
                return [(m["role"], m["text"]) for m in messages]
            await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} messages stored: {messages}")


# -- one conversation across nodes -------------------------------------------------------------


async def test_the_stream_on_one_node_and_upload_commit_text_end_on_another(two: Nodes) -> None:
    speech, rate = read_pcm("goforward.raw")
    async with (
        VoxrelayClient(two[0].url, two.token) as a,
        VoxrelayClient(two[1].url, two.token) as b,
    ):
        reader = EventReader(a.events(inputSampleRate=rate, turnDetection="manual"))
        started = await reader.wait_for("conversation_started")
        cid = started.data["conversationId"]
        uploaded = await b.upload(cid, speech)
        assert uploaded["bytesReceived"] == len(speech)
        await b.commit(cid)
        heard = await reader.wait_for(
            "transcript", lambda e: e.data["role"] == "user" and e.data.get("final"), timeout=20
        )
        await reader.wait_for("response_done", timeout=20)
        assert reader.of_type("audio"), "the answer's audio reached the stream on node A"
        await b.text(cid, "and then turn left")
        await reader.wait_for(
            "transcript",
            lambda e: e.data["role"] == "assistant" and "turn left" in e.data.get("text", ""),
            timeout=20,
        )
        ended = await b.end(cid)
        assert ended["status"] == "ended"
        last = await reader.wait_for("conversation_ended")
        assert last.data["reason"] == "client_end"
        ids = [e.id for e in reader.events]
        assert ids == list(range(1, len(ids) + 1)), "every event once, in order"
        await reader.close()
    messages = await _messages(two[1].url, two.token, cid, 4)
    assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0][1] == heard.data["text"]


async def socketio_spoken_turn(
    url: str, token: str, session: dict[str, Any], **connect: Any
) -> None:
    """A Socket.IO client at ``url`` joins ``session`` (made elsewhere), speaks a turn,
    hears the answer and ends the session."""
    sio = socketio.AsyncClient()
    done, transcripts = asyncio.Event(), []

    async def on_done(data: dict[str, object]) -> None:
        done.set()

    async def on_transcript(data: dict[str, object]) -> None:
        transcripts.append(data)

    sio.on("response-done", on_done, namespace="/realtime")
    sio.on("transcript", on_transcript, namespace="/realtime")
    await sio.connect(url, namespaces=["/realtime"], auth={"token": token}, **connect)
    try:
        joined = await sio.call("join-session", {"sessionId": session["id"]}, namespace="/realtime")
        assert joined["ok"] and joined["conversationId"] == session["conversationId"], joined
        speech, rate = read_pcm("goforward.raw")
        assert rate == session["inputSampleRate"]
        for offset in range(0, len(speech), 640):
            await sio.emit("audio-chunk", speech[offset : offset + 640], namespace="/realtime")
        assert (await sio.call("commit-audio", {}, namespace="/realtime"))["ok"]
        await asyncio.wait_for(done.wait(), 20)
        assert (await sio.call("end-session", {}, namespace="/realtime"))["ok"]
    finally:
        await sio.disconnect()
    finals = [t for t in transcripts if t.get("final")]
    assert [t["role"] for t in finals] == ["user", "assistant"]
    messages = await _messages(url, token, session["conversationId"], 2)
    assert [role for role, _ in messages] == ["user", "assistant"]


async def test_a_socketio_client_on_one_node_joins_a_session_made_on_another(two: Nodes) -> None:
    async with httpx.AsyncClient(
        base_url=two[0].url, headers={"Authorization": f"Bearer {two.token}"}
    ) as http:
        response = await http.post("/realtime/session", json={"turnDetection": "manual"})
    await socketio_spoken_turn(two[1].url, two.token, response.json()["session"])


async def test_the_same_conversation_started_on_two_nodes_at_once_has_one_session(
    two: Nodes,
) -> None:
    for attempt in range(5):
        cid = f"conv_race{attempt}_{os.getpid()}"

        async def start(url: str, cid: str = cid) -> dict[str, object] | ApiError:
            async with VoxrelayClient(url, two.token) as client:
                try:
                    return await client.create_session(conversationId=cid)
                except ApiError as error:
                    return error

        results = await asyncio.gather(start(two[0].url), start(two[1].url))
        created = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, ApiError)]
        assert len(created) == 1, results
        assert [(r.status, r.code) for r in refused] == [(409, "conversation_busy")]
        async with VoxrelayClient(two[1].url, two.token) as client:
            await client.end(cid)


async def test_a_stream_resumes_with_last_event_id_on_the_other_node(two: Nodes) -> None:
    async with (
        VoxrelayClient(two[0].url, two.token) as a,
        VoxrelayClient(two[1].url, two.token) as b,
    ):
        first = EventReader(a.events(turnDetection="manual"))
        cid = (await first.wait_for("conversation_started")).data["conversationId"]
        await a.text(cid, "remember the lighthouse")
        await first.wait_for("response_done", timeout=20)
        await first.close()
        seen = first.events[-1].id
        # While nobody listens, the conversation goes on.
        await b.text(cid, "and the harbour")
        await asyncio.sleep(0.5)
        resumed = EventReader(b.events(cid, last_event_id=seen))
        said = await resumed.wait_for(
            "transcript",
            lambda e: e.data["role"] == "assistant" and "harbour" in e.data.get("text", ""),
            timeout=20,
        )
        assert said.data["final"] is True
        await resumed.wait_for("response_done", timeout=20)
        ids = [e.id for e in resumed.events]
        assert ids[0] == seen + 1 and ids == list(range(seen + 1, seen + 1 + len(ids)))
        assert "error" not in [e.type for e in resumed.events]
        await b.end(cid)
        await resumed.close()


async def test_a_commit_on_the_owner_comes_after_an_upload_through_the_other_node(
    two: Nodes,
) -> None:
    # The upload's answer means the owner has the audio: the commit that follows at
    # once, straight to the owner, cannot overtake audio still on its way from B.
    speech, rate = read_pcm("goforward.raw")
    # A second of speech a turn: fifteen of them stay within the upload burst allowed.
    second = speech[: 2 * rate]
    async with (
        VoxrelayClient(two[0].url, two.token) as a,
        VoxrelayClient(two[1].url, two.token) as b,
    ):
        session = await a.create_session(turnDetection="manual", inputSampleRate=rate)
        cid = session["conversationId"]
        for _ in range(15):
            await b.upload(cid, second)
            await a.commit(cid)
        await a.end(cid)
    messages = await _messages(two[0].url, two.token, cid, 30)
    heard = [text for role, text in messages if role == "user"]
    assert heard == ["(1.00 seconds of audio)"] * 15


async def test_audio_too_fast_through_the_other_node_is_refused_as_on_the_owner(
    two: Nodes,
) -> None:
    # Far past the burst a session allows: refused on the node holding it, and the same
    # through the other one; the session goes on, on both.
    too_much = silence(25_000, 16000)
    async with (
        VoxrelayClient(two[0].url, two.token) as a,
        VoxrelayClient(two[1].url, two.token) as b,
    ):
        for first, other in ((a, b), (b, a)):
            session = await first.create_session(inputSampleRate=16000)
            cid = session["conversationId"]
            refused = []
            for client in (first, other):
                with pytest.raises(ApiError) as error:
                    await client.upload(cid, too_much)
                refused.append((error.value.status, error.value.code))
            assert refused == [(429, "audio_too_fast")] * 2
            assert (await other.get_session(session["id"]))["status"] == "active"
            await other.end(cid)


async def test_audio_too_fast_on_the_other_node_is_an_error_there_on_every_socket(
    two: Nodes,
) -> None:
    # Thirty seconds of audio at once, past the burst a session allows: the client on
    # B is told, as one on A would be, though its session lives on A.
    async with VoxrelayClient(two[0].url, two.token) as a:
        held = await a.create_session(turnDetection="manual", inputSampleRate=16000)
    sio = socketio.AsyncClient()
    await sio.connect(two[1].url, namespaces=["/realtime"], auth={"token": two.token})
    try:
        joined = await sio.call("join-session", {"sessionId": held["id"]}, namespace="/realtime")
        assert joined["ok"], joined
        second = silence(1000, 16000)
        acks = [await sio.call("audio-chunk", second, namespace="/realtime") for _ in range(30)]
    finally:
        await sio.disconnect()
    refused = [ack["error"]["code"] for ack in acks if not ack["ok"]]
    assert refused and set(refused) == {"audio_too_fast"}, acks
    assert acks[0]["ok"], "the first seconds are within the burst"

    async with VoxrelayClient(two[0].url, two.token) as a:
        cid = (await a.create_session(turnDetection="manual"))["conversationId"]
    async with connect(two[1], two.token, conversationId=cid) as conversation:  # type: ignore[arg-type]
        await conversation.until("conversation.created")
        audio = base64.b64encode(silence(1000, 24000)).decode()
        for _ in range(30):
            await conversation.conn.input_audio_buffer.append(audio=audio)
        error = (await conversation.until("error"))[-1]
        assert error["error"]["code"] == "audio_too_fast"
        # The session goes on there.
        await conversation.conn.conversation.item.create(item=text_item("still here"))
        await conversation.conn.response.create()
        await conversation.until("response.done")


async def test_a_retried_seq_is_recognised_on_the_other_node(two: Nodes) -> None:
    async with (
        VoxrelayClient(two[0].url, two.token) as a,
        VoxrelayClient(two[1].url, two.token) as b,
    ):
        session = await a.create_session(inputSampleRate=16000)
        cid = session["conversationId"]
        chunk = silence(200, 16000)
        first = await b.upload(cid, chunk, seq=3)
        retried = await a.upload(cid, b"\0\0", seq=3)
        assert first["bytesReceived"] == retried["bytesReceived"] == len(chunk)
        await a.end(cid)


async def test_an_unknown_or_foreign_conversation_answers_the_same_on_every_node(
    two: Nodes,
) -> None:
    async with VoxrelayClient(two[0].url, two.token) as a:
        cid = (await a.create_session())["conversationId"]
    store = await Store.open(two.database_url)
    try:
        bob = (await store.create_token("phone", "bob"))[1]
    finally:
        await store.close()
    for node in two.nodes:
        async with VoxrelayClient(node.url, bob) as client:
            for target in (cid, "conv_nobody_has_this"):
                with pytest.raises(ApiError) as refused:
                    await client.commit(target)
                assert (refused.value.status, refused.value.code) == (404, "not_found")
    async with VoxrelayClient(two[1].url, two.token) as b:
        await b.end(cid)


# -- nodes that stop ----------------------------------------------------------------------------


async def test_a_killed_node_ends_its_sessions_on_the_others_and_nothing_said_is_lost(
    fresh: Nodes,
) -> None:
    owner, other = fresh[0], fresh[1]
    async with VoxrelayClient(owner.url, fresh.token) as a:
        session = await a.create_session(turnDetection="manual")
    cid = session["conversationId"]
    async with VoxrelayClient(other.url, fresh.token) as b:
        reader = EventReader(b.events(cid))
        await reader.wait_for("conversation_started")
        await b.text(cid, "remember the lighthouse")
        await reader.wait_for("response_done", timeout=20)
        # Finished turns are stored as they finish, not when the session ends.
        stored = await _messages(other.url, fresh.token, cid, 2)
        owner.kill()
        killed_at = time.monotonic()
        ended = await reader.wait_for("conversation_ended", timeout=LEASE_SECONDS * 10)
        assert ended.data["reason"] == "upstream_failed"
        assert time.monotonic() - killed_at < LEASE_SECONDS * 5
        await reader.close()
        messages = await _messages(other.url, fresh.token, cid, 2)
        assert messages == stored
        assert [role for role, _ in messages] == ["user", "assistant"]
        assert messages[0] == ("user", "remember the lighthouse")
        # The conversation resumes on the node that is left.
        resumed = EventReader(b.events(cid))
        started = await resumed.wait_for("conversation_started", timeout=LEASE_SECONDS * 10)
        assert started.data["sessionId"] != session["id"]
        await b.text(cid, "what did I say?")
        await resumed.wait_for("response_done", timeout=20)
        await b.end(cid)
        await resumed.close()


async def test_a_node_that_starts_does_not_end_the_sessions_of_others(fresh: Nodes) -> None:
    async with VoxrelayClient(fresh[0].url, fresh.token) as a:
        session = await a.create_session()
        third = fresh.start()
        async with VoxrelayClient(third.url, fresh.token) as c:
            assert (await c.get_session(session["id"]))["status"] == "active"
        assert (await a.get_session(session["id"]))["status"] == "active"
        await a.text(session["conversationId"], "still here")
        await a.end(session["conversationId"])


async def test_sigterm_on_one_node_ends_its_own_sessions_and_the_others_keep_serving(
    fresh: Nodes,
) -> None:
    leaving, staying = fresh[0], fresh[1]
    async with (
        VoxrelayClient(leaving.url, fresh.token) as a,
        VoxrelayClient(staying.url, fresh.token) as b,
    ):
        held_there = await a.create_session()
        held_here = await b.create_session()
        watcher = EventReader(b.events(held_there["conversationId"]))
        await watcher.wait_for("conversation_started")
        assert leaving.stop() == 0
        ended = await watcher.wait_for("conversation_ended", timeout=10)
        assert ended.data["reason"] == "server_shutdown"
        await watcher.close()
        await b.text(held_here["conversationId"], "still here")
        again = await b.create_session(conversationId=held_there["conversationId"])
        assert again["status"] == "active"
        await b.end(held_here["conversationId"])
        await b.end(held_there["conversationId"])


# -- the OpenAI-compatible WebSocket on a node that does not hold the session --------------------


async def test_the_compatible_websocket_speaks_for_a_session_held_by_another_node(
    two: Nodes,
) -> None:
    async with VoxrelayClient(two[0].url, two.token) as a:
        cid = (await a.create_session(turnDetection="manual"))["conversationId"]
    async with connect(two[1], two.token, conversationId=cid) as conversation:  # type: ignore[arg-type]
        await conversation.until("conversation.created")
        assert conversation_id(conversation) == cid
        await conversation.conn.conversation.item.create(item=text_item("remember the harbour"))
        await conversation.conn.response.create()
        done = await conversation.until("response.done")
        assert done[-1]["response"]["status"] == "completed"
    assert conversation.problems == []
    messages = await _messages(two[0].url, two.token, cid, 2)
    assert messages[0] == ("user", "remember the harbour")


async def test_pass_through_reaches_the_upstream_of_a_session_held_by_another_node(
    tmp_path: Path,
) -> None:
    with FakeRealtimeServer("ga", api_key=KEY) as fake:
        nodes = await _cluster(tmp_path, 0)
        try:
            for _ in range(2):
                nodes.start(
                    VOXRELAY_PROVIDER="openai",
                    VOXRELAY_OPENAI_URL=fake.url,
                    OPENAI_API_KEY=KEY,
                )
            async with VoxrelayClient(nodes[0].url, nodes.token) as a:
                cid = (await a.create_session(turnDetection="manual"))["conversationId"]
            async with connect(nodes[1], nodes.token, conversationId=cid) as conversation:  # type: ignore[arg-type]
                opening = await conversation.until("session.created", "conversation.created")
                assert [e["type"] for e in opening] == ["session.created", "conversation.created"]
                assert conversation_id(conversation) == cid
                item = text_item("my name is Dana", "m_1")
                await conversation.conn.conversation.item.create(item=item)
                await conversation.conn.response.create()
                turn = await conversation.until("response.done")
                assert turn[-1]["response"]["status"] == "completed"
                said = next(e for e in turn if e["type"] == "response.output_audio_transcript.done")
                assert said["transcript"] == fake.reply("my name is Dana")
                assert any(e["type"] == "response.output_audio.delta" for e in turn)
            assert conversation.problems == []
            assert len(fake.connections) == 1, "one upstream link, held by the first node"
            messages = await _messages(nodes[0].url, nodes.token, cid, 2)
            assert messages == [
                ("user", "my name is Dana"),
                ("assistant", fake.reply("my name is Dana")),
            ]
        finally:
            await _tear_down(nodes)
    assert fake.validation_errors == []


async def test_nodes_of_several_workers_each_serve_every_conversation(tmp_path: Path) -> None:
    nodes = await _cluster(tmp_path, 0)
    try:
        for _ in range(2):
            nodes.start("--workers", "2")
        speech, rate = read_pcm("goforward.raw")

        async def conversation(holder: Node, other: Node) -> str:
            async with (
                VoxrelayClient(holder.url, nodes.token) as a,
                VoxrelayClient(other.url, nodes.token) as b,
            ):
                reader = EventReader(a.events(inputSampleRate=rate, turnDetection="manual"))
                cid = (await reader.wait_for("conversation_started")).data["conversationId"]
                await b.upload(cid, speech)
                await b.commit(cid)
                await reader.wait_for("response_done", timeout=30)
                await b.text(cid, "and then turn left")
                await reader.wait_for(
                    "transcript",
                    lambda e: e.data["role"] == "assistant" and "left" in e.data.get("text", ""),
                    timeout=30,
                )
                await b.end(cid)
                assert (await reader.wait_for("conversation_ended")).data["reason"] == "client_end"
                await reader.close()
            return cid

        cids = await asyncio.gather(
            *(conversation(nodes[n % 2], nodes[(n + 1) % 2]) for n in range(8))
        )
        for cid in cids:
            messages = await _messages(nodes[0].url, nodes.token, cid, 4)
            assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant"]
    finally:
        await _tear_down(nodes)


async def test_a_holder_puts_back_the_leases_redis_lost(two: Nodes) -> None:
    import redis.asyncio

    async with VoxrelayClient(two[0].url, two.token) as a:
        session = await a.create_session(turnDetection="manual")
    cid = session["conversationId"]
    shared = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        holder = await shared.get(f"voxrelay:holder:{cid}")
        assert holder is not None
        # Redis forgets (restarted empty): the holder's next renewal puts it back.
        await shared.delete(f"voxrelay:holder:{cid}", f"voxrelay:holder:{session['id']}")
        for _ in range(50):
            if await shared.get(f"voxrelay:holder:{cid}") == holder:
                break
            await asyncio.sleep(LEASE_SECONDS / 10)
        assert await shared.get(f"voxrelay:holder:{cid}") == holder
        assert await shared.get(f"voxrelay:holder:{session['id']}") == holder
    finally:
        await shared.aclose()
    async with VoxrelayClient(two[1].url, two.token) as b:
        await b.text(cid, "found again")
        await b.end(cid)
    messages = await _messages(two[0].url, two.token, cid, 2)
    assert messages[0] == ("user", "found again")
