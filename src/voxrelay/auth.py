"""Tokens: who is asking, and on behalf of which user. Every transport asks
:meth:`Device.acting_user`; this is the one place that decides."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from voxrelay.exceptions import Forbidden, InvalidRequest, Unauthorized
from voxrelay.store import Store, TokenKind
from voxrelay.store.ids import check_id, is_device_user


@dataclass(frozen=True, slots=True)
class Device:
    """The holder of a token: a device (``kind`` "device") or an application backend
    (``kind`` "service"), called ``name``."""

    name: str
    # A device's user; a service has none.
    user_id: str | None
    # The token it presented (its record's id), watched for revocation.
    token_id: str = ""
    kind: TokenKind = "device"

    def acting_user(self, requested: str | None = None) -> str:
        """The user whose conversations this request sees, given the ``userId`` it
        names (``None`` or empty: none).

        A device acts for its own user only: naming any other is :class:`Forbidden`
        (naming its own is fine). A service acts for the user each request names and
        must name one (:class:`InvalidRequest`); a device's own user (``device:…``)
        is not one it may name (:class:`Forbidden`).
        """
        if self.kind == "device":
            if self.user_id is None:
                raise Unauthorized("the device token has no user")
            if requested and requested != self.user_id:
                raise Forbidden(
                    "a device token acts only for its own user and may not name another"
                    " userId; only a service token (voxrelay token create --service) may"
                )
            return self.user_id
        if not requested:
            raise InvalidRequest("a service token must name the userId it acts for")
        try:
            check_id(requested, "userId")
        except ValueError as error:
            raise InvalidRequest(str(error)) from None
        if is_device_user(requested):
            raise Forbidden("userId names a device's own user, which only that device sees")
        return requested


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
    return Device(record.name, record.user_id, record.id, record.kind)
