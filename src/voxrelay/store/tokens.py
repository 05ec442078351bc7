"""The store's tokens (devices' and services'): created, listed, revoked, and the one a
request presents."""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

from sqlalchemy import select, update

from .base import StoreBase, rowcount, utcnow
from .errors import AmbiguousToken
from .ids import TOKEN_ID_PREFIX, check_user_id, device_user, hash_token, new_id, new_token
from .models import DeviceTokenRow
from .records import TOKEN_KINDS, DeviceToken, TokenKind

_IDS_PER_QUERY = 500


class TokenStore(StoreBase):
    async def create_token(
        self, name: str, user_id: str | None = None, *, kind: TokenKind = "device"
    ) -> tuple[DeviceToken, str]:
        """A new token: returns its record and the plaintext (shown once).

        A device token acts for ``user_id``, or without one for a user of its own
        (``device:<its token id>``), seen by no other token. A service token has no
        user (each request names one). ``ValueError`` for an empty name, a user id
        that is not one (or is a device's own), or a service given a user.
        """
        if not name:
            raise ValueError("the name must not be empty")
        if kind not in TOKEN_KINDS:
            raise ValueError(f"a token is of kind {' or '.join(TOKEN_KINDS)}, not {kind!r}")
        if kind == "service" and user_id is not None:
            raise ValueError("a service token has no user: each request names its userId")
        if user_id is not None:
            check_user_id(user_id)
        token, token_id = new_token(), new_id(TOKEN_ID_PREFIX)
        if kind == "device" and user_id is None:
            user_id = device_user(token_id)
        row = DeviceTokenRow(
            id=token_id,
            name=name,
            kind=kind,
            user_id=user_id,
            token_hash=hash_token(token),
            created_at=utcnow(),
            revoked_at=None,
        )
        async with self._session.begin() as s:
            s.add(row)
        return _token_record(row), token

    async def list_tokens(self, *, user_id: str | None = None) -> list[DeviceToken]:
        """Every token (of ``user_id``'s devices, when given), revoked ones included,
        oldest first."""
        stmt = select(DeviceTokenRow).order_by(DeviceTokenRow.created_at, DeviceTokenRow.id)
        if user_id is not None:
            stmt = stmt.where(DeviceTokenRow.user_id == user_id)
        async with self._session.begin() as s:
            return [_token_record(r) for r in await s.scalars(stmt)]

    async def revoke_token(
        self, name: str, *, user_id: str | None = None, kind: TokenKind | None = None
    ) -> int:
        """Revoke the active tokens called ``name`` (only of ``user_id``'s devices, or
        only of ``kind``, when given); returns how many were revoked.

        Device names are each user's own, so the name alone may match the tokens of
        several users (or of a service too): then nothing is revoked and
        :class:`AmbiguousToken` lists the matches.
        """
        t = DeviceTokenRow
        stmt = select(t).where(t.name == name, t.revoked_at.is_(None)).order_by(t.created_at)
        if user_id is not None:
            stmt = stmt.where(t.user_id == user_id)
        if kind is not None:
            stmt = stmt.where(t.kind == kind)
        async with self._session.begin() as s:
            matches = [_token_record(r) for r in await s.scalars(stmt)]
            if len({m.owner for m in matches}) > 1:
                raise AmbiguousToken(name, matches)
            if not matches:
                return 0
            result = await s.execute(
                update(t)
                .where(t.id.in_([m.id for m in matches]), t.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return rowcount(result)

    async def active_token_ids(self, ids: Collection[str]) -> set[str]:
        """Which of the token ids ``ids`` are not revoked (nor deleted)."""
        wanted = list(ids)
        active: set[str] = set()
        if not wanted:
            return active
        async with self._session.begin() as s:
            # In slices: SQLite bounds how many values one statement may bind.
            for start in range(0, len(wanted), _IDS_PER_QUERY):
                found = await s.scalars(
                    select(DeviceTokenRow.id).where(
                        DeviceTokenRow.id.in_(wanted[start : start + _IDS_PER_QUERY]),
                        DeviceTokenRow.revoked_at.is_(None),
                    )
                )
                active.update(found)
        return active

    async def authenticate(self, token: str) -> DeviceToken | None:
        """The active token record matching ``token``, else None (unknown or revoked)."""
        if not token:
            return None
        async with self._session.begin() as s:
            row = await s.scalar(
                select(DeviceTokenRow).where(
                    DeviceTokenRow.token_hash == hash_token(token),
                    DeviceTokenRow.revoked_at.is_(None),
                )
            )
            return None if row is None else _token_record(row)


def _token_record(r: DeviceTokenRow) -> DeviceToken:
    return DeviceToken(
        id=r.id,
        name=r.name,
        kind=cast(TokenKind, r.kind),
        user_id=r.user_id,
        created_at=r.created_at,
        revoked_at=r.revoked_at,
    )
