from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from node import CLIENT, JS_DIR, PACKAGES
from sock import Sock


@pytest.fixture
async def socks() -> AsyncIterator[Callable[[str], Sock]]:
    made: list[Sock] = []

    def make(transport: str = "websocket") -> Sock:
        sock = Sock(transport)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        try:
            await sock.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def node_client() -> Path:
    """client.mjs with its node_modules, installed once per test session."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the npm socket.io-client")
    if not all(
        (JS_DIR / "node_modules" / name / "package.json").exists() for name in PACKAGES.values()
    ):
        command = "ci" if (JS_DIR / "package-lock.json").exists() else "install"
        result = subprocess.run(
            [npm, command, "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"npm {command} failed:\n{result.stdout}\n{result.stderr}"
    return CLIENT
