"""HTTP streaming for watches: SSE out, streamed upload in, against the echo provider."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import EventReader, RunningServer, paced, read_pcm, silence, wait_until

from voxrelay.client import ApiError, VoxrelayClient
from voxrelay.events import AudioDelta
from voxrelay.providers.echo import EchoProvider


async def _open(client: VoxrelayClient, **params: object) -> tuple[EventReader, str]:
    reader = EventReader(client.events(**params))  # type: ignore[arg-type]
    started = await reader.wait_for("conversation_started")
    return reader, started.data["conversationId"]


async def test_stream_headers_and_first_event(server: RunningServer) -> None:
    token = await server.token()
    async with httpx.AsyncClient(base_url=server.url) as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.stream("GET", "/realtime/stream", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            lines = []
            async for line in response.aiter_lines():
                if not line:
                    break
                lines.append(line)
    fields = dict(line.split(": ", 1) for line in lines)
    assert fields["id"] == "1"
    assert fields["event"] == "conversation_started"
    data = json.loads(fields["data"])
    assert data["conversationId"].startswith("conv_")
    assert data["sessionId"].startswith("sess_")
    # A session the stream starts defaults to the watch's 24 kHz both ways.
    assert (data["inputSampleRate"], data["outputSampleRate"]) == (24000, 24000)


async def test_keepalive_comment_during_silence(launch) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = launch(keepalive_seconds=0.2)
    token = await server.token()
    async with httpx.AsyncClient(base_url=server.url) as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.stream("GET", "/realtime/stream", headers=headers) as response:

            async def first_comment() -> str:
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        return line
                return ""

            assert await asyncio.wait_for(first_comment(), 5) == ": keepalive"


async def test_spoken_turn_with_real_speech(client: VoxrelayClient) -> None:
    speech, rate = read_pcm("goforward.raw")
    reader, conversation_id = await _open(client, inputSampleRate=rate, outputSampleRate=48000)
    upload = await client.upload(
        conversation_id, paced(speech + silence(800, rate), rate, speed=20)
    )
    assert upload["bytesReceived"] == len(speech) + len(silence(800, rate))
    await reader.wait_for("speech_started")
    stopped = await reader.wait_for("speech_stopped")
    heard = await reader.wait_for("transcript", lambda e: e.data.get("role") == "user")
    assert heard.data["final"] is True
    assert heard.data["itemId"] == stopped.data["itemId"]
    started = await reader.wait_for("response_started")
    done = await reader.wait_for("response_done")
    assert done.data == {"responseId": started.data["responseId"], "status": "completed"}
    answer = await reader.wait_for(
        "transcript", lambda e: e.data.get("role") == "assistant" and e.data.get("final")
    )
    assert answer.data["text"].startswith("You said:")
    # The echo answers with the user's own audio, here resampled 16 kHz -> 48 kHz.
    audio = b"".join(base64.b64decode(e.data["audio"]) for e in reader.of_type("audio"))
    assert all(e.data["responseId"] == started.data["responseId"] for e in reader.of_type("audio"))
    spoken_seconds = len(audio) / 2 / 48000
    assert 2.0 < spoken_seconds < len(speech) / 2 / rate + 1.2
    ids = [e.id for e in reader.events]
    assert ids == list(range(1, len(ids) + 1))
    await client.end(conversation_id)
    ended = await reader.wait_for("conversation_ended")
    assert ended.data == {"conversationId": conversation_id, "reason": "client_end"}
    assert reader.events[-1] is ended
    await asyncio.wait_for(reader._task, 5)  # the stream closes after the last event
    messages = (await client.conversation(conversation_id))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["text"] == heard.data["text"]
    assert messages[1]["text"] == answer.data["text"]


async def test_upload_is_forwarded_while_the_body_still_arrives(client: VoxrelayClient) -> None:
    speech, rate = read_pcm("goforward.raw")
    reader, conversation_id = await _open(client, inputSampleRate=rate)
    heard_speech = asyncio.Event()

    async def body():  # type: ignore[no-untyped-def]
        async for chunk in paced(speech, rate, speed=20):
            yield chunk
        # The body stays open until the server has acted on audio it already has.
        await asyncio.wait_for(heard_speech.wait(), 10)
        yield silence(800, rate)

    async def watch() -> None:
        await reader.wait_for("speech_started")
        heard_speech.set()

    watcher = asyncio.create_task(watch())
    result = await client.upload(conversation_id, body())
    await watcher
    assert result["bytesReceived"] == len(speech) + len(silence(800, rate))
    await reader.wait_for("response_done")
    await reader.close()


async def test_manual_turn_commit_and_push_to_talk(client: VoxrelayClient) -> None:
    speech, rate = read_pcm("goforward.raw")
    reader, conversation_id = await _open(client, inputSampleRate=rate, turnDetection="manual")
    await client.upload(conversation_id, speech)
    await asyncio.sleep(0.2)
    assert reader.of_type("speech_started") == []  # no server VAD in manual mode
    assert reader.of_type("response_started") == []
    assert await client.commit(conversation_id) == {
        "conversationId": conversation_id,
        "status": "committed",
    }
    heard = await reader.wait_for("transcript", lambda e: e.data.get("role") == "user")
    assert heard.data["text"] == f"({len(speech) / 2 / rate:.2f} seconds of audio)"
    await reader.wait_for("response_done")
    # Committing with nothing buffered is an upstream error event, not a broken stream.
    await client.commit(conversation_id)
    error = await reader.wait_for("error")
    assert error.data["code"] == "input_audio_buffer_commit_empty"
    await client.text(conversation_id, "still here?")
    await reader.wait_for("transcript", lambda e: e.data.get("text") == "You said: still here?")
    await reader.close()


async def test_text_turn_events(client: VoxrelayClient) -> None:
    reader, conversation_id = await _open(client)
    answer = await client.text(conversation_id, "hello watch")
    assert answer["conversationId"] == conversation_id
    mine = await reader.wait_for("transcript", lambda e: e.data.get("role") == "user")
    assert mine.data == {
        "role": "user",
        "itemId": answer["itemId"],
        "text": "hello watch",
        "final": True,
    }
    await reader.wait_for("response_done")
    deltas = [
        e.data["delta"]
        for e in reader.of_type("transcript")
        if e.data["role"] == "assistant" and "delta" in e.data
    ]
    assert "".join(deltas) == "You said: hello watch"
    await reader.close()


async def test_interrupt_cuts_the_stored_answer_to_what_was_heard(client: VoxrelayClient) -> None:
    reader, conversation_id = await _open(client)
    words = "one two three four five six seven eight nine ten"
    await client.text(conversation_id, words)
    done = await reader.wait_for("response_done")
    audio = b"".join(base64.b64decode(e.data["audio"]) for e in reader.of_type("audio"))
    total_ms = len(audio) / 2 / 24000 * 1000
    await client.interrupt(conversation_id, played_ms=int(total_ms / 2))
    cut = await reader.wait_for(
        "transcript",
        lambda e: e.data.get("final") and e.data["role"] == "assistant" and e.id > done.id,
    )
    full = f"You said: {words}".split()
    assert cut.data["text"] == " ".join(full[: round(len(full) / 2)])
    await client.end(conversation_id)
    messages = (await client.conversation(conversation_id))["messages"]
    assert messages[-1]["text"] == cut.data["text"]
    await reader.close()


async def test_upload_errors(client: VoxrelayClient) -> None:
    reader, conversation_id = await _open(client)
    pcm = {"Content-Type": "application/octet-stream"}
    params = {"conversationId": conversation_id}
    response = await client.http.post(
        "/realtime/upload", params=params, content=b"\0\0", headers={"Content-Type": "text/plain"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (
        415,
        "unsupported_media_type",
    )
    response = await client.http.post("/realtime/upload", content=b"\0\0", headers=pcm)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_request")
    response = await client.http.post(
        "/realtime/upload", params={**params, "sampleRate": 44100}, content=b"\0\0", headers=pcm
    )
    assert response.status_code == 422
    response = await client.http.post(
        "/realtime/upload", params={**params, "seq": -1}, content=b"\0\0", headers=pcm
    )
    assert response.status_code == 422
    # Bad requests leave the session usable.
    await client.text(conversation_id, "after the errors")
    await reader.wait_for("response_done")
    await client.end(conversation_id)
    for call in (
        client.upload(conversation_id, b"\0\0"),
        client.commit(conversation_id),
        client.text(conversation_id, "late"),
        client.interrupt(conversation_id),
    ):
        with pytest.raises(ApiError) as ended:
            await call
        assert (ended.value.status, ended.value.code) == (409, "no_active_session")
    await reader.close()


async def test_oversized_upload_is_refused(launch) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = launch(max_upload_bytes=4000)
    async with VoxrelayClient(server.url, await server.token()) as client:
        reader, conversation_id = await _open(client)
        with pytest.raises(ApiError) as declared:
            await client.upload(conversation_id, b"\0" * 8000)
        assert (declared.value.status, declared.value.code) == (413, "payload_too_large")

        async def endless():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b"\0" * 1000

        with pytest.raises(ApiError) as streamed:
            await client.upload(conversation_id, endless())
        assert streamed.value.status == 413
        await client.text(conversation_id, "still fine")
        await reader.wait_for("response_done")
        await reader.close()


async def test_text_errors(client: VoxrelayClient) -> None:
    reader, conversation_id = await _open(client)
    for body, status in [
        ({"conversationId": conversation_id, "text": "   "}, 400),
        ({"conversationId": conversation_id}, 422),
        ({"text": "who?"}, 422),
        ({"conversationId": conversation_id, "text": 42}, 422),
    ]:
        response = await client.http.post("/realtime/text", json=body)
        assert response.status_code == status, body
        assert response.json()["error"]["code"] == "invalid_request"
    response = await client.http.post(
        "/realtime/text", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_request")
    await reader.close()


async def test_two_listeners_hear_the_same_answer(client: VoxrelayClient) -> None:
    watch, conversation_id = await _open(client)
    phone = EventReader(client.events(conversation_id))
    opening = await phone.wait_for("conversation_started")
    assert opening.data["conversationId"] == conversation_id
    await client.text(conversation_id, "both of you")
    for reader in (watch, phone):
        await reader.wait_for("response_done")
    after = opening.id
    assert [e.id for e in phone.events[1:]] == [e.id for e in watch.events if e.id > after]
    assert [e.data for e in phone.events[1:]] == [e.data for e in watch.events if e.id > after]
    await watch.close()
    await phone.close()


async def test_reconnect_with_last_event_id_loses_and_repeats_nothing(
    client: VoxrelayClient,
) -> None:
    first, conversation_id = await _open(client)
    await client.text(conversation_id, "a fairly long sentence to make many events")
    await first.wait_for("response_done")
    everything = list(first.events)
    await first.close()
    cut = everything[len(everything) // 2].id
    for kwargs in ({"last_event_id": cut}, {"lastEventId": cut}):
        again = EventReader(client.events(conversation_id, **kwargs))  # type: ignore[arg-type]
        await again.wait_for("response_done")
        assert [e.id for e in again.events] == [e.id for e in everything if e.id > cut]
        assert [e.data for e in again.events] == [e.data for e in everything if e.id > cut]
        await again.close()
    # ...and live events keep coming after the replay, numbered on.
    live = EventReader(client.events(conversation_id, last_event_id=everything[-1].id))
    await client.text(conversation_id, "more")
    await live.wait_for("response_done")
    assert live.events[0].id == everything[-1].id + 1
    await live.close()


async def test_a_reconnect_far_back_after_a_long_answer_replays_it_from_the_spool(
    launch, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    # A memory tail of a few audio events: nearly all of the answer goes to disk.
    server: RunningServer = launch(replay_memory_bytes=16 << 10, replay_spool_dir=str(spool_dir))
    async with VoxrelayClient(server.url, await server.token()) as client:
        first, conversation_id = await _open(client)
        session_id = first.events[0].data["sessionId"]
        await client.text(conversation_id, "a long answer, " * 15)  # ~13 s of audio
        await first.wait_for("response_done")
        everything = list(first.events)
        await first.close()
        session = server.app.state.registry.get(session_id)
        assert session.log.spooled > 80
        assert os.listdir(spool_dir) == []
        again = EventReader(client.events(conversation_id, last_event_id=1))
        await again.wait_for("response_done")
        replayed = [(e.id, e.type, e.data) for e in again.events]
        assert replayed == [(e.id, e.type, e.data) for e in everything if e.id > 1]
        assert sum(e.type == "audio" for e in again.events) > 100
        await client.end(conversation_id)
        await again.wait_for("conversation_ended")
        await again.close()
        await wait_until(lambda: not _open_files_in(spool_dir))


def _open_files_in(directory: Path) -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return [target for target in targets if target.startswith(str(directory))]


async def test_replay_older_than_the_buffer_reports_a_gap(launch) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = launch(replay_max_bytes=4000)
    async with VoxrelayClient(server.url, await server.token()) as client:
        first, conversation_id = await _open(client)
        await client.text(conversation_id, "enough words to push old audio out of a tiny buffer")
        await first.wait_for("response_done")
        await first.close()
        again = EventReader(client.events(conversation_id, last_event_id=1))
        gap = await again.wait_for("error")
        assert again.events[0] is gap
        assert gap.data["code"] == "replay_gap"
        following = again.events[1] if len(again.events) > 1 else await again.wait_for("transcript")
        assert following.id > 2
        assert following.id == gap.id + 1
        await again.close()


async def test_session_without_listeners_ends_after_the_grace_period(launch) -> None:  # type: ignore[no-untyped-def]
    # Long enough for the reconnect below to land within it on a loaded machine.
    server: RunningServer = launch(grace_seconds=2)
    async with VoxrelayClient(server.url, await server.token()) as client:
        reader, conversation_id = await _open(client)
        session_id = reader.events[0].data["sessionId"]
        await client.text(conversation_id, "remember me")
        await reader.wait_for("response_done")
        await reader.close()  # the watch drops
        await asyncio.sleep(0.2)
        assert (await client.get_session(session_id))["status"] == "active"
        # Reconnecting within the grace period joins the same session.
        back = EventReader(client.events(conversation_id))
        assert (await back.wait_for("conversation_started")).data["sessionId"] == session_id
        await back.close()
        for _ in range(100):
            if (await client.get_session(session_id))["status"] == "ended":
                break
            await asyncio.sleep(0.1)
        assert (await client.get_session(session_id))["status"] == "ended"
        messages = (await client.conversation(conversation_id))["messages"]
        assert [m["text"] for m in messages] == ["remember me", "You said: remember me"]
        # The next stream starts a fresh session on the same conversation.
        fresh = EventReader(client.events(conversation_id))
        opening = await fresh.wait_for("conversation_started")
        assert opening.data["sessionId"] != session_id
        assert opening.id == 1
        await fresh.close()


async def test_server_shutdown_ends_streams_cleanly(launch) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = launch()
    async with VoxrelayClient(server.url, await server.token()) as client:
        reader, conversation_id = await _open(client)
        await client.text(conversation_id, "before the restart")
        await reader.wait_for("response_done")
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        ended = await reader.wait_for("conversation_ended")
        assert ended.data == {"conversationId": conversation_id, "reason": "server_shutdown"}
    restarted: RunningServer = launch()
    async with VoxrelayClient(restarted.url, await restarted.token()) as client:
        messages = (await client.conversation(conversation_id))["messages"]
        assert [m["text"] for m in messages] == [
            "before the restart",
            "You said: before the restart",
        ]


class _SlowToOpen(EchoProvider):
    """Echo, but opening its link waits until the test lets it go on."""

    opening = threading.Event()
    go_on = threading.Event()
    closed = threading.Event()

    async def open(self, *args: Any) -> None:
        type(self).opening.set()
        await asyncio.to_thread(type(self).go_on.wait, 10)
        await super().open(*args)

    async def close(self) -> None:
        type(self).closed.set()
        await super().close()


async def test_a_session_still_opening_at_shutdown_is_refused_not_left_running(launch) -> None:  # type: ignore[no-untyped-def]
    for event in (_SlowToOpen.opening, _SlowToOpen.go_on, _SlowToOpen.closed):
        event.clear()
    server: RunningServer = launch(make_provider=_SlowToOpen)
    loop = asyncio.get_running_loop()
    async with VoxrelayClient(server.url, await server.token()) as client:
        starting = asyncio.ensure_future(client.create_session())
        assert await loop.run_in_executor(None, _SlowToOpen.opening.wait, 10)
        stopping = loop.run_in_executor(None, server.stop)
        # Every session there was has ended: the one still opening comes too late.
        await wait_until(lambda: server.server.should_exit)
        _SlowToOpen.go_on.set()
        with pytest.raises(ApiError) as refused:
            await starting
        await stopping
    assert (refused.value.status, refused.value.code) == (503, "server_shutdown")
    assert _SlowToOpen.closed.is_set()
    assert not server.thread.is_alive()


class _GarbledFirstDelta(EchoProvider):
    """Echo, but each answer starts with an audio delta whose base64 is broken."""

    async def send_text(self, item_id: str, text: str) -> None:
        self._emit(AudioDelta("resp_broken", "item_broken", encoded="abc"))
        await super().send_text(item_id, text)


async def test_a_broken_audio_delta_is_dropped_and_the_answer_goes_on(launch) -> None:  # type: ignore[no-untyped-def]
    server: RunningServer = launch(make_provider=_GarbledFirstDelta)
    async with VoxrelayClient(server.url, await server.token()) as client:
        # 16 kHz out: the answer is resampled, so every delta is decoded.
        reader, conversation_id = await _open(client, outputSampleRate=16000)
        await client.text(conversation_id, "hello there")
        done = await reader.wait_for("response_done")
        assert done.data["status"] == "completed"
        audio = [e for e in reader.events if e.type == "audio"]
        assert audio and all(e.data["responseId"] == done.data["responseId"] for e in audio)
        assert b"".join(base64.b64decode(e.data["audio"]) for e in audio)
        assert server.registry.for_conversation(conversation_id) is not None
        assert server.registry.for_conversation(conversation_id).active  # type: ignore[union-attr]
