"""The requests a process sends to the owners of sessions: one client per owner, so
that every reply reaches the request that waits for it."""

from __future__ import annotations

import asyncio

from voxrelay.links.channel import Header
from voxrelay.links.owners import OwnerClient, Owners


async def test_a_request_that_starts_as_the_first_connection_is_made_shares_it() -> None:
    """Another request (a second HTTP request, say) may start in the very turn of the
    loop in which the first connection to an owner is made: both use that connection,
    so the reply to the first does not go to a client that does not wait for it."""
    made: list[OwnerClient] = []
    sent: list[Header] = []
    asking: list[asyncio.Task[Header]] = []
    both_sent = asyncio.Event()

    def send(header: Header, payload: bytes = b"") -> None:
        sent.append(header)
        if len(sent) == 2:
            both_sent.set()

    async def connect(owner: object) -> OwnerClient:
        await asyncio.sleep(0)  # reaching an owner takes a turn of the loop at least
        if not made:
            loop = asyncio.get_running_loop()
            loop.call_soon(lambda: asking.append(loop.create_task(find())))
        client = OwnerClient(send)
        made.append(client)
        return client

    owners = Owners(connect, log_keep_seconds=1.0, log_max_bytes=1 << 16, same_clock=True)

    async def find() -> Header:
        return await owners.request("owner", {"op": "find"})

    asking.append(asyncio.create_task(find()))
    async with asyncio.timeout(5):
        await both_sent.wait()
        for header in sent:  # the owner answers on the connection the requests came by
            owners.clients["owner"].on_frame({"op": "reply", "id": header["id"]}, b"")
        await asyncio.gather(*asking)
    assert len(made) == 1
