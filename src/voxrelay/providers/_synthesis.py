"""Speech synthesis for the ``local`` provider: espeak-ng through ctypes, on
``tts_executor()``'s one thread, in every espeak-ng language."""

from __future__ import annotations

import ctypes
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import soxr

from voxrelay.audio import SAMPLE_WIDTH
from voxrelay.providers._speech import tts_executor

log = logging.getLogger(__name__)

OUTPUT_RATE = 22050  # espeak-ng's native rate

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
