"""Limits per user, each off unless set: tokens a day, minutes of live sessions a day,
live sessions at once, and how long one conversation may be live.

Every limit is the acting user's, whichever token acts for them (a device token made
without ``--user`` is a user of its own). Days begin at 00:00 UTC. A new session is
refused (``QuotaExceeded``) when a limit is already reached. A live session that reaches
one is ended at the next turn boundary, so that nothing being said is cut off: once no
answer is being given or awaited, the user is not speaking and every user turn has its
transcript (or after ``LONGEST_WAIT_SECONDS`` at the latest), an ``error``
``quota_exceeded`` then ``conversation_ended`` ``quota_exceeded``.

Everything is counted from the store, so the limits hold across worker processes and
nodes that share a database: tokens and minutes from the usage records, plus the
minutes of live sessions not yet in a record; live sessions from the sessions marked
active, counted again once a new one is marked, so two starting together cannot both
pass the last free place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from voxrelay import metrics
from voxrelay.config import Settings
from voxrelay.events import (
    InputCommitted,
    ModelEvent,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TranscriptDone,
    UpstreamReconnecting,
)
from voxrelay.exceptions import QuotaExceeded
from voxrelay.sessions.session import Session
from voxrelay.sessions.usage import UsageMeter
from voxrelay.store import Store, Usage
from voxrelay.store.base import utcnow

log = logging.getLogger(__name__)

# A session due to end waits at most this long for a turn boundary.
LONGEST_WAIT_SECONDS = 30.0
# How often a live session checks the user's minutes of the day (other sessions of the
# user count too).
_MINUTES_CHECK_SECONDS = 30.0
_RENEWS = "it renews at 00:00 UTC"


@dataclass(frozen=True, slots=True)
class Limits:
    tokens_per_day: int = 0
    seconds_per_day: float = 0.0
    sessions: int = 0
    conversation_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.quota_tokens_per_day,
            settings.quota_minutes_per_day * 60,
            settings.max_sessions_per_user,
            settings.max_conversation_seconds,
        )

    @property
    def any(self) -> bool:
        return bool(
            self.tokens_per_day
            or self.seconds_per_day
            or self.sessions
            or self.conversation_seconds
        )


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


class Quotas:
    def __init__(self, store: Store, limits: Limits) -> None:
        self._store = store
        self.limits = limits

    async def check_start(self, user_id: str, conversation_id: str) -> None:
        """Refuse a new session of the user's when a limit is already reached."""
        limits = self.limits
        if limits.sessions and await self._store.count_active_sessions(user_id) >= limits.sessions:
            _refuse("sessions_per_user", self._too_many())
        if limits.tokens_per_day or limits.seconds_per_day:
            today = await self._today(user_id)
            if limits.tokens_per_day and today.tokens >= limits.tokens_per_day:
                _refuse("tokens_per_day", self._no_tokens())
            if limits.seconds_per_day and today.session_seconds >= limits.seconds_per_day:
                _refuse("minutes_per_day", self._no_minutes())
        if limits.conversation_seconds:
            lived = await self.conversation_seconds(user_id, conversation_id)
            if lived >= limits.conversation_seconds:
                _refuse("conversation_seconds", self._too_long())

    async def conversation_seconds(
        self, user_id: str, conversation_id: str, *, not_session: str | None = None
    ) -> float:
        """How long the conversation has been live (not counting an earlier, deleted
        conversation that had the same id)."""
        conversation = await self._store.get_conversation(conversation_id)
        usage = await self._store.usage(
            user_id=user_id,
            conversation_id=conversation_id,
            since=conversation.created_at if conversation else None,
            not_session=not_session,
        )
        return usage.session_seconds

    async def check_started(self, session: Session) -> None:
        """Once a new session is marked active: refuse it if that made one too many (two
        that started together both count each other, so neither is let past the limit)."""
        limit = self.limits.sessions
        if limit and await self._store.count_active_sessions(session.user_id) > limit:
            await session.end("quota_exceeded")
            _refuse("sessions_per_user", self._too_many())

    def watch(self, session: Session, meter: UsageMeter) -> QuotaWatch | None:
        """Watch a live session against the limits a session can reach while it runs."""
        limits = self.limits
        if not (limits.tokens_per_day or limits.seconds_per_day or limits.conversation_seconds):
            return None
        return QuotaWatch(self, session, meter)

    async def _today(self, user_id: str, *, not_session: str | None = None) -> Usage:
        """The user's usage since 00:00 UTC, the live sessions' unrecorded time included."""
        now = utcnow()
        since = day_start(now)
        used = await self._store.usage(user_id=user_id, since=since, not_session=not_session)
        if self.limits.seconds_per_day:
            unrecorded = await self._store.unrecorded_seconds(user_id, since, now)
            used += Usage(session_seconds=unrecorded)
        return used

    def _too_many(self) -> str:
        return f"this user already has {self.limits.sessions} live sessions; end one first"

    def _no_tokens(self) -> str:
        return f"the daily quota of {self.limits.tokens_per_day} tokens is used up; {_RENEWS}"

    def _no_minutes(self) -> str:
        minutes = self.limits.seconds_per_day / 60
        return f"the daily quota of {minutes:g} minutes of conversation is used up; {_RENEWS}"

    def _too_long(self) -> str:
        seconds = self.limits.conversation_seconds
        return f"this conversation reached its longest length ({seconds:g} s); start a new one"


