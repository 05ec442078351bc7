"""Device tokens: who is asking, and on behalf of which user."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from voxrelay.exceptions import InvalidRequest, Unauthorized
from voxrelay.store import Store
from voxrelay.store.ids import storable


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    user_id: str | None
    # The token it presented (its record's id), watched for revocation.
    token_id: str = ""

    def acting_user(self, requested: str | None = None) -> str:
        """The user whose conversations this device sees.

        A token bound to a user always acts for it. A token created without
        ``--user`` acts for the ``userId`` a request names, else for a user of
        its own (``device:NAME``).
        """
        if self.user_id is not None:
            return self.user_id
        if requested and not storable(requested):
            raise InvalidRequest("userId must not hold a NUL character")
        return requested or f"device:{self.name}"


def bearer_token(connection: HTTPConnection, *, allow_query: bool = False) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if allow_query:
        return connection.query_params.get("access_token") or None
    return None


async def authenticate(store: Store, token: str | None) -> Device:
    if not token:
        raise Unauthorized("a device token is required (Authorization: Bearer ...)")
    record = await store.authenticate(token)
    if record is None:
        raise Unauthorized("the device token is unknown or revoked")
    return Device(record.device, record.user_id, record.id)
