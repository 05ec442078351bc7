"""Server-speaking mode, for providers without a raw pass-through (``echo``, ``local``):
client events become session commands, and the session's log becomes OpenAI server
events."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voxrelay.audio import StreamResampler
from voxrelay.config import Settings
from voxrelay.eventlog import Event
from voxrelay.exceptions import AudioTooFast
from voxrelay.openai_realtime.errors import error_event
from voxrelay.openai_realtime.item_shapes import input_text
from voxrelay.openai_realtime.protocol import SAMPLE_RATE
from voxrelay.openai_realtime.translation import client_event
from voxrelay.providers.base import SessionOptions
from voxrelay.sessions import LiveSession, new_item_id
from voxrelay.transports.openai_ws.mode_interface import RELAY_ERRORS, Link
from voxrelay.transports.openai_ws.openai_objects import (
    answer_closed,
    answer_opened,
    assistant_message,
    input_committed,
    input_text_parts,
    input_transcription_completed,
    input_transcription_delta,
    item_truncated,
    options_asked,
    part_ids,
    reconnecting_error,
    response_object,
    session_event,
    session_object,
    speech_started,
    speech_stopped,
    user_message,
)

_BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
_MIN_COMMIT_BYTES = 100 * _BYTES_PER_MS  # OpenAI refuses to commit less than 100 ms
_UNSUPPORTED = frozenset(
    {
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "transcription_session.update",
    }
)


@dataclass(slots=True)
class _Answer:
    """A response being projected into OpenAI events."""

    id: str
    text_only: bool
    item_id: str | None = None
    previous_item_id: str | None = None
    transcript: str = ""
    final: str | None = None
    audio: bool = False
    barge_in: bool = False


@dataclass(slots=True)
class _Turns:
    """What the client has said and the conversation's items, as the client sees them."""

    appended: int = 0  # bytes appended over the connection
    uncommitted: int = 0  # bytes since the last turn ended
    speaking: bool = False
    commit_pending: bool = False
    absorb_response_create: bool = False
    pending_texts: list[tuple[str, str]] = field(default_factory=list)
    last_item: str | None = None
    announced: set[str] = field(default_factory=set)
    own_items: set[str] = field(default_factory=set)
    speech_items: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=dict)


