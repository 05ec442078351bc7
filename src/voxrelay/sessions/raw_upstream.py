"""The pass-through side of a session's upstream: over OpenAI-protocol links, the
upstream's own events reach the pass-through listeners from whichever link is
current, and what a pass-through client sent to configure the session is sent
again to every new link. The session's own tools stay out of the pass-through
client's view (``HiddenTools``) and stay declared whatever tools it declares."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import orjson

from voxrelay.openai_realtime.hidden_tools import HiddenTools
from voxrelay.openai_realtime.protocol import RawListener, RawListeners
from voxrelay.providers.base import (
    EmitModelEvent,
    HistoryItem,
    Provider,
    RawProvider,
    SessionOptions,
)
from voxrelay.sessions.upstream import Upstream, UpstreamPolicy

log = logging.getLogger(__name__)

# Pass-through requests kept while a link is reopened (beyond it they are dropped).
_MAX_QUEUED_RAW = 256


class RawUpstream(Upstream):
    """An ``Upstream`` over OpenAI-protocol links (``RawProvider``): their own events
    reach the pass-through listeners from whichever link is current, and the settings
    a pass-through client sent are sent again to every new link."""

    def __init__(
        self, factory: Callable[[], Provider], first: RawProvider, policy: UpstreamPolicy
    ) -> None:
        super().__init__(factory, first, policy)
        self._raw_listeners = RawListeners()
        self._updates: list[Mapping[str, Any]] = []
        self._queued: list[Mapping[str, Any]] = []
        self._links = 0
        self._hidden = HiddenTools((), first.dialect)
        # Each link's subscription, held (a dropped one would unsubscribe itself).
        self._subscriptions: dict[int, contextlib.AbstractContextManager[None]] = {}

    def _raw_link(self) -> RawProvider:
        link = self._latest
        assert isinstance(link, RawProvider)
        return link

    @property
    def dialect(self) -> str:
        return self._raw_link().dialect

    @property
    def transcription_model(self) -> str:
        return self._raw_link().transcription_model

    @property
    def raw_session(self) -> dict[str, Any] | None:
        session = self._raw_link().raw_session
        return None if session is None else self._hidden.session(session)

    @property
    def raw_session_settled(self) -> bool:
        return self._raw_link().raw_session_settled

    def raw_events(self, listener: RawListener) -> contextlib.AbstractContextManager[None]:
        return self._raw_listeners.subscribed(listener)

    async def open(
        self, options: SessionOptions, history: Sequence[HistoryItem], emit: EmitModelEvent
    ) -> None:
        self._hidden = HiddenTools(options.tools, self._raw_link().dialect)
        await super().open(options, history, emit)

    async def _open_link(self, link: Provider, history: Sequence[HistoryItem], ident: int) -> None:
        assert isinstance(link, RawProvider)
        first = self._links == 0
        self._links += 1

        def forward(event: dict[str, Any], raw: bytes) -> None:
            if ident != self._current or self._closed:
                return
            if not first and event.get("type") == "session.created":
                return  # a pass-through client has its session already
            shown = self._hidden.shown(event)
            if shown is None:
                return
            self._raw_listeners.tell(shown, raw if shown is event else orjson.dumps(shown))

        subscription = link.raw_events(forward)
        subscription.__enter__()
        for old in [i for i in self._subscriptions if i not in (ident, self._current)]:
            self._subscriptions.pop(old).__exit__(None, None, None)
        self._subscriptions[ident] = subscription
        await super()._open_link(link, history, ident)

    async def update_tools(self, tools: Sequence[Mapping[str, Any]]) -> None:
        # Beside those a pass-through client declared itself, which stay.
        self._hidden.declare(tools)
        await super().update_tools([*self._hidden.client_tools, *tools])

    async def send_raw(self, event: Mapping[str, Any]) -> None:
        event = self._hidden.merged(event)
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            if isinstance(audio, str):
                with contextlib.suppress(ValueError):
                    pcm = base64.b64decode(audio)
                    self._keep(pcm)
                    self.audio_in_bytes += len(pcm)
        elif kind == "input_audio_buffer.commit":
            self._committed(None)
        elif kind == "input_audio_buffer.clear":
            self._pending.clear()
        elif kind == "session.update":
            self._updates = [*self._updates[-15:], event]
        link = self._link
        if link is None:
            kept = kind in ("input_audio_buffer.append", "session.update")
            if not kept and len(self._queued) < _MAX_QUEUED_RAW:
                self._queued.append(event)
            return
        # Not an isinstance check: on a runtime Protocol it walks every member, per
        # audio chunk. ``upstream_for`` made this upstream for a RawProvider factory.
        await cast(RawProvider, link).send_raw(event)

    async def _restored(self, link: Provider) -> None:
        assert isinstance(link, RawProvider)
        for update in self._updates:
            await link.send_raw(update)
        queued, self._queued = self._queued, []
        for event in queued:
            await link.send_raw(event)


def upstream_for(factory: Callable[[], Provider], policy: UpstreamPolicy) -> Upstream:
    """The ``Upstream`` over links that ``factory`` makes."""
    first = factory()
    if isinstance(first, RawProvider):
        return RawUpstream(factory, first, policy)
    return Upstream(factory, first, policy)
