"""Sessions: create, get, end, end_stale."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from voxrelay.store import ConversationNotFound, SessionExists, SessionRecord, Store


async def _session(store: Store, conversation_id: str, **kwargs: object) -> SessionRecord:
    params: dict[str, object] = {
        "conversation_id": conversation_id,
        "user_id": "u",
        "input_sample_rate": 16000,
        "output_sample_rate": 24000,
        "turn_detection": "server_vad",
    }
    params.update(kwargs)
    return await store.create_session(**params)  # type: ignore[arg-type]


async def test_create_and_get(store: Store) -> None:
    conv = await store.create_conversation("u")
    options = {"voice": "alloy", "language": "he", "instructions": "be brief"}
    rec = await store.create_session(
        conversation_id=conv.id,
        user_id="u",
        input_sample_rate=24000,
        output_sample_rate=16000,
        turn_detection="manual",
        options=options,
    )
    assert re.fullmatch(r"sess_[0-9a-f]{24}", rec.id)
    assert rec.conversation_id == conv.id
    assert rec.user_id == "u"
    assert rec.status == "active"
    assert rec.ended_at is None and rec.end_reason is None
    assert (rec.input_sample_rate, rec.output_sample_rate) == (24000, 16000)
    assert rec.turn_detection == "manual"
    assert rec.options == options
    assert rec.created_at.utcoffset() == timedelta(0)

    assert await store.get_session(rec.id) == rec
    assert await store.get_session("sess_missing") is None


async def test_chosen_id_and_no_options(store: Store) -> None:
    conv = await store.create_conversation("u")
    rec = await _session(store, conv.id, session_id="sess_mine")
    assert rec.id == "sess_mine"
    assert rec.options is None
    assert await store.get_session("sess_mine") == rec
    with pytest.raises(SessionExists):
        await _session(store, conv.id, session_id="sess_mine")


async def test_create_for_unknown_conversation(store: Store) -> None:
    with pytest.raises(ConversationNotFound):
        await _session(store, "conv_missing")


async def test_end_session(store: Store) -> None:
    conv = await store.create_conversation("u")
    rec = await _session(store, conv.id)

    await store.end_session(rec.id, "client_end")
    ended = await store.get_session(rec.id)
    assert ended is not None
    assert ended.status == "ended"
    assert ended.end_reason == "client_end"
    assert ended.ended_at is not None
    assert ended.ended_at.utcoffset() == timedelta(0)
    assert ended.ended_at >= ended.created_at
    # Everything else is kept.
    assert ended.input_sample_rate == rec.input_sample_rate
    assert ended.conversation_id == rec.conversation_id

    # Ending again keeps the first reason and time; unknown ids are ignored.
    await store.end_session(rec.id, "server_shutdown")
    assert await store.get_session(rec.id) == ended
    await store.end_session("sess_missing", "client_end")


async def test_end_stale_sessions(store: Store) -> None:
    conv = await store.create_conversation("u")
    other = await store.create_conversation("v")
    already = await _session(store, conv.id)
    await store.end_session(already.id, "idle_timeout")
    live = [await _session(store, conv.id), await _session(store, other.id, user_id="v")]

    assert await store.end_stale_sessions() == 2
    for rec in live:
        got = await store.get_session(rec.id)
        assert got is not None
        assert (got.status, got.end_reason) == ("ended", "server_shutdown")
        assert got.ended_at is not None
    kept = await store.get_session(already.id)
    assert kept is not None and kept.end_reason == "idle_timeout"

    assert await store.end_stale_sessions() == 0
    fresh = await _session(store, conv.id)
    assert await store.end_stale_sessions("upstream_failed") == 1
    got = await store.get_session(fresh.id)
    assert got is not None and got.end_reason == "upstream_failed"
