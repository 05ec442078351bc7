from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from harness import RunningServer
from node import CLIENT, JS_DIR, PACKAGES
from raw import RawSocket
from sock import Sock

from voxrelay.client import VoxrelayClient


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


@pytest.fixture
async def raw(server: RunningServer) -> AsyncIterator[Callable[[], Any]]:
    """Raw websocket clients joined to a new session each; all closed at the end."""
    made: list[RawSocket] = []
    token = await server.token()

    async def make() -> RawSocket:
        async with VoxrelayClient(server.url, token) as client:
            session = await client.create_session()
        sock = await RawSocket.open(server.url, token)
        made.append(sock)
        assert (await sock.call("join-session", {"sessionId": session["id"]}))["ok"]
        return sock

    yield make
    for sock in made:
        await sock.close()


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
