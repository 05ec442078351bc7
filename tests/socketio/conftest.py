from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from sock import Sock


@pytest.fixture
async def socks() -> AsyncIterator[Callable[[str], Sock]]:
    made: list[Sock] = []

    def make(transport: str = "websocket") -> Sock:
        sock = Sock(transport)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        try:
            await sock.close()
        except Exception:
            pass
