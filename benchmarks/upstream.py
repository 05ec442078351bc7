"""A realtime echo upstream for benchmarks, speaking the OpenAI Realtime (GA)
protocol: every appended audio chunk is answered at once with an audio delta
of the same samples, so audio flows both ways continuously, and every
arrival and departure is timestamped (``time.monotonic()``, which all
processes on the machine share).

Run it as ``python benchmarks/upstream.py --port P``; a ``dump`` message on
``/control`` answers with the timestamps recorded so far, keyed by each
connection's tag (the ``instructions`` of its ``session.update``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import time
from collections import defaultdict
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

# tag -> {"in": [[t, cumulative_bytes], ...], "out": [...], "commit": [...], "first": [...]}
RECORDS: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _session(instructions: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_bench",
        "model": "bench",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": pcm, "turn_detection": None, "transcription": None},
            "output": {"format": pcm, "voice": "alloy"},
        },
    }


async def handle(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path.startswith("/control"):
        async for _ in ws:
            await ws.send(json.dumps(RECORDS))
        return
    counter = 0
    tag = "untagged"
    session = _session("")
    received = sent = 0
    response_id = item_id = ""
    await ws.send(_dumps({"type": "session.created", "event_id": "ev_0", "session": _session("")}))
    async for message in ws:
        now = time.monotonic()
        event = json.loads(message)
        kind = event.get("type")
        counter += 1
        if kind == "input_audio_buffer.append":
            try:
                pcm = base64.b64decode(event["audio"])
            except (binascii.Error, KeyError):
                continue
            received += len(pcm)
            RECORDS[tag]["in"].append([now, received])
            if not response_id:
                response_id, item_id = f"resp_{counter}", f"item_{counter}"
                await ws.send(_dumps(_response_created(response_id, counter)))
            sent += len(pcm)
            # One delta per chunk, the samples unchanged: what a model streaming
            # its answer at the pace it is spoken to looks like.
            await ws.send(
                f'{{"type":"response.output_audio.delta","event_id":"ev_{counter}",'
                f'"response_id":"{response_id}","item_id":"{item_id}","output_index":0,'
                f'"content_index":0,"delta":"{event["audio"]}"}}'
            )
            RECORDS[tag]["out"].append([time.monotonic(), sent])
        elif kind == "session.update":
            _merge(session, event.get("session") or {})
            tag = session.get("instructions") or tag
            await ws.send(
                _dumps({"type": "session.updated", "event_id": f"ev_{counter}", "session": session})
            )
        elif kind == "input_audio_buffer.commit":
            RECORDS[tag]["commit"].append([now, received])
            # A new answer begins now: its first audio goes out at once.
            response_id, item_id = f"resp_{counter}", f"item_{counter}"
            await ws.send(_dumps(_response_created(response_id, counter)))
            chunk = base64.b64encode(b"\x01\x00" * 480).decode()
            await ws.send(
                _dumps(
                    {
                        "type": "response.output_audio.delta",
                        "event_id": f"ev_{counter}",
                        "response_id": response_id,
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": chunk,
                    }
                )
            )
            sent += 960
            RECORDS[tag]["first"].append([time.monotonic(), sent])
            RECORDS[tag]["out"].append([time.monotonic(), sent])


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply a session.update the way the real service does: field by field."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _response_created(response_id: str, counter: int) -> dict[str, Any]:
    return {
        "type": "response.created",
        "event_id": f"ev_{counter}",
        "response": {
            "id": response_id,
            "object": "realtime.response",
            "status": "in_progress",
            "output": [],
        },
    }


async def main(port: int) -> None:
    async with serve(handle, "127.0.0.1", port, max_size=None, compression=None) as server:
        print("ready", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.port))
