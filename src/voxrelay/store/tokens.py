"""The store's device tokens: created, listed, revoked, and the one a request presents."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import select, update

from .base import StoreBase, rowcount, utcnow
from .ids import TOKEN_ID_PREFIX, hash_token, new_id, new_token
from .models import DeviceTokenRow
from .records import DeviceToken


class TokenStore(StoreBase):
    async def create_token(self, device: str, user_id: str | None) -> tuple[DeviceToken, str]:
        """A new token for ``device``: returns its record and the plaintext (shown once)."""
        if not device:
            raise ValueError("device name must not be empty")
        token = new_token()
        row = DeviceTokenRow(
            id=new_id(TOKEN_ID_PREFIX),
            device=device,
            user_id=user_id,
            token_hash=hash_token(token),
            created_at=utcnow(),
            revoked_at=None,
        )
        async with self._session.begin() as s:
            s.add(row)
        return _token_record(row), token

    async def list_tokens(self) -> list[DeviceToken]:
        """Every token, revoked ones included, oldest first."""
        async with self._session.begin() as s:
            rows = await s.scalars(
                select(DeviceTokenRow).order_by(DeviceTokenRow.created_at, DeviceTokenRow.id)
            )
            return [_token_record(r) for r in rows]

    async def revoke_token(self, device: str) -> int:
        """Revoke every active token of ``device``; returns how many were revoked."""
        async with self._session.begin() as s:
            result = await s.execute(
                update(DeviceTokenRow)
                .where(DeviceTokenRow.device == device, DeviceTokenRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return rowcount(result)

    async def active_token_ids(self, ids: Collection[str]) -> set[str]:
        """Which of the token ids ``ids`` are not revoked (nor deleted)."""
        if not ids:
            return set()
        async with self._session.begin() as s:
            found = await s.scalars(
                select(DeviceTokenRow.id).where(
                    DeviceTokenRow.id.in_(list(ids)), DeviceTokenRow.revoked_at.is_(None)
                )
            )
            return set(found)

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
        device=r.device,
        user_id=r.user_id,
        created_at=r.created_at,
        revoked_at=r.revoked_at,
    )
