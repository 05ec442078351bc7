"""The OpenAI-compatible WebSocket in pass-through mode: the official ``openai`` client
(GA and beta dialects) through the relay to a fake upstream (OpenAI GA, and Azure's
preview endpoint, which speaks beta)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, RunningServer, stored_messages, wait_until
from realtime_ws_client import (
    KEY,
    connect,
    conversation_id,
    names,
    speech_24k,
    text_item,
)
from websockets.exceptions import ConnectionClosed

from voxrelay.client import VoxrelayClient
from voxrelay.eventlog import ReplayGap

CLIENT_DIALECTS = pytest.mark.parametrize("client_dialect", ["ga", "beta"])


def _session_update(client_dialect: str) -> dict[str, Any]:
    """Settings a client may choose, mixed with some the server owns."""
    if client_dialect == "beta":
        return {
            "model": "gpt-4o-realtime-preview",
            "instructions": "Be brief.",
            "voice": "coral",
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_alaw",
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            "modalities": ["text", "audio"],
        }
    return {
        "type": "realtime",
        "model": "gpt-realtime-mini",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            },
            "output": {"format": {"type": "audio/pcma"}, "voice": "coral"},
        },
    }


def _assert_owned_settings_kept(update: dict[str, Any], upstream_dialect: str) -> None:
    session = update["session"]
    assert "model" not in session
    assert session["instructions"] == "Be brief."
    if upstream_dialect == "beta":
        assert session["voice"] == "coral"
        assert session["input_audio_format"] == "pcm16"
        assert session["output_audio_format"] == "pcm16"
        # The server's transcription model stays (Azure preview: whisper-1); the
        # client's language is kept.
        assert session["input_audio_transcription"] == {"model": "whisper-1", "language": "en"}
        assert session["turn_detection"]["silence_duration_ms"] == 400
        return
    audio = session["audio"]
    assert session["type"] == "realtime"
    assert audio["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "en"}
    assert audio["input"]["turn_detection"]["silence_duration_ms"] == 400
    assert audio["output"]["voice"] == "coral"


def _assert_token_never_upstream(fake: FakeRealtimeServer, token: str) -> None:
    for record in fake.connections:
        assert record.headers.get("authorization") in (None, f"Bearer {KEY}")
        assert record.headers.get("api-key") in (None, KEY)
        assert all(token not in value for value in record.headers.values())
        assert token not in record.path
    assert all(token not in json.dumps(event) for event in fake.client_events())


@CLIENT_DIALECTS
async def test_text_turn_with_settings_passed_through(
    relay: RunningServer, fake: FakeRealtimeServer, client_dialect: str, upstream_dialect: str
) -> None:
    token = await relay.token()
    async with connect(relay, token, client_dialect) as conversation:
        opening = await conversation.until("session.created", "conversation.created")
        assert [e["type"] for e in opening] == ["session.created", "conversation.created"]
        cid = conversation_id(conversation)

        await conversation.conn.session.update(session=_session_update(client_dialect))
        # The server's own session.update (at connect) came first.
        client_update = (await fake.wait_for("session.update", count=2))[-1]
        _assert_owned_settings_kept(client_update, upstream_dialect)
        while True:  # the upstream may still answer the server's own update first
            updated = (await conversation.until("session.updated"))[-1]
            session = updated["session"]
            voice = session.get("voice") or session.get("audio", {}).get("output", {}).get("voice")
            if voice == "coral":
                break

        await conversation.conn.conversation.item.create(item=text_item("my name is Dana", "m_1"))
        added = (await conversation.until(names(client_dialect)["item.added"]))[-1]
        assert added["item"]["id"] == "m_1"
        await conversation.conn.response.create()
        turn = await conversation.until("response.done")
        assert turn[-1]["response"]["status"] == "completed"
        transcript = next(e for e in turn if e["type"] == names(client_dialect)["transcript.done"])
        assert transcript["transcript"] == fake.reply("my name is Dana")
        assert any(e["type"] == names(client_dialect)["audio.delta"] for e in turn)
        created = fake.client_events("conversation.item.create")[-1]
        assert created["item"]["id"] == "m_1"

    assert conversation.problems == []
    # The client closed: the conversation ends at once, its turns stored.
    await wait_until(lambda: relay.registry.for_conversation(cid) is None)
    assert await stored_messages(relay, token, cid, 2) == [
        ("user", "my name is Dana"),
        ("assistant", fake.reply("my name is Dana")),
    ]
    _assert_token_never_upstream(fake, token)


@CLIENT_DIALECTS
async def test_audio_turn_goes_upstream_unchanged_and_is_stored(
    relay: RunningServer, fake: FakeRealtimeServer, client_dialect: str
) -> None:
    fake.transcribe = lambda pcm: "go forward ten meters"
    speech = speech_24k()
    token = await relay.token()
    async with connect(relay, token, client_dialect) as conversation:
        await conversation.until("conversation.created")
        cid = conversation_id(conversation)
        await conversation.append_audio(speech)
        turn = await conversation.until(
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed",
            "response.done",
        )
        heard = next(
            e for e in turn if e["type"] == "conversation.item.input_audio_transcription.completed"
        )
        assert heard["transcript"] == "go forward ten meters"
        assert turn[-1]["response"]["status"] == "completed"
        await wait_until(lambda: len(fake.audio_received()) >= len(speech))
        assert fake.audio_received() == speech
    assert conversation.problems == []
    assert await stored_messages(relay, token, cid, 2) == [
        ("user", "go forward ten meters"),
        ("assistant", fake.reply("go forward ten meters")),
    ]
    _assert_token_never_upstream(fake, token)


async def test_resuming_a_conversation_sends_its_history_upstream(
    relay: RunningServer, fake: FakeRealtimeServer, upstream_dialect: str
) -> None:
    token = await relay.token()
    async with connect(relay, token) as first:
        await first.until("conversation.created")
        cid = conversation_id(first)
        await first.conn.conversation.item.create(item=text_item("remember the lighthouse"))
        await first.conn.response.create()
        await first.until("response.done")
    await stored_messages(relay, token, cid, 2)
    await wait_until(lambda: relay.registry.for_conversation(cid) is None)

    async with connect(relay, token, conversationId=cid) as again:
        await again.until("conversation.created")
        assert conversation_id(again) == cid
        latest = fake.connections[-1].index
        # The relay writes the history before it answers; the fake reads it on its own time.
        await wait_until(
            lambda: len(fake.client_events("conversation.item.create", conn=latest)) >= 2
        )
        history = [e["item"] for e in fake.client_events("conversation.item.create", conn=latest)]
        assistant_kind = "text" if upstream_dialect == "beta" else "output_text"
        assert [(i["role"], i["content"][0]["type"], i["content"][0]["text"]) for i in history] == [
            ("user", "input_text", "remember the lighthouse"),
            ("assistant", assistant_kind, fake.reply("remember the lighthouse")),
        ]
        # The resumed conversation goes on.
        await again.conn.conversation.item.create(item=text_item("what did I say?"))
        await again.conn.response.create()
        await again.until("response.done")
    assert again.problems == []
    messages = await stored_messages(relay, token, cid, 4)
    assert messages[2] == ("user", "what did I say?")


@pytest.mark.parametrize("upstream_dialect", ["ga"])
async def test_other_listeners_see_normalized_events(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with VoxrelayClient(relay.url, token) as client:
        async with connect(relay, token) as conversation:
            await conversation.until("conversation.created")
            cid = conversation_id(conversation)
            reader = EventReader(client.events(conversation_id=cid))
            await reader.wait_for("conversation_started")
            await conversation.conn.conversation.item.create(item=text_item("hello watch"))
            await conversation.conn.response.create()
            await conversation.until("response.done")
            user = await reader.wait_for("transcript", lambda e: e.data.get("role") == "user")
            assert user.data["text"] == "hello watch"
            answer = await reader.wait_for(
                "transcript", lambda e: e.data.get("role") == "assistant" and e.data.get("final")
            )
            assert answer.data["text"] == fake.reply("hello watch")
            assert (await reader.wait_for("response_done")).data["status"] == "completed"
            assert reader.of_type("audio")
        # The watch still listens after the SDK client closed: the session lives on.
        await asyncio.sleep(0.2)
        session = relay.registry.for_conversation(cid)
        assert session is not None and session.active
        assert not reader.closed
        await reader.close()


@pytest.mark.parametrize("upstream_dialect", ["ga"])
async def test_answer_audio_is_logged_only_while_a_listener_reads_it(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()

    def logged_types(cid: str) -> list[str]:
        session = relay.registry.for_conversation(cid)
        assert session is not None
        cursor = session.log.cursor(0)
        return [item.type for item in cursor.take() if not isinstance(item, ReplayGap)]

    async with VoxrelayClient(relay.url, token) as client, connect(relay, token) as conversation:
        await conversation.until("conversation.created")
        cid = conversation_id(conversation)
        await conversation.conn.conversation.item.create(item=text_item("first"))
        await conversation.conn.response.create()
        await conversation.until("response.done")
        # The SDK client hears the upstream's own audio events; nobody reads the log's.
        alone = logged_types(cid)
        assert "response_done" in alone and "audio" not in alone
        reader = EventReader(client.events(conversation_id=cid))
        await reader.wait_for("conversation_started")
        await conversation.conn.conversation.item.create(item=text_item("second"))
        await conversation.conn.response.create()
        await conversation.until("response.done")
        await reader.wait_for("response_done")
        assert reader.of_type("audio")
        assert "audio" in logged_types(cid)
        await reader.close()


@pytest.mark.parametrize("upstream_dialect", ["ga"])
@CLIENT_DIALECTS
async def test_garbage_frames_get_error_events_and_the_socket_stays_usable(
    relay: RunningServer, fake: FakeRealtimeServer, client_dialect: str
) -> None:
    token = await relay.token()
    async with connect(relay, token, client_dialect) as conversation:
        await conversation.until("conversation.created")
        frames: list[Any] = [
            "this is not json",
            "[1, 2, 3]",
            '{"no": "type"}',
            '{"type": "response.bogus", "event_id": "evt_bogus"}',
            b"\x00\x01\x02",
            '{"type": "input_audio_buffer.append", "audio": "***", "event_id": "evt_b64"}',
        ]
        for frame in frames:
            await conversation.raw.send(frame)
        errors = [await conversation.next() for _ in frames]
        # The server answers each at once, in order, and nothing else comes between.
        assert [e["type"] for e in errors] == ["error"] * len(frames)
        assert [e["error"]["code"] for e in errors] == [
            "invalid_json",
            "invalid_event",
            "invalid_event",
            "unknown_event",
            "invalid_event",
            "invalid_audio",
        ]
        assert errors[3]["error"]["event_id"] == "evt_bogus"
        assert errors[5]["error"]["event_id"] == "evt_b64"
        assert all(e["error"]["type"] == "invalid_request_error" for e in errors)
        if client_dialect == "beta":
            # It would turn the upstream session into a transcription-only one.
            await conversation.send({"type": "transcription_session.update", "session": {}})
            refused = await conversation.next()
            assert refused["error"]["code"] == "unsupported_event"
        # Still usable.
        await conversation.conn.conversation.item.create(item=text_item("still there?"))
        await conversation.conn.response.create()
        assert (await conversation.until("response.done"))[-1]["response"]["status"] == "completed"
    assert conversation.problems == []
    # Nothing malformed went upstream.
    assert [e["type"] for e in fake.client_events()].count("input_audio_buffer.append") == 0


@pytest.mark.parametrize("upstream_dialect", ["ga"])
async def test_interrupting_cuts_the_stored_answer(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    fake.delta_delay = 0.05
    story = "tell me a long story about a lighthouse keeper"
    token = await relay.token()
    async with connect(relay, token) as conversation:
        await conversation.until("conversation.created")
        cid = conversation_id(conversation)
        await conversation.conn.conversation.item.create(item=text_item(story))
        await conversation.conn.response.create()
        first = (await conversation.until("response.output_audio.delta"))[-1]
        await conversation.conn.response.cancel()
        await conversation.conn.conversation.item.truncate(
            item_id=first["item_id"], content_index=0, audio_end_ms=120
        )
        events = await conversation.until("response.done", "conversation.item.truncated")
        done = next(e for e in events if e["type"] == "response.done")
        assert done["response"]["status"] == "cancelled"
    assert conversation.problems == []
    messages = await stored_messages(relay, token, cid, 2)
    assert messages[0] == ("user", story)
    assert len(messages[1][1]) < len(fake.reply(story))


@pytest.mark.parametrize("upstream_dialect", ["ga"])
async def test_ending_elsewhere_closes_the_socket(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with connect(relay, token) as conversation:
        await conversation.until("conversation.created")
        async with VoxrelayClient(relay.url, token) as client:
            await client.end(conversation_id(conversation))
        with pytest.raises(ConnectionClosed) as closed:
            await conversation.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


@pytest.mark.parametrize("upstream_dialect", ["ga"])
async def test_upstream_failure_sends_error_then_closes_1011(
    relay: RunningServer, fake: FakeRealtimeServer
) -> None:
    token = await relay.token()
    async with connect(relay, token) as conversation:
        await conversation.until("conversation.created")
        cid = conversation_id(conversation)
        # The link drops and the key is refused from now on: it cannot be reopened.
        fake.refuse_status = 401
        fake.drop()
        reconnecting = (await conversation.until("error"))[-1]
        assert reconnecting["error"]["code"] == "upstream_reconnecting"
        assert reconnecting["error"]["type"] == "server_error"
        codes = [reconnecting["error"]["code"]]
        while codes[-1] != "upstream_failed":
            codes += [e["error"]["code"] for e in await conversation.until("error")]
        assert codes == ["upstream_reconnecting", "upstream_unavailable", "upstream_failed"]
        with pytest.raises(ConnectionClosed) as closed:
            await conversation.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert conversation.problems == []
    assert relay.registry.for_conversation(cid) is None


@CLIENT_DIALECTS
async def test_a_dropped_upstream_is_reopened_and_the_client_told_in_its_protocol(
    relay: RunningServer, fake: FakeRealtimeServer, client_dialect: str, upstream_dialect: str
) -> None:
    token = await relay.token()
    async with connect(relay, token, client_dialect) as conversation:
        await conversation.until("session.created", "conversation.created")
        cid = conversation_id(conversation)
        await conversation.conn.session.update(session=_session_update(client_dialect))
        await fake.wait_for("session.update", count=2)
        await conversation.conn.conversation.item.create(item=text_item("my name is Dana", "m_1"))
        await conversation.conn.response.create()
        assert (await conversation.until("response.done"))[-1]["response"]["status"] == "completed"

        fake.delta_delay = 0.05
        await conversation.conn.conversation.item.create(item=text_item("tell me a long story"))
        await conversation.conn.response.create()
        created = (await conversation.until("response.created"))[-1]
        first = fake.connections[-1].index
        fake.drop()
        told = await conversation.until("error", "response.done")
        error = next(e for e in told if e["type"] == "error")
        assert error["error"]["code"] == "upstream_reconnecting"
        assert error["error"]["type"] == "server_error"
        done = next(e for e in told if e["type"] == "response.done")
        assert done["response"]["id"] == created["response"]["id"]
        assert done["response"]["status"] == "failed"

        # The new link has the client's own settings and the conversation so far.
        await wait_until(lambda: fake.connections[-1].index > first)
        second = fake.connections[-1].index
        updates = await fake.wait_for("session.update", count=4)
        _assert_owned_settings_kept(updates[-1], upstream_dialect)
        history = fake.client_events("conversation.item.create", conn=second)
        assert history[0]["item"]["id"] == "m_1"
        assert history[0]["item"]["content"][0]["text"] == "my name is Dana"
        fake.delta_delay = 0.0
        await conversation.conn.conversation.item.create(item=text_item("what is my name", "m_3"))
        await conversation.conn.response.create()
        answered = (await conversation.until("response.done"))[-1]
        assert answered["response"]["status"] == "completed"
        # The client never sees a second session.created.
        assert len(conversation.of_type("session.created")) == 1
    assert conversation.problems == []
    messages = await stored_messages(relay, token, cid, 6)
    assert [text for _, text in messages][::2] == [
        "my name is Dana",
        "tell me a long story",
        "what is my name",
    ]
