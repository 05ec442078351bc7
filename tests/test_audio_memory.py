"""A session's resampler stays the same size whatever the size of the chunks it is
given: soxr's own buffers grow to the largest chunk a stream has seen and keep that
size, so a client (or an upstream) sending a second of audio at once would
otherwise leave every such session's resampler holding ~200 KiB for good.

Measured as the resident memory a fresh process grows by per resampler, each given
three seconds of noise, in 20 ms chunks or in 1 s chunks. The figures themselves
(and soxr's without the bound) are in benchmarks/resampler.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

_STREAMS = 200
_GROWTH_PER_STREAM = """
import sys
import numpy as np
from voxrelay.audio import StreamResampler

in_rate, out_rate, chunk_ms = map(int, sys.argv[1:])
chunk = np.random.default_rng(7).integers(-8000, 8000, in_rate * chunk_ms // 1000)
data = chunk.astype("<i2").tobytes()

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

for resampler in [StreamResampler(in_rate, out_rate) for _ in range(10)]:
    resampler.feed(data)
before = resident()
held = [StreamResampler(in_rate, out_rate) for _ in range({streams})]
for resampler in held:
    for _ in range(3000 // chunk_ms):
        resampler.feed(data)
print((resident() - before) / len(held))
""".replace("{streams}", str(_STREAMS))


def _growth_per_resampler(in_rate: int, out_rate: int, chunk_ms: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _GROWTH_PER_STREAM, str(in_rate), str(out_rate), str(chunk_ms)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 24000), (24000, 16000)])
def test_a_second_long_chunk_leaves_the_resampler_the_size_short_chunks_do(
    in_rate: int, out_rate: int
) -> None:
    short = _growth_per_resampler(in_rate, out_rate, 20)
    long = _growth_per_resampler(in_rate, out_rate, 1000)
    # Unbounded, the 1 s chunks grow soxr's buffers to about five times the 20 ms size.
    assert long < 1.5 * short, f"{long / 1024:.0f} KiB against {short / 1024:.0f} KiB"
