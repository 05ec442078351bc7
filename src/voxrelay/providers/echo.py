"""A deterministic upstream that needs no network: it answers every turn by
echoing it, with the same event sequence a real realtime model produces.

Spoken turns are detected by signal energy (or ended by ``commit``) and
answered with the user's own audio played back; typed turns are answered
with "You said: ..." and a tone as long as the words would take to say.
Used as the zero-configuration default and by tests and benchmarks.

Each answer reports its usage, made up the same way every time: input, one token per
word typed or per 100 ms of the user's turn; output, one token per word of the answer
and per 50 ms of its audio (what of it was sent, when it is cut short). Nothing is
cached, and nothing is counted for turns before this one.

A typed turn of the form ``call tool NAME {"some": "arguments"}`` is answered with a
call of that function (whether or not the session declares it), as a model would;
the results it is then given are answered with "The NAME tool said: ...".
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from voxrelay.audio import SAMPLE_WIDTH, duration_ms
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
    TokenUsage,
    TranscriptDelta,
    TranscriptDone,
)
from voxrelay.providers.base import (
    EmitModelEvent,
    HistoryItem,
    HistoryMessage,
    SessionOptions,
    ToolOutput,
)

RATE = 24000
FRAME_BYTES = RATE // 50 * SAMPLE_WIDTH  # 20 ms
SPEECH_RMS = 500.0
FRAMES_TO_START = 3  # 60 ms of sound starts a turn
FRAMES_TO_STOP = 25  # 500 ms of quiet ends it
CHUNK_BYTES = RATE // 10 * SAMPLE_WIDTH  # answer audio in 100 ms deltas
MS_PER_CHARACTER = 60
# A typed turn that makes it call a tool: the name, then the arguments' JSON object.
CALL_TOOL = re.compile(r"^call tool ([A-Za-z0-9_-]{1,64})\s*(\{.*\})?\s*$", re.DOTALL)


class EchoProvider:
    input_rate = RATE
    output_rate = RATE

    def __init__(self) -> None:
        self._deliver: EmitModelEvent | None = None
        self._options = SessionOptions()
        self._history: list[HistoryItem] = []
        self._calls: dict[str, str] = {}  # call id: the tool's name
        self._pending = bytearray()  # not yet a whole 20 ms frame
        self._turn = bytearray()  # audio of the user's current turn
        self._loud_frames = 0
        self._quiet_frames = 0
        self._speaking = False
        self._item_id: str | None = None
        self._counter = 0
        self._response: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def history(self) -> list[HistoryItem]:
        """Earlier turns replayed at open, then every turn since."""
        return self._history

    async def open(
        self, options: SessionOptions, history: Sequence[HistoryItem], emit: EmitModelEvent
    ) -> None:
        self._options = options
        self._history = list(history)
        self._deliver = emit

    async def send_audio(self, pcm: bytes) -> None:
        if self._options.turn_detection == "manual":
            self._turn += pcm
            return
        self._pending += pcm
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            self._vad_frame(frame)

    async def commit(self) -> None:
        if not self._turn and not self._speaking:
            self._emit(ModelError("input_audio_buffer_commit_empty", "no audio to commit"))
            return
        self._end_turn(stopped=self._speaking)

    async def send_text(self, item_id: str, text: str) -> None:
        self._history.append(HistoryMessage("user", text))
        call = CALL_TOOL.match(text)
        if call is not None:
            self._call_tool(call.group(1), call.group(2) or "{}")
            return
        self._respond(f"You said: {text}", _tone(_spoken_ms(text)), typed=len(text.split()))

    async def update_tools(self, tools: Sequence[Mapping[str, Any]]) -> None:
        self._options = replace(self._options, tools=tuple(dict(tool) for tool in tools))

    async def send_tool_outputs(self, outputs: Sequence[ToolOutput]) -> None:
        said = [
            f"{'Later, the' if out.late else 'The'} {self._calls.get(out.call_id, out.name)}"
            f" tool said: {out.output}"
            for out in outputs
        ]
        text = " ".join(said) or "Here is what I found."
        self._respond(text, _tone(_spoken_ms(text)))

    def _call_tool(self, name: str, arguments: str) -> None:
        """An answer that is only a call of ``name``, as a model makes one."""
        if self._response is not None and not self._response.done():
            self._response.cancel()
        response_id, item_id = self._next_id("resp"), self._next_id("item")
        call_id = self._next_id("call")
        self._calls[call_id] = name
        self._emit(ResponseStarted(response_id))
        self._emit(FunctionCall(response_id, item_id, call_id, name, arguments))
        self._emit(ResponseDone(response_id, "completed"))

    async def cancel(self, item_id: str | None, played_ms: int | None) -> None:
        if self._response is not None and not self._response.done():
            self._response.cancel()

    async def close(self) -> None:
        self._closed = True
        if self._response is not None:
            self._response.cancel()

    def _emit(self, event: ModelEvent) -> None:
        # Later, not now: the session may be inside a call to this provider.
        asyncio.get_running_loop().call_soon(self._deliver_open, event)

    def _deliver_open(self, event: ModelEvent) -> None:
        if not self._closed and self._deliver is not None:
            self._deliver(event)

    def _next_id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_echo{self._counter:06d}"

    def _vad_frame(self, frame: bytes) -> None:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        loud = math.sqrt(float(np.mean(samples * samples))) >= SPEECH_RMS
        if self._speaking:
            self._turn += frame
            self._quiet_frames = 0 if loud else self._quiet_frames + 1
            if self._quiet_frames >= FRAMES_TO_STOP:
                self._end_turn(stopped=True)
            return
        self._loud_frames = self._loud_frames + 1 if loud else 0
        self._turn += frame
        # Keep a little audio from before the turn began, as real VADs do.
        del self._turn[: max(0, len(self._turn) - FRAME_BYTES * (FRAMES_TO_START + 15))]
        if self._loud_frames >= FRAMES_TO_START:
            self._speaking = True
            self._quiet_frames = 0
            self._item_id = self._next_id("item")
            self._emit(SpeechStarted(self._item_id))
            if self._response is not None and not self._response.done():
                self._response.cancel()  # barge-in, like a server VAD does

    def _end_turn(self, *, stopped: bool) -> None:
        item_id = self._item_id or self._next_id("item")
        if stopped:
            self._emit(SpeechStopped(item_id))
        audio = bytes(self._turn)
        self._turn.clear()
        self._speaking = False
        self._loud_frames = self._quiet_frames = 0
        self._item_id = None
        self._emit(InputCommitted(item_id))
        heard = f"({duration_ms(len(audio), RATE) / 1000:.2f} seconds of audio)"
        self._emit(TranscriptDone("user", item_id, heard))
        self._history.append(HistoryMessage("user", heard))
        self._respond(f"You said: {heard}", audio, spoken_ms=duration_ms(len(audio), RATE))

    def _respond(self, text: str, audio: bytes, *, typed: int = 0, spoken_ms: float = 0) -> None:
        if self._response is not None and not self._response.done():
            self._response.cancel()
        heard = (typed, int(spoken_ms) // 100)
        self._response = asyncio.get_running_loop().create_task(
            self._stream_response(self._next_id("resp"), self._next_id("item"), text, audio, heard)
        )

    async def _stream_response(
        self, response_id: str, item_id: str, text: str, audio: bytes, heard: tuple[int, int]
    ) -> None:
        self._emit(ResponseStarted(response_id))
        words = text.split(" ")
        chunks = [audio[i : i + CHUNK_BYTES] for i in range(0, len(audio), CHUNK_BYTES)]
        said: list[str] = []
        status: ResponseStatus = "completed"
        sent = 0
        try:
            for index in range(max(len(words), len(chunks))):
                if index < len(chunks):
                    self._emit(AudioDelta(response_id, item_id, chunks[index]))
                    sent += len(chunks[index])
                if index < len(words):
                    delta = words[index] if index == 0 else " " + words[index]
                    said.append(delta)
                    self._emit(TranscriptDelta("assistant", item_id, delta))
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            status = "cancelled"
        spoken = "".join(said)
        self._emit(TranscriptDone("assistant", item_id, spoken))
        self._history.append(HistoryMessage("assistant", spoken))
        usage = _usage(heard, len(said), int(duration_ms(sent, RATE)) // 50)
        self._emit(ResponseDone(response_id, status, usage))


def _usage(heard: tuple[int, int], words: int, audio: int) -> TokenUsage:
    typed, spoken = heard
    return TokenUsage(
        input_tokens=typed + spoken,
        output_tokens=words + audio,
        input_text_tokens=typed,
        input_audio_tokens=spoken,
        output_text_tokens=words,
        output_audio_tokens=audio,
    )


# However long the text, one answer's audio is bounded: a provider bounds its own
# work per request.
_MAX_ANSWER_MS = 60_000


def _spoken_ms(text: str) -> int:
    return min(max(300, len(text) * MS_PER_CHARACTER), _MAX_ANSWER_MS)


def _tone(ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(int(RATE * ms / 1000)) / RATE
    return (np.sin(2 * math.pi * hz * t) * 6000).astype("<i2").tobytes()
