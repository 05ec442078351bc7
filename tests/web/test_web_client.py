"""The web client in headless Chromium against a real server on the ``local``
provider: spoken turns (hands-free and push-to-talk, the microphone being a
recording of "go forward ten meters"), typed turns, right-to-left text, a dropped
event stream resumed, an answer interrupted, the history, a phone-sized screen."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect
from web_pages import DESKTOP, PHONE, Visit, WebServer, heard_the_recording, screenshot

pytestmark = pytest.mark.timeout(90)
expect.set_options(timeout=20000)

Open = Callable[..., Visit]


def _data(page: Any, name: str) -> int:
    return int(page.evaluate(f"Number(document.body.dataset.{name} || 0)"))


def _states(page: Any) -> list[str]:
    states: list[str] = page.evaluate("window.__states")
    return states


def _requests(visit: Visit, path: str) -> list[Any]:
    return [r for r in visit.requests if urlsplit(r.url).path == path]


def _tab_to(page: Any, element_id: str, presses: int = 10) -> None:
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def _start(page: Any, *, push_to_talk: bool = False) -> None:
    if push_to_talk:
        page.get_by_label("Push to talk").check()
    page.get_by_role("button", name="Start conversation").click()
    expect(page.get_by_role("status")).to_have_attribute(
        "data-state", "ready" if push_to_talk else "listening"
    )


def _type(page: Any, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_label("Message").press("Enter")


def _answer(page: Any) -> Any:
    return page.locator('#log .turn.assistant[data-final="true"] .bubble')


def _user(page: Any) -> Any:
    return page.locator('#log .turn.user[data-final="true"] .bubble')


def test_a_spoken_turn_is_heard_answered_and_kept(visit: Open, web_server: WebServer) -> None:
    seen = visit()
    page = seen.page
    # Keyboard alone: Tab to the main control, Enter starts the conversation.
    _tab_to(page, "main")
    expect(page.locator("#main")).to_have_accessible_name("Start conversation")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="End conversation")).to_be_visible()

    user = _user(page)
    expect(user).to_have_count(1, timeout=30000)
    said = user.first.inner_text()
    assert heard_the_recording(said), said
    expect(_answer(page)).to_have_text(f"You said: {said}", timeout=20000)
    # The answer came out of the speakers: its audio went through the analyser.
    page.wait_for_function("() => Number(document.body.dataset.audioSoundFrames) >= 10")
    expect(page.get_by_role("status")).to_have_attribute("data-state", "listening")
    # Each chunk followed the one before without a gap.
    assert _data(page, "audioChunks") > 10 and _data(page, "audioStalls") == 0
    assert _states(page)[:4] == ["connecting", "listening", "thinking", "speaking"]
    assert _states(page)[-1] == "listening"
    assert page.evaluate("window.__maxLevel") > 0.02, "the level meter never moved"
    for bubble in page.locator("#log .bubble").all():
        assert bubble.get_attribute("dir") == "auto"
    assert page.get_by_role("log").count() == 1

    # The microphone went up as short numbered uploads, in order; the stream took
    # the token in its query, as EventSource cannot send headers.
    seqs = [
        int(parse_qs(urlsplit(r.url).query)["seq"][0]) for r in _requests(seen, "/realtime/upload")
    ]
    assert len(seqs) > 10 and seqs == list(range(len(seqs)))
    stream = _requests(seen, "/realtime/stream")[0]
    assert parse_qs(urlsplit(stream.url).query)["access_token"] == [seen.token]
    screenshot(page, "web-desktop.png")

    conversation_id = page.evaluate("document.body.dataset.conversationId")
    page.get_by_role("button", name="End conversation").click()
    expect(page.get_by_role("status")).to_have_text("Conversation ended")
    expect(page.get_by_role("button", name="Start conversation")).to_be_visible()
    # The history lists it; opened, it shows what was said.
    entry = page.locator(f'#conversations button[data-id="{conversation_id}"]')
    expect(entry).to_contain_text(f"You said: {said}")
    entry.click()
    expect(page.locator("#detail-messages .bubble")).to_have_text([said, f"You said: {said}"])
    with web_server.api(seen.token) as api:
        stored = api.get(f"/conversations/{conversation_id}").json()["conversation"]["messages"]
    assert [(m["role"], m["text"]) for m in stored] == [
        ("user", said),
        ("assistant", f"You said: {said}"),
    ]


def test_push_to_talk_held_from_the_keyboard(visit: Open) -> None:
    seen = visit()
    page = seen.page
    _tab_to(page, "token")
    page.keyboard.press("Tab")  # the turn-taking choice
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label("Push to talk")).to_be_checked()
    _tab_to(page, "main")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_attribute("data-state", "ready")
    _tab_to(page, "talk")
    page.wait_for_timeout(400)
    assert not _requests(seen, "/realtime/upload"), "audio went up before the key was held"
    page.keyboard.down("Space")
    expect(page.locator("#talk")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("status")).to_have_attribute("data-state", "listening")
    page.wait_for_timeout(4000)  # the recording's quiet start, then its words
    page.keyboard.up("Space")
    expect(page.locator("#talk")).to_have_attribute("aria-pressed", "false")
    expect(_user(page)).to_have_count(1)
    said = _user(page).first.inner_text()
    assert heard_the_recording(said), said
    expect(_answer(page)).to_have_text(f"You said: {said}")
    # The audio held went up, and the turn was committed on release.
    assert _requests(seen, "/realtime/commit")
    assert _requests(seen, "/realtime/upload")
    expect(page.get_by_role("status")).to_have_attribute("data-state", "ready")


def test_a_typed_turn_in_hebrew_reads_right_to_left(visit: Open) -> None:
    page = visit().page
    _start(page, push_to_talk=True)
    hebrew = "שלום, מה שלומך היום?"
    _type(page, hebrew)
    user = _user(page)
    expect(user).to_have_text(hebrew)
    expect(_answer(page)).to_have_text(f"You said: {hebrew}")
    assert user.get_attribute("dir") == "auto"
    assert user.evaluate("e => getComputedStyle(e).direction") == "rtl"
    # The answer starts in English, so it reads left to right.
    assert _answer(page).evaluate("e => getComputedStyle(e).direction") == "ltr"
    assert "thinking" in _states(page)
    page.wait_for_function("() => Number(document.body.dataset.audioSoundFrames) >= 5")
    expect(page.locator("#log .turn")).to_have_count(2)
    expect(page.locator("#log .who")).to_have_text(["You", "Assistant"])


def test_a_dropped_stream_resumes_from_its_last_event(visit: Open, web_server: WebServer) -> None:
    seen = visit()
    page = seen.page
    _start(page, push_to_talk=True)
    conversation_id = page.evaluate("document.body.dataset.conversationId")
    try:
        assert web_server.proxy.cut_streams(hold=True) == 1
        expect(page.get_by_role("status")).to_have_attribute("data-state", "reconnecting")
        # A turn while the stream is down: its whole answer happens meanwhile.
        _type(page, "are you still there")
        with web_server.api(seen.token) as api:
            for _ in range(200):
                stored = api.get(f"/conversations/{conversation_id}").json()["conversation"]
                if len(stored["messages"]) == 2:
                    break
                time.sleep(0.05)
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
        expect(_answer(page)).to_have_count(0)
    finally:
        web_server.proxy.release()
    # The browser's own retry asks from its last event on, and gets the answer then.
    expect(_answer(page)).to_have_text("You said: are you still there", timeout=15000)
    expect(page.get_by_role("status")).to_have_attribute("data-state", "ready")
    streams = _requests(seen, "/realtime/stream")
    assert len(streams) == 2
    resumed_from = int(streams[1].all_headers()["last-event-id"])
    assert resumed_from >= 1
    # Every event once: numbered 1, 2, 3, ... and each taken once, none twice.
    assert _data(page, "duplicateEvents") == 0
    assert _data(page, "events") == _data(page, "lastEventId") > resumed_from
    expect(page.locator("#log .turn")).to_have_count(2)
    page.wait_for_function("() => Number(document.body.dataset.audioSoundFrames) >= 5")
    assert "reconnecting" in _states(page)


def test_speaking_over_the_answer_stops_it_where_it_was_heard(
    visit: Open, web_server: WebServer
) -> None:
    seen = visit()
    page = seen.page
    _start(page, push_to_talk=True)
    long_text = (
        "please read this whole sentence back to me slowly, every single word of it, "
        "from the first word to the very last one, without leaving anything out at all"
    )
    _type(page, long_text)
    expect(page.get_by_role("status")).to_have_attribute("data-state", "speaking")
    page.wait_for_function("() => Number(document.body.dataset.audioSoundFrames) >= 15")
    page.locator("#talk").focus()
    page.keyboard.down("Space")  # the user starts speaking
    expect(page.get_by_role("status")).to_have_attribute("data-state", "listening")
    heard_frames = _data(page, "audioSoundFrames")
    page.wait_for_timeout(600)
    assert _data(page, "audioSoundFrames") <= heard_frames + 2, "the answer went on playing"
    interrupts = _requests(seen, "/realtime/interrupt")
    assert len(interrupts) == 1
    played_ms = int(parse_qs(urlsplit(interrupts[0].url).query)["playedMs"][0])
    answer_ms = _data(page, "audioChunks") * 100  # the local provider's 100 ms chunks
    assert 500 <= played_ms < answer_ms
    conversation_id = page.evaluate("document.body.dataset.conversationId")
    full = f"You said: {long_text}"
    with web_server.api(seen.token) as api:
        for _ in range(100):
            stored = api.get(f"/conversations/{conversation_id}").json()["conversation"]
            kept = [m["text"] for m in stored["messages"] if m["role"] == "assistant"]
            if kept:
                break
            time.sleep(0.1)
    # What is remembered is what was heard: the start of the answer only, and the
    # page shows the same.
    assert kept and full.startswith(kept[0].rstrip(" .…")) and len(kept[0]) < len(full)
    expect(page.locator("#log .turn.assistant .bubble")).to_have_text(kept[0])
    expect(page.locator("#log .turn.assistant .who")).to_have_text("Assistant (interrupted)")
    page.keyboard.up("Space")
    page.get_by_role("button", name="End conversation").click()


def test_history_shows_a_conversation_and_deletes_it_after_asking(
    visit: Open, web_server: WebServer
) -> None:
    seen = visit()
    page = seen.page
    _start(page, push_to_talk=True)
    _type(page, "remember this one")
    expect(_answer(page)).to_have_text("You said: remember this one")
    conversation_id = page.evaluate("document.body.dataset.conversationId")
    page.get_by_role("button", name="End conversation").click()

    # Tool calls and usage, in the shapes the server gives where it keeps them, are
    # shown too: added here to the server's real answer.
    def with_extras(route: Any) -> None:
        if route.request.method != "GET":
            route.fallback()
            return
        answer = route.fetch()
        body = answer.json()
        body["conversation"]["toolCalls"] = [
            {
                "id": "tc_1",
                "callId": "call_1",
                "name": "get_weather",
                "arguments": {"city": "Haifa"},
                "output": {"forecast": "sunny"},
                "status": "completed",
                "error": None,
                "runBy": "server",
                "createdAt": "2026-01-01T00:00:00Z",
                "afterMessageId": None,
            }
        ]
        body["conversation"]["usage"] = {"inputTokens": 120, "outputTokens": 45, "cost": None}
        route.fulfill(response=answer, json=body)

    page.route(f"**/conversations/{conversation_id}", with_extras)
    entry = page.locator(f'#conversations button[data-id="{conversation_id}"]')
    expect(entry).to_contain_text("You said: remember this one")
    entry.click()
    detail = page.locator("#detail")
    expect(detail.locator(".bubble")).to_have_text(
        ["remember this one", "You said: remember this one"]
    )
    expect(page.locator("#detail-title")).to_be_focused()
    expect(page.locator("#detail-tools")).to_contain_text("get_weather")
    expect(page.locator("#detail-tools")).to_contain_text('"sunny"')
    expect(page.locator("#detail-usage")).to_contain_text("Input tokens")
    expect(page.locator("#detail-usage dd").first).to_have_text("120")

    dialog = page.get_by_role("dialog", name="Delete this conversation?")
    page.get_by_role("button", name="Delete conversation").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # changed their mind
    expect(dialog).to_be_hidden()
    with web_server.api(seen.token) as api:
        assert api.get(f"/conversations/{conversation_id}").status_code == 200
        page.get_by_role("button", name="Delete conversation").click()
        dialog.get_by_role("button", name="Delete", exact=True).click()
        expect(page.get_by_role("status")).to_have_text("Conversation deleted")
        expect(entry).to_have_count(0)
        assert api.get(f"/conversations/{conversation_id}").status_code == 404
    assert [r.method for r in _requests(seen, f"/conversations/{conversation_id}")].count(
        "DELETE"
    ) == 1


def test_on_a_phone_sized_screen_nothing_scrolls_sideways(visit: Open) -> None:
    page = visit(viewport=PHONE).page
    _start(page, push_to_talk=True)
    _type(page, "a long line to see that bubbles wrap on a narrow screen without scrolling")
    expect(_answer(page)).to_contain_text("You said: a long line")
    expect(page.get_by_role("status")).to_have_attribute("data-state", "ready")
    _type(page, "שלום לכולם")
    expect(_answer(page).last).to_have_text("You said: שלום לכולם")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide"
    # Every control is labelled.
    for control in page.locator("button:visible, input:visible").all():
        expect(control).to_have_accessible_name(re.compile(r"\w"))
    for name in ("End conversation", "Hold to talk", "Send", "Refresh"):
        box = page.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert box["height"] >= 40, f"{name} is too small to touch"
    screenshot(page, "web-phone.png")


def test_a_wrong_token_says_so(visit: Open) -> None:
    page = visit(token="vxr_not-a-token").page
    expect(page.locator("#history-note")).to_contain_text("unknown or revoked")
    page.get_by_role("button", name="Start conversation").click()
    status = page.get_by_role("status")
    expect(status).to_have_attribute("data-state", "error")
    expect(status).to_contain_text("unknown or revoked")
    expect(page.get_by_role("button", name="Start conversation")).to_be_visible()


def test_the_token_is_remembered_and_left_out_of_the_address(visit: Open) -> None:
    seen = visit(viewport=DESKTOP)
    page = seen.page
    assert "#token" not in page.url
    expect(page.get_by_label("Device token")).to_have_value(seen.token)
    page.goto(page.url.split("#")[0])
    page.wait_for_selector("body[data-ready=true]")
    expect(page.get_by_label("Device token")).to_have_value(seen.token)
