"""Frames between cluster members over Redis pub/sub: each member listens on a
channel of its own; what one member sends another in a turn of the event loop
leaves as one message, and messages leave in the order they were sent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal

from redis.asyncio import Redis

from voxrelay.links.channel import Header, Send, frame, read_frames

log = logging.getLogger(__name__)

# Frames for the member's ``Served`` (requests) or for its ``OwnerClient`` (answers).
Role = Literal["serve", "client"]
OnFrame = Callable[[str, Role, Header, bytes], None]


def inbox(member: str) -> str:
    return f"voxrelay:inbox:{member}"


class Bus:
    def __init__(self, redis: Redis, member: str, on_frame: OnFrame) -> None:
        self._redis = redis
        self._member = member
        self._on_frame = on_frame
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: dict[tuple[str, Role], list[bytes]] = {}
        self._batches: asyncio.Queue[dict[tuple[str, Role], list[bytes]]] = asyncio.Queue()
        self._flush_scheduled = False

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(inbox(self._member))
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(), name="cluster-bus-reader")
        self._writer = loop.create_task(self._write(), name="cluster-bus-writer")

    async def close(self) -> None:
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    def sender(self, member: str, role: Role) -> Send:
        """Send frames to ``member``'s ``role``."""
        destination = (member, role)

        def send(header: Header, payload: bytes = b"") -> None:
            self._pending.setdefault(destination, []).append(frame(header, payload))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

        return send

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        self._batches.put_nowait(pending)

    async def _write(self) -> None:
        while True:
            batches = [await self._batches.get()]
            # Whatever queued while the last round trip was out goes in this one.
            while not self._batches.empty():
                batches.append(self._batches.get_nowait())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for batch in batches:
                        for (member, role), frames in batch.items():
                            outer = frame({"from": self._member, "to": role}, b"".join(frames))
                            pipe.publish(inbox(member), outer)
                    await pipe.execute()
            except Exception as error:
                # The receivers notice what is missing (a reply times out, a stream
                # sees its owner gone); the bus goes on.
                log.warning("publishing to other members failed: %s", error)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=None
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("reading from other members failed: %s", error)
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            self._deliver(message["data"])

    def _deliver(self, data: bytes) -> None:
        try:
            outer, _ = read_frames(data)
            for header, inner in outer:
                sender, role = str(header["from"]), header["to"]
                frames, _ = read_frames(inner)
                for inner_header, payload in frames:
                    self._on_frame(sender, role, inner_header, payload)
        except Exception:
            log.exception("a message from another member could not be handled")
