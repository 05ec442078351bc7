"""Two ``voxrelay serve`` nodes behind a real nginx, configured with the file the
deployment guide ships (``docs/deploy/nginx.conf``, placeholders filled in): no
stickiness, so any request may reach either node, and events, audio and
WebSocket upgrades pass through nginx without being held back."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from harness import EventReader, paced, read_pcm, silence
from services import require_program_or_skip
from test_cluster import Nodes, _cluster, _free_port, _messages, _tear_down, socketio_spoken_turn
from websockets.asyncio.client import connect as ws_connect

from voxrelay.client import VoxrelayClient

DOCS = Path(__file__).resolve().parents[2] / "docs"
NGINX_CONF = DOCS / "deploy" / "nginx.conf"
# The access log's format (docs/deploy/nginx.conf); $upstream_addr lists every
# node tried, "a, b" when the first failed.
_ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<target>\S+) [^"]*" (?P<status>\d+) .* upstream=(?P<upstream>.+) urt='
)


def render(template: str, listen: str, nodes: list[str]) -> str:
    """The shipped config with its placeholders filled in, as the guide says to."""
    text = template.replace("{{LISTEN}}", listen)
    for index, node in enumerate(nodes, 1):
        text = text.replace(f"{{{{NODE_{index}}}}}", node)
    left = re.findall(r"\{\{\w+\}\}", text)
    assert not left, f"placeholders left unfilled: {left}"
    return text


@dataclass
class Nginx:
    process: subprocess.Popen[str]
    url: str
    prefix: Path

    def log_offset(self) -> int:
        path = self.prefix / "logs" / "access.log"
        return path.stat().st_size if path.exists() else 0

    def requests(self, since: int = 0) -> list[tuple[str, str, int, str]]:
        """(method, path, status, node address) of each request nginx finished."""
        with (self.prefix / "logs" / "access.log").open("rb") as log:
            log.seek(since)
            lines = log.read().decode().splitlines()
        found = []
        for line in lines:
            match = _ACCESS_LINE.search(line)
            assert match, line
            path = match["target"].split("?", 1)[0]
            found.append((match["method"], path, int(match["status"]), match["upstream"]))
        return found

    def error_log(self) -> str:
        return _error_log(self.prefix)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is open
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _start_nginx(binary: str, prefix: Path, nodes: Nodes) -> Nginx:
    port = _free_port()
    upstreams = [node.url.removeprefix("http://") for node in nodes.nodes]
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(render(NGINX_CONF.read_text(), f"127.0.0.1:{port}", upstreams))
    command = [binary, "-p", str(prefix), "-e", str(prefix / "logs" / "error.log"), "-c", str(conf)]
    if os.geteuid() == 0:
        # As root nginx's workers would become nobody, who may not enter a private
        # temporary directory; the shipped file itself is left as it is.
        command += ["-g", "user root;"]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    output = (prefix / "nginx.out").open("w")
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, (prefix / "nginx.out").read_text() + _error_log(prefix)
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return Nginx(process, url, prefix)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("nginx did not start:\n" + _error_log(prefix))


def _error_log(prefix: Path) -> str:
    path = prefix / "logs" / "error.log"
    return path.read_text() if path.exists() else ""


@dataclass
class Balanced:
    nodes: Nodes
    nginx: Nginx

    @property
    def url(self) -> str:
        return self.nginx.url

    @property
    def token(self) -> str:
        return self.nodes.token

    def addresses(self) -> set[str]:
        return {node.url.removeprefix("http://") for node in self.nodes.nodes}


def _balanced(tmp: Path) -> Balanced:
    binary = require_program_or_skip("nginx", "nginx is not installed (apt-get install nginx)")
    nodes = asyncio.run(_cluster(tmp, 2))
    try:
        return Balanced(nodes, _start_nginx(binary, tmp / "nginx", nodes))
    except BaseException:
        asyncio.run(_tear_down(nodes))
        raise


def _stop(balanced: Balanced) -> None:
    balanced.nginx.stop()
    asyncio.run(_tear_down(balanced.nodes))
    errors = [
        line
        for line in balanced.nginx.error_log().splitlines()
        if re.search(r"\[(emerg|alert|crit)\]", line)
    ]
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    running = _balanced(tmp_path_factory.mktemp("nginx"))
    yield running
    _stop(running)


@pytest.fixture
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Balanced]:
    """Nodes and nginx of a test's own, for a test that stops a node."""
    running = _balanced(tmp_path_factory.mktemp("nginx-own"))
    yield running
    _stop(running)


