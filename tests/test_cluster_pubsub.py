"""The bus's own Redis pub/sub connections, against the real Redis: order, the
subscription made again after its connection is cut, authentication, and a Redis
that does not answer."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
from harness import wait_until
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from services import REDIS_URL, require_or_skip

from voxrelay.cluster.pubsub import PubSub


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    require_or_skip("redis", "Redis is not running on 127.0.0.1:6379")
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def _channel() -> bytes:
    return b"voxrelay-test:" + secrets.token_hex(4).encode()


async def _named(redis: Redis, name: str) -> list[dict[str, str]]:
    """The connections named ``name`` (this test's own, nobody else's)."""
    return [client for client in await redis.client_list() if client.get("name") == name]


async def _kill_named(redis: Redis, name: str) -> int:
    """Cut the connections named ``name``."""
    killed = 0
    for client in await _named(redis, name):
        killed += await redis.execute_command("CLIENT", "KILL", "ID", client["id"]) or 0
    return killed


async def test_messages_arrive_in_the_order_they_were_published(redis: Redis) -> None:
    got: list[bytes] = []
    inbox = _channel()
    receiver = PubSub(redis, inbox, got.append)
    sender = PubSub(redis, _channel(), lambda _: None)
    await receiver.start()
    await sender.start()
    try:
        sent = [b"%d:" % i + secrets.token_bytes(i % 700) for i in range(2000)]
        for i, message in enumerate(sent):
            sender.publish(inbox, message)
            if i % 50 == 0:
                await asyncio.sleep(0)
        await wait_until(lambda: len(got) >= len(sent))
        assert got == sent
    finally:
        await sender.close()
        await receiver.close()


async def test_a_cut_subscription_is_made_again(redis: Redis) -> None:
    got: list[bytes] = []
    inbox = _channel()
    name = "voxrelay-test-" + secrets.token_hex(3)
    receiver = PubSub(redis, inbox, got.append, name=name)
    await receiver.start()
    try:
        await redis.publish(inbox, b"before")
        await wait_until(lambda: got == [b"before"])
        # The publisher's name is set by a command ``start`` does not wait the answer of.
        for _ in range(250):
            if len(await _named(redis, name)) == 2:
                break
            await asyncio.sleep(0.02)
        assert await _kill_named(redis, name) == 2  # subscriber and publisher
        # Publishing while cut is dropped quietly, not an error.
        receiver.publish(inbox, b"to myself while cut")

        async def reconnected() -> bool:
            # Both connections: the subscriber is made again first, the publisher
            # after it, and what is published before that is dropped.
            named = await _named(redis, name)
            return len(named) == 2 and bool((await redis.pubsub_numsub(inbox))[0][1])

        for _ in range(250):
            if await reconnected():
                break
            await asyncio.sleep(0.02)
        await redis.publish(inbox, b"after")
        receiver.publish(inbox, b"to myself after")
        await wait_until(lambda: got[-2:] == [b"after", b"to myself after"])
        assert got[0] == b"before"
    finally:
        await receiver.close()
    # Closed means gone from Redis too.
    for _ in range(100):
        if not await _named(redis, name):
            break
        await asyncio.sleep(0.02)
    assert not await _named(redis, name)


async def test_a_redis_user_and_password_are_used(redis: Redis) -> None:
    user, password = "voxrelay-test-" + secrets.token_hex(3), secrets.token_hex(8)
    await redis.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "resetchannels", "&voxrelay-test:*", "+@all"
    )
    try:
        inbox = _channel()
        got: list[bytes] = []
        authed = Redis.from_url(f"redis://{user}:{password}@127.0.0.1:6379/0")
        receiver = PubSub(authed, inbox, got.append)
        await receiver.start()
        try:
            receiver.publish(inbox, b"as the user")
            await wait_until(lambda: got == [b"as the user"])
        finally:
            await receiver.close()
            await authed.aclose()

        refused = Redis.from_url(f"redis://{user}:wrong@127.0.0.1:6379/0")
        with pytest.raises(RedisConnectionError, match=r"WRONGPASS|invalid"):
            await PubSub(refused, inbox, got.append).start()
        await refused.aclose()
    finally:
        await redis.execute_command("ACL", "DELUSER", user)


async def test_no_redis_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    nowhere = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(RedisConnectionError, match="pub/sub connection failed"):
        await PubSub(nowhere, _channel(), lambda _: None).start()
    await nowhere.aclose()
