"""A conversation outlives its upstream link: drops, refusals, the 60-minute limit and a
refused key, injected by the fake OpenAI Realtime upstream, seen through the SSE
stream and the stored conversation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, RunningServer, stored_messages, wait_until

from voxrelay.client import VoxrelayClient

KEY = "sk-upstream-secret-key"


@pytest.fixture
def fake() -> Iterator[FakeRealtimeServer]:
    with FakeRealtimeServer("ga", api_key=KEY) as server:
        yield server
    assert server.validation_errors == []


def _relay(launch: Callable[..., RunningServer], fake: FakeRealtimeServer, **changes: object):
    return launch(
        provider="openai",
        openai_url=fake.url,
        openai_api_key=KEY,
        openai_model="gpt-test",
        **changes,
    )


@pytest.fixture
def relay(launch: Callable[..., RunningServer], fake: FakeRealtimeServer) -> RunningServer:
    return _relay(launch, fake, upstream_reconnect_seconds=5)


async def _open(client: VoxrelayClient, **params: object) -> tuple[EventReader, str]:
    reader = EventReader(client.events(**params))  # type: ignore[arg-type]
    started = await reader.wait_for("conversation_started")
    return reader, started.data["conversationId"]


def _history(fake: FakeRealtimeServer, conn: int) -> list[tuple[str, str]]:
    """(role, text) of the messages a connection was told before any request."""
    return [
        (e["item"]["role"], e["item"]["content"][0]["text"])
        for e in fake.client_events("conversation.item.create", conn=conn)
    ]


def _exchanges(fake: FakeRealtimeServer, *said: str) -> list[tuple[str, str]]:
    """(role, text) of each user message and the fake's answer to it, in order."""
    return [pair for text in said for pair in (("user", text), ("assistant", fake.reply(text)))]


def _answers(reader: EventReader) -> list[str]:
    return [
        str(e.data["text"])
        for e in reader.of_type("transcript")
        if e.data.get("role") == "assistant" and e.data.get("final")
    ]


async def _turn(client: VoxrelayClient, reader: EventReader, cid: str, text: str) -> str:
    """Say ``text`` and wait for the whole answer; returns the answer's text."""
    done, answered = len(reader.of_type("response_done")), len(_answers(reader))
    await client.text(cid, text)
    await wait_until(
        lambda: len(reader.of_type("response_done")) > done and len(_answers(reader)) > answered
    )
    assert reader.of_type("response_done")[done].data["status"] == "completed"
    return _answers(reader)[answered]


