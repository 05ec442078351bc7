"""The npm socket.io-client, driven through tests/socketio/js/client.mjs (see there)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from harness import RunningServer, speech_file

JS_DIR = Path(__file__).resolve().parent / "js"
CLIENT = JS_DIR / "client.mjs"
PACKAGES = {"v4": "socket.io-client", "v3": "socket.io-client-v3"}


async def run_client(
    server: RunningServer, token: str, session_id: str, version: str, transports: str
) -> tuple[int, list[dict[str, Any]], str]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENT),
        server.url,
        token,
        session_id,
        version,
        transports,
        str(speech_file("goforward.raw")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        raise
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return process.returncode or 0, lines, err.decode()
