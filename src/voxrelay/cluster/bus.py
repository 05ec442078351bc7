"""Frames between cluster members over Redis pub/sub: each member listens on a
channel of its own; what one member sends another in a turn of the event loop
leaves as one message, and messages leave in the order they were sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal

from redis.asyncio import Redis

from voxrelay.cluster.pubsub import PubSub
from voxrelay.links.channel import Header, Send, frame, read_frames

log = logging.getLogger(__name__)

# Frames for the member's ``Served`` (requests) or for its ``OwnerClient`` (answers).
Role = Literal["serve", "client"]
OnFrame = Callable[[str, Role, Header, bytes], None]


def inbox(member: str) -> str:
    return f"voxrelay:inbox:{member}"


class Bus:
    def __init__(self, redis: Redis, member: str, on_frame: OnFrame) -> None:
        self._member = member
        self._on_frame = on_frame
        self._pubsub = PubSub(
            redis, inbox(member).encode(), self._deliver, name=f"voxrelay-bus-{member}"
        )
        self._pending: dict[tuple[str, Role], list[bytes]] = {}
        self._flush_scheduled = False

    async def start(self) -> None:
        await self._pubsub.start()

    async def close(self) -> None:
        await self._pubsub.close()

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
        for (member, role), frames in pending.items():
            outer = frame({"from": self._member, "to": role}, b"".join(frames))
            self._pubsub.publish(inbox(member).encode(), outer)

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
