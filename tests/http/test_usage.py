"""Usage: each response's tokens (as the upstream reported them), transcription usage,
seconds of audio in and out, stored per turn and summed per conversation
(``GET /conversations/{id}``) and per user (``GET /usage``); Prometheus counters; prices."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.openai_realtime import FakeRealtimeServer
from harness import EventReader, RunningServer, paced, read_pcm, silence
from prometheus_client.parser import text_string_to_metric_families

from voxrelay.client import VoxrelayClient

KEY = "sk-upstream-secret-key"
MODEL = "gpt-usage-test"
PRICES = {
    "models": {
        MODEL: {
            "input_text": 4.0,
            "input_audio": 32.0,
            "cached_text": 0.4,
            "cached_audio": 0.5,
            "output_text": 16.0,
            "output_audio": 64.0,
            "audio_in_minute": 0.01,
        },
        "gpt-4o-mini-transcribe": {"input_audio": 3.0, "output_text": 5.0},
    }
}


@pytest.fixture
def fake() -> Iterator[FakeRealtimeServer]:
    with FakeRealtimeServer("ga", api_key=KEY) as server:
        yield server
    assert server.validation_errors == []


def _relay(launch: Callable[..., RunningServer], fake: FakeRealtimeServer, **more: Any) -> Any:
    return launch(
        provider="openai", openai_url=fake.url, openai_api_key=KEY, openai_model=MODEL, **more
    )


def _reported(fake: FakeRealtimeServer) -> dict[str, Any]:
    """What the fake upstream reported and took, summed as the relay should."""
    usages = [e["response"]["usage"] for e in fake.server_events("response.done")]
    heard = [
        e["usage"]
        for e in fake.server_events("conversation.item.input_audio_transcription.completed")
    ]
    audio_out = sum(
        len(base64.b64decode(e["delta"])) for e in fake.server_events("response.output_audio.delta")
    )
    audio_in = sum(len(fake.audio_received(c.index)) for c in fake.connections)
    return {
        "inputTokens": sum(u["input_tokens"] for u in usages),
        "outputTokens": sum(u["output_tokens"] for u in usages),
        "inputAudioTokens": sum(u["input_token_details"]["audio_tokens"] for u in usages),
        "inputTextTokens": sum(u["input_token_details"]["text_tokens"] for u in usages),
        "inputCachedTokens": sum(u["input_token_details"]["cached_tokens"] for u in usages),
        "outputAudioTokens": sum(u["output_token_details"]["audio_tokens"] for u in usages),
        "outputTextTokens": sum(u["output_token_details"]["text_tokens"] for u in usages),
        "transcriptionInputTokens": sum(h.get("input_tokens", 0) for h in heard),
        "transcriptionOutputTokens": sum(h.get("output_tokens", 0) for h in heard),
        "transcriptionSeconds": round(sum(h.get("seconds", 0) for h in heard), 3),
        "audioInSeconds": round(audio_in / 48000, 3),
        "audioOutSeconds": round(audio_out / 48000, 3),
        "responses": len(usages),
    }


def _counts(usage: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in usage.items() if k not in ("sessionSeconds", "cost")}


async def _talk(client: VoxrelayClient, turns: list[str], *, spoken: bool = True) -> str:
    """A conversation over SSE: typed turns, then (``spoken``) one spoken turn; ended."""
    reader = EventReader(client.events(inputSampleRate=16000))
    cid = (await reader.wait_for("conversation_started")).data["conversationId"]
    for number, text in enumerate(turns, 1):
        await client.text(cid, text)
        await _answered(reader, number)
    if spoken:
        speech, rate = read_pcm("goforward.raw")
        await client.upload(cid, paced(speech + silence(1000, rate), rate, speed=20))
        await _answered(reader, len(turns) + 1)
    await client.end(cid)
    await reader.wait_for("conversation_ended")
    await reader.close()
    return str(cid)


async def _answered(reader: EventReader, count: int) -> None:
    await reader.wait_for("response_done", lambda _: len(reader.of_type("response_done")) >= count)


async def test_usage_sums_are_what_the_upstream_reported(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer
) -> None:
    relay = _relay(launch, fake)
    fake.transcribe = lambda pcm: "go forward ten meters"
    async with VoxrelayClient(relay.url, await relay.token("phone", "alice")) as client:
        cid = await _talk(client, ["my name is Dana", "what is my name", "thank you"])
        conversation = await client.conversation(cid)
        reported = _reported(fake)
        # Four answers, each with its own numbers, the cached part growing turn by turn.
        usages = [e["response"]["usage"] for e in fake.server_events("response.done")]
        assert len({u["input_tokens"] for u in usages}) == 4
        assert reported["inputCachedTokens"] > 0 and reported["transcriptionInputTokens"] > 0
        assert _counts(conversation["usage"]) == reported
        assert conversation["usage"]["cost"] is None  # no price table
        # Seconds of audio in: every byte the upstream took (24 kHz) once, about the
        # 16 kHz recording and its second of silence.
        speech, _ = read_pcm("goforward.raw")
        assert abs(reported["audioInSeconds"] - (len(speech) + 32000) / 32000) < 0.05
        assert conversation["usage"]["sessionSeconds"] > 0

        # The user's sums: the same, and a second conversation adds to them.
        assert _counts((await client.usage())["usage"]) == reported
        await _talk(client, ["once more"], spoken=False)
        both = _reported(fake)
        assert _counts((await client.usage())["usage"]) == both
        assert both["responses"] == 5
        # Another user sees none of it.
        async with VoxrelayClient(relay.url, await relay.token("tablet", "bob")) as bob:
            assert (await bob.usage())["usage"]["responses"] == 0

        # Deleting a conversation deletes its messages, not what it used.
        await client.delete_conversation(cid)
        assert _counts((await client.usage())["usage"]) == both


async def test_usage_of_a_day_range_and_bad_dates(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer
) -> None:
    relay = _relay(launch, fake)
    token = await relay.token("phone", "alice")
    async with VoxrelayClient(relay.url, token) as client:
        await _talk(client, ["hello"], spoken=False)
        today = datetime.now(UTC).date()
        yesterday = (today - timedelta(days=1)).isoformat()
        whole = await client.usage(today.isoformat(), today.isoformat())
        assert whole["usage"]["responses"] == 1
        assert whole["from"] == f"{today.isoformat()}T00:00:00Z"
        assert whole["to"] == f"{(today + timedelta(days=1)).isoformat()}T00:00:00Z"
        assert (await client.usage(until=yesterday))["usage"]["responses"] == 0
        assert (await client.usage(since=(today + timedelta(days=1)).isoformat()))["usage"][
            "responses"
        ] == 0
        # Date-times, with an offset or none (UTC), bound it to the second.
        later = (datetime.now(UTC) + timedelta(minutes=1)).replace(tzinfo=None)
        assert (await client.usage(until=later.isoformat()))["usage"]["responses"] == 1
        assert (await client.usage(since=later.isoformat() + "+00:00"))["usage"]["responses"] == 0
        assert (await client.usage())["from"] is None

        for query in (
            {"from": "yesterday"},
            {"to": "2025-13-01"},
            {"from": "2025-02-02", "to": "2025-02-01"},
        ):
            answer = await client.http.get("/usage", params=query)
            assert answer.status_code == 422, answer.text
            assert answer.json()["error"]["code"] == "invalid_request"

    # A service token names the user it asks about; without one it is refused.
    async with VoxrelayClient(relay.url, await relay.service_token()) as backend:
        refused = await backend.http.get("/usage")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_request"
        found = await backend.http.get("/usage", params={"userId": "alice"})
        assert found.json()["usage"]["responses"] == 1


async def test_prometheus_counts_usage_by_provider_and_model(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer
) -> None:
    relay = _relay(launch, fake, prices=json.dumps(PRICES))
    fake.transcribe = lambda pcm: "go forward"

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{relay.url}/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("voxrelay_usage_")
        }

    before = samples()
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        cid = await _talk(client, ["count this"])
        usage = (await client.conversation(cid))["usage"]
    after = samples()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted({"provider": "openai", "model": MODEL, **labels}.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    tokens = "voxrelay_usage_tokens_total"
    assert grew(tokens, kind="input_text") == usage["inputTextTokens"]
    assert grew(tokens, kind="input_audio") == usage["inputAudioTokens"]
    assert grew(tokens, kind="input_cached") == usage["inputCachedTokens"]
    assert grew(tokens, kind="output_text") == usage["outputTextTokens"]
    assert grew(tokens, kind="output_audio") == usage["outputAudioTokens"]
    assert grew(tokens, kind="transcription_input") == usage["transcriptionInputTokens"]
    assert grew(tokens, kind="transcription_output") == usage["transcriptionOutputTokens"]
    seconds = "voxrelay_usage_audio_seconds_total"
    assert grew(seconds, direction="in") == pytest.approx(usage["audioInSeconds"], abs=0.001)
    assert grew(seconds, direction="out") == pytest.approx(usage["audioOutSeconds"], abs=0.001)
    assert grew("voxrelay_usage_responses_total") == usage["responses"] == 2
    assert grew("voxrelay_usage_cost_usd_total") == pytest.approx(usage["cost"], abs=1e-5)


async def test_usage_is_priced_from_the_price_table(
    launch: Callable[..., RunningServer], fake: FakeRealtimeServer, tmp_path: Path
) -> None:
    table = tmp_path / "prices.toml"
    lines = []
    for model, prices in PRICES["models"].items():
        lines.append(f'[models."{model}"]')
        lines += [f"{key} = {value}" for key, value in prices.items()]
    table.write_text("\n".join(lines) + "\n")
    relay = _relay(launch, fake, prices=str(table))
    fake.transcribe = lambda pcm: "go forward ten meters"
    async with VoxrelayClient(relay.url, await relay.token()) as client:
        cid = await _talk(client, ["my name is Dana", "what is my name"])
        usage = (await client.conversation(cid))["usage"]

    price = PRICES["models"][MODEL]
    expected = 0.0
    for done in fake.server_events("response.done"):
        u = done["response"]["usage"]
        given, cached = u["input_token_details"], u["input_token_details"]["cached_tokens_details"]
        expected += (
            (given["text_tokens"] - cached["text_tokens"]) * price["input_text"]
            + (given["audio_tokens"] - cached["audio_tokens"]) * price["input_audio"]
            + cached["text_tokens"] * price["cached_text"]
            + cached["audio_tokens"] * price["cached_audio"]
            + u["output_token_details"]["text_tokens"] * price["output_text"]
            + u["output_token_details"]["audio_tokens"] * price["output_audio"]
        ) / 1e6
    transcribe = PRICES["models"]["gpt-4o-mini-transcribe"]
    for heard in fake.server_events("conversation.item.input_audio_transcription.completed"):
        expected += (
            heard["usage"]["input_tokens"] * transcribe["input_audio"]
            + heard["usage"]["output_tokens"] * transcribe["output_text"]
        ) / 1e6
    audio_in = sum(len(fake.audio_received(c.index)) for c in fake.connections) / 48000
    expected += audio_in / 60 * price["audio_in_minute"]
    assert usage["cost"] == pytest.approx(expected, abs=2e-6)
    assert usage["cost"] > 0


async def test_echo_reports_its_documented_usage(server: RunningServer) -> None:
    async with VoxrelayClient(server.url, await server.token()) as client:
        reader = EventReader(client.events(turnDetection="manual"))
        cid = (await reader.wait_for("conversation_started")).data["conversationId"]
        await client.text(cid, "three small words")
        await reader.wait_for("response_done")
        answer_audio = sum(len(base64.b64decode(e.data["audio"])) for e in reader.of_type("audio"))
        await client.end(cid)
        await reader.close()
        usage = (await client.conversation(cid))["usage"]
    # Input: a token a word typed; output: a token a word said ("You said: three small
    # words") and per 50 ms of answer audio (24 kHz both ways here).
    audio_tokens = answer_audio * 1000 // 48000 // 50
    assert usage["inputTextTokens"] == usage["inputTokens"] == 3
    assert usage["outputTextTokens"] == 5
    assert usage["outputAudioTokens"] == audio_tokens > 0
    assert usage["outputTokens"] == 5 + audio_tokens
    assert usage["audioOutSeconds"] == round(answer_audio / 48000, 3)
    assert usage["responses"] == 1 and usage["audioInSeconds"] == 0
