"""Usage and limits through ``/v1/realtime`` in pass-through mode, against an upstream
of either dialect: the client's own audio counted once, every answer's usage stored as
the upstream reported it, and a daily token quota ending the conversation after the
answer that reached it (the protocol's ``error``, then close 4429)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import RunningServer, wait_until
from realtime_ws_client import KEY, conversation_id, speech_24k, text_item
from realtime_ws_client import connect as sdk_connect
from websockets.exceptions import ConnectionClosed

from voxrelay.client import VoxrelayClient


def _launch(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, dialect: str, **more: Any
) -> RunningServer:
    if dialect == "ga":
        return launch(provider="openai", openai_url=fake.url, openai_api_key=KEY, **more)
    return launch(
        provider="azure",
        azure_endpoint=fake.http_url,
        azure_api_key=KEY,
        azure_deployment="voice-dep",
        azure_api_version="2024-10-01-preview",
        **more,
    )


async def test_usage_of_a_pass_through_conversation(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, upstream_dialect: str
) -> None:
    relay = _launch(launch, fake, upstream_dialect)
    fake.transcribe = lambda pcm: "go forward ten meters"
    token = await relay.token()
    async with sdk_connect(relay, token) as conversation:
        await conversation.until("session.created", "conversation.created")
        cid = conversation_id(conversation)
        await conversation.conn.conversation.item.create(item=text_item("my name is Dana"))
        await conversation.conn.response.create()
        await conversation.until("response.done")
        speech = speech_24k()
        await conversation.append_audio(speech)
        await conversation.until("response.done")
        await wait_until(lambda: len(fake.audio_received()) >= len(speech))
    await wait_until(lambda: relay.registry.for_conversation(cid) is None)

    async with VoxrelayClient(relay.url, token) as client:
        usage = (await client.conversation(cid))["usage"]
    reported = [e["response"]["usage"] for e in fake.server_events("response.done")]
    assert usage["responses"] == len(reported) == 2
    assert usage["inputTokens"] == sum(u["input_tokens"] for u in reported)
    assert usage["outputTokens"] == sum(u["output_tokens"] for u in reported)
    assert usage["inputCachedTokens"] == sum(
        u["input_token_details"]["cached_tokens"] for u in reported
    )
    assert usage["outputAudioTokens"] == sum(
        u["output_token_details"]["audio_tokens"] for u in reported
    )
    heard = fake.server_events("conversation.item.input_audio_transcription.completed")
    if upstream_dialect == "beta":  # whisper-1: billed by the audio's duration
        assert usage["transcriptionSeconds"] == round(heard[0]["usage"]["seconds"], 3)
    else:
        assert usage["transcriptionInputTokens"] == heard[0]["usage"]["input_tokens"]
    # The client's audio, counted once however it was sent, as the upstream took it.
    assert usage["audioInSeconds"] == round(len(fake.audio_received()) / 48000, 3)
    delta = "response.output_audio.delta" if upstream_dialect == "ga" else "response.audio.delta"
    sent = sum(len(base64.b64decode(e["delta"])) for e in fake.server_events(delta))
    assert usage["audioOutSeconds"] == round(sent / 48000, 3)


async def test_a_daily_token_quota_closes_the_socket_after_the_answer(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, upstream_dialect: str
) -> None:
    relay = _launch(launch, fake, upstream_dialect, quota_tokens_per_day=20)
    token = await relay.token()
    async with sdk_connect(relay, token) as conversation:
        await conversation.until("session.created")
        await conversation.conn.conversation.item.create(item=text_item("my name is Dana"))
        await conversation.conn.response.create()
        done = (await conversation.until("response.done"))[-1]
        assert done["response"]["status"] == "completed"
        error = (await conversation.until("error"))[-1]
        assert error["error"]["code"] == "quota_exceeded"
        with pytest.raises(ConnectionClosed):
            while True:
                await conversation.next()
        assert conversation.raw.close_code == 4429
    # And the next connection is refused at once.
    async with sdk_connect(relay, token) as conversation:
        refused = await conversation.next()
        assert refused["error"]["code"] == "quota_exceeded"
        with pytest.raises(ConnectionClosed):
            await conversation.next()
