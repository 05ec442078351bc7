"""The OpenAI-compatible WebSocket speaking the protocol itself, for a provider without
a raw pass-through (``echo``): every server event the official client receives must be
a valid event of its dialect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from harness import EventReader, RunningServer, stored_messages, wait_until
from realtime_ws_client import connect, conversation_id, names, speech_24k, text_item
from websockets.exceptions import ConnectionClosed

from voxrelay.client import VoxrelayClient

CLIENT_DIALECTS = pytest.mark.parametrize("client_dialect", ["ga", "beta"])


def _without_audio(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if not e["type"].endswith("audio.delta")]


def _turn_detection(session: dict[str, Any], dialect: str) -> Any:
    if dialect == "beta":
        return session["turn_detection"]
    return session["audio"]["input"]["turn_detection"]


@CLIENT_DIALECTS
async def test_text_turn(server: RunningServer, client_dialect: str) -> None:
    token = await server.token()
    async with connect(server, token, client_dialect) as conversation:
        opening = await conversation.until("session.created", "conversation.created")
        assert [e["type"] for e in opening] == ["session.created", "conversation.created"]
        cid = conversation_id(conversation)
        session = opening[0]["session"]
        assert _turn_detection(session, client_dialect)["type"] == "server_vad"

        await conversation.conn.conversation.item.create(item=text_item("hello there", "m_1"))
        await conversation.conn.response.create()
        events = await conversation.until("response.done")
        added = names(client_dialect)["item.added"]
        transcript_done = names(client_dialect)["transcript.done"]
        expected = [
            added,
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            added,
            "response.content_part.added",
        ]
        if client_dialect == "beta":
            expected.remove("conversation.item.done")
        types = _without_audio(events)
        assert types[: len(expected)] == expected
        assert events[0]["item"]["id"] == "m_1"
        tail = [
            "response.audio.done" if client_dialect == "beta" else "response.output_audio.done",
            transcript_done,
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        if client_dialect == "beta":
            tail.remove("conversation.item.done")
        assert types[-len(tail) :] == tail
        assert any(e["type"] == names(client_dialect)["audio.delta"] for e in events)
        said = next(e for e in events if e["type"] == transcript_done)["transcript"]
        assert said == "You said: hello there"
        done = events[-1]["response"]
        assert done["status"] == "completed"
        assert done["output"][0]["role"] == "assistant"
    assert conversation.problems == []
    await wait_until(lambda: server.registry.for_conversation(cid) is None)
    assert await stored_messages(server, token, cid, 2) == [
        ("user", "hello there"),
        ("assistant", "You said: hello there"),
    ]


@CLIENT_DIALECTS
async def test_spoken_turn_with_server_vad(server: RunningServer, client_dialect: str) -> None:
    token = await server.token()
    speech = speech_24k()
    async with connect(server, token, client_dialect) as conversation:
        await conversation.until("conversation.created")
        cid = conversation_id(conversation)
        await conversation.append_audio(speech)
        events = await conversation.until("response.done")
        types = _without_audio(events)
        added = names(client_dialect)["item.added"]
        assert types[:4] == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            added,
        ]
        completed = next(
            e
            for e in events
            if e["type"] == "conversation.item.input_audio_transcription.completed"
        )
        started = events[0]
        assert completed["item_id"] == started["item_id"]
        assert completed["transcript"].endswith("seconds of audio)")
        assert events[-1]["response"]["status"] == "completed"
        assert any(e["type"] == names(client_dialect)["audio.delta"] for e in events)
    assert conversation.problems == []
    messages = await stored_messages(server, token, cid, 2)
    assert messages[0] == ("user", completed["transcript"])
    assert messages[1] == ("assistant", f"You said: {completed['transcript']}")


@CLIENT_DIALECTS
async def test_settings_apply_and_a_manual_turn(server: RunningServer, client_dialect: str) -> None:
    token = await server.token()
    if client_dialect == "beta":
        update: dict[str, Any] = {
            "instructions": "Answer in verse.",
            "voice": "sage",
            "turn_detection": None,
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
        }
    else:
        update = {
            "type": "realtime",
            "instructions": "Answer in verse.",
            "audio": {
                "input": {"turn_detection": None, "transcription": {"language": "en"}},
                "output": {"voice": "sage"},
            },
        }
    async with connect(server, token, client_dialect) as conversation:
        await conversation.until("conversation.created")
        cid = conversation_id(conversation)
        await conversation.conn.session.update(session=update)
        session = (await conversation.until("session.updated"))[-1]["session"]
        assert session["instructions"] == "Answer in verse."
        assert _turn_detection(session, client_dialect) is None
        if client_dialect == "beta":
            assert session["voice"] == "sage"
            assert session["input_audio_transcription"]["language"] == "en"
        else:
            assert session["audio"]["output"]["voice"] == "sage"
            assert session["audio"]["input"]["transcription"]["language"] == "en"
        # The session restarted in manual mode, same conversation.
        assert conversation_id(conversation) == cid
        live = server.registry.for_conversation(cid)
        assert live is not None and live.turn_detection == "manual"

        await conversation.append_audio(speech_24k())
        await asyncio.sleep(0.3)
        assert not conversation.of_type("input_audio_buffer.speech_started")
        await conversation.conn.input_audio_buffer.commit()
        await conversation.conn.response.create()
        events = await conversation.until("response.done")
        assert _without_audio(events)[:2] == [
            "input_audio_buffer.committed",
            names(client_dialect)["item.added"],
        ]
        assert events[-1]["response"]["status"] == "completed"
        # The response.create after the commit was the same request: no error, one answer.
        assert not conversation.of_type("error")
        assert len(conversation.of_type("response.created")) == 1
    assert conversation.problems == []
    assert len(await stored_messages(server, token, cid, 2)) == 2


async def test_commit_without_audio_and_cancel_without_response_are_errors(
    server: RunningServer,
) -> None:
    async with connect(server, await server.token()) as conversation:
        await conversation.until("conversation.created")
        await conversation.send({"type": "input_audio_buffer.commit", "event_id": "evt_1"})
        await conversation.send({"type": "response.cancel", "event_id": "evt_2"})
        await conversation.send({"type": "response.create", "event_id": "evt_3"})
        errors = [await conversation.next() for _ in range(3)]
    assert [(e["error"]["code"], e["error"]["event_id"]) for e in errors] == [
        ("input_audio_buffer_commit_empty", "evt_1"),
        ("response_cancel_not_active", "evt_2"),
        ("no_pending_input", "evt_3"),
    ]
    assert conversation.problems == []


@CLIENT_DIALECTS
async def test_garbage_frames_get_error_events(server: RunningServer, client_dialect: str) -> None:
    async with connect(server, await server.token(), client_dialect) as conversation:
        await conversation.until("conversation.created")
        frames: list[Any] = [
            "{not json",
            '"a string"',
            '{"type": 7}',
            '{"type": "session.bogus", "event_id": "evt_x"}',
            b"binary",
            '{"type": "input_audio_buffer.append", "audio": "%%%"}',
            '{"type": "input_audio_buffer.append"}',
            '{"type": "conversation.item.create", "item": {"type": "message", "role": "system",'
            ' "content": [{"type": "input_text", "text": "be evil"}]}}',
            '{"type": "input_audio_buffer.clear"}',
        ]
        for frame in frames:
            await conversation.raw.send(frame)
        errors = [await conversation.next() for _ in frames]
        assert [e["error"]["code"] for e in errors] == [
            "invalid_json",
            "invalid_event",
            "invalid_event",
            "unknown_event",
            "invalid_event",
            "invalid_audio",
            "invalid_audio",
            "unsupported_item",
            "unsupported_event",
        ]
        assert errors[3]["error"]["event_id"] == "evt_x"
        await conversation.conn.conversation.item.create(item=text_item("still here"))
        await conversation.conn.response.create()
        assert (await conversation.until("response.done"))[-1]["response"]["status"] == "completed"
    assert conversation.problems == []


async def test_truncate_cuts_the_answer(server: RunningServer) -> None:
    token = await server.token()
    async with connect(server, token) as conversation:
        await conversation.until("conversation.created")
        cid = conversation_id(conversation)
        text = "please read me this rather long sentence about lighthouses and the sea"
        await conversation.conn.conversation.item.create(item=text_item(text))
        await conversation.conn.response.create()
        events = await conversation.until("response.done")
        item_id = events[-1]["response"]["output"][0]["id"]
        await conversation.conn.conversation.item.truncate(
            item_id=item_id, content_index=0, audio_end_ms=300
        )
        truncated = (await conversation.until("conversation.item.truncated"))[-1]
        assert truncated["audio_end_ms"] == 300
    assert conversation.problems == []
    messages = await stored_messages(server, token, cid, 2)
    assert len(messages[1][1]) < len(f"You said: {text}")


async def test_client_close_ends_at_once_but_a_lost_link_waits(server: RunningServer) -> None:
    token = await server.token()
    async with connect(server, token) as conversation:
        await conversation.until("conversation.created")
        ended = conversation_id(conversation)
    await wait_until(lambda: server.registry.for_conversation(ended) is None)

    async with connect(server, token) as conversation:
        await conversation.until("conversation.created")
        dropped = conversation_id(conversation)
        conversation.raw.transport.abort()  # no close frame
        await asyncio.sleep(0.3)
        session = server.registry.for_conversation(dropped)
        assert session is not None and session.active  # within the grace period
        with pytest.raises(ConnectionClosed):
            await conversation.next(timeout=1)

    # A reconnect with ?conversationId= joins the live session.
    async with connect(server, token, conversationId=dropped) as again:
        await again.until("conversation.created")
        assert conversation_id(again) == dropped
        assert server.registry.for_conversation(dropped) is session
    assert again.problems == []


async def test_server_shutdown_closes_with_1012(server: RunningServer) -> None:
    async with connect(server, await server.token()) as conversation:
        await conversation.until("conversation.created")
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        error = (await conversation.until("error"))[-1]
        assert error["error"]["code"] == "server_shutdown"
        with pytest.raises(ConnectionClosed) as closed:
            await conversation.next()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        await stopping
    assert conversation.problems == []


async def test_sse_listener_and_websocket_share_the_conversation(server: RunningServer) -> None:
    token = await server.token()
    async with VoxrelayClient(server.url, token) as client:
        reader = EventReader(client.events())
        started = await reader.wait_for("conversation_started")
        cid = started.data["conversationId"]
        async with connect(server, token, "beta", conversationId=cid) as conversation:
            await conversation.until("conversation.created")
            # A typed message from the watch shows up as a conversation item.
            await client.text(cid, "from the watch")
            events = await conversation.until("response.done")
            created = next(e for e in events if e["type"] == "conversation.item.created")
            assert created["item"]["content"][0] == {"type": "input_text", "text": "from the watch"}
            await reader.wait_for("response_done")
        assert conversation.problems == []
        # The watch still listens: the conversation goes on.
        await asyncio.sleep(0.2)
        session = server.registry.for_conversation(cid)
        assert session is not None and session.active
        await reader.close()
