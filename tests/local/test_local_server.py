"""The watch flow end to end through a real server with the offline ``local``
provider: real speech uploaded over HTTP, heard, answered with speech over SSE."""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np
from harness import EventReader, RunningServer, paced, read_pcm, silence

from voxrelay.client import VoxrelayClient


async def test_spoken_turn_through_the_server(launch: Callable[..., RunningServer]) -> None:
    server = launch(provider="local")
    speech, rate = read_pcm("goforward.raw")
    async with VoxrelayClient(server.url, await server.token("watch", "alice")) as client:
        reader = EventReader(client.events(inputSampleRate=rate, outputSampleRate=24000))
        started = await reader.wait_for("conversation_started")
        conversation_id = started.data["conversationId"]
        await client.upload(conversation_id, paced(speech + silence(1000, rate), rate, speed=4))
        stopped = await reader.wait_for("speech_stopped", timeout=20)
        heard = await reader.wait_for(
            "transcript", lambda e: e.data.get("role") == "user" and e.data.get("final")
        )
        assert "go forward ten meters" in heard.data["text"]
        assert heard.data["itemId"] == stopped.data["itemId"]
        response = await reader.wait_for("response_started")
        done = await reader.wait_for("response_done")
        assert done.data == {"responseId": response.data["responseId"], "status": "completed"}
        answer = await reader.wait_for(
            "transcript", lambda e: e.data.get("role") == "assistant" and e.data.get("final")
        )
        assert answer.data["text"] == "You said: go forward ten meters"
        audio = b"".join(base64.b64decode(e.data["audio"]) for e in reader.of_type("audio"))
        samples = np.frombuffer(audio, dtype="<i2").astype(np.float64)
        assert 1.0 < len(samples) / 24000 < 10.0  # espeak-ng's 22.05 kHz, resampled
        assert np.sqrt(np.mean(samples * samples)) > 500  # speech, not silence
        await client.end(conversation_id)
        await reader.wait_for("conversation_ended")
        messages = (await client.conversation(conversation_id))["messages"]
        assert [(m["role"], m["text"]) for m in messages] == [
            ("user", "go forward ten meters"),
            ("assistant", "You said: go forward ten meters"),
        ]
        # Offline, nothing is billed by the token; the audio each way is still counted.
        usage = (await client.conversation(conversation_id))["usage"]
        assert usage["inputTokens"] == usage["outputTokens"] == 0
        assert usage["responses"] == 1
        assert abs(usage["audioOutSeconds"] - len(samples) / 24000) < 0.1
        assert abs(usage["audioInSeconds"] - (len(speech) / 2 / rate + 1.0)) < 0.1
        await reader.close()
