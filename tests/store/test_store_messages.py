"""Messages: positions, ordering, updates, meta, conversation bookkeeping."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest

from voxrelay.store import ConversationNotFound, MessageExists, MessageNotFound, Store


async def test_positions_follow_the_last_message(store: Store) -> None:
    conv = await store.create_conversation("u")
    assert await store.next_position(conv.id) == 0

    first = await store.add_message(conv.id, role="user", text="hello")
    second = await store.add_message(conv.id, role="assistant", text="hi there")
    assert (first.position, second.position) == (0, 1)
    assert await store.next_position(conv.id) == 2

    # An explicit position may leave a gap; the next automatic one follows the highest.
    jumped = await store.add_message(conv.id, role="user", text="later", position=10)
    assert jumped.position == 10
    assert (await store.add_message(conv.id, role="assistant", text="x")).position == 11
    assert await store.next_position(conv.id) == 12

    assert await store.next_position("unknown-conversation") == 0


async def test_message_fields(store: Store) -> None:
    conv = await store.create_conversation("u")
    meta = {"firstAudioMs": 312.5, "nested": {"list": [1, 2, 3]}, "ok": True, "none": None}
    msg = await store.add_message(
        conv.id, role="assistant", text="שלום", item_id="item_abc", meta=meta
    )
    assert re.fullmatch(r"msg_[0-9a-f]{24}", msg.id)
    assert msg.conversation_id == conv.id
    assert msg.role == "assistant"
    assert msg.text == "שלום"
    assert msg.item_id == "item_abc"
    assert msg.meta == meta
    assert msg.created_at.utcoffset() == timedelta(0)

    [stored] = await store.list_messages(conv.id)
    assert stored == msg

    plain = await store.add_message(conv.id, role="user", text="")
    assert plain.item_id is None and plain.meta is None
    assert (await store.list_messages(conv.id))[1] == plain


async def test_ordering_by_position_then_time(store: Store) -> None:
    conv = await store.create_conversation("u")
    b = await store.add_message(conv.id, role="assistant", text="b", position=1)
    a = await store.add_message(conv.id, role="user", text="a", position=0)
    b2 = await store.add_message(conv.id, role="user", text="b2", position=1)
    c = await store.add_message(conv.id, role="assistant", text="c")

    listed = await store.list_messages(conv.id)
    assert [m.id for m in listed] == [a.id, b.id, b2.id, c.id]
    assert c.position == 2
    assert await store.list_messages("unknown-conversation") == []


async def test_messages_stay_in_their_conversation(store: Store) -> None:
    one = await store.create_conversation("u")
    two = await store.create_conversation("u")
    await store.add_message(one.id, role="user", text="1")
    await store.add_message(one.id, role="user", text="2")
    m = await store.add_message(two.id, role="user", text="other")
    assert m.position == 0
    assert [x.text for x in await store.list_messages(one.id)] == ["1", "2"]
    assert [x.text for x in await store.list_messages(two.id)] == ["other"]


async def test_add_message_bumps_updated_at(store: Store) -> None:
    conv = await store.create_conversation("u")
    msg = await store.add_message(conv.id, role="user", text="hi")
    got = await store.get_conversation(conv.id)
    assert got is not None
    assert got.updated_at == msg.created_at
    assert got.updated_at > conv.updated_at
    assert got.created_at == conv.created_at


async def test_add_message_errors(store: Store) -> None:
    with pytest.raises(ConversationNotFound):
        await store.add_message("missing", role="user", text="hi")
    conv = await store.create_conversation("u")
    with pytest.raises(ValueError):
        await store.add_message(conv.id, role="system", text="nope")
    assert await store.list_messages(conv.id) == []


async def test_chosen_message_id_and_idempotent_retry(store: Store) -> None:
    conv = await store.create_conversation("u")
    msg = await store.add_message(conv.id, role="user", text="hi", message_id="msg_chosen")
    assert msg.id == "msg_chosen"
    # The same write again (a retry) returns the stored message, adds nothing.
    again = await store.add_message(conv.id, role="user", text="hi", message_id="msg_chosen")
    assert again == msg
    assert len(await store.list_messages(conv.id)) == 1

    other = await store.create_conversation("u")
    with pytest.raises(MessageExists):
        await store.add_message(other.id, role="user", text="hi", message_id="msg_chosen")
    assert await store.list_messages(other.id) == []


async def test_concurrent_appends_get_distinct_positions(store: Store) -> None:
    conv = await store.create_conversation("u")
    added = await asyncio.gather(
        *(store.add_message(conv.id, role="user", text=str(i)) for i in range(12))
    )
    assert sorted(m.position for m in added) == list(range(12))
    assert [m.position for m in await store.list_messages(conv.id)] == list(range(12))


async def test_update_message(store: Store) -> None:
    conv = await store.create_conversation("u")
    msg = await store.add_message(
        conv.id, role="assistant", text="a long answer", meta={"firstAudioMs": 300}
    )

    await store.update_message(msg.id, text="a long")
    [got] = await store.list_messages(conv.id)
    assert got.text == "a long"
    assert got.meta == {"firstAudioMs": 300}

    await store.update_message(msg.id, meta={"truncatedAtMs": 900})
    [got] = await store.list_messages(conv.id)
    assert got.text == "a long"
    assert got.meta == {"truncatedAtMs": 900}

    await store.update_message(msg.id, text="", meta={"a": 1})
    [got] = await store.list_messages(conv.id)
    assert (got.text, got.meta) == ("", {"a": 1})

    # Nothing to change is fine; position, role and time are untouched throughout.
    await store.update_message(msg.id)
    [got] = await store.list_messages(conv.id)
    assert (got.id, got.position, got.role, got.created_at) == (
        msg.id,
        msg.position,
        msg.role,
        msg.created_at,
    )


async def test_update_unknown_message(store: Store) -> None:
    with pytest.raises(MessageNotFound):
        await store.update_message("msg_missing", text="x")
    with pytest.raises(MessageNotFound):
        await store.update_message("msg_missing")


async def test_records_do_not_share_meta(store: Store) -> None:
    conv = await store.create_conversation("u")
    meta = {"k": [1]}
    msg = await store.add_message(conv.id, role="user", text="hi", meta=meta)
    meta["k"].append(2)
    assert msg.meta == {"k": [1]}
    assert (await store.list_messages(conv.id))[0].meta == {"k": [1]}
