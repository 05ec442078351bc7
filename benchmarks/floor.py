"""The node floor: ``node_floor/relay.mjs``, a verbatim WebSocket relay on Node's
``ws`` package, started in front of the benchmark's echo upstream. It is the
leanest relay of the OpenAI-compatible WebSocket the benchmark's ``ws`` client
speaks: what voxrelay costs above it is what voxrelay does besides relaying.

``start`` installs its packages (``npm ci``) when they are missing or older than
``package-lock.json``, starts it, and gives either the running floor or the
reason it could not."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "node_floor"
NAME = "node-floor"


@dataclass
class Floor:
    process: subprocess.Popen[str]
    url: str
    native_masking: bool

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process, 10)


def stop_process(process: subprocess.Popen[Any], patience: float) -> None:
    """SIGTERM, then SIGKILL after ``patience`` seconds (the relay's nodes too)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(patience)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _installed() -> bool:
    # npm writes this after every install; a lock file changed since wants a new one.
    marker = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


def _install(npm: str) -> str | None:
    """``npm ci``; the reason it failed, if it did."""
    # No install scripts: bufferutil's only compiles what its prebuilt binary makes unneeded.
    command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        done = subprocess.run(
            command, cwd=HERE, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"npm ci in {HERE} failed: {error}"
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        return f"npm ci in {HERE} failed (exit {done.returncode}): {last[0]}"
    return None


def start(upstream_url: str, api_key: str, log: Path) -> Floor | str:
    """The floor relaying to ``upstream_url``, or why it is not there."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return f"{'node' if node is None else 'npm'} is not on PATH"
    if not _installed():
        failure = _install(npm)
        if failure is not None:
            return failure
    process = subprocess.Popen(
        [node, str(HERE / "relay.mjs"), "--upstream", upstream_url, "--port", "0"],
        cwd=HERE,
        env={**os.environ, "OPENAI_API_KEY": api_key},
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().split()
    if len(line) < 2 or line[0] != "listening":
        process.kill()
        process.wait(5)
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        return f"node relay.mjs did not start: {tail[0]}"
    return Floor(process, f"http://127.0.0.1:{int(line[1])}", "native-masking=yes" in line)
