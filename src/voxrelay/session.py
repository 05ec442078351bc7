"""A live conversation: the one place that owns it.

A ``Session`` holds the upstream link, turns the provider's events into the
numbered client-facing event log, and persists each finished turn. Requests
from transports (audio, commit, text, interrupt) are applied one at a time, in
the order they come, under the session's one ordering lock; every way a session
ends (client, idle, shutdown, upstream failure) goes through ``end(reason)``,
which flushes the stored transcript and writes ``conversation_ended`` last.

The audio path has no hop of its own: a transport's call applies its chunk
(resample, hand to the provider) in the transport's own task when nothing is
ahead of it, and the provider's events are handled in the callback that
delivers them, so a chunk costs no task switch inside the session either way.

Beside the normalized log, a session whose provider speaks the OpenAI Realtime
protocol (``RawProvider``) offers a raw pass-through for the OpenAI-compatible
WebSocket: ``raw_events`` subscribes to the upstream's own events, ``send_raw``
sends an upstream event as a command to the owner. The session still owns the
conversation: the provider maps the same upstream events into the log, so
transcripts are stored and other listeners see normalized events as usual.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from voxrelay import logs, metrics
from voxrelay.audio import StreamResampler, duration_ms
from voxrelay.eventlog import EventLog
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
from voxrelay.openai_realtime.protocol import RawListener
from voxrelay.providers.base import Provider, RawProvider, TurnDetection
from voxrelay.store import Store

log = logging.getLogger(__name__)

EndReason = Literal["client_end", "idle_timeout", "server_shutdown", "upstream_failed"]
# What a listener reads from the log (``Session.attached``).
Reads = Literal["all", "replays", "no_audio"]

# An upstream complaint about cancelling when nothing is in progress is noise
# to the client: the interrupt it asked for already holds.
_QUIET_ERRORS = frozenset({"response_cancel_not_active"})


class SessionEnded(Exception):
    """The session is no longer active."""


class LiveSession(Protocol):
    """What a transport may do with a live session, whether it runs in this worker
    (``Session``) or another (``workers.link.RemoteSession``)."""

    id: str
    conversation_id: str
    user_id: str
    created_at: datetime
    input_rate: int
    output_rate: int
    turn_detection: TurnDetection
    status: Literal["active", "ended"]
    log: EventLog
    seqs_taken: dict[int, int]

    @property
    def active(self) -> bool: ...

    def attached(self, *, reads: Reads = "all") -> contextlib.AbstractContextManager[None]: ...

    async def send_audio(
        self, pcm: bytes, rate: int | None = None, *, transport: str = "", received_at: float = 0.0
    ) -> None: ...

    async def commit(self) -> None: ...

    async def send_text(self, text: str, item_id: str | None = None) -> str: ...

    async def interrupt(self, played_ms: int | None = None) -> None: ...

    async def end(self, reason: EndReason) -> None: ...

    async def end_if_last(self, reason: EndReason) -> bool: ...

    def can_restart(self) -> bool: ...


def new_item_id() -> str:
    return "item_" + secrets.token_hex(12)


@dataclass(slots=True)
class _AssistantItem:
    item_id: str
    response_id: str
    position: int
    audio_bytes: int = 0
    text: str = ""
    heard_fraction: float | None = None
    message_id: str | None = None


@dataclass(slots=True)
class _Turn:
    """Timing of the answer to one user turn, stored with the answer."""

    committed_at: float = field(default_factory=time.monotonic)
    first_audio_ms: float | None = None


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
        self.log = EventLog(keep_seconds=log_keep_seconds, max_bytes=log_max_bytes)
        self.listeners = 0
        # Listeners that read answer audio from the log, and whether one may come back
        # for what it missed (``attached``).
        self._audio_readers = 0
        self._audio_replayable = False
        self.on_idle: Callable[[Session], None] | None = None
        self.on_active: Callable[[Session], None] | None = None
        self._provider = provider
        self._raw_provider = provider if isinstance(provider, RawProvider) else None
        self._raw_listeners: list[RawListener] = []
        # The upstream's latest session object (from session.created / session.updated);
        # settled once the upstream has answered the server's own session.update.
        self.raw_session: dict[str, Any] | None = None
        self.raw_session_settled = False
        # User text items already stored by ``add_user_text``.
        self._recorded_texts: set[str] = set()
        self._store = store
        self._next_position = next_position
        self._positions: dict[str, int] = {}
        self._resamplers: dict[int, StreamResampler] = {}
        self._output = StreamResampler(provider.output_rate, output_rate)
        self._assistant: dict[str, _AssistantItem] = {}
        self._last_assistant: _AssistantItem | None = None
        self._responding: str | None = None
        self._turn: _Turn | None = None
        # Requests are applied one at a time, in order (asyncio.Lock wakes waiters FIFO);
        # an uncontended acquire does not suspend.
        self._order = asyncio.Lock()
        self._writes: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = asyncio.Event()
        self._ending: asyncio.Task[None] | None = None
        self._opened_at = time.monotonic()
        self._stored_messages = 0
        # Upload ``seq`` numbers already forwarded, with their byte counts.
        self.seqs_taken: dict[int, int] = {}
        self.log.append(
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
        """Begin storing transcripts; the provider must already be open, delivering
        its events to ``on_model_event``."""
        loop = asyncio.get_running_loop()
        # The session's own task logs as this session's, whichever request started it.
        context = logs.session_context(self.conversation_id, self.id)
        self._tasks = [
            loop.create_task(self._write_transcripts(), name=f"{self.id}-writes", context=context),
        ]

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
        """End the session when the caller is its only listener (a client that closes
        its connection is done with the conversation, unless somebody else still
        listens); returns whether it ended."""
        if not self.active or self.listeners > 1:
            return False
        await self.end(reason)
        return True

    def can_restart(self) -> bool:
        """Whether the session may still be replaced by one with other settings: it is
        active, has said nothing beyond its opening event, and nobody else listens."""
        return self.active and self.listeners <= 1 and self.log.last_id <= 1

    async def _end(self, reason: EndReason) -> None:
        # From here on requests are refused and model events dropped.
        self.status = "ended"
        self.end_reason = reason
        with contextlib.suppress(Exception):
            await self._provider.close()
        self._store_unfinished_answers()
        self._writes.put_nowait(None)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._store.end_session(self.id, reason)
        except Exception:
            log.exception("could not mark session %s ended", self.id)
        self.log.append(
            "conversation_ended", {"conversationId": self.conversation_id, "reason": reason}
        )
        self.log.close()
        self._ended.set()
        metrics.SESSIONS_ENDED.labels(reason=reason).inc()
        log.info(
            "session ended",
            extra={
                "conversation_id": self.conversation_id,
                "session_id": self.id,
                "reason": reason,
                "duration_s": round(time.monotonic() - self._opened_at, 3),
                "messages": self._stored_messages,
            },
        )

    # -- listeners -----------------------------------------------------------------

    @contextlib.contextmanager
    def attached(self, *, reads: Reads = "all") -> Iterator[None]:
        """Count a listener or an upload in progress: the session is not idle.

        ``reads`` says what it takes from the log: everything from now on (``all``),
        everything and, after a reconnect, what it missed (``replays``: an SSE stream),
        or nothing of the audio (``no_audio``: an upload, or a pass-through WebSocket,
        which hears the upstream's own audio events). Answer audio goes into the log
        only while someone may read it there."""
        self.listeners += 1
        if reads != "no_audio":
            self._audio_readers += 1
        if reads == "replays":
            self._audio_replayable = True
        if self.listeners == 1 and self.on_active is not None:
            self.on_active(self)
        try:
            yield
        finally:
            self.listeners -= 1
            if reads != "no_audio":
                self._audio_readers -= 1
            if self.listeners == 0 and self.on_idle is not None:
                self.on_idle(self)

    # -- raw pass-through (OpenAI-protocol upstreams only) ---------------------------------

    @property
    def raw_dialect(self) -> str | None:
        """The upstream's OpenAI Realtime dialect, or None without a raw pass-through."""
        return self._raw_provider.dialect if self._raw_provider is not None else None

    @property
    def raw_transcription_model(self) -> str | None:
        """The input transcription model the server chose for the upstream, if known."""
        model = getattr(self._raw_provider, "transcription_model", None)
        return model if isinstance(model, str) else None

    @contextlib.contextmanager
    def raw_events(self, listener: RawListener) -> Iterator[None]:
        """Call ``listener`` with every upstream event while the block runs."""
        if self._raw_provider is None:
            raise TypeError("this session's provider has no raw pass-through")
        self._raw_listeners.append(listener)
        try:
            yield
        finally:
            self._raw_listeners.remove(listener)

    def on_raw(self, event: dict[str, Any], raw: bytes) -> None:
        """The provider's ``on_raw``: remember the upstream's session, fan the event out."""
        if event.get("type") in ("session.created", "session.updated"):
            session = event.get("session")
            if isinstance(session, dict):
                self.raw_session = session
        if event.get("type") == "session.updated":
            self.raw_session_settled = True
        for listener in list(self._raw_listeners):
            try:
                listener(event, raw)
            except Exception:
                log.exception("a raw listener of session %s failed", self.id)

    # -- requests from transports ------------------------------------------------------

    async def send_audio(
        self, pcm: bytes, rate: int | None = None, *, transport: str = "", received_at: float = 0.0
    ) -> None:
        """Send client audio (at ``rate``, default the session's input rate) upstream,
        after every request before it. A ``transport`` of ``metrics.AUDIO_TRANSPORTS`` with
        the ``time.monotonic()`` it received the chunk at is measured in
        ``voxrelay_relay_latency_seconds``. A failure upstream is reported to the
        listeners as an ``error`` event, not raised: the client's stream goes on."""
        if not self.active:
            raise SessionEnded(self.id)
        rate = rate or self.input_rate
        async with self._order:
            if not self.active:
                raise SessionEnded(self.id)
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

    async def commit(self) -> None:
        async with self._applying():
            self._turn = _Turn()
            await self._provider.commit()

    async def send_text(self, text: str, item_id: str | None = None) -> str:
        """Send a typed user message upstream and ask for an answer. With the
        ``item_id`` of a message already stored by ``add_user_text``, it is not
        stored or published again."""
        item_id = item_id or new_item_id()
        async with self._applying():
            self._turn = _Turn()
            if item_id in self._recorded_texts:
                self._recorded_texts.discard(item_id)
            else:
                self._record_user_text(item_id, text)
            await self._provider.send_text(item_id, text)
        return item_id

    async def add_user_text(self, item_id: str, text: str) -> None:
        """Store a typed user message whose item id the client chose, in its place
        in the conversation, and publish its final transcript; nothing goes upstream
        (the caller sends the item itself, raw or with ``send_text``)."""
        async with self._applying():
            self._turn = _Turn()
            self._record_user_text(item_id, text)
            self._recorded_texts.add(item_id)

    async def note_heard(self, item_id: str, played_ms: int) -> None:
        """The user heard only ``played_ms`` of assistant item ``item_id``: cut its stored
        transcript as ``interrupt`` does, without telling the upstream (a pass-through
        client sends its own ``conversation.item.truncate``)."""
        async with self._applying():
            item = self._last_assistant
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
                raise SessionEnded(self.id)
            async with self._order:
                if not self.active:
                    raise SessionEnded(self.id)
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
                self._turn = _Turn()
            await raw.send_raw(event)

    async def interrupt(self, played_ms: int | None = None) -> None:
        async with self._applying():
            await self._interrupt(played_ms)

    @contextlib.asynccontextmanager
    async def _applying(self) -> AsyncIterator[None]:
        """Apply a request after every one before it; a failure upstream is also
        reported to the listeners, then raised to the caller."""
        if not self.active:
            raise SessionEnded(self.id)
        async with self._order:
            if not self.active:
                raise SessionEnded(self.id)
            try:
                yield
            except SessionEnded:
                raise
            except Exception as error:
                self._upstream_refused("request", error)
                raise

    def _upstream_refused(self, what: str, error: Exception) -> None:
        log.warning("upstream rejected %s: %s", what, error)
        self._publish_error("upstream_error", "the upstream did not take the request")

    def _record_user_text(self, item_id: str, text: str) -> None:
        position = self._position_of(item_id)
        self._persist_message("user", text, position, item_id)
        self._publish_final("user", item_id, text)

    async def _interrupt(self, played_ms: int | None) -> None:
        item = self._last_assistant
        heard_ms: int | None = None
        if item is not None and played_ms is not None:
            heard_ms = self._cut_to_heard(item, played_ms)
        if self._responding is not None or heard_ms is not None:
            await self._provider.cancel(item.item_id if item else None, heard_ms)

    def _cut_to_heard(self, item: _AssistantItem, played_ms: int) -> int:
        """Remember how much of ``item`` was heard (cutting its stored text if it
        was already stored); returns the heard milliseconds."""
        total_ms = duration_ms(item.audio_bytes, self._provider.output_rate)
        heard_ms = int(min(max(played_ms, 0), total_ms))
        item.heard_fraction = heard_ms / total_ms if total_ms > 0 else 0.0
        if item.message_id is not None:
            # The answer was already stored whole: cut it to what was heard.
            text = cut_to_fraction(item.text, item.heard_fraction)
            item.text = text
            self._update_message(item.message_id, text)
            self._publish_final("assistant", item.item_id, text)
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
            self._position_of(event.item_id)
            if event.role == "assistant":
                self._assistant_item(event.item_id).text += event.delta
            self.log.append(
                "transcript", {"role": event.role, "itemId": event.item_id, "delta": event.delta}
            )
        elif isinstance(event, TranscriptDone):
            self._on_transcript_done(event)
        elif isinstance(event, SpeechStarted):
            self._position_of(event.item_id)
            self.log.append("speech_started", {"itemId": event.item_id})
        elif isinstance(event, SpeechStopped):
            self._turn = _Turn()
            self.log.append("speech_stopped", {"itemId": event.item_id})
        elif isinstance(event, InputCommitted):
            self._position_of(event.item_id)
            if self._turn is None:
                self._turn = _Turn()
        elif isinstance(event, ResponseStarted):
            self._responding = event.response_id
            self.log.append("response_started", {"responseId": event.response_id})
        elif isinstance(event, ResponseDone):
            self._on_response_done(event)
        elif isinstance(event, ModelError) and event.code not in _QUIET_ERRORS:
            self._publish_error(event.code, event.message)

    def _on_audio(self, event: AudioDelta) -> None:
        received_at = time.monotonic()
        item = self._assistant_item(event.item_id, event.response_id)
        count = event.byte_count
        item.audio_bytes += count
        turn = self._turn
        if turn is not None and turn.first_audio_ms is None:
            turn.first_audio_ms = (received_at - turn.committed_at) * 1000
            metrics.FIRST_AUDIO_SECONDS.observe(turn.first_audio_ms / 1000)
        if self._output.passes_through(count):
            # The client takes the provider's rate: the audio goes out as it came.
            audio = event.encoded
        else:
            try:
                pcm = self._output.feed(event.pcm)
            except ValueError:  # binascii.Error: the upstream's base64 is broken
                log.warning("dropping an audio delta that is not base64")
                return
            count = len(pcm)
            audio = base64.b64encode(pcm).decode("ascii")
        if count:
            metrics.AUDIO_OUT.inc(count)
            if not (self._audio_readers or self._audio_replayable):
                return  # nobody reads audio from the log, and nobody will come back for it
            # Downstream relay latency counts from the delta's arrival (resampling included).
            self.log.append(
                "audio",
                {"responseId": event.response_id, "itemId": event.item_id, "audio": audio},
                at=received_at,
            )

    def _on_transcript_done(self, event: TranscriptDone) -> None:
        position = self._position_of(event.item_id)
        text = event.text
        if event.role == "user":
            if text.strip():
                self._persist_message("user", text, position, event.item_id)
            self._publish_final("user", event.item_id, text)
            return
        item = self._assistant_item(event.item_id)
        if item.heard_fraction is not None:
            text = cut_to_fraction(text, item.heard_fraction)
        item.text = text
        if item.message_id is None and text.strip():
            item.message_id = self._persist_message(
                "assistant", text, position, event.item_id, meta=self._latency_meta()
            )
            metrics.TURNS.inc()
        self._publish_final("assistant", event.item_id, text)

    def _on_response_done(self, event: ResponseDone) -> None:
        if self._responding == event.response_id:
            self._responding = None
        for item in self._assistant.values():
            if item.response_id == event.response_id and item.message_id is None and item.text:
                # The upstream never sent a final transcript (failed mid-answer):
                # keep what was said.
                self._on_transcript_done(TranscriptDone("assistant", item.item_id, item.text))
        self._turn = None
        self.log.append("response_done", {"responseId": event.response_id, "status": event.status})

    def _store_unfinished_answers(self) -> None:
        for item in self._assistant.values():
            if item.message_id is None and item.text.strip():
                text = item.text
                if item.heard_fraction is not None:
                    text = cut_to_fraction(text, item.heard_fraction)
                item.message_id = self._persist_message(
                    "assistant", text, item.position, item.item_id
                )

    # -- helpers -------------------------------------------------------------------------

    def _assistant_item(self, item_id: str, response_id: str | None = None) -> _AssistantItem:
        item = self._assistant.get(item_id)
        if item is None:
            item = _AssistantItem(
                item_id, response_id or self._responding or "", self._position_of(item_id)
            )
            self._assistant[item_id] = item
            self._last_assistant = item
            # Only the latest answer can still be interrupted; forget the rest.
            for old in [
                key for key, value in self._assistant.items() if value.message_id and key != item_id
            ]:
                del self._assistant[old]
        return item

    def _position_of(self, item_id: str) -> int:
        """Messages are ordered by when their item first appeared, not when its
        transcript finished (a user transcript may land after the answer began)."""
        position = self._positions.get(item_id)
        if position is None:
            position = self._positions[item_id] = self._next_position
            self._next_position += 1
        return position

    def _latency_meta(self) -> dict[str, Any] | None:
        if self._turn is None or self._turn.first_audio_ms is None:
            return None
        return {"firstAudioMs": round(self._turn.first_audio_ms, 1)}

    def _publish_final(self, role: str, item_id: str, text: str) -> None:
        self.log.append(
            "transcript", {"role": role, "itemId": item_id, "text": text, "final": True}
        )

    def _publish_error(self, code: str, message: str) -> None:
        if not self.log.closed:
            self.log.append("error", {"code": code, "message": message})

    def _persist_message(
        self, role: str, text: str, position: int, item_id: str, meta: dict[str, Any] | None = None
    ) -> str:
        """Queue the write; return the message id at once so later edits can name it."""
        message_id = "msg_" + secrets.token_hex(12)
        self._stored_messages += 1

        async def write() -> None:
            await self._store.add_message(
                self.conversation_id,
                role=role,
                text=text,
                position=position,
                item_id=item_id,
                meta=meta,
                message_id=message_id,
            )

        self._writes.put_nowait(write)
        return message_id

    def _update_message(self, message_id: str, text: str) -> None:
        async def write() -> None:
            await self._store.update_message(message_id, text=text)

        self._writes.put_nowait(write)

    async def _write_transcripts(self) -> None:
        # Writes leave the event pump at once and land in order here, so a slow
        # database never holds back audio.
        while (write := await self._writes.get()) is not None:
            for attempt in range(3):
                try:
                    await write()
                    break
                except Exception:
                    log.exception("storing a message of %s failed (try %d)", self.id, attempt + 1)
                    await asyncio.sleep(0.2 * (attempt + 1))


def cut_to_fraction(text: str, fraction: float) -> str:
    """The words of ``text`` that fit in the heard ``fraction`` of its audio."""
    words = text.split()
    keep = round(len(words) * max(0.0, min(1.0, fraction)))
    return " ".join(words[:keep])
