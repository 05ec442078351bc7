"""What WebSocket permessage-deflate costs a relay per 20 ms audio event.

Most WebSocket clients offer permessage-deflate (the ``websockets`` library the
OpenAI SDK speaks through does, and so do browsers); a server that accepts it
compresses every frame it sends and decompresses every frame it gets. For a
relay, nearly every frame is base64 audio in JSON. This measures, in one run,
the server's framing of real speech as the relay's events carry it, both
ways, through the ``websockets`` library's own extension with the parameters
uvicorn accepts it with (12-bit windows, ``memLevel`` 5), against the same
framing without the extension; and the bytes each way saves.

    uv run --group bench python benchmarks/websocket_compression.py
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from voxrelay.audio import StreamResampler

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
RATE = 24000
CHUNK = RATE // 50 * 2  # 20 ms of PCM16


def _events(seconds: float) -> tuple[list[bytes], list[bytes]]:
    """The speech recordings, looped to ``seconds``, as the relay's events carry them:
    answer audio out (GA ``response.output_audio.delta``), appends in."""
    speech = b""
    for name in ("goforward.raw", "numbers.raw"):
        path = SPEECH / name
        if not path.exists():
            sys.exit(f"{path} is missing: the speech recordings sit in ../shared/data/speech")
        resampler = StreamResampler(16000, RATE)
        speech += resampler.feed(path.read_bytes()) + resampler.flush()
    needed = int(seconds * RATE * 2)
    pcm = (speech * (needed // len(speech) + 1))[:needed]
    out, into = [], []
    for index in range(0, len(pcm) - CHUNK + 1, CHUNK):
        audio = base64.b64encode(pcm[index : index + CHUNK]).decode()
        out.append(
            orjson.dumps(
                {
                    "type": "response.output_audio.delta",
                    "event_id": f"event_vx{index:08d}",
                    "response_id": "resp_0123456789abcdef",
                    "item_id": "item_0123456789abcdef",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": audio,
                }
            )
        )
        into.append(orjson.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    return out, into


def _deflate() -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """A server's extension and its client's, as uvicorn accepts the offer."""
    server = PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})
    client = PerMessageDeflate(False, False, 12, 12)
    return server, client


def _per_event(run: Callable[[], int], events: int, repeat: int) -> tuple[float, int]:
    """The median over ``repeat`` runs of µs per event, and the bytes of one run."""
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = run()
        times.append((time.perf_counter() - start) / events * 1e6)
    return statistics.median(times), size


def measure(seconds: float, repeat: int) -> dict[str, float]:
    out, into = _events(seconds)
    # The client's side, done once beforehand: what the server receives.
    _, client = _deflate()
    sent_in = [client.encode(Frame(Opcode.TEXT, event)) for event in into]
    raw_in = [Frame(Opcode.TEXT, event) for event in into]

    def plain() -> int:
        size = 0
        for event in out:
            size += len(Frame(Opcode.TEXT, event).serialize(mask=False, extensions=[]))
        for frame in raw_in:
            size += len(frame.data)
        return size

    def deflated() -> int:
        server, _ = _deflate()  # fresh: its contexts start where the client's did
        size = 0
        for event in out:
            size += len(Frame(Opcode.TEXT, event).serialize(mask=False, extensions=[server]))
        for frame in sent_in:
            server.decode(frame)
            size += len(frame.data)
        return size

    plain_us, plain_bytes = _per_event(plain, len(out), repeat)
    deflate_us, deflate_bytes = _per_event(deflated, len(out), repeat)
    return {
        "events": len(out),
        "plain_us_per_chunk": plain_us,
        "deflate_us_per_chunk": deflate_us,
        "added_us_per_chunk": deflate_us - plain_us,
        "bytes_ratio": deflate_bytes / plain_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of audio")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, median")
    args = parser.parse_args()
    result = measure(args.seconds, args.repeat)
    print(
        f"{result['events']} chunk round trips (an answer event out, an append in) of real"
        " speech at 24 kHz"
    )
    print(
        f"server framing per chunk: {result['plain_us_per_chunk']:.1f} µs without"
        f" permessage-deflate, {result['deflate_us_per_chunk']:.1f} µs with it"
        f" (+{result['added_us_per_chunk']:.1f} µs); bytes on the wire"
        f" {result['bytes_ratio']:.2f} of uncompressed"
    )


if __name__ == "__main__":
    main()
