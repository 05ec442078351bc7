"""A fully offline upstream: webrtcvad turn detection, pocketsphinx speech-to-text
(English, the model bundled with the package), espeak-ng text-to-speech (every
espeak-ng language), and replies from any OpenAI-compatible chat-completions
server when ``VOXRELAY_LOCAL_LLM_URL`` is set, else an echo of what was heard.

It emits the same event sequence as a realtime model: ``SpeechStarted`` /
``SpeechStopped`` / ``InputCommitted`` for a spoken turn, the user's transcript
(partial deltas while they speak, then final), then a response whose sentences
are spoken one by one as each is ready. Recognition and synthesis run on worker
threads (see ``_speech``); the event loop only moves bytes and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import httpx

from voxrelay.audio import SAMPLE_WIDTH
from voxrelay.config import Settings
from voxrelay.events import (
    AudioDelta,
    FunctionCall,
    InputCommitted,
    ModelError,
    ModelEvent,
    ResponseDone,
    ResponseStarted,
    ResponseStatus,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
)
from voxrelay.providers._chat import ChatError, SentenceSplitter, split_sentences, stream_chat
from voxrelay.providers._chat_tools import ChatToolCalls, chat_messages, chat_tools
from voxrelay.providers._recognition import Recognizer, decoder_pool
from voxrelay.providers._speech import INPUT_RATE, asr_executor, tts_executor
from voxrelay.providers._synthesis import OUTPUT_RATE, speakable, synthesis_job
from voxrelay.providers._turn_detection import TurnDetector
from voxrelay.providers.base import (
    EmitModelEvent,
    HistoryItem,
    HistoryMessage,
    HistoryToolCall,
    SessionOptions,
    ToolOutput,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK_BYTES = OUTPUT_RATE // 10 * SAMPLE_WIDTH  # answer audio in 100 ms deltas
_FEED_LIMIT = INPUT_RATE * SAMPLE_WIDTH  # at most 1 s of audio per recognition job
_CLOSE_WAIT_SECONDS = 5.0
DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Your answers are spoken aloud: keep them short, "
    "in plain sentences, without lists, markdown or emoji."
)
NOTHING_HEARD = "I did not catch that."


@dataclass(frozen=True, slots=True)
class _Op:
    """A step of the recognition of the user's turns, applied in order."""

    kind: Literal["start", "audio", "end"]
    item_id: str = ""
    pcm: bytes = b""


@dataclass(frozen=True, slots=True)
class _Answer:
    """The last answer: where it is in the history, what was said, how long it took."""

    item_id: str
    index: int
    text: str
    audio_bytes: int


