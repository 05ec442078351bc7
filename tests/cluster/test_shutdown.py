"""A node told to stop (SIGTERM) exits in bounded time even when a part it shuts
down hangs, and its log names that part."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from services import require_program_or_skip
from test_cluster import VOXRELAY, _free_port


def _wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except (httpx.TransportError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(what)


def test_a_node_whose_redis_stops_answering_still_exits_on_sigterm(tmp_path: Path) -> None:
    redis_server = require_program_or_skip("redis-server", "redis-server is not installed")
    redis_port, port = _free_port(), _free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    log = tmp_path / "node.log"
    node = None
    try:
        _wait_for(
            lambda: socket.create_connection(("127.0.0.1", redis_port), 0.2).close() is None,
            10,
            "the private Redis did not start",
        )
        env = {
            **os.environ,
            "VOXRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'node.db'}",
            "VOXRELAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "VOXRELAY_PROVIDER": "echo",
            "VOXRELAY_LOG_FORMAT": "text",
        }
        node = subprocess.Popen(
            [VOXRELAY, "serve", "--port", str(port)],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/readyz"
        _wait_for(lambda: httpx.get(url).status_code == 200, 60, "the node did not start")
        # Redis still holds its connections but answers nothing: calls to it hang.
        redis.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        node.send_signal(signal.SIGTERM)
        try:
            code = node.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("the node did not exit:\n" + log.read_text()) from None
        took = time.monotonic() - started
        text = log.read_text()
        assert code == 0, text
        assert "leaving the cluster did not finish within" in text, text
        assert took < 25, f"{took:.1f} s"
    finally:
        if node is not None and node.poll() is None:
            node.kill()
            node.wait(10)
        redis.send_signal(signal.SIGCONT)
        redis.kill()
        redis.wait(10)
