"""The OpenAI / Azure OpenAI realtime provider against the protocol-faithful fake."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fakes.openai_realtime import FakeRealtimeServer, sine_pcm

from voxrelay.config import Settings
from voxrelay.events import (
    AudioDelta,
    InputCommitted,
    ModelError,
    ModelEvent,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
)
from voxrelay.providers.base import HistoryMessage, ProviderError, SessionOptions
from voxrelay.providers.endpoints import azure_provider, openai_provider
from voxrelay.providers.openai import RealtimeProvider

PREVIEW = "2024-10-01-preview"
MANUAL = SessionOptions(turn_detection="manual")


def speech_then_silence() -> bytes:
    return sine_pcm(0, 24000 // 2) + bytes(24000 * 2 * 6 // 10)  # 0.5 s tone, 0.6 s silence


def chunks(pcm: bytes, size: int = 960) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def openai_settings(fake: FakeRealtimeServer, **changes: Any) -> Settings:
    return Settings(provider="openai", openai_api_key="sk-test", openai_url=fake.url, **changes)


def azure_settings(fake: FakeRealtimeServer, **changes: Any) -> Settings:
    return Settings(
        provider="azure",
        azure_endpoint=fake.http_url + "/",
        azure_api_key="azure-key",
        azure_deployment="voice",
        **changes,
    )


def provider_for(fake: FakeRealtimeServer) -> RealtimeProvider:
    """GA through the OpenAI constructor, beta through Azure's preview endpoint."""
    if fake.dialect == "ga":
        return openai_provider(openai_settings(fake))
    return azure_provider(azure_settings(fake, azure_api_version=PREVIEW))


class Collector:
    """Where the provider emits its events, as a session's ``on_model_event`` is.
    ``lost`` is set by a fatal error (the link dropped)."""

    def __init__(self) -> None:
        self.events: list[ModelEvent] = []
        self.lost = asyncio.Event()

    def __call__(self, event: ModelEvent) -> None:
        assert not self.lost.is_set(), f"{event} emitted after the link was lost"
        self.events.append(event)
        if isinstance(event, ModelError) and event.fatal:
            self.lost.set()

    async def until(self, match: Callable[[ModelEvent], bool], seconds: float = 5.0) -> ModelEvent:
        async with asyncio.timeout(seconds):
            while True:
                for event in self.events:
                    if match(event):
                        return event
                await asyncio.sleep(0.005)

    async def until_done(self) -> ResponseDone:
        done = await self.until(lambda e: isinstance(e, ResponseDone))
        assert isinstance(done, ResponseDone)
        return done


