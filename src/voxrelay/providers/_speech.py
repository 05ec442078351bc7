"""Offline speech for the ``local`` provider: turn detection (webrtcvad),
recognition (pocketsphinx, bundled en-US model) and synthesis (espeak-ng).

Where the work runs: voice activity detection costs microseconds per 20 ms
frame and runs on the event loop. pocketsphinx keeps the GIL while it loads
and decodes, so each decoder lives in a child process (``_asr_worker``); the
processes are pooled and lent to one utterance at a time, and the server
talks to them from threads that only wait on a pipe. espeak-ng is one
process-global library (ctypes releases the GIL while it speaks), so every
call into it runs on its own single worker thread.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soxr
import webrtcvad  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

SAMPLE_WIDTH = 2
INPUT_RATE = 16000  # what webrtcvad and the pocketsphinx model want
OUTPUT_RATE = 22050  # espeak-ng's native rate

# -- turn detection -----------------------------------------------------------------

FRAME_MS = 20
FRAME_BYTES = INPUT_RATE * FRAME_MS // 1000 * SAMPLE_WIDTH
VAD_AGGRESSIVENESS = 3
START_WINDOW = 6  # frames: speech starts when 5 of the last 6 (~100 ms) are voiced
START_VOICED = 5
STOP_WINDOW = 30  # frames: it ends when at most 3 of the last 30 (600 ms) are voiced
STOP_VOICED = 3
PRE_ROLL_FRAMES = 15  # 300 ms of audio from before the start is kept in the turn
MAX_TURN_MS = 30_000  # a turn this long is ended, to bound what one decode holds


@dataclass(frozen=True, slots=True)
class VadEvent:
    """``start`` carries the pre-roll and first frames; ``audio`` a frame of the
    turn; ``stop`` ends the turn (its frame is part of the turn)."""

    kind: Literal["start", "audio", "stop"]
    pcm: bytes


class TurnDetector:
    """webrtcvad over 20 ms frames with a start and a stop hangover."""

    def __init__(self, aggressiveness: int = VAD_AGGRESSIVENESS) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._pending = bytearray()
        self._recent: deque[bytes] = deque(maxlen=PRE_ROLL_FRAMES + START_WINDOW)
        self._flags: deque[bool] = deque(maxlen=START_WINDOW)
        self.speaking = False
        self._turn_bytes = 0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        self._pending += pcm
        events: list[VadEvent] = []
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            event = self._frame(frame)
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: bytes) -> VadEvent | None:
        voiced = bool(self._vad.is_speech(frame, INPUT_RATE))
        self._flags.append(voiced)
        if not self.speaking:
            self._recent.append(frame)
            if sum(self._flags) >= START_VOICED:
                self.speaking = True
                self._flags = deque(self._flags, maxlen=STOP_WINDOW)
                audio = b"".join(self._recent)
                self._recent.clear()
                self._turn_bytes = len(audio)
                return VadEvent("start", audio)
            return None
        self._turn_bytes += len(frame)
        if (
            len(self._flags) == STOP_WINDOW and sum(self._flags) <= STOP_VOICED
        ) or self._turn_bytes >= MAX_TURN_MS * INPUT_RATE // 1000 * SAMPLE_WIDTH:
            self.end()
            return VadEvent("stop", frame)
        return VadEvent("audio", frame)

    def end(self) -> None:
        """Forget the turn in progress (ended by VAD or by a commit)."""
        self.speaking = False
        self._flags = deque(maxlen=START_WINDOW)
        self._turn_bytes = 0

    def take_pre_roll(self) -> bytes:
        """The recent audio that is not yet part of a turn (for a manual commit)."""
        audio = b"".join(self._recent)
        self._recent.clear()
        return audio


# -- executors -------------------------------------------------------------------------

_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def _executor(name: str, workers: int) -> ThreadPoolExecutor:
    with _executors_lock:
        executor = _executors.get(name)
        if executor is None:
            executor = ThreadPoolExecutor(workers, thread_name_prefix=f"voxrelay-{name}")
            _executors[name] = executor
        return executor


def asr_executor() -> ThreadPoolExecutor:
    """Threads that talk to the decoder processes (one job per provider at a
    time); they mostly wait on a pipe, so there are a few per core."""
    return _executor("asr", max(8, 4 * (os.cpu_count() or 2)))


def tts_executor() -> ThreadPoolExecutor:
    """espeak-ng's one thread: the library keeps global state."""
    return _executor("espeak", 1)