def _refuse(limit: str, message: str) -> None:
    metrics.QUOTA_REFUSALS.labels(limit=limit, stage="start").inc()
    raise QuotaExceeded(message)


class QuotaWatch:
    """One live session against the limits: it ends the session at the next turn
    boundary once one is reached (see module)."""

    def __init__(self, quotas: Quotas, session: Session, meter: UsageMeter) -> None:
        self._quotas = quotas
        self._session = session
        self._meter = meter
        # What makes this moment no turn boundary.
        self._responding: set[str] = set()
        self._untranscribed: set[str] = set()
        self._awaiting_answer = False
        self._speaking = False
        self._reason: str | None = None  # the message, once a limit is reached
        self._ending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        meter.on_record.append(self._on_record)
        self._spawn(self._run())

    def on_event(self, event: ModelEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._speaking = True
        elif isinstance(event, SpeechStopped):
            self._speaking = False
        elif isinstance(event, InputCommitted):
            self._speaking = False
            self._awaiting_answer = True
            self._untranscribed.add(event.item_id)
        elif isinstance(event, TranscriptDone):
            if event.role == "user":
                self._untranscribed.discard(event.item_id)
        elif isinstance(event, ResponseStarted):
            self._awaiting_answer = False
            self._responding.add(event.response_id)
        elif isinstance(event, ResponseDone):
            self._responding.discard(event.response_id)
        elif isinstance(event, UpstreamReconnecting):
            # The old link's turns are over; the new one names what it is sent again.
            self._speaking = False
            self._untranscribed.clear()
        else:
            return
        if self._reason is not None:
            self._end_at_boundary()

    @property
    def at_boundary(self) -> bool:
        return not (
            self._responding or self._untranscribed or self._awaiting_answer or self._speaking
        )

    # -- what reaches a limit ----------------------------------------------------------

    async def _run(self) -> None:
        session, limits = self._session, self._quotas.limits
        try:
            if limits.conversation_seconds:
                try:
                    earlier = await self._quotas.conversation_seconds(
                        session.user_id, session.conversation_id, not_session=session.id
                    )
                except Exception as error:
                    # Checked at the start already: this session's own time still counts.
                    log.warning("could not read the conversation's earlier time: %s", error)
                    earlier = 0.0
                left = limits.conversation_seconds - earlier
                self._later(max(0.0, left), self._conversation_time)
            if limits.seconds_per_day:
                await self._check_minutes()
            await session.wait_ended()
        finally:
            for timer in self._timers:
                timer.cancel()
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()

    def _conversation_time(self) -> None:
        limit = self._quotas.limits.conversation_seconds
        self._reached("conversation_seconds", self._quotas._too_long())
        log.info("conversation reached its longest length of %g s; ending it", limit)

    async def _check_minutes(self) -> None:
        limit = self._quotas.limits.seconds_per_day
        try:
            used = (await self._quotas._today(self._session.user_id)).session_seconds
        except Exception as error:
            log.warning("could not check the user's minutes of the day: %s", error)
            used = 0.0
        if used >= limit:
            self._reached("minutes_per_day", self._quotas._no_minutes())
            return
        wait = min(limit - used, _MINUTES_CHECK_SECONDS)
        self._later(wait, lambda: self._spawn(self._check_minutes()))

    def _on_record(self, usage: Usage) -> None:
        if self._quotas.limits.tokens_per_day and usage.tokens:
            self._spawn(self._check_tokens())

    async def _check_tokens(self) -> None:
        session, limit = self._session, self._quotas.limits.tokens_per_day
        try:
            # This session's own records from memory: some may not be stored yet.
            others = await self._quotas._today(session.user_id, not_session=session.id)
        except Exception as error:
            log.warning("could not check the user's tokens of the day: %s", error)
            return
        if others.tokens + self._meter.tokens_since(day_start(utcnow())) >= limit:
            self._reached("tokens_per_day", self._quotas._no_tokens())

    # -- ending ----------------------------------------------------------------------------

    def _reached(self, limit: str, message: str) -> None:
        if self._reason is not None or not self._session.active:
            return
        self._reason = message
        metrics.QUOTA_REFUSALS.labels(limit=limit, stage="live").inc()
        self._later(LONGEST_WAIT_SECONDS, self._end)
        self._end_at_boundary()

    def _end_at_boundary(self) -> None:
        if self.at_boundary:
            self._end()

    def _end(self) -> None:
        session = self._session
        if self._ending or not session.active:
            return
        self._ending = True
        session.publish_error("quota_exceeded", self._reason or "a limit was reached")
        # Not one of the watch's own tasks: the ending must not be cancelled with them.
        asyncio.get_running_loop().create_task(session.end("quota_exceeded"))

    def _later(self, seconds: float, call: Callable[[], object]) -> None:
        self._timers.append(asyncio.get_running_loop().call_later(seconds, call))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("a quota check failed", exc_info=error)
