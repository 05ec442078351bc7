"""A live conversation: the one place that owns it.

A ``Session`` holds the upstream link, turns the provider's events into the
numbered client-facing event log, and persists each finished turn. Requests
from transports (audio, commit, text, interrupt) are applied one at a time, in
the order they come, under the session's one ordering lock; every way a session
ends (client, idle, shutdown, upstream failure) goes through ``end(reason)``,
which flushes the stored transcript and writes ``conversation_ended`` last.

The audio path has no hop of its own: a chunk is resampled and handed to the
provider in the transport's own task when nothing is ahead of it, and the provider's
events are handled in the callback that delivers them (no task switch either way).
What is sent raw (``send_raw``, over an OpenAI-protocol ``RawProvider``) keeps its
order beside every other request; function calls are ``sessions.tools``' to answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from voxrelay import metrics
from voxrelay.audio import StreamResampler, client_audio
from voxrelay.eventlog import EventLog
from voxrelay.events import (
    AudioDelta,
    FunctionCall,
    InputCommitted,
    ModelError,
    ModelEvent,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    UpstreamReconnecting,
    UpstreamRestored,
)
from voxrelay.exceptions import SessionEnded
from voxrelay.providers.base import Provider, RawProvider, ToolOutput, TurnDetection
from voxrelay.sessions.items import AssistantItem, Items, Turn
from voxrelay.sessions.listeners import Listeners
from voxrelay.sessions.live import EndReason, Reads, check_text, new_item_id
from voxrelay.sessions.pacing import UNPACED, AudioPace
from voxrelay.sessions.tools import ToolCalls
from voxrelay.sessions.transcripts import STORAGE_UNAVAILABLE, TranscriptWriter, cut_to_fraction
from voxrelay.spool import Spill
from voxrelay.store import Store

log = logging.getLogger(__name__)


class Session:
    def __init__(
        self,
        *,
        id: str,
        conversation_id: str,
        user_id: str,
        created_at: datetime,
        input_rate: int,
        output_rate: int,
        turn_detection: TurnDetection,
        provider: Provider,
        store: Store,
        log_keep_seconds: float,
        log_max_bytes: int,
        next_position: int,
        transcripts: TranscriptWriter,
        tools: ToolCalls,
        max_text_chars: int = 4000,
        pace: AudioPace = UNPACED,
        log_spill: Spill | None = None,
    ) -> None:
        self.id = id
        self.conversation_id = conversation_id
        self.user_id = user_id
        self.created_at = created_at
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.turn_detection = turn_detection
        self.status: Literal["active", "ended"] = "active"
        self.end_reason: EndReason | None = None
        self.log = EventLog(keep_seconds=log_keep_seconds, max_bytes=log_max_bytes, spill=log_spill)
        self._listeners = Listeners()
        self._provider = provider
        self._raw_provider = provider if isinstance(provider, RawProvider) else None
        self._recorded_texts: set[str] = set()  # user text items ``add_user_text`` stored
        self._store = store
        self._items = Items(next_position)
        self._resamplers: dict[int, StreamResampler] = {}
        self._output = StreamResampler(provider.output_rate, output_rate)
        self._responding: str | None = None
        self._turn: Turn | None = None
        # Requests apply one at a time, in order (FIFO); an uncontended acquire never waits.
        self._order = asyncio.Lock()
        self._transcripts = transcripts
        transcripts.on_failing = lambda: self.publish_error(*STORAGE_UNAVAILABLE)
        self._tools = tools
        tools.log, tools.send, tools.publish_error = self.log, self._send_tools, self.publish_error
        self._ended = asyncio.Event()
        self._ending: asyncio.Task[None] | None = None
        self._max_text_chars = max_text_chars
        self.pace = pace  # how fast its clients may send audio
        self._opened_at = time.monotonic()
        # Every listener gets it first, however long ago the log dropped it.
        self.opening = self.log.append(
            "conversation_started",
            {
                "conversationId": conversation_id,
                "sessionId": id,
                "inputSampleRate": input_rate,
                "outputSampleRate": output_rate,
            },
        )

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Begin storing transcripts (the provider is open, emitting to ``on_model_event``)."""
        self._transcripts.start()

    @property
    def active(self) -> bool:
        return self.status == "active"

    async def end(self, reason: EndReason) -> None:
        """End once, whoever asks first; later callers wait for the same ending."""
        if self._ending is None:
            self._ending = asyncio.get_running_loop().create_task(self._end(reason))
        await asyncio.shield(self._ending)

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def end_if_last(self, reason: EndReason) -> bool:
        """End the session when the caller is its only listener (a client closing its
        connection is done, unless somebody else listens); returns whether it ended."""
        if not self.active or self.listeners > 1:
            return False
        await self.end(reason)
        return True

    def can_restart(self) -> bool:
        """Whether one with other settings may replace it: active, silent, alone."""
        return self.active and self.listeners <= 1 and self.log.last_id <= 1

    async def _end(self, reason: EndReason) -> None:
        self.status = "ended"  # from here on requests are refused, model events dropped
        self.end_reason = reason
        with contextlib.suppress(Exception):
            await self._provider.close()
        await self._tools.close()
        self._store_unfinished_answers()
        await self._transcripts.close()
        try:
            await self._store.end_session(self.id, reason)
        except Exception:
            log.exception("could not mark session %s ended", self.id)
        self.log.append(
            "conversation_ended", {"conversationId": self.conversation_id, "reason": reason}
        )
        self.log.close()
        self._ended.set()

    @property
    def lived_seconds(self) -> float:
        return time.monotonic() - self._opened_at

    @property
    def stored_messages(self) -> int:
        return self._transcripts.messages

    @property
    def listeners(self) -> int:
        return self._listeners.count

    def when_listened(self, on_active: Callable[[], None], on_idle: Callable[[], None]) -> None:
        """Call ``on_active`` when a first listener comes, ``on_idle`` when the last leaves."""
        self._listeners.on_active, self._listeners.on_idle = on_active, on_idle

    def attached(
        self, *, reads: Reads = "all", after: int | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Count a listener (or an upload) while the block runs: the session is not idle.
        ``reads`` (``Reads``) says what it takes from the log (answer audio is logged only
        while someone may read it); ``after`` matters only to a mirrored session."""
        return self._listeners.attached(reads)

    @property
    def raw(self) -> RawProvider | None:
        """The upstream's own events and settings (an OpenAI-protocol provider), or None."""
        return self._raw_provider

    # -- requests from transports ------------------------------------------------------

    async def send_audio(
        self, pcm: bytes, rate: int | None = None, *, transport: str = "", received_at: float = 0.0
    ) -> None:
        """Send client audio (at ``rate``, default the input rate) upstream after every
        request before it; ``transport`` and ``received_at`` (``time.monotonic()``) time it in
        ``voxrelay_relay_latency_seconds``. An upstream failure is an ``error`` event."""
        if not self.active:
            raise SessionEnded()
        rate = rate or self.input_rate
        self.pace.take(len(pcm), rate)
        async with self._order:
            if not self.active:
                raise SessionEnded()
            try:
                resampler = self._resamplers.get(rate)
                if resampler is None:
                    resampler = StreamResampler(rate, self._provider.input_rate)
                    self._resamplers[rate] = resampler
                pcm = resampler.feed(pcm)
                if pcm:
                    await self._provider.send_audio(pcm)
                    if received_at:
                        metrics.UPSTREAM_LATENCY[transport].observe(time.monotonic() - received_at)
            except Exception as error:
                self._upstream_refused("audio", error)

    async def audio_received(self) -> None:
        """Nothing to wait for: ``send_audio`` returns once the audio is taken."""

    async def commit(self) -> None:
        async with self._applying():
            self._turn = Turn()
            await self._provider.commit()

    async def send_text(self, text: str, item_id: str | None = None) -> str:
        """Send a typed user message upstream and ask for an answer (one ``add_user_text``
        stored already, by its ``item_id``, is not stored or published again)."""
        check_text(text, self._max_text_chars)
        item_id = item_id or new_item_id()
        async with self._applying():
            self._turn = Turn()
            if item_id in self._recorded_texts:
                self._recorded_texts.discard(item_id)
            else:
                self._record_user_text(item_id, text)
            await self._provider.send_text(item_id, text)
        return item_id

    async def add_user_text(self, item_id: str, text: str) -> None:
        """Store and publish a typed user message by the item id the client chose, in its
        place; nothing goes upstream (the caller sends it, raw or with ``send_text``)."""
        check_text(text, self._max_text_chars)
        async with self._applying():
            self._turn = Turn()
            self._record_user_text(item_id, text)
            self._recorded_texts.add(item_id)

    async def note_heard(self, item_id: str, played_ms: int) -> None:
        """Only ``played_ms`` of answer ``item_id`` was heard: cut its stored text as
        ``interrupt`` does, telling nothing upstream (a pass-through client truncates)."""
        async with self._applying():
            item = self._items.latest
            if item is not None and item.item_id == item_id:
                self._cut_to_heard(item, played_ms)

    async def send_raw(
        self, event: Mapping[str, Any], *, transport: str = "", received_at: float = 0.0
    ) -> None:
        """Send an upstream event as is, in order with every other request (for an
        audio append, ``transport`` and ``received_at`` as for ``send_audio``)."""
        raw = self._raw_provider
        if raw is None:
            raise TypeError("this session's provider has no raw pass-through")
        if received_at:
            # An audio append: the hot path, kept as flat as ``send_audio``.
            if not self.active:
                raise SessionEnded()
            self.pace.take_base64(len(event.get("audio") or ""), self.input_rate)
            async with self._order:
                if not self.active:
                    raise SessionEnded()
                try:
                    await raw.send_raw(event)
                except Exception as error:
                    self._upstream_refused("audio", error)
                    raise
                metrics.UPSTREAM_LATENCY[transport].observe(time.monotonic() - received_at)
            return
        async with self._applying():
            if (
                event.get("type") in ("input_audio_buffer.commit", "response.create")
                and self._responding is None
                and (self._turn is None or self._turn.first_audio_ms is not None)
            ):
                # A pass-through client ends its turn itself: time the answer from here.
                self._turn = Turn()
            self._tools.note_raw(event)
            await raw.send_raw(event)

    async def interrupt(self, played_ms: int | None = None) -> None:
        async with self._applying():
            await self._interrupt(played_ms)

    async def tool_result(self, call_id: str, output: Any) -> None:
        """A client's result for a call of one of its own tools (``sessions.tools``)."""
        if not self.active:
            raise SessionEnded()
        self._tools.result(call_id, output)

    async def set_tools(self, tools: tuple[dict[str, Any], ...]) -> None:
        """Replace the tools its clients declared (``InvalidTool`` for a bad one)."""
        declared = self._tools.declare(tools)
        async with self._applying():
            await self._provider.update_tools(declared)

    async def _send_tools(self, outputs: list[ToolOutput]) -> None:
        async with self._applying():
            self._turn = Turn()
            await self._provider.send_tool_outputs(outputs)

    @contextlib.asynccontextmanager
    async def _applying(self) -> AsyncIterator[None]:
        """Apply a request after those before it; an upstream failure is reported, raised."""
        if not self.active:
            raise SessionEnded()
        async with self._order:
            if not self.active:
                raise SessionEnded()
            try:
                yield
            except SessionEnded:
                raise
            except Exception as error:
                self._upstream_refused("request", error)
                raise

    def _upstream_refused(self, what: str, error: Exception) -> None:
        log.warning("upstream rejected %s: %s", what, error)
        self.publish_error("upstream_error", "the upstream did not take the request")

    def _record_user_text(self, item_id: str, text: str) -> None:
        position = self._items.position_of(item_id)
        self._transcripts.add("user", text, position, item_id)
        self._publish_final("user", item_id, text)

    async def _interrupt(self, played_ms: int | None) -> None:
        item = self._items.latest
        heard_ms: int | None = None
        if item is not None and played_ms is not None:
            heard_ms = self._cut_to_heard(item, played_ms)
        if self._responding is not None or heard_ms is not None:
            await self._provider.cancel(item.item_id if item else None, heard_ms)

    def _cut_to_heard(self, item: AssistantItem, played_ms: int) -> int:
        """Remember (and cut its stored text to) how much of ``item`` was heard, in ms."""
        heard_ms = item.hear(played_ms, self._provider.output_rate)
        if item.message_id is not None:
            # The answer was already stored whole: cut it to what was heard.
            self._transcripts.update(item.message_id, item.text)
            self._publish_final("assistant", item.item_id, item.text)
        return heard_ms

    def on_model_event(self, event: ModelEvent) -> None:
        """The provider's ``emit``: apply one model event (see ``Provider``)."""
        if not self.active:
            return
        try:
            self._on_model_event(event)
        except Exception:
            log.exception("handling an upstream event of session %s failed", self.id)
            self._lose_upstream()
            return
        if isinstance(event, ModelError) and event.fatal:
            self._lose_upstream()

    def _lose_upstream(self) -> None:
        if self.active and self._ending is None:
            log.warning("upstream link lost; ending the session")
            asyncio.get_running_loop().create_task(self.end("upstream_failed"))

    def _on_model_event(self, event: ModelEvent) -> None:
        if isinstance(event, AudioDelta):
            self._on_audio(event)
        elif isinstance(event, TranscriptDelta):
            self._items.position_of(event.item_id)
            if event.role == "assistant":
                self._assistant_item(event.item_id).text += event.delta
            self.log.append(
                "transcript", {"role": event.role, "itemId": event.item_id, "delta": event.delta}
            )
        elif isinstance(event, TranscriptDone):
            self._on_transcript_done(event)
        elif isinstance(event, SpeechStarted):
            self._items.position_of(event.item_id)
            self.log.append("speech_started", {"itemId": event.item_id})
        elif isinstance(event, SpeechStopped):
            self._turn = Turn()
            self.log.append("speech_stopped", {"itemId": event.item_id})
        elif isinstance(event, InputCommitted):
            self._items.position_of(event.item_id)
            if self._turn is None:
                self._turn = Turn()
        elif isinstance(event, ResponseStarted):
            self._responding = event.response_id
            self._tools.response_started(event.response_id)
            self.log.append("response_started", {"responseId": event.response_id})
        elif isinstance(event, ResponseDone):
            self._on_response_done(event)
            self._tools.response_done(event.response_id)
        elif isinstance(event, FunctionCall):
            self._tools.on_call(event, self._items.position_of(event.item_id))
        elif isinstance(event, ModelError):
            self.publish_error(event.code, event.message)
        elif isinstance(event, UpstreamReconnecting):
            data = {"reason": event.reason, "responseId": event.response_id}
            self.log.append("upstream_reconnecting", data)
        elif isinstance(event, UpstreamRestored):
            self.log.append("upstream_restored", {"attempts": event.attempts})

    def _on_audio(self, event: AudioDelta) -> None:
        received_at = time.monotonic()
        item = self._assistant_item(event.item_id, event.response_id)
        count = event.byte_count
        item.audio_bytes += count
        turn = self._turn
        if turn is not None and turn.first_audio_ms is None:
            turn.first_audio_ms = (received_at - turn.committed_at) * 1000
            metrics.FIRST_AUDIO_SECONDS.observe(turn.first_audio_ms / 1000)
        resampled = client_audio(self._output, event)
        if resampled is None:
            log.warning("dropping an audio delta that is not base64")
            return
        audio, count = resampled
        if count:
            metrics.AUDIO_OUT.inc(count)
            if not self._listeners.read_audio:
                return  # nobody reads audio from the log, and nobody will come back for it
            # Downstream relay latency counts from the delta's arrival (resampling included).
            self.log.append(
                "audio",
                {"responseId": event.response_id, "itemId": event.item_id, "audio": audio},
                at=received_at,
            )

    def _on_transcript_done(self, event: TranscriptDone) -> None:
        position = self._items.position_of(event.item_id)
        text = event.text
        if event.role == "user":
            if text.strip():
                self._transcripts.add("user", text, position, event.item_id)
            self._publish_final("user", event.item_id, text)
            return
        item = self._assistant_item(event.item_id)
        if item.heard_fraction is not None:
            text = cut_to_fraction(text, item.heard_fraction)
        item.text = text
        if item.message_id is None and text.strip():
            item.message_id = self._transcripts.add(
                "assistant",
                text,
                position,
                event.item_id,
                meta=self._turn.latency() if self._turn else None,
            )
            metrics.TURNS.inc()
        self._publish_final("assistant", event.item_id, text)

    def _on_response_done(self, event: ResponseDone) -> None:
        if self._responding == event.response_id:
            self._responding = None
        for item in self._items.answers():
            if item.response_id == event.response_id and item.message_id is None and item.text:
                # No final transcript came (failed mid-answer): keep what was said.
                self._on_transcript_done(TranscriptDone("assistant", item.item_id, item.text))
        self._turn = None
        self.log.append("response_done", {"responseId": event.response_id, "status": event.status})

    def _store_unfinished_answers(self) -> None:
        for item in self._items.answers():
            if item.message_id is None and item.text.strip():
                heard, text = item.heard_fraction, item.text
                text = text if heard is None else cut_to_fraction(text, heard)
                where = (item.position, item.item_id)
                item.message_id = self._transcripts.add("assistant", text, *where)

    # -- helpers -------------------------------------------------------------------------

    def _assistant_item(self, item_id: str, response_id: str | None = None) -> AssistantItem:
        return self._items.answer(item_id, response_id or self._responding or "")

    def _publish_final(self, role: str, item_id: str, text: str) -> None:
        self.log.append(
            "transcript", {"role": role, "itemId": item_id, "text": text, "final": True}
        )

    def publish_error(self, code: str, message: str) -> None:
        if not self.log.closed:
            self.log.append("error", {"code": code, "message": message})
