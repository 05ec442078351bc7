"""What ``voxrelay talk`` says when a conversation cannot start or goes wrong: one
line saying what happened and what to do, for every transport's way of failing,
instead of a traceback."""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
from socketio.exceptions import ConnectionError as SocketIOConnectionError
from websockets.exceptions import InvalidHandshake, InvalidURI

from voxrelay.client.conversation import ConnectionLost
from voxrelay.client.http import ApiError

WAV_FORMATS = "16-bit PCM WAV file (any rate, mono or stereo)"
_FLOAT = 3  # WAVE_FORMAT_IEEE_FLOAT
_WHY_ENDED = {
    "server_shutdown": "the server shut down",
    "idle_timeout": "nothing was said for too long (idle_timeout)",
    "upstream_failed": "the server lost its voice model (upstream_failed)",
    "quota_exceeded": "the voice model's quota is used up (quota_exceeded)",
}


class TalkError(Exception):
    """A problem to tell the user in one line; ``status`` is the exit code."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def ended(reason: str) -> TalkError:
    """The server ended the conversation before the answer was complete."""
    why = _WHY_ENDED.get(reason, reason)
    return TalkError(f"the conversation ended before the answer: {why}")


def unreadable_wav(path: object, error: BaseException) -> TalkError:
    if isinstance(error, FileNotFoundError):
        return TalkError(f"cannot read {path}: no such file", 2)
    if isinstance(error, IsADirectoryError):
        return TalkError(f"cannot read {path}: it is a directory", 2)
    if isinstance(error, PermissionError):
        return TalkError(f"cannot read {path}: permission denied", 2)
    text = str(error)
    if isinstance(error, EOFError):
        why = "the file is empty or cut short"
    elif text == f"unknown format: {_FLOAT}":
        why = "its samples are floating point, not 16-bit PCM"
    elif text.startswith("unknown format"):
        why = f"its samples are not PCM ({text})"
    elif "RIFF" in text or "WAVE" in text:
        why = "it is not a WAV file"
    elif "16-bit" in text:
        why = "its samples are not 16-bit"
    else:
        why = text or type(error).__name__
    return TalkError(
        f"cannot read {path}: {why}; --wav takes a {WAV_FORMATS}, which"
        f" sox makes of any recording: sox {path} -b 16 speech.wav",
        2,
    )


def explain(error: BaseException, url: str) -> str | None:
    """One line for ``error``, raised while talking to ``url``; ``None``: a bug."""
    if isinstance(error, TalkError):
        return str(error)
    if isinstance(error, ConnectionLost):
        return (
            f"lost the connection to {url} mid-conversation: {error}; is the server still running?"
        )
    if isinstance(error, ApiError):
        return _refused(error, url)
    if isinstance(error, InvalidURI):
        return f"{url} is not a URL voxrelay talk can use ({error}); pass --url http://HOST:PORT"
    if isinstance(error, InvalidHandshake):
        return f"{url} did not answer as a voxrelay server ({error}); check --url"
    if isinstance(error, SocketIOConnectionError):
        return f"{url} refused the Socket.IO connection ({error}); check --url and --token"
    if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return f"{url} is not a URL voxrelay talk can use ({error}); pass --url http://HOST:PORT"
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return f"cannot reach {url}: no answer in time; check --url and that the server runs"
    if isinstance(error, httpx.TransportError | OSError):
        return f"cannot reach {url}: {_unreachable(error, url)}"
    return None


def _refused(error: ApiError, url: str) -> str:
    if error.status == 401:
        return (
            f"{url} refused the token ({error.message}); give one it knows with --token or"
            f" VOXRELAY_TOKEN, or delete ./.voxrelay-token for a new development token"
        )
    route_missing = error.code == "error" or error.message == "Not Found"
    if error.status in (403, 404, 405) and route_missing:
        parts = urlsplit(url)
        return (
            f"{url} has no voxrelay API ({error.status}: {error.message}); give the"
            f" server's own address, such as --url {parts.scheme}://{parts.netloc}"
        )
    if error.status < 400:
        return f"{url} did not answer as a voxrelay server; check --url"
    return f"the server refused: {error}"


def _unreachable(error: BaseException, url: str) -> str:
    """Why a connection failed, in words, and what to try."""
    causes = list(_causes(error))
    if any(isinstance(cause, ssl.SSLError) or "SSL" in str(cause) for cause in causes):
        if urlsplit(url).scheme == "https":
            return "the server does not speak TLS; use http:// instead of https://"
        return f"TLS failed ({error})"
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        return f"unknown host {urlsplit(url).hostname!r}; check --url"
    if any(_is_refusal(cause) for cause in causes):
        return "connection refused; is `voxrelay serve` running?"
    return f"{error}; check --url and that `voxrelay serve` is running"


def _is_refusal(error: BaseException) -> bool:
    if isinstance(error, ConnectionRefusedError):
        return True
    if isinstance(error, OSError) and error.errno == errno.ECONNREFUSED:
        return True
    # httpx (through anyio) words a refused connection this way, keeping no errno.
    return "All connection attempts failed" in str(error)


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__
