"""The price table (``VOXRELAY_PRICES``): what each model's usage costs, in USD.

A TOML or JSON file (or the JSON itself), one entry per model under ``models``::

    [models."gpt-realtime"]
    input_text = 4.00       # per million tokens
    input_audio = 32.00
    cached_text = 0.40      # cached input; default: the uncached price
    cached_audio = 0.40
    output_text = 16.00
    output_audio = 64.00
    audio_in_minute = 0.0   # per minute of audio in (a model billed by audio time)
    audio_out_minute = 0.0  # per minute of answer audio

A transcription model's entry prices what the transcription of user turns reports:
its tokens with ``input_text``, ``input_audio`` and ``output_text``, and the seconds a
model billed by duration (whisper-1) reports with ``audio_in_minute``.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from voxrelay.events import TokenUsage, TranscriptionUsage

log = logging.getLogger(__name__)

_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input_text: float = 0.0
    input_audio: float = 0.0
    cached_text: float | None = None
    cached_audio: float | None = None
    output_text: float = 0.0
    output_audio: float = 0.0
    audio_in_minute: float = 0.0
    audio_out_minute: float = 0.0


_KEYS = frozenset(f.name for f in fields(ModelPrice))


@dataclass(frozen=True, slots=True)
class Metered:
    """What one usage record measured, as pricing needs it (cached input split by kind)."""

    tokens: TokenUsage
    transcription: TranscriptionUsage
    audio_in_seconds: float
    audio_out_seconds: float


class Prices:
    def __init__(self, models: dict[str, ModelPrice]) -> None:
        self.models = models
        self._unpriced: set[str] = set()

    def cost(self, model: str, transcription_model: str | None, metered: Metered) -> float | None:
        """The USD cost of ``metered``, or None when a model it used has no price."""
        price = self._price(model)
        if price is None:
            return None
        cost = _model_cost(price, metered)
        heard = metered.transcription
        if heard.input_tokens or heard.output_tokens or heard.seconds:
            priced = self._price(transcription_model) if transcription_model else None
            if priced is None:
                return None
            cost += _transcription_cost(priced, heard)
        return cost

    def _price(self, model: str) -> ModelPrice | None:
        price = self.models.get(model)
        if price is None and model not in self._unpriced:
            self._unpriced.add(model)
            log.warning("the price table has no entry for model %s: its usage is not priced", model)
        return price


def _model_cost(price: ModelPrice, metered: Metered) -> float:
    t = metered.tokens
    # Where the upstream gives only the cached total, it is taken from text first.
    cached_text = t.cached_text_tokens or min(t.cached_tokens, t.input_text_tokens)
    cached_audio = t.cached_audio_tokens or max(0, t.cached_tokens - cached_text)
    per_token = (
        max(0, t.input_text_tokens - cached_text) * price.input_text
        + max(0, t.input_audio_tokens - cached_audio) * price.input_audio
        + cached_text * _or(price.cached_text, price.input_text)
        + cached_audio * _or(price.cached_audio, price.input_audio)
        + t.output_text_tokens * price.output_text
        + t.output_audio_tokens * price.output_audio
    )
    per_minute = (
        metered.audio_in_seconds * price.audio_in_minute
        + metered.audio_out_seconds * price.audio_out_minute
    )
    return per_token / _MILLION + per_minute / 60


def _transcription_cost(price: ModelPrice, heard: TranscriptionUsage) -> float:
    split = heard.input_text_tokens + heard.input_audio_tokens
    # Input reported without its split is audio: what a transcription model takes.
    audio = heard.input_audio_tokens + max(0, heard.input_tokens - split)
    per_token = (
        heard.input_text_tokens * price.input_text
        + audio * price.input_audio
        + heard.output_tokens * price.output_text
    )
    return per_token / _MILLION + heard.seconds * price.audio_in_minute / 60


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def load_prices(spec: str | None) -> Prices | None:
    """The table ``spec`` names (a ``.toml`` or ``.json`` file, or JSON text); None for
    none. A table that cannot be read raises ValueError, in words."""
    if not spec or not spec.strip():
        return None
    text = spec.strip()
    try:
        if text.startswith("{"):
            data: Any = json.loads(text)
        else:
            path = Path(text)
            raw = path.read_text(encoding="utf-8")
            data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    except OSError as error:
        raise ValueError(f"VOXRELAY_PRICES: cannot read {text}: {error.strerror}") from None
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"VOXRELAY_PRICES: not valid TOML or JSON: {error}") from None
    return Prices(_models(data))


def _models(data: Any) -> dict[str, ModelPrice]:
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not models:
        raise ValueError("VOXRELAY_PRICES: expected a `models` table with one entry per model")
    table: dict[str, ModelPrice] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ValueError(f"VOXRELAY_PRICES: models.{name} must be a table of prices")
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            known = ", ".join(sorted(_KEYS))
            raise ValueError(f"VOXRELAY_PRICES: models.{name}: unknown {unknown}; known: {known}")
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(
                    f"VOXRELAY_PRICES: models.{name}.{key} must be a number, 0 or more"
                )
        table[str(name)] = ModelPrice(**{key: float(value) for key, value in entry.items()})
    return table