@pytest.fixture(params=["ga", "beta"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(request.param, delta_delay=0.001) as server:
        yield server
    assert server.validation_errors == []


@pytest.fixture
async def opened(fake: FakeRealtimeServer) -> AsyncIterator[tuple[RealtimeProvider, Collector]]:
    """A provider opened with default options and a collector reading its events."""
    provider = provider_for(fake)
    collector = Collector()
    await provider.open(SessionOptions(), [], collector)
    yield provider, collector
    await provider.close()


# --- where it connects -------------------------------------------------------------------


async def test_openai_url_and_bearer_auth() -> None:
    async with FakeRealtimeServer("ga") as fake:
        provider = openai_provider(openai_settings(fake, openai_model="gpt-realtime-mini"))
        assert provider.dialect == "ga"
        await provider.open(SessionOptions(), [], Collector())
        await provider.close()
        merged = openai_provider(openai_settings(fake).with_changes(openai_url=fake.url + "?x=1"))
        await merged.open(SessionOptions(), [], Collector())
        await merged.close()
    first, second = fake.connections
    assert first.path == "/v1/realtime?model=gpt-realtime-mini"
    assert first.headers["authorization"] == "Bearer sk-test"
    assert "api-key" not in first.headers
    assert second.path == "/v1/realtime?x=1&model=gpt-realtime"
    assert fake.validation_errors == []


async def test_azure_ga_url_and_api_key() -> None:
    async with FakeRealtimeServer("ga") as fake:
        provider = azure_provider(azure_settings(fake))
        assert provider.dialect == "ga"
        await provider.open(SessionOptions(), [], Collector())
        await provider.close()
    (record,) = fake.connections
    assert record.path == "/openai/v1/realtime?model=voice"
    assert record.headers["api-key"] == "azure-key"
    assert "authorization" not in record.headers
    assert fake.validation_errors == []


async def test_azure_preview_url_and_api_key() -> None:
    async with FakeRealtimeServer("beta") as fake:
        provider = azure_provider(azure_settings(fake, azure_api_version=PREVIEW))
        assert provider.dialect == "beta"
        await provider.open(SessionOptions(), [], Collector())
        await provider.close()
    (record,) = fake.connections
    assert record.path == f"/openai/realtime?api-version={PREVIEW}&deployment=voice"
    assert record.headers["api-key"] == "azure-key"
    assert fake.validation_errors == []


def test_azure_endpoint_schemes() -> None:
    base = Settings(azure_api_key="k", azure_deployment="d")
    for endpoint, url in [
        ("https://name.openai.azure.com", "wss://name.openai.azure.com/openai/v1/realtime?model=d"),
        (
            "https://name.openai.azure.com/",
            "wss://name.openai.azure.com/openai/v1/realtime?model=d",
        ),
        ("http://proxy:8080/base/", "ws://proxy:8080/base/openai/v1/realtime?model=d"),
    ]:
        assert azure_provider(base.with_changes(azure_endpoint=endpoint)).url == url


def test_missing_settings_are_provider_errors() -> None:
    with pytest.raises(ProviderError, match="OPENAI_API_KEY"):
        openai_provider(Settings())
    with pytest.raises(ProviderError, match=r"AZURE_OPENAI_ENDPOINT.*AZURE_OPENAI_DEPLOYMENT"):
        azure_provider(Settings(azure_api_key="k"))


async def test_refused_connection_is_a_provider_error_without_secrets() -> None:
    async with FakeRealtimeServer("ga", api_key="the-right-key") as fake:
        provider = openai_provider(openai_settings(fake))
        with pytest.raises(ProviderError) as refused:
            await provider.open(SessionOptions(), [], Collector())
    message = str(refused.value)
    assert "401" in message
    assert "sk-test" not in message
    assert refused.value.__cause__ is None


async def test_unreachable_upstream_is_a_provider_error() -> None:
    async with FakeRealtimeServer("ga") as fake:
        settings = openai_settings(fake)
    provider = openai_provider(settings)  # nothing listens there any more
    with pytest.raises(ProviderError, match="cannot connect"):
        await provider.open(SessionOptions(), [], Collector())


# --- what it says when it opens ------------------------------------------------------------


async def test_session_update_carries_the_options(fake: FakeRealtimeServer) -> None:
    provider = provider_for(fake)
    options = SessionOptions(
        instructions="Be brief.", voice="cedar", language="fr", turn_detection="manual"
    )
    await provider.open(options, [], Collector())
    await provider.close()
    (update,) = fake.client_events("session.update")
    pcm = {"type": "audio/pcm", "rate": 24000}
    if fake.dialect == "ga":
        assert update["session"] == {
            "type": "realtime",
            "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": pcm,
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "fr"},
                    "turn_detection": None,
                },
                "output": {"format": pcm, "voice": "cedar"},
            },
        }
    else:
        assert update["session"] == {
            "modalities": ["text", "audio"],
            "instructions": "Be brief.",
            "voice": "cedar",
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "fr"},
            "turn_detection": None,
        }


async def test_session_update_sends_only_what_is_set(fake: FakeRealtimeServer) -> None:
    provider = provider_for(fake)
    await provider.open(SessionOptions(), [], Collector())
    await provider.close()
    (update,) = fake.client_events("session.update")
    session = update["session"]
    assert "instructions" not in session
    if fake.dialect == "ga":
        assert session["audio"]["input"]["turn_detection"] == {"type": "server_vad"}
        assert "language" not in session["audio"]["input"]["transcription"]
        assert "voice" not in session["audio"]["output"]
    else:
        assert session["turn_detection"] == {"type": "server_vad"}
        assert "language" not in session["input_audio_transcription"]
        assert "voice" not in session


async def test_history_is_replayed_as_items(fake: FakeRealtimeServer) -> None:
    provider = provider_for(fake)
    history = [
        HistoryMessage("user", "What is the capital of France?"),
        HistoryMessage("assistant", "Paris."),
    ]
    await provider.open(SessionOptions(), history, Collector())
    await fake.wait_for("conversation.item.create", count=2)
    await provider.close()
    assistant_text = "output_text" if fake.dialect == "ga" else "text"
    assert [e["item"] for e in fake.client_events("conversation.item.create")] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "What is the capital of France?"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": assistant_text, "text": "Paris."}],
        },
    ]
    types = [e["type"] for e in fake.client_events()]
    assert types == ["session.update", "conversation.item.create", "conversation.item.create"]


