"""An event log that keeps the older part of its window in a spool on disk."""

from __future__ import annotations

import base64
import errno
import logging
import os
import time
from pathlib import Path

import pytest

from voxrelay import spool
from voxrelay.eventlog import Event, EventLog, ReplayGap
from voxrelay.spool import Spill

# 20 ms of 24 kHz PCM16, as one audio event carries it.
_CHUNK = base64.b64encode(os.urandom(960)).decode()


def spilling(tmp_path: Path, *, memory_bytes: int = 8 << 10, **bounds: float) -> EventLog:
    spill = Spill(memory_bytes, str(tmp_path), segment_bytes=int(bounds.pop("segment", 1 << 20)))
    return EventLog(
        keep_seconds=bounds.get("keep", 60.0),
        max_bytes=int(bounds.get("max_bytes", 64 << 20)),
        spill=spill,
    )


def in_memory(**bounds: float) -> EventLog:
    return EventLog(
        keep_seconds=bounds.get("keep", 60.0), max_bytes=int(bounds.get("max_bytes", 64 << 20))
    )


def audio(n: int) -> dict[str, object]:
    return {"itemId": "item_1", "audio": _CHUNK, "n": n}


def read_all(log: EventLog, after: int) -> tuple[list[Event | ReplayGap], int]:
    """Everything a cursor from ``after`` takes until it is caught up, and in how many takes."""
    cursor, taken, takes = log.cursor(after), [], 0
    while cursor.next_id <= log.last_id:
        taken += cursor.take()
        takes += 1
    return taken, takes


