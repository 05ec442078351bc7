"""A session's link to its model, kept through drops: the ``Provider`` a session talks to.

An upstream link can drop (a network fault, an upstream restart, a refused
handshake), and OpenAI ends every Realtime session after 60 minutes. ``Upstream``
stands between the session and one provider link at a time. When the link is lost it
opens a new one with backoff and tells it the conversation so far: the session's
messages, then the turn that was waiting for its answer, then the speech not yet
committed. An error no retry cures (a refused key, no quota) ends the session as
before, and so does a link that cannot be opened again within a bounded time. Before
the upstream's longest session runs out, the link is moved to a fresh one at a turn
boundary, which nobody hears.

The answer being spoken when a link drops ends ``failed`` (what was said of it is
kept); it is not spoken again, since the user heard part of it. A user turn that had
no answer yet is sent again and answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from voxrelay.events import (
    AudioDelta,
    InputCommitted,
    ModelError,
    ModelEvent,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptDone,
    UpstreamReconnecting,
    UpstreamRestored,
)
from voxrelay.providers.base import (
    PERMANENT_ERRORS,
    SESSION_EXPIRED,
    EmitModelEvent,
    HistoryItem,
    Provider,
    ProviderError,
    SessionOptions,
    ToolOutput,
)
from voxrelay.sessions.turn_audio import TurnAudio

log = logging.getLogger(__name__)

# Speech just before a rollover that the old link may not have recognised as speech yet.
_ROLLOVER_TAIL_SECONDS = 1.0
# With the upstream detecting turns, audio kept while nobody speaks: enough for speech
# that began just before a link dropped, not the silence of a whole pause.
_QUIET_KEEP_SECONDS = 1.0
# A link lost sooner than this after it was reopened is the same outage: the backoff
# and the time spent without a link go on from where they were (an upstream that
# takes the handshake and then drops every link must not be reopened in a tight
# loop, nor forever). The time the link was up does not count against the outage.
_STABLE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    """How hard a session holds on to its upstream."""

    # Reopening a lost link stops after this long; the session then ends.
    reconnect_seconds: float = 60.0
    # A link this old moves to a fresh one at the next turn boundary (None: never).
    rollover_seconds: float | None = 55 * 60.0
    first_retry_seconds: float = 0.25
    last_retry_seconds: float = 4.0
    # Audio of the turn in progress kept for a new link, at most.
    keep_audio_seconds: float = 30.0
    # Of it, what is kept in memory only; more goes to a file in ``audio_dir`` (None:
    # the OS's temporary directory). 0: all of it in memory.
    keep_audio_memory_bytes: int = 64 << 10
    audio_dir: str | None = None


@dataclass(slots=True)
class _Unanswered:
    """The last user turn, while it has no answer: sent again to a new link."""

    item_id: str | None
    # Its audio, until its words are known (then None).
    audio: TurnAudio | None = None
    text: str | None = None
    # Tool results were given (the conversation holds them): only the answer is due.
    respond: bool = False


class Upstream:
    """The session's provider: one link at a time, reopened when lost (see module)."""

    def __init__(
        self, factory: Callable[[], Provider], first: Provider, policy: UpstreamPolicy
    ) -> None:
        self._factory = factory
        self._policy = policy
        self._link: Provider | None = first
        self._latest: Provider = first
        self.input_rate = first.input_rate
        self.output_rate = first.output_rate
        # Client audio handed upstream so far (at ``input_rate``), each byte once.
        self.audio_in_bytes = 0
        # What a new link is told: the conversation before this session, then this
        # session's messages (set by the session's owner).
        self.earlier: Sequence[HistoryItem] = ()
        self.said: Callable[[], list[HistoryItem]] = list
        self._options = SessionOptions()
        self._emit: EmitModelEvent = lambda event: None
        # Events of a link that is not the current one are dropped.
        self._idents = itertools.count()
        self._current = -1
        self._dead: set[int] = set()
        self._closed = False
        self._permanent: str | None = None
        self._expired = False
        self._reconnecting: asyncio.Task[None] | None = None
        # Of the outage going on: the time already spent without a link, before this loss.
        self._down_before = 0.0
        self._restored_at = float("-inf")
        self._retry_delay = policy.first_retry_seconds
        self._rollover: asyncio.TimerHandle | None = None
        self._rollover_due = False
        self._rolling = False
        self._max_pending = int(policy.keep_audio_seconds * self.input_rate) * 2
        self._max_quiet = int(_QUIET_KEEP_SECONDS * self.input_rate) * 2
        self._pending = self._turn_audio()
        self._unanswered: _Unanswered | None = None
        self._responding: str | None = None
        self._speaking = False

    # -- Provider ---------------------------------------------------------------------

    async def open(
        self, options: SessionOptions, history: Sequence[HistoryItem], emit: EmitModelEvent
    ) -> None:
        self._options, self.earlier, self._emit = options, tuple(history), emit
        assert self._link is not None
        self._current = next(self._idents)
        await self._open_link(self._link, history, self._current)
        self._arm_rollover()

    async def send_audio(self, pcm: bytes) -> None:
        self._keep(pcm)
        self.audio_in_bytes += len(pcm)
        if self._link is not None:
            await self._link.send_audio(pcm)

    async def commit(self) -> None:
        self._committed(None)
        if self._link is not None:
            await self._link.commit()

    async def send_text(self, item_id: str, text: str) -> None:
        self._answer_due(_Unanswered(item_id, text=text))
        if self._link is not None:
            await self._link.send_text(item_id, text)

    async def update_tools(self, tools: Sequence[Mapping[str, Any]]) -> None:
        # A new link opens with them.
        self._options = replace(self._options, tools=tuple(dict(tool) for tool in tools))
        if self._link is not None:
            await self._link.update_tools(tools)

    async def send_tool_outputs(self, outputs: Sequence[ToolOutput]) -> None:
        self._answer_due(_Unanswered(None, respond=True))
        if self._link is not None:
            await self._link.send_tool_outputs(outputs)

    async def cancel(self, item_id: str | None, played_ms: int | None) -> None:
        # The user wants no answer: a new link must not give one either.
        self._answer_due(None)
        if self._link is not None:
            await self._link.cancel(item_id, played_ms)

    async def close(self) -> None:
        self._closed = True
        self._current = -1
        if self._rollover is not None:
            self._rollover.cancel()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        self._answer_due(None)
        self._pending.close()
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    # -- one link ---------------------------------------------------------------------

    async def _open_link(self, link: Provider, history: Sequence[HistoryItem], ident: int) -> None:
        def deliver(event: ModelEvent) -> None:
            if isinstance(event, ModelError) and event.fatal:
                self._dead.add(ident)
            if ident == self._current and not self._closed:
                self._on_event(event)

        await link.open(self._options, history, deliver)
        if ident in self._dead:
            raise ProviderError("the new upstream link dropped as it opened")

    def _history(self) -> list[HistoryItem]:
        """The conversation so far, less the turn a new link is sent again."""
        again = self._unanswered.item_id if self._unanswered else None
        messages = [*self.earlier, *self.said()]
        return [m for m in messages if again is None or m.item_id != again]

    def _turn_audio(self) -> TurnAudio:
        policy = self._policy
        return TurnAudio(self._max_pending, policy.keep_audio_memory_bytes, policy.audio_dir)

    def _keep(self, pcm: bytes) -> None:
        pending = self._pending
        pending.append(pcm)
        if not self._speaking and self._options.turn_detection == "server_vad":
            pending.keep_last(self._max_quiet)

    def _answer_due(self, turn: _Unanswered | None) -> None:
        """``turn`` is the one a new link must answer now (None: none is)."""
        old, self._unanswered = self._unanswered, turn
        if old is not None and old.audio is not None and old is not turn:
            old.audio.close()

    def _committed(self, item_id: str | None) -> None:
        turn = self._unanswered
        if turn is not None and turn.text is None and turn.item_id is None and not turn.respond:
            # The upstream named the turn a commit of ours (or a new link) made.
            turn.item_id = item_id
            self._pending.clear()
        else:
            # The turn takes the audio (and its file) along; the next one starts anew.
            audio, self._pending = self._pending, self._turn_audio()
            self._answer_due(_Unanswered(item_id, audio))
        self._speaking = False

    def _on_event(self, event: ModelEvent) -> None:
        if type(event) is AudioDelta:
            # The answer's audio, the hot path: it changes nothing kept here.
            self._emit(event)
            return
        if isinstance(event, ModelError):
            if event.fatal:
                self._lost(event.message)
                return
            if event.code == SESSION_EXPIRED:
                # The close that follows reopens the link; nobody needs to hear this.
                self._expired = True
                return
            if event.code in PERMANENT_ERRORS:
                self._permanent = event.code
        elif isinstance(event, SpeechStarted):
            self._speaking = True
        elif isinstance(event, SpeechStopped):
            self._speaking = False
        elif isinstance(event, InputCommitted):
            self._committed(event.item_id)
        elif isinstance(event, TranscriptDone):
            turn = self._unanswered
            if event.role == "user" and turn is not None and turn.item_id == event.item_id:
                # Its words are known now: a new link gets them as text, not as audio.
                turn.text = event.text
                if turn.audio is not None:
                    turn.audio.close()
                    turn.audio = None
        elif isinstance(event, ResponseStarted):
            self._responding = event.response_id
            self._answer_due(None)
        elif isinstance(event, ResponseDone) and self._responding == event.response_id:
            self._responding = None
        self._emit(event)
        if self._rollover_due:
            self._roll_at_boundary()

    # -- a lost link ------------------------------------------------------------------

    def _lost(self, why: str) -> None:
        if self._closed or self._link is None:
            return
        old, self._link = self._link, None
        self._current = -1
        if self._rollover is not None:
            self._rollover.cancel()
        if self._permanent is not None:
            log.warning("upstream link lost after %s; not reopening it", self._permanent)
            self._emit(ModelError("upstream_failed", why, fatal=True))
            return
        log.warning("upstream link lost (%s); reopening it", why)
        responding, self._responding = self._responding, None
        if responding is not None:
            self._emit(ResponseDone(responding, "failed"))
        self._speaking = False
        reason = "session_expired" if self._expired else "link_lost"
        self._expired = False
        self._emit(UpstreamReconnecting(reason, responding))
        now = time.monotonic()
        flapping = now - self._restored_at < _STABLE_SECONDS
        if not flapping:
            self._down_before, self._retry_delay = 0.0, self._policy.first_retry_seconds
        reopen = self._reopen(old, flapping, now)
        self._reconnecting = asyncio.get_running_loop().create_task(reopen)

    async def _reopen(self, old: Provider, flapping: bool, lost_at: float) -> None:
        with contextlib.suppress(Exception):
            await old.close()
        policy = self._policy
        give_up_at = lost_at + policy.reconnect_seconds - self._down_before
        attempts = 0
        if flapping:
            if time.monotonic() + self._retry_delay > give_up_at:
                self._give_up()
                return
            await asyncio.sleep(self._retry_delay)
            self._retry_delay = min(self._retry_delay * 2, policy.last_retry_seconds)
        while not self._closed:
            attempts += 1
            link = self._factory()
            # Its events count from the start (a pass-through client hears the
            # settings it answers with), its requests only once it is open.
            ident = self._current = next(self._idents)
            try:
                await self._open_link(link, self._history(), ident)
            except Exception as error:
                with contextlib.suppress(Exception):
                    await link.close()
                permanent = isinstance(error, ProviderError) and error.permanent
                log.warning("reopening the upstream link failed (try %d): %s", attempts, error)
                if permanent or time.monotonic() + self._retry_delay > give_up_at:
                    self._give_up()
                    return
                await asyncio.sleep(self._retry_delay)
                self._retry_delay = min(self._retry_delay * 2, policy.last_retry_seconds)
                continue
            if self._closed or ident != self._current:
                await link.close()
                return
            self._link = self._latest = link
            self._reconnecting = None
            self._restored_at = time.monotonic()
            self._down_before += self._restored_at - lost_at
            await self._resume_turn(link, len(self._pending))
            log.info("upstream link reopened after %d tries", attempts)
            self._emit(UpstreamRestored(attempts))
            self._arm_rollover()
            return

    def _give_up(self) -> None:
        self._reconnecting = None
        if self._closed:
            return
        self._emit(
            ModelError(
                "upstream_unavailable",
                "the voice model cannot be reached again; the conversation is stored",
            )
        )
        self._emit(ModelError("upstream_failed", "the upstream link could not be reopened", True))

    async def _resume_turn(self, link: Provider, pending_bytes: int) -> None:
        """Send a new link the turn still waiting for its answer, then the last
        ``pending_bytes`` of audio not yet committed."""
        turn = self._unanswered
        if turn is not None and turn.respond:
            # The results are in the history the new link was given: ask again.
            await link.send_tool_outputs(())
        elif turn is not None and turn.text is not None and turn.item_id is not None:
            await link.send_text(turn.item_id, turn.text)
        elif turn is not None and turn.audio is not None and len(turn.audio):
            turn.item_id = None  # the new link names it anew
            await link.send_audio(turn.audio.tail(len(turn.audio)))
            await link.commit()
        if pending_bytes:
            await link.send_audio(self._pending.tail(pending_bytes))
        await self._restored(link)

    async def _restored(self, link: Provider) -> None:
        """What else a new link is told before requests go on (see ``RawUpstream``)."""

    # -- rollover ---------------------------------------------------------------------

    def _arm_rollover(self) -> None:
        seconds = self._policy.rollover_seconds
        if seconds is None or self._closed:
            return
        self._rollover_due = False
        self._rollover = asyncio.get_running_loop().call_later(seconds, self._rollover_time)

    def _rollover_time(self) -> None:
        self._rollover_due = True
        self._roll_at_boundary()

    def _at_boundary(self) -> bool:
        return (
            self._link is not None
            and self._responding is None
            and self._unanswered is None
            and not self._speaking
        )

    def _roll_at_boundary(self) -> None:
        if self._rolling or not self._at_boundary():
            return
        self._rolling = True
        asyncio.get_running_loop().create_task(self._roll())

    async def _roll(self) -> None:
        link = self._factory()
        # Events the new link sends before it takes over belong to nobody yet.
        ident = next(self._idents)
        was = self._current
        try:
            await self._open_link(link, self._history(), ident)
        except Exception as error:
            log.warning("opening a fresh upstream link failed; keeping the old one: %s", error)
            with contextlib.suppress(Exception):
                await link.close()
            self._rolling = False
            return
        self._rolling = False
        if not self._at_boundary() or self._current != was or ident in self._dead:
            # A turn began meanwhile (it stays with the old link; try again after it),
            # or the old link was lost and is being reopened anyway.
            await link.close()
            return
        old, self._link, self._latest = self._link, link, link
        self._current = ident
        tail = min(len(self._pending), int(_ROLLOVER_TAIL_SECONDS * self.input_rate) * 2)
        await self._resume_turn(link, tail)
        log.info("upstream link moved to a fresh session before its time ran out")
        self._arm_rollover()
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
