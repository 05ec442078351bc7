"""A real HTTP tool server on loopback for the tool tests: it stands in for the
services an operator's tools call (a caregiver-alert service, a slow one, a broken
one), and records every request it gets."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

KEY = "sk-upstream-secret-key"
CAREGIVER_TOKEN = "caregiver-secret-7f3a"
_CALL = re.compile(r"^call (\S+) (\{.*\})$")


def called(user_text: str, tools: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The fake model's choice: ``call NAME {json}`` calls NAME (declared or not)."""
    match = _CALL.match(user_text.strip())
    if match is None:
        return None
    return match.group(1), json.loads(match.group(2))


def call_text(name: str, **arguments: Any) -> str:
    """What the user says to have the fake model call ``name``."""
    return f"call {name} {json.dumps(arguments)}"


@dataclass(frozen=True)
class ToolRequest:
    path: str
    headers: dict[str, str]
    body: Any


class ToolServer:
    """``/alert`` answers ``{"sent": true, ...}`` with what it was sent; ``/slow`` waits
    ``slow_seconds`` first; ``/broken`` answers 500; ``/garbage`` answers HTML."""

    def __init__(self) -> None:
        self.requests: list[ToolRequest] = []
        self.slow_seconds = 2.0
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with owner._lock:
                    owner.requests.append(ToolRequest(self.path, headers, body))
                if self.path == "/slow":
                    time.sleep(owner.slow_seconds)
                if self.path == "/broken":
                    self._answer(500, b'{"error": "boom"}', "application/json")
                elif self.path == "/garbage":
                    self._answer(200, b"<html>not json</html>", "text/html")
                else:
                    answer = {"sent": True, "received": body}
                    self._answer(200, json.dumps(answer).encode(), "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the caller gave up waiting (a timeout)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ToolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, path: str) -> list[ToolRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


ALERT_PARAMETERS = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "urgency": {"type": "string", "enum": ["low", "high"]},
    },
    "required": ["message", "urgency"],
    "additionalProperties": False,
}


def toml_value(value: Any) -> str:
    """A JSON-like value written as TOML (inline tables, arrays, basic strings)."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def tools_file(folder: Path, server: ToolServer, *, extra: str = "") -> Path:
    """A tools file (TOML) for the tool server: the caregiver alert, and tools that time
    out, fail and answer garbage."""
    schema = toml_value(ALERT_PARAMETERS)
    entries = []
    for name, path, timeout in (
        ("alert_caregiver", "/alert", 5),
        ("slow_lookup", "/slow", 0.5),
        ("broken_lookup", "/broken", 5),
        ("garbage_lookup", "/garbage", 5),
    ):
        entries.append(
            f"""[[tools]]
name = "{name}"
description = "Tell the user's caregiver something."
parameters = {schema}
url = "{server.url}{path}"
headers = {{ Authorization = "Bearer ${{CAREGIVER_TOKEN}}" }}
timeout_s = {timeout}
"""
        )
    path = folder / "tools.toml"
    path.write_text("\n".join(entries) + extra)
    return path
