"""The sessions of other processes, as the directory sees them.

A session lives in the process that holds its upstream link. The directory is
given one ``Elsewhere`` that says which ids this process owns and reaches the
owner of every other one, the way python-socketio's server is given its client
manager: ``ONLY_HERE`` for a single process, the workers' link
(``workers.link.Peers``) for several workers behind one port, Redis
(``cluster.Cluster``) for several nodes. The session core never knows which one
it runs under.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from voxrelay.exceptions import OwnerUnavailable
from voxrelay.sessions.live import LiveSession, StartRequest


class Elsewhere(Protocol):
    async def here(self, key: str, *, claim: bool = False) -> bool:
        """Whether the session of a conversation (or the session) with this id lives
        here. With ``claim``, a conversation whose session no process holds is taken
        for this one, at once for every other asking: its session opens here."""
        ...

    async def release(self, key: str) -> None:
        """Give back a claimed conversation whose session did not open here after all."""
        ...

    def new_id(self, prefix: str) -> str:
        """``prefix`` and random characters: an id that this process owns."""
        ...

    async def find(
        self, *, session_id: str | None = None, conversation_id: str | None = None
    ) -> LiveSession | None:
        """The active session by that id, from the process that owns it."""
        ...

    async def start(self, request: StartRequest) -> tuple[LiveSession, bool]:
        """Start (or join) the session in the process that owns the conversation;
        returns it and whether it is new."""
        ...

    async def call(self, key: str, name: str, args: dict[str, Any]) -> Any:
        """Run the owner call ``name`` (``Registry.calls``) in the process owning ``key``."""
        ...


class _OnlyHere:
    """One process: every id is its own, and there is nobody else to ask."""

    async def here(self, key: str, *, claim: bool = False) -> bool:
        return True

    async def release(self, key: str) -> None:
        return None

    def new_id(self, prefix: str) -> str:
        return prefix + secrets.token_hex(12)

    async def find(
        self, *, session_id: str | None = None, conversation_id: str | None = None
    ) -> LiveSession | None:
        return None

    async def start(self, request: StartRequest) -> tuple[LiveSession, bool]:
        raise OwnerUnavailable()

    async def call(self, key: str, name: str, args: dict[str, Any]) -> Any:
        raise OwnerUnavailable()


ONLY_HERE: Elsewhere = _OnlyHere()
