"""Limits on ``/v1/realtime`` in pass-through mode: audio sent much faster than it
can be spoken is refused with an error event and never reaches the upstream."""

from __future__ import annotations

import base64
from collections.abc import Callable

from fakes.openai_realtime import FakeRealtimeServer
from harness import RunningServer, silence, wait_until
from realtime_ws_client import KEY, connect


async def test_audio_too_fast_is_refused_before_the_upstream(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, upstream_dialect: str
) -> None:
    limits = {"max_upload_realtime_factor": 4, "upload_burst_seconds": 1}
    if upstream_dialect == "ga":
        relay = launch(provider="openai", openai_url=fake.url, openai_api_key=KEY, **limits)
    else:
        relay = launch(
            provider="azure",
            azure_endpoint=fake.http_url,
            azure_api_key=KEY,
            azure_deployment="voice-dep",
            azure_api_version="2024-10-01-preview",
            **limits,
        )
    async with connect(relay, await relay.token()) as conversation:
        await conversation.until("session.created")
        too_much = base64.b64encode(silence(3000, 24000)).decode()
        await conversation.conn.input_audio_buffer.append(audio=too_much)
        error = (await conversation.until("error"))[-1]
        assert error["error"]["code"] == "audio_too_fast"
        short = silence(200, 24000)
        await conversation.conn.input_audio_buffer.append(audio=base64.b64encode(short).decode())
        await wait_until(lambda: len(fake.audio_received()) >= len(short))
        assert fake.audio_received() == short
