"""Upgrading a database whose tokens predate token kinds (revision 0001): they keep
working as device tokens, each with the user it acted for before."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command

from voxrelay.auth import authenticate
from voxrelay.exceptions import Forbidden
from voxrelay.store import Store, alembic_config, hash_token, make_engine, migrate
from voxrelay.store.models import UTCDateTime

_OLD_TOKENS = sa.table(
    "device_tokens",
    sa.column("id"),
    sa.column("device"),
    sa.column("user_id"),
    sa.column("token_hash"),
    sa.column("created_at", UTCDateTime()),
    sa.column("revoked_at", UTCDateTime()),
)
_CONVERSATIONS = sa.table(
    "conversations",
    sa.column("id"),
    sa.column("user_id"),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
_AT = datetime(2025, 1, 1, tzinfo=UTC)


def _token(id: str, device: str, user: str | None, revoked: bool = False) -> dict[str, object]:
    return {
        "id": id,
        "device": device,
        "user_id": user,
        "token_hash": hash_token(f"vxr_{id}"),
        "created_at": _AT,
        "revoked_at": _AT if revoked else None,
    }


async def _old_database(url: str) -> None:
    """A database at revision 0001, as the previous version left it."""
    engine = make_engine(url)
    try:
        await migrate(engine, "0001")
        async with engine.begin() as conn:
            await conn.execute(
                _OLD_TOKENS.insert(),
                [
                    _token("tok_bound", "phone", "alice"),
                    _token("tok_unbound", "kitchen", None),
                    _token("tok_unbound2", "kitchen", None),
                    _token("tok_gone", "old", None, revoked=True),
                ],
            )
            await conn.execute(
                _CONVERSATIONS.insert(),
                [
                    {"id": f"conv_{user}", "user_id": user, "created_at": _AT, "updated_at": _AT}
                    for user in ("alice", "device:kitchen")
                ],
            )
    finally:
        await engine.dispose()


async def test_old_tokens_become_device_tokens_of_their_user(database_url: str) -> None:
    await _old_database(database_url)
    async with await Store.open(database_url) as store:
        bound = await authenticate(store, "vxr_tok_bound")
        unbound = await authenticate(store, "vxr_tok_unbound")
        assert (bound.kind, bound.user_id) == ("device", "alice")
        # The user it acted for when a request named none: its conversations stay its own.
        assert (unbound.kind, unbound.user_id) == ("device", "device:kitchen")
        assert (await authenticate(store, "vxr_tok_unbound2")).user_id == "device:kitchen"
        assert await store.authenticate("vxr_tok_gone") is None
        [gone] = [t for t in await store.list_tokens() if t.id == "tok_gone"]
        assert (gone.kind, gone.user_id, gone.active) == ("device", "device:old", False)

        mine = await store.list_conversations(unbound.acting_user())
        assert [c.id for c in mine] == ["conv_device:kitchen"]
        # What it could do before, and may no longer: act for the user a request names.
        with pytest.raises(Forbidden):
            unbound.acting_user("alice")
        assert bound.acting_user("alice") == "alice"

        # New tokens sit beside the old ones.
        _, service = await store.create_token("backend", kind="service")
        assert (await authenticate(store, service)).acting_user("alice") == "alice"


async def test_downgrade_gives_back_the_old_form(database_url: str) -> None:
    await _old_database(database_url)
    async with await Store.open(database_url) as store:
        fresh, _ = await store.create_token("watch", None)
        async with store.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0001"))
            rows = await conn.execute(sa.select(_OLD_TOKENS.c.id, _OLD_TOKENS.c.user_id))
            users = {id: user for id, user in rows}
    assert users["tok_bound"] == "alice"
    assert users["tok_unbound"] is None
    assert users[fresh.id] == f"device:{fresh.id}"
    # And up again.
    async with await Store.open(database_url) as store:
        assert (await authenticate(store, "vxr_tok_unbound")).user_id == "device:kitchen"
