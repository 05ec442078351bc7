"""Debian's Firefox ESR, headless, driven over WebDriver BiDi (the W3C protocol
Firefox speaks itself: no geckodriver, no browser build of Playwright's), and a
private PulseAudio server for it to play into and record from.

Only what the web client's tests need: open a page, evaluate script in it (with a
user's activation where the page needs a gesture, as for sound), set the viewport,
and keep the console entries and the URLs of every request the page made."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import websockets

# A test profile that asks nothing of the network and lets the page use the
# microphone (PulseAudio's) without a prompt.
PREFS: Mapping[str, Any] = {
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.update.disabledForTesting": True,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "extensions.update.enabled": False,
    "browser.newtabpage.enabled": False,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PulseAudio:
    """A PulseAudio server of its own, in ``folder``: a sink ``speakers`` that
    programs play into, and a sink ``microphone`` whose monitor is what programs
    record; :meth:`say` plays a WAV file into the microphone."""

    def __init__(self, program: str, folder: Path) -> None:
        runtime = folder / "runtime"
        runtime.mkdir(mode=0o700, parents=True)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(folder)}
        self.env["PULSE_SERVER"] = f"unix:{runtime / 'pulse' / 'native'}"
        self.process = subprocess.Popen(
            [
                program,
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink sink_name=speakers",
                "--load=module-null-sink sink_name=microphone",
                "--log-target=stderr",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self._pactl("info").returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("PulseAudio did not start")
            time.sleep(0.05)
        self._pactl("set-default-sink", "speakers")
        self._pactl("set-default-source", "microphone.monitor")

    def _pactl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, check=False)

    def say(self, wav: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["paplay", "--device=microphone", str(wav)], env=self.env)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class Firefox:
    def __init__(self) -> None:
        self.console: list[str] = []
        self.requests: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    async def start(self, program: str, folder: Path, env: Mapping[str, str]) -> None:
        profile = folder / "profile"
        profile.mkdir()
        prefs = "".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in PREFS.items())
        (profile / "user.js").write_text(prefs)
        port = _free_port()
        self.process = await asyncio.create_subprocess_exec(
            program,
            "--headless",
            "--no-remote",
            "--profile",
            str(profile),
            f"--remote-debugging-port={port}",
            env=dict(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            while b"WebDriver BiDi listening" not in await self.process.stdout.readline():
                pass
        self._drain = asyncio.ensure_future(self._discard(self.process.stdout))
        self.socket = await websockets.connect(f"ws://127.0.0.1:{port}/session", max_size=None)
        self._reader = asyncio.ensure_future(self._read())
        self.capabilities = (await self.call("session.new", {"capabilities": {}}))["capabilities"]
        await self.call(
            "session.subscribe", {"events": ["log.entryAdded", "network.beforeRequestSent"]}
        )
        tree = await self.call("browsingContext.getTree", {})
        self.context = tree["contexts"][0]["context"]

    async def call(self, method: str, params: Mapping[str, Any]) -> Any:
        number = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        await self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        async with asyncio.timeout(30):
            return await answer

    async def goto(self, url: str) -> None:
        await self.call(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    async def evaluate(self, expression: str, *, gesture: bool = False) -> Any:
        """The value of ``expression`` (awaited if a promise): a string, number or boolean."""
        result = await self.call(
            "script.evaluate",
            {
                "expression": expression,
                "target": {"context": self.context},
                "awaitPromise": True,
                "userActivation": gesture,
            },
        )
        if result["type"] == "exception":
            raise AssertionError(result["exceptionDetails"]["text"])
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise AssertionError(f"never true: {expression}")
            await asyncio.sleep(0.05)
        return value

    async def set_viewport(self, width: int, height: int) -> None:
        viewport = {"width": width, "height": height}
        await self.call(
            "browsingContext.setViewport", {"context": self.context, "viewport": viewport}
        )

    async def close(self) -> None:
        try:
            await self.call("browser.close", {})
        except Exception:
            pass
        await self.socket.close()
        self._reader.cancel()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._drain.cancel()

    async def _read(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if "id" in message and message["id"] in self._waiting:
                answer = self._waiting.pop(message["id"])
                if message.get("type") == "error":
                    answer.set_exception(
                        AssertionError(f"{message['error']}: {message['message']}")
                    )
                else:
                    answer.set_result(message["result"])
            elif message.get("method") == "log.entryAdded":
                self.console.append(str(message["params"].get("text")))
            elif message.get("method") == "network.beforeRequestSent":
                self.requests.append(message["params"]["request"]["url"])

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass
