"""PCM16 mono framing and streaming resampling.

The hot path: every uploaded chunk and every chunk of the answer passes
through a ``StreamResampler``, so it carries state across chunks (no clicks at
chunk borders), carries an odd trailing byte over to the next chunk, and
uses soxr's "quick" quality, whose delay stays well under one 20 ms chunk
(the higher qualities hold audio back in blocks of up to 80 ms).
"""

from __future__ import annotations

import base64
import binascii
import io
import wave
from dataclasses import dataclass

import numpy as np
import soxr

from voxrelay.events import AudioDelta

SAMPLE_WIDTH = 2  # PCM16
RESAMPLER_QUALITY = "QQ"
# What a resampler is given at once: 20 ms at 24 kHz, a client's usual chunk.
_PIECE_SAMPLES = 480


class StreamResampler:
    """PCM16 little-endian mono bytes in at ``in_rate``, out at ``out_rate``."""

    __slots__ = ("_carry", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._carry = b""
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=RESAMPLER_QUALITY)
        )

    def passes_through(self, byte_count: int) -> bool:
        """Whether ``feed`` would hand back exactly the bytes it was given."""
        return self._stream is None and not self._carry and not byte_count & 1

    def feed(self, data: bytes) -> bytes:
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) & 1:
            # Half a sample: it waits for the next chunk's first byte.
            self._carry = data[-1:]
            data = data[:-1]
        if not data or self._stream is None:
            return data
        samples = np.frombuffer(data, dtype="<i2")
        if len(samples) <= _PIECE_SAMPLES:
            return _resampled(self._stream, samples)
        # soxr's buffers grow to the largest chunk a stream is given and stay that size
        # (a 1 s chunk leaves ~200 KiB for the rest of the session, against ~40 KiB for
        # 20 ms ones), so a long chunk goes through in pieces of a 20 ms chunk's size.
        return b"".join(
            _resampled(self._stream, samples[at : at + _PIECE_SAMPLES])
            for at in range(0, len(samples), _PIECE_SAMPLES)
        )

    def flush(self) -> bytes:
        """The samples still held by the filter, at the end of a stream."""
        self._carry = b""
        if self._stream is None:
            return b""
        return _resampled(self._stream, np.zeros(0, dtype="<i2"), last=True)


def _resampled(stream: soxr.ResampleStream, samples: np.ndarray, *, last: bool = False) -> bytes:
    return bytes(stream.resample_chunk(samples, last=last).astype("<i2", copy=False).data)


def duration_ms(byte_count: int, rate: int) -> float:
    return byte_count / SAMPLE_WIDTH / rate * 1000.0


def bytes_for_ms(ms: float, rate: int) -> int:
    return int(ms * rate / 1000.0) * SAMPLE_WIDTH


@dataclass(frozen=True, slots=True)
class Pcm:
    data: bytes
    rate: int


def read_wav(source: str | bytes) -> Pcm:
    """Mono PCM16 samples of a WAV file (path or bytes); stereo is mixed down."""
    with wave.open(io.BytesIO(source) if isinstance(source, bytes) else source, "rb") as handle:
        if handle.getsampwidth() != SAMPLE_WIDTH:
            raise ValueError("only 16-bit PCM WAV files are supported")
        frames = handle.readframes(handle.getnframes())
        channels = handle.getnchannels()
        rate = handle.getframerate()
    if channels > 1:
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)
        frames = samples.mean(axis=1).astype("<i2").tobytes()
    return Pcm(frames, rate)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(SAMPLE_WIDTH)
        handle.setframerate(rate)
        handle.writeframes(pcm)
    return out.getvalue()


def client_audio(resampler: StreamResampler, delta: AudioDelta) -> tuple[str, int] | None:
    """An answer's audio at the client's rate: base64 and its byte count (the upstream's
    own base64 as it came, where the rates agree); None when that base64 is broken."""
    count = delta.byte_count
    if resampler.passes_through(count):
        return delta.encoded, count
    try:
        pcm = resampler.feed(delta.pcm)
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(pcm).decode("ascii"), len(pcm)