class LocalProvider:
    input_rate = INPUT_RATE
    output_rate = OUTPUT_RATE

    def __init__(
        self,
        *,
        llm_url: str | None = None,
        llm_model: str | None = None,
        llm_api_key: str | None = None,
    ) -> None:
        self._llm_url = llm_url
        self._llm_model = llm_model
        self._llm_api_key = llm_api_key
        self._http: httpx.AsyncClient | None = None
        self._deliver: EmitModelEvent | None = None
        self._options = SessionOptions()
        self._history: list[HistoryItem] = []
        self._vad = TurnDetector()
        self._turn_item: str | None = None  # the user turn being heard
        self._manual_bytes = 0
        self._recognizer = Recognizer(decoder_pool())
        self._ops: deque[_Op] = deque()
        self._ops_ready = asyncio.Event()
        self._partial: dict[str, list[list[str]]] = {}  # item: [words sent, last hypothesis]
        self._recognition: asyncio.Task[None] | None = None
        self._response: asyncio.Task[None] | None = None
        self._answer: _Answer | None = None
        self._warm: asyncio.Future[None] | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalProvider:
        return cls(
            llm_url=settings.local_llm_url,
            llm_model=settings.local_llm_model,
            llm_api_key=settings.local_llm_api_key,
        )

    @property
    def history(self) -> list[HistoryItem]:
        """Earlier turns given at open, then every turn since."""
        return self._history

    # -- the Provider interface ----------------------------------------------------------

    async def open(
        self, options: SessionOptions, history: Sequence[HistoryItem], emit: EmitModelEvent
    ) -> None:
        self._options = options
        self._history = list(history)
        self._deliver = emit
        # Load the speech model while the user starts talking, not at their first turn.
        self._warm = asyncio.get_running_loop().run_in_executor(
            asr_executor(), decoder_pool().prewarm
        )
        self._warm.add_done_callback(_log_failure("loading the speech recogniser"))

    async def send_audio(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return
        if self._options.turn_detection == "manual":
            if self._turn_item is None:
                self._turn_item = _new_id("item")
                self._queue(_Op("start", self._turn_item))
            self._manual_bytes += len(pcm)
            self._queue(_Op("audio", pcm=pcm))
            return
        for event in self._vad.feed(pcm):
            if event.kind == "start":
                self._turn_item = _new_id("item")
                self._emit(SpeechStarted(self._turn_item))
                if self._response is not None and not self._response.done():
                    self._response.cancel()  # barge-in
                self._queue(_Op("start", self._turn_item))
                self._queue(_Op("audio", pcm=event.pcm))
            elif event.kind == "audio":
                self._queue(_Op("audio", pcm=event.pcm))
            else:
                self._queue(_Op("audio", pcm=event.pcm))
                self._end_turn(stopped=True)

    async def commit(self) -> None:
        if self._closed:
            return
        if self._options.turn_detection == "manual":
            if self._turn_item is None or self._manual_bytes == 0:
                self._emit(ModelError("input_audio_buffer_commit_empty", "no audio to commit"))
                return
            self._manual_bytes = 0
            self._end_turn(stopped=False)
            return
        if self._vad.speaking:
            self._vad.end()
            self._end_turn(stopped=True)
            return
        pre_roll = self._vad.take_pre_roll()
        if not pre_roll:
            self._emit(ModelError("input_audio_buffer_commit_empty", "no audio to commit"))
            return
        self._turn_item = _new_id("item")
        self._queue(_Op("start", self._turn_item))
        self._queue(_Op("audio", pcm=pre_roll))
        self._end_turn(stopped=False)

    async def send_text(self, item_id: str, text: str) -> None:
        if self._closed:
            return
        self._history.append(HistoryMessage("user", text))
        await self._start_response(text, f"You said: {text}")

    async def update_tools(self, tools: Sequence[Mapping[str, Any]]) -> None:
        self._options = replace(self._options, tools=tuple(dict(tool) for tool in tools))

    async def send_tool_outputs(self, outputs: Sequence[ToolOutput]) -> None:
        if self._closed:
            return
        given = {out.call_id: out.output for out in outputs}
        for index, item in enumerate(self._history):
            if isinstance(item, HistoryToolCall) and item.call_id in given:
                output = given[item.call_id]
                self._history[index] = HistoryToolCall(
                    item.call_id, item.name, item.arguments, output
                )
        said = " ".join(out.output for out in outputs)
        await self._start_response(None, f"The tools said: {said}", after_tools=True)

    async def cancel(self, item_id: str | None, played_ms: int | None) -> None:
        await self._stop_response()
        answer = self._answer
        if played_ms is None or answer is None or item_id not in (None, answer.item_id):
            return
        total_ms = answer.audio_bytes / SAMPLE_WIDTH / OUTPUT_RATE * 1000
        if total_ms <= 0:
            return
        # The listener heard only part of it: remember only that part.
        words = answer.text.split()
        heard = " ".join(words[: round(len(words) * max(0, played_ms) / total_ms)])
        self._history[answer.index] = HistoryMessage("assistant", heard)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ops.clear()
        self._ops_ready.set()
        if self._warm is not None:
            self._warm.cancel()  # only if it has not started: a loaded model stays pooled
        tasks = [t for t in (self._response, self._recognition) if t is not None]
        if self._response is not None:
            self._response.cancel()
        if tasks:
            # The recogniser finishes the job it is in and hands its decoder back.
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT_SECONDS)
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()

    # -- turns -----------------------------------------------------------------------------

    def _emit(self, event: ModelEvent) -> None:
        # Later, not now: the session may be inside a call to this provider.
        asyncio.get_running_loop().call_soon(self._deliver_open, event)

    def _deliver_open(self, event: ModelEvent) -> None:
        if not self._closed and self._deliver is not None:
            self._deliver(event)

    def _end_turn(self, *, stopped: bool) -> None:
        item_id = self._turn_item or _new_id("item")
        self._turn_item = None
        if stopped:
            self._emit(SpeechStopped(item_id))
        self._emit(InputCommitted(item_id))
        self._queue(_Op("end", item_id))

    def _queue(self, op: _Op) -> None:
        self._ops.append(op)
        self._ops_ready.set()
        if self._recognition is None:
            self._recognition = asyncio.get_running_loop().create_task(self._recognize())

    async def _recognize(self) -> None:
        """Applies the recognition steps in order, each on a worker thread."""
        item_id = ""
        try:
            while True:
                if not self._ops:
                    if self._closed:
                        return
                    self._ops_ready.clear()
                    await self._ops_ready.wait()
                    continue
                op = self._ops.popleft()
                try:
                    if op.kind == "start":
                        item_id = op.item_id
                        self._partial[item_id] = [[], []]
                        await self._off_loop(self._recognizer.start)
                    elif op.kind == "audio":
                        pcm = self._take_audio(op.pcm)
                        partial = await self._off_loop(
                            functools.partial(self._recognizer.feed, pcm)
                        )
                        if partial is not None:
                            self._on_partial(item_id, partial)
                    else:
                        text = await self._off_loop(self._recognizer.finish)
                        self._partial.pop(op.item_id, None)
                        await self._on_heard(op.item_id, text)
                except Exception as error:
                    log.exception("speech recognition failed")
                    self._emit(ModelError("transcription_failed", f"speech recognition: {error}"))
                    if op.kind == "end":
                        await self._on_heard(op.item_id, "")
        finally:
            # Not cancelled by close(): this runs after the job in flight.
            with contextlib.suppress(Exception):
                await self._off_loop(self._recognizer.close)

    def _take_audio(self, first: bytes) -> bytes:
        """This audio step and the ones queued right after it, up to a limit."""
        if not self._ops or self._ops[0].kind != "audio":
            return first
        parts = [first]
        size = len(first)
        while self._ops and self._ops[0].kind == "audio" and size < _FEED_LIMIT:
            pcm = self._ops.popleft().pcm
            parts.append(pcm)
            size += len(pcm)
        return b"".join(parts)

    async def _off_loop(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(asr_executor(), job)

    def _on_partial(self, item_id: str, hypothesis: str) -> None:
        """Pass on the words of a partial hypothesis that look settled (the same
        in the last two hypotheses, and not the last word), while they extend
        what was already sent."""
        state = self._partial.get(item_id)
        if state is None:
            return
        sent, previous = state
        words = hypothesis.split()
        settled: list[str] = []
        for old, new in zip(previous, words[:-1], strict=False):
            if old != new:
                break
            settled.append(new)
        state[1] = words
        if len(settled) <= len(sent) or settled[: len(sent)] != sent:
            return
        delta = " ".join(settled[len(sent) :])
        state[0] = settled
        self._emit(TranscriptDelta("user", item_id, delta if not sent else " " + delta))

    async def _on_heard(self, item_id: str, text: str) -> None:
        self._emit(TranscriptDone("user", item_id, text))
        if text:
            self._history.append(HistoryMessage("user", text))
        if self._closed or self._vad.speaking:
            return  # the user already goes on: answer that turn, with this one in mind
        await self._start_response(text or None, f"You said: {text}" if text else NOTHING_HEARD)

    # -- responses -------------------------------------------------------------------------

    async def _start_response(
        self, user_text: str | None, echo: str, *, after_tools: bool = False
    ) -> None:
        await self._stop_response()
        if self._closed:
            return
        self._response = asyncio.get_running_loop().create_task(
            self._respond(_new_id("resp"), _new_id("item"), user_text, echo, after_tools)
        )

    async def _stop_response(self) -> None:
        response = self._response
        if response is not None and not response.done():
            response.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await response

    async def _respond(
        self, response_id: str, item_id: str, user_text: str | None, echo: str, after_tools: bool
    ) -> None:
        self._emit(ResponseStarted(response_id))
        said: list[str] = []
        audio_bytes = 0
        status: ResponseStatus = "completed"
        loop = asyncio.get_running_loop()

        async def speak(sentence: str) -> None:
            nonlocal audio_bytes
            words = speakable(sentence)
            job = synthesis_job(words, self._options.language, self._options.voice)
            pcm = await loop.run_in_executor(tts_executor(), job) if words else b""
            said.append(sentence if not said else " " + sentence)
            self._emit(TranscriptDelta("assistant", item_id, said[-1]))
            for start in range(0, len(pcm), CHUNK_BYTES):
                self._emit(AudioDelta(response_id, item_id, pcm[start : start + CHUNK_BYTES]))
            audio_bytes += len(pcm)

        try:
            fallback = True
            if self._llm_url and (user_text or after_tools):
                try:
                    calls = ChatToolCalls()
                    async with contextlib.aclosing(self._chat(calls)) as sentences:
                        async for sentence in sentences:
                            await speak(sentence)
                    self._called(response_id, calls)
                    fallback = not said and not calls.calls()
                    if fallback:
                        raise ChatError("the model answered with no text")
                except ChatError as error:
                    log.warning("local LLM failed: %s", error)
                    self._emit(ModelError("llm_unavailable", str(error)))
                    if said:
                        status = "failed"  # cut off mid-answer: keep what was said
                        fallback = False
            if fallback:
                for sentence in split_sentences(echo):
                    await speak(sentence)
        except asyncio.CancelledError:
            status = "cancelled"
        except Exception as error:
            log.exception("the local provider failed to answer")
            self._emit(ModelError("response_failed", f"could not speak the answer: {error}"))
            status = "failed"
        text = "".join(said)
        self._emit(TranscriptDone("assistant", item_id, text))
        if text:
            self._history.append(HistoryMessage("assistant", text))
            self._answer = _Answer(item_id, len(self._history) - 1, text, audio_bytes)
        self._emit(ResponseDone(response_id, status))

    def _called(self, response_id: str, calls: ChatToolCalls) -> None:
        """The functions the answer called: the session runs them, then sends their
        results (``send_tool_outputs``)."""
        for call_id, name, arguments in calls.calls():
            call_id = call_id or _new_id("call")
            self._history.append(HistoryToolCall(call_id, name, arguments))
            self._emit(FunctionCall(response_id, _new_id("item"), call_id, name, arguments))

    async def _chat(self, calls: ChatToolCalls) -> AsyncGenerator[str, None]:
        assert self._llm_url is not None
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
        system = self._options.instructions or DEFAULT_INSTRUCTIONS
        messages = [{"role": "system", "content": system}, *chat_messages(self._history)]
        splitter = SentenceSplitter()
        async with contextlib.aclosing(
            stream_chat(
                self._http,
                self._llm_url,
                messages,
                model=self._llm_model,
                api_key=self._llm_api_key,
                tools=chat_tools(self._options.tools),
                calls=calls,
            )
        ) as pieces:
            async for piece in pieces:
                for sentence in splitter.feed(piece):
                    yield sentence
        rest = splitter.flush()
        if rest:
            yield rest


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _log_failure(what: str) -> Callable[[asyncio.Future[None]], None]:
    def check(future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            log.warning("%s failed", what, exc_info=future.exception())

    return check
