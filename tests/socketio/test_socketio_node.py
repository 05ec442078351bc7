"""The Socket.IO transport driven by the npm socket.io-client, v4 and v3
(tests/socketio/js/client.mjs), as browsers and React Native apps use it."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import RunningServer, read_pcm, speech_file

from voxrelay.client import VoxrelayClient

JS_DIR = Path(__file__).resolve().parent / "js"
CLIENT = JS_DIR / "client.mjs"
PACKAGES = {"v4": "socket.io-client", "v3": "socket.io-client-v3"}


@pytest.fixture(scope="session")
def node_client() -> Path:
    """client.mjs with its node_modules, installed once per test session."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the npm socket.io-client")
    if not all(
        (JS_DIR / "node_modules" / name / "package.json").exists() for name in PACKAGES.values()
    ):
        command = "ci" if (JS_DIR / "package-lock.json").exists() else "install"
        result = subprocess.run(
            [npm, command, "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm {command} failed:\n{result.stdout}\n{result.stderr}"
    return CLIENT


async def _run_client(
    server: RunningServer, token: str, session_id: str, version: str, transports: str
) -> tuple[int, list[dict[str, Any]], str]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENT),
        server.url,
        token,
        session_id,
        version,
        transports,
        str(speech_file("goforward.raw")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        raise
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return process.returncode or 0, lines, err.decode()


@pytest.mark.parametrize(
    ("version", "transports"),
    [
        ("v4", ""),  # the default: long-polling first, then the upgrade to websocket
        ("v3", ""),
        ("v4", "websocket"),
        ("v4", "polling"),
        ("v3", "polling"),
    ],
)
async def test_npm_client_text_and_spoken_turns(
    node_client: Path,
    server: RunningServer,
    client: VoxrelayClient,
    version: str,
    transports: str,
) -> None:
    created = await client.create_session()
    token = await server.token("browser", "alice")
    code, lines, stderr = await _run_client(server, token, created["id"], version, transports)
    assert code == 0, f"client failed ({code}):\n{lines}\n{stderr}"
    assert lines[-1] == {"done": True}
    events = [(line["event"], line["data"]) for line in lines if "event" in line]
    acks = {line["ack"]: line["data"] for line in lines if "ack" in line}
    names = [name for name, _ in events]
    transport = next(line["transport"] for line in lines if "transport" in line)
    assert transport == (transports or "websocket")

    assert names[0] == "connected" and events[0][1]["clientId"]
    assert events[1] == (
        "session-joined",
        {
            "sessionId": created["id"],
            "conversationId": created["conversationId"],
            "status": "active",
            "inputSampleRate": 16000,
            "outputSampleRate": 24000,
            "turnDetection": "server_vad",
        },
    )
    assert acks["join-session"] == {"ok": True, **events[1][1]}
    assert acks["text-message"]["ok"] is True
    assert acks["end-session"] == {
        "ok": True,
        "conversationId": created["conversationId"],
        "status": "ended",
    }
    assert "error" not in names

    finals = [data for name, data in events if name == "transcript" and data.get("final")]
    assert [(t["role"], t["text"]) for t in finals][:2] == [
        ("user", "hello from node"),
        ("assistant", "You said: hello from node"),
    ]
    assert finals[0]["itemId"] == acks["text-message"]["itemId"]
    # The spoken turn: VAD events, the user's transcript, the answer's audio.
    started = next(data for name, data in events if name == "speech-started")
    stopped = next(data for name, data in events if name == "speech-stopped")
    assert started == stopped
    assert finals[2]["role"] == "user" and finals[2]["itemId"] == stopped["itemId"]
    assert finals[3]["text"] == f"You said: {finals[2]['text']}"
    done = [data for name, data in events if name == "response-done"]
    assert [d["status"] for d in done] == ["completed", "completed"]
    audio = [data for name, data in events if name == "ai-audio"]
    assert audio and all(a["sampleRate"] == 24000 for a in audio)
    spoken = sum(a["audioBytes"] for a in audio if a["responseId"] == done[1]["responseId"])
    speech, rate = read_pcm("goforward.raw")
    assert 2.0 < spoken / 2 / 24000 < len(speech) / 2 / rate + 1.2
    assert names[-1] == "session-ended"
    assert events[-1][1] == {"conversationId": created["conversationId"], "reason": "client_end"}

    messages = (await client.conversation(created["conversationId"]))["messages"]
    assert [(m["role"], m["text"]) for m in messages] == [(t["role"], t["text"]) for t in finals]


async def test_npm_client_is_refused_with_a_bad_token(
    node_client: Path, server: RunningServer
) -> None:
    code, lines, _ = await _run_client(server, "vxr_wrong", "sess_x", "v4", "")
    assert code == 2
    refused = next(line["data"] for line in lines if line.get("event") == "connect_error")
    assert refused["data"]["code"] == "unauthorized"
    assert refused["message"] == refused["data"]["message"]
