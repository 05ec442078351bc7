"""Fixtures of the browser tests: one server (behind a proxy that can drop event
streams) for every web test, one headless Chromium per module that drives it; a
fresh context per visit. See web_pages.py."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent.parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from cutting_proxy import CuttingProxy  # noqa: E402
from harness import start_server  # noqa: E402
from services import require_program_or_skip  # noqa: E402
from web_pages import CHROMIUM_ARGS, DESKTOP, WATCH_STATUS, Visit, WebServer, speech_wav  # noqa: E402

from voxrelay.config import Settings  # noqa: E402


@pytest.fixture(scope="session")
def chromium() -> str:
    return require_program_or_skip(
        "chromium", "Chromium is not installed (apt-get install chromium)"
    )


@pytest.fixture(scope="session")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    folder = tmp_path_factory.mktemp("web")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{folder / 'voxrelay.db'}",
        provider="local",
    )
    server = start_server(settings)
    proxy = CuttingProxy(int(server.url.rsplit(":", 1)[1]))
    try:
        yield WebServer(server, proxy)
    finally:
        proxy.close()
        server.stop()


# Per module, not per session: while Playwright's sync API runs, it keeps its event
# loop marked as running in this thread, so an async test after it could not start
# a loop of its own. Closed with its module, it leaves the thread as it found it,
# and the web tests may run in any order with the rest.
@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import asyncio

    from playwright.sync_api import sync_playwright

    wav = speech_wav(tmp_path_factory.mktemp("speech"))
    with sync_playwright() as playwright:
        # %noloop: the recording is said once per microphone opened, then quiet.
        args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}%noloop"]
        launched = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            yield launched
        finally:
            launched.close()
    assert asyncio._get_running_loop() is None, "Playwright left its event loop running"


@pytest.fixture
def visit(browser: Any, web_server: WebServer) -> Iterator[Callable[..., Visit]]:
    contexts: list[Any] = []
    visits: list[Visit] = []

    def open_page(viewport: dict[str, int] = DESKTOP, token: str | None = None) -> Visit:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        context.add_init_script(WATCH_STATUS)
        page = context.new_page()
        page.set_default_timeout(20000)
        done = Visit(page, token or web_server.token(), [], [])
        page.on("request", lambda request: done.requests.append(request))
        page.on("console", lambda message: done.console.append(message.text))
        page.on("pageerror", lambda error: done.console.append(f"page error: {error}"))
        page.goto(f"{web_server.url}/#token={done.token}")
        page.wait_for_selector("body[data-ready=true]")
        visits.append(done)
        return done

    yield open_page
    for context in contexts:
        context.close()
    for done in visits:
        elsewhere = [r.url for r in done.requests if not r.url.startswith(web_server.url + "/")]
        assert not elsewhere, f"the page asked elsewhere: {elsewhere}"
        refused = [line for line in done.console if "Content Security Policy" in line]
        assert not refused, refused