def test_the_guide_shows_the_shipped_config() -> None:
    guide = (DOCS / "deployment.md").read_text()
    assert NGINX_CONF.read_text().strip() in guide, "docs/deployment.md shows another nginx.conf"


async def test_a_spoken_turn_streams_through_nginx_while_the_upload_is_still_open(
    balanced: Balanced,
) -> None:
    speech, rate = read_pcm("goforward.raw")
    since = balanced.nginx.log_offset()
    async with VoxrelayClient(balanced.url, balanced.token) as client:
        reader = EventReader(client.events(inputSampleRate=rate))  # server VAD
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        sent = 0
        heard_while_open: list[str] = []

        async def body() -> AsyncIterator[bytes]:
            """One chunked body that stays open until what it carried was heard:
            a proxy that read the body to its end before passing it on would keep
            these waits from ever ending."""
            nonlocal sent
            async for chunk in paced(speech, rate, speed=4):
                sent += len(chunk)
                yield chunk
            started = await reader.wait_for("speech_started", timeout=20)
            heard_while_open.append(started.type)
            async for chunk in paced(silence(1000, rate), rate, speed=4):
                sent += len(chunk)
                yield chunk
            final = await reader.wait_for(
                "transcript", lambda e: e.data["role"] == "user" and e.data.get("final"), timeout=20
            )
            heard_while_open.append(final.type)
            await reader.wait_for("audio", timeout=20)
            heard_while_open.append("audio")
            last = silence(20, rate)
            sent += len(last)
            yield last

        uploaded = await client.upload(cid, body())
        assert heard_while_open == ["speech_started", "transcript", "audio"]
        assert uploaded["bytesReceived"] == sent
        await reader.wait_for("response_done", timeout=20)
        await client.end(cid)
        ended = await reader.wait_for("conversation_ended")
        assert ended.data["reason"] == "client_end"
        ids = [e.id for e in reader.events]
        assert ids == list(range(1, len(ids) + 1)), "every event once, in order"
        await reader.close()
    messages = await _messages(balanced.url, balanced.token, cid, 2)
    assert [role for role, _ in messages] == ["user", "assistant"]
    served = balanced.nginx.requests(since)
    stream = [r for r in served if r[1] == "/realtime/stream"]
    upload = [r for r in served if r[1] == "/realtime/upload"]
    assert len(stream) == len(upload) == 1, served
    assert stream[0][2] == 200 and upload[0][2] == 200
    # least_conn: with the stream open on one node, the upload went to the other,
    # which passed every chunk on to the node holding the session.
    assert {stream[0][3], upload[0][3]} == balanced.addresses()


async def test_commit_text_and_end_through_nginx_reach_the_session_from_either_node(
    balanced: Balanced,
) -> None:
    speech, rate = read_pcm("goforward.raw")
    since = balanced.nginx.log_offset()
    async with VoxrelayClient(balanced.url, balanced.token) as client:
        session = await client.create_session(turnDetection="manual", inputSampleRate=rate)
        cid = session["conversationId"]
        await client.upload(cid, speech)
        await client.commit(cid)
        # Each answer stored before the next turn: a turn that comes sooner cuts the
        # answer still being spoken short, as a user talking over it would.
        await _messages(balanced.url, balanced.token, cid, 2)
        await client.text(cid, "and then turn left")
        await _messages(balanced.url, balanced.token, cid, 4)
        await client.text(cid, "and then stop")
        await _messages(balanced.url, balanced.token, cid, 6)
        assert (await client.get_session(session["id"]))["status"] == "active"
        assert (await client.end(cid))["status"] == "ended"
    messages = await _messages(balanced.url, balanced.token, cid, 6)
    assert [role for role, _ in messages] == ["user", "assistant"] * 3
    assert "turn left" in messages[3][1] and "stop" in messages[5][1]
    served = [r for r in balanced.nginx.requests(since) if r[1].startswith("/realtime/")]
    assert [(method, path) for method, path, _, _ in served] == [
        ("POST", "/realtime/session"),
        ("POST", "/realtime/upload"),
        ("POST", "/realtime/commit"),
        ("POST", "/realtime/text"),
        ("POST", "/realtime/text"),
        ("GET", f"/realtime/session/{session['id']}"),
        ("POST", "/realtime/end"),
    ]
    assert all(status in (200, 201) for _, _, status, _ in served), served
    # Nothing pins a client to a node: its requests were spread over both.
    assert {node for _, _, _, node in served} == balanced.addresses()