# --- a conversation -----------------------------------------------------------------------


async def test_audio_arrives_as_the_same_bytes(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    provider, _ = opened
    pcm = bytes(range(256)) * 30
    for chunk in chunks(pcm, 1000):  # odd sizes too
        await provider.send_audio(chunk)
    await fake.wait_for("input_audio_buffer.append", count=len(chunks(pcm, 1000)))
    assert fake.audio_received() == pcm


async def test_vad_turn_yields_the_model_events_in_order(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    provider, events = opened
    for chunk in chunks(speech_then_silence()):
        await provider.send_audio(chunk)
    done = await events.until_done()
    assert done.status == "completed"

    milestones = [
        (type(e).__name__, getattr(e, "role", None))
        for e in events.events
        if not isinstance(e, AudioDelta | TranscriptDelta)
    ]
    assert milestones == [
        ("SpeechStarted", None),
        ("SpeechStopped", None),
        ("InputCommitted", None),
        ("TranscriptDone", "user"),
        ("ResponseStarted", None),
        ("TranscriptDone", "assistant"),
        ("ResponseDone", None),
    ]
    seq = events.events
    started = next(i for i, e in enumerate(seq) if isinstance(e, ResponseStarted))
    said = next(
        i for i, e in enumerate(seq) if isinstance(e, TranscriptDone) and e.role == "assistant"
    )
    streamed = seq[started + 1 : said]
    assert {type(e) for e in streamed} == {AudioDelta, TranscriptDelta}
    assert all(isinstance(e, AudioDelta) or e.role == "assistant" for e in streamed)

    user_item = seq[0]
    assert isinstance(user_item, SpeechStarted)
    for e in seq[:started]:
        assert isinstance(
            e, SpeechStarted | SpeechStopped | InputCommitted | TranscriptDelta | TranscriptDone
        )
        assert e.item_id == user_item.item_id
    heard = seq[said]
    assert isinstance(heard, TranscriptDone)
    assert heard.text == "You said: heard 1.00 seconds"
    deltas = [e for e in streamed if isinstance(e, TranscriptDelta)]
    assert "".join(d.delta for d in deltas) == heard.text
    audio = [e for e in streamed if isinstance(e, AudioDelta)]
    response = seq[started]
    assert isinstance(response, ResponseStarted)
    assert {a.response_id for a in audio} == {response.response_id} == {done.response_id}
    assert {a.item_id for a in audio} == {heard.item_id}
    assert len(b"".join(a.pcm for a in audio)) == len(heard.text) * 40 * 48
    # GA transcription streams the user's words too; whisper-1 (preview) does not.
    user_deltas = [e for e in events.events if isinstance(e, TranscriptDelta) and e.role == "user"]
    assert bool(user_deltas) == (fake.dialect == "ga")


async def test_manual_commit_asks_for_a_response(fake: FakeRealtimeServer) -> None:
    provider = provider_for(fake)
    events = Collector()
    await provider.open(MANUAL, [], events)
    for chunk in chunks(speech_then_silence()):
        await provider.send_audio(chunk)
    await provider.commit()
    done = await events.until_done()
    await provider.close()
    assert done.status == "completed"
    assert not any(isinstance(e, SpeechStarted | SpeechStopped) for e in events.events)
    kinds = [type(e) for e in events.events if not isinstance(e, AudioDelta | TranscriptDelta)]
    assert kinds == [InputCommitted, TranscriptDone, ResponseStarted, TranscriptDone, ResponseDone]
    sent = [e["type"] for e in fake.client_events() if e["type"] != "input_audio_buffer.append"]
    assert sent == ["session.update", "input_audio_buffer.commit", "response.create"]


async def test_send_text_adds_the_item_and_asks_for_a_response(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    provider, events = opened
    await provider.send_text("msg_1", "hello there")
    await events.until_done()
    (create,) = fake.client_events("conversation.item.create")
    assert create["item"] == {
        "id": "msg_1",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "hello there"}],
    }
    assert fake.client_events()[-1]["type"] == "response.create"
    said = [e for e in events.events if isinstance(e, TranscriptDone)]
    assert [(e.role, e.text) for e in said] == [("assistant", "You said: hello there")]


async def test_send_text_keeps_long_item_ids_within_the_upstream_limit(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    provider, events = opened
    long_id = "msg_" + "0123456789abcdef" * 3
    await provider.send_text(long_id, "hi")
    await events.until_done()
    (create,) = fake.client_events("conversation.item.create")
    assert len(create["item"]["id"]) <= 32
    assert not any(isinstance(e, ModelError) for e in events.events)


async def test_cancel_mid_response_truncates_what_was_not_heard(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    fake.delta_delay = 0.03
    provider, events = opened
    await provider.send_text("msg_1", "please tell me a rather long story about the sea")
    first = await events.until(lambda e: isinstance(e, AudioDelta))
    assert isinstance(first, AudioDelta)
    await provider.cancel(first.item_id, 40)
    done = await events.until_done()
    assert done.status == "cancelled"
    (truncate,) = await fake.wait_for("conversation.item.truncate")
    assert truncate == {
        "type": "conversation.item.truncate",
        "item_id": first.item_id,
        "content_index": 0,
        "audio_end_ms": 40,
    }
    assert fake.client_events("response.cancel") == [{"type": "response.cancel"}]
    said = next(e for e in events.events if isinstance(e, TranscriptDone))
    assert said.role == "assistant"
    assert said.text and said.text != "You said: please tell me a rather long story about the sea"
    await asyncio.sleep(0.05)
    assert fake.server_events("conversation.item.truncated")[0]["audio_end_ms"] == 40
    assert not any(isinstance(e, ModelError) for e in events.events)


async def test_cancel_after_the_response_ended_is_quiet(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    provider, events = opened
    await provider.send_text("msg_1", "hi")
    await events.until_done()
    await provider.cancel(None, None)
    await fake.wait_for("response.cancel")
    await asyncio.sleep(0.05)
    assert fake.server_events("error")[0]["error"]["code"] == "response_cancel_not_active"
    assert not any(isinstance(e, ModelError) for e in events.events)
    assert fake.client_events("conversation.item.truncate") == []


async def test_upstream_errors_become_model_errors(fake: FakeRealtimeServer) -> None:
    provider = provider_for(fake)
    events = Collector()
    await provider.open(MANUAL, [], events)
    await provider.commit()  # nothing buffered
    error = await events.until(lambda e: isinstance(e, ModelError))
    await provider.close()
    assert error == ModelError("input_audio_buffer_commit_empty", error.message, fatal=False)
    assert "buffer too small" in error.message


async def test_upstream_dropping_is_a_fatal_model_error(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    provider, events = opened
    fake.drop_on = "response.create"
    await provider.send_text("msg_1", "hello")
    async with asyncio.timeout(5):
        await events.lost.wait()
    last = events.events[-1]
    assert isinstance(last, ModelError)
    assert last.code == "upstream_failed"
    assert last.fatal
    await provider.send_audio(b"\0\0" * 480)  # sending into a dead link does not raise
    await provider.commit()


async def test_close_ends_the_link_without_an_error(
    fake: FakeRealtimeServer, opened: tuple[RealtimeProvider, Collector]
) -> None:
    provider, events = opened
    await provider.close()
    await provider.send_text("msg_1", "hello")  # into a closed link: ignored
    await asyncio.sleep(0.1)
    assert fake.client_events("conversation.item.create") == []
    assert not any(isinstance(e, ModelError) for e in events.events)
    assert not events.lost.is_set()


async def test_raw_events_are_observable(fake: FakeRealtimeServer) -> None:
    raw: list[dict[str, Any]] = []
    messages: list[bytes] = []

    def seen(event: dict[str, Any], message: bytes) -> None:
        raw.append(event)
        messages.append(message)

    provider = provider_for(fake)
    provider.on_raw = seen
    events = Collector()
    await provider.open(SessionOptions(), [], events)
    await provider.send_text("msg_1", "hi")
    await events.until_done()
    await provider.close()
    assert raw[0]["type"] == "session.created"
    # Each event also comes as the upstream sent it.
    assert [json.loads(m) for m in messages] == raw
    assert [e["type"] for e in raw] == [e["type"] for e in fake.server_events()]
    audio_type = "response.output_audio.delta" if fake.dialect == "ga" else "response.audio.delta"
    first_audio = next(e for e in raw if e["type"] == audio_type)
    assert base64.b64decode(first_audio["delta"])