async def test_a_dropped_link_is_reopened_with_the_conversation_so_far(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        await _turn(client, reader, cid, "my name is Dana")
        first = fake.connections[-1].index
        fake.drop()
        reconnecting = await reader.wait_for("upstream_reconnecting")
        assert reconnecting.data == {"reason": "link_lost", "responseId": None}
        restored = await reader.wait_for("upstream_restored")
        assert restored.data["attempts"] >= 1
        second = fake.connections[-1].index
        assert second != first
        await wait_until(lambda: len(_history(fake, second)) == 2, seconds=5)
        assert _history(fake, second) == _exchanges(fake, "my name is Dana")
        await _turn(client, reader, cid, "what is my name")
        assert reader.of_type("conversation_ended") == []
        assert [e.data["code"] for e in reader.of_type("error")] == []
        await client.end(cid)
        await reader.close()
    assert await stored_messages(relay, token, cid, 4) == _exchanges(
        fake, "my name is Dana", "what is my name"
    )


async def test_an_answer_cut_by_a_drop_ends_failed_and_the_next_turn_works(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    fake.delta_delay = 0.05
    story = "tell me a long story about a lighthouse keeper and the sea"
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        await client.text(cid, story)
        started = await reader.wait_for("response_started")
        await reader.wait_for("transcript", lambda e: e.data.get("role") == "assistant")
        fake.drop()
        done = await reader.wait_for("response_done")
        assert done.data == {"responseId": started.data["responseId"], "status": "failed"}
        reconnecting = await reader.wait_for("upstream_reconnecting")
        assert reconnecting.data["responseId"] == started.data["responseId"]
        await reader.wait_for("upstream_restored")
        fake.delta_delay = 0.0
        await _turn(client, reader, cid, "and then")
        await client.end(cid)
        await reader.close()
    messages = await stored_messages(relay, token, cid, 4)
    assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0] == ("user", story)
    # What was said of the cut answer is kept, not the part never spoken.
    assert 0 < len(messages[1][1]) < len(fake.reply(story))
    assert fake.reply(story).startswith(messages[1][1])
    # The new link knows the cut answer as it was heard so far.
    assert _history(fake, fake.connections[-1].index)[:2] == messages[:2]
    assert messages[3] == ("assistant", fake.reply("and then"))


async def test_the_60_minute_close_reopens_the_link_without_an_error(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        await _turn(client, reader, cid, "good morning")
        fake.expire()
        reconnecting = await reader.wait_for("upstream_reconnecting")
        assert reconnecting.data["reason"] == "session_expired"
        await reader.wait_for("upstream_restored")
        await _turn(client, reader, cid, "still there")
        assert reader.of_type("error") == []
        await client.end(cid)
        await reader.close()
    assert len(await stored_messages(relay, token, cid, 4)) == 4


async def test_a_close_code_1011_and_refused_handshakes_are_retried(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        fake.refuse_status = 503
        before = len(fake.connections)
        fake.close_all(1011, "internal error")
        await reader.wait_for("upstream_reconnecting")
        await wait_until(lambda: len(fake.connections) >= before + 2, seconds=5)
        fake.refuse_status = None
        restored = await reader.wait_for("upstream_restored")
        assert restored.data["attempts"] >= 3
        await _turn(client, reader, cid, "hello again")
        await client.end(cid)
        await reader.close()


async def test_a_turn_waiting_for_its_answer_is_answered_by_the_new_link(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        # The link drops after the message reached it, before any answer began.
        fake.drop_on = "response.create"
        await client.text(cid, "are you awake")
        await reader.wait_for("upstream_reconnecting")
        fake.drop_on = None
        await reader.wait_for("upstream_restored")
        done = await reader.wait_for("response_done")
        assert done.data["status"] == "completed"
        latest = fake.connections[-1].index
        again = fake.client_events("conversation.item.create", conn=latest)[-1]["item"]
        assert again["content"][0]["text"] == "are you awake"
        # Sent once to each link: the new one does not hear it twice.
        assert _history(fake, latest) == [("user", "are you awake")]
        await client.end(cid)
        await reader.close()
    assert await stored_messages(relay, token, cid, 2) == _exchanges(fake, "are you awake")


async def test_speech_not_yet_committed_reaches_the_new_link(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        session = await client.create_session(turnDetection="manual", inputSampleRate=24000)
        cid = session["conversationId"]
        reader, _ = await _open(client, conversation_id=cid)
        speech = bytes(range(256)) * 75  # 400 ms at 24 kHz, not silence
        await client.upload(cid, speech)
        await wait_until(lambda: len(fake.audio_received()) == len(speech), seconds=5)
        fake.drop()
        await reader.wait_for("upstream_restored")
        await wait_until(lambda: fake.audio_received() == speech, seconds=5)
        await client.commit(cid)
        assert (await reader.wait_for("response_done")).data["status"] == "completed"
        await client.end(cid)
        await reader.close()


async def test_a_refused_key_is_not_retried(relay: RunningServer, fake: FakeRealtimeServer) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        await _turn(client, reader, cid, "this turn is kept")
        before = len(fake.connections)
        fake.refuse_status = 401
        fake.drop()
        error = await reader.wait_for("error")
        assert error.data["code"] == "upstream_unavailable"
        ended = await reader.wait_for("conversation_ended")
        assert ended.data["reason"] == "upstream_failed"
        assert len(fake.connections) == before + 1
        await reader.close()
    assert len(await stored_messages(relay, token, cid, 2)) == 2


async def test_an_upstream_gone_for_good_ends_the_session_in_bounded_time(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer
) -> None:
    relay = _relay(launch, fake, upstream_reconnect_seconds=1.0)
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        other, other_id = await _open(client)
        await _turn(client, reader, cid, "this turn is kept")
        # Only this conversation's link dies, and no new one may open.
        fake.drop_on = "conversation.item.create"
        await client.text(cid, "this one breaks the link")
        error = await reader.wait_for("error", timeout=10)
        assert error.data["code"] == "upstream_unavailable"
        ended = await reader.wait_for("conversation_ended", timeout=10)
        assert ended.data["reason"] == "upstream_failed"
        fake.drop_on = None
        # The other conversation never noticed.
        await _turn(client, other, other_id, "are you still there")
        assert other.of_type("error") == other.of_type("upstream_reconnecting") == []
        await other.close()
        await reader.close()
    messages = await stored_messages(relay, token, cid, 3)
    assert messages == [
        ("user", "this turn is kept"),
        ("assistant", fake.reply("this turn is kept")),
        ("user", "this one breaks the link"),
    ]


async def test_a_second_drop_soon_after_a_quick_reopen_is_reopened_too(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer
) -> None:
    # The first outage lasted a moment; the link then served for longer than the
    # whole reconnect window before it dropped again. The time it was up is not
    # time spent trying to reopen it.
    relay = _relay(launch, fake, upstream_reconnect_seconds=1.5)
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        fake.drop()
        await reader.wait_for("upstream_restored")
        await _turn(client, reader, cid, "one blip")
        await asyncio.sleep(1.6)
        fake.drop()
        await wait_until(lambda: len(reader.of_type("upstream_restored")) == 2, seconds=5)
        await _turn(client, reader, cid, "and another")
        assert reader.of_type("error") == reader.of_type("conversation_ended") == []
        await client.end(cid)
        await reader.close()


async def test_a_long_session_moves_to_a_fresh_link_at_a_turn_boundary_unheard(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer
) -> None:
    relay = _relay(launch, fake, upstream_rollover_seconds=1.0)
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        reader, cid = await _open(client)
        first = fake.connections[-1].index
        await _turn(client, reader, cid, "remember the blue door")
        await wait_until(lambda: fake.connections[-1].index > first, seconds=5)
        fresh = fake.connections[-1].index
        await wait_until(lambda: len(_history(fake, fresh)) == 2, seconds=5)
        assert _history(fake, fresh) == _exchanges(fake, "remember the blue door")
        answer = await _turn(client, reader, cid, "which door")
        assert answer == fake.reply("which door")
        # Nobody heard the move: no reconnect, no error, no answer twice.
        assert reader.of_type("upstream_reconnecting") == reader.of_type("error") == []
        assert len(reader.of_type("response_done")) == 2
        await client.end(cid)
        await reader.close()
    assert await stored_messages(relay, token, cid, 4) == _exchanges(
        fake, "remember the blue door", "which door"
    )


async def test_socketio_clients_hear_the_reconnect_and_go_on(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    import socketio

    token = await relay.token()
    heard: list[tuple[str, object]] = []
    sock = socketio.AsyncClient(reconnection=False)
    sock.on("*", lambda event, data=None: heard.append((event, data)), namespace="/realtime")
    async with VoxrelayClient(relay.url, token) as client:
        created = await client.create_session()
        await sock.connect(
            relay.url, namespaces=["/realtime"], auth={"token": token}, transports=["websocket"]
        )
        try:
            joined = await sock.call("join-session", {"sessionId": created["id"]}, "/realtime")
            assert joined["ok"] is True
            fake.drop()
            names = lambda: [name for name, _ in heard]  # noqa: E731
            await wait_until(lambda: "upstream-restored" in names(), seconds=10)
            assert names().index("upstream-reconnecting") < names().index("upstream-restored")
            answer = await sock.call("text-message", {"text": "hello again"}, "/realtime")
            assert answer["ok"] is True
            await wait_until(lambda: "response-done" in names(), seconds=10)
            done = next(data for name, data in heard if name == "response-done")
            assert isinstance(done, dict) and done["status"] == "completed"
            assert "error" not in names() and "session-ended" not in names()
        finally:
            await sock.disconnect()


async def test_a_new_link_is_told_the_speech_in_progress_not_the_silence_before_it(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        session = await client.create_session(inputSampleRate=24000)
        cid = session["conversationId"]
        reader, _ = await _open(client, conversation_id=cid)
        # Five seconds of a pause (too quiet for the upstream to hear speech in it).
        quiet = b"\x01\x00" * 24000 * 5
        await client.upload(cid, quiet)
        await wait_until(lambda: len(fake.audio_received()) == len(quiet), seconds=5)
        fake.drop()
        await reader.wait_for("upstream_restored")
        # The fake records what it hears in its own thread: wait for it.
        await wait_until(lambda: len(fake.audio_received()) > 0, seconds=5)
        resent = fake.audio_received()
        # Only the last second: speech that began just before the drop, were there any.
        assert 0 < len(resent) <= 48000
        assert quiet.endswith(resent)
        await client.end(cid)
        await reader.close()


def _open_files_in(directory: Path) -> int:
    """This process's open files in ``directory`` (unlinked ones included)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if _target(fd).startswith(f"{directory}/"))


def _target(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


async def test_a_long_turn_kept_on_disk_reaches_the_new_link_byte_for_byte(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    # Past 4 KiB the turn's audio goes to a file; the replay log stays in memory, so
    # every file in the directory is a turn's.
    relay = _relay(
        launch,
        fake,
        upstream_reconnect_seconds=5,
        turn_audio_memory_bytes=4096,
        replay_memory_bytes=0,
        replay_spool_dir=str(spool),
    )
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        session = await client.create_session(turnDetection="manual", inputSampleRate=24000)
        cid = session["conversationId"]
        reader, _ = await _open(client, conversation_id=cid)
        speech = bytes((i * 7 + i // 251) % 256 for i in range(24000 * 2 * 3))  # 3 s
        await client.upload(cid, speech)
        await wait_until(lambda: len(fake.audio_received()) == len(speech), seconds=5)
        assert _open_files_in(spool) == 1
        fake.drop()
        await reader.wait_for("upstream_restored")
        await wait_until(lambda: len(fake.audio_received()) == len(speech), seconds=5)
        assert fake.audio_received() == speech
        await client.commit(cid)
        assert (await reader.wait_for("response_done")).data["status"] == "completed"
        await client.end(cid)
        await reader.close()
    await wait_until(lambda: _open_files_in(spool) == 0, seconds=5)
    assert list(spool.iterdir()) == []
