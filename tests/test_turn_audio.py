"""The turn's kept audio: its newest part in memory, the rest in a ring file."""

from __future__ import annotations

import gc
import os
import random
from pathlib import Path

import pytest

from voxrelay.sessions.turn_audio import BLOCK_BYTES, TurnAudio


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _feed(audio: TurnAudio, total: int, chunk: int, seed: int = 1) -> bytes:
    """Append ``total`` random bytes in ``chunk``-byte pieces; returns them."""
    data = random.Random(seed).randbytes(total)
    for at in range(0, total, chunk):
        audio.append(data[at : at + chunk])
    return data


def test_a_short_turn_stays_in_memory(tmp_path: Path) -> None:
    audio = TurnAudio(100_000, 4096, str(tmp_path))
    data = _feed(audio, 4000, 640)
    assert not audio.on_disk
    assert audio.tail(len(audio)) == data
    assert audio.tail(100) == data[-100:]


def test_a_long_turn_goes_to_the_ring_and_reads_back_exact_bytes(tmp_path: Path) -> None:
    capacity = 3 * BLOCK_BYTES + 1000  # not a multiple of the block: writes wrap mid-block
    audio = TurnAudio(capacity, 4096, str(tmp_path))
    data = _feed(audio, 10 * capacity + 12345, 640)  # wraps around many times
    assert audio.on_disk
    assert len(audio) == capacity
    for count in (1, 639, 640, BLOCK_BYTES - 1, BLOCK_BYTES + 7, 2 * BLOCK_BYTES, capacity):
        assert audio.tail(count) == data[-count:], count
    assert audio.tail(capacity + 10) == data[-capacity:]
    # Only a block (and a chunk) of it is in memory; the rest is in the file.
    assert len(audio._buffer) < BLOCK_BYTES + 640
    # Nothing is left on disk under a name.
    assert list(tmp_path.iterdir()) == []


def test_keep_last_and_clear_bound_what_is_read(tmp_path: Path) -> None:
    audio = TurnAudio(200_000, 1024, str(tmp_path))
    data = _feed(audio, 150_000, 960)
    audio.keep_last(48_000)
    assert len(audio) == 48_000
    assert audio.tail(100_000) == data[-48_000:]
    audio.clear()
    assert len(audio) == 0 and audio.tail(10) == b""
    more = _feed(audio, 70_000, 960, seed=2)
    assert audio.tail(len(audio)) == more


def test_all_in_memory_with_no_memory_bound(tmp_path: Path) -> None:
    audio = TurnAudio(50_000, 0, str(tmp_path))
    data = _feed(audio, 120_000, 640)
    assert not audio.on_disk
    assert audio.tail(len(audio)) == data[-50_000:]


def test_the_file_is_closed_with_the_turn(tmp_path: Path) -> None:
    before = _fd_count()
    audio = TurnAudio(100_000, 1024, str(tmp_path))
    _feed(audio, 10_000, 640)
    assert audio.on_disk and _fd_count() == before + 1
    audio.close()
    assert not audio.on_disk and _fd_count() == before
    # One dropped without a close gives its file back too.
    dropped = TurnAudio(100_000, 1024, str(tmp_path))
    _feed(dropped, 10_000, 640)
    assert _fd_count() == before + 1
    del dropped
    gc.collect()
    assert _fd_count() == before


def test_a_disk_that_fails_keeps_the_memory_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = TurnAudio(1_000_000, 4096, str(tmp_path / "missing"))
    data = _feed(audio, 100_000, 640)
    assert not audio.on_disk
    assert len(audio) == 4096
    assert audio.tail(len(audio)) == data[-4096:]
    # Logged once, not once per chunk.
    assert len([r for r in caplog.records if "turn's audio" in r.message]) == 1


def test_a_write_that_fails_midway_keeps_the_newest_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = TurnAudio(1_000_000, 4096, str(tmp_path))
    _feed(audio, 10_000, 640)
    assert audio._fd is not None
    # The file is gone (as a full disk refuses a write): the next block fails.
    os.close(audio._fd)
    data = _feed(audio, 100_000, 640, seed=3)
    assert not audio.on_disk
    assert 0 < len(audio) <= 4096
    assert audio.tail(len(audio)) == data[-len(audio) :]
    assert len([r for r in caplog.records if "turn's audio" in r.message]) == 1
