"""`voxrelay serve`'s logs, read from the stderr of a real process: one JSON object
per line (or text with ``--log-format text``), the conversation and session on the
lines about them, and no secret anywhere."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import EventReader
from websockets.asyncio.client import connect as ws_connect

from voxrelay.client import ApiError, VoxrelayClient
from voxrelay.logs import JsonFormatter, TextFormatter, bind, redact

VOXRELAY = str(Path(sys.executable).with_name("voxrelay"))
OPENAI_KEY = "sk-fake-openai-key-0123456789abcdef"
AZURE_KEY = "fake-azure-key-0123456789abcdef"
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.env = {
            **os.environ,
            "VOXRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'logs.db'}",
            "VOXRELAY_PROVIDER": "echo",
            "VOXRELAY_LOG_LEVEL": "info",
            "OPENAI_API_KEY": OPENAI_KEY,
            "AZURE_OPENAI_API_KEY": AZURE_KEY,
        }
        self.env.pop("VOXRELAY_LOG_FORMAT", None)
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.stderr_path = tmp_path / "stderr.log"
        self._stderr = self.stderr_path.open("w")
        self.process = subprocess.Popen(
            [VOXRELAY, "serve", "--port", str(port), *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            text=True,
        )

    def token(self) -> str:
        created = subprocess.run(
            [VOXRELAY, "token", "create", "--device", "kitchen-watch", "--user", "alice"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return created.stdout.strip().splitlines()[-1]

    async def healthy(self) -> None:
        async with httpx.AsyncClient(base_url=self.url) as http:
            for _ in range(400):
                assert self.process.poll() is None, self.stderr_path.read_text()
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("server did not become healthy")

    async def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, self.process.wait, 20)
        assert code == 0
        self._stderr.close()
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(*args: str) -> Served:
        served = Served(tmp_path, *args)
        started.append(served)
        return served

    yield start
    for served in started:
        served.kill()


async def _conversation(served: Served, token: str) -> tuple[str, str]:
    """A spoken and a typed turn with ``?access_token=`` on the stream, a refused token
    over REST, and a WebSocket with ``?access_token=``; returns the stream's ids."""
    async with VoxrelayClient(served.url, None) as browser:
        reader = EventReader(browser.events(access_token=token))
        started = await reader.wait_for("conversation_started")
        conversation_id = started.data["conversationId"]
        session_id = started.data["sessionId"]
        async with VoxrelayClient(served.url, token) as client:
            # 200 ms loud, 600 ms quiet at 24 kHz: the echo provider hears a turn.
            await client.upload(conversation_id, b"\x00\x10" * 4800 + b"\x00\x00" * 14400)
            spoken = await reader.wait_for("response_done")
            await client.text(conversation_id, "hello from the log test")
            await reader.wait_for("response_done", lambda e: e.id > spoken.id)
            await client.end(conversation_id)
        await reader.wait_for("conversation_ended")
        await reader.close()
    async with VoxrelayClient(served.url, "vxr_" + "x" * 43) as intruder:
        with pytest.raises(ApiError) as refused:
            await intruder.conversations()
        assert refused.value.status == 401
    ws_url = served.url.replace("http://", "ws://") + f"/v1/realtime?access_token={token}"
    async with ws_connect(ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
    return conversation_id, session_id


async def test_serve_logs_json_lines_with_ids_and_no_secrets(serve: Any) -> None:
    served: Served = serve()
    await served.healthy()
    token = served.token()
    conversation_id, session_id = await _conversation(served, token)
    stderr = await served.stop()

    lines = [json.loads(line) for line in stderr.splitlines()]  # each line is one object
    assert lines
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys(), line
        assert line["ts"].endswith("Z")
    assert token not in stderr
    assert token.removeprefix("vxr_") not in stderr
    assert OPENAI_KEY not in stderr
    assert AZURE_KEY not in stderr
    assert not BASE64_RUN.search(stderr)

    def one(message: str, **fields: Any) -> dict[str, Any]:
        found = [
            line
            for line in lines
            if line["message"] == message and all(line.get(k) == v for k, v in fields.items())
        ]
        assert len(found) == 1, (message, fields, [x["message"] for x in lines])
        return found[0]

    ids = {"conversation_id": conversation_id, "session_id": session_id}
    opened = one("session started", **ids)
    assert opened["transport"] == "sse"
    assert opened["device"] == "kitchen-watch"
    assert opened["provider"] == "echo"
    ended = one("session ended", **ids)
    assert ended["reason"] == "client_end"
    assert ended["messages"] == 4  # two turns, each a user message and an answer
    assert ended["duration_s"] > 0
    assert one("upstream connected", conversation_id=conversation_id)["provider"] == "echo"

    refused = one("authentication refused: the device token is unknown or revoked")
    assert refused["level"] == "warning"
    assert refused["transport"] == "http"
    assert "device" not in refused

    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    stream = next(line for line in access if line["path"].startswith("/realtime/stream"))
    assert "access_token=[redacted]" in stream["path"]
    assert stream["status"] == 200
    assert stream["device"] == "kitchen-watch"
    assert any(line["status"] == 401 for line in access)
    upgrade = [line for line in lines if "WebSocket /v1/realtime" in line["message"]]
    assert upgrade and all("access_token=[redacted]" in line["message"] for line in upgrade)
    # The WebSocket's own session, ended when the socket closed.
    websocket = [line for line in lines if line.get("transport") == "websocket"]
    assert any(line["message"] == "session started" for line in websocket)


async def test_serve_logs_text_when_asked(serve: Any) -> None:
    served: Served = serve("--log-format", "text")
    await served.healthy()
    token = served.token()
    conversation_id, _ = await _conversation(served, token)
    stderr = await served.stop()

    assert not stderr.lstrip().startswith("{")
    assert token not in stderr
    assert OPENAI_KEY not in stderr
    started = [line for line in stderr.splitlines() if "session started" in line]
    assert any(f"conversation_id={conversation_id}" in line for line in started)
    assert "access_token=[redacted]" in stderr


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "VOXRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = subprocess.run(
        [VOXRELAY, "serve", "--log-format", "xml"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "log format" in result.stderr


@pytest.mark.parametrize(
    "secret",
    [
        "GET /realtime/stream?conversationId=c&access_token=vxr_abcdefghijklmnop HTTP/1.1",
        "Authorization: Bearer vxr_abcdefghijklmnop",
        "headers {'api-key': 'abcdefghijklmnop'}",
        "subprotocols ['realtime', 'openai-insecure-api-key.vxr_abcdefghijklmnop']",
        'OPENAI_API_KEY="sk-abcdefghijklmnop"',
        '{"type":"input_audio_buffer.append","audio":"' + "QUJD" * 100 + '"}',
    ],
)
def test_redaction(secret: str) -> None:
    redacted = redact(secret)
    assert "abcdefghijklmnop" not in redacted
    assert "QUJDQUJD" not in redacted


def test_formatters_take_fields_from_the_context_and_extra() -> None:
    record = logging.LogRecord(
        "voxrelay.test", logging.INFO, __file__, 1, "turn %s", ("done",), None
    )
    record.reason = "client_end"
    record.session_id = "sess_extra"

    def format_in_context(formatter: logging.Formatter) -> str:
        bind(conversation_id="conv_1", session_id="sess_context", device="watch")
        return formatter.format(record)

    import contextvars

    line = json.loads(contextvars.copy_context().run(format_in_context, JsonFormatter()))
    assert line["message"] == "turn done"
    assert line["level"] == "info"
    assert line["conversation_id"] == "conv_1"
    assert line["session_id"] == "sess_extra"  # extra= wins over the context
    assert line["device"] == "watch"
    assert line["reason"] == "client_end"
    text = contextvars.copy_context().run(format_in_context, TextFormatter())
    assert "turn done [conversation_id=conv_1" in text
