"""The options of ``voxrelay talk``: its command line, and the server address it is
given (or finds in the environment's settings)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from voxrelay.client.conversation import TRANSPORTS, Transport
from voxrelay.config import Settings
from voxrelay.talk_errors import TalkError

TOKEN_FILE = ".voxrelay-token"


@dataclass
class TalkOptions:
    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    transport: Transport = "http"
    wav: Path | None = None
    text: str | None = None
    out: Path | None = Path("answer.wav")
    conversation_id: str | None = None
    language: str | None = None
    voice: str | None = None
    manual: bool = False
    speed: float = 1.0
    mic: bool = False
    end: bool = True
    timeout: float = 120.0


def server_url(raw: str) -> str:
    """``--url`` as an http(s) URL: ``HOST:PORT`` means ``http://HOST:PORT``, and
    a ``ws://``/``wss://`` URL names the same server as ``http://``/``https://``."""
    url = raw.strip()
    if "://" not in url:
        url = "http://" + url
    scheme, rest = url.split("://", 1)
    scheme = {"ws": "http", "wss": "https"}.get(scheme.lower(), scheme.lower())
    if scheme not in ("http", "https") or not urlsplit(f"{scheme}://{rest}").hostname:
        raise TalkError(f"--url {raw!r} is not a server address; give http://HOST:PORT", 2)
    return f"{scheme}://{rest}"


def default_url(env: Mapping[str, str] = os.environ) -> str:
    """The server these settings run: ``VOXRELAY_PORT`` (and a ``VOXRELAY_HOST``
    other than every address) on this machine, else port 8000."""
    host = env.get("VOXRELAY_HOST") or Settings.host
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env.get('VOXRELAY_PORT') or Settings.port}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    say = parser.add_argument_group("what to say (one of)").add_mutually_exclusive_group()
    say.add_argument(
        "--wav",
        type=Path,
        default=None,
        metavar="FILE",
        help="say this recording, streamed in real time: a 16-bit PCM WAV file (any rate,"
        " mono or stereo)",
    )
    say.add_argument("--text", default=None, help="type this turn instead of saying one")
    say.add_argument(
        "--mic",
        action="store_true",
        help="talk through the microphone and speaker until Ctrl+C (needs the audio"
        " extra: uv sync --extra audio)",
    )
    server = parser.add_argument_group("the server")
    server.add_argument(
        "--url",
        default=None,
        help=f"the server's address (default: {default_url()}, from VOXRELAY_PORT"
        " and VOXRELAY_HOST when set)",
    )
    server.add_argument(
        "--token",
        default=None,
        help=f"the device token (default: VOXRELAY_TOKEN, else ./{TOKEN_FILE}; for a server"
        " on this machine a development token is made there)",
    )
    server.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="http",
        help="how to reach the server: http (an SSE event stream and a streamed upload, as"
        " watches do), socketio (Socket.IO, as the Flutter app does) or ws (the"
        " OpenAI-Realtime-compatible WebSocket, as OpenAI SDKs do)",
    )
    server.add_argument(
        "--conversation",
        default=None,
        metavar="ID",
        help="resume this conversation (the model remembers it) instead of starting one",
    )
    server.add_argument(
        "--keep-open", action="store_true", help="leave the conversation open afterwards"
    )
    answer = parser.add_argument_group("the answer")
    answer.add_argument(
        "--out",
        type=Path,
        default=Path("answer.wav"),
        metavar="FILE",
        help="where the spoken answer is saved, as a WAV file",
    )
    answer.add_argument(
        "--language",
        default=None,
        help="the language spoken, BCP-47 such as en or he (default: the provider's own)",
    )
    answer.add_argument(
        "--voice",
        default=None,
        help="the voice the answer is spoken in, by the provider's names: for local an"
        " espeak-ng variant or voice such as f3 or en-GB-x-rp, for openai and azure"
        " one such as alloy or marin (default: the provider's own)",
    )
    turns = parser.add_argument_group("how the turn ends")
    turns.add_argument(
        "--manual",
        action="store_true",
        help="end the turn with a commit (push-to-talk) instead of the server noticing"
        " a second of silence (voice activity detection)",
    )
    turns.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="N",
        help="send the WAV file N times faster than real time",
    )
    turns.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the answer",
    )


def options_from(args: argparse.Namespace) -> TalkOptions:
    return TalkOptions(
        url=args.url or default_url(),
        token=args.token,
        transport=args.transport,
        wav=args.wav,
        text=args.text,
        out=args.out,
        conversation_id=args.conversation,
        language=args.language,
        voice=args.voice,
        manual=args.manual,
        speed=args.speed,
        mic=args.mic,
        end=not args.keep_open,
        timeout=args.timeout,
    )