def files_into(directory: Path) -> list[str]:
    """This process's open files in ``directory`` (an unlinked one reads "(deleted)")."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def test_a_listener_far_behind_replays_every_event_from_the_spool(tmp_path: Path) -> None:
    log = spilling(tmp_path)
    sent = [log.append("audio" if n % 10 else "transcript", audio(n)) for n in range(600)]
    # Most of the window is on disk, the memory tail stays within its bound.
    assert log.spooled > 550
    assert log._tail_bytes <= 8 << 10
    taken, takes = read_all(log, 0)
    assert all(isinstance(item, Event) for item in taken)
    events = [item for item in taken if isinstance(item, Event)]
    assert [e.id for e in events] == list(range(1, 601))
    assert [(e.type, e.at, e.json) for e in events] == [(e.type, e.at, e.json) for e in sent]
    assert events[123].data == audio(123)
    assert takes > 1, "a long replay is read back in pieces"
    # A caught-up listener keeps taking from memory.
    cursor = log.cursor(log.last_id)
    log.append("transcript", {"text": "live"})
    assert [e.json for e in cursor.take() if isinstance(e, Event)] == [b'{"text":"live"}']
    assert log.get(5) is not None and log.get(5).json == sent[4].json  # type: ignore[union-attr]
    log.close()


@pytest.mark.parametrize("bound", ["bytes", "age"])
def test_trimming_across_the_spool_gives_the_same_gaps_as_a_log_in_memory(
    tmp_path: Path, bound: str
) -> None:
    bounds = {"max_bytes": 300 * (128 + 1310)} if bound == "bytes" else {"keep": 10.0}
    logs = [spilling(tmp_path, **bounds), in_memory(**bounds)]
    start = time.monotonic() - 30
    for n in range(1200):
        for log in logs:
            log.append("audio", audio(n), at=start + n * 0.025)
    spilled, memory = logs
    assert spilled.spooled > 100, "the oldest events held are on disk"
    assert spilled.oldest_id == memory.oldest_id > 1
    for after in (0, 1, memory.oldest_id - 2, memory.oldest_id - 1, memory.oldest_id + 50):
        got, _ = read_all(spilled, after)
        want, _ = read_all(memory, after)
        assert [_key(item) for item in got] == [_key(item) for item in want]
    gap = read_all(spilled, 0)[0][0]
    assert gap == ReplayGap(requested_after=0, resumed_at=memory.oldest_id)
    spilled.close()


def _key(item: Event | ReplayGap) -> object:
    return item if isinstance(item, ReplayGap) else (item.id, item.json)


def test_the_spool_stays_bounded_over_a_long_session(tmp_path: Path) -> None:
    max_bytes, segment = 256 << 10, 64 << 10
    log = spilling(tmp_path, memory_bytes=4 << 10, max_bytes=max_bytes, segment=segment)
    largest = 0
    for n in range(20_000):  # 400 s of audio, ~28 MB of JSON
        log.append("audio", audio(n))
        largest = max(largest, log.spool_file_bytes())
    assert log.spooled > 0
    # Two files, each holding at most the window and a segment.
    assert largest <= 2 * (max_bytes + segment)
    assert len(files_into(tmp_path)) == 2
    taken, _ = read_all(log, log.oldest_id - 1)
    assert [item.id for item in taken] == list(range(log.oldest_id, 20_001))  # type: ignore[union-attr]
    log.close()


def test_no_file_is_left_and_none_stays_open_once_the_log_closes(tmp_path: Path) -> None:
    log = spilling(tmp_path)
    for n in range(200):
        log.append("audio", audio(n))
    assert log.spooled and files_into(tmp_path)
    assert os.listdir(tmp_path) == [], "the spool has no name"
    log.close()
    assert files_into(tmp_path) == []


def test_a_listener_still_behind_when_the_log_closes_reads_it_all_then_the_spool_goes(
    tmp_path: Path,
) -> None:
    log = spilling(tmp_path)
    behind = log.cursor(0)
    for n in range(300):
        log.append("audio", audio(n))
    log.append("conversation_ended", {})
    log.close()
    assert files_into(tmp_path), "kept for the listener still replaying"
    taken: list[Event | ReplayGap] = []
    while behind.next_id <= log.last_id:
        taken += behind.take()
    assert [item.id for item in taken] == list(range(1, 302))  # type: ignore[union-attr]
    assert files_into(tmp_path) == []


def test_a_mirror_spools_what_it_copies_and_forgets_it_after_a_gap(tmp_path: Path) -> None:
    source = in_memory()
    mirror = EventLog(keep_seconds=60, max_bytes=64 << 20, spill=Spill(8 << 10, str(tmp_path)))
    for n in range(300):
        event = source.append("audio", audio(n))
        mirror.copy_in(event.id, event.type, event.at, event.json)
    assert mirror.spooled > 250
    taken, _ = read_all(mirror, 0)
    assert [(e.id, e.json) for e in taken] == [  # type: ignore[union-attr]
        (e.id, e.json)
        for e in read_all(source, 0)[0]  # type: ignore[union-attr]
    ]
    mirror.copy_in(305, "transcript", 0.0, b"{}")
    assert mirror.spooled == 0
    assert read_all(mirror, 0)[0][0] == ReplayGap(requested_after=0, resumed_at=305)
    mirror.close()


def test_a_spool_that_cannot_be_opened_drops_the_oldest_events_instead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = spilling(tmp_path / "missing")
    with caplog.at_level(logging.WARNING, "voxrelay.eventlog"):
        for n in range(300):
            log.append("audio", audio(n))
    assert log.spooled == 0
    assert log._tail_bytes <= 8 << 10 and log._bytes == log._tail_bytes
    taken, _ = read_all(log, 0)
    assert taken[0] == ReplayGap(requested_after=0, resumed_at=log.oldest_id)
    assert [item.id for item in taken[1:]] == list(range(log.oldest_id, 301))  # type: ignore[union-attr]
    assert len([r for r in caplog.records if "replay spool" in r.getMessage()]) == 1
    log.close()


def test_a_full_disk_drops_the_oldest_events_and_spooling_resumes_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = spilling(tmp_path)
    cursor = log.cursor(0)
    for n in range(100):
        log.append("audio", audio(n))
    assert log.spooled > 50

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool.os, "pwrite", full)
    with caplog.at_level(logging.WARNING, "voxrelay.eventlog"):
        for n in range(100, 200):
            log.append("audio", audio(n))
    assert log.spooled == 0
    assert log._bytes == log._tail_bytes
    taken = cursor.take()
    assert taken[0] == ReplayGap(requested_after=0, resumed_at=log.oldest_id)
    assert [item.id for item in taken[1:]] == list(range(log.oldest_id, 201))  # type: ignore[union-attr]
    assert len([r for r in caplog.records if "replay spool" in r.getMessage()]) == 1
    monkeypatch.undo()
    for n in range(200, 300):
        log.append("audio", audio(n))
    assert log.spooled > 50
    assert [item.id for item in cursor.take()] == list(range(201, 301))  # type: ignore[union-attr]
    log.close()


def test_a_log_without_a_spill_keeps_everything_in_memory(tmp_path: Path) -> None:
    log = in_memory()
    for n in range(300):
        log.append("audio", audio(n))
    assert log.spooled == 0 and len(log._events) == 300
