"""Settings: ``VOXRELAY_*`` environment variables, each also a ``voxrelay serve`` flag."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

PROVIDERS = ("echo", "local", "openai", "azure")
SAMPLE_RATES = (8000, 16000, 24000, 48000)
LOG_FORMATS = ("json", "text")
# The PostgreSQL connection pool of each process (SQLite ignores it).
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 10
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def normalize_database_url(url: str) -> str:
    """Pick the async driver for plain ``sqlite://`` and ``postgresql://`` URLs."""
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite+aiosqlite:///./voxrelay.db"
    # PostgreSQL, per process: connections kept open, and how many more a peak may
    # open beyond them (closed again when returned). SQLite ignores both.
    database_pool_size: int = DEFAULT_POOL_SIZE
    database_max_overflow: int = DEFAULT_MAX_OVERFLOW
    # Bring the schema to this version's at start. Off: a schema that is not there
    # stops the start, and ``voxrelay db upgrade`` is how it gets there.
    migrate_on_start: bool = True
    redis_url: str | None = None
    # With Redis: how long a node's hold on its sessions outlives its last renewal
    # (renewed every third of it); a node that dies lets go within this time.
    lease_seconds: float = 5.0
    provider: str = "local"
    # Worker processes sharing the port; each session lives in one of them.
    workers: int = 1
    grace_seconds: float = 60.0
    log_level: str = "info"
    # ``voxrelay serve``'s log lines: ``json`` (one object per line) or ``text``.
    log_format: str = "json"
    # Largest body of a non-streaming request (JSON, one short audio POST).
    max_body_bytes: int = 1 << 20
    # Longest typed message, in characters, on every transport.
    max_text_chars: int = 4000
    # Deepest nesting of a JSON request body.
    max_json_depth: int = 32
    # Largest single upload body (a chunked upload may last a whole conversation).
    max_upload_bytes: int = 256 << 20
    # Web pages (origins, comma-separated; ``*`` for any) that may call the server
    # from a browser: CORS on REST and SSE, Socket.IO's origin check, the Origin of
    # a ``/v1/realtime`` upgrade. Empty: none but the server's own origin.
    cors_allowed_origins: str = ""
    # The web client at ``/`` (its files under ``/web/``); off: an API-only server.
    web_client: bool = True
    # WebSocket permessage-deflate, when a client offers it: a conversation's frames
    # shrink by about a third for some 50 µs of server CPU per 20 ms chunk round trip,
    # half again what the rest of its relay costs (benchmarks/websocket_compression.py).
    # Off: the offer is declined, and frames go as they are.
    websocket_compression: bool = False
    # A connection that has not sent a whole request head (request line and
    # headers) this long after it opened, or after its head began, is closed (0: never).
    header_timeout_seconds: float = 10.0
    # A request body that sends nothing for this long answers 408 ``request_timeout``
    # (a chunked upload streaming audio never pauses that long); 0: never.
    body_idle_timeout_seconds: float = 30.0
    # Live sessions one device token may hold at once in one process (0: no limit);
    # one more answers 429 ``too_many_sessions``.
    max_sessions_per_device: int = 8
    # Limits per user, each off at 0 (see docs/usage.md). Tokens (model and transcription)
    # and minutes of live sessions since UTC midnight; live sessions at once, in every
    # process; the longest a conversation may be live, over all its sessions.
    quota_tokens_per_day: int = 0
    quota_minutes_per_day: float = 0.0
    max_sessions_per_user: int = 0
    max_conversation_seconds: float = 0.0
    # A price table (a TOML or JSON file, or JSON itself) that usage is priced from.
    prices: str | None = None
    # Audio a client sends faster than this many times real time, sustained, is
    # refused (429 ``audio_too_fast``); 0 turns the check off.
    max_upload_realtime_factor: float = 10.0
    # Seconds of audio a client may send at once beyond that pace (catching up
    # after a stalled network).
    upload_burst_seconds: float = 20.0
    keepalive_seconds: float = 15.0
    # A lost upstream link is reopened (with backoff) for this long before the session ends.
    upstream_reconnect_seconds: float = 60.0
    # An upstream session this old moves to a fresh one at the next turn boundary, before
    # the upstream's own limit (OpenAI: 60 minutes) ends it; 0: never.
    upstream_rollover_seconds: float = 55 * 60.0
    # How long an ended session's messages are still tried while the database refuses.
    storage_retry_seconds: float = 30.0
    # How often open connections and the tokens lately let in are checked for a
    # revoked token: a revoked token is refused within about twice this.
    revocation_check_seconds: float = 0.4
    # At shutdown, how long each Socket.IO client has to take its last packets.
    socketio_close_seconds: float = 5.0
    # The replay buffer keeps at least ``grace_seconds`` of events, within this bound.
    replay_max_bytes: int = 16 << 20
    # Of it, the newest events kept in memory (bytes of JSON); older ones are spooled
    # to an unlinked file in ``replay_spool_dir`` (None: the OS's temporary
    # directory) and read back only for a listener that fell behind. 0: all in memory.
    # A quarter second of answer audio: a listener that keeps up takes each event as
    # it comes, and a larger tail cost streaming sessions memory for no CPU saved.
    replay_memory_bytes: int = 16 << 10
    replay_spool_dir: str | None = None
    # Of the user's turn in progress (kept to be sent again to a new upstream link),
    # the audio kept in memory only; a longer turn goes to a ring file in
    # ``replay_spool_dir``, memory holding only the block not yet written. 0: all of
    # it in memory.
    turn_audio_memory_bytes: int = 64 << 10
    # Socket.IO packets that may wait for one socket that does not read them (an
    # answer's audio is one per ~100 ms, each word one more); past this it is dropped.
    socketio_max_queued_events: int = 1000
    # Largest Socket.IO packet (with its binary attachments) or long-polling body.
    socketio_max_payload_bytes: int = 4 << 20
    # The server's tools (TOML, or JSON by its name): every session may call them.
    tools: str | None = None
    # How long a client has to answer a call of one of its own tools.
    client_tool_timeout_seconds: float = 30.0
    openai_api_key: str | None = field(default=None, repr=False)
    openai_url: str = "wss://api.openai.com/v1/realtime"
    openai_model: str = "gpt-realtime"
    azure_endpoint: str | None = None
    azure_api_key: str | None = field(default=None, repr=False)
    azure_deployment: str | None = None
    azure_api_version: str | None = None
    # The local provider's replies: any OpenAI-compatible chat-completions server.
    local_llm_url: str | None = None
    local_llm_model: str | None = None
    local_llm_api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "database_url", normalize_database_url(self.database_url))
        if self.provider not in PROVIDERS:
            raise ValueError(f"unknown provider {self.provider!r}; choose one of {PROVIDERS}")
        if self.workers < 1:
            raise ValueError("workers must be 1 or more")
        if self.database_pool_size < 1:
            raise ValueError("database_pool_size must be 1 or more")
        if self.database_max_overflow < 0:
            raise ValueError("database_max_overflow must be 0 or more")
        for name in (
            "header_timeout_seconds",
            "body_idle_timeout_seconds",
            "max_sessions_per_device",
            "quota_tokens_per_day",
            "quota_minutes_per_day",
            "max_sessions_per_user",
            "max_conversation_seconds",
            "max_upload_realtime_factor",
            "upload_burst_seconds",
            "client_tool_timeout_seconds",
            "replay_memory_bytes",
            "turn_audio_memory_bytes",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        if self.socketio_max_queued_events < 1:
            raise ValueError("socketio_max_queued_events must be 1 or more")
        if self.socketio_max_payload_bytes < 1:
            raise ValueError("socketio_max_payload_bytes must be 1 or more")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"unknown log format {self.log_format!r}; choose one of {LOG_FORMATS}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = _env_name(f.name)
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _coerce(f.type, raw)
            except ValueError as error:
                raise ValueError(f"{name}={raw!r}: {error}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)


_UNPREFIXED = {
    "openai_api_key": "OPENAI_API_KEY",
    "azure_endpoint": "AZURE_OPENAI_ENDPOINT",
    "azure_api_key": "AZURE_OPENAI_API_KEY",
    "azure_deployment": "AZURE_OPENAI_DEPLOYMENT",
    "azure_api_version": "AZURE_OPENAI_API_VERSION",
}


def _env_name(name: str) -> str:
    return _UNPREFIXED.get(name, "VOXRELAY_" + name.upper())


def parse_bool(raw: str) -> bool:
    """``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off`` (any case)."""
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected {'/'.join(_TRUE)} or {'/'.join(_FALSE)}")


def _coerce(type_name: Any, raw: str) -> Any:
    text = str(type_name)
    if text.startswith("bool"):
        return parse_bool(raw)
    if text.startswith("int"):
        return int(raw)
    if text.startswith("float"):
        return float(raw)
    return raw
