"""This process's live sessions: opening them, finding them by id, ending the ones
nobody listens to, and ending them all at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any

import httpx
import orjson

from voxrelay import metrics
from voxrelay.config import Settings
from voxrelay.events import ModelEvent
from voxrelay.exceptions import ConversationBusy, ServerClosing, UpstreamUnavailable
from voxrelay.pricing import load_prices
from voxrelay.providers import model_name
from voxrelay.providers.base import (
    HistoryItem,
    HistoryMessage,
    HistoryToolCall,
    Provider,
    ProviderError,
)
from voxrelay.sessions.live import EndReason, StartRequest
from voxrelay.sessions.pacing import AudioPace
from voxrelay.sessions.per_device import DeviceSessions
from voxrelay.sessions.quotas import Limits, Quotas
from voxrelay.sessions.raw_upstream import upstream_for
from voxrelay.sessions.session import Session
from voxrelay.sessions.tools import ToolCalls
from voxrelay.sessions.transcripts import TranscriptWriter, WriteHealth
from voxrelay.sessions.upstream import Upstream, UpstreamPolicy
from voxrelay.sessions.usage import UsageMeter
from voxrelay.spool import spill_for
from voxrelay.store import Message, Store, ToolCall
from voxrelay.tools import NO_TOOLS, Toolbox, client_tools

log = logging.getLogger(__name__)

ProviderFactory = Callable[[], Provider]
# An operation this process answers for the sessions it owns, by name (``Directory.at_owner``).
OwnerCall = Callable[[dict[str, Any]], Awaitable[Any]]


class Registry:
    """The sessions whose upstream link this process holds."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        provider_factory: ProviderFactory,
        new_session_id: Callable[[], str],
        toolbox: Toolbox = NO_TOOLS,
    ) -> None:
        self._store = store
        self.toolbox = toolbox
        # Every session's server tools share one pool of connections.
        self._tool_http = httpx.AsyncClient(follow_redirects=False)
        self._settings = settings
        self._provider_factory = provider_factory
        self._new_session_id = new_session_id
        self._sessions: dict[str, Session] = {}
        self._by_conversation: dict[str, Session] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._devices = DeviceSessions(settings.max_sessions_per_device)
        self._quotas = Quotas(store, Limits.from_settings(settings))
        self._prices = load_prices(settings.prices)
        # The device that opened each session, given back when it ends.
        self._device_of: dict[str, str] = {}
        self._closing = False
        self._upstream_policy = UpstreamPolicy(
            reconnect_seconds=settings.upstream_reconnect_seconds,
            rollover_seconds=settings.upstream_rollover_seconds or None,
            keep_audio_memory_bytes=settings.turn_audio_memory_bytes,
            audio_dir=settings.replay_spool_dir or None,
        )
        self.calls: dict[str, OwnerCall] = {}
        # Whether this process's message writes land (``/readyz``).
        self.write_health = WriteHealth()
        # Called with each session once it has ended.
        self.on_ended: list[Callable[[Session], None]] = []
        # Awaited with each new session before ``start`` returns it: what must be
        # true before anybody is told of it (another node finding it by its id).
        self.before_announcing: list[Callable[[Session], Awaitable[None]]] = []

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def for_conversation(self, conversation_id: str) -> Session | None:
        return self._by_conversation.get(conversation_id)

    def __len__(self) -> int:
        return len(self._sessions)

    async def start(self, request: StartRequest) -> tuple[Session, bool]:
        """Open a session on ``request``'s conversation (the caller created or checked
        it); returns the session and whether it is new. With ``join_active`` the
        conversation's active session is returned instead of ``ConversationBusy``."""
        conversation_id = request.conversation_id
        lock = self._starting.setdefault(conversation_id, asyncio.Lock())
        try:
            async with lock:
                active = self._by_conversation.get(conversation_id)
                if active is not None and active.active:
                    if request.join_active:
                        return active, False
                    raise ConversationBusy()
                await self._quotas.check_start(request.user_id, conversation_id)
                self._devices.take(request.device)
                try:
                    session = await self._open(request)
                except BaseException:
                    self._devices.give_back(request.device)
                    raise
                self._device_of[session.id] = request.device
                await self._quotas.check_started(session)
                for announcing in self.before_announcing:
                    await announcing(session)
                return session, True
        finally:
            if not lock.locked():
                self._starting.pop(conversation_id, None)

    async def _open(self, request: StartRequest) -> Session:
        if self._closing:
            raise ServerClosing()
        conversation_id, options = request.conversation_id, request.options
        messages = await self._store.list_messages(conversation_id)
        calls = await self._store.list_tool_calls(conversation_id)
        history = _history(messages, calls)
        # The client's tools (its own, ``options``) and the server's are the model's.
        client = client_tools(list(options.tools), self.toolbox.names)
        tools = (*self.toolbox.upstream(), *options.tools)
        provider = upstream_for(self._provider_factory, self._upstream_policy)
        inbox = _Inbox()
        name = self._settings.provider
        opening_at = time.monotonic()
        try:
            await provider.open(replace(options, tools=tools), history, inbox)
        except Exception as error:
            metrics.UPSTREAM_FAILURES.labels(provider=name, stage="open").inc()
            log.warning(
                "upstream connection failed: %s",
                error,
                extra={"conversation_id": conversation_id, "provider": name},
            )
            with contextlib.suppress(Exception):
                await provider.close()
            # The one place a provider's failure becomes the core's. The detail (an
            # address, a status) is the operator's, in the log above, not the client's.
            if isinstance(error, ProviderError | OSError):
                raise UpstreamUnavailable(
                    "the voice model is not reachable right now; try again later"
                ) from None
            raise
        await self._refuse_when_closing(provider)
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
            user_id=request.user_id,
            input_sample_rate=request.input_rate,
            output_sample_rate=request.output_rate,
            turn_detection=options.turn_detection,
            options={k: v for k, v in asdict(options).items() if v not in (None, ())},
            session_id=self._new_session_id(),
        )
        await self._refuse_when_closing(provider, record.id)
        transcripts = TranscriptWriter(
            self._store,
            conversation_id,
            record.id,
            health=self.write_health,
            retry_after_end_seconds=self._settings.storage_retry_seconds,
        )
        provider.said = transcripts.said
        session = Session(
            id=record.id,
            conversation_id=conversation_id,
            user_id=request.user_id,
            created_at=record.created_at,
            input_rate=request.input_rate,
            output_rate=request.output_rate,
            turn_detection=options.turn_detection,
            provider=provider,
            store=self._store,
            log_keep_seconds=max(self._settings.grace_seconds, 1.0),
            log_max_bytes=self._settings.replay_max_bytes,
            log_spill=spill_for(
                self._settings.replay_memory_bytes, self._settings.replay_spool_dir
            ),
            max_text_chars=self._settings.max_text_chars,
            pace=AudioPace(
                self._settings.max_upload_realtime_factor, self._settings.upload_burst_seconds
            ),
            transcripts=transcripts,
            tools=ToolCalls(
                transcripts,
                toolbox=self.toolbox,
                client={tool.name: tool for tool in client},
                http=self._tool_http,
                client_timeout=self._settings.client_tool_timeout_seconds,
            ),
            next_position=max(
                [m.position for m in messages] + [c.position for c in calls], default=-1
            )
            + 1,
        )
        session.when_listened(
            on_active=lambda: self._disarm_idle_timer(session),
            on_idle=lambda: self._arm_idle_timer(session),
        )
        meter = self._meter(session, provider, transcripts)
        watch = self._quotas.watch(session, meter)
        inbox.deliver_to(meter.following(session.on_model_event, watch.on_event if watch else None))
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
                "input_rate": request.input_rate,
                "output_rate": request.output_rate,
                "turn_detection": options.turn_detection,
                "history_messages": len(history),
            },
        )
        asyncio.get_running_loop().create_task(self._forget_when_ended(session))
        self._arm_idle_timer(session)
        return session

    def _meter(
        self, session: Session, upstream: Upstream, transcripts: TranscriptWriter
    ) -> UsageMeter:
        return UsageMeter(
            store=self._store,
            writer=transcripts,
            user_id=session.user_id,
            conversation_id=session.conversation_id,
            session_id=session.id,
            provider=self._settings.provider,
            model=model_name(self._settings),
            transcription_model=session.raw.transcription_model if session.raw else None,
            input_rate=upstream.input_rate,
            output_rate=upstream.output_rate,
            audio_in=lambda: upstream.audio_in_bytes,
            prices=self._prices,
        )

    async def _refuse_when_closing(self, provider: Provider, session_id: str | None = None) -> None:
        """``end_all`` may run while a session opens (its upstream link, its record): one
        registered after it would outlive the shutdown, taking requests and holding its
        stream open until the server gives up on it. It is refused instead."""
        if not self._closing:
            return
        with contextlib.suppress(Exception):
            await provider.close()
        if session_id is not None:
            with contextlib.suppress(Exception):
                await self._store.end_session(session_id, "server_shutdown")
        raise ServerClosing()

    async def _forget_when_ended(self, session: Session) -> None:
        await session.wait_ended()
        metrics.SESSIONS_ENDED.labels(reason=session.end_reason or "client_end").inc()
        log.info(
            "session ended",
            extra={
                "conversation_id": session.conversation_id,
                "session_id": session.id,
                "reason": session.end_reason,
                "duration_s": round(session.lived_seconds, 3),
                "messages": session.stored_messages,
            },
        )
        self._disarm_idle_timer(session)
        self._devices.give_back(self._device_of.pop(session.id, ""))
        self._sessions.pop(session.id, None)
        if self._by_conversation.get(session.conversation_id) is session:
            del self._by_conversation[session.conversation_id]
        metrics.ACTIVE_SESSIONS.dec()
        if session.end_reason == "upstream_failed":
            metrics.UPSTREAM_FAILURES.labels(provider=self._settings.provider, stage="live").inc()
        for hook in self.on_ended:
            hook(session)

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
        """Start nothing new and end every session (shutdown)."""
        self._closing = True
        sessions = list(self._sessions.values())
        await asyncio.gather(*(s.end(reason) for s in sessions), return_exceptions=True)
        await self._tool_http.aclose()


def _history(messages: list[Message], calls: list[ToolCall]) -> list[HistoryItem]:
    """What a new link is told of the conversation: its messages and tool calls (each
    with its result, or why it has none) in order."""
    items: list[tuple[int, HistoryItem]] = [
        (m.position, HistoryMessage(m.role, m.text, m.item_id))  # type: ignore[arg-type]
        for m in messages
        if m.text
    ]
    for call in calls:
        output = call.output if call.status == "completed" else {"error": call.error or "no result"}
        result = orjson.dumps(output).decode()
        history = HistoryToolCall(call.call_id, call.name, call.arguments_text, result)
        items.append((call.position, history))
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


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
