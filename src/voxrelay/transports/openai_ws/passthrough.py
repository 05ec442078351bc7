"""Pass-through mode, for providers that speak the OpenAI protocol upstream (``openai``,
``azure``): client events go upstream as they are, bar the settings the server owns, and
the upstream's events come back as they are (translated when the dialects differ)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from voxrelay.eventlog import Event
from voxrelay.openai_realtime.errors import error_event
from voxrelay.openai_realtime.item_shapes import input_text
from voxrelay.openai_realtime.protocol import AUDIO_DELTAS, ITEM_ID_MAX, Dialect
from voxrelay.openai_realtime.server_owned import own_response_params, own_session_update
from voxrelay.openai_realtime.translation import client_event, server_event
from voxrelay.sessions import LiveSession, new_item_id
from voxrelay.transports.openai_ws.mode_interface import RELAY_ERRORS, Link
from voxrelay.transports.openai_ws.openai_objects import failed_response, reconnecting_error

# How long a new pass-through connection waits for the upstream to apply the server's
# settings before it opens with the session as it stands.
_SETTLE_SECONDS = 3.0


class PassThrough:
    """Client and upstream speak to each other; the session still keeps the record."""

    # The client hears the upstream's own audio events, not the log's.
    follows_audio = False

    def __init__(self, link: Link) -> None:
        self.link = link
        self.upstream: Dialect = "ga"
        self.session: LiveSession | None = None
        # Upstream events held until the upstream has applied the server's own settings.
        self.held: list[dict[str, Any]] | None = None
        self.release_timer: asyncio.TimerHandle | None = None

    def attach(self, session: LiveSession, stack: contextlib.ExitStack) -> None:
        self.session = session
        assert session.raw is not None
        self.upstream = "beta" if session.raw.dialect == "beta" else "ga"
        # The conversation opens with the upstream's session as the server configured
        # it: a session that has not yet answered the server's own session.update waits
        # for that answer, which becomes the client's session.created (so the client
        # never sees a session.updated it did not ask for). No await happens between
        # the snapshot and the subscription, so no event slips in between.
        if session.raw.raw_session_settled:
            self._open(session.raw.raw_session)
        else:
            self.held = []
            self.release_timer = asyncio.get_running_loop().call_later(
                _SETTLE_SECONDS, self._release
            )
            stack.callback(self.release_timer.cancel)
        stack.enter_context(session.raw.raw_events(self.on_raw))

    def _open(self, snapshot: dict[str, Any] | None, event_id: Any = None) -> None:
        assert self.session is not None
        if snapshot is None:
            snapshot = {"type": "realtime"} if self.upstream == "ga" else {}
        created: dict[str, Any] = {"type": "session.created", "session": snapshot}
        if isinstance(event_id, str):
            created["event_id"] = event_id
        self._forward(created)
        self.link.announce(self.session)

    def _release(self, settled: dict[str, Any] | None = None) -> None:
        held, self.held = self.held, None
        if held is None or self.session is None:
            return
        if self.release_timer is not None:
            self.release_timer.cancel()
        if settled is not None:
            self._open(settled.get("session"), settled.get("event_id"))
        else:
            assert self.session.raw is not None
            self._open(self.session.raw.raw_session)
        for event in held:
            self._forward(event)

    def on_raw(self, event: dict[str, Any], raw: bytes) -> None:
        if self.held is not None:
            kind = event.get("type")
            if kind == "session.updated":
                self._release(event)
                return
            self.held.append(event)
            if kind == "error":
                self._release()
            return
        audio = event.get("type") in AUDIO_DELTAS
        received_at = time.monotonic() if audio else 0.0
        if self.upstream == self.link.dialect and "event_id" in event:
            # Nothing to translate: the upstream's own words, not encoded again.
            self.link.send_text(raw.decode())
        else:
            self._forward(event)
        if audio:
            self.link.written(received_at)

    def _forward(self, event: dict[str, Any]) -> None:
        for translated in server_event(event, self.upstream, self.link.dialect):
            self.link.send(translated)

    def on_log(self, event: Event) -> None:
        if event.type == "upstream_reconnecting":
            # The upstream will never finish the answer it was giving: say so as it would.
            response_id = event.data.get("responseId")
            self.link.send(reconnecting_error())
            if isinstance(response_id, str) and self.session is not None:
                for done in server_event(
                    failed_response(response_id, self.session.conversation_id),
                    "ga",
                    self.link.dialect,
                ):
                    self.link.send(done)
        elif event.type == "error" and event.data.get("code") in RELAY_ERRORS:
            self.link.send(
                error_event(
                    str(event.data["code"]), str(event.data.get("message")), kind="server_error"
                )
            )

    async def on_event(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        event.pop("_pcm", None)
        kind = event["type"]
        # A transcription session would no longer answer: the server owns that choice.
        translated = (
            None
            if kind == "transcription_session.update"
            else client_event(event, self.link.dialect, self.upstream)
        )
        if translated is None:
            self.link.error("unsupported_event", f"{kind} has no equivalent upstream", about=event)
            return
        if kind == "session.update" and isinstance(translated.get("session"), Mapping):
            translated["session"] = own_session_update(
                translated["session"],
                self.upstream,
                session.raw.transcription_model if session.raw is not None else None,
            )
        elif kind == "response.create" and isinstance(translated.get("response"), Mapping):
            translated["response"] = own_response_params(translated["response"], self.upstream)
        elif kind == "conversation.item.create":
            await self._record_user_text(session, translated)
        if kind == "input_audio_buffer.append":
            await session.send_raw(
                translated, transport="websocket", received_at=self.link.received_at
            )
        else:
            await session.send_raw(translated)
        if kind == "conversation.item.truncate":
            item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
            if isinstance(item_id, str) and isinstance(end_ms, int):
                await session.note_heard(item_id, end_ms)

    async def _record_user_text(self, session: LiveSession, event: dict[str, Any]) -> None:
        """A typed user message is stored like every other transport's (the upstream
        gets the item with the same id, chosen here when the client chose none)."""
        item = event.get("item")
        if not isinstance(item, Mapping) or item.get("role") != "user":
            return
        if item.get("type", "message") != "message":
            return
        text = input_text(item)
        if not text.strip():
            return
        item = dict(item)
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            item_id = item["id"] = new_item_id()
            event["item"] = item
        if len(item_id) <= ITEM_ID_MAX:  # longer ids the upstream refuses
            await session.add_user_text(item_id, text)
