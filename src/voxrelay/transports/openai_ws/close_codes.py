"""How ``/v1/realtime`` closes a connection, and which of a client's closes end its
conversation."""

from __future__ import annotations

CLOSE_UNAUTHORIZED = 4401
# A good token naming a user it may not act for (a device naming another's userId).
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_INVALID = 4400
# The device holds as many live sessions as it may, or the user reached a limit of
# theirs (HTTP's 429).
CLOSE_TOO_MANY = 4429
CLOSE_FOR_REASON = {
    "client_end": 1000,
    "idle_timeout": 1000,
    "server_shutdown": 1012,
    "upstream_failed": 1011,
    "quota_exceeded": CLOSE_TOO_MANY,
}
# Close codes a client sends when it is done: the conversation ends at once. Any other
# ending (a lost link) leaves the session its grace period, waiting for a reconnect.
# Not 1005: uvicorn reports a link lost without a close frame the same way as a
# close frame without a code, and a lost link must keep its grace period.
CLIENT_DONE = frozenset({1000, 1001})
