"""Conversations: create, get, duplicates, listing order, limit, cursors, delete."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text, update

from voxrelay.store import (
    Conversation,
    ConversationExists,
    ConversationNotFound,
    InvalidCursor,
    Store,
)
from voxrelay.store.models import ConversationRow


async def test_create_and_get(store: Store) -> None:
    conv = await store.create_conversation("user-1")
    assert re.fullmatch(r"conv_[0-9a-f]{24}", conv.id)
    assert conv.user_id == "user-1"
    assert conv.created_at == conv.updated_at
    assert conv.created_at.utcoffset() == timedelta(0)

    assert await store.get_conversation(conv.id) == conv
    assert await store.get_conversation("conv_000000000000000000000000") is None


async def test_create_with_chosen_id(store: Store) -> None:
    conv = await store.create_conversation("user-1", "my-chat.2024:1")
    assert conv.id == "my-chat.2024:1"
    got = await store.get_conversation("my-chat.2024:1")
    assert got == conv


async def test_duplicate_id_is_rejected_for_anyone(store: Store) -> None:
    await store.create_conversation("user-1", "shared-id")
    with pytest.raises(ConversationExists):
        await store.create_conversation("user-1", "shared-id")
    with pytest.raises(ConversationExists):
        await store.create_conversation("user-2", "shared-id")
    # The original is untouched.
    got = await store.get_conversation("shared-id")
    assert got is not None and got.user_id == "user-1"


@pytest.mark.parametrize("bad", ["", " padded ", "x" * 129, "tab\there"])
async def test_bad_chosen_id(store: Store, bad: str) -> None:
    with pytest.raises(ValueError):
        await store.create_conversation("user-1", bad)


async def test_get_has_no_user_filter(store: Store) -> None:
    conv = await store.create_conversation("owner")
    got = await store.get_conversation(conv.id)
    assert got is not None and got.user_id == "owner"


async def _three(store: Store) -> list[Conversation]:
    return [await store.create_conversation("u") for _ in range(3)]


async def test_list_newest_first_and_scoped_to_user(store: Store) -> None:
    a, b, c = await _three(store)
    await store.create_conversation("someone-else")

    listed = await store.list_conversations("u")
    assert [s.id for s in listed] == [c.id, b.id, a.id]

    # A new message makes a conversation the newest.
    await store.add_message(a.id, role="user", text="hello again")
    listed = await store.list_conversations("u")
    assert [s.id for s in listed] == [a.id, c.id, b.id]
    assert listed[0].updated_at > listed[1].updated_at > listed[2].updated_at

    assert await store.list_conversations("nobody") == []


async def test_list_summary_fields(store: Store) -> None:
    empty = await store.create_conversation("u")
    chat = await store.create_conversation("u")
    await store.add_message(chat.id, role="user", text="one")
    last = await store.add_message(chat.id, role="assistant", text="two", meta={"ms": 120})
    # An earlier position added later is not the last message.
    await store.add_message(chat.id, role="user", text="zero", position=0)

    by_id = {s.id: s for s in await store.list_conversations("u")}
    assert by_id[empty.id].message_count == 0
    assert by_id[empty.id].last_message is None
    assert by_id[empty.id].created_at == empty.created_at
    assert by_id[chat.id].message_count == 3
    assert by_id[chat.id].last_message == last
    assert by_id[chat.id].updated_at > chat.updated_at


async def test_limit(store: Store) -> None:
    convs = [await store.create_conversation("u") for _ in range(5)]
    listed = await store.list_conversations("u", limit=2)
    assert [s.id for s in listed] == [convs[4].id, convs[3].id]
    assert len(await store.list_conversations("u", limit=100)) == 5
    with pytest.raises(ValueError):
        await store.list_conversations("u", limit=0)


async def test_default_limit_is_20(store: Store) -> None:
    for _ in range(21):
        await store.create_conversation("u")
    assert len(await store.list_conversations("u")) == 20


async def _walk(store: Store, limit: int) -> list[str]:
    """Every id of user "u", page by page with id cursors (bounded, in case it loops)."""
    seen: list[str] = []
    before: str | None = None
    for _ in range(50):
        page = await store.list_conversations("u", limit=limit, before=before)
        if not page:
            return seen
        seen.extend(s.id for s in page)
        before = page[-1].id
    raise AssertionError(f"pagination does not end: {seen}")


async def test_cursor_by_conversation_id_pages_through_everything(store: Store) -> None:
    convs = [await store.create_conversation("u") for _ in range(7)]
    expected = [c.id for c in reversed(convs)]

    assert await _walk(store, limit=3) == expected

    page = await store.list_conversations("u", limit=10, before=convs[3].id)
    assert [s.id for s in page] == [convs[2].id, convs[1].id, convs[0].id]
    assert await store.list_conversations("u", before=convs[0].id) == []


async def test_cursor_by_id_breaks_updated_at_ties_by_id(store: Store) -> None:
    convs = [await store.create_conversation("u") for _ in range(5)]
    same = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    # Give every conversation the same updated_at (through the column's type, as the store writes).
    async with store.engine.begin() as conn:
        await conn.execute(update(ConversationRow).values(updated_at=same))

    listed = await store.list_conversations("u")
    ids = [s.id for s in listed]
    assert ids == sorted((c.id for c in convs), reverse=True)
    assert all(s.updated_at == same for s in listed)

    assert await _walk(store, limit=2) == ids


async def test_cursor_by_timestamp(store: Store) -> None:
    a, b, c = await _three(store)

    page = await store.list_conversations("u", before=c.updated_at.isoformat())
    assert [s.id for s in page] == [b.id, a.id]

    # Strictly earlier: the conversation at exactly that time is excluded.
    page = await store.list_conversations("u", before=b.updated_at.isoformat())
    assert [s.id for s in page] == [a.id]

    # "Z" suffix, other offsets and naive (taken as UTC) all work.
    zulu = c.updated_at.isoformat().replace("+00:00", "Z")
    assert [s.id for s in await store.list_conversations("u", before=zulu)] == [b.id, a.id]
    shifted = c.updated_at.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert [s.id for s in await store.list_conversations("u", before=shifted)] == [b.id, a.id]
    naive = c.updated_at.replace(tzinfo=None).isoformat()
    assert [s.id for s in await store.list_conversations("u", before=naive)] == [b.id, a.id]

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert [s.id for s in await store.list_conversations("u", before=future)] == [c.id, b.id, a.id]
    assert await store.list_conversations("u", before="2000-01-01T00:00:00Z") == []
    assert await store.list_conversations("u", before="2000-01-01") == []


async def test_invalid_cursor(store: Store) -> None:
    await store.create_conversation("u")
    other = await store.create_conversation("someone-else")
    with pytest.raises(InvalidCursor):
        await store.list_conversations("u", before="conv_ffffffffffffffffffffffff")
    with pytest.raises(InvalidCursor):
        await store.list_conversations("u", before="not a time")
    # Another user's conversation id is no cursor for this user.
    with pytest.raises(InvalidCursor):
        await store.list_conversations("u", before=other.id)
    # InvalidCursor is a ValueError, for callers that map those to 400.
    with pytest.raises(ValueError):
        await store.list_conversations("u", before="nope")


async def _count(store: Store, table: str, conversation_id: str) -> int:
    async with store.engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT COUNT(*) FROM {table} WHERE conversation_id = :c"), {"c": conversation_id}
        )
        return int(result.scalar_one())


async def test_delete_cascades_to_messages_and_sessions(store: Store) -> None:
    doomed = await store.create_conversation("u")
    kept = await store.create_conversation("u")
    for conv in (doomed, kept):
        await store.add_message(conv.id, role="user", text="hi")
        await store.add_message(conv.id, role="assistant", text="hello")
        await store.create_session(
            conversation_id=conv.id,
            user_id="u",
            input_sample_rate=16000,
            output_sample_rate=24000,
            turn_detection="server_vad",
        )
    session_of_doomed = await store.create_session(
        conversation_id=doomed.id,
        user_id="u",
        input_sample_rate=24000,
        output_sample_rate=24000,
        turn_detection="manual",
    )

    assert await store.delete_conversation(doomed.id) is True

    assert await store.get_conversation(doomed.id) is None
    assert await store.list_messages(doomed.id) == []
    assert await store.get_session(session_of_doomed.id) is None
    assert await _count(store, "messages", doomed.id) == 0
    assert await _count(store, "sessions", doomed.id) == 0

    assert await _count(store, "messages", kept.id) == 2
    assert await _count(store, "sessions", kept.id) == 1
    assert [s.id for s in await store.list_conversations("u")] == [kept.id]

    assert await store.delete_conversation(doomed.id) is False
    assert await store.delete_conversation("never-existed") is False
    with pytest.raises(ConversationNotFound):
        await store.add_message(doomed.id, role="user", text="too late")
