"""Tokens of devices and of services: create, authenticate, revoke, list; only a hash
is stored."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from voxrelay.store import AmbiguousToken, DeviceToken, Store


async def test_create_and_authenticate(store: Store) -> None:
    record, token = await store.create_token("kitchen-watch", "user-1")

    assert re.fullmatch(r"vxr_[A-Za-z0-9_-]{43}", token)
    assert re.fullmatch(r"tok_[0-9a-f]{24}", record.id)
    assert record.name == "kitchen-watch"
    assert record.kind == "device"
    assert record.user_id == "user-1"
    assert record.revoked_at is None and record.active
    assert record.created_at.tzinfo is not None
    assert record.created_at.utcoffset() == UTC.utcoffset(None)

    assert await store.authenticate(token) == record


async def test_a_device_token_without_user_has_a_user_of_its_own(store: Store) -> None:
    record, token = await store.create_token("shared-tablet", None)
    authed = await store.authenticate(token)
    assert authed == record
    assert record.kind == "device"
    assert record.user_id == f"device:{record.id}"
    # Another token of a device by the same name is another user.
    other, _ = await store.create_token("shared-tablet", None)
    assert other.user_id == f"device:{other.id}" != record.user_id


async def test_service_tokens(store: Store) -> None:
    record, token = await store.create_token("backend", kind="service")
    assert (record.kind, record.name, record.user_id) == ("service", "backend", None)
    assert await store.authenticate(token) == record
    with pytest.raises(ValueError, match="service token has no user"):
        await store.create_token("backend", "alice", kind="service")


@pytest.mark.parametrize("user", ["device:tok_0123", "", " alice", "a" * 129, "line\nbreak"])
async def test_a_named_user_is_never_a_devices_own(store: Store, user: str) -> None:
    with pytest.raises(ValueError):
        await store.create_token("watch", user)
    assert await store.list_tokens() == []


async def test_the_schema_keeps_kinds_and_users_consistent(store: Store) -> None:
    insert = text(
        "INSERT INTO device_tokens (id, device, kind, user_id, token_hash, created_at)"
        " VALUES (:id, 'x', :kind, :user, :id, '2025-01-01 00:00:00')"
    )
    for kind, user in [("device", None), ("service", "alice"), ("robot", "alice")]:
        with pytest.raises(IntegrityError):
            async with store.engine.begin() as conn:
                await conn.execute(insert, {"id": f"tok_{kind}", "kind": kind, "user": user})


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


async def test_revoking_a_name_several_users_use_revokes_nothing(store: Store) -> None:
    alices, alice = await store.create_token("my-watch", "alice")
    bobs, bob = await store.create_token("my-watch", "bob")
    owns, own = await store.create_token("my-watch", None)

    with pytest.raises(AmbiguousToken) as ambiguous:
        await store.revoke_token("my-watch")
    assert {t.id for t in ambiguous.value.matches} == {alices.id, bobs.id, owns.id}
    assert "user alice" in str(ambiguous.value) and "user bob" in str(ambiguous.value)
    for token in (alice, bob, own):
        assert await store.authenticate(token) is not None

    assert await store.revoke_token("my-watch", user_id="alice") == 1
    assert await store.authenticate(alice) is None
    assert await store.authenticate(bob) is not None
    assert await store.revoke_token("my-watch", user_id="alice") == 0
    assert await store.revoke_token("my-watch", user_id="carol") == 0
    # Still two owners among the active ones.
    with pytest.raises(AmbiguousToken):
        await store.revoke_token("my-watch")


async def test_revoking_services_and_devices_of_one_name(store: Store) -> None:
    _, service = await store.create_token("backend", kind="service")
    _, device = await store.create_token("backend", "alice")
    with pytest.raises(AmbiguousToken, match="service backend"):
        await store.revoke_token("backend")
    assert await store.revoke_token("backend", kind="service") == 1
    assert await store.authenticate(service) is None
    assert await store.authenticate(device) is not None
    # The one owner left: the name alone is enough again.
    assert await store.revoke_token("backend") == 1
    assert await store.authenticate(device) is None


async def test_list_tokens(store: Store) -> None:
    assert await store.list_tokens() == []
    first, _ = await store.create_token("phone", "u1")
    second, _ = await store.create_token("watch", None)
    third, _ = await store.create_token("phone", "u2")
    await store.revoke_token("watch")

    listed = await store.list_tokens()
    assert [t.id for t in listed] == [first.id, second.id, third.id]
    assert all(isinstance(t, DeviceToken) for t in listed)
    assert [t.id for t in await store.list_tokens(user_id="u1")] == [first.id]
    assert [t.id for t in await store.list_tokens(user_id=second.user_id)] == [second.id]
    assert await store.list_tokens(user_id="nobody") == []
    by_id = {t.id: t for t in listed}
    assert by_id[first.id] == first
    assert by_id[third.id] == third
    revoked = by_id[second.id]
    assert not revoked.active
    assert revoked.revoked_at is not None
    assert revoked.revoked_at.utcoffset() == UTC.utcoffset(None)
    assert revoked.revoked_at >= revoked.created_at
