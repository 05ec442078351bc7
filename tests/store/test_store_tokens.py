"""Device tokens: create, authenticate, revoke, list; only a hash is stored."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC

from sqlalchemy import text

from voxrelay.store import DeviceToken, Store


async def test_create_and_authenticate(store: Store) -> None:
    record, token = await store.create_token("kitchen-watch", "user-1")

    assert re.fullmatch(r"vxr_[A-Za-z0-9_-]{43}", token)
    assert re.fullmatch(r"tok_[0-9a-f]{24}", record.id)
    assert record.device == "kitchen-watch"
    assert record.user_id == "user-1"
    assert record.revoked_at is None and record.active
    assert record.created_at.tzinfo is not None
    assert record.created_at.utcoffset() == UTC.utcoffset(None)

    assert await store.authenticate(token) == record


async def test_token_without_user(store: Store) -> None:
    record, token = await store.create_token("shared-tablet", None)
    authed = await store.authenticate(token)
    assert authed is not None
    assert authed.user_id is None
    assert authed == record


async def test_unknown_tokens_do_not_authenticate(store: Store) -> None:
    _, token = await store.create_token("phone", "u")
    assert await store.authenticate("") is None
    assert await store.authenticate("vxr_not-a-real-token") is None
    assert await store.authenticate(token + "x") is None
    assert await store.authenticate(token[:-1]) is None
    assert await store.authenticate(hashlib.sha256(token.encode()).hexdigest()) is None


async def test_tokens_are_unique(store: Store) -> None:
    tokens = {(await store.create_token("phone", "u"))[1] for _ in range(20)}
    assert len(tokens) == 20


async def test_only_the_hash_is_stored(store: Store) -> None:
    _, token = await store.create_token("phone", "user-1")

    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM device_tokens"))).mappings().all()

    assert len(rows) == 1
    row = rows[0]
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    secret = token.removeprefix("vxr_")
    for column, value in row.items():
        assert secret not in str(value), f"plaintext token found in column {column}"
        assert token not in str(value)


async def test_revoke_every_active_token_of_a_device(store: Store) -> None:
    _, phone_a = await store.create_token("phone", "u1")
    _, phone_b = await store.create_token("phone", "u1")
    _, watch = await store.create_token("watch", "u1")

    assert await store.revoke_token("phone") == 2
    assert await store.authenticate(phone_a) is None
    assert await store.authenticate(phone_b) is None
    assert await store.authenticate(watch) is not None

    # Already revoked tokens are not counted again; unknown devices revoke nothing.
    assert await store.revoke_token("phone") == 0
    assert await store.revoke_token("nobody") == 0

    # A new token for the same device name works again.
    _, phone_c = await store.create_token("phone", "u1")
    assert await store.authenticate(phone_c) is not None
    assert await store.authenticate(phone_a) is None


async def test_list_tokens(store: Store) -> None:
    assert await store.list_tokens() == []
    first, _ = await store.create_token("phone", "u1")
    second, _ = await store.create_token("watch", None)
    third, _ = await store.create_token("phone", "u2")
    await store.revoke_token("watch")

    listed = await store.list_tokens()
    assert [t.id for t in listed] == [first.id, second.id, third.id]
    assert all(isinstance(t, DeviceToken) for t in listed)
    by_id = {t.id: t for t in listed}
    assert by_id[first.id] == first
    assert by_id[third.id] == third
    revoked = by_id[second.id]
    assert not revoked.active
    assert revoked.revoked_at is not None
    assert revoked.revoked_at.utcoffset() == UTC.utcoffset(None)
    assert revoked.revoked_at >= revoked.created_at
