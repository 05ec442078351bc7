"""What a session's resampler costs in memory and CPU, by the size of the chunks it
is given: voxrelay's ``StreamResampler`` (which hands soxr at most 20 ms at 24 kHz
at a time) against soxr's own stream given each chunk whole, in the same run.

Chunk sizes: 20 ms (a client's usual chunk, and what the relay benchmark's echo
upstream answers with), 200 ms and 1 s (an upstream's answer delta, a client
that sends bigger chunks, a chunked upload read that came in at once). Each
figure is measured in a fresh process (this file with ``--measure``): resident
memory growth per stream over ``--streams`` streams, each given three seconds of
audio in chunks of that size, and CPU time per second of audio resampled.

    uv run --frozen python benchmarks/resampler.py
    uv run --frozen python benchmarks/resampler.py --streams 500 --out resampler.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHUNK_MS = (20, 200, 1000)
WAYS = ("StreamResampler", "soxr whole")
DIRECTIONS = ((16000, 24000), (24000, 16000))
# Enough for soxr's buffers to reach their steady size at every chunk size.
AUDIO_SECONDS_PER_STREAM = 3


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def _measure(
    way: str, in_rate: int, out_rate: int, chunk_ms: int, streams: int
) -> dict[str, float]:
    import numpy as np
    import soxr

    from voxrelay.audio import RESAMPLER_QUALITY, StreamResampler

    noise = np.random.default_rng(7).integers(-8000, 8000, in_rate * chunk_ms // 1000)
    chunk = noise.astype("<i2")
    data = chunk.tobytes()

    def make() -> Any:
        if way == "StreamResampler":
            return StreamResampler(in_rate, out_rate)
        return soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=RESAMPLER_QUALITY)

    def feed(stream: Any) -> None:
        if way == "StreamResampler":
            stream.feed(data)
        else:
            bytes(stream.resample_chunk(chunk).data)

    for stream in [make() for _ in range(10)]:  # the library's one-time allocations
        feed(stream)
    before = _resident_bytes()
    held = [make() for _ in range(streams)]
    started = time.process_time()
    chunks = AUDIO_SECONDS_PER_STREAM * 1000 // chunk_ms
    for stream in held:
        for _ in range(chunks):
            feed(stream)
    cpu = time.process_time() - started
    grown = _resident_bytes() - before
    audio_seconds = streams * AUDIO_SECONDS_PER_STREAM
    return {
        "kib_per_stream": grown / streams / 1024,
        "us_per_audio_second": cpu / audio_seconds * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300, help="streams per figure")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        way, in_rate, out_rate, chunk_ms = args.measure
        figures = _measure(way, int(in_rate), int(out_rate), int(chunk_ms), args.streams)
        print(json.dumps(figures))
        return
    rows = []
    print(
        f"{'rates':<13} {'chunk':>7}   "
        + "   ".join(f"{way:>28}" for way in WAYS)
        + "   memory ratio"
    )
    for in_rate, out_rate in DIRECTIONS:
        for chunk_ms in CHUNK_MS:
            row: dict[str, Any] = {"in_rate": in_rate, "out_rate": out_rate, "chunk_ms": chunk_ms}
            for way in WAYS:
                done = subprocess.run(
                    [sys.executable, __file__, "--streams", str(args.streams), "--measure",
                     way, str(in_rate), str(out_rate), str(chunk_ms)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                if done.returncode != 0:
                    raise SystemExit(f"a measuring process failed:\n{done.stderr.strip()}")
                row[way] = json.loads(done.stdout)
            rows.append(row)
            cells = "   ".join(
                f"{row[way]['kib_per_stream']:7.1f} KiB {row[way]['us_per_audio_second']:8.0f} µs/s"
                for way in WAYS
            )
            baseline = row[WAYS[1]]["kib_per_stream"]
            ratio = f"{row[WAYS[0]]['kib_per_stream'] / baseline:6.2f}x" if baseline > 0 else "-"
            print(f"{in_rate}->{out_rate:<6} {chunk_ms:>5}ms   {cells}   {ratio}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
