"""``GET /`` and ``/web/*``: the web client's files as they ship in the package, each
with a strict Content-Security-Policy, no inline script or style to need a looser
one, and nothing the page loads or imports left unserved."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.resources import files

import httpx
import pytest
from harness import RunningServer

STATIC = files("voxrelay.web").joinpath("static")
_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}


@pytest.fixture
def page_server(launch: Callable[..., RunningServer]) -> RunningServer:
    return launch()


def _policy(response: httpx.Response) -> dict[str, str]:
    header = response.headers["content-security-policy"]
    parts = (part.strip().split(" ", 1) for part in header.split(";"))
    return {name: value for name, value in parts}


def _referenced() -> set[str]:
    """Every file index.html loads and every module the scripts import."""
    html = STATIC.joinpath("index.html").read_text()
    names = set(re.findall(r'(?:src|href)="/web/([^"]+)"', html))
    for script in STATIC.iterdir():
        if script.name.endswith(".js"):
            text = script.read_text()
            names |= set(re.findall(r'from "\./([^"]+)"', text))
            names |= set(re.findall(r'"/web/([^"]+\.js)"', text))
    return names


def test_the_page_is_served_with_a_strict_policy(page_server: RunningServer) -> None:
    response = httpx.get(page_server.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "<title>voxrelay</title>" in response.text
    policy = _policy(response)
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert policy[directive] == "'self'", directive
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "microphone=(self)" in response.headers["permissions-policy"]


def test_every_file_the_page_needs_is_served_with_its_type(page_server: RunningServer) -> None:
    names = _referenced()
    assert {"app.js", "styles.css", "capture-worklet.js", "conversation.js"} <= names
    with httpx.Client(base_url=page_server.url) as client:
        for name in sorted(names):
            response = client.get(f"/web/{name}")
            assert response.status_code == 200, name
            expected = _TYPES[name.rpartition(".")[2]]
            assert response.headers["content-type"].startswith(expected), name
            assert response.headers["content-security-policy"], name
            assert response.content == STATIC.joinpath(name).read_bytes()
            # Revalidated by its ETag: unchanged, nothing is sent again.
            again = client.get(f"/web/{name}", headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304 and again.content == b""


def test_nothing_inline_and_nothing_from_elsewhere() -> None:
    html = STATIC.joinpath("index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert "<style" not in html and not re.search(r"\sstyle=", html), "an inline style"
    assert not re.search(r"\son[a-z]+=", html), "an inline event handler"
    for entry in STATIC.iterdir():
        # (the SVG namespace is a name, never fetched)
        text = entry.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://", text), f"{entry.name} names another site"
        assert "innerHTML" not in text and "eval(" not in text, entry.name


def test_unknown_files_answer_json_404(page_server: RunningServer) -> None:
    for path in ("/web/missing.js", "/web/..%2Fpyproject.toml", "/web/__init__.py"):
        response = httpx.get(page_server.url + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_head_answers_like_get(page_server: RunningServer) -> None:
    response = httpx.head(page_server.url + "/web/app.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")


def test_the_page_can_be_turned_off(launch: Callable[..., RunningServer]) -> None:
    server = launch(web_client=False)
    assert httpx.get(server.url + "/").status_code == 404
    assert httpx.get(server.url + "/web/app.js").status_code == 404
    assert httpx.get(server.url + "/healthz").status_code == 200
