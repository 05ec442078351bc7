"""The web client: ``GET /`` serves a page that holds voice conversations in a
browser over the HTTP streaming routes (EventSource in, short ``seq`` uploads
out), and ``GET /web/{name}`` its modules and styles.

The files ship inside the package (``static/``) as they are: no build step and
nothing fetched from elsewhere at run time. They are read once, when the first
request asks, and every answer carries a strict Content-Security-Policy: the
page may load and connect to its own origin only, and runs no inline script or
style."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response

from voxrelay.errors import not_found

router = APIRouter(include_in_schema=False)

# Everything 'self' at most; worklets count as scripts. Nothing inline, no eval, no
# frames around it, no plugins, no form posting elsewhere.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "media-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # The page asks for the microphone; nothing else the browser could grant.
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=()",
    # Revalidated each load (cheap with the ETag), so a new version is seen at once.
    "Cache-Control": "no-cache",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def _assets() -> dict[str, _Asset]:
    folder = files(__name__).joinpath("static")
    found: dict[str, _Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            found[entry.name] = _Asset(body, _TYPES[suffix], etag)
    return found


def _answer(request: Request, name: str) -> Response:
    asset = _assets().get(name)
    if asset is None:
        raise not_found("file")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"])
async def page(request: Request) -> Response:
    return _answer(request, "index.html")


@router.api_route("/web/{name}", methods=["GET", "HEAD"])
async def asset(request: Request, name: str) -> Response:
    return _answer(request, name)
