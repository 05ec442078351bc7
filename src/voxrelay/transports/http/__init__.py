"""Plain HTTP: REST, Server-Sent Events out and chunked uploads in, for clients
without WebSockets such as watchOS. The routes translate; the session decides.

- ``live``: start a session, read it, commit, text, interrupt, end.
- ``stream``: ``GET /realtime/stream``, the session's log as SSE.
- ``uploads``: ``POST /realtime/upload`` and its ``seq`` ledger.
- ``conversations``: stored conversations (list, read, delete).
- ``usage``: a user's usage over a time range.
"""

from fastapi import APIRouter

from voxrelay.transports.http import conversations, live, stream, uploads, usage
from voxrelay.transports.http.uploads import serve_uploads

router = APIRouter()
for _module in (live, stream, uploads, conversations, usage):
    router.include_router(_module.router)

__all__ = ["router", "serve_uploads"]