async def test_a_socketio_client_through_nginx_joins_a_session(balanced: Balanced) -> None:
    async with VoxrelayClient(balanced.url, balanced.token) as client:
        session = await client.create_session(turnDetection="manual")
    # WebSocket only: a long-polling Engine.IO session lives in one process, and
    # its polls would be spread over both nodes (see docs/deployment.md).
    await socketio_spoken_turn(balanced.url, balanced.token, session, transports=["websocket"])


async def test_the_openai_compatible_websocket_upgrades_through_nginx(balanced: Balanced) -> None:
    async with VoxrelayClient(balanced.url, balanced.token) as client:
        held = await client.create_session()
    url = balanced.url.replace("http://", "ws://") + "/v1/realtime"
    headers = {"Authorization": f"Bearer {balanced.token}"}
    async with ws_connect(
        f"{url}?model=gpt-realtime&conversationId={held['conversationId']}",
        additional_headers=headers,
    ) as ws:
        created = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert created["type"] == "session.created"
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "over the bridge"}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        deadline = time.monotonic() + 20
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            assert event["type"] != "error", event
            if event["type"] == "response.done":
                break
    async with VoxrelayClient(balanced.url, balanced.token) as client:
        await client.end(held["conversationId"])
    messages = await _messages(balanced.url, balanced.token, held["conversationId"], 2)
    assert messages[0] == ("user", "over the bridge")


async def test_a_node_that_drains_leaves_nginx_serving_every_request_from_the_other(
    own: Balanced,
) -> None:
    leaving, staying = own.nodes[0], own.nodes[1]
    async with VoxrelayClient(leaving.url, own.token) as direct:
        session = await direct.create_session(turnDetection="manual")
    cid = session["conversationId"]
    async with VoxrelayClient(own.url, own.token) as client:
        reader = EventReader(client.events(cid))
        await reader.wait_for("conversation_started")
        await client.text(cid, "remember the lighthouse")
        await reader.wait_for("response_done", timeout=20)
        assert leaving.stop() == 0
        ended = await reader.wait_for("conversation_ended", timeout=10)
        assert ended.data["reason"] == "server_shutdown"
        await reader.close()
        since = own.nginx.log_offset()
        # The conversation goes on through nginx, on the node that is left, remembered.
        again = await client.create_session(conversationId=cid, turnDetection="manual")
        assert again["id"] != session["id"]
        await client.text(cid, "what did I say?")
        speech, _ = read_pcm("goforward.raw")
        await client.upload(cid, speech)
        await client.commit(cid)
        assert (await client.end(cid))["status"] == "ended"
    messages = await _messages(own.url, own.token, cid, 6)
    assert messages[0] == ("user", "remember the lighthouse")
    assert messages[2] == ("user", "what did I say?")
    served = [r for r in own.nginx.requests(since) if r[1].startswith("/realtime/")]
    assert len(served) == 5 and all(status in (200, 201) for _, _, status, _ in served), served
    # A request nginx tried on the stopped node first was passed on to the other.
    address = staying.url.removeprefix("http://")
    assert all(node.split(", ")[-1] == address for _, _, _, node in served), served
