"""The session's event log and the cursors that read it."""

from __future__ import annotations

import asyncio
import gc

from voxrelay.eventlog import Event, EventLog, ReplayGap


def log_with(*types: str, max_bytes: int = 1 << 20) -> EventLog:
    log = EventLog(keep_seconds=60, max_bytes=max_bytes)
    for kind in types:
        log.append(kind, {"audio": "AAAA"} if kind == "audio" else {})
    return log


def ids(items: list[Event | ReplayGap]) -> list[int | str]:
    return [item.id if isinstance(item, Event) else "gap" for item in items]


async def test_a_cursor_takes_everything_pending_at_once() -> None:
    log = log_with("a", "b", "c")
    cursor = log.cursor(1)
    assert await cursor.wait()
    assert ids(cursor.take()) == [2, 3]
    assert cursor.take() == []
    log.append("d", {})
    assert ids(cursor.take()) == [4]


async def test_a_cursor_behind_the_trimmed_tail_gets_a_gap_then_the_oldest_held() -> None:
    log = EventLog(keep_seconds=60, max_bytes=3 * (128 + len(b"{}")))  # room for three
    for _ in range(6):
        log.append("transcript", {})
    cursor = log.cursor(0)
    taken = cursor.take()
    assert isinstance(taken[0], ReplayGap)
    assert taken[0].requested_after == 0
    assert taken[0].resumed_at == log.oldest_id == 4
    assert ids(taken) == ["gap", 4, 5, 6]


async def test_waiting_ends_with_the_next_append_and_false_once_closed() -> None:
    log = log_with("a")
    cursor = log.cursor(1)
    waiting = asyncio.create_task(cursor.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    log.append("b", {})
    assert await asyncio.wait_for(waiting, 1) is True
    assert ids(cursor.take()) == [2]
    closing = asyncio.create_task(cursor.wait())
    await asyncio.sleep(0)
    log.close()
    assert await asyncio.wait_for(closing, 1) is False


async def test_a_cursor_that_skips_audio_wakes_for_the_next_other_event_only() -> None:
    log = log_with("a")
    cursor = log.cursor(1)
    waiting = asyncio.create_task(cursor.wait(audio=False))
    await asyncio.sleep(0)
    for _ in range(3):
        log.append("audio", {"audio": "AAAA"})
        await asyncio.sleep(0)
    assert not waiting.done(), "woken by audio"
    log.append("response_done", {})
    assert await asyncio.wait_for(waiting, 1) is True
    # The audio is not lost: it is taken with the event that ended the wait.
    taken = cursor.take()
    assert [item.type for item in taken if isinstance(item, Event)] == [
        "audio",
        "audio",
        "audio",
        "response_done",
    ]


async def test_a_reader_gets_every_event_until_the_log_closes() -> None:
    log = log_with("a", "b")

    async def read() -> list[int | str]:
        cursor, taken = log.cursor(0), []
        while await cursor.wait():
            taken += cursor.take()
        return ids(taken)

    reading = asyncio.create_task(read())
    await asyncio.sleep(0)
    log.append("c", {})
    log.close()
    assert await asyncio.wait_for(reading, 1) == [1, 2, 3]


def test_frames_are_encoded_once() -> None:
    log = log_with("transcript")
    event = log.get(1)
    assert event is not None
    assert event.sse is event.sse
    assert event.sse == b"id: 1\r\nevent: transcript\r\ndata: {}\r\n\r\n"


def test_what_the_log_keeps_is_not_tracked_by_the_garbage_collector() -> None:
    log = log_with("audio", "transcript", "response_done")
    gc.collect()
    kept = list(log._events)
    assert kept and not any(gc.is_tracked(entry) for entry in kept)
    event = log.get(1)
    assert event is not None and event.data == {"audio": "AAAA"}


async def test_a_mirror_follows_the_ids_it_is_given_and_reports_a_gap() -> None:
    source = log_with("a", "b", "c", "d")
    mirror = EventLog(keep_seconds=60, max_bytes=1 << 20, last_id=1)
    cursor = mirror.cursor(1)
    for event_id in (2, 3):
        event = source.get(event_id)
        assert event is not None
        mirror.copy_in(event.id, event.type, event.at, event.json)
    assert [(e.id, e.data) for e in cursor.take() if isinstance(e, Event)] == [(2, {}), (3, {})]
    late = mirror.cursor(3)
    mirror.copy_in(6, "e", 0.0, b'{"x":1}')  # 4 and 5 never came
    taken = late.take()
    assert isinstance(taken[0], ReplayGap) and taken[0].resumed_at == 6
    assert ids(taken[1:]) == [6]


async def test_a_cursor_from_now_or_past_the_newest_event_takes_only_what_comes_next() -> None:
    log = EventLog(keep_seconds=60, max_bytes=1 << 20)
    for n in range(3):
        log.append("n", {"n": n})
    now, ahead = log.cursor(), log.cursor(99)
    assert (now.head, now.next_id, ahead.next_id) == (3, 4, 4)
    log.append("n", {"n": 3})
    assert [e.id for e in now.take()] == [4]  # type: ignore[union-attr]
    assert [e.id for e in ahead.take()] == [4]  # type: ignore[union-attr]


async def test_a_stopped_cursor_ends_its_wait() -> None:
    log = EventLog(keep_seconds=60, max_bytes=1 << 20)
    cursor = log.cursor()
    waiting = asyncio.ensure_future(cursor.wait())
    await asyncio.sleep(0)
    cursor.stop()
    assert await asyncio.wait_for(waiting, 1) is False
