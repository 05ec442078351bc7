"""Where live sessions are started, found, kept alive and ended on this worker, and
where a transport finds a session that lives in another worker (``workers/link``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from voxrelay import metrics
from voxrelay.config import Settings
from voxrelay.errors import ApiError
from voxrelay.events import ModelEvent
from voxrelay.openai_realtime.protocol import RawListener
from voxrelay.providers.base import (
    HistoryMessage,
    Provider,
    ProviderError,
    RawProvider,
    SessionOptions,
)
from voxrelay.session import EndReason, LiveSession, Session
from voxrelay.store import Store
from voxrelay.store.ids import CONVERSATION_PREFIX, SESSION_PREFIX
from voxrelay.workers.ownership import SINGLE, Ownership

if TYPE_CHECKING:
    from voxrelay.workers.link import Peers

log = logging.getLogger(__name__)

ProviderFactory = Callable[[], Provider]


class ConversationBusy(Exception):
    """The conversation already has an active session."""


def start_failure(error: BaseException) -> ApiError | None:
    """What a client is told when starting a session failed with ``error``."""
    if isinstance(error, ConversationBusy):
        return ApiError(409, "conversation_busy", "the conversation already has an active session")
    if isinstance(error, ProviderError):
        return ApiError(502, "upstream_unavailable", str(error))
    if isinstance(error, OSError):
        return ApiError(502, "upstream_unavailable", f"the upstream is unreachable: {error}")
    return None


class SessionHub:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        provider_factory: ProviderFactory,
        ownership: Ownership = SINGLE,
    ) -> None:
        self._store = store
        self._settings = settings
        self._provider_factory = provider_factory
        self.ownership = ownership
        # The other workers, when there are several.
        self.peers: Peers | None = None
        self._sessions: dict[str, Session] = {}
        self._by_conversation: dict[str, Session] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._closing = False

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def for_conversation(self, conversation_id: str) -> Session | None:
        return self._by_conversation.get(conversation_id)

    async def find(self, session_id: str) -> LiveSession | None:
        """The live session with this id, in this worker or the one that owns it."""
        if self.peers is None or self.ownership.owns(session_id):
            return self._sessions.get(session_id)
        return await self.peers.find(self.ownership.owner(session_id), session=session_id)

    async def find_for_conversation(self, conversation_id: str) -> LiveSession | None:
        """The conversation's live session, wherever it lives."""
        if self.peers is None or self.ownership.owns(conversation_id):
            return self._by_conversation.get(conversation_id)
        owner = self.ownership.owner(conversation_id)
        return await self.peers.find(owner, conversation=conversation_id)

    def new_conversation_id(self) -> str:
        """An id for a new conversation, owned by this worker."""
        return self.ownership.new_id(CONVERSATION_PREFIX)

    async def start_anywhere(
        self,
        *,
        user_id: str,
        conversation_id: str,
        input_rate: int,
        output_rate: int,
        options: SessionOptions,
        join_active: bool = False,
    ) -> tuple[LiveSession, bool]:
        """``start`` in the worker that owns the conversation; returns the session and
        whether it is new. Failures are ``ApiError``s (see ``start_failure``), or a
        ``RuntimeError`` while this worker shuts down."""
        request: dict[str, Any] = {
            "user_id": user_id,
            "conversation_id": conversation_id,
            "input_rate": input_rate,
            "output_rate": output_rate,
            "options": options,
            "join_active": join_active,
        }
        if self.peers is not None and not self.ownership.owns(conversation_id):
            owner = self.ownership.owner(conversation_id)
            return await self.peers.start_session(owner, **request)
        before = self._by_conversation.get(conversation_id)
        try:
            session = await self.start(**request)
        except Exception as error:
            failure = start_failure(error)
            if failure is None:
                raise
            raise failure from None
        return session, session is not before

    def __len__(self) -> int:
        return len(self._sessions)

    async def start(
        self,
        *,
        user_id: str,
        conversation_id: str,
        input_rate: int,
        output_rate: int,
        options: SessionOptions,
        join_active: bool = False,
    ) -> Session:
        """Start a session on an existing conversation (the caller created or
        checked it). With ``join_active`` an active session is returned instead
        of ``ConversationBusy``."""
        lock = self._starting.setdefault(conversation_id, asyncio.Lock())
        try:
            async with lock:
                active = self._by_conversation.get(conversation_id)
                if active is not None and active.active:
                    if join_active:
                        return active
                    raise ConversationBusy(conversation_id)
                return await self._open(user_id, conversation_id, input_rate, output_rate, options)
        finally:
            if not lock.locked():
                self._starting.pop(conversation_id, None)

    async def _open(
        self,
        user_id: str,
        conversation_id: str,
        input_rate: int,
        output_rate: int,
        options: SessionOptions,
    ) -> Session:
        if self._closing:
            raise RuntimeError("the server is shutting down")
        messages = await self._store.list_messages(conversation_id)
        history = [HistoryMessage(m.role, m.text) for m in messages if m.text]  # type: ignore[arg-type]
        provider = self._provider_factory()
        # An OpenAI-protocol upstream's own events also reach the session's raw
        # pass-through; those seen while opening (session.created) wait for it.
        raw = provider if isinstance(provider, RawProvider) else None
        opening: list[tuple[dict[str, Any], bytes]] = []
        own_listener = raw.on_raw if raw is not None else None
        if raw is not None:
            raw.on_raw = _both(own_listener, lambda event, raw: opening.append((event, raw)))
        inbox = _Inbox()
        name = self._settings.provider
        opening_at = time.monotonic()
        try:
            await provider.open(options, history, inbox)
        except Exception as error:
            metrics.UPSTREAM_FAILURES.labels(provider=name, stage="open").inc()
            log.warning(
                "upstream connection failed: %s",
                error,
                extra={"conversation_id": conversation_id, "provider": name},
            )
            with contextlib.suppress(Exception):
                await provider.close()
            raise
        metrics.UPSTREAM_CONNECTS.labels(provider=name).inc()
        log.info(
            "upstream connected",
            extra={
                "conversation_id": conversation_id,
                "provider": name,
                "open_ms": round((time.monotonic() - opening_at) * 1000, 1),
            },
        )
        record = await self._store.create_session(
            conversation_id=conversation_id,
            user_id=user_id,
            input_sample_rate=input_rate,
            output_sample_rate=output_rate,
            turn_detection=options.turn_detection,
            options={k: v for k, v in asdict(options).items() if v is not None},
            session_id=self.ownership.new_id(SESSION_PREFIX),
        )
        session = Session(
            id=record.id,
            conversation_id=conversation_id,
            user_id=user_id,
            created_at=record.created_at,
            input_rate=input_rate,
            output_rate=output_rate,
            turn_detection=options.turn_detection,
            provider=provider,
            store=self._store,
            log_keep_seconds=max(self._settings.grace_seconds, 1.0),
            log_max_bytes=self._settings.replay_max_bytes,
            next_position=(messages[-1].position + 1) if messages else 0,
        )
        session.on_idle = self._arm_idle_timer
        session.on_active = self._disarm_idle_timer
        if raw is not None:
            for event, message in opening:
                session.on_raw(event, message)
            raw.on_raw = _both(own_listener, session.on_raw)
        inbox.deliver_to(session.on_model_event)
        self._sessions[session.id] = session
        self._by_conversation[conversation_id] = session
        session.start()
        metrics.SESSIONS_STARTED.inc()
        metrics.ACTIVE_SESSIONS.inc()
        log.info(
            "session started",
            extra={
                "conversation_id": conversation_id,
                "session_id": session.id,
                "provider": name,
                "input_rate": input_rate,
                "output_rate": output_rate,
                "turn_detection": options.turn_detection,
                "history_messages": len(history),
            },
        )
        asyncio.get_running_loop().create_task(self._forget_when_ended(session))
        self._arm_idle_timer(session)
        return session

    async def _forget_when_ended(self, session: Session) -> None:
        await session.wait_ended()
        self._disarm_idle_timer(session)
        self._sessions.pop(session.id, None)
        if self._by_conversation.get(session.conversation_id) is session:
            del self._by_conversation[session.conversation_id]
        metrics.ACTIVE_SESSIONS.dec()
        if session.end_reason == "upstream_failed":
            metrics.UPSTREAM_FAILURES.labels(provider=self._settings.provider, stage="live").inc()

    # A session nobody listens to (no stream, socket or upload) lives on for the
    # grace period, waiting for its client to come back, then ends.
    def _arm_idle_timer(self, session: Session) -> None:
        self._disarm_idle_timer(session)
        if session.active:
            loop = asyncio.get_running_loop()
            self._idle_timers[session.id] = loop.call_later(
                self._settings.grace_seconds, self._end_idle, session
            )

    def _disarm_idle_timer(self, session: Session) -> None:
        timer = self._idle_timers.pop(session.id, None)
        if timer is not None:
            timer.cancel()

    def _end_idle(self, session: Session) -> None:
        self._idle_timers.pop(session.id, None)
        if session.listeners == 0 and session.active:
            asyncio.get_running_loop().create_task(session.end("idle_timeout"))

    async def end_all(self, reason: EndReason) -> None:
        self._closing = True
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.end(reason) for s in sessions), return_exceptions=True)


class _Inbox:
    """Where a provider emits: its events wait here until their session exists."""

    __slots__ = ("_held", "_target")

    def __init__(self) -> None:
        self._held: list[ModelEvent] = []
        self._target: Callable[[ModelEvent], None] | None = None

    def __call__(self, event: ModelEvent) -> None:
        if self._target is not None:
            self._target(event)
        else:
            self._held.append(event)

    def deliver_to(self, target: Callable[[ModelEvent], None]) -> None:
        held, self._held = self._held, []
        self._target = target
        for event in held:
            target(event)


def _both(first: RawListener | None, then: RawListener) -> RawListener:
    """``then``, after the listener a provider may have been made with."""
    if first is None:
        return then

    def both(event: dict[str, Any], message: bytes) -> None:
        first(event, message)
        then(event, message)

    return both
