"""Properties of ``StreamResampler``, the one place every chunk of audio is framed
and resampled: however a stream is cut into pieces, the same audio comes out.

What "the same" means under resampling was measured, not assumed: soxr's float
streaming does not depend on how the input is cut, but its int16 output is
TPDF-dithered (±1 LSB) and the dither draws depend on the chunk boundaries. So every
cut is within 1 LSB of the undithered float result, any two cuts within 2 LSB of each
other, and always of the same length."""

from __future__ import annotations

import itertools

import numpy as np
import soxr
from hypothesis import given
from hypothesis import strategies as st

from voxrelay.audio import RESAMPLER_QUALITY, StreamResampler
from voxrelay.config import SAMPLE_RATES

rates = st.sampled_from(SAMPLE_RATES)


def _noise(length: int, seed: int) -> bytes:
    """``length`` bytes of full-scale noise (clipping after resampling included)."""
    return np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()


# A few bytes chosen byte by byte (hypothesis shrinks these well), or up to ~0.4 s at
# 24 kHz of noise: long enough for the filter to settle and for many cuts.
audio = st.one_of(
    st.binary(max_size=64),
    st.builds(_noise, st.integers(0, 20_000), st.integers(0, 2**32 - 1)),
)


@st.composite
def cut(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary byte offsets: odd ones, empty pieces and one-byte
    pieces (half a sample on each side of a border) included."""
    offsets = draw(st.lists(st.integers(0, len(data)), max_size=12))
    bounds = [0, *sorted(offsets), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _feed_all(resampler: StreamResampler, pieces: list[bytes]) -> bytes:
    return b"".join(resampler.feed(piece) for piece in pieces) + resampler.flush()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


def _even(data: bytes) -> bytes:
    """The whole samples of ``data``: a trailing half sample never becomes audio."""
    return data[: len(data) & ~1]


@given(data=st.data(), stream=audio)
def test_framing_at_one_rate_hands_on_one_contiguous_stream(
    data: st.DataObject, stream: bytes
) -> None:
    pieces = data.draw(cut(stream))
    resampler = StreamResampler(24000, 24000)
    out = []
    for piece in pieces:
        exact = resampler.passes_through(len(piece))
        framed = resampler.feed(piece)
        assert len(framed) % 2 == 0  # whole samples only, whatever came in
        if exact:
            assert framed == piece
        out.append(framed)
    assert b"".join(out) == _even(stream)
    assert resampler.flush() == b""


@given(data=st.data(), stream=audio)
def test_a_carried_half_sample_joins_the_next_piece(data: st.DataObject, stream: bytes) -> None:
    pieces = data.draw(cut(stream))
    resampler = StreamResampler(16000, 16000)
    for piece in pieces:
        resampler.feed(piece)
    # Whatever the cuts, the next piece's first byte completes the held half sample.
    tail = resampler.feed(b"\x7f\x01")
    if len(stream) % 2:
        assert tail == stream[-1:] + b"\x7f"
        assert not resampler.passes_through(2)  # the 0x01 now waits in turn
    else:
        assert tail == b"\x7f\x01"
        assert resampler.passes_through(2)


@given(pieces=st.lists(st.binary(max_size=2_000).map(_even), max_size=10), rate=rates)
def test_equal_rates_pass_whole_samples_through_untouched(pieces: list[bytes], rate: int) -> None:
    resampler = StreamResampler(rate, rate)
    for piece in pieces:
        assert resampler.passes_through(len(piece))
        assert resampler.feed(piece) == piece
    assert resampler.flush() == b""


def _float_reference(pcm: bytes, in_rate: int, out_rate: int) -> np.ndarray:
    """The same stream through soxr undithered (float32), rounded to int16."""
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=RESAMPLER_QUALITY)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    out = np.concatenate(
        [stream.resample_chunk(samples), stream.resample_chunk(samples[:0], last=True)]
    )
    return np.clip(np.round(out * 32768), -32768, 32767).astype(np.int32)


@given(data=st.data(), stream=audio, in_rate=rates, out_rate=rates)
def test_resampling_in_pieces_matches_resampling_whole(
    data: st.DataObject, stream: bytes, in_rate: int, out_rate: int
) -> None:
    pieces = data.draw(cut(stream))
    whole = _samples(_feed_all(StreamResampler(in_rate, out_rate), [stream]))
    chunked = _samples(_feed_all(StreamResampler(in_rate, out_rate), pieces))
    assert len(chunked) == len(whole)
    if in_rate == out_rate:
        assert np.array_equal(chunked, whole)
        return
    reference = _float_reference(_even(stream), in_rate, out_rate)
    assert len(reference) == len(whole)
    # Dither only: each within 1 LSB of the undithered result, so within 2 of each other.
    assert np.abs(whole - reference).max(initial=0) <= 1
    assert np.abs(chunked - reference).max(initial=0) <= 1
    assert np.abs(chunked - whole).max(initial=0) <= 2


@given(data=st.data(), stream=audio, in_rate=rates, out_rate=rates)
def test_output_length_follows_the_rate_ratio(
    data: st.DataObject, stream: bytes, in_rate: int, out_rate: int
) -> None:
    pieces = data.draw(cut(stream))
    resampler = StreamResampler(in_rate, out_rate)
    ratio = out_rate / in_rate
    # The filter may hold back a little audio until the stream ends, never more than
    # 2 ms (the module promises "well under one 20 ms chunk"), and never runs ahead.
    most_held = 2 * out_rate // 1000
    fed = produced = 0
    for piece in pieces:
        produced += len(resampler.feed(piece)) // 2
        fed += len(piece)
        owed = (fed // 2) * ratio
        assert owed - most_held <= produced <= owed + 1
    produced += len(resampler.flush()) // 2
    assert abs(produced - (len(stream) // 2) * ratio) <= 1
