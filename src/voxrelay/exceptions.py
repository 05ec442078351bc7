"""What the core says went wrong, in its own words.

Sessions, the directory that finds them and the links between processes raise
these; each transport decides, in one place of its own, what a client is told
(an HTTP status and error body in ``errors.py``, a Socket.IO ``error`` event, a
WebSocket close code). Every one carries a ``code`` from the wire contract's
vocabulary and a message that is safe to show a client (no internal addresses).
"""

from __future__ import annotations


class VoxrelayError(Exception):
    """Something the client may be told about; ``code`` names it on every transport."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(VoxrelayError):
    """The token is missing, unknown or revoked."""

    code = "unauthorized"


class Forbidden(VoxrelayError):
    """The token is good, but may not ask this (a device naming another user)."""

    code = "forbidden"


class InvalidRequest(VoxrelayError):
    """The request names something in a form the server does not take."""

    code = "invalid_request"


class InvalidTool(VoxrelayError):
    """A tool declaration the server does not take (a bad name, a schema that is not one)."""

    code = "invalid_tool"


class AlreadyAnswered(VoxrelayError):
    """A tool call that already has its result (a second one is not taken)."""

    code = "already_answered"

    def __init__(self, message: str = "this tool call already has its result") -> None:
        super().__init__(message)


class TooLarge(VoxrelayError):
    """A request carries more than a limit of the server's allows."""

    code = "payload_too_large"


class NotFound(VoxrelayError):
    """Nothing by that id for this user: another user's conversation looks the same."""

    code = "not_found"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class TooManySessions(VoxrelayError):
    """The device already holds as many live sessions as it may."""

    code = "too_many_sessions"


class QuotaExceeded(VoxrelayError):
    """The user reached one of the limits set per user (tokens or minutes a day, live
    sessions, a conversation's length): no new session starts."""

    code = "quota_exceeded"


class AudioTooFast(VoxrelayError):
    """Audio arrives much faster than it can be spoken: the chunk is not forwarded."""

    code = "audio_too_fast"


class RequestTimeout(VoxrelayError):
    """The client stopped sending the body of its request."""

    code = "request_timeout"


class ConversationBusy(VoxrelayError):
    """The conversation already has an active session."""

    code = "conversation_busy"

    def __init__(self, message: str = "the conversation already has an active session") -> None:
        super().__init__(message)


class NoActiveSession(VoxrelayError):
    """The conversation has no live session to take the request."""

    code = "no_active_session"

    def __init__(self, message: str = "the conversation has no active session; start one") -> None:
        super().__init__(message)


class SessionEnded(NoActiveSession):
    """The session ended before (or while) the request was applied."""

    def __init__(self, message: str = "the session has ended") -> None:
        super().__init__(message)


class ServerClosing(VoxrelayError):
    """This process is shutting down and starts nothing new."""

    code = "server_shutdown"

    def __init__(self, message: str = "the server is shutting down") -> None:
        super().__init__(message)


class UpstreamUnavailable(VoxrelayError):
    """The upstream voice model could not be reached or refused the session."""

    code = "upstream_unavailable"


class OwnerUnavailable(VoxrelayError):
    """The process that holds the session (another worker) is not answering."""

    code = "owner_unavailable"

    def __init__(self, message: str = "the process serving this conversation is not answering"):
        super().__init__(message)


# Core errors crossing between processes travel as their class name.
BY_NAME: dict[str, type[VoxrelayError]] = {
    kind.__name__: kind
    for kind in (
        VoxrelayError,
        Unauthorized,
        Forbidden,
        InvalidRequest,
        InvalidTool,
        AlreadyAnswered,
        TooLarge,
        TooManySessions,
        QuotaExceeded,
        AudioTooFast,
        RequestTimeout,
        NotFound,
        ConversationBusy,
        NoActiveSession,
        SessionEnded,
        ServerClosing,
        UpstreamUnavailable,
        OwnerUnavailable,
    )
}
