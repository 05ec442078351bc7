"""Tokens: who is asking, and on behalf of which user. Every transport asks
:meth:`Device.acting_user`; this is the one place that decides."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from voxrelay import metrics
from voxrelay.exceptions import Forbidden, InvalidRequest, Unauthorized
from voxrelay.store import Store, TokenKind
from voxrelay.store.ids import check_id, hash_token, is_device_user


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


async def authenticate(store: Store, token: str | None, known: KnownTokens | None = None) -> Device:
    """The holder of ``token``: from ``known`` when it was let in lately and is still
    valid there, else from the store (:class:`Unauthorized` for none)."""
    if not token:
        raise Unauthorized("a device token is required (Authorization: Bearer ...)")
    digest = hash_token(token)
    if known is not None:
        device = known.get(digest)
        if device is not None:
            metrics.TOKEN_CHECKS.labels(source="known").inc()
            return device
    metrics.TOKEN_CHECKS.labels(source="database").inc()
    record = await store.authenticate(token)
    if record is None:
        raise Unauthorized("the device token is unknown or revoked")
    device = Device(record.name, record.user_id, record.id, record.kind)
    if known is not None:
        known.add(digest, device)
    return device


@dataclass(frozen=True, slots=True)
class KnownCheck:
    """The known tokens one revocation check asks about, as they were when it began."""

    token_ids: frozenset[str]
    began: float


class KnownTokens:
    """Tokens this process let in lately, by their hash, each trusted for
    ``trust_seconds`` after the database last said it was valid (when it was let in,
    or at a revocation check since). Unknown, revoked and stale ones go to the store.
    At most ``capacity``, the least lately used forgotten first."""

    def __init__(self, trust_seconds: float, capacity: int = 4096) -> None:
        self._trust_seconds = trust_seconds
        self._capacity = capacity
        # hash → (device, when the database last said it was valid)
        self._tokens: OrderedDict[str, tuple[Device, float]] = OrderedDict()

    def get(self, digest: str) -> Device | None:
        entry = self._tokens.get(digest)
        if entry is None:
            return None
        device, valid_at = entry
        if time.monotonic() - valid_at > self._trust_seconds:
            return None
        self._tokens.move_to_end(digest)
        return device

    def add(self, digest: str, device: Device) -> None:
        self._tokens[digest] = (device, time.monotonic())
        self._tokens.move_to_end(digest)
        while len(self._tokens) > self._capacity:
            self._tokens.popitem(last=False)

    def checking(self) -> KnownCheck:
        ids = frozenset(device.token_id for device, _ in self._tokens.values())
        return KnownCheck(ids, time.monotonic())

    def checked(self, check: KnownCheck, active: set[str]) -> None:
        """``active``: which of ``check``'s tokens the database said are valid."""
        for digest, (device, valid_at) in list(self._tokens.items()):
            if device.token_id not in check.token_ids:
                continue  # let in while the check ran: valid as of then already
            if device.token_id in active:
                self._tokens[digest] = (device, max(valid_at, check.began))
            else:
                del self._tokens[digest]
