"""A ``seq`` upload cut off midway: its retry reports the bytes the session really
got, and forwards nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from harness import RunningServer

from voxrelay.client import ApiError, VoxrelayClient


async def test_a_seq_retried_after_a_413_reports_what_was_forwarded(
    launch: Callable[..., RunningServer],
) -> None:
    limit = 64_000
    server = launch(max_upload_bytes=limit, max_upload_realtime_factor=0)
    async with VoxrelayClient(server.url, await server.token()) as client:
        cid = (await client.create_session(inputSampleRate=16000))["conversationId"]

        async def too_much() -> AsyncIterator[bytes]:
            for _ in range(10):  # chunked, so the size is found out while forwarding
                yield bytes(16_000)
                await asyncio.sleep(0.02)

        with pytest.raises(ApiError) as refused:
            await client.upload(cid, too_much(), seq=7)
        assert refused.value.status == 413
        retried = await client.upload(cid, bytes(16_000), seq=7)
        assert 0 < retried["bytesReceived"] <= limit
        assert retried["bytesReceived"] % 16_000 == 0  # whole chunks, each forwarded once
        await client.end(cid)
