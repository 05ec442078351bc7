"""The price table (``VOXRELAY_PRICES``): read from TOML, JSON or JSON text, refused in
words when it is wrong, and what a record costs by it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxrelay.events import TokenUsage, TranscriptionUsage
from voxrelay.pricing import Metered, load_prices

TABLE = {
    "models": {
        "gpt-realtime": {
            "input_text": 4.0,
            "input_audio": 32.0,
            "cached_text": 0.4,
            "output_text": 16.0,
            "output_audio": 64.0,
            "audio_out_minute": 0.5,
        },
        "whisper-1": {"audio_in_minute": 0.006},
    }
}
NOTHING_HEARD = TranscriptionUsage()


def _metered(
    tokens: TokenUsage, heard: TranscriptionUsage = NOTHING_HEARD, out: float = 0.0
) -> Metered:
    return Metered(tokens, heard, audio_in_seconds=12.0, audio_out_seconds=out)


def test_the_table_reads_from_toml_json_or_json_text(tmp_path: Path) -> None:
    toml = tmp_path / "prices.toml"
    toml.write_text('[models."gpt-realtime"]\ninput_text = 4.0\noutput_audio = 64\n')
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps(TABLE))
    assert load_prices(str(toml)).models["gpt-realtime"].output_audio == 64.0  # type: ignore[union-attr]
    assert load_prices(str(as_json)).models["whisper-1"].audio_in_minute == 0.006  # type: ignore[union-attr]
    inline = load_prices(json.dumps(TABLE))
    assert inline is not None and set(inline.models) == {"gpt-realtime", "whisper-1"}
    assert load_prices(None) is None and load_prices("  ") is None


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ('{"models": {}}', "a `models` table"),
        ('{"prices": {}}', "a `models` table"),
        ('{"models": {"m": 3}}', "models.m must be a table"),
        ('{"models": {"m": {"input_txt": 1}}}', "unknown ['input_txt']"),
        ('{"models": {"m": {"input_text": -1}}}', "models.m.input_text must be a number"),
        ('{"models": {"m": {"input_text": "1"}}}', "models.m.input_text must be a number"),
        ('{"models": ', "not valid TOML or JSON"),
        ("/nowhere/prices.toml", "cannot read /nowhere/prices.toml"),
    ],
)
def test_a_table_that_cannot_be_used_is_refused_in_words(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match="VOXRELAY_PRICES") as refused:
        load_prices(spec)
    assert says in str(refused.value)


def test_cached_input_and_minutes_are_priced_by_their_own_rate() -> None:
    prices = load_prices(json.dumps(TABLE))
    assert prices is not None
    tokens = TokenUsage(
        input_tokens=1500,
        output_tokens=300,
        input_text_tokens=1000,
        input_audio_tokens=500,
        cached_tokens=600,
        cached_text_tokens=400,
        cached_audio_tokens=200,
        output_text_tokens=100,
        output_audio_tokens=200,
    )
    cost = prices.cost("gpt-realtime", None, _metered(tokens, out=30.0))
    expected = (
        600 * 4.0  # uncached text
        + 300 * 32.0  # uncached audio
        + 400 * 0.4  # cached text
        + 200 * 32.0  # cached audio: no price of its own, so the uncached one
        + 100 * 16.0
        + 200 * 64.0
    ) / 1e6 + 30.0 / 60 * 0.5
    assert cost == pytest.approx(expected)


def test_a_cached_total_without_its_split_is_taken_from_text_first() -> None:
    prices = load_prices(json.dumps(TABLE))
    assert prices is not None
    # The beta dialect reports only how many input tokens were cached.
    tokens = TokenUsage(
        input_tokens=300, input_text_tokens=100, input_audio_tokens=200, cached_tokens=150
    )
    cost = prices.cost("gpt-realtime", None, _metered(tokens))
    assert cost == pytest.approx((100 * 0.4 + 50 * 32.0 + 150 * 32.0) / 1e6)


def test_transcription_is_priced_under_its_own_model() -> None:
    prices = load_prices(json.dumps(TABLE))
    assert prices is not None
    heard = TranscriptionUsage(seconds=90.0)
    assert prices.cost("gpt-realtime", "whisper-1", _metered(TokenUsage(), heard)) == (
        pytest.approx(1.5 * 0.006)
    )
    # A model without a price leaves the record unpriced, rather than priced in part.
    assert prices.cost("gpt-other", "whisper-1", _metered(TokenUsage())) is None
    assert prices.cost("gpt-realtime", "gpt-4o-transcribe", _metered(TokenUsage(), heard)) is None
    # Nothing transcribed: the transcription model needs no price.
    assert prices.cost("gpt-realtime", "gpt-4o-transcribe", _metered(TokenUsage())) == 0.0