# -- recognition -----------------------------------------------------------------------

# A fresh decoder's cepstral mean starts from a generic prior, which costs the
# first streamed utterance words. The mean after one synthetic utterance is
# closer to real speech (measured on the recordings in shared/data/speech: 72%
# -> 76-78% of words right on a first utterance); it is measured once per
# process, every provider starts from it and then keeps its own.
_WARM_UP_TEXT = "Hello. How are you today?"
_PARTIAL_EVERY = INPUT_RATE * 3 // 10 * SAMPLE_WIDTH  # a partial hypothesis per 300 ms
_START_SECONDS = 60.0  # to start a decoder process and load the model
_REPLY_SECONDS = 60.0  # for any one answer of a decoder process
_QUIT_SECONDS = 2.0


# The worker imports voxrelay as this process does (it may run from a source
# tree that is not installed: that path goes last, never before the stdlib).
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER_MAIN = (
    f"import sys; sys.path.append({_SOURCE_ROOT!r}); "
    "from voxrelay.providers._asr_worker import main; main()"
)


class RecognitionError(Exception):
    """A decoder process failed or went away."""


class DecoderProcess:
    """A pocketsphinx decoder in a child process (see ``_asr_worker``).

    Its methods block on the pipe (without the GIL): call them off the loop,
    from one thread at a time.
    """

    def __init__(self) -> None:
        # A fresh interpreter, not multiprocessing: "fork" is unsafe in a threaded
        # server and "spawn" would re-run the parent's unguarded main module.
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-c", _WORKER_MAIN, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        try:
            self.cmn: str = self._reply(_START_SECONDS)
        except BaseException:
            self.close()
            raise

    def call(self, *request: Any) -> Any:
        try:
            self._conn.send(request)
        except (OSError, ValueError) as error:
            self.close()
            raise RecognitionError(f"the speech decoder went away: {error!r}") from error
        return self._reply(_REPLY_SECONDS)

    def _reply(self, timeout: float) -> Any:
        try:
            if not self._conn.poll(timeout):
                raise RecognitionError("the speech decoder did not answer")
            status, value = self._conn.recv()
        except (EOFError, OSError) as error:
            self.close()
            raise RecognitionError(f"the speech decoder went away: {error!r}") from error
        except RecognitionError:
            self.close()
            raise
        if status != "ok":
            raise RecognitionError(str(value))
        return value

    @property
    def alive(self) -> bool:
        return self._process.poll() is None and not self._conn.closed

    def close(self) -> None:
        if not self._conn.closed:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("quit",))
            self._conn.close()
        try:
            self._process.wait(_QUIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(_QUIT_SECONDS)


class DecoderPool:
    """Idle decoder processes, shared by every provider of the server process."""

    def __init__(self, keep: int | None = None) -> None:
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one model load at a time
        self._idle: list[DecoderProcess] = []
        self._keep = keep if keep is not None else max(2, os.cpu_count() or 2)
        self.created = 0
        self.initial_cmn: str | None = None

    def take(self) -> DecoderProcess:
        """An idle decoder, or a new one (blocks ~1 s while it starts)."""
        decoder = self._idle_one()
        if decoder is not None:
            return decoder
        with self._load_lock:
            decoder = self._idle_one()
            return decoder if decoder is not None else self._create()

    def give(self, decoder: DecoderProcess) -> None:
        with self._lock:
            if decoder.alive and len(self._idle) < self._keep:
                self._idle.append(decoder)
                return
        decoder.close()

    def prewarm(self) -> None:
        """Start the first decoder ahead of the first utterance."""
        with self._load_lock:
            if self.created == 0:
                self.give(self._create())  # before an utterance waiting for it looks

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for decoder in idle:
            decoder.close()

    def _idle_one(self) -> DecoderProcess | None:
        with self._lock:
            while self._idle:
                decoder = self._idle.pop()
                if decoder.alive:
                    return decoder
        return None

    def _create(self) -> DecoderProcess:
        decoder = DecoderProcess()
        if self.initial_cmn is None:
            try:
                warm_up = synthesize_blocking(_WARM_UP_TEXT, "en-US", None, rate=INPUT_RATE)
                decoder.call("start", None)
                decoder.call("feed", warm_up, False)
                _, self.initial_cmn = decoder.call("finish")
            except Exception:
                log.warning("could not warm up the speech decoder", exc_info=True)
                self.initial_cmn = decoder.cmn
        with self._lock:
            self.created += 1
        return decoder


_pool = DecoderPool()
atexit.register(_pool.close)


def decoder_pool() -> DecoderPool:
    return _pool


class Recognizer:
    """One provider's utterances, streamed through a decoder borrowed per utterance.

    Every method blocks: call them off the event loop. A lock serialises them,
    so a job still running after its caller gave up cannot overlap the next.
    """

    def __init__(self, pool: DecoderPool | None = None) -> None:
        self._pool = pool or _pool
        self._lock = threading.Lock()
        self._decoder: DecoderProcess | None = None
        self._since_partial = 0
        # This speaker's cepstral mean, carried from one utterance to the next.
        self.cmn: str | None = None

    def start(self) -> None:
        with self._lock:
            self._end(keep=False)
            decoder = self._pool.take()
            self._decoder = decoder
            self._since_partial = 0
            self._call("start", self.cmn or self._pool.initial_cmn)

    def feed(self, pcm: bytes) -> str | None:
        """Decode more of the utterance; now and then return the partial hypothesis."""
        with self._lock:
            if self._decoder is None:
                return None
            self._since_partial += len(pcm)
            partial = self._since_partial >= _PARTIAL_EVERY
            if partial:
                self._since_partial = 0
            value = self._call("feed", pcm, partial)
            return str(value) if partial and value is not None else None

    def finish(self) -> str:
        """End the utterance: its final transcript ("" when nothing was recognised)."""
        with self._lock:
            return self._end(keep=True)

    def close(self) -> None:
        with self._lock:
            self._end(keep=False)

    def _call(self, *request: Any) -> Any:
        assert self._decoder is not None
        try:
            return self._decoder.call(*request)
        except RecognitionError:
            decoder, self._decoder = self._decoder, None
            self._pool.give(decoder)  # closed and dropped if it died
            raise

    def _end(self, *, keep: bool) -> str:
        if self._decoder is None:
            return ""
        try:
            if not keep:
                self._call("abort")
                return ""
            text, self.cmn = self._call("finish")
            return str(text)
        finally:
            if self._decoder is not None:
                self._pool.give(self._decoder)
                self._decoder = None


# -- synthesis -------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_BUFFER_MS = 100

# Old or macro-language codes that espeak-ng knows under another name.
_LANGUAGE_ALIASES = {"iw": "he", "in": "id", "zh-cn": "cmn", "zh-tw": "cmn", "zh-hk": "yue"}
_DEFAULT_VOICE = "en-us"

_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


class SpeechError(Exception):
    """The synthesizer could not be loaded or failed."""


class Espeak:
    """espeak-ng through ctypes. Only ever used from ``tts_executor()``'s thread."""

    def __init__(self) -> None:
        import espeakng_loader  # type: ignore[import-untyped]

        data_path = str(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise SpeechError(f"espeak-ng did not start (data in {data_path})")
        self.rate = int(rate)
        self._lib = lib
        self._chunks: list[bytes] = []
        self._callback = _Callback(self._collect)  # keep it alive as long as the library
        lib.espeak_SetSynthCallback(self._callback)
        self._current: str | None = None
        self._languages, self._voices = self._list_voices()
        variants_dir = os.path.join(data_path, "voices", "!v")
        self._variants = (
            {name.lower(): name for name in sorted(os.listdir(variants_dir))}
            if os.path.isdir(variants_dir)
            else {}
        )
        self._resolved: dict[tuple[str | None, str | None], str] = {}

    def _collect(self, wav: Any, samples: int, _events: Any) -> int:
        if wav and samples > 0:
            self._chunks.append(ctypes.string_at(wav, samples * SAMPLE_WIDTH))
        return 0  # go on

    def _list_voices(self) -> tuple[dict[str, str], dict[str, str]]:
        """language tag -> voice identifier (espeak's preferred voice for it), and
        lower-case voice name or identifier -> identifier."""
        best: dict[str, tuple[int, str]] = {}
        names: dict[str, str] = {}
        voices = self._lib.espeak_ListVoices(None)
        index = 0
        while voices[index]:
            voice = voices[index].contents
            identifier = (voice.identifier or b"").decode("utf-8", "replace")
            name = (voice.name or b"").decode("utf-8", "replace").strip()
            index += 1
            if not identifier:
                continue
            names.setdefault(identifier.lower(), identifier)
            names.setdefault(identifier.rsplit("/", 1)[-1].lower(), identifier)
            if name:
                names.setdefault(name.lower(), identifier)
            # ``languages``: (priority byte, NUL-terminated tag) pairs, then a 0 byte.
            address = voice.languages
            while address:
                priority = ctypes.string_at(address, 1)[0]
                if priority == 0:
                    break
                tag = ctypes.string_at(address + 1).decode("ascii", "replace").lower()
                address += len(tag) + 2
                if tag not in best or priority < best[tag][0]:
                    best[tag] = (priority, identifier)
        return {tag: identifier for tag, (_, identifier) in best.items()}, names

    def voice_for(self, language: str | None, voice: str | None) -> str:
        """The espeak voice name for a BCP-47 ``language`` and an optional espeak
        ``voice`` (a variant such as ``f3`` or ``klatt4``, a voice such as
        ``en-GB-x-rp``, or both as ``he+f3``); unknown names are ignored."""
        key = (language, voice)
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolved[key] = self._resolve(language, voice)
        return resolved

    def _resolve(self, language: str | None, voice: str | None) -> str:
        base = self._language_voice(language)
        variant: str | None = None
        for part in (voice or "").split("+"):
            part = part.strip().lower()
            if not part:
                continue
            if part in self._variants:
                variant = self._variants[part]
            elif part in self._voices:
                base = self._voices[part]
        return f"{base}+{variant}" if variant else base

    def _language_voice(self, language: str | None) -> str:
        tag = (language or "").strip().lower().replace("_", "-")
        tag = _LANGUAGE_ALIASES.get(tag, tag)
        if tag in ("", "en"):
            return _DEFAULT_VOICE  # the recogniser's English
        while tag:
            if tag in self._languages:
                return self._languages[tag]
            tag = _LANGUAGE_ALIASES.get(tag.rpartition("-")[0], tag.rpartition("-")[0])
        return _DEFAULT_VOICE

    def synthesize(self, text: str, language: str | None, voice: str | None) -> bytes:
        """PCM16 at ``self.rate`` for ``text`` (plain text, not SSML)."""
        name = self.voice_for(language, voice)
        if name != self._current:
            if self._lib.espeak_SetVoiceByName(name.encode()) != 0:
                log.warning("espeak-ng has no voice %r; speaking English", name)
                self._lib.espeak_SetVoiceByName(_DEFAULT_VOICE.encode())
            self._current = name
        data = text.encode("utf-8") + b"\0"
        self._chunks = []
        error = self._lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
        )
        if error != 0:
            raise SpeechError(f"espeak-ng failed to speak (error {error})")
        pcm = b"".join(self._chunks)
        self._chunks = []
        return pcm


_espeak: Espeak | None = None


def _engine() -> Espeak:
    global _espeak
    if _espeak is None:
        _espeak = Espeak()
    return _espeak


def _synthesize(text: str, language: str | None, voice: str | None, rate: int) -> bytes:
    engine = _engine()
    pcm = engine.synthesize(text, language, voice)
    if engine.rate != rate and pcm:
        samples = np.frombuffer(pcm, dtype="<i2")
        pcm = soxr.resample(samples, engine.rate, rate).astype("<i2").tobytes()
    return pcm


def synthesis_job(
    text: str, language: str | None, voice: str | None, rate: int = OUTPUT_RATE
) -> Callable[[], bytes]:
    """A job for ``tts_executor()``: speech for ``text`` as PCM16 at ``rate``."""
    return lambda: _synthesize(text, language, voice, rate)


def synthesize_blocking(
    text: str, language: str | None, voice: str | None, rate: int = OUTPUT_RATE
) -> bytes:
    """Synthesize from any thread but the espeak one (waits for it)."""
    return tts_executor().submit(_synthesize, text, language, voice, rate).result()


def voice_for(language: str | None, voice: str | None) -> str:
    """The espeak voice the synthesizer would use (for tests and logs)."""
    return tts_executor().submit(lambda: _engine().voice_for(language, voice)).result()


# -- text -------------------------------------------------------------------------------

_MARKUP = re.compile(r"[*_`#>|]+|\[(?=[^\]]*\]\()|\]\([^)]*\)")


def speakable(text: str) -> str:
    """Text for the synthesizer: markdown emphasis, code ticks, headings and link
    targets removed (chat models write them; espeak would read them out)."""
    return re.sub(r"\s+", " ", _MARKUP.sub("", text)).strip()
