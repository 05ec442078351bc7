"""How long the offline ``local`` provider takes to answer a spoken turn: from the
end of speech (its ``SpeechStopped``) to the user's final transcript and to the
first audio of the answer, on a process's first turn (cold: the speech model
still loading, as on a server's first conversation) and on the turns after it
(warm), in the same run.

Each process (this file with ``--measure``) opens one ``LocalProvider`` with no
chat model (it answers "You said: ..."), then streams ``goforward.raw`` ("go
forward ten meters") and a second of silence in real time, 20 ms at a time, as
a watch does, and waits for the answer to end before the next turn. Its first
turn starts the moment the provider is open, so it waits for whatever of the
speech model's loading (``decoder_pool().prewarm``) is still going on; the
process also reports when that loading ended. A server started with
``--provider local`` loads the model at start-up (``providers.provider_factory``),
so its users see the warm figure unless they speak within a second or two of
the start.

    uv run --frozen python benchmarks/local_turn.py
    uv run --frozen python benchmarks/local_turn.py --processes 5 --turns 4 --out turn.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from relay import speech

RATE = 16000
CHUNK_MS = 20
TRAILING_SILENCE_MS = 1000


# -- one process -----------------------------------------------------------------------


async def _measure(turns: int) -> dict[str, Any]:
    from voxrelay.events import (
        AudioDelta,
        ModelEvent,
        ResponseDone,
        SpeechStopped,
        TranscriptDone,
    )
    from voxrelay.providers._recognition import decoder_pool
    from voxrelay.providers.base import SessionOptions
    from voxrelay.providers.local import LocalProvider

    events: list[tuple[float, ModelEvent]] = []
    changed = asyncio.Event()

    def collect(event: ModelEvent) -> None:
        events.append((time.monotonic(), event))
        changed.set()

    async def until_done(seen: int) -> None:
        async with asyncio.timeout(60):
            while not any(isinstance(e, ResponseDone) for _, e in events[seen:]):
                changed.clear()
                await changed.wait()

    pcm = speech() + b"\0\0" * (RATE * TRAILING_SILENCE_MS // 1000)
    step = RATE * CHUNK_MS // 1000 * 2
    provider = LocalProvider()
    opened = time.monotonic()
    await provider.open(SessionOptions(), [], collect)
    # A second prewarm returns once the loading that the open started has ended.
    loaded: list[float] = []
    loading = asyncio.get_running_loop().run_in_executor(None, decoder_pool().prewarm)
    loading.add_done_callback(lambda _: loaded.append(time.monotonic()))
    results = []
    for _ in range(turns):
        seen = len(events)
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            await provider.send_audio(pcm[offset : offset + step])
            due = start + (index + 1) * CHUNK_MS / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await until_done(seen)
        turn = events[seen:]
        stopped = next(t for t, e in turn if isinstance(e, SpeechStopped))
        text_at, text = next(
            (t, e.text) for t, e in turn if isinstance(e, TranscriptDone) and e.role == "user"
        )
        audio_at = next(t for t, e in turn if isinstance(e, AudioDelta))
        results.append(
            {
                "heard": text,
                "to_transcript_ms": (text_at - stopped) * 1000,
                "to_first_audio_ms": (audio_at - stopped) * 1000,
            }
        )
    await provider.close()
    return {
        "model_loaded_after_open_ms": (loaded[0] - opened) * 1000 if loaded else None,
        "turns": results,
    }


# -- the parent ------------------------------------------------------------------------


def _run_process(turns: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", "--turns", str(turns)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"a measuring process failed:\n{done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _summary(processes: list[dict[str, Any]]) -> dict[str, Any]:
    cold = [p["turns"][0] for p in processes]
    warm = [t for p in processes for t in p["turns"][1:]]
    summary: dict[str, Any] = {"processes": processes}
    for figure in ("to_transcript_ms", "to_first_audio_ms"):
        summary[figure] = {
            "cold": _spread([t[figure] for t in cold]),
            "warm": _spread([t[figure] for t in warm]),
        }
        summary[figure]["cold_over_warm"] = (
            summary[figure]["cold"]["median"] / summary[figure]["warm"]["median"]
        )
    loaded = [p["model_loaded_after_open_ms"] for p in processes]
    summary["model_loaded_after_open_ms"] = _spread([v for v in loaded if v is not None])
    summary["heard"] = sorted({t["heard"] for p in processes for t in p["turns"]})
    return summary


def _print(summary: dict[str, Any]) -> None:
    print("end of speech ->        cold (first turn)         warm (later turns)     cold/warm")
    names = {"to_transcript_ms": "user transcript", "to_first_audio_ms": "first audio"}
    for figure, name in names.items():
        cold, warm = summary[figure]["cold"], summary[figure]["warm"]
        print(
            f"{name:<18} {cold['median']:7.0f} ms ({cold['min']:.0f}-{cold['max']:.0f})"
            f"   {warm['median']:9.0f} ms ({warm['min']:.0f}-{warm['max']:.0f})"
            f"   {summary[figure]['cold_over_warm']:8.2f}x"
        )
    loaded = summary["model_loaded_after_open_ms"]
    print(
        f"speech model loaded {loaded['median']:.0f} ms after open "
        f"({loaded['min']:.0f}-{loaded['max']:.0f}); heard: {summary['heard']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=3, help="fresh processes (cold turns)")
    parser.add_argument("--turns", type=int, default=3, help="turns per process, the first cold")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns < 2:
        parser.error("--turns must be at least 2: one cold turn and a warm one")
    if args.measure:
        print(json.dumps(asyncio.run(_measure(args.turns))))
        return
    summary = _summary([_run_process(args.turns) for _ in range(args.processes)])
    _print(summary)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
