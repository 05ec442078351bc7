"""What the browser tests of the web client share; their fixtures are in conftest.py.

The tests drive Debian's headless Chromium with Playwright against a real server
on the offline ``local`` provider, behind a proxy that can drop event streams.
Chromium's fake media devices feed a real speech recording as the microphone.
One server serves every web test, and one browser each module's; each test gets a fresh browser
context and a device token of its own, so its history is its own. The tests skip
when Chromium is not installed, and fail instead with ``VOXRELAY_REQUIRE_SERVICES=1``.
Every page's requests are logged: a request to anywhere but the server, or a
Content-Security-Policy refusal in its console, fails the test.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
from cutting_proxy import CuttingProxy
from harness import RunningServer, read_pcm

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def speech_wav(folder: Path) -> Path:
    """goforward.raw ("go forward ten meters") as the WAV Chromium's fake microphone
    wants: a second of quiet, the words, then two seconds of quiet."""
    pcm, rate = read_pcm("goforward.raw")
    path = folder / "goforward.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * rate + pcm + b"\0\0" * (rate * 2))
    return path


_SAID = {"go", "forward", "ten", "meters"}


def heard_the_recording(text: str) -> bool:
    """Whether a transcript is the recording's: pocketsphinx, on audio that went
    through a browser's capture, gets most of its four words (say three)."""
    return len(_SAID & set(text.lower().split())) >= 3


@dataclass
class WebServer:
    server: RunningServer
    proxy: CuttingProxy
    _names: Iterator[int] = field(default_factory=count)

    @property
    def url(self) -> str:
        """Where the browser goes: through the proxy."""
        return self.proxy.url

    def token(self) -> str:
        """A device token of a user of its own."""
        store = self.server.app.state.store
        _, token = self.server.call(store.create_token(f"browser-{next(self._names)}"))
        return str(token)

    def api(self, token: str) -> httpx.Client:
        """A client straight to the server (not through the proxy)."""
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


@dataclass
class Visit:
    """One browser context on the page, signed in with its own token."""

    page: Any
    token: str
    requests: list[Any]
    console: list[str]


# The page's own instrument, not part of it: every state the status line showed,
# and the loudest the level meter went.
WATCH_STATUS = """
window.__states = [];
window.__maxLevel = 0;
document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("status");
  const seen = () => {
    const state = status.dataset.state;
    if (window.__states[window.__states.length - 1] !== state) window.__states.push(state);
  };
  new MutationObserver(seen).observe(status, { attributes: true, childList: true });
  setInterval(() => {
    window.__maxLevel = Math.max(window.__maxLevel, document.getElementById("level").value);
  }, 20);
});
"""


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
