"""The web client in Debian's Firefox ESR (headless, over WebDriver BiDi), its
microphone and speakers a private PulseAudio server's: a real recording said into
the microphone is heard and answered, the answer plays, a typed Hebrew turn reads
right to left, the history lists the conversation, a phone-wide screen does not
scroll sideways, and the page asks nothing of anywhere else and breaks no policy."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from firefox_bidi import Firefox, PulseAudio
from services import require_program_or_skip
from web_pages import PHONE, WebServer, heard_the_recording, speech_wav

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def pulse(tmp_path: Path) -> Iterator[PulseAudio]:
    program = require_program_or_skip(
        "pulseaudio", "PulseAudio is not installed (apt-get install pulseaudio)"
    )
    require_program_or_skip("paplay", "paplay is not installed (apt-get install pulseaudio-utils)")
    server = PulseAudio(program, tmp_path / "pulse")
    yield server
    server.close()


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to its end in a thread of its own, whatever event loop this
    thread holds (Playwright's, while its sync API runs)."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


_LISTENING = "document.getElementById('status').dataset.state === 'listening'"


def _interrupts(browser: Firefox) -> list[str]:
    return [u for u in browser.requests if urlsplit(u).path == "/realtime/interrupt"]


def _dataset(name: str) -> str:
    return f"Number(document.body.dataset.{name} || 0)"


def test_a_conversation_in_firefox(
    pulse: PulseAudio, web_server: WebServer, tmp_path: Path
) -> None:
    program = require_program_or_skip(
        "firefox-esr", "Firefox is not installed (apt-get install firefox-esr)"
    )

    async def visit() -> None:
        browser = Firefox()
        await browser.start(program, tmp_path, pulse.env)
        try:
            await _conversation(browser, pulse, web_server, tmp_path)
        except BaseException:
            # What the page showed and asked, for the failure's report.
            print("transcript:", await browser.evaluate("document.getElementById('log').innerText"))
            print("requests:", [u for u in browser.requests if "/realtime/upload" not in u])
            raise
        finally:
            await browser.close()

    _run(visit())


async def _conversation(
    browser: Firefox, pulse: PulseAudio, web_server: WebServer, tmp_path: Path
) -> None:
    assert browser.capabilities["browserName"] == "firefox"
    token = web_server.token()
    await browser.goto(f"{web_server.url}/#token={token}")
    await browser.wait_for("document.body.dataset.ready === 'true'")
    assert await browser.evaluate("location.hash") == ""
    assert await browser.evaluate("document.getElementById('token').value") == token

    # Hands-free: said into the microphone, heard, answered aloud.
    await browser.evaluate("document.getElementById('main').click()", gesture=True)
    await browser.wait_for("document.getElementById('status').dataset.state === 'listening'")
    assert (
        await browser.evaluate("document.getElementById('main').textContent") == "End conversation"
    )
    # Said once the microphone is seen to deliver (its first uploads went up).
    await browser.wait_for(f"{_dataset('uploads')} >= 5")
    saying = pulse.say(speech_wav(tmp_path))
    said = await browser.wait_for(
        "document.querySelector('#log .turn.user[data-final=\"true\"] .bubble')?.textContent", 30
    )
    saying.wait(10)
    assert heard_the_recording(said), said
    answer = '#log .turn.assistant[data-final="true"] .bubble'
    assert (
        await browser.wait_for(f"document.querySelector('{answer}')?.textContent")
        == f"You said: {said}"
    )
    await browser.wait_for(f"{_dataset('audioSoundFrames')} >= 10")
    assert await browser.evaluate(_dataset("uploads")) > 10
    await browser.wait_for(_LISTENING)  # the answer played out

    # Typed, in Hebrew: laid out right to left.
    hebrew = "שלום, מה שלומך?"
    await browser.evaluate(
        f"document.getElementById('text').value = {json.dumps(hebrew)};"
        " document.getElementById('text-form').requestSubmit()",
        gesture=True,
    )
    expected = json.dumps(f"You said: {hebrew}")
    await browser.wait_for(
        f"[...document.querySelectorAll('{answer}')].some(e => e.textContent === {expected})"
    )
    last_user = "[...document.querySelectorAll('#log .turn.user .bubble')].pop()"
    direction = await browser.evaluate(f"getComputedStyle({last_user}).direction")
    assert direction == "rtl"
    await browser.wait_for(_LISTENING)

    # Spoken over: the answer stops, and the server hears how much of it was heard.
    long_text = (
        "read all of this back to me, every word of it, slowly and from the start to the end"
    )
    await browser.evaluate(
        f"document.getElementById('text').value = {json.dumps(long_text)};"
        " document.getElementById('text-form').requestSubmit()",
        gesture=True,
    )
    await browser.wait_for("document.getElementById('status').dataset.state === 'speaking'")
    before = len(_interrupts(browser))
    await browser.wait_for(f"{_dataset('audioSoundFrames')} >= 40")
    saying = pulse.say(speech_wav(tmp_path))
    await browser.wait_for("document.getElementById('status').dataset.state !== 'speaking'")
    saying.wait(10)
    interrupts = _interrupts(browser)[before:]
    assert interrupts, "the answer was spoken over without an interrupt"
    assert int(parse_qs(urlsplit(interrupts[0]).query)["playedMs"][0]) > 300
    assert await browser.evaluate(
        "document.querySelector('.turn[data-interrupted=\"true\"]') !== null"
    )

    conversation_id = await browser.evaluate("document.body.dataset.conversationId")
    await browser.evaluate("document.getElementById('main').click()", gesture=True)
    await browser.wait_for("document.getElementById('status').textContent === 'Conversation ended'")
    entry = f'#conversations button[data-id="{conversation_id}"]'
    await browser.wait_for(f"document.querySelector('{entry}')")

    await browser.set_viewport(PHONE["width"], PHONE["height"])
    await browser.wait_for(f"window.innerWidth === {PHONE['width']}")
    assert await browser.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    uploads = [u for u in browser.requests if urlsplit(u).path == "/realtime/upload"]
    seqs = [int(parse_qs(urlsplit(u).query)["seq"][0]) for u in uploads]
    assert seqs == list(range(len(seqs)))
    elsewhere = [u for u in browser.requests if not u.startswith(web_server.url + "/")]
    assert not elsewhere, elsewhere
    assert not browser.console, browser.console
