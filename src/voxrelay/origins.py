"""Which web pages may use the server from a browser: one rule (the
``cors_allowed_origins`` setting) for every transport.

Browsers mark every cross-origin request with an ``Origin`` header; native apps
and servers send none, and are never refused for it. REST and the event stream
answer CORS (Starlette's ``CORSMiddleware``, preflights included); Socket.IO
has python-engineio check the same rule itself (it also covers its WebSocket
transport, which CORS does not); a ``/v1/realtime`` upgrade from a page that is
not allowed is refused with 403. A page served from the server's own host
(``Origin`` naming the ``Host`` the request was sent to) is always allowed, as
it would be without CORS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

# What a browser page may send beyond the simple headers: the device token, JSON
# bodies, and an event stream's reconnect position.
_ALLOWED_HEADERS = ("Authorization", "Content-Type", "Last-Event-ID")
# Socket.IO answers CORS itself, for the same origins.
_SOCKETIO_PREFIX = "/socket.io"


@dataclass(frozen=True, slots=True)
class Origins:
    allowed: frozenset[str]
    any: bool = False

    @classmethod
    def parse(cls, setting: str) -> Origins:
        """``https://a.example, https://b.example`` or ``*``; empty allows none."""
        names = {name.strip().rstrip("/") for name in setting.split(",")} - {""}
        return cls(frozenset(names - {"*"}), "*" in names)

    def allows(self, origin: str | None, host: str | None = None) -> bool:
        """Whether a request with this ``Origin`` header (None: there was none),
        sent to ``host`` (its ``Host`` header), may be served."""
        if not origin:
            return True
        if self.any or origin.rstrip("/") in self.allowed:
            return True
        return bool(host) and urlsplit(origin).netloc.lower() == str(host).lower()

    def for_engineio(self) -> Any:
        """python-engineio's ``cors_allowed_origins``: a check that takes the request."""

        def allowed(origin: str | None, environ: dict[str, Any]) -> bool:
            return self.allows(origin, environ.get("HTTP_HOST"))

        return allowed


class Cors:
    """Starlette's CORS for every HTTP route but Socket.IO's."""

    def __init__(self, app: ASGIApp, origins: Origins) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"] if origins.any else sorted(origins.allowed),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=list(_ALLOWED_HEADERS),
            # Tokens travel in headers, not cookies: no credentials mode.
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(_SOCKETIO_PREFIX):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