class Speaker:
    """Speaks the OpenAI protocol itself for providers without a raw pass-through:
    client events become session commands, the session's log becomes server events.
    Everything is written in GA form and translated for beta clients."""

    follows_audio = True

    def __init__(self, link: Link, settings: Settings, options: SessionOptions | None) -> None:
        self.link = link
        self.settings = settings
        # The options the running session opened with, when this connection opened it.
        self.options = options
        self.text_only = False
        self.session: LiveSession | None = None
        self.turns = _Turns()
        self.answer: _Answer | None = None
        self.resampler: StreamResampler | None = None
        self.touched = False  # any input reached the session
        self.fresh = options is not None

    def attach(self, session: LiveSession, stack: contextlib.ExitStack) -> None:
        first = self.session is None
        self.session = session
        self.turns = _Turns()
        self.answer = None
        self.resampler = (
            StreamResampler(session.output_rate, SAMPLE_RATE)
            if session.output_rate != SAMPLE_RATE
            else None
        )
        if first:
            self.link.send(self._session_event("session.created"))
            self.link.announce(session)

    # -- the session object ---

    def _session_event(self, kind: str) -> dict[str, Any]:
        session = self.session
        assert session is not None
        options = self.options or SessionOptions(turn_detection=session.turn_detection)
        ga = session_object(
            self.settings.provider, options, session.turn_detection, text_only=self.text_only
        )
        return session_event(kind, ga, self.link.dialect, session.id)

    # -- client events ---

    async def on_event(self, event: dict[str, Any]) -> None:
        pcm = event.pop("_pcm", None)
        kind = event["type"]
        if kind in _UNSUPPORTED:
            self.link.error(
                "unsupported_event", f"{kind} is not supported by this server", about=event
            )
            return
        ga = client_event(event, self.link.dialect, "ga")
        assert ga is not None
        session = self.session
        assert session is not None
        if kind == "input_audio_buffer.append":
            assert isinstance(pcm, bytes)
            self.touched = True
            self.turns.appended += len(pcm)
            self.turns.uncommitted += len(pcm)
            try:
                await session.send_audio(
                    pcm, SAMPLE_RATE, transport="websocket", received_at=self.link.received_at
                )
            except AudioTooFast:
                # Refused before it went anywhere: not in the input buffer either.
                self.turns.appended -= len(pcm)
                self.turns.uncommitted -= len(pcm)
                raise
        elif kind == "input_audio_buffer.commit":
            await self._commit(ga)
        elif kind == "session.update":
            await self._update(ga)
        elif kind == "conversation.item.create":
            await self._create_item(ga)
        elif kind == "response.create":
            await self._respond(ga)
        elif kind == "response.cancel":
            if self.answer is None:
                self.link.error(
                    "response_cancel_not_active", "no response is in progress", about=event
                )
                return
            await session.interrupt()
        elif kind == "conversation.item.truncate":
            await self._truncate(ga)

    async def _commit(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        turns = self.turns
        if turns.uncommitted < _MIN_COMMIT_BYTES and not turns.speaking:
            have = turns.uncommitted / _BYTES_PER_MS
            self.link.error(
                "input_audio_buffer_commit_empty",
                f"the input audio buffer holds {have:.0f} ms of audio; commit needs 100 ms",
                about=event,
            )
            return
        self.touched = True
        # The session commits and answers at once; a response.create right after is
        # the same request (OpenAI clients send both).
        turns.commit_pending = True
        turns.absorb_response_create = True
        await session.commit()

    async def _update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, Mapping):
            self.link.error("invalid_event", "session.update needs a 'session' object", about=event)
            return
        session = self.session
        assert session is not None
        current = self.options or SessionOptions(turn_detection=session.turn_detection)
        wanted = options_asked(update, current)
        modalities = update.get("output_modalities")
        if isinstance(modalities, list):
            self.text_only = "audio" not in modalities
        # Otherwise the running provider keeps its settings: session.updated says what
        # is in effect.
        if wanted != current and self._can_restart(session):
            if await self.link.restart(wanted) is None:
                return
            self.options = wanted
        self.link.send(self._session_event("session.updated"))

    def _can_restart(self, session: LiveSession) -> bool:
        """Settings that a provider takes when it opens can still change while the
        session this connection started has heard nothing and nobody else listens."""
        return self.fresh and not self.touched and session.can_restart()

    async def _create_item(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        session = self.session
        assert session is not None
        if not isinstance(item, Mapping):
            self.link.error(
                "invalid_event", "conversation.item.create needs an 'item'", about=event
            )
            return
        text = input_text(item)
        if item.get("type", "message") != "message" or item.get("role") != "user" or not text:
            self.link.error(
                "unsupported_item",
                "this server takes user messages with input_text content only",
                about=event,
            )
            return
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            item_id = new_item_id()
        turns = self.turns
        if item_id in turns.announced:
            self.link.error("item_exists", f"item {item_id} already exists", about=event)
            return
        turns.own_items.add(item_id)
        try:
            # Stored first: a text the session refuses (too long) never joins the turn.
            await session.add_user_text(item_id, text)
        except BaseException:
            turns.own_items.discard(item_id)
            raise
        self.touched = True
        self._announce_item(user_message(item_id, input_text_parts(item)))
        turns.pending_texts.append((item_id, text))

    async def _respond(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        turns = self.turns
        if turns.pending_texts:
            texts = turns.pending_texts
            turns.pending_texts = []
            turns.absorb_response_create = False
            # Each text item is already stored; the provider hears them as one turn.
            await session.send_text("\n".join(t for _, t in texts), texts[-1][0])
            return
        if turns.absorb_response_create:
            turns.absorb_response_create = False
            return
        if self.answer is not None:
            self.link.error(
                "conversation_already_has_active_response",
                f"a response is already in progress: {self.answer.id}",
                about=event,
            )
            return
        if turns.uncommitted >= _MIN_COMMIT_BYTES or turns.speaking:
            self.touched = True
            turns.commit_pending = True
            await session.commit()
            return
        self.link.error(
            "no_pending_input",
            "response.create needs a user message or audio to answer on this server",
            about=event,
        )

    async def _truncate(self, event: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        end_ms = event.get("audio_end_ms")
        item_id = event.get("item_id")
        if not isinstance(end_ms, int) or end_ms < 0 or not isinstance(item_id, str):
            self.link.error(
                "invalid_event",
                "conversation.item.truncate needs item_id and a non-negative audio_end_ms",
                about=event,
            )
            return
        await session.interrupt(played_ms=end_ms)
        content_index = event.get("content_index")
        index = content_index if isinstance(content_index, int) else 0
        self.link.send_ga(item_truncated(item_id, index, end_ms))

    # -- the log, projected ---

    def on_log(self, event: Event) -> None:
        data = event.data
        kind = event.type
        if kind == "speech_started":
            self._speech_started(str(data["itemId"]))
        elif kind == "speech_stopped":
            item_id = str(data["itemId"])
            self.turns.speech_items.add(item_id)
            self.link.send_ga(speech_stopped(item_id, self.turns.appended // _BYTES_PER_MS))
            self._announce_audio(item_id)
        elif kind == "transcript":
            if data.get("role") == "user":
                self._user_transcript(data)
            else:
                self._assistant_transcript(data)
        elif kind == "response_started":
            self._response_started(str(data["responseId"]))
        elif kind == "audio":
            self._audio(data, event.at)
        elif kind == "response_done":
            self._response_done(str(data["responseId"]), str(data.get("status")))
        elif kind == "upstream_reconnecting":
            self.link.send_ga(reconnecting_error())
        elif kind == "error":
            code = str(data.get("code"))
            if code == "input_audio_buffer_commit_empty":
                self.turns.commit_pending = False
                self.turns.absorb_response_create = False
            kind_ = "server_error" if code in RELAY_ERRORS else "invalid_request_error"
            self.link.send_ga(error_event(code, str(data.get("message") or ""), kind=kind_))

    def _speech_started(self, item_id: str) -> None:
        turns = self.turns
        turns.speaking = True
        turns.speech_items.add(item_id)
        if self.answer is not None:
            self.answer.barge_in = True
        start_ms = max(0, turns.appended // _BYTES_PER_MS - 60)
        self.link.send_ga(speech_started(item_id, start_ms))

    def _announce_item(self, item: dict[str, Any]) -> None:
        turns = self.turns
        previous = turns.last_item
        turns.last_item = item["id"]
        turns.announced.add(item["id"])
        for kind in ("conversation.item.added", "conversation.item.done"):
            self.link.send_ga({"type": kind, "previous_item_id": previous, "item": item})

    def _announce_audio(self, item_id: str) -> None:
        turns = self.turns
        if item_id in turns.announced:
            return
        turns.seconds[item_id] = round(turns.uncommitted / (SAMPLE_RATE * 2), 3)
        turns.uncommitted = 0
        turns.speaking = False
        turns.commit_pending = False
        self.link.send_ga(input_committed(item_id, turns.last_item))
        self._announce_item(user_message(item_id, [{"type": "input_audio", "transcript": None}]))

    def _user_transcript(self, data: Mapping[str, Any]) -> None:
        turns = self.turns
        item_id = str(data["itemId"])
        if item_id in turns.own_items:
            return  # a text item this client created: already announced
        spoken = turns.commit_pending or item_id in turns.speech_items
        if item_id not in turns.announced:
            if spoken or not data.get("final"):
                self._announce_audio(item_id)
            else:
                # A typed message from another device of this conversation.
                text = str(data.get("text") or "")
                self._announce_item(user_message(item_id, [{"type": "input_text", "text": text}]))
                return
        if not data.get("final"):
            delta = str(data.get("delta") or "")
            self.link.send_ga(input_transcription_delta(item_id, delta))
            return
        if item_id not in turns.seconds:
            return  # a text item announced earlier
        transcript = str(data.get("text") or "")
        self.link.send_ga(
            input_transcription_completed(item_id, transcript, turns.seconds[item_id])
        )

    def _response(
        self, answer: _Answer, status: str, output: list[dict[str, Any]]
    ) -> dict[str, Any]:
        assert self.session is not None
        return response_object(
            answer.id,
            status,
            output,
            conversation_id=self.session.conversation_id,
            text_only=answer.text_only,
            voice=(self.options or SessionOptions()).voice,
            barge_in=answer.barge_in,
        )

    def _response_started(self, response_id: str) -> None:
        # (A commit's answer may start, even finish, before the client's response.create
        # arrives: that one is still absorbed.)
        answer = _Answer(response_id, self.text_only)
        self.answer = answer
        response = self._response(answer, "in_progress", [])
        self.link.send_ga({"type": "response.created", "response": response})

    def _assistant_item(self, answer: _Answer, status: str) -> dict[str, Any]:
        assert answer.item_id is not None
        text = answer.final if answer.final is not None else answer.transcript
        return assistant_message(answer.item_id, status, text, text_only=answer.text_only)

    def _open_item(self, answer: _Answer, item_id: str) -> bool:
        """Announce the answer's item on its first output; False for another item."""
        if answer.item_id is not None:
            return answer.item_id == item_id
        answer.item_id = item_id
        item = self._assistant_item(answer, "in_progress")
        previous = answer.previous_item_id = self.turns.last_item
        self.turns.last_item = item_id
        for event in answer_opened(answer.id, item, previous, text_only=answer.text_only):
            self.link.send_ga(event)
        return True

    def _audio(self, data: Mapping[str, Any], at: float) -> None:
        answer = self.answer
        if answer is None or answer.text_only or data.get("responseId") != answer.id:
            return
        item_id = str(data.get("itemId") or answer.item_id or new_item_id())
        if not self._open_item(answer, item_id):
            return
        audio = str(data["audio"])
        if self.resampler is not None:
            pcm = self.resampler.feed(base64.b64decode(audio))
            if not pcm:
                return
            audio = base64.b64encode(pcm).decode("ascii")
        answer.audio = True
        self.link.send_ga(
            {
                "type": "response.output_audio.delta",
                **part_ids(answer.id, answer.item_id),
                "delta": audio,
            }
        )
        self.link.written(at)

    def _assistant_transcript(self, data: Mapping[str, Any]) -> None:
        answer = self.answer
        if answer is None:
            return  # a transcript cut after its answer ended (an interrupt)
        item_id = str(data["itemId"])
        if data.get("final"):
            if self._open_item(answer, item_id):
                answer.final = str(data.get("text") or "")
            return
        if not self._open_item(answer, item_id):
            return
        delta = str(data.get("delta") or "")
        answer.transcript += delta
        kind = (
            "response.output_text.delta"
            if answer.text_only
            else ("response.output_audio_transcript.delta")
        )
        self.link.send_ga({"type": kind, **part_ids(answer.id, answer.item_id), "delta": delta})

    def _response_done(self, response_id: str, status: str) -> None:
        answer = self.answer
        if answer is None or answer.id != response_id:
            answer = _Answer(response_id, self.text_only)
        self.answer = None
        if status not in ("completed", "cancelled", "failed"):
            status = "failed"
        output: list[dict[str, Any]] = []
        if answer.item_id is not None:
            item_status = "completed" if status == "completed" else "incomplete"
            item = self._assistant_item(answer, item_status)
            text = answer.final if answer.final is not None else answer.transcript
            for event in answer_closed(
                answer.id,
                item,
                answer.previous_item_id,
                text,
                text_only=answer.text_only,
                audio=answer.audio,
            ):
                self.link.send_ga(event)
            output.append(item)
        response = self._response(answer, status, output)
        self.link.send_ga({"type": "response.done", "response": response})
