"""A session's usage, metered as it runs and stored with its messages.

The meter sees every model event after the session has handled it, and counts the
client audio its upstream took. Each ``ResponseDone`` closes one record: that
response's tokens as the provider reported them, the transcription usage of user turns
reported since the previous record, the seconds of audio in (PCM16 bytes handed
upstream / (2 * the upstream's input rate)) and out (answer audio the provider
delivered, at its output rate) since then, the session's wall-clock time since then,
and the cost from the price table. When the session ends, what came after its last
response makes one more record, without a response. Records are queued on the
session's transcript writer: stored in order with its messages, and retried the same
way while the database refuses them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from voxrelay import metrics
from voxrelay.events import (
    AudioDelta,
    ModelEvent,
    ResponseDone,
    TokenUsage,
    TranscriptDone,
    TranscriptionUsage,
)
from voxrelay.pricing import Metered, Prices
from voxrelay.providers.base import EmitModelEvent
from voxrelay.sessions.transcripts import TranscriptWriter
from voxrelay.store import Store, Usage, UsageRecord, new_id
from voxrelay.store.base import utcnow

log = logging.getLogger(__name__)

_NO_TOKENS = TokenUsage()
_NOTHING_HEARD = TranscriptionUsage()
_TOKEN_KINDS = (
    "input_text",
    "input_audio",
    "input_cached",
    "output_text",
    "output_audio",
    "transcription_input",
    "transcription_output",
)


class UsageMeter:
    """One session's meter (see module). ``audio_in`` says how many bytes of client audio
    its upstream has taken so far."""

    def __init__(
        self,
        *,
        store: Store,
        writer: TranscriptWriter,
        user_id: str,
        conversation_id: str,
        session_id: str,
        provider: str,
        model: str,
        transcription_model: str | None,
        input_rate: int,
        output_rate: int,
        audio_in: Callable[[], int],
        prices: Prices | None,
    ) -> None:
        self._store, self._writer = store, writer
        self._ids = (user_id, conversation_id, session_id)
        self._provider, self._model = provider, model
        self._transcription_model = transcription_model
        self._in_rate, self._out_rate = input_rate, output_rate
        self._audio_in = audio_in
        self._prices = prices
        self._in_taken = 0  # of ``audio_in()``, what earlier records hold
        self._out_bytes = 0  # answer audio since the last record
        self._heard = _NOTHING_HEARD  # transcription usage since the last record
        self._last_at = time.monotonic()
        self._closed = False
        # This session's records so far: what each holds, and when it was made.
        self.records: list[tuple[datetime, Usage]] = []
        # Called with each new record's usage (the quota watch).
        self.on_record: list[Callable[[Usage], None]] = []
        labels = {"provider": provider, "model": model}
        self._tokens = {k: metrics.USAGE_TOKENS.labels(**labels, kind=k) for k in _TOKEN_KINDS}
        self._audio_s = {
            d: metrics.USAGE_AUDIO_SECONDS.labels(**labels, direction=d) for d in ("in", "out")
        }
        self._heard_s = metrics.USAGE_TRANSCRIPTION_SECONDS.labels(**labels)
        self._responses = metrics.USAGE_RESPONSES.labels(**labels)
        self._cost = metrics.USAGE_COST.labels(**labels)
        writer.on_closing.append(self.close)

    def following(
        self, first: EmitModelEvent, then: EmitModelEvent | None = None
    ) -> EmitModelEvent:
        """One emit for the provider: ``first`` (the session), the meter, then ``then``."""
        meter = self.on_event

        def emit(event: ModelEvent) -> None:
            first(event)
            try:
                meter(event)
                if then is not None:
                    then(event)
            except Exception:
                # Whatever goes wrong with counting, the conversation goes on.
                log.exception("metering an upstream event failed")

        return emit

    def on_event(self, event: ModelEvent) -> None:
        if type(event) is AudioDelta:
            self._out_bytes += event.byte_count
        elif isinstance(event, TranscriptDone):
            if event.usage is not None:
                self._heard = _plus(self._heard, event.usage)
        elif isinstance(event, ResponseDone):
            self._record(event.response_id, event.usage or _NO_TOKENS)

    def tokens_since(self, when: datetime) -> int:
        """The tokens of this session's records made at ``when`` or later."""
        return sum(usage.tokens for at, usage in self.records if at >= when)

    @property
    def lived_seconds(self) -> float:
        """Wall-clock time since the session started (recorded or not)."""
        return sum(usage.session_seconds for _, usage in self.records) + (
            time.monotonic() - self._last_at
        )

    def close(self) -> None:
        """The session ends: record what came after its last response."""
        if not self._closed:
            self._closed = True
            self._record(None, _NO_TOKENS)

    def _record(self, response_id: str | None, tokens: TokenUsage) -> None:
        now = time.monotonic()
        taken = self._audio_in()
        heard = self._heard
        metered = Metered(
            tokens,
            heard,
            audio_in_seconds=(taken - self._in_taken) / (2 * self._in_rate),
            audio_out_seconds=self._out_bytes / (2 * self._out_rate),
        )
        self._in_taken, self._out_bytes, self._heard = taken, 0, _NOTHING_HEARD
        seconds, self._last_at = now - self._last_at, now
        cost = None
        if self._prices is not None:
            cost = self._prices.cost(self._model, self._transcription_model, metered)
        usage = Usage(
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            input_text_tokens=tokens.input_text_tokens,
            input_audio_tokens=tokens.input_audio_tokens,
            input_cached_tokens=tokens.cached_tokens,
            output_text_tokens=tokens.output_text_tokens,
            output_audio_tokens=tokens.output_audio_tokens,
            transcription_input_tokens=heard.input_tokens,
            transcription_output_tokens=heard.output_tokens,
            transcription_seconds=heard.seconds,
            audio_in_seconds=metered.audio_in_seconds,
            audio_out_seconds=metered.audio_out_seconds,
            session_seconds=seconds,
            responses=0 if response_id is None else 1,
            cost=cost,
        )
        user_id, conversation_id, session_id = self._ids
        record = UsageRecord(
            id=new_id("use_"),
            user_id=user_id,
            conversation_id=conversation_id,
            session_id=session_id,
            response_id=response_id,
            provider=self._provider,
            model=self._model,
            created_at=utcnow(),
            usage=usage,
        )
        self.records.append((record.created_at, usage))
        self._count(usage)
        store = self._store

        async def write() -> None:
            await store.add_usage(record)

        self._writer.later(write)
        for hook in self.on_record:
            hook(usage)

    def _count(self, usage: Usage) -> None:
        amounts = (
            usage.input_text_tokens,
            usage.input_audio_tokens,
            usage.input_cached_tokens,
            usage.output_text_tokens,
            usage.output_audio_tokens,
            usage.transcription_input_tokens,
            usage.transcription_output_tokens,
        )
        for kind, amount in zip(_TOKEN_KINDS, amounts, strict=True):
            if amount:
                self._tokens[kind].inc(amount)
        self._audio_s["in"].inc(usage.audio_in_seconds)
        self._audio_s["out"].inc(usage.audio_out_seconds)
        if usage.transcription_seconds:
            self._heard_s.inc(usage.transcription_seconds)
        self._responses.inc(usage.responses)
        if usage.cost:
            self._cost.inc(usage.cost)


def _plus(a: TranscriptionUsage, b: TranscriptionUsage) -> TranscriptionUsage:
    return TranscriptionUsage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        input_text_tokens=a.input_text_tokens + b.input_text_tokens,
        input_audio_tokens=a.input_audio_tokens + b.input_audio_tokens,
        seconds=a.seconds + b.seconds,
    )
