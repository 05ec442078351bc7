"""The Socket.IO transport driven by the npm socket.io-client, v4 and v3
(tests/socketio/js/client.mjs), as browsers and React Native apps use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import RunningServer, read_pcm
from node import run_client

from voxrelay.client import VoxrelayClient


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
    code, lines, stderr = await run_client(server, token, created["id"], version, transports)
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
    code, lines, _ = await run_client(server, "vxr_wrong", "sess_x", "v4", "")
    assert code == 2
    refused = next(line["data"] for line in lines if line.get("event") == "connect_error")
    assert refused["data"]["code"] == "unauthorized"
    assert refused["message"] == refused["data"]["message"]
