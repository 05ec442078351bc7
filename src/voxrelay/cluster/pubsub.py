"""Redis pub/sub for the bus's hot path, on two connections of its own.

redis-py costs about 50 µs of CPU per message published and received (its
``PubSub.get_message`` takes locks, health checks and a task switch per
message); an audio chunk that crosses nodes is a message each way. Here a plain
asyncio protocol writes RESP commands at once and hiredis's C parser reads
the replies: about 5 µs per message. Everything else (leases, membership) stays
on redis-py, which shares the connection settings it was made with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)

_RECONNECT_FIRST_S = 0.1
_RECONNECT_MAX_S = 2.0
# A warning per this many seconds at most while publishes fail.
_WARN_EVERY_S = 5.0


def command(*parts: bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(out)


class _Connection(asyncio.Protocol):
    """One connection: replies parsed as they come, each handed to ``on_reply``."""

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self._reader = hiredis.Reader()
        self._on_reply = on_reply
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio's.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            self._on_reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)


class PubSub:
    """Subscribed to ``channel`` (each message's data to ``on_message``), and a
    ``publish`` that writes at once, in order. While Redis does not answer,
    publishes are dropped with a warning (their receivers notice what is missing)
    and both connections are made again, the subscription with them."""

    def __init__(
        self,
        redis: Redis,
        channel: bytes,
        on_message: Callable[[bytes], None],
        *,
        name: str = "voxrelay-bus",
    ) -> None:
        pool = redis.connection_pool
        self._settings: dict[str, Any] = dict(pool.connection_kwargs)
        self._kind = pool.connection_class
        self._channel = channel
        self._name = name.encode()
        self._on_message = on_message
        self._publisher: _Connection | None = None
        self._subscriber: _Connection | None = None
        self._subscribed: asyncio.Future[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._warned_at = 0.0
        self._closed = False

    async def start(self) -> None:
        """Connect and subscribe; ``redis.exceptions.ConnectionError`` when Redis does
        not answer (nothing is left running then)."""
        try:
            await self._connect()
        except (OSError, RedisConnectionError, TimeoutError) as error:
            self._drop()
            raise RedisConnectionError(f"pub/sub connection failed: {error}") from error
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep_connected(), name="cluster-pubsub"
        )

    def publish(self, channel: bytes, data: bytes) -> None:
        publisher = self._publisher
        if publisher is None or publisher.transport is None:
            self._warn("not connected to Redis")
            return
        publisher.transport.write(command(b"PUBLISH", channel, data))

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(BaseException):
                await self._keeper
        self._drop()

    # -- connections ---

    async def _connect(self) -> None:
        timeout = self._settings.get("socket_connect_timeout") or 5.0
        self._subscribed = asyncio.get_running_loop().create_future()
        self._subscriber = await asyncio.wait_for(self._open(self._on_subscriber_reply), timeout)
        assert self._subscriber.transport is not None
        self._subscriber.transport.write(command(b"SUBSCRIBE", self._channel))
        await asyncio.wait_for(asyncio.shield(self._subscribed), timeout)
        self._publisher = await asyncio.wait_for(self._open(self._on_publish_reply), timeout)

    async def _open(self, on_reply: Callable[[Any], None]) -> _Connection:
        loop = asyncio.get_running_loop()
        settings = self._settings
        made: tuple[Any, _Connection]
        if issubclass(self._kind, UnixDomainSocketConnection):
            made = await loop.create_unix_connection(
                lambda: _Connection(on_reply), settings["path"]
            )
        else:
            made = await loop.create_connection(
                lambda: _Connection(on_reply),
                settings.get("host", "localhost"),
                int(settings.get("port", 6379)),
                ssl=self._ssl_context(),
            )
        connection = made[1]
        password = settings.get("password")
        if password:
            username = settings.get("username")
            auth = (username.encode(),) if username else ()
            assert connection.transport is not None
            # The reply (+OK, or an error that ends in a closed connection) is read
            # like every other one; a refused AUTH shows as errors on what follows.
            connection.transport.write(command(b"AUTH", *auth, password.encode()))
        assert connection.transport is not None
        # Named in ``CLIENT LIST``, for whoever runs the Redis.
        connection.transport.write(command(b"CLIENT", b"SETNAME", self._name))
        return connection

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not issubclass(self._kind, SSLConnection):
            return None
        settings = self._settings
        context = ssl.create_default_context(cafile=settings.get("ssl_ca_certs"))
        if settings.get("ssl_certfile"):
            context.load_cert_chain(settings["ssl_certfile"], settings.get("ssl_keyfile"))
        if settings.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif not settings.get("ssl_check_hostname", True):
            context.check_hostname = False
        return context

    async def _keep_connected(self) -> None:
        delay = _RECONNECT_FIRST_S
        while not self._closed:
            lost = [c.lost for c in (self._subscriber, self._publisher) if c is not None]
            if lost:
                await asyncio.wait(lost, return_when=asyncio.FIRST_COMPLETED)
            self._drop()
            log.warning("lost the pub/sub connection to Redis; connecting again")
            while not self._closed:
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except (OSError, RedisConnectionError, TimeoutError) as error:
                    self._drop()
                    delay = min(delay * 2, _RECONNECT_MAX_S)
                    self._warn(f"connecting again failed: {error}")
                    continue
                delay = _RECONNECT_FIRST_S
                log.warning("pub/sub connection to Redis made again")
                break

    def _drop(self) -> None:
        for connection in (self._subscriber, self._publisher):
            if connection is not None and connection.transport is not None:
                connection.transport.abort()
        self._subscriber = self._publisher = None

    # -- replies ---

    def _on_subscriber_reply(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"message":
                try:
                    self._on_message(reply[2])
                except Exception:
                    log.exception("a message from another member could not be handled")
                return
            if kind == b"subscribe":
                if self._subscribed is not None and not self._subscribed.done():
                    self._subscribed.set_result(None)
                return
        if isinstance(reply, hiredis.ReplyError):
            self._refused(reply)
            if self._subscribed is not None and not self._subscribed.done():
                self._subscribed.set_exception(RedisConnectionError(str(reply)))

    def _on_publish_reply(self, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            self._refused(reply)

    def _refused(self, error: hiredis.ReplyError) -> None:
        self._warn(f"Redis refused a command: {error}")

    def _warn(self, why: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning("publishing to other members failed: %s", why)
